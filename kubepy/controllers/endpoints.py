"""Endpoints controller: one core/v1 Endpoints per selector Service, listing its pods.

For every Service with a selector it keeps an Endpoints object of the same
name whose subsets hold the IPs of the matching pods - ready ones under
``addresses``, the rest under ``notReadyAddresses`` - and the ports each pod
serves for the Service (a named ``targetPort`` is looked up in the pod's
containers, so pods may differ). Pods with the same port set share a subset.
Services without a selector are left to their owner; the Endpoints of a
deleted Service are deleted. Writes happen only when the normalized subsets
or labels differ. Reads the services, pods and endpoints informers; writes
endpoints through the client.
"""

from __future__ import annotations

import logging
from typing import Any

from kubepy.meta.selectors import LabelSelector, label_selector_from_dict
from kubepy.client import AlreadyExistsError, NotFoundError, WorkQueue, object_key, run_workers
from kubepy.controllers.context import ControllerContext
from kubepy.controllers.pods import is_pod_ready

log = logging.getLogger(__name__)

HEADLESS_LABEL = "service.kubernetes.io/headless"
Port = tuple[str, int, str]  # (name, port, protocol)


# -- decisions (pure) ---------------------------------------------------------
def service_selector(service: dict[str, Any]) -> LabelSelector | None:
    """The pods a Service selects, or None when it has no selector (an empty
    selector counts as none, as in Kubernetes: such Endpoints are user-managed)."""
    selector = (service.get("spec") or {}).get("selector")
    if not selector:
        return None
    return label_selector_from_dict({"matchLabels": selector})


def should_pod_be_in_endpoints(pod: dict[str, Any], *, include_terminating: bool) -> bool:
    status = pod.get("status") or {}
    if not status.get("podIP"):
        return False
    if status.get("phase") in ("Succeeded", "Failed"):
        return False  # finished pods never serve again
    return include_terminating or not (pod.get("metadata") or {}).get("deletionTimestamp")


