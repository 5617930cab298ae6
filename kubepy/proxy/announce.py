"""Layer-2 announcement of LoadBalancer addresses: exactly one node answers ARP for each.

In the manner of MetalLB's layer-2 mode: for every load-balancer address,
every kube-proxy computes the same announcing node - among the *live* nodes
that host a ready endpoint of the Service, the one with the smallest
``sha256(node + "#" + ip)`` - and only that node puts the address on its
interface (as a /32 labelled ``<ifname>:klb``, so the kernel answers ARP
for it and it is easy to spot with ``ip -4 addr``) and sends gratuitous
ARP so neighbours' caches move at once - again every ``REANNOUNCE_INTERVAL``
for ``REANNOUNCE_FOR`` seconds, as MetalLB's speaker does, since Linux ignores
an update to a neighbour entry changed less than ``locktime`` (1 s) ago: an
address that moved twice within a second would otherwise stay on the first
node's MAC in the host's cache. When that node goes away, the next one in the
order takes over.

A node is live while its kube-proxy answers ``/healthz`` on its InternalIP
(port 10256, probed every ``PROBE_INTERVAL``) and its Node is not NotReady:
peers see a failed node within ``PEER_TIMEOUT`` instead of the node
lease's 40 s (MetalLB uses memberlist for the same reason).

``announcing_node`` and ``desired_addresses`` are pure; ``NodeAddresses``
(pyroute2 + a raw ARP socket) and ``PeerProbe`` (HTTP) are the adapters.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
from pyroute2 import IPRoute

from kubepy.proxy.rules import ServicePort

log = logging.getLogger(__name__)

__all__ = ["NodeAddresses", "PeerProbe", "announcing_node", "desired_addresses", "live_nodes"]

LABEL_SUFFIX = ":klb"
PROBE_INTERVAL = 0.5
PEER_TIMEOUT = 2.0
REANNOUNCE_INTERVAL = 1.1  # seconds: just past the kernel's default neighbour locktime (1 s)
REANNOUNCE_FOR = 5.0
HEALTHZ_PORT = 10256


# -- decisions (pure) ---------------------------------------------------------
def announcing_node(ip: str, candidates: Iterable[str]) -> str | None:
    """The node that announces ``ip``: the same answer on every node given the same candidates."""
    ranked = sorted(candidates, key=lambda n: (hashlib.sha256(f"{n}#{ip}".encode()).hexdigest(), n))
    return ranked[0] if ranked else None


def desired_addresses(ports: Mapping[str, ServicePort], endpoint_nodes: Mapping[str, set[str]],
                      live: set[str]) -> dict[str, str]:
    """{address: announcing node} for every load-balancer address. ``endpoint_nodes``
    maps "namespace/service" to the nodes holding one of its ready endpoints."""
    out: dict[str, str] = {}
    for sp in ports.values():
        candidates = endpoint_nodes.get(sp.service_key, set()) & live
        for ip in sp.load_balancer_ips:
            node = announcing_node(ip, candidates)
            if node is not None:
                out.setdefault(ip, node)
    return out


def endpoint_nodes(slices: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """"namespace/service" -> nodes with a ready (or serving-terminating) endpoint of it."""
    out: dict[str, set[str]] = {}
    for s in slices:
        meta = s.get("metadata") or {}
        service = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        if not service:
            continue
        for ep in s.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            if ep.get("nodeName") and (cond.get("ready") is not False or cond.get("serving") is True):
                out.setdefault(f"{meta.get('namespace') or 'default'}/{service}", set()).add(ep["nodeName"])
    return out


def live_nodes(nodes: Iterable[Mapping[str, Any]], answering: set[str], self_name: str) -> set[str]:
    """Nodes whose proxy answers (this one always does) and which are not NotReady."""
    out = set()
    for node in nodes:
        name = node["metadata"]["name"]
        ready = next((c.get("status") for c in (node.get("status") or {}).get("conditions") or []
                      if c.get("type") == "Ready"), "Unknown")
        if ready == "False":
            continue
        if name == self_name or name in answering:
            out.add(name)
    return out


def internal_ip(node: Mapping[str, Any]) -> str | None:
    return next((a["address"] for a in (node.get("status") or {}).get("addresses") or []
                 if a.get("type") == "InternalIP"), None)


# -- adapters -------------------------------------------------------------------
def _arp_frame(mac: bytes, ip: str) -> bytes:
    """A gratuitous ARP request: who-has ip tell ip, from mac, to everyone."""
    addr = socket.inet_aton(ip)
    eth = b"\xff" * 6 + mac + struct.pack("!H", 0x0806)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + addr + b"\x00" * 6 + addr
    return eth + arp


class NodeAddresses:
    """Adds and removes announced /32s on the interface that holds the node's IP (pyroute2), and
    sends gratuitous ARP for each added one (a raw AF_PACKET socket). Synchronous: run in a thread."""

    def __init__(self, node_ip: str) -> None:
        self.node_ip = node_ip

    def _link(self, ipr: IPRoute) -> tuple[int, str]:
        for msg in ipr.get_addr(family=socket.AF_INET):
            if msg.get_attr("IFA_ADDRESS") == self.node_ip:
                idx = msg["index"]
                return idx, ipr.get_links(idx)[0].get_attr("IFLA_IFNAME")
        raise RuntimeError(f"no interface holds the node address {self.node_ip}")

    def sync(self, wanted: set[str], *, reannounce: bool = False) -> tuple[list[str], list[str]]:
        """Hold exactly ``wanted`` (as /32s with our label); returns (added, removed). Gratuitous ARP
        goes out for the added ones, or for all of ``wanted`` with ``reannounce``."""
        added, removed = [], []
        with IPRoute() as ipr:
            idx, ifname = self._link(ipr)
            label = (ifname + LABEL_SUFFIX)[:15]
            held = {m.get_attr("IFA_ADDRESS") for m in ipr.get_addr(family=socket.AF_INET, index=idx)
                    if m.get_attr("IFA_LABEL") == label}
            for ip in sorted(held - wanted):
                with contextlib.suppress(Exception):
                    ipr.addr("del", index=idx, address=ip, prefixlen=32)
                removed.append(ip)
            for ip in sorted(wanted - held):
                ipr.addr("add", index=idx, address=ip, prefixlen=32, label=label)
                added.append(ip)
            mac = bytes.fromhex(ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS").replace(":", ""))
        if added or (reannounce and wanted):
            try:
                self.gratuitous_arp(ifname, mac, sorted(wanted) if reannounce else added)
            except OSError as e:  # e.g. the link is down: the addresses are held; announced again later
                log.warning("gratuitous arp failed ifname=%s ips=%s err=%s", ifname,
                            ",".join(sorted(wanted) if reannounce else added), e)
        return added, removed

    def announce(self, ips: set[str]) -> list[str]:
        """Gratuitous ARP again for those of ``ips`` this node still holds (it may have given some up
        since); returns them. Synchronous: run in a thread."""
        with IPRoute() as ipr:
            idx, ifname = self._link(ipr)
            label = (ifname + LABEL_SUFFIX)[:15]
            held = sorted(ips & {m.get_attr("IFA_ADDRESS") for m in ipr.get_addr(family=socket.AF_INET, index=idx)
                                 if m.get_attr("IFA_LABEL") == label})
            mac = bytes.fromhex(ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS").replace(":", ""))
        if held:
            self.gratuitous_arp(ifname, mac, held, count=1)
        return held

    @staticmethod
    def gratuitous_arp(ifname: str, mac: bytes, ips: list[str], *, count: int = 2) -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((ifname, 0))
            for _ in range(count):
                for ip in ips:
                    s.send(_arp_frame(mac, ip))


class PeerProbe:
    """Which other nodes' kube-proxies answer ``/healthz``; probes all of them every ``interval``
    while ``want(True)`` (some Service has a load-balancer address), and not at all otherwise: four
    requests a second per node for nothing cost an emulated VM a few percent of its CPU. ``rounds``
    counts the rounds since probing last started, so nobody is known live until one is done."""

    def __init__(self, *, interval: float = PROBE_INTERVAL, timeout: float = PEER_TIMEOUT,
                 port: int = HEALTHZ_PORT) -> None:
        self.interval, self.timeout, self.port = interval, timeout, port
        self.peers: dict[str, str] = {}  # node name -> InternalIP (set_peers)
        self.rounds = 0  # completed probe rounds of known peers: until one is done nobody is known live
        self._last_ok: dict[str, float] = {}
        self._known = asyncio.Event()
        self._wanted = asyncio.Event()

    def want(self, wanted: bool) -> None:
        """Probe (``wanted``) or idle; answers older than ``timeout`` count for nothing either way."""
        if wanted and not self._wanted.is_set():
            self.rounds = 0
            self._wanted.set()
        elif not wanted:
            self._wanted.clear()

    def set_peers(self, peers: dict[str, str]) -> None:
        self.peers = dict(peers)
        self._known.set()

    def answering(self, now: float | None = None) -> set[str]:
        now = time.monotonic() if now is None else now
        return {n for n, t in self._last_ok.items() if now - t <= self.timeout and n in self.peers}

    async def run(self, on_change: Any) -> None:
        """Probe forever; ``on_change()`` when the set of answering peers changes."""
        timeout = aiohttp.ClientTimeout(total=min(1.0, self.timeout))
        async with aiohttp.ClientSession(timeout=timeout) as session:
            before: set[str] = set()
            await self._known.wait()
            while True:
                if not self._wanted.is_set():
                    log.info("proxy peers not probed: no load-balancer address")
                    await self._wanted.wait()
                    log.info("proxy peers probed: a load-balancer address")
                await asyncio.gather(*(self._probe(session, n, ip) for n, ip in list(self.peers.items())))
                self.rounds += 1
                now = self.answering()
                if now != before or self.rounds == 1:
                    log.info("proxy peers answering=%s gone=%s", ",".join(sorted(now)) or "-",
                             ",".join(sorted(before - now)) or "-")
                    before = now
                    on_change()
                await asyncio.sleep(self.interval)

    async def _probe(self, session: aiohttp.ClientSession, name: str, ip: str) -> None:
        try:
            host = f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip
            async with session.get(f"http://{host}:{self.port}/healthz") as resp:
                if resp.status == 200:
                    self._last_ok[name] = time.monotonic()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            pass
