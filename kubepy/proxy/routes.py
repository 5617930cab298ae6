"""Pod routes between nodes, host-gw style: every other node's podCIDR via that node's address.

Maintained from Node objects as nodes come and go. Routes carry their own
protocol number (``proto 183`` in ``ip route``), so a sync only ever
adds or removes routes this module made, never a person's. pyroute2 does
the netlink work; callers run ``sync`` in a thread (it is blocking).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, Iterable

from pyroute2 import IPRoute

log = logging.getLogger(__name__)

RTPROT_KUBEPY = 183  # unassigned in iproute2's rt_protos: marks routes as ours ("proto 183")


def desired_routes(nodes: Iterable[dict[str, Any]], *, self_name: str) -> dict[str, str]:
    """{podCIDR: node address} for every other node that has both."""
    out: dict[str, str] = {}
    for node in nodes:
        meta, spec = node.get("metadata") or {}, node.get("spec") or {}
        if meta.get("name") == self_name or meta.get("deletionTimestamp"):
            continue
        cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
        addr = next((a.get("address") for a in (node.get("status") or {}).get("addresses") or []
                     if a.get("type") == "InternalIP"), None)
        if not addr:
            continue
        for cidr in cidrs:
            try:
                if ipaddress.ip_network(cidr).version == ipaddress.ip_address(addr).version == 4:
                    out[str(ipaddress.ip_network(cidr))] = addr
            except ValueError:
                log.warning("node route skipped node=%s cidr=%r addr=%r reason=invalid", meta.get("name"), cidr, addr)
    return out


class NodeRoutes:
    def sync(self, wanted: dict[str, str]) -> tuple[int, int]:
        """Make our routes exactly ``wanted``; returns (added or changed, removed)."""
        added = removed = 0
        with IPRoute() as ipr:
            have: dict[str, str] = {}
            for r in ipr.get_routes(family=2, table=254, proto=RTPROT_KUBEPY):
                dst = f"{r.get('RTA_DST')}/{r['dst_len']}"
                have[dst] = r.get("RTA_GATEWAY") or ""
            for dst, gw in wanted.items():
                if have.get(dst) != gw:
                    ipr.route("replace", dst=dst, gateway=gw, proto=RTPROT_KUBEPY)
                    log.info("node route set dst=%s via=%s", dst, gw)
                    added += 1
            for dst in set(have) - set(wanted):
                ipr.route("del", dst=dst, proto=RTPROT_KUBEPY)
                log.info("node route removed dst=%s", dst)
                removed += 1
        return added, removed
