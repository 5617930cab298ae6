"""nftables mode: the same ``ServicePort`` models → one ``nft -f`` script in kube-proxy's nftables layout.

``rules`` decides what a node programs; this module only writes it the way
upstream's nftables proxier does (pkg/proxy/nftables), and holds the
adapter that runs ``nft`` (``RealNFTables``) and a fake for the proxier's
tests (``FakeNFTables``). Everything lives in one table, ``ip kube-proxy``
(kubepy proxies IPv4 Services only, as in iptables mode)::

    nat-prerouting, nat-output ─► services
        services ─ ip daddr . meta l4proto . th dport vmap @service-ips
                              ─► service-<H>-ns/name/tcp/port    (cluster IP)
                              ─► external-<H>-…                  (external / load-balancer IP)
                 ─ ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports ─► external-<H>-…
        external-<H>-… ─► mark-for-masquerade, goto service-<H>-…   (Local policy: local-<H>-…)
        service-<H>-…  ─ ! from the cluster CIDR ─► mark-for-masquerade
                       ─ [ip saddr @affinity-<H>-…__ip/port goto endpoint-…]
                       ─ numgen random mod n vmap { i : goto endpoint-<H>-…__ip/port }
        endpoint-<H>-… ─ hairpin ─► mark-for-masquerade; [update @affinity-… { ip saddr }]; dnat to ip:port
    nat-postrouting ─► masquerading: marked 0x4000 → masquerade fully-random (mark cleared)
                    ─► kubepy-egress (optional): pod CIDR → outside → masquerade
    filter-input   ─ ct state new ─► nodeport-endpoints-check (vmap @no-endpoint-nodeports)
                                 ─► service-endpoints-check  (vmap @no-endpoint-services)
    filter-forward ─ ct state new ─► service-endpoints-check, cluster-ips-check
    filter-output  ─ ct state new ─► service-endpoints-check, firewall-check
    filter-output-post-dnat ─ ct state new ─► cluster-ips-check (a ClusterIP on a port no Service has: reject)
    filter-prerouting ─ ct state new ─► firewall-check
        firewall-check ─ ip daddr . meta l4proto . th dport vmap @firewall-ips
                       ─► firewall-<H>-…  (load-balancer IP:port of a Service with source ranges)
        firewall-<H>-… ─ ip saddr != { ranges[, LB IPs when a range holds the node IP] } drop
                         (no IPv4 range: drop); the rest goes on to the nat chains

The firewall runs before DNAT, where the packet still carries the
load-balancer address (iptables mode drops the refused ones later, in the
filter table, because its KUBE-FW chain left them not DNATed: the same
verdicts). It exists only for a Service port with endpoints and
``source_ranges`` not None, and restricts the load-balancer IPs only: not
the cluster IP, external IPs or NodePort (as upstream).

The no-endpoint maps point at ``reject-chain`` (a Service without ready
endpoints is refused at once) or ``drop`` (Local policy, nothing on this node).

What must stay true: a sync is ONE script, so ``nft -f`` applies all of it
or none. A full sync flushes the maps and sets and adds every element, adds
and flushes every chain it wants and deletes the per-service chains and
affinity sets the kernel holds but no longer wants (read with ``list
chains`` / ``list sets``). A partial sync rewrites only the changed service
ports' chains and their map elements, diffed against the models the last
good sync applied (an element is deleted before it is re-added with
another verdict: ``add element`` of an existing key with a new value
fails). Affinity sets are never flushed, so ClientIP affinity survives
resyncs. Only the table ``kube-proxy`` is ever touched.

Errors::

    NFTablesError   ``nft`` failed; carries the command line and its output
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import ipaddress
import logging
import re
import shlex
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from kubepy.proxy.rules import MASQ_MARK, Endpoint, NodeConfig, Ruleset, ServicePort

__all__ = [
    "FAMILY",
    "TABLE",
    "FakeNFTables",
    "NFTables",
    "NFTablesError",
    "NftState",
    "RealNFTables",
    "chain_base",
    "endpoint_chain_base",
    "parse_nft_state",
    "render_nft_full",
    "render_nft_partial",
]

log = logging.getLogger(__name__)

FAMILY = "ip"
TABLE = "kube-proxy"
T = f"{FAMILY} {TABLE}"

# -- names (as upstream's nftables proxier) ------------------------------------
SERVICES = "services"
MARK_MASQ = "mark-for-masquerade"
MASQUERADING = "masquerading"
SERVICE_ENDPOINTS_CHECK = "service-endpoints-check"
NODEPORT_ENDPOINTS_CHECK = "nodeport-endpoints-check"
CLUSTER_IPS_CHECK = "cluster-ips-check"
FIREWALL_CHECK = "firewall-check"
REJECT_CHAIN = "reject-chain"
EGRESS = "kubepy-egress"
SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
FIREWALL_IPS = "firewall-ips"
CLUSTER_IPS = "cluster-ips"
NODEPORT_IPS = "nodeport-ips"
SERVICE_PREFIX = "service-"
EXTERNAL_PREFIX = "external-"
LOCAL_PREFIX = "local-"
ENDPOINT_PREFIX = "endpoint-"
FIREWALL_PREFIX = "firewall-"
AFFINITY_PREFIX = "affinity-"
# A per-service chain or affinity set: a prefix, then the 8-character hash (so never "service-endpoints-check").
PER_SERVICE_RE = re.compile(r"^(service|external|local|firewall|endpoint)-[A-Z2-7]{8}-")
AFFINITY_RE = re.compile(r"^affinity-[A-Z2-7]{8}-")

IP_KEY = "ipv4_addr . inet_proto . inet_service : verdict"
PORT_KEY = "inet_proto . inet_service : verdict"

# Filter chains run before DNAT (priority dstnat - 10) so they see the Service address.
BASE_CHAINS: tuple[tuple[str, str, str, int], ...] = (
    ("filter-prerouting", "filter", "prerouting", -110),
    ("filter-input", "filter", "input", -110),
    ("filter-forward", "filter", "forward", -110),
    ("filter-output", "filter", "output", -110),
    ("filter-output-post-dnat", "filter", "output", -90),
    ("nat-prerouting", "nat", "prerouting", -100),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
)
# (from base chain, match, to chain), in upstream's order.
JUMPS: tuple[tuple[str, str, str], ...] = (
    ("filter-input", "ct state new ", NODEPORT_ENDPOINTS_CHECK),
    ("filter-input", "ct state new ", SERVICE_ENDPOINTS_CHECK),
    ("filter-forward", "ct state new ", SERVICE_ENDPOINTS_CHECK),
    ("filter-output", "ct state new ", SERVICE_ENDPOINTS_CHECK),
    ("filter-prerouting", "ct state new ", FIREWALL_CHECK),
    ("filter-output", "ct state new ", FIREWALL_CHECK),
    ("nat-output", "", SERVICES),
    ("nat-prerouting", "", SERVICES),
    ("nat-postrouting", "", MASQUERADING),
    ("filter-forward", "ct state new ", CLUSTER_IPS_CHECK),
    ("filter-output-post-dnat", "ct state new ", CLUSTER_IPS_CHECK),
)
STATIC_CHAINS = (SERVICES, MARK_MASQ, MASQUERADING, SERVICE_ENDPOINTS_CHECK, NODEPORT_ENDPOINTS_CHECK,
                 CLUSTER_IPS_CHECK, FIREWALL_CHECK, REJECT_CHAIN)
MAPS = ((SERVICE_IPS, IP_KEY, "ClusterIP, ExternalIP and LoadBalancer IP traffic"),
        (SERVICE_NODEPORTS, PORT_KEY, "NodePort traffic"),
        (NO_ENDPOINT_SERVICES, IP_KEY, "vmap to drop or reject packets to services with no endpoints"),
        (NO_ENDPOINT_NODEPORTS, PORT_KEY, "vmap to drop or reject packets to service nodeports with no endpoints"),
        (FIREWALL_IPS, IP_KEY, "destinations that are subject to LoadBalancerSourceRanges"))
SETS = ((CLUSTER_IPS, "Active ClusterIPs"), (NODEPORT_IPS, "IPs that accept NodePort traffic"))


@functools.lru_cache(maxsize=1 << 17)
def _hashed(name: str) -> str:
    """Upstream's hashAndTruncate: 8 base32 characters of sha256(name), then the name itself
    (readable, the hash keeps it unique); never longer than 240 characters."""
    name = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()[:8] + "-" + name
    return name if len(name) <= 240 else name[:237] + "..."


def chain_base(sp: ServicePort) -> str:
    """``HASH-namespace/name/protocol/portname``: the suffix of a service port's chains."""
    return _hashed(f"{sp.namespace}/{sp.name}/{sp.protocol}/{sp.port_name}")


