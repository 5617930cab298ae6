"""The lab cluster's wiring on one host: a bridge, one network namespace per node.

::

    host: bridge kpb-<name> 172.30.K.1/24 ──veth── node netns <name>-node1: eth0 172.30.K.11/24
                                         ──veth── node netns <name>-node2: eth0 172.30.K.12/24 …

Every node's default route points at the host; the host masquerades the
lab subnet for traffic that leaves the bridge (image pulls, DNS
forwarding), from a chain of its own (``KUBEPY-LAB-<hash>``) so ``down``
removes exactly what ``up`` added. pyroute2 does the netlink work.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute, netns

log = logging.getLogger(__name__)

NETNS_DIR = Path("/var/run/netns")


def _short(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:5]


def default_subnet(name: str) -> str:
    """172.30.0.0/24 for the default cluster, another /24 of 172.30/16 per name."""
    k = 0 if name == "kubepy" else 1 + int(_short(name), 16) % 250
    return f"172.30.{k}.0/24"


@dataclass(frozen=True)
class LabNetwork:
    name: str
    subnet: str

    @property
    def net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def bridge(self) -> str:
        return f"kpb-{_short(self.name)}"  # IFNAMSIZ: 15

    @property
    def gateway(self) -> str:
        return str(self.net.network_address + 1)

    @property
    def chain(self) -> str:
        return f"KUBEPY-LAB-{_short(self.name).upper()}"

    def node_netns(self, i: int) -> str:
        return f"{self.name}-node{i}"

    def node_ip(self, i: int) -> str:
        return str(self.net.network_address + 10 + i)

    def host_veth(self, i: int) -> str:
        return f"kpv-{_short(self.name)}-{i}"

    # -- up ---------------------------------------------------------------
    def ensure_bridge(self) -> None:
        with IPRoute() as ipr:
            if not ipr.link_lookup(ifname=self.bridge):
                ipr.link("add", ifname=self.bridge, kind="bridge")
            (idx,) = ipr.link_lookup(ifname=self.bridge)
            have = {(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx)}
            if (self.gateway, self.net.prefixlen) not in have:
                ipr.addr("add", index=idx, address=self.gateway, prefixlen=self.net.prefixlen)
            ipr.link("set", index=idx, state="up")
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        self._ensure_masquerade()

    def _ensure_masquerade(self) -> None:
        rules = [
            ("nat", "POSTROUTING", ["-s", self.subnet, "!", "-o", self.bridge, "-j", "MASQUERADE"]),
            ("filter", "FORWARD", ["-i", self.bridge, "-j", "ACCEPT"]),
            ("filter", "FORWARD", ["-o", self.bridge, "-j", "ACCEPT"]),
        ]
        for table, builtin, rule in rules:
            _iptables("-t", table, "-N", self.chain, check=False)
            comment = ["-m", "comment", "--comment", f"kubepy lab cluster {self.name}"]
            if _iptables("-t", table, "-C", self.chain, *rule, *comment, check=False) != 0:
                _iptables("-t", table, "-A", self.chain, *rule, *comment)
            if _iptables("-t", table, "-C", builtin, "-j", self.chain, check=False) != 0:
                _iptables("-t", table, "-I", builtin, "-j", self.chain)

    def ensure_node(self, i: int) -> str:
        """The node's netns with eth0 on the bridge; returns its name."""
        name = self.node_netns(i)
        if not (NETNS_DIR / name).exists():
            netns.create(name)
        with IPRoute() as ipr, IPRoute(netns=name, flags=0) as node:
            if not node.link_lookup(ifname="eth0"):
                with contextlib.suppress(Exception):
                    for idx in ipr.link_lookup(ifname=self.host_veth(i)):
                        ipr.link("del", index=idx)
                ipr.link("add", ifname=self.host_veth(i), kind="veth",
                         peer={"ifname": "eth0", "net_ns_fd": name})
            (host,) = ipr.link_lookup(ifname=self.host_veth(i))
            (br,) = ipr.link_lookup(ifname=self.bridge)
            ipr.link("set", index=host, master=br, state="up")
            (lo,) = node.link_lookup(ifname="lo")
            node.link("set", index=lo, state="up")
            (eth,) = node.link_lookup(ifname="eth0")
            node.link("set", index=eth, state="up")
            have = {a.get("IFA_ADDRESS") for a in node.get_addr(index=eth)}
            if self.node_ip(i) not in have:
                node.addr("add", index=eth, address=self.node_ip(i), prefixlen=self.net.prefixlen)
            if not [r for r in node.get_routes(dst_len=0, table=254) if r.get("RTA_GATEWAY")]:
                node.route("add", dst="0.0.0.0/0", gateway=self.gateway)
        return name

    # -- down -------------------------------------------------------------
    def remove_node(self, i: int) -> None:
        name = self.node_netns(i)
        with contextlib.suppress(FileNotFoundError, OSError):
            netns.remove(name)
        with IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=self.host_veth(i)):
                with contextlib.suppress(Exception):
                    ipr.link("del", index=idx)

    def remove_bridge(self) -> None:
        with IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=self.bridge):
                ipr.link("del", index=idx)
        for table, builtin in (("nat", "POSTROUTING"), ("filter", "FORWARD")):
            while _iptables("-t", table, "-D", builtin, "-j", self.chain, check=False) == 0:
                pass
            _iptables("-t", table, "-F", self.chain, check=False)
            _iptables("-t", table, "-X", self.chain, check=False)


def _iptables(*args: str, check: bool = True) -> int:
    cp = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True)
    if check and cp.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)}: {cp.stderr.strip()}")
    return cp.returncode
