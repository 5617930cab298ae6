"""The real control plane (three supervised processes) converging on hollow nodes."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from kubepy.client import Client, ClientConfig
from kubepy.controlplane import recorded_children
from kubepy.testing.hollow import HollowCluster
from tests.e2e.conftest import KUBECTL, free_port

pytestmark = pytest.mark.slow

NODES = 3


class HollowThread:
    """Hollow nodes on their own event loop, so blocking kubectl calls in the
    test never stall their heartbeats."""

    def __init__(self, kubeconfig: Path, **kw) -> None:
        self.loop = asyncio.new_event_loop()
        self.kw = kw
        self.kubeconfig = kubeconfig
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cluster: HollowCluster = self.call(self._start())

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def _start(self) -> HollowCluster:
        self.client = Client(ClientConfig.from_kubeconfig(self.kubeconfig))
        cluster = HollowCluster(self.client, NODES, **self.kw)
        await cluster.start()
        return cluster

    def stop_heartbeat(self, name: str) -> None:
        self.loop.call_soon_threadsafe(self.cluster.stop_heartbeat, name)

    def close(self) -> None:
        async def stop() -> None:
            await self.cluster.stop()
            await self.client.close()
        try:
            self.call(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


class ControlPlane:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kubepy-cp-"))
        self.port = free_port()
        self.log = open(self.dir / "controlplane.log", "wb")
        self.argv = [sys.executable, "-m", "kubepy", "controlplane", "--data-dir", str(self.dir),
                     "--bind-address", "127.0.0.1", "--port", str(self.port),
                     "--node-monitor-grace-period", "3s", "--node-monitor-period", "0.5s",
                     "--default-not-ready-toleration-seconds", "2", "--default-unreachable-toleration-seconds", "2"]
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT)
        self.kubeconfig = self.dir / "admin.kubeconfig"
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controlplane exited:\n{self.tail()}")
            if self.kubeconfig.exists() and self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"controlplane not ready:\n{self.tail()}")
            time.sleep(0.2)

    def tail(self, n: int = 60) -> str:
        return "\n".join((self.dir / "controlplane.log").read_text(errors="replace").splitlines()[-n:])

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120):
        cp = subprocess.run([KUBECTL, "--kubeconfig", str(self.kubeconfig), *args], input=input,
                            capture_output=True, text=True, timeout=timeout)
        if check and cp.returncode:
            raise AssertionError(f"kubectl {' '.join(args)}: {cp.stderr}\n--- control plane log ---\n{self.tail()}")
        return cp

    def json(self, *args: str):
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def children(self) -> dict[str, psutil.Process]:
        """The running children, as the supervisor records them (adopted ones are not its children)."""
        out = {}
        for name, rec in recorded_children(self.dir).items():
            if rec["alive"]:
                out[name] = psutil.Process(rec["pid"])
        return out

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for child in psutil.process_iter(["cmdline"]):  # nothing of ours may survive
            if str(self.dir) in " ".join(child.info["cmdline"] or []):
                child.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cp():
    plane = ControlPlane()
    hollow = None
    try:
        hollow = HollowThread(plane.kubeconfig, lease_interval=0.5, ready_delay=0.3,
                              is_ready=lambda pod: "broken" not in json.dumps(pod["spec"]["containers"]))
        plane.hollow = hollow
        yield plane
    finally:
        if hollow:
            hollow.close()
        plane.close()


def deployment(name: str, replicas: int, image: str = "web:1") -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  strategy:
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: main
        image: {image}
        resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}
"""


def ready_pods(cp: ControlPlane, app: str) -> list[dict]:
    pods = cp.json("get", "pods", "-l", f"app={app}")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))]


def wait_for(cond, timeout: float = 60, what: str = "condition", cp: ControlPlane | None = None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}\n{cp.tail() if cp else ''}")


def test_nodes_registered_with_pod_cidrs(cp):
    def all_have_cidrs():
        # Node IPAM assigns one node at a time: wait until every node has its CIDR, not just one.
        nodes = cp.json("get", "nodes")["items"]
        return nodes if len(nodes) == NODES and all(n["spec"].get("podCIDR") for n in nodes) else None

    nodes = wait_for(all_have_cidrs, what="a pod CIDR on every node", cp=cp)
    cidrs = [n["spec"]["podCIDR"] for n in nodes]
    assert len(set(cidrs)) == NODES and all(c.startswith("10.244.") and c.endswith("/24") for c in cidrs)