def endpoint_chain_base(sp: ServicePort, ep: Endpoint) -> str:
    """``HASH-namespace/name/protocol/portname__ip/port``: the suffix of one endpoint's chain and set."""
    return _hashed(f"{sp.namespace}/{sp.name}/{sp.protocol}/{sp.port_name}__{ep.ip}/{ep.port}")


def _svc(sp: ServicePort) -> str:
    return SERVICE_PREFIX + chain_base(sp)


def _ext(sp: ServicePort) -> str:
    return EXTERNAL_PREFIX + chain_base(sp)


def _local(sp: ServicePort) -> str:
    return LOCAL_PREFIX + chain_base(sp)


def _fw(sp: ServicePort) -> str:
    return FIREWALL_PREFIX + chain_base(sp)


def _ep(sp: ServicePort, ep: Endpoint) -> str:
    return ENDPOINT_PREFIX + endpoint_chain_base(sp, ep)


def _aff(sp: ServicePort, ep: Endpoint) -> str:
    return AFFINITY_PREFIX + endpoint_chain_base(sp, ep)


@functools.lru_cache(maxsize=1 << 15)
def service_chains(sp: ServicePort) -> tuple[str, ...]:
    """The chains this service port owns (none without endpoints: only map elements point at it then).

    Cached per model: every sync asks again for every unchanged service port."""
    if not sp.endpoints:
        return ()
    names = [_svc(sp)]
    if sp.has_external:
        names.append(_ext(sp))
    if sp.uses_fw_chain:
        names.append(_fw(sp))
    if sp.uses_local_chain:
        names.append(_local(sp))
    names.extend(_ep(sp, ep) for ep in sp.endpoints)
    return tuple(names)


