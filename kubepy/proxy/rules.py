"""Services and EndpointSlices → iptables-restore text, in kube-proxy's layout (pure).

Nothing here runs a command: ``service_ports`` turns core/v1 Services and
discovery/v1 EndpointSlices (raw JSON) into ``ServicePort`` models, ``render_full`` and
``render_partial`` turn those into one ``iptables-restore --noflush``
payload. The iptables adapter applies it; the proxier decides which to call.

Layout (nat table; names and comments as kube-proxy writes them)::

    PREROUTING, OUTPUT ─► KUBE-SERVICES ─┬─ -d clusterIP --dport p ─► KUBE-SVC-<h>
                                          ├─ -d lbIP --dport p ─► KUBE-EXT-<h>, or with source ranges:
                                          │    KUBE-FW-<h> ─ -s range ─► KUBE-EXT-<h>; others fall through
                                          └─ (last) dst-type LOCAL ─► KUBE-NODEPORTS
    KUBE-NODEPORTS ─ --dport nodePort ─► KUBE-EXT-<h> ─► KUBE-MARK-MASQ, KUBE-SVC-<h>
    KUBE-SVC-<h>   ─ ! -s clusterCIDR ─► KUBE-MARK-MASQ
                   ─ [recent --rcheck]  statistic random 1/(n-i) ─► KUBE-SEP-<h>
    KUBE-SEP-<h>   ─ -s epIP ─► KUBE-MARK-MASQ (hairpin); [recent --set] DNAT ip:port
    POSTROUTING ─► KUBE-POSTROUTING: marked 0x4000 ─► MASQUERADE --random-fully
                ─► KUBEPY-EGRESS (optional): pod CIDR → outside ─► MASQUERADE

filter table: KUBE-SERVICES / KUBE-EXTERNAL-SERVICES REJECT the ports of
services without ready endpoints (so clients fail at once instead of
timing out), KUBE-FORWARD accepts marked and established forwarded traffic,
KUBE-PROXY-FIREWALL (from INPUT, FORWARD and OUTPUT, new connections only)
DROPs what is still addressed to a load-balancer IP:port with source ranges:
a packet a KUBE-FW chain let through was DNATed to a pod before the filter
table sees it, so only the refused ones still carry the LB address.

What must stay true with ``--noflush``: declaring ``:CHAIN - [0:0]``
flushes that chain and chains not named are left alone. So a partial
payload declares (and rewrites whole) every dispatch chain plus the chains
of the changed service ports only; the chains of unchanged services must
already be in the kernel exactly as a previous payload wrote them. Only
chains with ``OUR_PREFIXES`` are ever flushed or deleted.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubepy.meta.services import parse_cidr, source_ranges

__all__ = [
    "BUILTIN_JUMPS",
    "DEFAULT_AFFINITY_TIMEOUT",
    "EGRESS_CHAIN",
    "MASQ_MARK",
    "OUR_PREFIXES",
    "Endpoint",
    "KernelState",
    "NodeConfig",
    "Ruleset",
    "ServicePort",
    "allowed_sources",
    "has_our_prefix",
    "is_proxy_chain",
    "port_proto_hash",
    "probability",
    "render_full",
    "render_partial",
    "service_ports",
    "slices_by_service",
    "usable_endpoints",
]

# -- names --------------------------------------------------------------------
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
EGRESS_CHAIN = "KUBEPY-EGRESS"
SVC_PREFIX = "KUBE-SVC-"
EXT_PREFIX = "KUBE-EXT-"
SVL_PREFIX = "KUBE-SVL-"
SEP_PREFIX = "KUBE-SEP-"
FW_PREFIX = "KUBE-FW-"
SERVICE_CHAIN_PREFIXES = (SVC_PREFIX, EXT_PREFIX, SVL_PREFIX, FW_PREFIX, SEP_PREFIX)
OUR_PREFIXES = ("KUBE-", "KUBEPY-")
MASQ_MARK = "0x4000"
DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds, the API default for ClientIP affinity

PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}

# Dispatch chains: declared (so flushed) and rewritten whole on every sync.
NAT_DISPATCH = (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ)
FILTER_DISPATCH = (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_PROXY_FIREWALL)

# (table, built-in chain, rule spec before "-j", our target). Inserted at the
# head of the built-in chain when missing; never rewritten otherwise. The
# firewall comes first in each chain, as upstream's prepends leave it.
_FIREWALL_JUMP = '-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall"'
BUILTIN_JUMPS: tuple[tuple[str, str, str, str], ...] = (
    ("filter", "INPUT", _FIREWALL_JUMP, KUBE_PROXY_FIREWALL),
    ("filter", "FORWARD", _FIREWALL_JUMP, KUBE_PROXY_FIREWALL),
    ("filter", "OUTPUT", _FIREWALL_JUMP, KUBE_PROXY_FIREWALL),
    ("filter", "INPUT", '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals"',
     KUBE_EXTERNAL_SERVICES),
    ("filter", "FORWARD", '-m comment --comment "kubernetes forwarding rules"', KUBE_FORWARD),
    ("filter", "FORWARD", '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals"', KUBE_SERVICES),
    ("filter", "FORWARD", '-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals"',
     KUBE_EXTERNAL_SERVICES),
    ("filter", "OUTPUT", '-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals"', KUBE_SERVICES),
    ("nat", "PREROUTING", '-m comment --comment "kubernetes service portals"', KUBE_SERVICES),
    ("nat", "OUTPUT", '-m comment --comment "kubernetes service portals"', KUBE_SERVICES),
    ("nat", "POSTROUTING", '-m comment --comment "kubernetes postrouting rules"', KUBE_POSTROUTING),
)
EGRESS_JUMP = ("nat", "POSTROUTING", '-m comment --comment "kubepy pod egress"', EGRESS_CHAIN)


def has_our_prefix(chain: str) -> bool:
    return chain.startswith(OUR_PREFIXES)


def is_proxy_chain(chain: str) -> bool:
    """A chain the proxy's iptables mode writes (not the policy agent's KUBE-NWPLCY-/KUBE-POD-)."""
    return (chain in NAT_DISPATCH or chain in FILTER_DISPATCH or chain == EGRESS_CHAIN
            or chain.startswith((SVC_PREFIX, EXT_PREFIX, SVL_PREFIX, SEP_PREFIX)))


@functools.lru_cache(maxsize=1 << 17)
def port_proto_hash(text: str) -> str:
    """kube-proxy's chain suffix: sha256 → base32 → first 16 characters.

    Cached: every sync rebuilds the models, and the names of unchanged
    services must be known to list the chains the kernel keeps."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def probability(n: int) -> str:
    """1/n the way kube-proxy prints it ("%0.10f"); iptables-save reads it back as e.g. 0.33333333349."""
    return f"{1.0 / n:0.10f}"


