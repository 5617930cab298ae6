"""Resource-quota controller: counts what each namespace uses into ``status.used``.

Admission (kubepy.api.resourcequota) charges a quota as objects are
created; this controller recounts from the objects themselves, which is
how usage comes back when pods finish or objects are deleted, and how a
new quota learns what already exists. A quota is recounted when it is
created or its ``spec.hard`` changes, when a pod, Service or claim in its
namespace changes what it costs (pods: when they finish), and every
``resync`` seconds (which covers ``count/<kind>`` of kinds nobody watches
here). ``status.hard`` mirrors ``spec.hard``; ``status.used`` has one
entry per hard resource. Writes through ``/status``, guarded by the
resourceVersion read, so a charge admission made meanwhile is never
overwritten with an older count.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubepy.client import ConflictError, NotFoundError, WorkQueue, object_key, run_workers
from kubepy.controllers.context import ControllerContext
from kubepy.kinds import all_kinds
from kubepy.meta import quota

log = logging.getLogger(__name__)

_WATCHED = {("", "pods"): "pods", ("", "services"): "services",
            ("", "persistentvolumeclaims"): "persistentvolumeclaims"}


class ResourceQuotaController:
    name = "resourcequota"

    def __init__(self, ctx: ControllerContext, *, resync: float = 60.0) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.resync = resync
        self.quotas = ctx.informers.informer("resourcequotas")
        # Only kinds this cluster serves (an informer on an unserved kind never syncs and holds up the manager).
        served = {(k.group, k.plural) for k in all_kinds()}
        self.watched = {gk: ctx.informers.informer(plural) for gk, plural in _WATCHED.items() if gk in served}
        self.queue = WorkQueue(name=self.name)
        self.quotas.add_handler(self._quota_changed, lambda old, new: self._quota_changed(new), None)
        for (group, plural), inf in self.watched.items():
            inf.add_handler(self._object_changed(group, plural),
                            self._object_updated(group, plural),
                            self._object_changed(group, plural))

    def _quota_changed(self, q: dict[str, Any]) -> None:
        spec_hard = (q.get("spec") or {}).get("hard") or {}
        status = q.get("status") or {}
        if status.get("hard") != spec_hard or set(status.get("used") or {}) != set(spec_hard):
            self.queue.add(object_key(q))

    def _enqueue_namespace(self, namespace: str, group: str, plural: str) -> None:
        for q in self.quotas.cache.by_index("namespace", namespace):
            if any(quota.charged_by(group, plural, r) for r in (q.get("spec") or {}).get("hard") or {}):
                self.queue.add(object_key(q))

    def _object_changed(self, group: str, plural: str):  # type: ignore[no-untyped-def]
        def handler(obj: dict[str, Any]) -> None:
            ns = (obj.get("metadata") or {}).get("namespace")
            if ns:
                self._enqueue_namespace(ns, group, plural)
        return handler

    def _object_updated(self, group: str, plural: str):  # type: ignore[no-untyped-def]
        def handler(old: dict[str, Any], new: dict[str, Any]) -> None:
            if quota.usage(group, plural, old) != quota.usage(group, plural, new):
                ns = (new.get("metadata") or {}).get("namespace")
                if ns:
                    self._enqueue_namespace(ns, group, plural)
        return handler

    async def _objects(self, namespace: str, kinds: set[tuple[str, str]]) -> dict[tuple[str, str], list[dict]]:
        out: dict[tuple[str, str], list[dict]] = {}
        for group, plural in kinds:
            inf = self.watched.get((group, plural))
            if inf is not None:
                out[(group, plural)] = list(inf.cache.by_index("namespace", namespace))
                continue
            try:
                items, _ = await self.client.list_all(plural, namespace=namespace)
            except (ValueError, NotFoundError):
                log.info("quota cannot count resource=%s.%s reason=NotServed", plural, group)
                continue
            out[(group, plural)] = [i for i in items
                                    if not group or str(i.get("apiVersion", "")).startswith(group + "/")]
        return out

    async def reconcile(self, key: str) -> None:
        q = self.quotas.cache.get(key)
        if q is None:
            return
        ns, name = q["metadata"]["namespace"], q["metadata"]["name"]
        hard = (q.get("spec") or {}).get("hard") or {}
        found = await self._objects(ns, quota.kinds_for(hard))
        used = quota.format_list(quota.used(q, found), hard)
        status = {**(q.get("status") or {}), "hard": dict(hard), "used": used}
        if status == (q.get("status") or {}):
            return
        try:
            await self.client.update("resourcequotas", {**q, "status": status}, subresource="status")
        except ConflictError:
            self.queue.add(key)  # admission charged it meanwhile: count again
            return
        except NotFoundError:
            return
        log.info("quota counted quota=%s/%s used=%s", ns, name, quota.pretty(used))

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync)
            for q in self.quotas.cache.list():
                self.queue.add(object_key(q))

    async def run(self) -> None:
        task = asyncio.create_task(self._resync(), name="resourcequota:resync")
        try:
            await run_workers(self.queue, self.reconcile, workers=self.ctx.config.concurrent_syncs, logger=log)
        finally:
            task.cancel()