def resolve_target_port(service_port: dict[str, Any], pod: dict[str, Any]) -> int | None:
    """The pod's port for ``service_port``: an int targetPort as is, a named
    one looked up in the pod's containers (None when the pod has no such port)."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol") or "TCP"
    for container in (pod.get("spec") or {}).get("containers") or []:
        for cp in container.get("ports") or []:
            if cp.get("name") == target and (cp.get("protocol") or "TCP") == protocol:
                return int(cp["containerPort"])
    return None


def pod_ports(service: dict[str, Any], pod: dict[str, Any]) -> tuple[Port, ...]:
    ports: set[Port] = set()
    for sp in (service.get("spec") or {}).get("ports") or []:
        port = resolve_target_port(sp, pod)
        if port is not None:
            ports.add((sp.get("name") or "", port, sp.get("protocol") or "TCP"))
    return tuple(sorted(ports))


def endpoint_address(service: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    addr: dict[str, Any] = {"ip": pod["status"]["podIP"]}
    if spec.get("hostname") and spec.get("subdomain") == service["metadata"]["name"]:
        addr["hostname"] = spec["hostname"]
    if spec.get("nodeName"):
        addr["nodeName"] = spec["nodeName"]
    addr["targetRef"] = {"kind": "Pod", "namespace": meta.get("namespace", ""), "name": meta["name"],
                         "uid": meta.get("uid", "")}
    return addr


def build_subsets(service: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Endpoints subsets for ``service`` given the pods its selector matches."""
    spec = service.get("spec") or {}
    publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
    headless = spec.get("clusterIP") == "None"
    groups: dict[tuple[Port, ...], tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for pod in pods:
        if not should_pod_be_in_endpoints(pod, include_terminating=publish_not_ready):
            continue
        ports = pod_ports(service, pod)
        # A pod serving none of the ports is listed only for a portless headless
        # Service (for DNS); otherwise it has nothing to offer.
        if not ports and not (headless and not spec.get("ports")):
            continue
        ready, not_ready = groups.setdefault(ports, ([], []))
        (ready if publish_not_ready or is_pod_ready(pod) else not_ready).append(endpoint_address(service, pod))
    subsets = []
    for ports, (ready, not_ready) in groups.items():
        subset: dict[str, Any] = {}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        if ports:
            subset["ports"] = [{**({"name": n} if n else {}), "port": p, "protocol": proto} for n, p, proto in ports]
        subsets.append(subset)
    return normalize_subsets(subsets)


def normalize_subsets(subsets: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A canonical form, so equal content compares equal whatever the order."""
    def addr(a: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in a.items() if k != "targetRef"}
        if a.get("targetRef"):
            out["targetRef"] = {k: v for k, v in a["targetRef"].items() if k != "resourceVersion" and v}
        return out

    out = []
    for s in subsets or []:
        n: dict[str, Any] = {}
        for field in ("addresses", "notReadyAddresses"):
            if s.get(field):
                n[field] = sorted((addr(a) for a in s[field]), key=lambda a: (a.get("ip", ""), a.get("targetRef", {}).get("name", "")))
        if s.get("ports"):
            n["ports"] = sorted(({**p, "protocol": p.get("protocol") or "TCP"} for p in s["ports"]),
                                key=lambda p: (p.get("name", ""), p.get("port", 0), p["protocol"]))
        if n:
            out.append(n)
    return sorted(out, key=lambda s: repr(s.get("ports", [])) + repr(s.get("addresses", [])[:1]))


def desired_labels(service: dict[str, Any]) -> dict[str, str]:
    labels = dict((service.get("metadata") or {}).get("labels") or {})
    if (service.get("spec") or {}).get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    else:
        labels.pop(HEADLESS_LABEL, None)
    return labels


# -- the controller -------------------------------------------------------------
class EndpointsController:
    name = "endpoint"

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.services = ctx.informers.informer("services")
        self.pods = ctx.informers.informer("pods")
        self.endpoints = ctx.informers.informer("endpoints")
        self.queue = WorkQueue(name=self.name)
        self.services.add_handler(self._enqueue, lambda old, new: self._enqueue(new), self._enqueue)
        self.pods.add_handler(lambda p: self._pod_changed(None, p), self._pod_changed,
                              lambda p: self._pod_changed(p, None))
        # Someone else edited or removed an Endpoints we own: put it back.
        self.endpoints.add_handler(None, lambda old, new: self._enqueue(new), self._enqueue)

    def _enqueue(self, obj: dict[str, Any]) -> None:
        self.queue.add(object_key(obj))

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
        service = self.services.cache.get(key)
        current = self.endpoints.cache.get(key)
        if service is None:
            if current is not None:
                try:
                    await self.client.delete("endpoints", name, namespace=namespace)
                except NotFoundError:
                    pass
                log.info("endpoints deleted service=%s reason=ServiceGone", key)
            return
        selector = service_selector(service)
        if selector is None:
            return
        pods = [p for p in self.pods.cache.by_index("namespace", namespace)
                if selector.matches((p.get("metadata") or {}).get("labels"))]
        subsets = build_subsets(service, pods)
        labels = desired_labels(service)
        if current is not None and normalize_subsets(current.get("subsets")) == subsets \
                and ((current.get("metadata") or {}).get("labels") or {}) == labels:
            return
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "Endpoints",
                                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                                "subsets": subsets}
        if current is None:
            try:
                await self.client.create("endpoints", body, namespace=namespace)
            except AlreadyExistsError:
                # The cache lags: overwrite what is there on the retry.
                current = await self.client.get("endpoints", name, namespace=namespace)
                await self._update(current, labels, subsets)
            verb = "created"
        else:
            await self._update(current, labels, subsets)
            verb = "updated"
        ready = sum(len(s.get("addresses") or []) for s in subsets)
        not_ready = sum(len(s.get("notReadyAddresses") or []) for s in subsets)
        log.info("endpoints %s service=%s ready=%d not_ready=%d", verb, key, ready, not_ready)

    async def _update(self, current: dict[str, Any], labels: dict[str, str], subsets: list[dict[str, Any]]) -> None:
        updated = dict(current)
        updated["metadata"] = {**current["metadata"], "labels": labels}
        updated["subsets"] = subsets
        await self.client.update("endpoints", updated)  # a stale resourceVersion is a 409: retried
