"""The proxy's netlink jobs (pyroute2): service-CIDR route, bridge hairpin, UDP conntrack hygiene.

- ``ensure_service_route``: the node's own packets to a ClusterIP need a
  route before netfilter's OUTPUT DNAT can rewrite them (no route means
  "network unreachable" before any rule is seen), so the service CIDR is
  routed onto the pod bridge.
- ``ensure_hairpin``: a pod reaching itself through its Service is DNATed
  back out of the bridge port it came in by; the kubelet sets hairpin on
  new veths, the proxy enforces it on every port of the bridge.
- ``ensure_no_redirects``: with the service CIDR routed onto the bridge, a
  pod's packet to a ClusterIP leaves by the interface it came in by, so the
  kernel sends the pod an ICMP redirect first - and that spends the per-host
  ICMP rate limit, so the REJECT of a Service without endpoints is never
  answered and the client hangs instead of being refused. Redirects are
  useless on a pod bridge (every hop is this node): ``send_redirects`` off
  for the bridge and ``all`` (the kernel ORs the two).
- ``delete_udp_flows``: UDP has no connection end, so a client that keeps
  its source port keeps its conntrack entry - and its DNAT to an endpoint
  that is gone. Entries whose original destination is a service and whose
  reply source is a removed endpoint are deleted through pyroute2's
  ``Conntrack`` (ctnetlink; it works on the development machines, so the
  ``conntrack -D`` CLI is not used).

Everything acts on the current network namespace, or on ``netns`` when
given (tests, bench): ``IPRoute(netns=..., flags=0)`` for links and routes,
and for conntrack the calling thread is moved with ``pyroute2.netns``
``pushns``/``popns`` for the whole exchange (pyroute2 0.9 opens its
socket lazily, so only the thread's netns at use time counts). pyroute2's
synchronous API refuses to run inside a running event loop, so the proxier
calls these with ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import Conntrack, IPRoute
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink.exceptions import NetlinkError

__all__ = ["NodeNetlink", "UDPFlow"]

log = logging.getLogger(__name__)

IPPROTO_UDP = 17
RT_SCOPE_LINK = 253


@dataclass(frozen=True, order=True)
class UDPFlow:
    """Conntrack entries to delete: UDP, original destination port ``dport``,
    original destination ``orig_dst`` (None: any, as for a NodePort) and reply
    source ``reply_src`` (None: any)."""

    dport: int
    orig_dst: str | None = None
    reply_src: str | None = None

    def matches(self, orig_dst: str, orig_dport: int, reply_src: str) -> bool:
        return (orig_dport == self.dport
                and (self.orig_dst is None or orig_dst == self.orig_dst)
                and (self.reply_src is None or reply_src == self.reply_src))


class NodeNetlink:
    def __init__(self, *, bridge: str, service_cidr: str, netns: str | None = None) -> None:
        self.bridge = bridge
        self.service_cidr = str(ipaddress.IPv4Network(service_cidr, strict=False))
        self.netns = netns

    def _ipr(self) -> IPRoute:
        return IPRoute(netns=self.netns, flags=0) if self.netns else IPRoute()

    def ensure_service_route(self) -> bool:
        """``<service cidr> dev <bridge> scope link``; True if it had to be written.
        False too when the bridge does not exist yet (the kubelet makes it)."""
        net = ipaddress.IPv4Network(self.service_cidr)
        with self._ipr() as ipr:
            found = ipr.link_lookup(ifname=self.bridge)
            if not found:
                log.debug("no bridge yet bridge=%s", self.bridge)
                return False
            idx = found[0]
            for route in ipr.get_routes(family=socket.AF_INET, table=254):
                if (route.get("RTA_DST") == str(net.network_address) and route["dst_len"] == net.prefixlen
                        and route.get("RTA_OIF") == idx):
                    return False
            ipr.route("replace", dst=str(net.network_address), dst_len=net.prefixlen, oif=idx,
                      scope=RT_SCOPE_LINK, table=254)
        log.info("service route written cidr=%s dev=%s", self.service_cidr, self.bridge)
        return True

    def ensure_hairpin(self) -> int:
        """Hairpin on every port of the bridge (idempotent); the number of ports."""
        with self._ipr() as ipr:
            found = ipr.link_lookup(ifname=self.bridge)
            if not found:
                return 0
            ports = [link["index"] for link in ipr.get_links() if link.get("IFLA_MASTER") == found[0]]
            for idx in ports:
                with contextlib.suppress(NetlinkError):  # a port removed meanwhile
                    ipr.brport("set", index=idx, mode=1)
        return len(ports)

    def ensure_no_redirects(self) -> None:
        with self._in_netns():
            for conf in ("all", self.bridge):
                path = Path(f"/proc/sys/net/ipv4/conf/{conf}/send_redirects")
                # /proc/sys/net is resolved by the opening thread's netns.
                with contextlib.suppress(FileNotFoundError):  # no bridge yet
                    if path.read_text().strip() != "0":
                        path.write_text("0\n")
                        log.info("icmp redirects off conf=%s", conf)

    def delete_udp_flows(self, flows: Iterable[UDPFlow]) -> int:
        """Delete UDP conntrack entries matching any of ``flows``; how many were deleted."""
        wanted = sorted(set(flows))
        if not wanted:
            return 0
        deleted = 0
        with self._in_netns():
            ct = Conntrack()
            try:
                for entry in list(ct.dump_entries()):
                    orig, reply = entry.tuple_orig, entry.tuple_reply
                    if orig.proto != IPPROTO_UDP:
                        continue
                    if any(f.matches(orig.daddr, orig.dport, reply.saddr) for f in wanted):
                        try:
                            ct.entry("del", tuple_orig=orig)
                            deleted += 1
                        except NetlinkError as e:  # expired meanwhile
                            log.debug("conntrack delete failed err=%s", e)
            finally:
                ct.close()
        return deleted

    @contextlib.contextmanager
    def _in_netns(self) -> Iterator[None]:
        if not self.netns:
            yield
            return
        pyroute2_netns.pushns(self.netns)
        try:
            yield
        finally:
            pyroute2_netns.popns()