def affinity_sets(sp: ServicePort) -> dict[str, int]:
    """Affinity set name → timeout (seconds), one per endpoint of a ClientIP-affinity service port."""
    if sp.affinity_timeout is None:
        return {}
    return {_aff(sp, ep): sp.affinity_timeout for ep in sp.endpoints}


Element = tuple[str, str]  # (map or set, key) → value ("" for a set)


def elements(sp: ServicePort) -> dict[Element, str]:
    """The map elements that lead to this service port (the dispatch, or the no-endpoint verdicts)."""
    out: dict[Element, str] = {}
    proto = sp.protocol
    external = [*sp.external_ips, *sp.load_balancer_ips]
    if sp.endpoints:
        if sp.internal_endpoints:
            target = _local(sp) if sp.internal_local else _svc(sp)
            out[(SERVICE_IPS, f"{sp.cluster_ip} . {proto} . {sp.port}")] = f"goto {target}"
        else:  # internalTrafficPolicy Local on a node without endpoints of it
            out[(NO_ENDPOINT_SERVICES, f"{sp.cluster_ip} . {proto} . {sp.port}")] = "drop"
        for ip in external:
            out[(SERVICE_IPS, f"{ip} . {proto} . {sp.port}")] = f"goto {_ext(sp)}"
        if sp.uses_fw_chain:
            for ip in sp.load_balancer_ips:
                out[(FIREWALL_IPS, f"{ip} . {proto} . {sp.port}")] = f"goto {_fw(sp)}"
        if sp.node_port:
            out[(SERVICE_NODEPORTS, f"{proto} . {sp.node_port}")] = f"goto {_ext(sp)}"
        if sp.external_local and not sp.local_endpoints:
            # Nowhere local to send it: dropped (the load balancer's health check steers clients elsewhere).
            for ip in external:
                out[(NO_ENDPOINT_SERVICES, f"{ip} . {proto} . {sp.port}")] = "drop"
            if sp.node_port:
                out[(NO_ENDPOINT_NODEPORTS, f"{proto} . {sp.node_port}")] = "drop"
        return out
    out[(NO_ENDPOINT_SERVICES, f"{sp.cluster_ip} . {proto} . {sp.port}")] = f"goto {REJECT_CHAIN}"
    for ip in external:
        out[(NO_ENDPOINT_SERVICES, f"{ip} . {proto} . {sp.port}")] = f"goto {REJECT_CHAIN}"
    if sp.node_port:
        out[(NO_ENDPOINT_NODEPORTS, f"{proto} . {sp.node_port}")] = f"goto {REJECT_CHAIN}"
    return out


