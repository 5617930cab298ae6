"""rules: NetworkPolicies + pods + namespaces → iptables text (pure), table-driven.

Each case compiles a node's payload and runs packets through it with a
small interpreter of the rule subset the compiler writes (-s/-d/-p/--dport,
marks, jumps, RETURN, REJECT), so a case states what a packet's fate is,
not which text made it.  A few cases look at the text itself: names,
comments, the jumps from built-in chains, stale chains, the pending rule.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from typing import Any

import pytest

from kubepy.netpol.agent import cleanup_payload
from kubepy.netpol.rules import Kernel, compile_node, ip_block_cidrs, node_state, parse_kernel

NODE, CIDR = "n1", "10.244.0.0/24"


def pod(ns: str, name: str, ip: str, *, node: str = NODE, ports: tuple[tuple[str, str, int], ...] = (),
        **labels: str) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "labels": labels or {"pod": name}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [
                {"name": n, "protocol": proto, "containerPort": p} for n, proto, p in ports]}]},
            "status": {"podIP": ip, "phase": "Running" if ip else "Pending"}}


def netpol(ns: str, name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("podSelector", {})
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


NAMESPACES = [{"metadata": {"name": n, "labels": {"ns": n}}} for n in ("x", "y", "z")]
PODS = [
    pod("x", "a", "10.244.0.2", ports=(("serve-80", "TCP", 80), ("dns", "UDP", 53))),
    pod("x", "b", "10.244.0.3"),
    pod("y", "a", "10.244.0.4"),
    pod("y", "b", "10.244.1.2", node="n2", ports=(("serve-80", "TCP", 8080),)),
    pod("z", "c", "10.244.1.3", node="n2"),
]
IP = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["status"]["podIP"] for p in PODS}


# -- a tiny iptables interpreter for the payload --------------------------------------------------
@dataclass
class Packet:
    src: str
    dst: str
    proto: str = "tcp"
    dport: int = 80
    mark: int = 0


def _parse(text: str) -> dict[str, list[list[str]]]:
    chains: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        if line.startswith(":"):
            chains[line[1:].split()[0]] = []
    for line in text.splitlines():
        if line.startswith("-A "):
            words = shlex.split(line)
            chains.setdefault(words[1], []).append(words[2:])
    return chains


def _matches(words: list[str], p: Packet) -> bool:
    i = 0
    while i < len(words):
        w = words[i]
        if w == "-s" and ipaddress.ip_address(p.src) not in ipaddress.ip_network(words[i + 1]):
            return False
        if w == "-d" and ipaddress.ip_address(p.dst) not in ipaddress.ip_network(words[i + 1]):
            return False
        if w == "-p" and words[i + 1] != p.proto:
            return False
        if w == "--dport":
            lo, _, hi = words[i + 1].partition(":")
            if not int(lo) <= p.dport <= int(hi or lo):
                return False
        if w == "--mark":
            value, mask = (int(x, 16) for x in words[i + 1].split("/"))
            if p.mark & mask != value:
                return False
        if w == "--ctstate":
            return False  # every packet here is NEW
        i += 1
    return True


def _run(chains: dict[str, list[list[str]]], chain: str, p: Packet) -> str | None:
    for words in chains[chain]:
        if not _matches(words, p):
            continue
        target = words[words.index("-j") + 1]
        if target == "RETURN":
            return None
        if target == "REJECT":
            return "REJECT"
        if target == "MARK":
            value, mask = (int(x, 16) for x in words[words.index("--set-xmark") + 1].split("/"))
            p.mark = (p.mark & ~mask) | value
            continue
        verdict = _run(chains, target, p)
        if verdict:
            return verdict
    return None


def fate(text: str, src: str, dst: str, proto: str = "tcp", dport: int = 80) -> str:
    """"allow" or "reject" for a new connection through this node's FORWARD chain."""
    verdict = _run(_parse(text), "KUBE-NWPLCY-FORWARD", Packet(IP.get(src, src), IP.get(dst, dst), proto, dport))
    return "reject" if verdict == "REJECT" else "allow"


def compiled(policies: list[dict[str, Any]], pods: list[dict[str, Any]] = PODS) -> str:
    return compile_node(node_state(policies, pods, NAMESPACES), node=NODE, pod_cidr=CIDR).text