# -- model --------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service, with its ready endpoints sorted: everything its chains depend on."""

    namespace: str
    name: str
    port_name: str
    protocol: str  # "tcp" | "udp" | "sctp"
    cluster_ip: str
    port: int
    node_port: int | None = None
    affinity_timeout: int | None = None  # seconds when sessionAffinity is ClientIP
    endpoints: tuple[Endpoint, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()  # status.loadBalancer.ingress[].ip
    external_ips: tuple[str, ...] = ()  # spec.externalIPs
    external_local: bool = False  # externalTrafficPolicy Local: external traffic to this node's endpoints only
    internal_local: bool = False  # internalTrafficPolicy Local: cluster-IP traffic to this node's endpoints only
    local_endpoints: tuple[Endpoint, ...] = ()  # the endpoints on this node (for either Local policy)
    health_check_node_port: int | None = None
    # loadBalancerSourceRanges (or its annotation), the IPv4 ones: who may reach the LB IPs.
    # None: no restriction. Empty: ranges were given but none is IPv4, so no IPv4 client may.
    source_ranges: tuple[str, ...] | None = None

    @property
    def key(self) -> str:
        """kube-proxy's ServicePortName: "ns/name:port", or "ns/name" for an unnamed port."""
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port_name}" if self.port_name else base

    @property
    def service_key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def svc_chain(self) -> str:
        return SVC_PREFIX + port_proto_hash(self.key + self.protocol)

    @property
    def ext_chain(self) -> str:
        return EXT_PREFIX + port_proto_hash(self.key + self.protocol)

    @property
    def svl_chain(self) -> str:
        return SVL_PREFIX + port_proto_hash(self.key + self.protocol)

    @property
    def fw_chain(self) -> str:
        return FW_PREFIX + port_proto_hash(self.key + self.protocol)

    @property
    def uses_fw_chain(self) -> bool:
        """Load-balancer traffic passes KUBE-FW-<h> (as upstream: only with endpoints to reach)."""
        return bool(self.endpoints and self.load_balancer_ips and self.source_ranges is not None)

    @property
    def has_external(self) -> bool:
        """Reachable from outside the cluster: a NodePort, a load-balancer or an external IP."""
        return bool(self.node_port or self.load_balancer_ips or self.external_ips)

    @property
    def uses_local_chain(self) -> bool:
        return self.internal_local or (self.external_local and self.has_external)

    @property
    def internal_endpoints(self) -> tuple[Endpoint, ...]:
        """Where cluster-IP traffic may go: every endpoint, or with ``internal_local`` this node's only."""
        return self.local_endpoints if self.internal_local else self.endpoints

    def sep_chain(self, ep: Endpoint) -> str:
        return SEP_PREFIX + port_proto_hash(self.key + self.protocol + str(ep))

    def chains(self) -> list[str]:
        """The nat chains this service port owns (empty without endpoints: it has only filter rules)."""
        if not self.endpoints:
            return []
        names = [self.svc_chain]
        if self.has_external:
            names.append(self.ext_chain)
        if self.uses_fw_chain:
            names.append(self.fw_chain)
        if self.uses_local_chain:
            names.append(self.svl_chain)
        names.extend(self.sep_chain(ep) for ep in self.endpoints)
        return names


