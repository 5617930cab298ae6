"""A UDP Service on a lab cluster (`kubepy up --nodes 3`) keeps working when its backend pod
is replaced.

The backend is ``kubepy.local/udpecho:1`` (``kubepy/images_src/udpecho.c``): it answers
each datagram with ``"<hostname> <payload>"``, and a pod's hostname is its name, so every
answer says which pod gave it. The point is conntrack: a UDP client that keeps its source
port keeps its conntrack entry, and with it the DNAT to the pod it first reached. When that
pod is gone, kube-proxy must delete the entry (``proxier.stale_udp_flows``), or the client
keeps sending into a dead IP. So the clients here bind FIXED source ports and are the same
before and after the replacement.

Traffic stays inside the namespaces the cluster made (and the bridge between them).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_lab import Lab, ready_pods, wait_for

pytestmark = pytest.mark.slow

NODES = 3
PORT = 9000
IMAGE = "kubepy.local/udpecho:1"

MANIFEST = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: udpecho}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: udpecho}}}}
  template:
    metadata: {{labels: {{app: udpecho}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: udpecho
        image: {IMAGE}
        imagePullPolicy: IfNotPresent
        ports: [{{name: echo, containerPort: {PORT}, protocol: UDP}}]
        readinessProbe:
          exec: {{command: ["true"]}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: udpecho}}
spec:
  type: NodePort
  selector: {{app: udpecho}}
  ports: [{{name: echo, protocol: UDP, port: {PORT}, targetPort: echo}}]
"""

# One question from a fixed (or any, 0) source port; prints the answer or nothing.
ASK = r"""
import socket, sys
host, port, sport, payload, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", sport))
s.settimeout(timeout)
s.sendto(payload.encode(), (host, port))
try:
    print(s.recvfrom(4096)[0].decode())
except OSError as e:
    print(f"no answer: {e}", file=sys.stderr)
"""

# A client that never lets go of its socket: asks every 0.2 s, one line per attempt.
STREAM = r"""
import socket, sys, time
host, port, sport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", sport))
s.settimeout(0.3)
seq = 0
while True:
    seq += 1
    try:
        s.sendto(f"hello {seq}".encode(), (host, port))
        data = s.recvfrom(4096)[0].decode()
        print(f"{time.time():.3f} {data}", flush=True)
    except OSError as e:
        print(f"{time.time():.3f} - {type(e).__name__}", flush=True)
    time.sleep(0.2)
"""


@pytest.fixture(scope="module")
def udplab():
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the udpecho image (apt-get install gcc libc6-dev); .ci/install installs it")
    lab = Lab()
    try:
        # nftables mode (the other labs but test_example_app's run iptables): stale UDP flows are the
        # proxier's to delete whatever writes the rules.
        up = lab.kubepy("up", "--nodes", str(NODES), "--proxy-mode", "nftables")
        assert "ready in" in up.stdout, up.stdout
        from kubepy.images import udp_echo_image

        archive = lab.root / "udpecho.tar"
        udp_echo_image(IMAGE, archive)
        lab.kubepy("image", "load", str(archive), "--name", lab.name, "--state-dir", str(lab.root))
        lab.kubectl("apply", "-f", "-", input=MANIFEST)
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


def ask(lab: Lab, node: int, host: str, port: int, payload: str = "hello", sport: int = 0,
        timeout: float = 1.0) -> str | None:
    """Send one datagram from node ``node``'s network namespace; the answer or None."""
    cp = lab.in_node(node, sys.executable, "-c", ASK, host, str(port), str(sport), payload, str(timeout))
    return cp.stdout.strip() or None


def ask_until(lab: Lab, node: int, host: str, port: int, want: str, *, sport: int = 0, timeout: float = 10) -> list:
    """Ask until the answer starts with ``want``; every answer seen (the last one is the good one)."""
    seen: list[str | None] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(ask(lab, node, host, port, sport=sport))
        if seen[-1] and seen[-1].split()[0] == want:
            return seen
        time.sleep(0.3)
    return seen + ["<gave up>"]


def the_pod(lab: Lab, not_named: str | None = None) -> dict:
    def one():
        pods = [p for p in ready_pods(lab, "udpecho")
                if p["metadata"]["name"] != not_named and not p["metadata"].get("deletionTimestamp")]
        return pods[0] if len(pods) == 1 and pods[0]["status"].get("podIP") else None
    return wait_for(one, 90, "one ready udpecho pod" + (f" other than {not_named}" if not_named else ""))


def endpoint_ips(lab: Lab) -> list[str]:
    ep = lab.json("get", "endpoints", "udpecho")
    return sorted(a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or [])


def node_of(lab: Lab, pod: dict) -> int:
    return int(pod["spec"]["nodeName"].rsplit("node", 1)[1])


def diagnostics(lab: Lab, client_node: int) -> str:
    out = []
    for i in range(1, NODES + 1):
        ct = lab.in_node(i, "conntrack", "-L", "-p", "udp")
        out.append(f"--- conntrack -L -p udp on node{i}{' (client)' if i == client_node else ''} ---\n"
                   f"{ct.stdout}{ct.stderr}")
    for i in range(1, NODES + 1):
        log = lab.root / lab.name / "logs" / f"{lab.node_netns(i)}-proxy.log"
        if log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            out.append(f"--- {log.name} (tail) ---\n{tail}")
    out.append(lab.kubectl("get", "pods,endpoints", "-o", "wide", check=False).stdout)
    return "\n".join(out)


