"""Service load-balancer controller: addresses for ``type: LoadBalancer`` Services from a pool.

kubepy's answer to a cloud's load balancer, in the spirit of k3s ServiceLB /
MetalLB's layer-2 mode: this controller gives each LoadBalancer Service (with
no ``spec.loadBalancerClass``, or ours, ``kubepy.io/servicelb``) one address
from ``--load-balancer-ip-range`` and writes it to
``status.loadBalancer.ingress[0].ip``; on the nodes kube-proxy routes the
address and exactly one node answers ARP for it (``kubepy.proxy.announce``).

Race-free across several controller managers / API servers: an address is
taken by *creating* the Lease ``kube-system/servicelb-<a-b-c-d>`` (holder:
the Service's "namespace/name", labelled with its UID). Creation is a
compare-and-swap in the store, so two writers can never both hold one
address; a loser (409 AlreadyExists) tries the next free one. Releasing is
deleting the Lease, when the Service goes or stops being ours. The Lease
names its Service by a label with the Service's UID, not an ownerReference:
an owner must be in the dependent's namespace, and the garbage collector
would delete a kube-system Lease "owned" by a Service elsewhere at once.

``spec.loadBalancerIP`` asks for one address of the pool; outside the pool
or taken by another Service it is an ``AllocationFailed`` warning event and
the Service stays pending (never a silent substitute). Events as MetalLB's:
``IPAllocated`` "Assigned IP [...]", ``AllocationFailed``.
Reads services and leases informers; writes leases, services/status, events.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from kubepy.client import AlreadyExistsError, NotFoundError, WorkQueue, object_key, run_workers
from kubepy.controllers.context import ControllerContext

log = logging.getLogger(__name__)

LB_CLASS = "kubepy.io/servicelb"
LEASE_NAMESPACE = "kube-system"
LEASE_PREFIX = "servicelb-"
ADDRESS_LABEL = "servicelb.kubepy.io/address"
SERVICE_UID_LABEL = "servicelb.kubepy.io/service-uid"
MAX_POOL = 65536

__all__ = ["LB_CLASS", "ServiceLBController", "is_ours", "lease_name", "parse_pool", "pick_address"]


# -- decisions (pure) ---------------------------------------------------------
def parse_pool(text: str) -> list[str]:
    """``"A-B"``, a CIDR, or a comma list of those → the addresses, in order.
    Raises ValueError with a message fit for a flag error."""
    out: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if "-" in part:
            lo_s, hi_s = part.split("-", 1)
            lo, hi = ipaddress.IPv4Address(lo_s.strip()), ipaddress.IPv4Address(hi_s.strip())
            if hi < lo:
                raise ValueError(f"{part}: the range ends before it starts")
            if int(hi) - int(lo) >= MAX_POOL:
                raise ValueError(f"{part}: more than {MAX_POOL} addresses")
            out.extend(str(ipaddress.IPv4Address(i)) for i in range(int(lo), int(hi) + 1))
        else:
            net = ipaddress.IPv4Network(part, strict=False)
            if net.num_addresses > MAX_POOL:
                raise ValueError(f"{part}: more than {MAX_POOL} addresses")
            out.extend(str(a) for a in (net.hosts() if net.prefixlen < 31 else net))
    return list(dict.fromkeys(out))


def is_ours(service: dict[str, Any] | None) -> bool:
    spec = (service or {}).get("spec") or {}
    return spec.get("type") == "LoadBalancer" and spec.get("loadBalancerClass") in (None, "", LB_CLASS)


def lease_name(ip: str) -> str:
    return LEASE_PREFIX + ip.replace(".", "-")


def lease_address(lease: dict[str, Any]) -> str | None:
    name = (lease.get("metadata") or {}).get("name") or ""
    if not name.startswith(LEASE_PREFIX):
        return None
    return name[len(LEASE_PREFIX):].replace("-", ".")


def pick_address(pool: list[str], taken: set[str], *, requested: str | None, held: str | None) -> tuple[str | None, str]:
    """(address, why): the one to hold, or None and the reason it cannot be had."""
    if requested:
        if requested not in pool:
            return None, f"requested IP {requested!r} is not in the pool"
        if requested in taken and requested != held:
            return None, f"requested IP {requested!r} is already assigned to another service"
        return requested, ""
    if held is not None and held in pool:
        return held, ""
    for ip in pool:
        if ip not in taken:
            return ip, ""
    return None, "no available IPs"


def _uid_of(lease: dict[str, Any]) -> str:
    return ((lease.get("metadata") or {}).get("labels") or {}).get(SERVICE_UID_LABEL, "")


def ingress_ips(service: dict[str, Any]) -> list[str]:
    ingress = (((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")) or []
    return [i["ip"] for i in ingress if isinstance(i, dict) and i.get("ip")]


# -- the controller -------------------------------------------------------------
class ServiceLBController:
    name = "service-lb"

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.recorder = ctx.recorder
        self.pool = parse_pool(ctx.config.load_balancer_ip_range) if ctx.config.load_balancer_ip_range else []
        self.services = ctx.informers.informer("services")
        self.leases = ctx.informers.informer("leases")
        self.queue = WorkQueue(name=self.name)
        self.services.add_handler(self._enqueue, lambda old, new: self._enqueue(new), self._enqueue)
        self.leases.add_handler(self._lease_changed, lambda old, new: self._lease_changed(new), self._lease_freed)

    def _enqueue(self, obj: dict[str, Any]) -> None:
        self.queue.add(object_key(obj))

    def _ours(self, lease: dict[str, Any]) -> bool:
        meta = lease.get("metadata") or {}
        return meta.get("namespace") == LEASE_NAMESPACE and lease_address(lease) is not None

    def _lease_changed(self, lease: dict[str, Any]) -> None:
        holder = (lease.get("spec") or {}).get("holderIdentity")
        if self._ours(lease) and holder:
            self.queue.add(holder)

    def _lease_freed(self, lease: dict[str, Any]) -> None:
        if not self._ours(lease):
            return
        self._lease_changed(lease)
        for svc in self.services.cache.list():  # an address came free: pending Services may have it
            if is_ours(svc) and not ingress_ips(svc):
                self._enqueue(svc)

    async def run(self) -> None:
        log.info("service load balancer pool=%s addresses=%d", self.ctx.config.load_balancer_ip_range or "-",
                 len(self.pool))
        await run_workers(self.queue, self.reconcile, workers=1, logger=log)

    def _held_by(self, key: str, leases: list[dict[str, Any]] | None = None) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for lease in self.leases.cache.by_index("namespace", LEASE_NAMESPACE) if leases is None else leases:
            ip = lease_address(lease)
            if ip is not None and (lease.get("spec") or {}).get("holderIdentity") == key:
                out.append((ip, lease))
        return out

    async def reconcile(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        service = self.services.cache.get(key)
        held = self._held_by(key)
        if not is_ours(service):
            for ip, lease in held:
                await self._release(key, ip, lease, reason="NotALoadBalancer" if service else "ServiceGone")
            # No longer a LoadBalancer: the addresses we gave it go from its status (not another class's).
            if service is not None and (service.get("spec") or {}).get("type") != "LoadBalancer" \
                    and set(ingress_ips(service)) & set(self.pool):
                await self._write_status(service, [])
            return
        assert service is not None
        uid = service["metadata"].get("uid", "")
        leases = self.leases.cache.by_index("namespace", LEASE_NAMESPACE)
        if not any(_uid_of(lease) == uid for _, lease in held):
            # About to pick an address: the cache may not show a lease just written (ours or
            # another writer's), so the store is asked. Picking twice would move the address.
            leases = (await self.client.list("leases", namespace=LEASE_NAMESPACE,
                                             label_selector=f"{ADDRESS_LABEL}=true"))["items"]
            held = self._held_by(key, leases)
        # A lease of an earlier Service of the same name is not ours to keep.
        mine = [(ip, lease) for ip, lease in held if _uid_of(lease) == uid]
        for ip, lease in held:
            if (ip, lease) not in mine:
                await self._release(key, ip, lease, reason="OwnerReplaced")
        if not self.pool:
            self.recorder.event(service, "Warning", "AllocationFailed",
                                f'Failed to allocate IP for "{key}": no load-balancer address pool configured '
                                "(kubepy controller-manager --load-balancer-ip-range)")
            return
        taken = {lease_address(lease) or "" for lease in leases}
        requested = (service.get("spec") or {}).get("loadBalancerIP") or None
        current = mine[0][0] if mine else None
        ip, why = pick_address(self.pool, taken, requested=requested, held=current)
        while ip is not None and ip != current:
            try:
                await self._claim(service, key, ip)
                break
            except AlreadyExistsError:  # another writer won it (or our cache lags): next one
                taken.add(ip)
                ip, why = pick_address(self.pool, taken, requested=requested, held=None)
        for other, lease in mine:
            if other != ip:
                await self._release(key, other, lease, reason="AddressChanged")
        if ip is None:
            self.recorder.event(service, "Warning", "AllocationFailed", f'Failed to allocate IP for "{key}": {why}')
            log.info("load balancer address not allocated service=%s reason=%s", key, why)
            if ingress_ips(service):
                await self._write_status(service, [])
            return
        if ingress_ips(service) != [ip]:
            await self._write_status(service, [ip])
            self.recorder.event(service, "Normal", "IPAllocated", f'Assigned IP ["{ip}"]')
            log.info("load balancer address assigned service=%s ip=%s", key, ip)

    async def _claim(self, service: dict[str, Any], key: str, ip: str) -> None:
        meta = service["metadata"]
        await self.client.create("leases", {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": lease_name(ip), "namespace": LEASE_NAMESPACE,
                         "labels": {ADDRESS_LABEL: "true", SERVICE_UID_LABEL: meta.get("uid", "")}},
            "spec": {"holderIdentity": key}}, namespace=LEASE_NAMESPACE)
        log.info("load balancer address claimed service=%s ip=%s lease=%s", key, ip, lease_name(ip))

    async def _release(self, key: str, ip: str, lease: dict[str, Any], *, reason: str) -> None:
        try:
            await self.client.delete("leases", lease["metadata"]["name"], namespace=LEASE_NAMESPACE,
                                     preconditions={"uid": lease["metadata"].get("uid")})
        except NotFoundError:
            return
        log.info("load balancer address released service=%s ip=%s reason=%s", key, ip, reason)

    async def _write_status(self, service: dict[str, Any], ips: list[str]) -> None:
        body = dict(service)
        body["status"] = {**(service.get("status") or {}), "loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}
                          if ips else {}}
        await self.client.update("services", body, subresource="status")  # 409 on a stale read: retried