CASES = [
    # (id, policies, [(src, dst, proto, port, expected)])
    ("no policies: everything passes", [],
     [("x/b", "x/a", "tcp", 80, "allow"), ("y/b", "x/a", "udp", 53, "allow")]),
    ("default deny ingress", [netpol("x", "deny")],
     [("x/b", "x/a", "tcp", 80, "reject"), ("y/a", "x/b", "udp", 53, "reject"), ("x/a", "y/a", "tcp", 80, "allow")]),
    ("default deny egress", [netpol("x", "deny", policyTypes=["Egress"])],
     [("x/a", "y/a", "tcp", 80, "reject"), ("x/a", "z/c", "udp", 81, "reject"), ("y/a", "x/a", "tcp", 80, "allow")]),
    ("allow all ingress", [netpol("x", "deny"), netpol("x", "all", ingress=[{}])],
     [("y/b", "x/a", "tcp", 80, "allow"), ("z/c", "x/b", "udp", 9, "allow")]),
    ("allow from a namespace", [netpol("x", "from-y", ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}])],
     [("y/a", "x/a", "tcp", 80, "allow"), ("y/b", "x/a", "udp", 80, "allow"), ("z/c", "x/a", "tcp", 80, "reject"),
      ("x/b", "x/a", "tcp", 80, "reject")]),
    ("allow from a pod of the policy's namespace", [netpol("x", "from-b", podSelector={"matchLabels": {"pod": "a"}},
                                                        ingress=[{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}])],
     [("x/b", "x/a", "tcp", 80, "allow"), ("y/b", "x/a", "tcp", 80, "reject"), ("y/a", "x/b", "tcp", 80, "allow")]),
    ("namespace AND pod selector", [netpol("x", "and", ingress=[{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}]}])],
     [("y/b", "x/a", "tcp", 80, "allow"), ("y/a", "x/a", "tcp", 80, "reject"), ("x/b", "x/a", "tcp", 80, "reject")]),
    ("ipBlock with except", [netpol("x", "cidr", ingress=[{"from": [
        {"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.1.3/32"]}}]}])],
     [("y/b", "x/a", "tcp", 80, "allow"), ("z/c", "x/a", "tcp", 80, "reject"), ("192.168.1.1", "x/a", "tcp", 80, "reject")]),
    ("numbered port and protocol", [netpol("x", "p", ingress=[{"ports": [{"port": 80, "protocol": "UDP"}]}])],
     [("y/a", "x/a", "udp", 80, "allow"), ("y/a", "x/a", "tcp", 80, "reject"), ("y/a", "x/a", "udp", 81, "reject")]),
    ("protocol without a port", [netpol("x", "p", ingress=[{"ports": [{"protocol": "SCTP"}]}])],
     [("y/a", "x/a", "sctp", 9, "allow"), ("y/a", "x/a", "tcp", 9, "reject")]),
    ("endPort range", [netpol("x", "range", ingress=[{"ports": [{"port": 81, "endPort": 90, "protocol": "TCP"}]}])],
     [("y/a", "x/a", "tcp", 81, "allow"), ("y/a", "x/a", "tcp", 90, "allow"), ("y/a", "x/a", "tcp", 80, "reject"),
      ("y/a", "x/a", "tcp", 91, "reject")]),
    ("named port, resolved per selected pod", [netpol("x", "named", ingress=[{"ports": [{"port": "serve-80", "protocol": "TCP"}]}])],
     [("y/a", "x/a", "tcp", 80, "allow"), ("y/a", "x/b", "tcp", 80, "reject"), ("y/a", "x/a", "udp", 80, "reject")]),
    ("named egress port, resolved per destination pod", [netpol("x", "named-eg", policyTypes=["Egress"], egress=[
        {"ports": [{"port": "serve-80", "protocol": "TCP"}]}])],
     [("x/a", "y/b", "tcp", 8080, "allow"), ("x/a", "y/b", "tcp", 80, "reject"), ("x/a", "z/c", "tcp", 8080, "reject")]),
    ("egress to DNS only", [netpol("x", "dns", policyTypes=["Egress"], egress=[
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}])],
     [("x/a", "172.30.0.11", "udp", 53, "allow"), ("x/a", "y/a", "tcp", 53, "allow"), ("x/a", "y/a", "tcp", 80, "reject")]),
    ("egress to one namespace, several peers and ports", [netpol("x", "to-z", policyTypes=["Egress"], egress=[
        {"to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}, {"namespaceSelector": {"matchLabels": {"ns": "y"}},
                                                                       "podSelector": {"matchLabels": {"pod": "a"}}}],
         "ports": [{"port": 80}, {"port": 81, "protocol": "UDP"}]}])],
     [("x/a", "z/c", "tcp", 80, "allow"), ("x/a", "y/a", "udp", 81, "allow"), ("x/a", "y/b", "tcp", 80, "reject"),
      ("x/a", "z/c", "udp", 80, "reject")]),
    ("policyTypes Egress only leaves ingress open", [netpol("x", "eg", policyTypes=["Egress"], ingress=[])],
     [("y/a", "x/a", "tcp", 80, "allow"), ("x/a", "y/a", "tcp", 80, "reject")]),
    ("egress rules imply Egress when policyTypes is empty", [netpol("x", "both", egress=[{"to": [
        {"namespaceSelector": {}}]}])],
     [("x/a", "z/c", "tcp", 80, "allow"), ("x/a", "8.8.8.8", "tcp", 80, "reject"), ("y/a", "x/a", "tcp", 80, "reject")]),
    ("two policies are a union", [netpol("x", "from-y", ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]),
                                  netpol("x", "from-z", ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}])],
     [("y/a", "x/a", "tcp", 80, "allow"), ("z/c", "x/a", "tcp", 80, "allow"), ("x/b", "x/a", "tcp", 80, "reject")]),
    ("egress and ingress both on one node", [netpol("x", "deny-eg", podSelector={"matchLabels": {"pod": "b"}},
                                                    policyTypes=["Egress"]),
                                             netpol("y", "allow-in", ingress=[{}])],
     [("x/b", "y/a", "tcp", 80, "reject"), ("x/a", "y/a", "tcp", 80, "allow")]),
    ("empty namespaceSelector selects every namespace", [netpol("x", "any-ns", ingress=[{"from": [{"namespaceSelector": {}}]}])],
     [("z/c", "x/a", "tcp", 80, "allow"), ("192.168.1.1", "x/a", "tcp", 80, "reject")]),
]


