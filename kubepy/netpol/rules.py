"""NetworkPolicies + pods + namespaces → this node's iptables filter rules (pure).

Nothing here runs a command: ``compile_node`` turns raw API objects into one
``iptables-restore --noflush`` payload for the filter table; the agent
(``kubepy.netpol.agent``) applies it.  Only pods of *this* node are
targets; pods everywhere are peers.

Layout (filter table; every rule commented with the pod's or policy's
``namespace/name``)::

    FORWARD (first) ─► KUBE-NWPLCY-FORWARD ─ ESTABLISHED,RELATED ─► RETURN  (replies always pass)
                                           ─ clear marks 0x30000 ─► KUBE-NWPLCY-EGRESS ─► KUBE-NWPLCY-INGRESS
    INPUT (first)   ─► KUBE-NWPLCY-INPUT   ─ (same, egress only: pods to this node, e.g. DNS)
    KUBE-NWPLCY-EGRESS  ─ -s podIP ─► KUBE-POD-EG-<h>   (a local pod isolated for egress)
                        ─ -s podIP ─► RETURN            (a local pod that is not)
                        ─ -s podCIDR ─► REJECT          (only while a pod with policies starts: see below)
    KUBE-POD-EG-<h>     ─► KUBE-NWPLCY-<h(policy egress)> for each policy selecting the pod
                        ─ mark 0x10000 ─► RETURN, else REJECT "ns/pod egress: no policy allows"
    KUBE-NWPLCY-<h>     ─ one rule per peer × port, "ns/policy egress rule i" ─► MARK 0x10000
    (ingress: the same with -d, KUBE-POD-IN-<h>, mark 0x20000)

Policy chains are named ``KUBE-NWPLCY-`` + kube-proxy's hash of
``namespace/name/Ingress|Egress``; a rule with several peers and several
ports gets a ports chain of its own (hash of ``…/rule i``), so rules grow
as peers + ports, not peers × ports.

A new pod's traffic is never open while its policies are written: the
kubelet gives it an address from this node's pod CIDR, and until the
agent has written rules for that address it is "unknown".  While any pod
bound to this node that some policy selects has no address yet
(``pending``), unknown addresses of the pod CIDR are rejected (fail
closed, as Calico does for unknown workload interfaces); once every such
pod is known, the default is to pass, so pods no policy selects are never
held up by the agent.

Named ports resolve per pod: an ingress rule's against each selected
pod's container ports (``-d podIP``), an egress rule's against each peer
pod's.  Denied traffic is rejected (TCP reset, otherwise ICMP port
unreachable), so clients fail at once instead of timing out.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubepy.meta.selectors import LabelSelector, label_selector_from_dict

__all__ = [
    "ALLOW_EGRESS_MARK",
    "ALLOW_INGRESS_MARK",
    "BUILTIN_JUMPS",
    "CHAIN_PREFIXES",
    "NodeState",
    "PodInfo",
    "Ruleset",
    "Kernel",
    "compile_node",
    "is_ours",
    "parse_kernel",
    "node_state",
]

FORWARD_CHAIN = "KUBE-NWPLCY-FORWARD"
INPUT_CHAIN = "KUBE-NWPLCY-INPUT"
EGRESS_CHAIN = "KUBE-NWPLCY-EGRESS"
INGRESS_CHAIN = "KUBE-NWPLCY-INGRESS"
POLICY_PREFIX = "KUBE-NWPLCY-"
POD_EGRESS_PREFIX = "KUBE-POD-EG-"
POD_INGRESS_PREFIX = "KUBE-POD-IN-"
CHAIN_PREFIXES = (POLICY_PREFIX, POD_EGRESS_PREFIX, POD_INGRESS_PREFIX)
DISPATCH = (FORWARD_CHAIN, INPUT_CHAIN, EGRESS_CHAIN, INGRESS_CHAIN)
ALLOW_EGRESS_MARK = "0x10000"
ALLOW_INGRESS_MARK = "0x20000"
MARKS = "0x30000"
# TCP gets a reset, everything else ICMP port unreachable: the kernel rate-limits ICMP errors
# per peer (net.ipv4.icmp_ratelimit), and a TCP client whose reject was limited away waits
# for its SYN retransmit instead of failing at once.
REJECTS = ("-p tcp -j REJECT --reject-with tcp-reset", "-j REJECT --reject-with icmp-port-unreachable")
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
# (built-in chain, rule spec before "-j", our chain): each must be the first rule of its built-in chain.
BUILTIN_JUMPS = (
    ("FORWARD", '-m comment --comment "kubepy network policies"', FORWARD_CHAIN),
    ("INPUT", '-m comment --comment "kubepy network policies"', INPUT_CHAIN),
)


def is_ours(chain: str) -> bool:
    return chain.startswith(CHAIN_PREFIXES)


def _hash(text: str) -> str:
    """kube-proxy's chain suffix: sha256 → base32 → 16 characters."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def _comment(text: str) -> str:
    return f'-m comment --comment "{text}"'


