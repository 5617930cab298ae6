"""ResourceQuota admission: a write that would take a namespace past its quota is refused.

For every quota in the object's namespace that tracks something the
object costs (``kubepy.meta.quota``) and whose scopes take it in:

- a pod must name cpu/memory requests or limits the quota tracks
  (``failed quota: q: must specify limits.cpu for: c``);
- the cost of the write (the new object's usage, less the old one's on an
  update) is added to ``status.used``; past ``spec.hard`` it is refused
  (``exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2``);
- otherwise the quota's ``status.used`` is charged at once (a guarded
  write, retried on a race), so concurrent creates cannot both squeeze in
  under the limit. The resource-quota controller recounts ``used`` from the
  objects themselves and gives back what deleted or finished objects held.

Where ``status.used`` does not know a tracked resource yet (a quota the
controller has not counted), this counts it from the store instead of
refusing ("status unknown for quota", as upstream does until its
controller catches up). A dry run is checked but charges nothing.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

from kubepy.api import errors, objects
from kubepy.api.admission import CREATE, Attributes
from kubepy.api.mirror import Mirror
from kubepy.kinds import all_kinds, by_plural
from kubepy.meta import quota
from kubepy.store.base import ConflictError, KeyNotFoundError, Store, StoreError

log = logging.getLogger(__name__)

_RETRIES = 10


class ResourceQuotaAdmission:
    name = "ResourceQuota"

    def __init__(self, store: Store) -> None:
        self.store = store
        self.res = by_plural("resourcequotas")
        self.quotas = Mirror(store, self.res.prefix)

    def _handles(self, a: Attributes) -> bool:
        if not a.namespace or not a.res.namespaced:
            return False
        if a.subresource:
            return False
        if a.operation == CREATE:
            return True
        # Updates change usage only for kinds whose cost depends on the spec (as upstream's evaluators).
        return (a.res.group, a.res.plural) in (("", "services"), ("", "persistentvolumeclaims"))

    async def admit(self, a: Attributes) -> None:
        return None

    async def validate(self, a: Attributes) -> None:
        if not self._handles(a):
            return
        quotas = await self.quotas.items(a.namespace or "")
        if not quotas:
            return
        group, plural = a.res.group, a.res.plural
        if not any(self._interesting(q, group, plural, a.obj) for q in quotas):
            return
        for _ in range(_RETRIES):
            if await self._charge_once(a):
                return
        raise errors.Conflict(f'Operation cannot be fulfilled on resourcequotas: the quotas of namespace '
                              f'"{a.namespace}" changed too often while this request was checked; try again')

    def _interesting(self, q: dict, group: str, plural: str, obj: dict) -> list[str]:
        hard = (q.get("spec") or {}).get("hard") or {}
        if not quota.applies(q, group, plural, obj):
            return []
        return [r for r in hard if quota.charged_by(group, plural, r)]

    async def _charge_once(self, a: Attributes) -> bool:
        """Check every quota against a fresh read; charge them all (guarded). False on a race."""
        group, plural = a.res.group, a.res.plural
        delta = quota.usage(group, plural, a.obj)
        if a.old is not None:
            delta = quota.subtract(delta, quota.usage(group, plural, a.old))
        writes: list[tuple[str, int, dict[str, Any]]] = []
        for q in await self.quotas.items(a.namespace or ""):
            interesting = self._interesting(q, group, plural, a.obj)
            if not interesting:
                continue
            key = self.res.key(a.namespace, q["metadata"]["name"])
            try:
                kv = await self.store.get(key)
            except StoreError as e:
                raise errors.ServiceUnavailable(f"storage is unavailable: {e}") from e
            if kv is None:
                continue
            current = objects.decode(kv)
            name = current["metadata"]["name"]
            hard_raw = (current.get("spec") or {}).get("hard") or {}
            hard = quota.parse_list(hard_raw)
            if plural == "pods" and not group and a.operation == CREATE:
                missing = quota.missing_requirements(a.obj, hard_raw)
                if missing:
                    raise a.forbidden(f"failed quota: {name}: {missing}")
            status = current.get("status") or {}
            used = quota.parse_list(status.get("used"))
            unknown = [r for r in interesting if r not in (status.get("used") or {})]
            if unknown:
                used.update(await self._count(current, unknown))
            wanted = {r: v for r, v in delta.items() if r in interesting and v != 0}
            if not wanted:
                continue
            new_used = quota.add(used, wanted)
            over = sorted(r for r, v in wanted.items() if v > 0 and r in hard and new_used[r] > hard[r])
            if over:
                fmt = quota.format_list
                log.info("quota refused %s=%s/%s quota=%s over=%s", plural, a.namespace, a.name, name, ",".join(over))
                raise a.forbidden(
                    f"exceeded quota: {name}, "
                    f"requested: {quota.pretty(fmt({r: wanted[r] for r in over}, hard_raw))}, "
                    f"used: {quota.pretty(fmt({r: used.get(r, Decimal(0)) for r in over}, hard_raw))}, "
                    f"limited: {quota.pretty({r: hard_raw[r] for r in over})}")
            status = dict(status)
            status["hard"] = dict(hard_raw)
            status["used"] = {**(status.get("used") or {}),
                              **quota.format_list({r: new_used[r] for r in interesting if r in new_used}, hard_raw)}
            current["status"] = status
            writes.append((key, kv.mod_revision, current))
        if a.dry_run:
            return True
        for key, revision, obj in writes:
            try:
                await self.store.update(key, objects.encode(obj), revision=revision)
            except (ConflictError, KeyNotFoundError):
                return False  # someone else charged or recounted: check again from a fresh read
            except StoreError as e:
                raise errors.ServiceUnavailable(f"storage is unavailable: {e}") from e
            log.info("quota charged %s=%s/%s quota=%s used=%s", plural, a.namespace, a.name,
                     obj["metadata"]["name"], quota.pretty(obj["status"]["used"]))
        return True

    async def _count(self, q: dict, resources: list[str]) -> quota.Usage:
        """Usage of ``resources`` counted from the store (a quota the controller has not counted yet)."""
        ns = q["metadata"]["namespace"]
        found: dict[tuple[str, str], list[dict]] = {}
        for group, plural in quota.kinds_for(resources):
            res = next((k for k in all_kinds() if (k.group, k.plural) == (group, plural)), None)
            if res is None or not res.namespaced:
                continue
            items: list[dict] = []
            start: str | None = None
            prefix = res.list_prefix(ns)
            while True:
                try:
                    page = await self.store.range(prefix, start=start, limit=500)
                except StoreError as e:
                    raise errors.ServiceUnavailable(f"storage is unavailable: {e}") from e
                items += [json.loads(kv.value) for kv in page.kvs]
                if not page.more or not page.kvs:
                    break
                start = page.kvs[-1].key + "\x00"
            found[(group, plural)] = items
        total = quota.used(q, found)
        return {r: total.get(r, Decimal(0)) for r in resources}

    async def stop(self) -> None:
        await self.quotas.stop()