@pytest.mark.parametrize(("policies", "probes"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_packet_fates(policies: list[dict[str, Any]], probes: list[tuple[str, str, str, int, str]]) -> None:
    text = compiled(policies)
    got = [(src, dst, proto, port, fate(text, src, dst, proto, port)) for src, dst, proto, port, _ in probes]
    assert got == probes, text


def test_chains_are_named_after_policies_and_rules_carry_namespace_name() -> None:
    text = compiled([netpol("x", "web", ingress=[{"ports": [{"port": 80}]}])])
    assert '-A KUBE-NWPLCY-INGRESS -m comment --comment "x/a" -d 10.244.0.2/32 -j KUBE-POD-IN-' in text
    assert '--comment "x/a ingress: policy x/web" -j KUBE-NWPLCY-' in text
    assert '--comment "x/web ingress rule 0" -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x20000/0x20000' in text
    assert '--comment "x/a ingress: no policy allows" -p tcp -j REJECT --reject-with tcp-reset' in text
    assert '--comment "x/a ingress: no policy allows" -j REJECT --reject-with icmp-port-unreachable' in text
    # Replies to allowed connections pass before any policy is looked at.
    assert text.index("--ctstate RELATED,ESTABLISHED -j RETURN") < text.index("-j KUBE-NWPLCY-EGRESS")


def test_pods_of_other_nodes_are_peers_not_targets() -> None:
    text = compiled([netpol("y", "deny")])
    assert IP["y/b"] not in text  # y/b runs on n2: its node enforces its ingress
    assert fate(text, "x/a", "y/a") == "reject"


def test_a_starting_pod_with_policies_closes_unknown_addresses_of_the_node() -> None:
    starting = pod("x", "new", "")
    text = compiled([netpol("x", "deny")], [*PODS, starting])
    assert f"-s {CIDR} -p tcp -j REJECT --reject-with tcp-reset" in text and f"-d {CIDR} -j REJECT" in text
    assert fate(text, "10.244.0.9", "y/b") == "reject"  # its address, before the agent knows it
    assert fate(text, "y/a", "y/b") == "allow"  # known pods are not held up
    # A starting pod no policy selects closes nothing.
    assert "-s 10.244.0.0/24" not in compiled([netpol("x", "deny")], [*PODS, pod("z", "new", "")])


def test_jumps_go_first_and_stale_chains_are_deleted() -> None:
    state = node_state([netpol("x", "deny")], PODS, NAMESPACES)
    fresh = compile_node(state, node=NODE, pod_cidr=CIDR, kernel=Kernel())
    assert '-I FORWARD 1 -m comment --comment "kubepy network policies" -j KUBE-NWPLCY-FORWARD' in fresh.text
    assert '-I INPUT 1 -m comment --comment "kubepy network policies" -j KUBE-NWPLCY-INPUT' in fresh.text
    pushed_down = Kernel(chains=fresh.chains | {"KUBE-NWPLCY-OLDPOLICYAAAAAAA"},
                         jumps={"FORWARD": "elsewhere", "INPUT": "first"})
    again = compile_node(state, node=NODE, pod_cidr=CIDR, kernel=pushed_down)
    lines = again.text.splitlines()
    assert lines.index('-D FORWARD -m comment --comment "kubepy network policies" -j KUBE-NWPLCY-FORWARD') < \
        lines.index('-I FORWARD 1 -m comment --comment "kubepy network policies" -j KUBE-NWPLCY-FORWARD')
    assert "-I INPUT" not in again.text
    assert again.deleted == ("KUBE-NWPLCY-OLDPOLICYAAAAAAA",) and lines[-2] == "-X KUBE-NWPLCY-OLDPOLICYAAAAAAA"
    # A partial sync (no kernel look) still deletes what the last payload left and is no longer wanted.
    gone = compile_node(node_state([], PODS, NAMESPACES), node=NODE, pod_cidr=CIDR, previous=fresh.chains)
    assert set(gone.deleted) == {c for c in fresh.chains if c.startswith(("KUBE-POD-", "KUBE-NWPLCY-")) and
                                 c not in ("KUBE-NWPLCY-FORWARD", "KUBE-NWPLCY-INPUT", "KUBE-NWPLCY-EGRESS",
                                           "KUBE-NWPLCY-INGRESS")}


def test_kernel_reading_and_cleanup() -> None:
    save = "\n".join([
        "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":KUBE-FORWARD - [0:0]",
        ":KUBE-NWPLCY-FORWARD - [0:0]", ":KUBE-NWPLCY-INPUT - [0:0]", ":KUBE-POD-IN-AAAA - [0:0]",
        '-A INPUT -m comment --comment "kubepy network policies" -j KUBE-NWPLCY-INPUT',
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        '-A FORWARD -m comment --comment "kubepy network policies" -j KUBE-NWPLCY-FORWARD', "COMMIT", ""])
    kernel = parse_kernel(save)
    assert kernel.jumps == {"INPUT": "first", "FORWARD": "elsewhere"}
    assert kernel.chains == {"KUBE-NWPLCY-FORWARD", "KUBE-NWPLCY-INPUT", "KUBE-POD-IN-AAAA"}  # not kube-proxy's
    payload = cleanup_payload(save)
    assert "-X KUBE-POD-IN-AAAA" in payload and "KUBE-FORWARD " not in payload
    assert '-D FORWARD -m comment --comment "kubepy network policies" -j KUBE-NWPLCY-FORWARD' in payload
    assert cleanup_payload("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n") == ""


@pytest.mark.parametrize(("block", "cidrs"), [
    ({"cidr": "10.0.0.0/24"}, ["10.0.0.0/24"]),
    ({"cidr": "10.0.0.0/24", "except": ["10.0.0.0/25"]}, ["10.0.0.128/25"]),
    ({"cidr": "10.0.0.0/30", "except": ["10.0.0.1/32", "10.0.0.2/32"]}, ["10.0.0.0/32", "10.0.0.3/32"]),
    ({"cidr": "10.0.0.7/24"}, ["10.0.0.0/24"]),  # host bits are ignored, as upstream's ParseCIDRSloppy
    ({"cidr": "2001:db8::/64"}, []),  # kubepy's pods are IPv4
])
def test_ip_block_cidrs(block: dict[str, Any], cidrs: list[str]) -> None:
    assert ip_block_cidrs(block) == cidrs


def test_a_change_rewrites_only_the_chains_it_touches() -> None:
    policies = [netpol("x", "web", podSelector={"matchLabels": {"pod": "a"}}, ingress=[{"ports": [{"port": 80}]}]),
                netpol("y", "deny")]
    before = compile_node(node_state(policies, PODS, NAMESPACES), node=NODE, pod_cidr=CIDR, kernel=Kernel())
    changed = [netpol("x", "web", podSelector={"matchLabels": {"pod": "a"}}, ingress=[{"ports": [{"port": 81}]}]),
               netpol("y", "deny")]
    after = compile_node(node_state(changed, PODS, NAMESPACES), node=NODE, pod_cidr=CIDR, previous=before.bodies)
    declared = [line[1:].split()[0] for line in after.text.splitlines() if line.startswith(":")]
    assert len(declared) == 1 and declared[0].startswith("KUBE-NWPLCY-") and "--dport 81" in after.text
    assert "KUBE-NWPLCY-FORWARD" not in after.text and "y/a" not in after.text
    # The whole node, as the kernel now holds it, is what a full compile of the new state says.
    assert after.bodies == compile_node(node_state(changed, PODS, NAMESPACES), node=NODE, pod_cidr=CIDR).bodies
    # Nothing changed: nothing written.
    again = compile_node(node_state(changed, PODS, NAMESPACES), node=NODE, pod_cidr=CIDR, previous=after.bodies)
    assert again.text == "*filter\nCOMMIT\n" and again.written == 0
    # A policy gone: its chains deleted, the pod chains that led to it rewritten.
    gone = compile_node(node_state(changed[:1], PODS, NAMESPACES), node=NODE, pod_cidr=CIDR, previous=after.bodies)
    assert gone.deleted and all(f"-X {c}" in gone.text for c in gone.deleted)
    assert "-j KUBE-NWPLCY-INGRESS" not in gone.text  # dispatch rules unchanged: x/a still isolated