def _d(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list:
    return v if isinstance(v, list) else []


# -- model --------------------------------------------------------------------
@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    ip: str  # "" while the kubelet has not reported one
    node: str
    labels: Mapping[str, str]
    ports: tuple[tuple[str, str, int], ...] = ()  # (name, protocol, containerPort) of named container ports

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def named_port(self, name: str, protocol: str) -> int | None:
        return next((p for n, proto, p in self.ports if n == name and proto == protocol), None)


@dataclass(frozen=True, eq=False)
class NodeState:
    """What the rules depend on, ready to compare: the agent skips a sync when it did not change."""

    pods: tuple[PodInfo, ...]
    namespaces: Mapping[str, Mapping[str, str]]  # name → labels
    policies: tuple[dict, ...]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeState) and (self.pods, dict(self.namespaces), self.policies) == \
            (other.pods, dict(other.namespaces), other.policies)

    __hash__ = None  # type: ignore[assignment]

    @functools.cached_property
    def by_namespace(self) -> dict[str, list[PodInfo]]:
        out: dict[str, list[PodInfo]] = {}
        for pod in self.pods:
            out.setdefault(pod.namespace, []).append(pod)
        return out


def _pod_info(pod: Mapping[str, Any]) -> PodInfo | None:
    meta, spec, status = _d(pod.get("metadata")), _d(pod.get("spec")), _d(pod.get("status"))
    if spec.get("hostNetwork") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    ports = tuple(sorted(
        (str(p["name"]), str(p.get("protocol") or "TCP"), int(p["containerPort"]))
        for c in _l(spec.get("containers")) for p in _l(_d(c).get("ports"))
        if isinstance(p, dict) and p.get("name") and isinstance(p.get("containerPort"), int)))
    return PodInfo(namespace=str(meta.get("namespace") or "default"), name=str(meta.get("name") or ""),
                   ip=str(status.get("podIP") or ""), node=str(spec.get("nodeName") or ""),
                   labels=dict(_d(meta.get("labels"))), ports=ports)


def node_state(policies: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]],
               namespaces: Iterable[Mapping[str, Any]]) -> NodeState:
    infos = sorted((i for i in map(_pod_info, pods) if i is not None), key=lambda i: (i.namespace, i.name))
    ns_labels: dict[str, Mapping[str, str]] = {}
    for ns in namespaces:
        meta = _d(ns.get("metadata"))
        name = str(meta.get("name") or "")
        # Every namespace carries its name as a label (upstream's NamespaceDefaultLabelName).
        ns_labels[name] = {**_d(meta.get("labels")), "kubernetes.io/metadata.name": name}
    pols = sorted((dict(p) for p in policies),
                  key=lambda p: (_d(p.get("metadata")).get("namespace", ""), _d(p.get("metadata")).get("name", "")))
    return NodeState(pods=tuple(infos), namespaces=ns_labels, policies=tuple(pols))


@dataclass(frozen=True)
class Ruleset:
    text: str
    bodies: Mapping[str, tuple[str, ...]]  # every chain of ours the payload leaves in the kernel, with its rules
    rules: int
    targets: int  # local pods isolated in at least one direction
    policies: int  # policies selecting at least one local pod
    pending: int  # local pods with policies and no address yet
    deleted: tuple[str, ...] = field(default=())
    written: int = 0  # chains (re)written by this payload

    @property
    def chains(self) -> frozenset[str]:
        return frozenset(self.bodies)


# -- selection ----------------------------------------------------------------
def policy_types(spec: Mapping[str, Any]) -> list[str]:
    types = [t for t in _l(spec.get("policyTypes")) if t in ("Ingress", "Egress")]
    if types:
        return types
    return ["Ingress", "Egress"] if _l(spec.get("egress")) else ["Ingress"]


@functools.lru_cache(maxsize=4096)
def _parsed(key: str) -> LabelSelector:
    try:
        return label_selector_from_dict(json.loads(key))
    except ValueError:
        return LabelSelector(nothing=True)  # refused by validation; an object from elsewhere selects nothing


