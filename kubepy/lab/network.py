"""The lab cluster's wiring on one host: a bridge, one network namespace per node.

::

    host: bridge kpb-<name> 172.30.K.1/24 ──veth── node netns <name>-node1: eth0 172.30.K.11/24
                                         ──veth── node netns <name>-node2: eth0 172.30.K.12/24 …
                                         ──veth── control-plane netns <name>-cp1: eth0 172.30.K.2/24 …
                                                  (with --control-planes N > 1; .2 to .9)

Every node's default route points at the host; the host masquerades the
lab subnet for traffic that leaves the bridge (image pulls, DNS
forwarding), from a chain of its own (``KUBEPY-LAB-<hash>``) so ``down``
removes exactly what ``up`` added. pyroute2 does the netlink work.

The control plane runs on the host and must reach pod IPs (admission
webhooks are pods): the host routes each node's podCIDR to that node, as
kube-proxy does between nodes. Every lab uses the same pod network
(10.244.0.0/16), so these routes cannot go in the main table; they live in
a table of the lab's own, consulted only for packets sent from the lab's
gateway address (``ip rule from 172.30.K.1 lookup <table>``), which is
where the API server, advertising that address, sends its webhook calls
from. ``ip rule`` and ``ip route show table <n>`` show them.
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
POD_ROUTE_RULE_PRIORITY = 1000  # before the main table's rule (32766)


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

    # Control-plane nodes (``kubepy up --control-planes N``, N > 1): .2 to .9, below the nodes.
    MAX_CONTROL_PLANES = 8

    def cp_netns(self, j: int) -> str:
        return f"{self.name}-cp{j}"

    def cp_ip(self, j: int) -> str:
        return str(self.net.network_address + 1 + j)

    def cp_veth(self, j: int) -> str:
        return f"kpv-{_short(self.name)}-c{j}"

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
        return self._ensure_member(self.node_netns(i), self.node_ip(i), self.host_veth(i))

    def ensure_control_plane(self, j: int) -> str:
        """Control-plane node ``j``'s netns with eth0 on the bridge; returns its name."""
        return self._ensure_member(self.cp_netns(j), self.cp_ip(j), self.cp_veth(j))

    def _ensure_member(self, name: str, ip: str, veth: str) -> str:
        if not (NETNS_DIR / name).exists():
            netns.create(name)
        with IPRoute() as ipr, IPRoute(netns=name, flags=0) as node:
            if not node.link_lookup(ifname="eth0"):
                with contextlib.suppress(Exception):
                    for idx in ipr.link_lookup(ifname=veth):
                        ipr.link("del", index=idx)
                ipr.link("add", ifname=veth, kind="veth",
                         peer={"ifname": "eth0", "net_ns_fd": name})
            (host,) = ipr.link_lookup(ifname=veth)
            (br,) = ipr.link_lookup(ifname=self.bridge)
            ipr.link("set", index=host, master=br, state="up")
            (lo,) = node.link_lookup(ifname="lo")
            node.link("set", index=lo, state="up")
            (eth,) = node.link_lookup(ifname="eth0")
            node.link("set", index=eth, state="up")
            have = {a.get("IFA_ADDRESS") for a in node.get_addr(index=eth)}
            if ip not in have:
                node.addr("add", index=eth, address=ip, prefixlen=self.net.prefixlen)
            if not [r for r in node.get_routes(dst_len=0, table=254) if r.get("RTA_GATEWAY")]:
                node.route("add", dst="0.0.0.0/0", gateway=self.gateway)
        return name

    @property
    def route_table(self) -> int:
        """This lab's routing table on the host (a number no other lab's name gives)."""
        return 0x4B500000 + int(_short(self.name), 16)

    def ensure_pod_routes(self, routes: dict[str, str]) -> tuple[int, int]:
        """The host's routes to pods: ``{podCIDR: node address}`` exactly, in this lab's table,
        used for packets from the gateway address. Returns (added or changed, removed)."""
        added = removed = 0
        with IPRoute() as ipr:
            if not [r for r in ipr.get_rules(family=2) if r.get_attr("FRA_TABLE") == self.route_table]:
                ipr.rule("add", table=self.route_table, priority=POD_ROUTE_RULE_PRIORITY, src=self.gateway,
                         src_len=32)
                log.info("lab pod route rule added from=%s table=%d", self.gateway, self.route_table)
            have = {f"{r.get_attr('RTA_DST')}/{r['dst_len']}": r.get_attr("RTA_GATEWAY") or ""
                    for r in ipr.get_routes(family=2, table=self.route_table)}
            for dst, via in routes.items():
                if have.get(dst) != via:
                    ipr.route("replace", dst=dst, gateway=via, table=self.route_table)
                    log.info("lab pod route set dst=%s via=%s table=%d", dst, via, self.route_table)
                    added += 1
            for dst in set(have) - set(routes):
                ipr.route("del", dst=dst, table=self.route_table)
                removed += 1
        return added, removed

    def ensure_pod_routes_in(self, netns_name: str, routes: dict[str, str]) -> int:
        """A control-plane netns's routes to pods (``{podCIDR: node address}``, its main table: the
        API server there calls webhooks and aggregated APIs in pods). Returns how many it set."""
        changed = 0
        with IPRoute(netns=netns_name, flags=0) as ipr:
            have = {f"{r.get_attr('RTA_DST')}/{r['dst_len']}": r.get_attr("RTA_GATEWAY") or ""
                    for r in ipr.get_routes(family=2, table=254) if r.get_attr("RTA_GATEWAY") and r["dst_len"]}
            for dst, via in routes.items():
                if have.get(dst) != via:
                    ipr.route("replace", dst=dst, gateway=via)
                    changed += 1
        return changed

    # -- down -------------------------------------------------------------
    def remove_pod_routes(self) -> None:
        with IPRoute() as ipr:
            for r in ipr.get_rules(family=2):
                if r.get_attr("FRA_TABLE") == self.route_table:
                    with contextlib.suppress(Exception):
                        ipr.rule("del", table=self.route_table, priority=r.get_attr("FRA_PRIORITY"),
                                 src=r.get_attr("FRA_SRC"), src_len=r["src_len"])
            for r in ipr.get_routes(family=2, table=self.route_table):
                with contextlib.suppress(Exception):
                    ipr.route("del", dst=f"{r.get_attr('RTA_DST')}/{r['dst_len']}", table=self.route_table)

    def remove_node(self, i: int) -> None:
        name = self.node_netns(i)
        with contextlib.suppress(FileNotFoundError, OSError):
            netns.remove(name)
        with IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=self.host_veth(i)):
                with contextlib.suppress(Exception):
                    ipr.link("del", index=idx)

    def remove_control_plane(self, j: int) -> None:
        with contextlib.suppress(FileNotFoundError, OSError):
            netns.remove(self.cp_netns(j))
        with IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=self.cp_veth(j)):
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