def test_deployment_converges_and_rolls_safely(cp):
    cp.kubectl("apply", "-f", "-", input=deployment("web", 10))
    wait_for(lambda: len(ready_pods(cp, "web")) == 10, what="10 ready pods", cp=cp)
    nodes = {p["spec"]["nodeName"] for p in ready_pods(cp, "web")}
    assert len(nodes) == NODES, f"pods should spread over all nodes, got {nodes}"
    cp.kubectl("rollout", "status", "deployment/web", "--timeout=60s")

    cp.kubectl("set", "image", "deployment/web", "main=web:2")
    low = 10
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ready = ready_pods(cp, "web")
        low = min(low, len(ready))
        if len(ready) == 10 and all(p["spec"]["containers"][0]["image"] == "web:2" for p in ready):
            break
    assert low >= 9, f"ready pods fell to {low} during the rollout (maxUnavailable=1)"
    cp.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    rs = cp.json("get", "rs", "-l", "app=web")["items"]
    assert sorted(r["spec"]["replicas"] for r in rs) == [0, 10]

    cp.kubectl("rollout", "undo", "deployment/web")
    cp.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    dep = cp.json("get", "deployment", "web")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "web:1"
    wait_for(lambda: len([p for p in ready_pods(cp, "web")
                          if p["spec"]["containers"][0]["image"] == "web:1"]) == 10, what="undo", cp=cp)