_EVERYTHING = LabelSelector()


def _selector(selector: Any) -> LabelSelector:
    """A raw label selector parsed (None or {}: everything), cached by its JSON."""
    if not selector:
        return _EVERYTHING
    return _parsed(json.dumps(selector, sort_keys=True))


def selects(policy: Mapping[str, Any], pod: PodInfo) -> bool:
    meta, spec = _d(policy.get("metadata")), _d(policy.get("spec"))
    return meta.get("namespace") == pod.namespace and _selector(spec.get("podSelector")).matches(pod.labels)


def _peer_pods(peer: Mapping[str, Any], policy_ns: str, state: NodeState) -> list[PodInfo]:
    pod_sel, ns_sel = _selector(peer.get("podSelector")), peer.get("namespaceSelector")
    if ns_sel is None:
        namespaces = [policy_ns]
    else:
        parsed = _selector(ns_sel)
        namespaces = [ns for ns in state.by_namespace
                      if parsed.matches(state.namespaces.get(ns, {"kubernetes.io/metadata.name": ns}))]
    return [pod for ns in namespaces for pod in state.by_namespace.get(ns, ()) if pod.ip and pod_sel.matches(pod.labels)]


def ip_block_cidrs(block: Mapping[str, Any]) -> list[str]:
    """``cidr`` minus every ``except``, as a list of CIDRs (IPv4 only: kubepy's pods are IPv4)."""
    try:
        nets = [ipaddress.ip_network(str(block.get("cidr")), strict=False)]
    except ValueError:
        return []
    if nets[0].version != 4:
        return []
    for text in _l(block.get("except")):
        try:
            ex = ipaddress.ip_network(str(text), strict=False)
        except ValueError:
            continue
        kept = []
        for n in nets:
            if ex.version == n.version and ex.subnet_of(n):  # type: ignore[arg-type]
                kept.extend(n.address_exclude(ex))  # type: ignore[arg-type]
            elif ex.version == n.version and n.subnet_of(ex):  # type: ignore[arg-type]
                continue
            else:
                kept.append(n)
        nets = kept
    return [str(n) for n in sorted(nets)]


# -- rendering ----------------------------------------------------------------
class _Out:
    def __init__(self) -> None:
        self.bodies: dict[str, list[str]] = {}  # chain → its rules, in order; insertion order = declaration order

    def chain(self, name: str) -> None:
        self.bodies.setdefault(name, [])

    def add(self, chain: str, spec: str) -> None:
        self.bodies.setdefault(chain, []).append(f"-A {chain} {spec}")


def _port_matches(ports: list, *, named_on: list[PodInfo], ip_flag: str) -> list[str]:
    """Match fragments for a rule's ``ports`` ([""]: any port).  A named port becomes
    ``<ip_flag> podIP -p proto --dport n`` for each pod in ``named_on`` that has it."""
    if not ports:
        return [""]
    out: list[str] = []
    for port in ports:
        port = _d(port)
        proto_name = str(port.get("protocol") or "TCP")
        proto = PROTOCOLS.get(proto_name)
        if proto is None:
            continue
        number, end = port.get("port"), port.get("endPort")
        if number is None:
            out.append(f"-p {proto}")
        elif isinstance(number, int) and not isinstance(number, bool):
            dport = f"{number}:{end}" if isinstance(end, int) and end > number else str(number)
            out.append(f"-p {proto} -m {proto} --dport {dport}")
        elif isinstance(number, str):
            for pod in named_on:
                resolved = pod.named_port(number, proto_name)
                if resolved is not None and pod.ip:
                    out.append(f"{ip_flag} {pod.ip}/32 -p {proto} -m {proto} --dport {resolved}")
    return out


def _peer_matches(peers: list, direction: str, policy_ns: str, state: NodeState, *,
                  covered_too: bool) -> tuple[list[str], list[PodInfo]]:
    """Match fragments for a rule's peers ([""]: anyone) and, with ``covered_too``, the pods
    they cover (named egress ports resolve on those)."""
    flag = "-s" if direction == "Ingress" else "-d"
    if not peers:
        return [""], [p for p in state.pods if p.ip] if covered_too else []
    frags: list[str] = []
    covered: dict[str, PodInfo] = {}
    for peer in peers:
        peer = _d(peer)
        block = peer.get("ipBlock")
        if block is not None:
            cidrs = ip_block_cidrs(_d(block))
            frags.extend(f"{flag} {c}" for c in cidrs)
            if covered_too:
                nets = [ipaddress.ip_network(c) for c in cidrs]
                for p in state.pods:
                    if p.ip and any(ipaddress.ip_address(p.ip) in n for n in nets):
                        covered[p.key] = p
            continue
        for p in _peer_pods(peer, policy_ns, state):
            frags.append(f"{flag} {p.ip}/32")
            covered[p.key] = p
    return list(dict.fromkeys(frags)), list(covered.values())