# -- kernel state ---------------------------------------------------------------
@dataclass(frozen=True)
class NftState:
    """What ``nft list chains`` / ``nft -t list sets`` showed of our table."""

    exists: bool = False
    chains: frozenset[str] = frozenset()
    sets: frozenset[str] = frozenset()


_TABLE_RE = re.compile(r"^table (\S+) (\S+) \{")
_OBJ_RE = re.compile(r"^\s+(chain|set|map) (\S+) \{")


def parse_nft_state(chains_text: str, sets_text: str = "") -> NftState:
    """Our table's chains and sets in ``nft list chains`` and ``nft -t list sets`` output."""
    exists = False
    chains: set[str] = set()
    sets: set[str] = set()
    for text in (chains_text, sets_text):
        ours = False
        for line in text.splitlines():
            if m := _TABLE_RE.match(line):
                ours = (m.group(1), m.group(2)) == (FAMILY, TABLE)
                exists = exists or ours
            elif ours and (m := _OBJ_RE.match(line)):
                (chains if m.group(1) == "chain" else sets).add(m.group(2))
    return NftState(exists=exists, chains=frozenset(chains), sets=frozenset(sets))


# -- rendering ------------------------------------------------------------------
class _Script:
    """Sections of one transaction, in the order the kernel needs them (see the module docstring)."""

    def __init__(self) -> None:
        self.head: list[str] = []  # table, base and static chains, maps, sets
        self.chains: list[str] = []  # add + flush of per-service chains
        self.delete_elements: list[str] = []
        self.flush_stale: list[str] = []
        self.sets: list[str] = []
        self.rules: list[str] = []
        self.add_elements: list[str] = []
        self.tail: list[str] = []  # stale chains and sets deleted
        self.count = 0

    def chain(self, name: str) -> None:
        self.chains.append(f"add chain {T} {name}")
        self.chains.append(f"flush chain {T} {name}")

    def rule(self, chain: str, text: str) -> None:
        self.rules.append(f"add rule {T} {chain} {text}")
        self.count += 1

    def text(self) -> str:
        return "\n".join(self.head + self.chains + _batched(self.delete_elements) + self.flush_stale + self.sets
                          + self.rules + _batched(self.add_elements) + self.tail) + "\n"


def _batched(lines: list[str]) -> list[str]:
    """``add element T m { a }`` lines → one line per map or set (``{ a, b, … }``): nft evaluates far fewer
    commands, and one line still reads as one container's content."""
    groups: dict[str, list[str]] = {}
    for line in lines:
        head, _, rest = line.partition(" { ")
        groups.setdefault(head, []).append(rest[:-2])
    return [f"{head} {{ {', '.join(items)} }}" for head, items in groups.items()]