def node_ips(lab: Lab) -> dict[int, str]:
    return {int(n["metadata"]["name"].rsplit("node", 1)[1]):
            next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
            for n in lab.json("get", "nodes")["items"]}


def test_udp_service_answers_from_every_node(udplab: Lab):
    lab = udplab
    pod = the_pod(lab)
    name = pod["metadata"]["name"]
    svc = lab.json("get", "svc", "udpecho")
    ip, node_port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
    wait_for(lambda: endpoint_ips(lab) == [pod["status"]["podIP"]], 30, "endpoints")
    ips = node_ips(lab)
    for i in range(1, NODES + 1):
        # ClusterIP and this node's own NodePort, from the node itself (OUTPUT chain), ...
        for host, port in ((ip, PORT), (ips[i], node_port)):
            seen = ask_until(lab, i, host, port, name, timeout=15)
            assert seen[-1] == f"{name} hello", (f"node{i} -> {host}:{port}/udp: {seen}\n" + diagnostics(lab, i))
    # ... and every node's NodePort from outside every node (the host, over the lab bridge).
    for i, addr in ips.items():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            got = None
            for _ in range(5):
                s.sendto(b"outside", (addr, node_port))
                try:
                    got = s.recvfrom(4096)[0].decode()
                    break
                except OSError:
                    continue
        assert got == f"{name} outside", (f"host -> node{i} {addr}:{node_port}/udp: {got!r}\n" + diagnostics(lab, i))


def test_udp_service_survives_backend_replacement(udplab: Lab):
    lab = udplab
    old = the_pod(lab)
    old_name, old_ip = old["metadata"]["name"], old["status"]["podIP"]
    wait_for(lambda: endpoint_ips(lab) == [old_ip], 30, "endpoints = the old pod")
    ip = lab.json("get", "svc", "udpecho")["spec"]["clusterIP"]
    client = 1
    quiet_port, stream_port = 41234, 41235

    # Client 1 (quiet): one question now, then silence until the new pod is in the Endpoints.
    # Its conntrack entry (to the old pod) stays behind unless kube-proxy deletes it.
    seen = ask_until(lab, client, ip, PORT, old_name, sport=quiet_port, timeout=15)
    assert seen[-1] == f"{old_name} hello", seen
    for _ in range(3):  # a few more in both directions: conntrack's longer "stream" timeout applies
        assert ask(lab, client, ip, PORT, sport=quiet_port) == f"{old_name} hello"

    # Client 2 (stream): never stops asking, through the gap with no endpoints too.
    log_path = lab.root / "udp-stream.log"
    with open(log_path, "w") as log:
        stream = subprocess.Popen(["ip", "netns", "exec", lab.node_netns(client), sys.executable, "-u", "-c",
                                   STREAM, ip, str(PORT), str(stream_port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        def stream_answers() -> list[str]:
            return [ln.split(" ", 2)[1] for ln in log_path.read_text().splitlines()
                    if len(ln.split(" ", 2)) == 3 and ln.split(" ", 2)[2].startswith("hello")]
        wait_for(lambda: old_name in stream_answers(), 15, "the streaming client to reach the old pod")

        lab.kubectl("delete", "pod", old_name, "--wait=false")
        new = the_pod(lab, not_named=old_name)
        new_name, new_ip = new["metadata"]["name"], new["status"]["podIP"]
        wait_for(lambda: endpoint_ips(lab) == [new_ip], 60, f"endpoints = the new pod {new_ip}")
        t0 = time.monotonic()
        moved = f"{old_name} ({old_ip}, node{node_of(lab, old)}) -> {new_name} ({new_ip}, node{node_of(lab, new)})"

        # The quiet client, same source port: the new pod answers within a few seconds.
        seen = ask_until(lab, client, ip, PORT, new_name, sport=quiet_port, timeout=10)
        assert seen[-1] == f"{new_name} hello", (
            f"UDP client {client}:{quiet_port} stuck after {moved}: {seen}\n" + diagnostics(lab, client))

        # The streaming client: answered by the new pod, and no longer by the old one.
        def streamed_to_new() -> bool:
            return new_name in stream_answers()
        try:
            wait_for(streamed_to_new, max(1.0, 10 - (time.monotonic() - t0)), "the streaming client to reach the new pod")
        except AssertionError:
            tail = "\n".join(log_path.read_text().splitlines()[-20:])
            raise AssertionError(f"streaming UDP client {client}:{stream_port} stuck after {moved}:\n{tail}\n"
                                 + diagnostics(lab, client)) from None
        answers = stream_answers()
        assert answers[answers.index(new_name):].count(old_name) == 0, answers[-20:]
    finally:
        stream.terminate()
        stream.wait(timeout=10)

    # And the conntrack table of the client's node no longer sends anything to the old pod.
    ct = lab.in_node(client, "conntrack", "-L", "-p", "udp", "--dport", str(PORT)).stdout
    stale = [ln for ln in ct.splitlines() if f"dst={ip}" in ln and f"src={old_ip} " in ln]
    assert not stale, "stale conntrack entries to the old pod:\n" + "\n".join(stale)


def test_image_answers_and_stops_on_sigterm(tmp_path: Path):
    """The udpecho binary itself, outside any cluster: answers, and SIGTERM ends it with 0."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed (apt-get install gcc libc6-dev)")
    from kubepy.images import UDPECHO_SRC

    binary = tmp_path / "udpecho"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(binary), str(UDPECHO_SRC)], check=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(binary), str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert "listening" in proc.stdout.readline()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(b"ping", ("127.0.0.1", port))
            assert s.recvfrom(4096)[0].decode() == f"{socket.gethostname()} ping"
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
