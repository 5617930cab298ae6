"""EndpointSlice reconciling shared by the endpointslice and mirroring controllers.

Both controllers know, for one Service, the endpoints it should have grouped
by port set; this module turns that into writes against the slices that
exist (upstream's ``reconciler.go``, simplified but with the same aims):

- an endpoint stays in the slice it is already in while that slice still
  carries its port set, so a change of one pod rewrites one slice;
- new endpoints fill slices that are being rewritten anyway, then slices
  with room, then new slices of ``MAX_ENDPOINTS_PER_SLICE``;
- slices left empty (or with a port set no longer wanted) are deleted;
- a Service with no endpoints at all keeps one empty placeholder slice.

``SliceTracker`` is the "expectations" of this pair: after a write the
Service is not reconciled again until the informer shows that write, or the
cache would make the controller create twice (upstream's
``EndpointSliceTracker.StaleSlices``).

Pure except ``SliceWriter``, which performs a ``SlicePlan`` through the client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubepy.client import NotFoundError
from kubepy.kinds.discovery.endpointslice import LABEL_MANAGED_BY, LABEL_SERVICE_NAME

log = logging.getLogger(__name__)

__all__ = [
    "MAX_ENDPOINTS_PER_SLICE",
    "PortSet",
    "SlicePlan",
    "SliceTracker",
    "SliceWriter",
    "endpoint_key",
    "plan_slices",
    "port_set",
    "slices_of",
]

MAX_ENDPOINTS_PER_SLICE = 100  # kube-controller-manager's --max-endpoints-per-slice default
TRACKER_TIMEOUT = 10.0  # a write the watch never shows must not stall its Service for longer

PortSet = tuple[tuple[str, int | None, str, str | None], ...]  # (name, port, protocol, appProtocol), sorted


def port_set(ports: Iterable[dict[str, Any]] | None) -> PortSet:
    return tuple(sorted(((p.get("name") or "", p.get("port"), p.get("protocol") or "TCP", p.get("appProtocol"))
                         for p in ports or []), key=lambda t: (t[0], t[1] or 0, t[2], t[3] or "")))


def port_list(ports: PortSet) -> list[dict[str, Any]]:
    out = []
    for name, number, protocol, app in ports:
        p: dict[str, Any] = {"name": name, "protocol": protocol}
        if number is not None:
            p["port"] = number
        if app:
            p["appProtocol"] = app
        out.append(p)
    return out


def endpoint_key(ep: dict[str, Any]) -> str:
    """What makes an endpoint the same one across writes: its first address (and pod)."""
    ref = ep.get("targetRef") or {}
    return f"{(ep.get('addresses') or [''])[0]}/{ref.get('uid') or ref.get('name') or ''}"


def slices_of(slices: Iterable[dict[str, Any]], service_name: str, managed_by: str) -> list[dict[str, Any]]:
    """The slices of one Service (already filtered to its namespace) that ``managed_by`` owns."""
    out = []
    for s in slices:
        labels = (s.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL_SERVICE_NAME) == service_name and labels.get(LABEL_MANAGED_BY) == managed_by:
            out.append(s)
    return sorted(out, key=lambda s: s["metadata"]["name"])


@dataclass
class SlicePlan:
    create: list[tuple[PortSet, list[dict[str, Any]]]] = field(default_factory=list)
    update: list[tuple[dict[str, Any], PortSet, list[dict[str, Any]]]] = field(default_factory=list)
    delete: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.create or self.update or self.delete)


def plan_slices(existing: list[dict[str, Any]], desired: dict[PortSet, list[dict[str, Any]]], *,
                labels: dict[str, str], owner: dict[str, Any], placeholder: bool = True,
                max_per_slice: int = MAX_ENDPOINTS_PER_SLICE) -> SlicePlan:
    """The writes that turn ``existing`` (one Service's slices) into ``desired``
    (endpoints by port set); ``labels`` and ``owner`` (an ownerReference) are
    what every slice must carry.  Without endpoints one empty slice is kept if
    ``placeholder`` (the endpointslice controller's way), none otherwise (mirroring)."""
    plan = SlicePlan()
    desired = {ports: eps for ports, eps in desired.items() if eps}
    if not desired and not placeholder:
        plan.delete.extend(existing)
        return plan
    if not desired:
        empty = next((s for s in existing if not s.get("endpoints") and not s.get("ports")), None)
        if empty is None:
            plan.create.append(((), []))
        elif _stale_meta(empty, labels, owner):
            plan.update.append((empty, (), []))
        plan.delete.extend(s for s in existing if s is not empty)
        return plan

    for ports, eps in sorted(desired.items()):
        wanted = {endpoint_key(ep): ep for ep in eps}
        # slice name -> (slice, endpoints it will hold, rewrite needed)
        kept: list[tuple[dict[str, Any], list[dict[str, Any]], bool]] = []
        for s in existing:
            if port_set(s.get("ports")) != ports or not s.get("endpoints"):
                continue
            now = [wanted.pop(endpoint_key(ep)) for ep in s["endpoints"] if endpoint_key(ep) in wanted]
            # An endpoint listed twice (in this slice or an earlier one) is dropped from the later place.
            changed = now != s["endpoints"] or _stale_meta(s, labels, owner)
            kept.append((s, now, changed))
        remaining = [wanted[k] for k in sorted(wanted)]
        # Fill slices already being rewritten first, then any with room.
        for prefer_changed in (True, False):
            for i, (s, now, changed) in enumerate(kept):
                if not remaining or changed != prefer_changed or len(now) >= max_per_slice:
                    continue
                room = max_per_slice - len(now)
                now.extend(remaining[:room])
                del remaining[:room]
                kept[i] = (s, now, True)
        for s, now, changed in kept:
            if not now:
                plan.delete.append(s)
            elif changed:
                plan.update.append((s, ports, now))
        for i in range(0, len(remaining), max_per_slice):
            plan.create.append((ports, remaining[i:i + max_per_slice]))
    used = {id(s) for s, _, _ in plan.update} | {id(s) for s in plan.delete}
    for s in existing:
        if id(s) in used:
            continue
        ports = port_set(s.get("ports"))
        if ports not in desired or not s.get("endpoints"):
            plan.delete.append(s)  # a port set no longer wanted, or a placeholder no longer needed
    return plan


def _stale_meta(s: dict[str, Any], labels: dict[str, str], owner: dict[str, Any]) -> bool:
    meta = s.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    return (meta.get("labels") or {}) != labels or not any(r.get("uid") == owner["uid"] for r in refs)


class SliceTracker:
    """Which writes of a Service's slices the informer has not shown yet."""

    def __init__(self, timeout: float = TRACKER_TIMEOUT) -> None:
        self.timeout = timeout
        self._expected: dict[str, tuple[float, dict[str, int | None]]] = {}  # service key -> (since, name -> rv)

    def expect(self, service_key: str, name: str, resource_version: int | None) -> None:
        since, names = self._expected.setdefault(service_key, (time.monotonic(), {}))
        names[name] = resource_version
        self._expected[service_key] = (time.monotonic(), names)

    def is_stale(self, service_key: str, cached: Iterable[dict[str, Any]]) -> bool:
        """True while some expected write is not in ``cached`` (that Service's slices in the cache)."""
        entry = self._expected.get(service_key)
        if entry is None:
            return False
        since, names = entry
        if time.monotonic() - since > self.timeout:
            log.warning("endpointslice writes never seen service=%s slices=%s", service_key, ",".join(names))
            del self._expected[service_key]
            return False
        have = {s["metadata"]["name"]: int(s["metadata"].get("resourceVersion") or 0) for s in cached}
        for name, rv in names.items():
            if rv is None and name in have:
                return True  # deleted, still cached
            if rv is not None and have.get(name, -1) < rv:
                return True
        del self._expected[service_key]
        return False

    def forget(self, service_key: str) -> None:
        self._expected.pop(service_key, None)


class SliceWriter:
    """Performs a ``SlicePlan`` for one Service through the API client."""

    def __init__(self, client: Any, tracker: SliceTracker) -> None:
        self.client = client
        self.tracker = tracker

    async def apply(self, plan: SlicePlan, *, service_key: str, generate_name: str, labels: dict[str, str],
                    owner: dict[str, Any]) -> None:
        namespace = service_key.split("/", 1)[0]
        for s, ports, eps in plan.update:
            body = dict(s)
            body["metadata"] = {**s["metadata"], "labels": labels, "ownerReferences": [owner]}
            body["ports"], body["endpoints"] = port_list(ports), eps
            written = await self.client.update("endpointslices", body)  # stale rv: 409, the queue retries
            self._expect(service_key, written)
        for ports, eps in plan.create:
            body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"generateName": generate_name, "namespace": namespace, "labels": labels,
                                 "ownerReferences": [owner]},
                    "addressType": "IPv4", "ports": port_list(ports), "endpoints": eps}
            written = await self.client.create("endpointslices", body, namespace=namespace)
            self._expect(service_key, written)
        for s in plan.delete:
            await self.apply_delete(service_key, s)

    async def apply_delete(self, service_key: str, s: dict[str, Any]) -> None:
        try:
            await self.client.delete("endpointslices", s["metadata"]["name"],
                                     namespace=s["metadata"].get("namespace"))
        except NotFoundError:
            return
        self.tracker.expect(service_key, s["metadata"]["name"], None)

    def _expect(self, service_key: str, written: dict[str, Any]) -> None:
        meta = written.get("metadata") or {}
        self.tracker.expect(service_key, meta["name"], int(meta.get("resourceVersion") or 0))