def render_nft_full(ports: Mapping[str, ServicePort], config: NodeConfig, *, kernel: NftState = NftState(),
                    recreate: bool = False, first: bool = False) -> Ruleset:
    """Every chain, map element and set; stale per-service chains and affinity sets in ``kernel`` deleted.

    ``recreate``: delete the whole table first (in the same transaction), the
    way out of a kernel state a previous failure left unknown. ``first``: this
    process's first sync, which makes the base chains again (an earlier
    version may have hooked them at another priority, which can't be altered)."""
    s = _Script()
    _head(s, config, recreate=recreate, recreate_base=first and kernel.exists and not recreate)
    for name, _type, _comment in MAPS:
        s.head.append(f"flush map {T} {name}")
    for name, _comment in SETS:
        s.head.append(f"flush set {T} {name}")
    _static_elements(s, config)
    wanted: set[str] = set()
    wanted_sets: dict[str, int] = {}
    added: set[Element] = set()
    cluster_ips: set[str] = set()
    for _key, sp in sorted(ports.items()):
        wanted.update(service_chains(sp))
        wanted_sets.update(affinity_sets(sp))
        _service(s, sp, config)
        cluster_ips.add(sp.cluster_ip)
        for (container, key), value in elements(sp).items():
            if (container, key) not in added:  # the first claim of an address:port wins, as upstream
                added.add((container, key))
                s.add_elements.append(f"add element {T} {container} {{ {key} : {value} }}")
    for ip in sorted(cluster_ips):
        s.add_elements.append(f"add element {T} {CLUSTER_IPS} {{ {ip} }}")
    for name, timeout in sorted(wanted_sets.items()):
        s.sets.append(_affinity_set(name, timeout))
    stale = [] if recreate else sorted(c for c in kernel.chains - wanted if PER_SERVICE_RE.match(c))
    stale_sets = [] if recreate else sorted(x for x in kernel.sets - wanted_sets.keys()
                                            if AFFINITY_RE.match(x))
    _delete(s, stale, stale_sets)
    return Ruleset(text=s.text(), nat_chains=frozenset(wanted), rendered=len(ports), rules=s.count,
                   deleted=tuple(stale))


def render_nft_partial(ports: Mapping[str, ServicePort], config: NodeConfig, changed: Collection[str], *,
                       previous: Mapping[str, ServicePort], previous_chains: Collection[str] | None = None) -> Ruleset:
    """The chains, elements and sets of ``changed`` service ports (keys of ``ports`` or ``previous``),
    diffed against ``previous``: what the last good sync applied (``previous_chains``: its chains, if known)."""
    s = _Script()
    _head(s, config, recreate=False, recreate_base=False)
    old_elements: dict[Element, str] = {}
    new_elements: dict[Element, str] = {}
    old_chains: set[str] = set()
    new_chains: set[str] = set()
    old_sets: dict[str, int] = {}
    new_sets: dict[str, int] = {}
    rendered = 0
    for key in sorted(changed):
        if (was := previous.get(key)) is not None:
            old_elements.update(elements(was))
            old_chains.update(service_chains(was))
            old_sets.update(affinity_sets(was))
        if (now := ports.get(key)) is not None:
            new_elements.update(elements(now))
            new_chains.update(service_chains(now))
            new_sets.update(affinity_sets(now))
            _service(s, now, config)
            rendered += 1
    for (container, key), value in sorted(old_elements.items()):
        if new_elements.get((container, key)) != value:
            s.delete_elements.append(f"delete element {T} {container} {{ {key} }}")
    for (container, key), value in sorted(new_elements.items()):
        if old_elements.get((container, key)) != value:
            s.add_elements.append(f"add element {T} {container} {{ {key} : {value} }}")
    # cluster-ips holds an address while any service port has it.
    old_ips = {previous[k].cluster_ip for k in changed if k in previous}
    new_ips = {ports[k].cluster_ip for k in changed if k in ports}
    if old_ips - new_ips or new_ips - old_ips:
        all_old = {sp.cluster_ip for sp in previous.values()}
        all_new = {sp.cluster_ip for sp in ports.values()}
        for ip in sorted(old_ips - all_new):
            s.delete_elements.append(f"delete element {T} {CLUSTER_IPS} {{ {ip} }}")
        for ip in sorted(new_ips - all_old):
            s.add_elements.append(f"add element {T} {CLUSTER_IPS} {{ {ip} }}")
    for name, timeout in sorted(new_sets.items()):
        if old_sets.get(name) != timeout:
            s.sets.append(_affinity_set(name, timeout))
    _delete(s, sorted(old_chains - new_chains), sorted(old_sets.keys() - new_sets.keys()))
    if previous_chains is None:
        previous_chains = {c for sp in previous.values() for c in service_chains(sp)}
    return Ruleset(text=s.text(), nat_chains=frozenset((set(previous_chains) - old_chains) | new_chains),
                   rendered=rendered, rules=s.count,
                   deleted=tuple(sorted(old_chains - new_chains)))


