"""EndpointSlice mirroring controller: slices for Services without a selector.

A selector-less Service's endpoints are whatever its owner writes into the
core/v1 Endpoints of the same name; this controller mirrors them into
EndpointSlices labelled ``endpointslice.kubernetes.io/managed-by=
endpointslicemirroring-controller.k8s.io`` and owned by that Endpoints
object, so kube-proxy and DNS, which read only slices, see them too (as
upstream's endpointslicemirroring controller).  Ready addresses become
endpoints with ``ready: true``, notReadyAddresses ``ready: false``; each
subset's ports are the slice's ports.  Not mirrored: Endpoints of Services
with a selector (the endpointslice controller covers those), Endpoints
labelled ``endpointslice.kubernetes.io/skip-mirror=true``, Endpoints without
a Service, and leader-election records.  Reads services, endpoints and
endpointslices informers; writes endpointslices.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from kubepy.client import WorkQueue, object_key, run_workers
from kubepy.controllers.context import ControllerContext
from kubepy.controllers.endpoints import service_selector
from kubepy.controllers.endpointslice import generate_name
from kubepy.controllers.endpointslices import PortSet, SliceTracker, SliceWriter, plan_slices, port_set, slices_of
from kubepy.kinds.discovery.endpointslice import LABEL_MANAGED_BY, LABEL_SERVICE_NAME, LABEL_SKIP_MIRROR

log = logging.getLogger(__name__)

MANAGED_BY = "endpointslicemirroring-controller.k8s.io"
LEADER_ANNOTATION = "control-plane.alpha.kubernetes.io/leader"


def should_mirror(service: dict[str, Any] | None, endpoints: dict[str, Any] | None) -> bool:
    if service is None or endpoints is None or service_selector(service) is not None:
        return False
    meta = endpoints.get("metadata") or {}
    if (meta.get("labels") or {}).get(LABEL_SKIP_MIRROR) == "true":
        return False
    return LEADER_ANNOTATION not in (meta.get("annotations") or {})


def _address_endpoint(address: dict[str, Any], ready: bool) -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": [address["ip"]], "conditions": {"ready": ready}}
    for key in ("hostname", "nodeName"):
        if address.get(key):
            ep[key] = address[key]
    if address.get("targetRef"):
        ep["targetRef"] = {k: v for k, v in address["targetRef"].items() if k != "resourceVersion" and v}
    return ep


def mirrored_endpoints(endpoints: dict[str, Any]) -> dict[PortSet, list[dict[str, Any]]]:
    """Endpoints subsets as slice endpoints by port set (IPv4 addresses only, as the slices are IPv4)."""
    out: dict[PortSet, list[dict[str, Any]]] = {}
    for subset in endpoints.get("subsets") or []:
        ports = port_set(subset.get("ports"))
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for address in subset.get(key) or []:
                try:
                    if ipaddress.ip_address(address.get("ip") or "").version != 4:
                        continue
                except ValueError:
                    continue
                out.setdefault(ports, []).append(_address_endpoint(address, ready))
    return out


def mirror_labels(endpoints: dict[str, Any]) -> dict[str, str]:
    labels = {k: v for k, v in ((endpoints.get("metadata") or {}).get("labels") or {}).items()
              if k not in (LABEL_SERVICE_NAME, LABEL_MANAGED_BY)}
    labels[LABEL_SERVICE_NAME] = endpoints["metadata"]["name"]
    labels[LABEL_MANAGED_BY] = MANAGED_BY
    return labels


class EndpointSliceMirroringController:
    name = "endpointslicemirroring"

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.services = ctx.informers.informer("services")
        self.endpoints = ctx.informers.informer("endpoints")
        self.slices = ctx.informers.informer("endpointslices")
        self.queue = WorkQueue(name=self.name)
        self.tracker = SliceTracker()
        self.writer = SliceWriter(ctx.client, self.tracker)
        for informer in (self.services, self.endpoints):
            informer.add_handler(self._enqueue, lambda old, new: self._enqueue(new), self._enqueue)
        self.slices.add_handler(self._slice_changed, lambda old, new: self._slice_changed(new), self._slice_changed)

    def _enqueue(self, obj: dict[str, Any]) -> None:
        self.queue.add(object_key(obj))

    def _slice_changed(self, s: dict[str, Any]) -> None:
        labels = (s.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL_MANAGED_BY) == MANAGED_BY and labels.get(LABEL_SERVICE_NAME):
            self.queue.add(f"{s['metadata'].get('namespace', '')}/{labels[LABEL_SERVICE_NAME]}")

    async def run(self) -> None:
        await run_workers(self.queue, self.reconcile, workers=self.ctx.config.concurrent_syncs, logger=log)

    async def reconcile(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        ours = slices_of(self.slices.cache.by_index("namespace", namespace), name, MANAGED_BY)
        if self.tracker.is_stale(key, ours):
            self.queue.add_after(key, 0.1)
            return
        service, endpoints = self.services.cache.get(key), self.endpoints.cache.get(key)
        if not should_mirror(service, endpoints):
            for s in ours:
                await self.writer.apply_delete(key, s)
            if ours:
                log.info("endpointslices deleted service=%s slices=%d reason=NotMirrored", key, len(ours))
            return
        assert endpoints is not None
        desired = mirrored_endpoints(endpoints)
        labels = mirror_labels(endpoints)
        meta = endpoints["metadata"]
        owner = {"apiVersion": "v1", "kind": "Endpoints", "name": meta["name"], "uid": meta.get("uid", ""),
                 "controller": True, "blockOwnerDeletion": True}
        plan = plan_slices(ours, desired, labels=labels, owner=owner, placeholder=False)
        if not plan:
            return
        await self.writer.apply(plan, service_key=key, generate_name=generate_name(name), labels=labels, owner=owner)
        log.info("endpointslices mirrored service=%s endpoints=%d created=%d updated=%d deleted=%d", key,
                 sum(len(e) for e in desired.values()), len(plan.create), len(plan.update), len(plan.delete))
