"""ClusterIP, NodePort and healthCheckNodePort allocation for Services, without collisions.

State is derived from the stored Services: rebuilt from a list at start
and kept current from the server's own writes and the services watch, so
it never needs its own table. Allocation picks at random (like
Kubernetes) from the upper part of the range, keeping the low addresses
for Services that ask for a fixed one (10.96.0.1 apiserver, 10.96.0.10
DNS).
"""

from __future__ import annotations

import ipaddress
import random
import time
from collections.abc import Iterable
from typing import Any

NODE_PORT_RANGE = (30000, 32767)


class AllocationError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ServiceAllocator:
    def __init__(self, service_cidr: str, node_port_range: tuple[int, int] = NODE_PORT_RANGE) -> None:
        self.net = ipaddress.ip_network(service_cidr)
        self.port_lo, self.port_hi = node_port_range
        self._ips: dict[str, str] = {}  # ip -> service key
        self._ports: dict[tuple[str, int], str] = {}  # (protocol, port) -> service key
        self._by_key: dict[str, tuple[set[str], set[tuple[str, int]]]] = {}
        # Items another API server reserved in the store before its Service reached our
        # watch: not picked again until that Service shows up (or FOREIGN_TTL passes).
        self._foreign: dict[str | tuple[str, int], float] = {}

    @property
    def first_ip(self) -> str:
        return str(self.net.network_address + 1)

    # -- bookkeeping ------------------------------------------------------
    def observe(self, key: str, svc: dict[str, Any] | None) -> None:
        """Record what ``svc`` (None: deleted) holds under ``key``."""
        old_ips, old_ports = self._by_key.pop(key, (set(), set()))
        for ip in old_ips:
            if self._ips.get(ip) == key:
                del self._ips[ip]
        for p in old_ports:
            if self._ports.get(p) == key:
                del self._ports[p]
        if svc is None:
            return
        ips, ports = _held(svc)
        for ip in ips:
            self._ips[ip] = key
        for p in ports:
            self._ports[p] = key
        self._by_key[key] = (ips, ports)

    def foreign_are(self, items: Iterable[str | tuple[str, int]], ttl: float = 300.0) -> None:
        """What is reserved elsewhere is exactly ``items`` (read from the store just now): earlier
        marks go, as a reservation another server made and then released is free again."""
        until = time.monotonic() + ttl
        self._foreign = {i: until for i in items}

    @property
    def has_foreign(self) -> bool:
        now = time.monotonic()
        return any(t > now for t in self._foreign.values())

    def _free(self, item: str | tuple[str, int]) -> bool:
        if item in (self._ports if isinstance(item, tuple) else self._ips):
            return False
        until = self._foreign.get(item)
        return until is None or until < time.monotonic()

    # -- allocation -------------------------------------------------------
    def assign(self, key: str, svc: dict[str, Any], old: dict[str, Any] | None = None) -> None:
        """Fill in clusterIP(s) and nodePorts of ``svc`` in place; keeps what
        ``old`` (the stored version) already had. Raises AllocationError."""
        spec = svc.setdefault("spec", {})
        old_spec = (old or {}).get("spec") or {}
        if not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]
        ip = spec.get("clusterIP")
        if spec.get("type") == "ExternalName":
            pass
        elif ip in (None, ""):
            spec["clusterIP"] = self._pick_ip()
        elif ip != "None":
            self._claim_ip(key, ip)
        if spec.get("clusterIP"):
            spec["clusterIPs"] = [spec["clusterIP"]]
        wants_node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
        # allocateLoadBalancerNodePorts: false keeps the nodePorts a client gave, allocates none.
        picks_node_ports = wants_node_ports and not (spec.get("type") == "LoadBalancer"
                                                     and spec.get("allocateLoadBalancerNodePorts") is False)
        old_ports = {(p.get("protocol", "TCP"), p.get("port")): p.get("nodePort")
                     for p in old_spec.get("ports") or [] if p.get("nodePort")}
        taken_here: set[tuple[str, int]] = set()
        for i, port in enumerate(spec.get("ports") or []):
            proto = port.get("protocol", "TCP")
            if not wants_node_ports:
                port.pop("nodePort", None)
                continue
            np = port.get("nodePort") or old_ports.get((proto, port.get("port")))
            if np:
                self._claim_port(key, proto, int(np), f"spec.ports[{i}].nodePort", taken_here)
            elif picks_node_ports:
                np = self._pick_port(proto, taken_here)
            else:
                continue
            port["nodePort"] = int(np)
            taken_here.add((proto, int(np)))
        # A LoadBalancer with externalTrafficPolicy Local gets a TCP node port on
        # which kube-proxy says whether the node has local endpoints.
        if spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local":
            hc = spec.get("healthCheckNodePort") or old_spec.get("healthCheckNodePort")
            if hc:
                self._claim_port(key, "TCP", int(hc), "spec.healthCheckNodePort", taken_here)
            else:
                hc = self._pick_port("TCP", taken_here)
            spec["healthCheckNodePort"] = int(hc)
        else:
            spec.pop("healthCheckNodePort", None)

    def _claim_ip(self, key: str, ip: str) -> None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise AllocationError("spec.clusterIP", f"{ip}: must be a valid IP address or None") from None
        if addr not in self.net or addr in (self.net.network_address, self.net.broadcast_address):
            raise AllocationError("spec.clusterIPs", f"{ip}: provided IP is not in the valid range. "
                                  f"The range of valid IPs is {self.net}")
        holder = self._ips.get(ip)
        if holder is not None and holder != key:
            raise AllocationError("spec.clusterIPs", f"{ip}: provided IP is already allocated")

    def _pick_ip(self) -> str:
        size = self.net.num_addresses
        static_band = min(max(16, size // 16), 256)
        lo, hi = static_band, size - 2
        if hi < lo:
            lo = 1
        for _ in range(64):
            cand = str(self.net.network_address + random.randint(lo, hi))
            if self._free(cand):
                return cand
        for off in range(1, size - 1):  # small or nearly full range: scan
            cand = str(self.net.network_address + off)
            if self._free(cand):
                return cand
        raise AllocationError("spec.clusterIPs", f"no IP addresses available in range {self.net}")

    def _claim_port(self, key: str, proto: str, port: int, field: str, taken_here: set) -> None:
        if not self.port_lo <= port <= self.port_hi:
            raise AllocationError(field, f"{port}: provided port is not in the valid range. "
                                  f"The range of valid ports is {self.port_lo}-{self.port_hi}")
        holder = self._ports.get((proto, port))
        if (holder is not None and holder != key) or (proto, port) in taken_here:
            raise AllocationError(field, f"{port}: provided port is already allocated")

    def _pick_port(self, proto: str, taken_here: set) -> int:
        for _ in range(64):
            cand = random.randint(self.port_lo, self.port_hi)
            if self._free((proto, cand)) and (proto, cand) not in taken_here:
                return cand
        for cand in range(self.port_lo, self.port_hi + 1):
            if self._free((proto, cand)) and (proto, cand) not in taken_here:
                return cand
        raise AllocationError("spec.ports", "no node ports available")


def _held(svc: dict[str, Any]) -> tuple[set[str], set[tuple[str, int]]]:
    spec = svc.get("spec") or {}
    ips = {ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"}
    ports = {(p.get("protocol", "TCP"), int(p["nodePort"])) for p in spec.get("ports") or [] if p.get("nodePort")}
    if spec.get("healthCheckNodePort"):
        ports.add(("TCP", int(spec["healthCheckNodePort"])))
    return ips, ports