def _affinity_set(name: str, timeout: int) -> str:
    # "add set" of an existing set keeps its members and takes the new timeout.
    return f"add set {T} {name} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ; }}"


def _delete(s: _Script, chains: Iterable[str], sets: Iterable[str]) -> None:
    for name in chains:
        s.flush_stale.append(f"flush chain {T} {name}")  # its jumps to other stale chains and sets go first
        s.tail.append(f"delete chain {T} {name}")
    for name in sets:
        s.tail.append(f"delete set {T} {name}")


def _head(s: _Script, config: NodeConfig, *, recreate: bool, recreate_base: bool) -> None:
    """The table, its base chains and top-level chains with their fixed rules, maps and sets."""
    h = s.head
    h.append(f'add table {T} {{ comment "rules for kube-proxy" ; }}')
    if recreate:
        h.append(f"delete table {T}")
        h.append(f'add table {T} {{ comment "rules for kube-proxy" ; }}')
    elif recreate_base:
        for name, *_ in BASE_CHAINS:
            h.append(f"add chain {T} {name}")
            h.append(f"delete chain {T} {name}")
    for name, type_, hook, priority in BASE_CHAINS:
        h.append(f"add chain {T} {name} {{ type {type_} hook {hook} priority {priority} ; }}")
        h.append(f"flush chain {T} {name}")
    static = [*STATIC_CHAINS, *([EGRESS] if config.pod_egress_cidr else [])]
    for name in static:
        h.append(f"add chain {T} {name}")
        h.append(f"flush chain {T} {name}")
    for name, type_, comment in MAPS:
        h.append(f'add map {T} {name} {{ type {type_} ; comment "{comment}" ; }}')
    for name, comment in SETS:
        h.append(f'add set {T} {name} {{ type ipv4_addr ; comment "{comment}" ; }}')

    def rule(chain: str, text: str) -> None:
        h.append(f"add rule {T} {chain} {text}")
        s.count += 1

    for src, match, dst in JUMPS:
        rule(src, f"{match}jump {dst}")
    if config.pod_egress_cidr:
        rule("nat-postrouting", f"jump {EGRESS}")
        cidr = config.pod_egress_cidr
        rule(EGRESS, f'ip saddr {cidr} ip daddr {cidr} return comment "pod to pod: keep source"')
        rule(EGRESS, f'ip saddr {cidr} ip daddr != 224.0.0.0/4 masquerade fully-random '
                     f'comment "pod to outside the cluster"')
    rule(MARK_MASQ, f"mark set mark or {MASQ_MARK}")
    rule(MASQUERADING, f"mark and {MASQ_MARK} == 0 return")
    # Cleared so a packet re-entering netfilter (e.g. encapsulated) is not masqueraded twice.
    rule(MASQUERADING, f"mark set mark xor {MASQ_MARK}")
    rule(MASQUERADING, "masquerade fully-random")
    rule(CLUSTER_IPS_CHECK, f'ip daddr @{CLUSTER_IPS} reject comment "Reject traffic to invalid ports of ClusterIPs"')
    rule(REJECT_CHAIN, "reject")
    rule(SERVICE_ENDPOINTS_CHECK, f"ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}")
    rule(FIREWALL_CHECK, f"ip daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}")
    rule(SERVICES, f"ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}")
    if config.node_ips:
        rule(NODEPORT_ENDPOINTS_CHECK, f"ip daddr @{NODEPORT_IPS} meta l4proto . th dport "
                                       f"vmap @{NO_ENDPOINT_NODEPORTS}")
        rule(SERVICES, f"ip daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}")
    else:  # no node address known: every local address but loopback, as iptables' --dst-type LOCAL
        rule(NODEPORT_ENDPOINTS_CHECK, f"fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport "
                                       f"vmap @{NO_ENDPOINT_NODEPORTS}")
        rule(SERVICES, f"fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport "
                       f"vmap @{SERVICE_NODEPORTS}")