@dataclass(frozen=True)
class NodeConfig:
    cluster_cidr: str
    node_ip: str | None = None  # this node's IPv4: source ranges holding it also admit the LB IPs as sources
    masquerade_all: bool = False
    pod_egress_cidr: str | None = None  # masquerade pod → outside-the-cluster traffic in KUBEPY-EGRESS
    node_ips: tuple[str, ...] = ()  # nftables mode: the addresses NodePorts answer on (none known: every local one)


@dataclass(frozen=True)
class KernelState:
    """What iptables-save showed: our chains per table, and our jumps from built-in chains."""

    chains: frozenset[tuple[str, str]] = frozenset()  # (table, chain)
    jumps: frozenset[tuple[str, str, str]] = frozenset()  # (table, built-in chain, target)


@dataclass(frozen=True)
class Ruleset:
    text: str
    nat_chains: frozenset[str]  # every per-service chain the kernel holds once this is applied
    rendered: int  # service ports whose chains this payload wrote
    rules: int = 0
    deleted: tuple[str, ...] = field(default=())


# -- Kubernetes JSON → model --------------------------------------------------
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def slices_by_service(slices: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """IPv4 EndpointSlices grouped by "namespace/service" (their ``kubernetes.io/service-name`` label)."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for s in slices:
        meta = s.get("metadata") or {}
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if service and s.get("addressType") == "IPv4":
            out.setdefault(f"{meta.get('namespace') or 'default'}/{service}", []).append(s)
    return out


def service_ports(services: Iterable[Mapping[str, Any]],
                  slices: Iterable[Mapping[str, Any]], *, node_name: str = "") -> dict[str, ServicePort]:
    """Every proxied service port by ``key|protocol``, its endpoints from the Service's EndpointSlices.

    Skipped, as kube-proxy does: ExternalName, headless (clusterIP None) and
    IPv6 cluster IPs. Slice ports are matched by name (the controllers name
    them after the service port, already resolving named target ports to
    numbers) and protocol; which endpoints are used is ``usable_endpoints``.
    ``node_name`` is this node: its endpoints are the ones external traffic of
    an ``externalTrafficPolicy: Local`` Service may reach.
    """
    by_service = slices_by_service(slices)
    out: dict[str, ServicePort] = {}
    for svc in services:
        spec = svc.get("spec") or {}
        cluster_ip = spec.get("clusterIP") or ""
        if spec.get("type") == "ExternalName" or cluster_ip in ("", "None"):
            continue
        try:
            if ipaddress.ip_address(cluster_ip).version != 4:
                continue
        except ValueError:
            continue
        meta = svc.get("metadata") or {}
        ns, name = meta.get("namespace") or "default", meta["name"]
        affinity = None
        if spec.get("sessionAffinity") == "ClientIP":
            cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
            affinity = int(cfg.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
        has_node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
        own_slices = by_service.get(f"{ns}/{name}") or []
        lb_ips = tuple(sorted({_ipv4(i.get("ip")) for i in ((svc.get("status") or {}).get("loadBalancer") or {})
                               .get("ingress") or [] if isinstance(i, dict)} - {""}
                              )) if spec.get("type") == "LoadBalancer" else ()
        external_ips = tuple(sorted({_ipv4(ip) for ip in spec.get("externalIPs") or []} - {""}))
        external_local = spec.get("externalTrafficPolicy") == "Local" and (has_node_ports or bool(lb_ips))
        internal_local = spec.get("internalTrafficPolicy") == "Local"
        hc_port = int(spec["healthCheckNodePort"]) if external_local and spec.get("healthCheckNodePort") else None
        ranges = allowed_sources(svc) if lb_ips else None
        for p in spec.get("ports") or []:
            proto = PROTOCOLS.get(p.get("protocol") or "TCP")
            if proto is None:
                continue
            port_name = p.get("name") or ""
            sp = ServicePort(
                namespace=ns, name=name, port_name=port_name, protocol=proto, cluster_ip=cluster_ip,
                port=int(p["port"]), node_port=int(p["nodePort"]) if has_node_ports and p.get("nodePort") else None,
                affinity_timeout=affinity, endpoints=usable_endpoints(own_slices, port_name, proto),
                load_balancer_ips=lb_ips, external_ips=external_ips, external_local=external_local,
                internal_local=internal_local,
                local_endpoints=usable_endpoints(own_slices, port_name, proto, node_name=node_name)
                if external_local or internal_local else (),
                health_check_node_port=hc_port, source_ranges=ranges)
            out[f"{sp.key}|{proto}"] = sp
    return out


def allowed_sources(service: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The IPv4 networks a LoadBalancer's source ranges admit, in order, as iptables prints them;
    None when nothing restricts its clients (``ServicePort.source_ranges``).

    Upstream's kube-proxy reads the field only; the annotation is what a cloud's load balancer
    honours when the field is empty, and here kube-proxy is that load balancer. A range that is
    no IPv4 CIDR (IPv6, or invalid in an object older than validation) admits nobody: a typo
    must not open the address to everyone."""
    ranges = source_ranges(service)
    if ranges is None:
        return None
    nets = (parse_cidr(text) for text in ranges)
    return tuple(dict.fromkeys(str(n) for n in nets if n is not None and n.version == 4))


def _ipv4(text: Any) -> str:
    try:
        return str(text) if ipaddress.ip_address(str(text)).version == 4 else ""
    except ValueError:
        return ""


def usable_endpoints(slices: Iterable[Mapping[str, Any]], port_name: str, proto: str, *,
                     node_name: str | None = None) -> tuple[Endpoint, ...]:
    """The endpoints traffic to one service port goes to, as kube-proxy's CategorizeEndpoints:
    the ready ones; if there are none, the ones still serving while they terminate (so a
    rolling update or a scale to zero drains gracefully instead of refusing connections).
    Conditions as discovery/v1 says: ready and serving nil mean true, terminating nil false.
    With ``node_name``: only the endpoints on that node (the fallback decided among them)."""
    ready: set[Endpoint] = set()
    draining: set[Endpoint] = set()
    for s in slices:
        port = next((p for p in s.get("ports") or []
                     if (p.get("name") or "") == port_name and PROTOCOLS.get(p.get("protocol") or "TCP") == proto
                     and p.get("port") is not None), None)
        if port is None:
            continue
        for ep in s.get("endpoints") or []:
            addresses = ep.get("addresses") or []
            if not addresses or (node_name is not None and ep.get("nodeName") != node_name):
                continue
            cond = ep.get("conditions") or {}
            endpoint = Endpoint(addresses[0], int(port["port"]))  # kube-proxy uses the first address only
            if cond.get("ready") is not False:
                ready.add(endpoint)
            elif cond.get("serving") is not False and cond.get("terminating") is True:
                draining.add(endpoint)
    return tuple(sorted(ready or draining, key=lambda e: (ipaddress.ip_address(e.ip), e.port)))


# -- rendering ----------------------------------------------------------------
def _comment(text: str) -> str:
    return f'-m comment --comment "{text}"' if any(c in text for c in ' "\'') else f"-m comment --comment {text}"


class _Tables:
    def __init__(self) -> None:
        self.chains: dict[str, list[str]] = {"filter": [], "nat": []}
        self.rules: dict[str, list[str]] = {"filter": [], "nat": []}
        self.body: list[str] = []  # per-service nat chains, after the dispatch rules: easier to read
        self.tail: dict[str, list[str]] = {"filter": [], "nat": []}  # -X after every rule

    def chain(self, table: str, name: str) -> None:
        self.chains[table].append(f":{name} - [0:0]")

    def add(self, table: str, chain: str, spec: str) -> None:
        self.rules[table].append(f"-A {chain} {spec}")

    def add_body(self, chain: str, spec: str) -> None:
        self.body.append(f"-A {chain} {spec}")

    def text(self) -> str:
        out: list[str] = []
        for table in ("filter", "nat"):
            out.append(f"*{table}")
            out.extend(self.chains[table])
            out.extend(self.rules[table])
            if table == "nat":
                out.extend(self.body)
            out.extend(self.tail[table])
            out.append("COMMIT")
        return "\n".join(out) + "\n"

    def count(self) -> int:
        return sum(len(r) for r in self.rules.values()) + len(self.body)


def render_full(ports: Mapping[str, ServicePort], config: NodeConfig, *,
                kernel: KernelState = KernelState()) -> Ruleset:
    """Every chain of every service port, stale chains seen in ``kernel`` deleted, missing jumps added."""
    existing_nat = {c for t, c in kernel.chains if t == "nat"}
    return _render(ports, config, changed=None, previous=existing_nat, kernel=kernel)


def render_partial(ports: Mapping[str, ServicePort], config: NodeConfig, changed_service_ports: Collection[str], *,
                   previous_chains: Collection[str]) -> Ruleset:
    """Dispatch chains plus the chains of ``changed_service_ports`` (keys of ``ports``, removed ones included).

    ``previous_chains`` are the per-service nat chains the last successful
    payload left in the kernel; those no longer wanted are deleted.
    """
    return _render(ports, config, changed=set(changed_service_ports), previous=set(previous_chains), kernel=None)


def _render(ports: Mapping[str, ServicePort], config: NodeConfig, *, changed: set[str] | None,
            previous: set[str], kernel: KernelState | None) -> Ruleset:
    t = _Tables()
    for name in FILTER_DISPATCH:
        t.chain("filter", name)
    for name in NAT_DISPATCH:
        t.chain("nat", name)
    if config.pod_egress_cidr:
        t.chain("nat", EGRESS_CHAIN)

    ordered = sorted(ports.items())
    wanted: set[str] = set()
    rendered = 0
    nodeport_rules: list[str] = []
    for pkey, sp in ordered:
        wanted.update(sp.chains())
        if changed is None or pkey in changed:
            rendered += 1
            for name in sp.chains():
                t.chain("nat", name)
            _service_chains(t, sp, config)
        _dispatch(t, sp, nodeport_rules)
    t.add("nat", KUBE_SERVICES, _comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
          + f" -m addrtype --dst-type LOCAL -j {KUBE_NODEPORTS}")
    for rule in nodeport_rules:
        t.rules["nat"].append(rule)
    _static(t, config)

    stale = sorted(c for c in previous - wanted if c.startswith(SERVICE_CHAIN_PREFIXES))
    for name in stale:
        t.chain("nat", name)
        t.tail["nat"].append(f"-X {name}")
    if kernel is not None:
        jumps = list(BUILTIN_JUMPS) + ([EGRESS_JUMP] if config.pod_egress_cidr else [])
        # Each missing jump goes to the head of its built-in chain. Listed in
        # reverse and each inserted at 1, they end up in BUILTIN_JUMPS order.
        for table, builtin, spec, target in jumps:
            if (table, builtin, target) not in kernel.jumps:
                t.rules[table].insert(0, f"-I {builtin} 1 {spec} -j {target}")
    return Ruleset(text=t.text(), nat_chains=frozenset(wanted), rendered=rendered, rules=t.count(),
                   deleted=tuple(stale))


def _dispatch(t: _Tables, sp: ServicePort, nodeport_rules: list[str]) -> None:
    """The rules in KUBE-SERVICES / KUBE-NODEPORTS / filter chains that lead to this service port."""
    proto = f"-m {sp.protocol} -p {sp.protocol}"
    external = [(ip, "external IP") for ip in sp.external_ips] + [(ip, "loadbalancer IP")
                                                                   for ip in sp.load_balancer_ips]
    if sp.uses_fw_chain:
        refused = _comment(f"{sp.key} traffic not accepted by {sp.fw_chain}")
        for ip in sp.load_balancer_ips:
            t.add("filter", KUBE_PROXY_FIREWALL, f"{refused} {proto} -d {ip} --dport {sp.port} -j DROP")
    if sp.endpoints:
        if sp.internal_endpoints:
            internal = sp.svl_chain if sp.internal_local else sp.svc_chain
            t.add("nat", KUBE_SERVICES, f"{_comment(sp.key + ' cluster IP')} {proto} -d {sp.cluster_ip} "
                                        f"--dport {sp.port} -j {internal}")
        else:  # internalTrafficPolicy Local on a node without endpoints of it
            t.add("filter", KUBE_SERVICES, f"{_comment(sp.key + ' has no local endpoints')} {proto} "
                                           f"-d {sp.cluster_ip} --dport {sp.port} -j DROP")
        for ip, what in external:
            target = sp.fw_chain if sp.uses_fw_chain and what == "loadbalancer IP" else sp.ext_chain
            t.add("nat", KUBE_SERVICES, f"{_comment(f'{sp.key} {what}')} {proto} -d {ip} --dport {sp.port} "
                                        f"-j {target}")
        if sp.node_port:
            nodeport_rules.append(f"-A {KUBE_NODEPORTS} {_comment(sp.key)} {proto} --dport {sp.node_port} "
                                  f"-j {sp.ext_chain}")
        if sp.external_local and not sp.local_endpoints:
            # Nowhere local to send it: dropped (the load balancer's health check steers clients elsewhere).
            no_local = _comment(sp.key + " has no local endpoints")
            for ip, _ in external:
                t.add("filter", KUBE_EXTERNAL_SERVICES, f"{no_local} {proto} -d {ip} --dport {sp.port} -j DROP")
            if sp.node_port:
                t.add("filter", KUBE_EXTERNAL_SERVICES, f"{no_local} -m addrtype --dst-type LOCAL {proto} "
                                                        f"--dport {sp.node_port} -j DROP")
        return
    no_eps = _comment(sp.key + " has no endpoints")
    t.add("filter", KUBE_SERVICES, f"{no_eps} {proto} -d {sp.cluster_ip} --dport {sp.port} "
                                   f"-j REJECT --reject-with icmp-port-unreachable")
    for ip, _ in external:
        t.add("filter", KUBE_EXTERNAL_SERVICES, f"{no_eps} {proto} -d {ip} --dport {sp.port} "
                                                f"-j REJECT --reject-with icmp-port-unreachable")
    if sp.node_port:
        t.add("filter", KUBE_EXTERNAL_SERVICES, f"{no_eps} -m addrtype --dst-type LOCAL {proto} "
                                                f"--dport {sp.node_port} -j REJECT --reject-with icmp-port-unreachable")


def _service_chains(t: _Tables, sp: ServicePort, config: NodeConfig) -> None:
    if not sp.endpoints:
        return
    proto = f"-m {sp.protocol} -p {sp.protocol}"
    svc = sp.svc_chain
    vip = f"{_comment(sp.key + ' cluster IP')} {proto} -d {sp.cluster_ip} --dport {sp.port}"
    if config.masquerade_all:
        t.add_body(svc, f"{vip} -j {KUBE_MARK_MASQ}")
    else:
        # Off-cluster clients (the node itself, other hosts) must see replies
        # come back through this node, so their source is rewritten.
        t.add_body(svc, f"{vip} ! -s {config.cluster_cidr} -j {KUBE_MARK_MASQ}")
    if sp.has_external:
        ext = sp.ext_chain
        if sp.external_local:
            # kube-proxy's Local layout: pods and the node itself still reach every endpoint;
            # outside clients only this node's, with their source address kept.
            t.add_body(ext, _comment(f"pod traffic for {sp.key} external destinations")
                       + f" -s {config.cluster_cidr} -j {svc}")
            t.add_body(ext, _comment(f"masquerade LOCAL traffic for {sp.key} external destinations")
                       + f" -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}")
            t.add_body(ext, _comment(f"route LOCAL traffic for {sp.key} external destinations")
                       + f" -m addrtype --src-type LOCAL -j {svc}")
            t.add_body(ext, f"-j {sp.svl_chain}")
        else:
            t.add_body(ext, _comment(f"masquerade traffic for {sp.key} external destinations")
                       + f" -j {KUBE_MARK_MASQ}")
            t.add_body(ext, f"-j {svc}")
    if sp.uses_fw_chain:
        _firewall_chain(t, sp, config)
    if sp.uses_local_chain:
        _balance(t, sp, sp.svl_chain, sp.local_endpoints)
    _balance(t, sp, svc, sp.endpoints)
    for ep in sp.endpoints:
        sep = sp.sep_chain(ep)
        # A pod reaching itself through its Service: without SNAT its reply
        # would skip the bridge and never be un-DNATed.
        t.add_body(sep, f"{_comment(sp.key)} -s {ep.ip}/32 -j {KUBE_MARK_MASQ}")
        recent = f" -m recent --name {sep} --set" if sp.affinity_timeout is not None else ""
        t.add_body(sep, f"{_comment(sp.key)}{recent} {proto} -j DNAT --to-destination {ep}")


def _firewall_chain(t: _Tables, sp: ServicePort, config: NodeConfig) -> None:
    """KUBE-FW-<h>: the allowed sources go on to KUBE-EXT-<h>; the rest fall off its end not DNATed,
    to be dropped by KUBE-PROXY-FIREWALL."""
    assert sp.source_ranges is not None
    lb = _comment(f"{sp.key} loadbalancer IP")
    allow_from_node = False
    for cidr in sp.source_ranges:
        t.add_body(sp.fw_chain, f"{lb} -s {cidr} -j {sp.ext_chain}")
        if config.node_ip and ipaddress.ip_address(config.node_ip) in ipaddress.ip_network(cidr):
            allow_from_node = True
    if allow_from_node:
        # The node reaching an LB IP it holds itself talks from that address, not its node IP.
        for ip in sp.load_balancer_ips:
            t.add_body(sp.fw_chain, f"{lb} -s {ip}/32 -j {sp.ext_chain}")
    t.add_body(sp.fw_chain, _comment(f"other traffic to {sp.key} will be dropped by {KUBE_PROXY_FIREWALL}"))


def _balance(t: _Tables, sp: ServicePort, chain: str, endpoints: tuple[Endpoint, ...]) -> None:
    """``chain`` spreads new connections evenly over ``endpoints`` (with ClientIP affinity first)."""
    n = len(endpoints)
    if sp.affinity_timeout is not None:
        for ep in endpoints:
            sep = sp.sep_chain(ep)
            t.add_body(chain, f"{_comment(f'{sp.key} -> {ep}')} -m recent --name {sep} --rcheck "
                              f"--seconds {sp.affinity_timeout} --reap -j {sep}")
    for i, ep in enumerate(endpoints):
        stat = f" -m statistic --mode random --probability {probability(n - i)}" if i < n - 1 else ""
        t.add_body(chain, f"{_comment(f'{sp.key} -> {ep}')}{stat} -j {sp.sep_chain(ep)}")


def _static(t: _Tables, config: NodeConfig) -> None:
    t.add("nat", KUBE_MARK_MASQ, f"-j MARK --or-mark {MASQ_MARK}")
    t.add("nat", KUBE_POSTROUTING, f"-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN")
    # Clear the mark so a packet re-entering netfilter (e.g. encapsulated) is not masqueraded twice.
    t.add("nat", KUBE_POSTROUTING, f"-j MARK --xor-mark {MASQ_MARK}")
    t.add("nat", KUBE_POSTROUTING, _comment("kubernetes service traffic requiring SNAT") + " -j MASQUERADE --random-fully")
    if config.pod_egress_cidr:
        cidr = config.pod_egress_cidr
        t.add("nat", EGRESS_CHAIN, f"{_comment('pod to pod: keep source')} -s {cidr} -d {cidr} -j RETURN")
        t.add("nat", EGRESS_CHAIN, f"{_comment('pod to outside the cluster')} -s {cidr} ! -d 224.0.0.0/4 "
                                   f"-j MASQUERADE --random-fully")
    t.add("filter", KUBE_FORWARD, "-m conntrack --ctstate INVALID -j DROP")
    t.add("filter", KUBE_FORWARD, _comment("kubernetes forwarding rules")
          + f" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT")
    t.add("filter", KUBE_FORWARD, _comment("kubernetes forwarding conntrack rule")
          + " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