def test_scheduler_and_controller_manager_serve_metrics_on_their_health_ports(cp):
    """After the Deployment above: the controllers' work queues and the scheduler's attempts, as
    Prometheus reads them from each process's /metrics (beside its /healthz)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    def scrape(child: str) -> dict[tuple[str, tuple], float]:
        # Where the supervisor put the child's health port (DATA_DIR/run/<child>.json).
        url = json.loads((cp.dir / "run" / f"{child}.json").read_text())["health_url"].replace("/healthz", "/metrics")
        with urllib.request.urlopen(url, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = r.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    cm = scrape("controller-manager")
    for name in ("deployment", "replicaset"):
        assert cm[("workqueue_adds_total", (("name", name),))] > 0, name
        assert cm[("workqueue_work_duration_seconds_count", (("name", name),))] > 0, name
        assert ("workqueue_depth", (("name", name),)) in cm
    assert ("workqueue_queue_duration_seconds_bucket", (("le", "+Inf"), ("name", "deployment"))) in cm
    sched = scrape("scheduler")
    assert sched[("scheduler_schedule_attempts_total", (("profile", "default-scheduler"), ("result", "scheduled")))] > 0
    assert ("scheduler_pending_pods", (("queue", "unschedulable"),)) in sched
    assert sched[("scheduler_scheduling_attempt_duration_seconds_count",
                  (("profile", "default-scheduler"), ("result", "scheduled")))] > 0
    assert sched[("process_resident_memory_bytes", ())] > 0


def test_unschedulable_pod_reports_why(cp):
    cp.kubectl("run", "huge", "--image=web:1", "--restart=Never", "--overrides",
               json.dumps({"spec": {"containers": [{"name": "huge", "image": "web:1",
                                                    "resources": {"requests": {"cpu": "64"}}}]}}))
    ev = wait_for(lambda: [e for e in cp.json("get", "events", "--field-selector",
                                                "involvedObject.name=huge,reason=FailedScheduling")["items"]],
                  what="FailedScheduling", cp=cp)
    assert ev[0]["message"].startswith(f"0/{NODES} nodes are available: {NODES} Insufficient cpu."), ev[0]["message"]
    pod = cp.json("get", "pod", "huge")
    cond = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    cp.kubectl("delete", "pod", "huge", "--wait=false")


def _free_millicpu(cp: ControlPlane) -> dict[str, int]:
    from kubepy.meta.quantity import cpu_millis
    free = {n["metadata"]["name"]: cpu_millis(n["status"]["allocatable"]["cpu"]) for n in cp.json("get", "nodes")["items"]}
    for p in cp.json("get", "pods", "-A")["items"]:
        node = p["spec"].get("nodeName")
        if node in free and p.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
            free[node] -= sum(cpu_millis(c.get("resources", {}).get("requests", {}).get("cpu", "0"))
                              for c in p["spec"]["containers"])
    return free


def test_a_high_priority_pod_preempts_the_victim_no_budget_protects(cp):
    """Every node full of low-priority pods; two of them guarded by a budget with no disruption left.
    A high-priority pod preempts the third, lands on its node, and the victim hears why."""
    cp.kubectl("create", "namespace", "preempt")
    cp.kubectl("create", "priorityclass", "low", "--value=100")
    cp.kubectl("create", "priorityclass", "high", "--value=1000")
    nodes = sorted(_free_millicpu(cp))
    guarded, open_node = nodes[:-1], nodes[-1]
    for node, free in _free_millicpu(cp).items():
        labels = {"app": "fill", "guard": "yes" if node in guarded else "no"}
        cp.kubectl("apply", "-n", "preempt", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"fill-{node}", "labels": labels},
            "spec": {"nodeName": node, "priorityClassName": "low", "containers": [
                {"name": "main", "image": "web:1", "resources": {"requests": {"cpu": f"{free}m"}}}]}}))
    cp.kubectl("create", "-n", "preempt", "poddisruptionbudget", "guard", "--selector=guard=yes",
               f"--min-available={len(guarded)}")
    wait_for(lambda: cp.json("get", "pdb", "-n", "preempt", "guard").get("status", {}).get("currentHealthy")
             == len(guarded), what="budget counts the guarded pods", cp=cp)
    cp.kubectl("run", "-n", "preempt", "vip", "--image=web:1", "--restart=Never", "--overrides", json.dumps(
        {"spec": {"priorityClassName": "high",
                  "containers": [{"name": "vip", "image": "web:1", "resources": {"requests": {"cpu": "500m"}}}]}}))
    vip = wait_for(lambda: (lambda p: p if p["spec"].get("nodeName") else None)(cp.json("get", "pod", "-n", "preempt", "vip")),
                   timeout=90, what="vip bound", cp=cp)
    assert vip["spec"]["nodeName"] == open_node and vip["spec"]["priority"] == 1000
    assert vip["status"].get("nominatedNodeName") == open_node
    left = {p["metadata"]["name"] for p in cp.json("get", "pods", "-n", "preempt", "-l", "app=fill")["items"]}
    assert left == {f"fill-{n}" for n in guarded}, left
    events = cp.json("get", "events", "-n", "preempt", "--field-selector", "reason=Preempted")["items"]
    assert [(e["involvedObject"]["name"], e["message"]) for e in events] == [
        (f"fill-{open_node}", f"Preempted by pod {vip['metadata']['uid']} on node {open_node}")]
    cp.kubectl("delete", "namespace", "preempt", "--wait=false")


def test_a_gated_pod_waits_until_its_gates_are_removed(cp):
    cp.kubectl("run", "gated", "--image=web:1", "--restart=Never", "--overrides",
               json.dumps({"spec": {"schedulingGates": [{"name": "example.com/approval"}]}}))
    time.sleep(2)  # the scheduler had its chance
    pod = cp.json("get", "pod", "gated")
    assert not pod["spec"].get("nodeName")
    assert cp.kubectl("get", "pod", "gated", "--no-headers").stdout.split()[2] == "SchedulingGated"
    cp.kubectl("patch", "pod", "gated", "--type=json", "-p", '[{"op": "remove", "path": "/spec/schedulingGates"}]')
    wait_for(lambda: cp.json("get", "pod", "gated")["spec"].get("nodeName"), what="gated pod bound", cp=cp)
    cp.kubectl("delete", "pod", "gated", "--wait=false")


def test_killing_any_component_loses_nothing(cp):
    cp.kubectl("apply", "-f", "-", input=deployment("sturdy", 4))
    wait_for(lambda: len(ready_pods(cp, "sturdy")) == 4, what="4 ready", cp=cp)
    rng = random.Random(7)
    for name in ("scheduler", "controller-manager", "apiserver"):
        before = cp.children()[name].pid
        cp.kubectl("scale", "deployment/sturdy", f"--replicas={rng.randint(2, 7)}")
        time.sleep(rng.uniform(0, 0.5))
        cp.children()[name].kill()  # SIGKILL at a random moment of the scale
        wait_for(lambda: (lambda ch: name in ch and ch[name].pid != before)(cp.children()),
                 what=f"{name} restarted", cp=cp)
    wait_for(lambda: cp.kubectl("get", "--raw", "/readyz", check=False).returncode == 0, what="API back", cp=cp)
    cp.kubectl("scale", "deployment/sturdy", "--replicas=5")
    wait_for(lambda: len(ready_pods(cp, "sturdy")) == 5, timeout=90, what="5 ready after kills", cp=cp)
    dep = cp.json("get", "deployment", "sturdy")
    assert dep["status"].get("readyReplicas") == 5 or wait_for(
        lambda: cp.json("get", "deployment", "sturdy")["status"].get("availableReplicas") == 5, cp=cp)


def test_dead_node_pods_move(cp):
    wait_for(lambda: len(ready_pods(cp, "web")) == 10, what="web ready", cp=cp)
    victim = "hollow-0"
    on_victim = [p for p in ready_pods(cp, "web") if p["spec"]["nodeName"] == victim]
    assert on_victim, "the test needs pods on the victim node"
    cp.hollow.stop_heartbeat(victim)
    node = wait_for(lambda: (lambda n: n if any(t["key"] == "node.kubernetes.io/unreachable"
                                                 for t in n["spec"].get("taints", [])) else None)(
        cp.json("get", "node", victim)), timeout=30, what="unreachable taint", cp=cp)
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "Unknown"
    wait_for(lambda: (lambda ps: len(ps) == 10 and all(p["spec"]["nodeName"] != victim for p in ps))(
        ready_pods(cp, "web")), timeout=60, what="pods replaced off the dead node", cp=cp)


def test_a_stuck_controller_manager_is_restarted(cp):
    # SIGSTOP: the process is there for ps, but its loop doesn't turn; only /healthz tells.
    before = cp.children()["controller-manager"]
    before.suspend()
    try:
        wait_for(lambda: "controller-manager" in cp.children()
                 and cp.children()["controller-manager"].pid != before.pid,
                 timeout=120, what="stuck controller-manager replaced", cp=cp)   # 5 probes of up to 7 s
    finally:
        if before.is_running():
            before.resume()
    assert not psutil.pid_exists(before.pid) or before.status() == psutil.STATUS_ZOMBIE
    assert "child unhealthy, killing child=controller-manager" in cp.tail(200)
    assert recorded_children(cp.dir)["controller-manager"]["restarts"] >= 1
    cp.kubectl("scale", "deployment/sturdy", "--replicas=3")
    wait_for(lambda: len(ready_pods(cp, "sturdy")) == 3, timeout=90, what="3 ready after the restart", cp=cp)


def test_a_killed_supervisor_is_replaced_by_one_that_adopts_the_children(cp):
    before = {name: proc.pid for name, proc in cp.children().items()}
    assert set(before) == {"apiserver", "scheduler", "controller-manager"}
    cp.proc.kill()
    cp.proc.wait(10)
    assert {name: proc.pid for name, proc in cp.children().items()} == before, "children outlive the supervisor"
    log_path = cp.dir / "controlplane.log"
    offset = log_path.stat().st_size
    cp.proc = subprocess.Popen(cp.argv, stdout=cp.log, stderr=subprocess.STDOUT)

    def since_restart() -> list[str]:
        """The new supervisor's lines (the API server's request lines, four a second, would push them
        out of any tail)."""
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        return [line for line in text.splitlines() if "kubepy.controlplane" in line or "Traceback" in line
                or line.startswith(("  ", "kubepy.", "Error", "Exception"))]

    def adopted() -> bool:
        assert cp.proc.poll() is None, f"the new supervisor exited {cp.proc.returncode}:\n" + \
            "\n".join(since_restart()[-40:])
        return sum("adopted child=" in line for line in since_restart()) >= 3

    try:
        wait_for(adopted, timeout=60, what="children adopted", cp=cp)
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- the new supervisor's lines ---\n" + "\n".join(since_restart()[-40:])) from None
    time.sleep(3)  # a few probe rounds: adopted children are healthy, nothing is started twice
    assert {name: proc.pid for name, proc in cp.children().items()} == before
    assert cp.proc.poll() is None
    # The new supervisor tends what it adopted: a killed API server comes back.
    cp.children()["apiserver"].kill()
    wait_for(lambda: (lambda ch: "apiserver" in ch and ch["apiserver"].pid != before["apiserver"])(cp.children()),
             timeout=60, what="apiserver restarted by the new supervisor", cp=cp)
    wait_for(lambda: cp.kubectl("get", "--raw", "/readyz", check=False).returncode == 0, what="API back", cp=cp)
    cp.kubectl("scale", "deployment/sturdy", "--replicas=4")
    wait_for(lambda: len(ready_pods(cp, "sturdy")) == 4, timeout=90, what="4 ready", cp=cp)