def _static_elements(s: _Script, config: NodeConfig) -> None:
    for ip in config.node_ips:
        s.add_elements.append(f"add element {T} {NODEPORT_IPS} {{ {ip} }}")


def _service(s: _Script, sp: ServicePort, config: NodeConfig) -> None:
    """Every chain of one service port, added, flushed and written whole."""
    if not sp.endpoints:
        return
    for name in service_chains(sp):
        s.chain(name)
    proto = sp.protocol
    svc = _svc(sp)
    bases = {ep: endpoint_chain_base(sp, ep) for ep in sp.endpoints}
    vip = f"ip daddr {sp.cluster_ip} {proto} dport {sp.port}"
    if config.masquerade_all:
        s.rule(svc, f"{vip} jump {MARK_MASQ}")
    else:
        # Off-cluster clients (the node itself, other hosts) must see replies come back through this node.
        s.rule(svc, f"{vip} ip saddr != {config.cluster_cidr} jump {MARK_MASQ}")
    if sp.has_external:
        ext = _ext(sp)
        if sp.external_local:
            # Pods and the node itself still reach every endpoint; outside clients only this node's,
            # with their source address kept.
            s.rule(ext, f'ip saddr {config.cluster_cidr} goto {svc} comment "short-circuit pod traffic"')
            s.rule(ext, f'fib saddr type local jump {MARK_MASQ} comment "masquerade local traffic"')
            s.rule(ext, f'fib saddr type local goto {svc} comment "short-circuit local traffic"')
            s.rule(ext, f"goto {_local(sp)}")
        else:
            s.rule(ext, f'jump {MARK_MASQ} comment "masquerade traffic for {sp.key} external destinations"')
            s.rule(ext, f"goto {svc}")
    if sp.uses_fw_chain:
        _firewall(s, sp, config)
    if sp.uses_local_chain:
        _balance(s, sp, _local(sp), sp.local_endpoints, bases)
    _balance(s, sp, svc, sp.endpoints, bases)
    for ep in sp.endpoints:
        chain = ENDPOINT_PREFIX + bases[ep]
        # A pod reaching itself through its Service: without SNAT its reply would skip the bridge.
        s.rule(chain, f"ip saddr {ep.ip} jump {MARK_MASQ}")
        if sp.affinity_timeout is not None:
            s.rule(chain, f"update @{AFFINITY_PREFIX}{bases[ep]} {{ ip saddr }}")
        s.rule(chain, f"meta l4proto {proto} dnat to {ep.ip}:{ep.port}")


def _firewall(s: _Script, sp: ServicePort, config: NodeConfig) -> None:
    """firewall-<H>-…: drops (before DNAT) new connections to a load-balancer IP:port from any source
    outside the Service's ranges; the others return to the base chain and go on to be DNATed."""
    assert sp.source_ranges is not None
    sources = list(sp.source_ranges)
    node = ipaddress.ip_address(config.node_ip) if config.node_ip else None
    if node is not None and any(node in ipaddress.ip_network(cidr) for cidr in sp.source_ranges):
        # The node reaching an LB IP it holds itself talks from that address, not its node IP.
        sources.extend(sp.load_balancer_ips)
    if sources:
        # nft merges overlapping elements of an anonymous interval set (a /32 inside a /24).
        s.rule(_fw(sp), f"ip saddr != {{ {', '.join(sources)} }} drop")
    else:  # ranges given, none of them IPv4: no IPv4 client is admitted (as iptables mode)
        s.rule(_fw(sp), 'drop comment "no IPv4 source range: nobody admitted"')