def _policy_chain(out: _Out, policy: Mapping[str, Any], direction: str, targets: list[PodInfo],
                  state: NodeState) -> str:
    meta, spec = _d(policy.get("metadata")), _d(policy.get("spec"))
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    chain = POLICY_PREFIX + _hash(f"{ns}/{name}/{direction}")
    out.chain(chain)
    mark = ALLOW_INGRESS_MARK if direction == "Ingress" else ALLOW_EGRESS_MARK
    allow = f"-j MARK --set-xmark {mark}/{mark}"
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for i, rule in enumerate(_l(spec.get(rules_key))):
        rule = _d(rule)
        what = _comment(f"{ns}/{name} {direction.lower()} rule {i}")
        ports = _l(rule.get("ports"))
        named = direction == "Egress" and any(isinstance(_d(p).get("port"), str) for p in ports)
        peer_frags, covered = _peer_matches(_l(rule.get(peers_key)), direction, ns, state, covered_too=named)
        if direction == "Ingress":
            port_frags = _port_matches(ports, named_on=targets, ip_flag="-d")
        else:
            port_frags = _port_matches(ports, named_on=covered, ip_flag="-d")
        if not peer_frags or not port_frags:
            continue  # selects no peer or no port (yet): allows nothing
        if len(peer_frags) > 1 and len(port_frags) > 1:
            ports_chain = POLICY_PREFIX + _hash(f"{ns}/{name}/{direction}/rule {i}")
            out.chain(ports_chain)
            for pf in port_frags:
                out.add(ports_chain, " ".join(x for x in (what, pf, allow) if x))
            for peer in peer_frags:
                out.add(chain, " ".join(x for x in (what, peer, f"-j {ports_chain}") if x))
            continue
        for peer in peer_frags:
            for pf in port_frags:
                out.add(chain, " ".join(x for x in (what, peer, pf, allow) if x))
    return chain


@dataclass(frozen=True)
class Kernel:
    """What ``iptables-save -t filter`` showed of ours: our chains, and where each jump from a
    built-in chain is (``"first"``, ``"elsewhere"``; absent: missing)."""

    chains: frozenset[str] = frozenset()
    jumps: Mapping[str, str] = field(default_factory=dict)


def parse_kernel(save_text: str) -> Kernel:
    chains: set[str] = set()
    seen: dict[str, int] = {}
    jumps: dict[str, str] = {}
    wanted = {f"-A {b} {spec} -j {t}": b for b, spec, t in BUILTIN_JUMPS}
    for line in save_text.splitlines():
        if line.startswith(":"):
            name = line[1:].split()[0]
            if is_ours(name):
                chains.add(name)
        elif line.startswith("-A "):
            builtin = line.split()[1]
            index = seen[builtin] = seen.get(builtin, 0) + 1
            if line in wanted:
                jumps.setdefault(builtin, "first" if index == 1 else "elsewhere")
    return Kernel(chains=frozenset(chains), jumps=jumps)


