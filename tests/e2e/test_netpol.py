"""NetworkPolicy truth tables on a lab cluster (`kubepy up --nodes 3`), in the manner of
Kubernetes' netpol e2e suite and the cyclonus tool.

Three namespaces x, y, z (labels ns=x|y|z) × three pods a, b, c (labels pod=a|b|c; a on
node 1, b on node 2, c on node 3, so pairs are on one node and across nodes). Every pod runs
``kubepy.local/netserve:1``: ports 80 and 81 on TCP and UDP (SCTP too when the kernel has
it; this one's answer is printed), named serve-80-tcp, serve-80-udp, serve-81-tcp,
serve-81-udp. For each case, a set of policies is applied and every ordered pair is probed
on both ports and protocols, all at once, until the observed matrix equals the expected one
(or a deadline passes: then both matrices are printed). The expected matrix comes from
``Model`` below, a small independent model of NetworkPolicy semantics, never from kubepy's
compiler.

The probes are pod traffic: each source pod has one prober process running inside its
network namespace (``nsenter --net=/var/run/netns/kp-…``, the pod's own eth0, address and
veth), kept for the whole module and asked over a pipe, so a round of 324 probes takes a
fraction of a second (denied probes are rejected, not dropped, so nothing waits for a
timeout). Traffic stays between addresses inside the namespaces the cluster made.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.test_lab import Lab, wait_for

pytestmark = pytest.mark.slow

NODES = 3
NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
PORTS = (80, 81)
IMAGE = "kubepy.local/netserve:1"
DNS_IP = "10.96.0.10"
CONVERGE_WITHIN = 3.0  # seconds a case may take to be observed exactly (applying is measured and reported)


def sctp_supported() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, getattr(socket, "IPPROTO_SCTP", 132)).close()
        return True
    except OSError:
        return False


PROTOCOLS = ("TCP", "UDP", *(("SCTP",) if sctp_supported() else ()))


# -- the independent model -----------------------------------------------------------------------
@dataclass(frozen=True)
class P:
    ns: str
    name: str
    ip: str
    labels: dict[str, str] = field(hash=False, compare=False, default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.ns}/{self.name}"

    def port_named(self, name: str, proto: str) -> int | None:
        for port in PORTS:
            if name == f"serve-{port}-{proto.lower()}":
                return port
        return None


def _selects(sel: dict | None, labels: dict[str, str]) -> bool:
    if sel is None:
        return True
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        have = labels.get(e["key"])
        op, values = e["operator"], e.get("values") or []
        if (op == "In" and have not in values) or (op == "NotIn" and have in values) or \
                (op == "Exists" and have is None) or (op == "DoesNotExist" and have is not None):
            return False
    return True


class Model:
    """What NetworkPolicy allows, straight from the API reference."""

    def __init__(self, policies: list[dict]) -> None:
        self.policies = policies

    @staticmethod
    def _types(spec: dict) -> list[str]:
        return spec.get("policyTypes") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])

    def _applying(self, pod: P, kind: str) -> list[dict]:
        return [p for p in self.policies if p["metadata"]["namespace"] == pod.ns and
                kind in self._types(p["spec"]) and _selects(p["spec"].get("podSelector") or {}, pod.labels)]

    @staticmethod
    def _peer(peer: dict, policy_ns: str, other: P) -> bool:
        if "ipBlock" in peer:
            ip = ipaddress.ip_address(other.ip)
            block = peer["ipBlock"]
            return ip in ipaddress.ip_network(block["cidr"]) and \
                not any(ip in ipaddress.ip_network(e) for e in block.get("except") or [])
        if "namespaceSelector" in peer:
            if not _selects(peer["namespaceSelector"], {"ns": other.ns, "kubernetes.io/metadata.name": other.ns}):
                return False
        elif other.ns != policy_ns:
            return False
        return _selects(peer.get("podSelector"), other.labels)

    @staticmethod
    def _port(ports: list[dict] | None, dst: P, proto: str, port: int) -> bool:
        if not ports:
            return True
        for p in ports:
            if p.get("protocol", "TCP") != proto:
                continue
            want = p.get("port")
            if want is None:
                return True
            if isinstance(want, str):
                if dst.port_named(want, proto) == port:
                    return True
            elif want <= port <= p.get("endPort", want):
                return True
        return False

    def _allows(self, kind: str, target: P, other: P, dst: P, proto: str, port: int) -> bool:
        policies = self._applying(target, kind)
        if not policies:
            return True
        rules_key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
        for pol in policies:
            for rule in pol["spec"].get(rules_key) or []:
                peers = rule.get(peers_key) or []
                if (not peers or any(self._peer(x, pol["metadata"]["namespace"], other) for x in peers)) and \
                        self._port(rule.get("ports"), dst, proto, port):
                    return True
        return False

    def allowed(self, src: P, dst: P, proto: str, port: int) -> bool:
        if src == dst:
            return True  # a pod reaching itself never leaves its network namespace
        return self._allows("Egress", src, dst, dst, proto, port) and \
            self._allows("Ingress", dst, src, dst, proto, port)


# -- probing from inside the pods -------------------------------------------------------------------
PROBER = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
SCTP = getattr(socket, "IPPROTO_SCTP", 132)

def probe(job):
    ip, proto, port = job
    try:
        if proto == "UDP":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(0.5); s.connect((ip, port)); s.send(b"?")
            ok = bool(s.recv(512))
        elif proto == "DNS":  # one A query for kubernetes.default.svc.cluster.local
            q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"".join(
                bytes([len(p)]) + p.encode() for p in "kubernetes.default.svc.cluster.local".split(".")) + b"\x00\x00\x01\x00\x01"
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(1.0); s.connect((ip, port)); s.send(q)
            ok = s.recv(512)[:2] == b"\x12\x34"
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, SCTP if proto == "SCTP" else 0)
            s.settimeout(1.0); s.connect((ip, port))
            ok = bool(s.recv(512))
        s.close()
        return ok
    except OSError:
        return False

pool = ThreadPoolExecutor(64)
for line in sys.stdin:
    jobs = json.loads(line)
    print(json.dumps(list(pool.map(probe, [tuple(j) for j in jobs]))), flush=True)
"""