def _balance(s: _Script, sp: ServicePort, chain: str, endpoints: tuple[Endpoint, ...],
             bases: Mapping[Endpoint, str]) -> None:
    """``chain`` spreads new connections evenly over ``endpoints`` (a known client first to its endpoint)."""
    if not endpoints:
        return
    if sp.affinity_timeout is not None:
        for ep in endpoints:
            s.rule(chain, f"ip saddr @{AFFINITY_PREFIX}{bases[ep]} goto {ENDPOINT_PREFIX}{bases[ep]}")
    # Upstream writes one "numgen random mod n vmap { 0 : goto …, 1 : goto … }"; nft 1.0.6 names
    # every such anonymous map by scanning the table's sets, which made a full sync of 10,000
    # Services quadratic (≈ 25 s). The iptables-style cascade picks with the same odds:
    # rule i takes 1/(n-i) of what reaches it, the last takes the rest.
    n = len(endpoints)
    for i, ep in enumerate(endpoints):
        pick = f"numgen random mod {n - i} 0 " if i < n - 1 else ""
        s.rule(chain, f"{pick}goto {ENDPOINT_PREFIX}{bases[ep]}")


# -- adapters -------------------------------------------------------------------
class NFTablesError(Exception):
    def __init__(self, argv: list[str], returncode: int, output: str) -> None:
        self.argv, self.returncode, self.output = argv, returncode, output
        super().__init__(f"{shlex.join(argv)} exited {returncode}: {output.strip()[:2000]}")


class NFTables(Protocol):
    """What the proxier needs of ``nft``: ``RealNFTables``, or ``FakeNFTables`` in tests."""

    async def apply(self, script: str) -> None: ...

    async def state(self) -> NftState: ...

    async def cleanup(self) -> bool: ...


class RealNFTables:
    """``nft`` of the current netns, or of ``netns`` (``ip netns exec``)."""

    def __init__(self, *, netns: str | None = None) -> None:
        self.netns = netns

    def _argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, "nft", *argv] if self.netns else ["nft", *argv]

    async def _run(self, argv: list[str], stdin: str | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        if proc.returncode != 0:
            raise NFTablesError(argv, proc.returncode or -1, (err or out).decode(errors="replace"))
        return out.decode()

    async def apply(self, script: str) -> None:
        """One transaction: all of ``script`` or none of it."""
        await self._run(self._argv("-f", "-"), stdin=script)

    async def state(self) -> NftState:
        chains = await self._run(self._argv("list", "chains", FAMILY))
        sets = await self._run(self._argv("-t", "list", "sets", FAMILY))
        return parse_nft_state(chains, sets)

    async def list_table(self) -> str:
        return await self._run(self._argv("list", "table", FAMILY, TABLE))

    async def cleanup(self) -> bool:
        """Delete the table ``ip kube-proxy``; False if there was none."""
        if not (await self.state()).exists:
            return False
        await self._run(self._argv("delete", "table", FAMILY, TABLE))
        log.info("nftables cleanup netns=%s table=%s", self.netns or "-", T)
        return True


@dataclass
class FakeNFTables:
    """Records every script; ``fail_next`` makes that many applies fail.

    Models our table's chains and sets (not rules or elements) so ``state()``
    answers as ``nft list`` would for them."""

    scripts: list[str] = field(default_factory=list)
    fail_next: int = 0
    exists: bool = False
    chains: set[str] = field(default_factory=set)
    sets: set[str] = field(default_factory=set)

    async def apply(self, script: str) -> None:
        self.scripts.append(script)
        if self.fail_next:
            self.fail_next -= 1
            raise NFTablesError(["nft", "-f", "-"], 1, "fake failure")
        for line in script.splitlines():
            words = line.split()
            if words[:2] == ["add", "table"]:
                self.exists = True
            elif words[:2] == ["delete", "table"]:
                self.exists, self.chains, self.sets = False, set(), set()
            elif words[:2] == ["add", "chain"]:
                self.chains.add(words[4])
            elif words[:2] == ["delete", "chain"]:
                self.chains.discard(words[4])
            elif words[:2] in (["add", "set"], ["add", "map"]):
                self.sets.add(words[4])
            elif words[:2] == ["delete", "set"]:
                self.sets.discard(words[4])

    async def state(self) -> NftState:
        return NftState(exists=self.exists, chains=frozenset(self.chains), sets=frozenset(self.sets))

    async def cleanup(self) -> bool:
        had = self.exists
        self.exists, self.chains, self.sets = False, set(), set()
        return had

    @property
    def last(self) -> str:
        return self.scripts[-1]
