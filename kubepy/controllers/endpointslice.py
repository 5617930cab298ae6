"""EndpointSlice controller: the discovery.k8s.io/v1 slices of every selector Service.

For each Service with a selector it keeps IPv4 EndpointSlices labelled
``kubernetes.io/service-name=<svc>`` and
``endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io``,
owned by the Service, each with at most 100 endpoints (pods with the same
resolved port set share slices; ``endpointslices.plan_slices`` places them).
Every matching pod with an IP that has not finished is listed, terminating
ones included, with upstream's conditions (``podToEndpoint``)::

    ready       = publishNotReadyAddresses or (pod Ready and not terminating)
    serving     = pod Ready
    terminating = pod has a deletionTimestamp

plus nodeName, targetRef and hostname (when the pod's subdomain is the
Service).  Service labels are copied (``service.kubernetes.io/headless``
added for headless Services).  Services without a selector are the mirroring
controller's; slices of a deleted Service go with it (garbage collector, and
here directly).  Reads services, pods and endpointslices informers; writes
endpointslices.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from kubepy.client import WorkQueue, object_key, run_workers
from kubepy.controllers.context import ControllerContext
from kubepy.controllers.endpoints import HEADLESS_LABEL, pod_ports, service_selector, should_pod_be_in_endpoints
from kubepy.controllers.endpointslices import (
    PortSet,
    SliceTracker,
    SliceWriter,
    plan_slices,
    slices_of,
)
from kubepy.controllers.pods import is_pod_ready
from kubepy.kinds.discovery.endpointslice import LABEL_MANAGED_BY, LABEL_SERVICE_NAME

log = logging.getLogger(__name__)

MANAGED_BY = "endpointslice-controller.k8s.io"


# -- decisions (pure) ---------------------------------------------------------
def pod_endpoint(service: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    """One pod as a discovery/v1 Endpoint (upstream's podToEndpoint, no zone or hints)."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    terminating = bool(meta.get("deletionTimestamp"))
    ready = is_pod_ready(pod)
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    ep: dict[str, Any] = {
        "addresses": [status["podIP"]],
        "conditions": {"ready": publish or (ready and not terminating), "serving": ready,
                       "terminating": terminating},
        "targetRef": {"kind": "Pod", "namespace": meta.get("namespace", ""), "name": meta["name"],
                      "uid": meta.get("uid", "")},
    }
    if spec.get("nodeName"):
        ep["nodeName"] = spec["nodeName"]
    svc_meta = service.get("metadata") or {}
    if spec.get("hostname") and spec.get("subdomain") == svc_meta.get("name") \
            and meta.get("namespace") == svc_meta.get("namespace"):
        ep["hostname"] = spec["hostname"]
    return ep


def _ports_with_app_protocol(service: dict[str, Any], pod: dict[str, Any]) -> PortSet:
    app = {(p.get("name") or "", p.get("protocol") or "TCP"): p.get("appProtocol")
           for p in (service.get("spec") or {}).get("ports") or []}
    return tuple(sorted(((name, port, proto, app.get((name, proto))) for name, port, proto in pod_ports(service, pod)),
                        key=lambda t: (t[0], t[1] or 0, t[2], t[3] or "")))


def desired_endpoints(service: dict[str, Any], pods: list[dict[str, Any]]) -> dict[PortSet, list[dict[str, Any]]]:
    """The endpoints of ``service`` by port set, given the pods its selector matches."""
    spec = service.get("spec") or {}
    headless_portless = spec.get("clusterIP") == "None" and not spec.get("ports")
    out: dict[PortSet, list[dict[str, Any]]] = {}
    for pod in pods:
        if not should_pod_be_in_endpoints(pod, include_terminating=True):
            continue
        try:
            if ipaddress.ip_address(pod["status"]["podIP"]).version != 4:
                continue
        except ValueError:
            continue
        ports = _ports_with_app_protocol(service, pod)
        if not ports and not headless_portless:
            continue  # serves none of the Service's ports
        out.setdefault(ports, []).append(pod_endpoint(service, pod))
    return out


def slice_labels(service: dict[str, Any], managed_by: str) -> dict[str, str]:
    labels = {k: v for k, v in ((service.get("metadata") or {}).get("labels") or {}).items()
              if k not in (LABEL_SERVICE_NAME, LABEL_MANAGED_BY, HEADLESS_LABEL)}
    if (service.get("spec") or {}).get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    labels[LABEL_SERVICE_NAME] = service["metadata"]["name"]
    labels[LABEL_MANAGED_BY] = managed_by
    return labels


def service_owner(service: dict[str, Any]) -> dict[str, Any]:
    meta = service["metadata"]
    return {"apiVersion": "v1", "kind": "Service", "name": meta["name"], "uid": meta.get("uid", ""),
            "controller": True, "blockOwnerDeletion": True}


def generate_name(name: str) -> str:
    """Upstream's getEndpointSlicePrefix: the Service's name and a dash, kept short enough for a suffix."""
    prefix = f"{name}-"
    return prefix if len(prefix) <= 58 else prefix[:58]


# -- the controller -------------------------------------------------------------
class EndpointSliceController:
    name = "endpointslice"

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.services = ctx.informers.informer("services")
        self.pods = ctx.informers.informer("pods")
        self.slices = ctx.informers.informer("endpointslices")
        self.queue = WorkQueue(name=self.name)
        self.tracker = SliceTracker()
        self.writer = SliceWriter(ctx.client, self.tracker)
        self.services.add_handler(self._enqueue, lambda old, new: self._enqueue(new), self._enqueue)
        self.pods.add_handler(lambda p: self._pod_changed(None, p), self._pod_changed,
                              lambda p: self._pod_changed(p, None))
        self.slices.add_handler(self._slice_changed, lambda old, new: self._slice_changed(new), self._slice_changed)

    def _enqueue(self, obj: dict[str, Any]) -> None:
        self.queue.add(object_key(obj))

    def _slice_changed(self, s: dict[str, Any]) -> None:
        labels = (s.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL_MANAGED_BY) == MANAGED_BY and labels.get(LABEL_SERVICE_NAME):
            self.queue.add(f"{s['metadata'].get('namespace', '')}/{labels[LABEL_SERVICE_NAME]}")

    def _pod_changed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        pod = new or old
        assert pod is not None
        namespace = pod["metadata"].get("namespace", "")
        labels = [((p.get("metadata") or {}).get("labels") or {}) for p in (old, new) if p is not None]
        for svc in self.services.cache.by_index("namespace", namespace):
            selector = service_selector(svc)
            if selector is not None and any(selector.matches(lb) for lb in labels):
                self._enqueue(svc)

    async def run(self) -> None:
        await run_workers(self.queue, self.reconcile, workers=self.ctx.config.concurrent_syncs, logger=log)

    async def reconcile(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        ours = slices_of(self.slices.cache.by_index("namespace", namespace), name, MANAGED_BY)
        if self.tracker.is_stale(key, ours):
            self.queue.add_after(key, 0.1)
            return
        service = self.services.cache.get(key)
        selector = service_selector(service) if service is not None else None
        if service is not None and (service.get("spec") or {}).get("type") == "ExternalName":
            selector = None  # an ExternalName Service has no endpoints, selector or not (as upstream)
        if service is None or selector is None:
            # Gone, selector-less now (mirroring's business) or ExternalName: our slices go.
            for s in ours:
                await self.writer.apply_delete(key, s)
            if ours:
                log.info("endpointslices deleted service=%s slices=%d reason=%s", key, len(ours),
                         "ServiceGone" if service is None else "NoSelector")
            return
        pods = [p for p in self.pods.cache.by_index("namespace", namespace)
                if selector.matches((p.get("metadata") or {}).get("labels"))]
        desired = desired_endpoints(service, pods)
        labels = slice_labels(service, MANAGED_BY)
        owner = service_owner(service)
        plan = plan_slices(ours, desired, labels=labels, owner=owner)
        if not plan:
            return
        await self.writer.apply(plan, service_key=key, generate_name=generate_name(name), labels=labels, owner=owner)
        log.info("endpointslices synced service=%s endpoints=%d created=%d updated=%d deleted=%d", key,
                 sum(len(e) for e in desired.values()), len(plan.create), len(plan.update), len(plan.delete))