class Prober:
    """One long-lived prober in a pod's network namespace."""

    def __init__(self, netns: str) -> None:
        self.proc = subprocess.Popen(["nsenter", f"--net=/var/run/netns/{netns}", sys.executable, "-c", PROBER],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def send(self, jobs: list[tuple[str, str, int]]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(jobs) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> list[bool]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "prober died"
        return json.loads(line)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@dataclass
class Cluster:
    lab: Lab
    pods: dict[str, P]
    probers: dict[str, Prober]

    def observe(self, extra: list[tuple[str, str, int]] = ()) -> tuple[dict, dict]:
        """Every (src, dst, proto, port) → reached?, probed from all pods at once; plus ``extra`` per src."""
        jobs = [(d.ip, proto, port) for d in self.pods.values() for proto in PROTOCOLS for port in PORTS]
        keys = [(d.key, proto, port) for d in self.pods.values() for proto in PROTOCOLS for port in PORTS]
        for prober in self.probers.values():
            prober.send(jobs + list(extra))
        matrix, extras = {}, {}
        for src, prober in self.probers.items():
            got = prober.receive()
            for k, ok in zip(keys, got):
                matrix[(src, *k)] = ok
            extras[src] = got[len(keys):]
        return matrix, extras

    def expected(self, policies: list[dict]) -> dict:
        model = Model(policies)
        return {(s.key, d.key, proto, port): model.allowed(s, d, proto, port)
                for s in self.pods.values() for d in self.pods.values() for proto in PROTOCOLS for port in PORTS}


def render(matrix: dict, other: dict | None = None) -> str:
    """One table per protocol/port: rows are sources, columns destinations; '.' reached, 'X' not,
    and with ``other`` a '!' marks where the two differ."""
    keys = [f"{ns}/{p}" for ns in NAMESPACES for p in PODS]
    out = []
    for proto in PROTOCOLS:
        for port in PORTS:
            out.append(f"{proto}/{port}   " + " ".join(k.replace("/", "") for k in keys))
            for s in keys:
                cells = []
                for d in keys:
                    v = matrix[(s, d, proto, port)]
                    mark = "." if v else "X"
                    if other is not None and other[(s, d, proto, port)] != v:
                        mark = "!"
                    cells.append(f" {mark} ")
                out.append(f"  {s:6}" + " ".join(cells))
    return "\n".join(out)


def pod_manifest(ns: str, name: str, node: int, lab: Lab) -> dict:
    ports = [{"name": f"serve-{port}-{proto.lower()}", "containerPort": port, "protocol": proto}
             for port in PORTS for proto in PROTOCOLS]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"pod": name}},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": lab.node_netns(node)},
                     "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "serve", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                                     "ports": ports}]}}


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the netserve image (apt-get install gcc libc6-dev); .ci/install has it")
    from kubepy.images import netserve_image
    from kubepy.kubelet.network import pod_netns_name

    lab = Lab()
    probers: dict[str, Prober] = {}
    try:
        up = lab.kubepy("up", "--nodes", str(NODES))
        assert "ready in" in up.stdout, up.stdout
        archive = lab.root / "netserve.tar"
        netserve_image(IMAGE, archive)
        lab.kubepy("image", "load", str(archive), "--name", lab.name, "--state-dir", str(lab.root))
        objs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"ns": ns}}}
                for ns in NAMESPACES]
        objs += [pod_manifest(ns, name, i + 1, lab) for ns in NAMESPACES for i, name in enumerate(PODS)]
        lab.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}))

        def running() -> list[dict] | None:
            items = [p for ns in NAMESPACES for p in lab.json("get", "pods", "-n", ns)["items"]]
            ok = [p for p in items if p["status"].get("podIP") and any(
                s.get("state", {}).get("running") for s in p["status"].get("containerStatuses", []))]
            return ok if len(ok) == len(NAMESPACES) * len(PODS) else None

        items = wait_for(running, 90, "9 running pods")
        pods = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": P(
            p["metadata"]["namespace"], p["metadata"]["name"], p["status"]["podIP"], p["metadata"]["labels"])
            for p in items}
        for p in items:
            m = p["metadata"]
            probers[f"{m['namespace']}/{m['name']}"] = Prober(pod_netns_name(m["namespace"], m["name"], m["uid"]))
        yield Cluster(lab, dict(sorted(pods.items())), dict(sorted(probers.items())))
    finally:
        for prober in probers.values():
            prober.close()
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