def compile_node(state: NodeState, *, node: str, pod_cidr: str | None,
                 previous: Mapping[str, tuple[str, ...]] | Iterable[str] = (), kernel: Kernel | None = None) -> Ruleset:
    """The filter payload for ``node``.

    With ``kernel`` (a full sync's look at the kernel) every chain is
    written.  Without, ``previous`` is what the last payload left (chain →
    rules): only chains whose rules differ are written, so a change of one
    policy rewrites its chains and the few that lead to them, not the
    whole node (``--noflush`` leaves undeclared chains alone).  Chains of
    ours that ``previous`` or ``kernel`` name and that are no longer
    wanted are flushed and deleted.  With ``kernel``, a jump from
    FORWARD/INPUT that is missing or not first is (re)inserted first: rules
    others insert at the head later (kube-proxy's ACCEPTs) must not pass
    traffic before policies saw it."""
    out = _Out()
    for name in DISPATCH:
        out.chain(name)
    for chain in (FORWARD_CHAIN, INPUT_CHAIN):
        out.add(chain, _comment("replies to allowed connections") + " -m conntrack --ctstate RELATED,ESTABLISHED"
                " -j RETURN")
        out.add(chain, f"-j MARK --set-xmark 0x0/{MARKS}")
        out.add(chain, f"-j {EGRESS_CHAIN}")
    out.add(FORWARD_CHAIN, f"-j {INGRESS_CHAIN}")

    local = [p for p in state.pods if p.node == node]
    by_pod: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    local_by_ns: dict[str, list[PodInfo]] = {}
    for pod in local:
        local_by_ns.setdefault(pod.namespace, []).append(pod)
    for policy in state.policies:
        types = policy_types(_d(policy.get("spec")))
        pod_sel = _selector(_d(policy.get("spec")).get("podSelector"))
        for pod in local_by_ns.get(str(_d(policy.get("metadata")).get("namespace") or ""), ()):
            if pod_sel.matches(pod.labels):
                for t in types:
                    by_pod.setdefault(pod.key, {}).setdefault(t, []).append(policy)
    pending = sum(1 for p in local if not p.ip and p.key in by_pod)

    policy_chains: dict[tuple[str, str], str] = {}
    used_policies: set[str] = set()
    targets = 0
    for pod in local:
        if not pod.ip:
            continue
        directions = by_pod.get(pod.key, {})
        if directions:
            targets += 1
        for direction, dispatch, prefix, flag, mark in (
                ("Egress", EGRESS_CHAIN, POD_EGRESS_PREFIX, "-s", ALLOW_EGRESS_MARK),
                ("Ingress", INGRESS_CHAIN, POD_INGRESS_PREFIX, "-d", ALLOW_INGRESS_MARK)):
            policies = directions.get(direction)
            if not policies:
                out.add(dispatch, f"{_comment(f'{pod.key} not isolated for {direction.lower()}')} "
                                  f"{flag} {pod.ip}/32 -j RETURN")
                continue
            pod_chain = prefix + _hash(f"{pod.key}/{direction}")
            out.chain(pod_chain)
            out.add(dispatch, f"{_comment(pod.key)} {flag} {pod.ip}/32 -j {pod_chain}")
            for policy in policies:
                pmeta = _d(policy.get("metadata"))
                pkey = f"{pmeta.get('namespace')}/{pmeta.get('name')}"
                used_policies.add(pkey)
                ckey = (pkey, direction)
                if ckey not in policy_chains:
                    sel = _selector(_d(policy.get("spec")).get("podSelector"))
                    selected = [p for p in local_by_ns.get(pod.namespace, ()) if p.ip and sel.matches(p.labels)]
                    policy_chains[ckey] = _policy_chain(out, policy, direction, selected, state)
                out.add(pod_chain, f"{_comment(f'{pod.key} {direction.lower()}: policy {pkey}')} "
                                   f"-j {policy_chains[ckey]}")
            out.add(pod_chain, f"-m mark --mark {mark}/{mark} -j RETURN")
            for reject in REJECTS:
                out.add(pod_chain, f"{_comment(f'{pod.key} {direction.lower()}: no policy allows')} {reject}")
    if pending and pod_cidr:
        why = _comment(f"{pending} pod(s) with policies starting: unknown pod addresses wait for their rules")
        for reject in REJECTS:
            out.add(EGRESS_CHAIN, f"{why} -s {pod_cidr} {reject}")
            out.add(INGRESS_CHAIN, f"{why} -d {pod_cidr} {reject}")

    bodies = {name: tuple(rules) for name, rules in out.bodies.items()}
    before: Mapping[str, tuple[str, ...]] = previous if isinstance(previous, Mapping) else {}
    if kernel is None:
        write = [c for c, rules in bodies.items() if before.get(c) != rules]
    else:
        write = list(bodies)
    known = set(previous) | (set(kernel.chains) if kernel is not None else set())
    stale = sorted(c for c in known - set(bodies) if is_ours(c))
    lines = ["*filter"]
    lines += [f":{c} - [0:0]" for c in [*write, *stale]]
    if kernel is not None:
        for builtin, spec, target in BUILTIN_JUMPS:
            where = kernel.jumps.get(builtin)
            if where == "first":
                continue
            if where == "elsewhere":
                lines.append(f"-D {builtin} {spec} -j {target}")
            lines.append(f"-I {builtin} 1 {spec} -j {target}")
    for c in write:
        lines += bodies[c]
    lines += [f"-X {c}" for c in stale]
    lines.append("COMMIT")
    return Ruleset(text="\n".join(lines) + "\n", bodies=bodies, rules=sum(len(r) for r in bodies.values()),
                   targets=targets, policies=len(used_policies), pending=pending, deleted=tuple(stale),
                   written=len(write))
