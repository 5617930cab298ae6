"""A lab cluster heals itself: every daemon `kubepy up` started comes back after SIGKILL (and so
does each supervisor twin), without restarting a pod; `kubepy up` on a broken cluster repairs it
and keeps its objects; `kubepy down` leaves no process of the cluster, not even a leaked shim.

One 2-node cluster for the module (name prefix ``kptlab``); traffic stays inside it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.test_lab import Lab, wait_for

pytestmark = pytest.mark.slow

NODES = 2
POD = "kptlab-sleeper"


class SupervisedLab(Lab):
    def __init__(self) -> None:
        super().__init__()
        self.name = f"kptlab-{secrets.token_hex(3)}"

    @property
    def dir(self) -> Path:
        return self.root / self.name

    def sup(self) -> dict:
        return json.loads((self.dir / "supervisor.json").read_text())

    def pid(self, daemon: str) -> int:
        return self.sup()["daemons"][daemon]["pid"]

    def node(self, i: int) -> str:
        return f"{self.name}-node{i}"

    def socket(self, i: int) -> str:
        return str(self.dir / "nodes" / self.node(i) / "containerd" / "containerd.sock")

    def ctr(self, i: int, *args: str, namespace: str = "kubepy", check: bool = True) -> subprocess.CompletedProcess:
        cdir = self.dir / "nodes" / self.node(i) / "containerd"
        env = {**os.environ, "CONTAINERD_SNAPSHOTTER": (cdir / "snapshotter").read_text().strip()}
        cp = subprocess.run(["ctr", "--address", self.socket(i), "--namespace", namespace, *args],
                            capture_output=True, text=True, timeout=60, env=env)
        if check and cp.returncode:
            raise AssertionError(f"ctr {' '.join(args)}: {cp.stdout}{cp.stderr}")
        return cp

    def node_ready(self, i: int) -> bool:
        node = self.json("get", "node", self.node(i))
        return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])

    def pod_state(self) -> tuple[int, int]:
        """(restartCount, pid of the pod's container task in containerd)."""
        pod = self.json("get", "pod", POD)
        statuses = pod["status"].get("containerStatuses") or []
        assert statuses and statuses[0].get("state", {}).get("running"), pod["status"]
        cid = statuses[0]["containerID"].split("://", 1)[1]
        tasks = self.ctr(1, "task", "ls").stdout.splitlines()[1:]
        pids = {t.split()[0]: int(t.split()[1]) for t in tasks}
        assert cid in pids, (cid, tasks)
        return statuses[0]["restartCount"], pids[cid]


def proc_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def processes_naming(path: Path) -> list[str]:
    """Every process whose command line names ``path`` (or something below it), but this test's."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid() or not proc_alive(int(entry.name)):
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if any(a == str(path) or str(path) + "/" in a for a in argv):
            out.append(f"{entry.name}: {' '.join(argv)[:200]}")
    return out


@pytest.fixture(scope="module")
def lab():
    lab = SupervisedLab()
    try:
        lab.up_with_busybox(NODES)
        lab.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD},
            "spec": {"nodeName": lab.node(1), "terminationGracePeriodSeconds": 1, "containers": [
                {"name": "sleep", "image": "busybox:1.36", "command": ["sleep", "100000"]}]}}))
        wait_for(lambda: lab.json("get", "pod", POD)["status"].get("phase") == "Running", 120, "pod running")
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


def kill_and_wait_back(lab: SupervisedLab, daemon: str) -> int:
    old = lab.pid(daemon)
    os.kill(old, signal.SIGKILL)
    new = wait_for(lambda: (lambda p: p if p and p != old and proc_alive(p) else None)(lab.pid(daemon)),
                   60, f"{daemon} restarted")
    return new


@pytest.mark.parametrize("role", ["kubelet", "proxy", "dns", "containerd"])
def test_a_killed_node_daemon_comes_back_and_pods_keep_running(lab: SupervisedLab, role: str):
    daemon = f"{lab.node(1)}/{role}"
    before = lab.pod_state()
    restarts = lab.sup()["daemons"][daemon]["restarts"]
    new = kill_and_wait_back(lab, daemon)
    assert lab.sup()["daemons"][daemon]["restarts"] == restarts + 1
    wait_for(lambda: lab.node_ready(1), 120, "node Ready again")
    if role == "kubelet":   # Ready from the new kubelet, not left over from the old one
        since = time.time()
        wait_for(lambda: any(
            c["type"] == "Ready" and c["status"] == "True" and _ts(c["lastHeartbeatTime"]) >= since - 1
            for c in lab.json("get", "node", lab.node(1))["status"]["conditions"]), 120, "a fresh heartbeat")
    status = lab.kubepy("status").stdout
    line = next(x for x in status.splitlines() if daemon in x)
    assert f"pid {new} running; restarts {restarts + 1}, last" in line, status
    wait_for(lambda: lab.pod_state() == before, 60, "the pod untouched (same restartCount, same task pid)")
    one = [p for p in processes_naming(lab.dir) if f"--hostname-override {lab.node(1)}" in p and " kubelet " in p]
    assert len(one) == 1, f"exactly one kubelet for the node: {one}"


def _ts(text: str) -> float:
    import calendar

    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def test_each_supervisor_twin_is_replaced(lab: SupervisedLab):
    before = lab.pod_state()
    sup = lab.sup()
    active, standby, takeovers = sup["active"]["pid"], sup["daemons"]["supervisor-standby"]["pid"], sup["takeovers"]
    os.kill(active, signal.SIGKILL)
    wait_for(lambda: lab.sup()["active"]["pid"] == standby, 30, "the standby takes over")
    new_standby = wait_for(lambda: (lambda p: p if p not in (active, standby) and proc_alive(p) else None)(
        lab.sup()["daemons"]["supervisor-standby"]["pid"]), 30, "a new standby")
    assert lab.sup()["takeovers"] == takeovers + 1
    kill_and_wait_back(lab, f"{lab.node(2)}/dns")   # the new active tends the daemons
    os.kill(new_standby, signal.SIGKILL)
    wait_for(lambda: (lambda p: p not in (active, standby, new_standby) and proc_alive(p))(
        lab.sup()["daemons"]["supervisor-standby"]["pid"]), 30, "the standby replaced")
    assert lab.sup()["active"]["pid"] == standby
    status = lab.kubepy("status").stdout
    assert f"pid {standby} active since" in status and f"takeovers {takeovers + 1}" in status, status
    twins = [p for p in processes_naming(lab.dir) if "lab supervise" in p]
    assert len(twins) == 2, twins
    assert lab.pod_state() == before


def test_up_repairs_a_cluster_without_its_supervisor_and_keeps_objects(lab: SupervisedLab):
    lab.kubectl("create", "configmap", "kptlab-keep", "--from-literal=k=v")
    before = lab.pod_state()
    sup = lab.sup()
    twins = [sup["active"]["pid"], sup["daemons"]["supervisor-standby"]["pid"]]
    for pid in twins:   # stopped first, so neither can take over or respawn the other in between
        os.kill(pid, signal.SIGSTOP)
    for pid in twins:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(proc_alive(p) for p in twins), 10, "twins gone")
    kubelet = lab.pid(f"{lab.node(2)}/kubelet")
    os.kill(kubelet, signal.SIGKILL)
    time.sleep(2)
    assert lab.pid(f"{lab.node(2)}/kubelet") == kubelet, "nothing supervises now"
    status = lab.kubepy("status", check=False)
    assert status.returncode == 1 and "✗ supervisor" in status.stdout, status.stdout

    # Fewer nodes than it has is refused in one line (more would add nodes).
    wrong = lab.kubepy("up", "--nodes", "1", check=False)
    assert wrong.returncode == 1
    assert wrong.stderr.strip().count("\n") == 0 and "2 nodes, not --nodes 1" in wrong.stderr, wrong.stderr
    assert lab.kubeconfig.exists()

    up = lab.kubepy("up")
    assert "repairing" in up.stdout and "ready in" in up.stdout, up.stdout + up.stderr
    new = lab.pid(f"{lab.node(2)}/kubelet")
    assert new != kubelet and proc_alive(new)
    # While nothing supervised, the node may have gone NotReady; the new kubelet brings it back.
    wait_for(lambda: lab.node_ready(2), 90, "node 2 Ready after the repair")
    assert lab.json("get", "configmap", "kptlab-keep")["data"] == {"k": "v"}, "up kept the store"
    assert lab.pod_state() == before
    again = lab.kubepy("up")
    assert "already running" in again.stdout, again.stdout


def test_down_leaves_no_process_and_no_shim(lab: SupervisedLab):
    # A shim containerd no longer knows as the kubelet's (another namespace): what a containerd
    # crash during pod creation leaves behind. Its container lives in the node's cgroup parent.
    cdir = lab.dir / "nodes" / lab.node(1) / "containerd"
    archive = lab.root / "busybox.tar"
    lab.ctr(1, "images", "import", str(archive), namespace="kptlab-leak")
    lab.ctr(1, "run", "-d", "--runc-root", str(cdir / "runc"), "--cgroup", f"/kubepy/{lab.node(1)}/kptlab-leak",
            "docker.io/library/busybox:1.36", "kptlab-leak", "sleep", "100000", namespace="kptlab-leak")
    shims = [p for p in processes_naming(lab.dir) if "containerd-shim" in p]
    assert any("kptlab-leak" in p for p in shims), shims
    leaked = int(lab.ctr(1, "task", "ls", namespace="kptlab-leak").stdout.splitlines()[1].split()[1])
    assert proc_alive(leaked)

    down = lab.kubepy("down")
    assert "stop the supervisor" in down.stdout.splitlines()[0], down.stdout
    left = processes_naming(lab.dir)
    assert not left, f"kubepy down left processes of the cluster:\n" + "\n".join(left)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(lab.dir) not in ps
    assert not proc_alive(leaked), "the leaked shim's container is gone too"
    # every pod has a /dev/shm tmpfs (and Memory emptyDirs are tmpfs too): none may outlive the cluster
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    assert not [m for m in mounts if m.startswith(str(lab.dir))], "kubepy down left mounts"
    assert not lab.dir.exists()