# -- the cases -------------------------------------------------------------------------------------
def np(ns: str, name: str, **spec: Any) -> dict:
    spec.setdefault("podSelector", {})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def ns_sel(*names: str) -> dict:
    return {"matchExpressions": [{"key": "ns", "operator": "In", "values": list(names)}]}


def pod_sel(name: str) -> dict:
    return {"matchLabels": {"pod": name}}


DNS_EGRESS = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}

Case = Callable[[dict[str, P]], list[dict]]
CASES: list[tuple[str, Case]] = [
    ("default deny ingress", lambda p: [np("x", "deny-ingress")]),
    ("default deny egress", lambda p: [np("x", "deny-egress", policyTypes=["Egress"])]),
    ("allow all ingress over a default deny", lambda p: [np("x", "deny-ingress"), np("x", "allow-all", ingress=[{}])]),
    ("default deny all, everywhere", lambda p: [np(ns, "deny-all", policyTypes=["Ingress", "Egress"])
                                                for ns in NAMESPACES]),
    ("allow from namespace", lambda p: [np("x", "from-y", ingress=[{"from": [{"namespaceSelector": {
        "matchLabels": {"ns": "y"}}}]}])]),
    ("allow from a pod in the namespace", lambda p: [np("x", "a-from-b", podSelector=pod_sel("a"), ingress=[
        {"from": [{"podSelector": pod_sel("b")}]}])]),
    ("namespace AND pod selector", lambda p: [np("x", "a-from-yz-c", podSelector=pod_sel("a"), ingress=[
        {"from": [{"namespaceSelector": ns_sel("y", "z"), "podSelector": pod_sel("c")}]}])]),
    ("namespace OR pod selector", lambda p: [np("x", "a-from-y-or-c", podSelector=pod_sel("a"), ingress=[
        {"from": [{"namespaceSelector": ns_sel("y")}, {"podSelector": pod_sel("c")}]}])]),
    ("ipBlock with except", lambda p: [np("x", "cidr", ingress=[{"from": [{"ipBlock": {
        "cidr": "10.244.0.0/16", "except": [f"{p['y/b'].ip}/32", f"{p['z/c'].ip}/32"]}}]}])]),
    ("named port", lambda p: [np("x", "named", ingress=[{"ports": [{"port": "serve-81-tcp"}]}])]),
    ("named UDP port from one namespace", lambda p: [np("y", "named-udp", ingress=[
        {"from": [{"namespaceSelector": ns_sel("z")}], "ports": [{"port": "serve-80-udp", "protocol": "UDP"}]}])]),
    ("endPort range that holds 81", lambda p: [np("x", "range", ingress=[{"ports": [
        {"port": 81, "endPort": 90, "protocol": "TCP"}, {"port": 79, "endPort": 80, "protocol": "UDP"}]}])]),
    ("a protocol without a port", lambda p: [np("z", "udp-only", ingress=[{"ports": [{"protocol": "UDP"}]}])]),
    ("egress to DNS only", lambda p: [np("x", "dns-only", policyTypes=["Egress"], egress=[DNS_EGRESS])]),
    ("egress to one namespace", lambda p: [np("x", "to-y", egress=[{"to": [{"namespaceSelector": ns_sel("y")}]},
                                                                   DNS_EGRESS])]),
    ("policyTypes Egress only: its ingress rules do nothing", lambda p: [np(
        "y", "egress-only", policyTypes=["Egress"], ingress=[{"from": [{"podSelector": pod_sel("a")}]}],
        egress=[{"to": [{"namespaceSelector": {}, "podSelector": pod_sel("c")}]}])]),
    ("two policies are unioned", lambda p: [
        np("x", "a-from-y", podSelector=pod_sel("a"), ingress=[{"from": [{"namespaceSelector": ns_sel("y")}]}]),
        np("x", "a-from-z-81", podSelector=pod_sel("a"), ingress=[{"from": [{"namespaceSelector": ns_sel("z")}],
                                                                  "ports": [{"port": 81}]}])]),
    ("egress ipBlock with except", lambda p: [np("z", "eg-cidr", policyTypes=["Egress"], egress=[{"to": [
        {"ipBlock": {"cidr": "10.244.0.0/16", "except": [f"{p['x/a'].ip}/32"]}}]}])]),
    ("ingress and egress together, allowed within the namespace", lambda p: [
        np(ns, "same-ns", policyTypes=["Ingress", "Egress"], ingress=[{"from": [{"podSelector": {}}]}],
           egress=[{"to": [{"podSelector": {}}]}]) for ns in NAMESPACES]),
    ("match expressions: NotIn and Exists", lambda p: [np("y", "not-x", podSelector={"matchExpressions": [
        {"key": "pod", "operator": "In", "values": ["a", "b"]}]}, ingress=[{"from": [{
            "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]},
            "podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]}}]}])]),
]


def apply_only(lab: Lab, policies: list[dict]) -> None:
    """Replace every policy of the three namespaces with ``policies``."""
    have = {(p["metadata"]["namespace"], p["metadata"]["name"])
            for p in lab.json("get", "networkpolicies", "-A")["items"]}
    want = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in policies}
    for ns in NAMESPACES:
        gone = sorted(name for n, name in have - want if n == ns)
        if gone:
            lab.kubectl("delete", "networkpolicy", "-n", ns, *gone, "--wait=false")
    if policies:
        lab.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": policies}))


def test_bridged_traffic_passes_iptables_and_the_agents_run(cluster: Cluster):
    for i in range(1, NODES + 1):
        got = cluster.lab.in_node(i, "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables")
        assert got.stdout.strip() == "1", f"node {i}: bridge-nf-call-iptables={got.stdout!r} {got.stderr}"
        forward = cluster.lab.in_node(i, "iptables", "-S", "FORWARD").stdout.splitlines()
        assert forward[1] == '-A FORWARD -m comment --comment "kubepy network policies" -j KUBE-NWPLCY-FORWARD', \
            forward
    status = cluster.lab.kubepy("status").stdout
    assert all(f"{cluster.lab.node_netns(i)}/netpol" in status for i in range(1, NODES + 1)), status


def test_the_model_and_the_probes_agree_with_no_policies(cluster: Cluster):
    apply_only(cluster.lab, [])
    expected = cluster.expected([])
    assert all(expected.values())
    observed = wait_for(lambda: (m := cluster.observe()[0]) == expected and m, 20, "an open cluster")
    assert observed == expected


@pytest.mark.parametrize("case", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_truth_table(cluster: Cluster, case: Case):
    policies = case(cluster.pods)
    expected = cluster.expected(policies)
    start = time.monotonic()
    apply_only(cluster.lab, policies)
    applied = time.monotonic()
    observed: dict = {}
    while time.monotonic() - applied < CONVERGE_WITHIN:
        observed = cluster.observe()[0]
        if observed == expected:
            break
    took = time.monotonic() - applied
    wrong = sorted(k for k in expected if observed.get(k) != expected[k])
    assert not wrong, (f"{len(wrong)} of {len(expected)} probes differ after {took:.1f}s "
                       f"(first: {wrong[:5]})\n--- expected ('.' reached, 'X' not)\n{render(expected)}\n"
                       f"--- observed ('!' differs)\n{render(observed, expected)}\n--- policies\n"
                       + json.dumps(policies, indent=1) + "\n--- node1 rules\n" +
                       cluster.lab.in_node(1, "iptables", "-S").stdout[-6000:])
    print(f"converged in {took:.2f}s (kubectl {applied - start:.2f}s); protocols {PROTOCOLS}")


def test_dns_is_reachable_when_egress_allows_it(cluster: Cluster):
    apply_only(cluster.lab, [np("x", "dns-only", podSelector=pod_sel("a"), policyTypes=["Egress"],
                                egress=[DNS_EGRESS]),
                             np("x", "deny-egress", podSelector=pod_sel("b"), policyTypes=["Egress"])])
    dns = [(DNS_IP, "DNS", 53)]

    def answered() -> dict[str, bool] | None:
        extras = cluster.observe(dns)[1]
        got = {src: extras[src][0] for src in ("x/a", "x/b", "y/a")}
        return got if got == {"x/a": True, "x/b": False, "y/a": True} else None

    wait_for(answered, 10, "DNS answered for x/a and y/a, refused for x/b")


def test_rules_name_their_policy(cluster: Cluster):
    apply_only(cluster.lab, [np("x", "deny-ingress")])

    def shown() -> str | None:
        rules = cluster.lab.in_node(1, "iptables", "-S").stdout
        return rules if '--comment "x/a ingress: policy x/deny-ingress" -j KUBE-NWPLCY-' in rules else None

    rules = wait_for(shown, 10, "x/a's chain naming x/deny-ingress")
    assert '-A KUBE-NWPLCY-INGRESS -d %s/32 -m comment --comment "x/a" -j KUBE-POD-IN-' % cluster.pods["x/a"].ip \
        in rules or f'--comment "x/a" -d {cluster.pods["x/a"].ip}/32' in rules, rules
    assert '-p tcp -m comment --comment "x/a ingress: no policy allows" -j REJECT --reject-with tcp-reset' in rules
    table = cluster.lab.kubectl("get", "netpol", "-n", "x").stdout.splitlines()
    assert table[0].split() == ["NAME", "POD-SELECTOR", "AGE"] and table[1].split()[:2] == ["deny-ingress", "<none>"]


NEW_POD_LOOP = ("i=0; while [ $i -lt 40 ]; do if nc {ip} 80 </dev/null >/dev/null 2>&1; then echo OPEN $i; fi; "
                "i=$((i+1)); sleep 0.05; done; echo DONE")


def test_a_new_pod_starts_with_its_policies_in_place(cluster: Cluster):
    """A pod under default-deny egress tries to connect from its very first instruction: never once open."""
    lab = cluster.lab
    apply_only(lab, [np("x", "deny-egress", policyTypes=["Egress"])])
    wait_for(lambda: not cluster.observe()[0][("x/a", "y/a", "TCP", 80)], 10, "x's egress denied")
    target = cluster.pods["y/a"].ip  # on node 1, like the new pods
    names = [f"newpod-{i}" for i in range(3)]
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": n, "namespace": "x", "labels": {"pod": "new"}},
             "spec": {"nodeSelector": {"kubernetes.io/hostname": lab.node_netns(1)}, "restartPolicy": "Never",
                      "terminationGracePeriodSeconds": 0,
                      "containers": [{"name": "try", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                                      "command": ["sh", "-c", NEW_POD_LOOP.format(ip=target)]}]}} for n in names]
    start = time.monotonic()
    lab.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
    try:
        def finished() -> list[str] | None:
            logs = [lab.kubectl("logs", "-n", "x", n, check=False).stdout for n in names]
            return logs if all("DONE" in log for log in logs) else None

        logs = wait_for(finished, 60, "the new pods' loops")
        print(f"new pods done in {time.monotonic() - start:.1f}s")
        assert not any("OPEN" in log for log in logs), logs
    finally:
        lab.kubectl("delete", "pod", "-n", "x", *names, "--wait=false", check=False)


def agent_pid(lab: Lab, node: int) -> int:
    line = next((x for x in lab.kubepy("status").stdout.splitlines() if f"{lab.node_netns(node)}/netpol" in x), "")
    m = re.search(r"pid (\d+) running", line)
    return int(m.group(1)) if m else 0


def test_a_killed_agent_leaves_its_rules_and_catches_up(cluster: Cluster):
    """The kernel keeps enforcing while node 1's agent is down; the restarted agent applies what changed."""
    lab = cluster.lab
    apply_only(lab, [np("x", "deny-ingress")])
    wait_for(lambda: not cluster.observe()[0][("y/a", "x/a", "TCP", 80)], 10, "x/a's ingress denied")
    old = agent_pid(lab, 1)
    assert old, lab.kubepy("status").stdout
    os.kill(old, signal.SIGKILL)  # a daemon of the lab this module started
    assert not cluster.observe()[0][("y/a", "x/a", "TCP", 80)]
    apply_only(lab, [])
    wait_for(lambda: cluster.observe()[0][("y/a", "x/a", "TCP", 80)], 30, "the restarted agent opening x/a again")
    assert agent_pid(lab, 1) not in (0, old)
