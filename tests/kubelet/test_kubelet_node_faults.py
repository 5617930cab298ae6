"""A real kubelet and containerd under node faults: runtime down, leaked shims, a pod deleted while away.

1. containerd stopped under a running kubelet → the Node's Ready turns
   False (``KubeletNotReady``, "container runtime is down") within a bounded
   wait; containerd started again → Ready True (``KubeletReady``) and the pod
   that ran all along is untouched (same container, no restart).
2. A shim really leaked (containerd SIGKILLed the moment the shim of a
   starting task appears: the new containerd lists no such task) is killed
   by the kubelet when it starts; decoys with another containerd's
   ``-address`` or another ``-namespace`` live on.
   The same leak under a running kubelet is found once containerd is back.
3. A pod deleted (gracefully) while its kubelet is stopped stays Terminating
   with its container running - the API server waits for the kubelet, which
   is why nothing may force-delete it - and the kubelet, back, stops the
   container and then confirms the deletion.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from kubepy.client import Client, NotFoundError
from kubepy.kubelet.config import KubeletConfig
from kubepy.kubelet.containerd import Containerd
from kubepy.kubelet.kubelet import make_runtime
from kubepy.kubelet.runtime import ContainerSpec, Runtime
from kubepy.kubelet.shims import kill_shim, list_shims
from tests.kubelet.conftest import KubeletNode
from tests.kubelet.test_kubelet_e2e import cond, cstatus, pod, wait_for

pytestmark = pytest.mark.slow

HEALTH_FLAGS = ["--runtime-health-interval", "1s", "--runtime-down-threshold", "4s"]


def _ready(node_obj: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in node_obj["status"]["conditions"] if c["type"] == "Ready")


async def _wait_node(client: Client, node: KubeletNode, check: Any, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = _ready(await client.get("nodes", node.name))
        if check(last):
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"node {node.name}: {what} not seen in {timeout}s; Ready={last}\n"
                         f"--- kubelet log ---\n{node.log_tail(60)}")


def _restart_kubelet_with(node: KubeletNode, flags: list[str]) -> None:
    if flags[0] not in node.args:
        node.args += flags
    node.stop_kubelet()
    node.start_kubelet()


def _kubelet_log(node: KubeletNode) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(node.tmp.glob("kubelet-*.log")))


async def test_containerd_down_makes_node_not_ready_and_back(kubelet_node: KubeletNode, client: Client):
    node, ns = kubelet_node, kubelet_node.test_ns
    _restart_kubelet_with(node, HEALTH_FLAGS)
    await client.create("pods", pod(node, "steady", [{"name": "main", "command": ["sleep", "3600"]}]), namespace=ns)
    running = await wait_for(client, node, "steady", lambda p: p["status"].get("phase") == "Running"
                             and cond(p, "Ready") == "True", timeout=60, what="Running+Ready")
    cid = cstatus(running, "main")["containerID"]
    await _wait_node(client, node, lambda r: r["status"] == "True", 60, "Ready=True")

    cd = Containerd(node.containerd_dir, netns=node.netns)
    t0 = time.monotonic()
    await cd.stop()
    try:
        down = await _wait_node(client, node, lambda r: r["status"] == "False", 60, "Ready=False")
        t_down = time.monotonic() - t0
        assert down["reason"] == "KubeletNotReady"
        assert down["message"] == "container runtime is down"
    finally:
        await Containerd(node.containerd_dir, netns=node.netns).start()
    t1 = time.monotonic()
    back = await _wait_node(client, node, lambda r: r["status"] == "True", 60, "Ready=True again")
    t_back = time.monotonic() - t1
    assert (back["reason"], back["message"]) == ("KubeletReady", "kubelet is posting ready status")
    print(f"\nTIMING containerd stopped -> Ready=False {t_down:.1f}s; started -> Ready=True {t_back:.1f}s")

    # The pod ran on: same container, no restart, still Running and Ready.
    await asyncio.sleep(3)
    now = await client.get("pods", "steady", namespace=ns)
    cs = cstatus(now, "main")
    assert (cs["containerID"], cs["restartCount"], "running" in cs["state"]) == (cid, 0, True), now["status"]
    assert now["status"]["phase"] == "Running" and cond(now, "Ready") == "True"
    bare = cid.removeprefix("containerd://")
    assert any(line.split()[:1] == [bare] and "RUNNING" in line for line in node.ctr("tasks", "ls").splitlines())

    # One log line per transition of the node's Ready.
    log = _kubelet_log(node).split("kubelet ready node=")[-1]
    flips = [line for line in log.splitlines() if "node ready condition" in line]
    assert [("status=False" in x, "container runtime is down" in x) for x in flips] == [(True, True), (False, False)], \
        flips
    await client.delete("pods", "steady", namespace=ns)


def _our_shims(node: KubeletNode) -> list[Any]:
    return [s for s in list_shims() if os.path.abspath(s.address) == os.path.abspath(node.socket)]


async def _leak_a_shim(node: KubeletNode, attempts: int = 6) -> tuple[str, int]:
    """(container id, shim pid) of a shim the node's containerd no longer knows; containerd runs again after."""
    for i in range(attempts):
        cd = Containerd(node.containerd_dir, netns=node.netns)
        await cd.start()
        rt = Runtime(cd.socket, namespace="kubepy", snapshotter=cd.snapshotter, runc_root=cd.runc_root)
        cid = f"kptnode-leak-{os.urandom(3).hex()}-{i}"
        run = asyncio.create_task(rt.run(ContainerSpec(id=cid, image="busybox:1.36", command=["sleep", "3600"])))
        deadline = time.monotonic() + 20
        while not any(s.id == cid for s in _our_shims(node)) and time.monotonic() < deadline and not run.done():
            await asyncio.sleep(0.002)
        pid = cd.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)   # containerd dies while the task is being created
        await asyncio.gather(run, return_exceptions=True)
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            await asyncio.sleep(0.02)
        await Containerd(node.containerd_dir, netns=node.netns).start()
        await asyncio.sleep(1.0)   # a shim's short-lived "start" invocation is gone by now
        tasks = await Runtime(node.socket, namespace="kubepy").task_ids()
        leaked = [s for s in _our_shims(node) if s.id == cid]
        if len(leaked) == 1 and cid not in tasks:
            return cid, leaked[0].pid
    raise AssertionError(f"no shim leaked in {attempts} attempts")


def _decoy(tmp: Path, name: str, address: str, namespace: str) -> subprocess.Popen[bytes]:
    """A process that looks like a shim of another containerd / namespace (a copy of sh)."""
    binary = tmp / name / "containerd-shim-runc-v2"
    binary.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/sh", binary)
    return subprocess.Popen([str(binary), "-c", "sleep 600", "-namespace", namespace, "-id", "kptnode-decoy",
                             "-address", address], start_new_session=True)


async def test_leaked_shim_is_killed_when_the_kubelet_starts(kubelet_node: KubeletNode, client: Client):
    node = kubelet_node
    node.stop_kubelet()
    decoys = [_decoy(node.tmp, "other-node", str(node.tmp / "other" / "containerd.sock"), "kubepy"),
              _decoy(node.tmp, "other-ns", node.socket, "k8s.io")]
    try:
        cid, shim_pid = await _leak_a_shim(node)
        shim = psutil.Process(shim_pid)
        assert shim.is_running()
        argv = shim.cmdline()
        node.start_kubelet()
        # The leaked shim is a few seconds old at most: the kubelet judges it once it is 10 s old.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and shim.is_running() and shim.status() != psutil.STATUS_ZOMBIE:
            await asyncio.sleep(0.2)
        assert not shim.is_running() or shim.status() == psutil.STATUS_ZOMBIE, node.log_tail(40)
        lines = [x for x in _kubelet_log(node).splitlines() if "leaked shim killed" in x]
        ctrd_log = (node.containerd_dir / "containerd.log").read_text(errors="replace")
        assert len(lines) == 1 and f"pid={shim_pid} id={cid} namespace=kubepy" in lines[0], \
            (lines, argv, node.log_tail(60), [x for x in ctrd_log.splitlines() if cid in x][-20:])
        assert not [s for s in _our_shims(node) if s.namespace == "kubepy" and s.id == cid]
        await asyncio.sleep(2.0)   # containerd's own clean-up of the dead shim starts none again
        assert not [s for s in _our_shims(node) if s.namespace == "kubepy" and s.id == cid]
        for d in decoys:
            assert d.poll() is None, "a shim of another containerd or namespace was killed"
        # The node is healthy afterwards.
        ready = _ready(await client.get("nodes", node.name))
        deadline = time.monotonic() + 60
        while ready["status"] != "True" and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            ready = _ready(await client.get("nodes", node.name))
        assert ready["status"] == "True", ready
    finally:
        for d in decoys:
            d.kill()
            d.wait(5)
        for s in _our_shims(node):
            if s.id.startswith("kptnode-leak-"):
                kill_shim(s)
        rt = make_runtime(KubeletConfig(container_runtime_endpoint=node.socket))
        for c in await rt.list_containers(reap=False):
            if c.id.startswith("kptnode-leak-"):
                await rt.remove(c.id)


async def test_shim_leaked_under_a_running_kubelet_is_killed_after_containerd_returns(
        kubelet_node: KubeletNode, client: Client):
    """containerd SIGKILLed (and restarted) under a running kubelet: its event stream breaks, and once
    containerd answers again the kubelet looks for leaked shims - without restarting its own pods."""
    node, ns = kubelet_node, kubelet_node.test_ns
    await client.create("pods", pod(node, "bystander", [{"name": "main", "command": ["sleep", "3600"]}]),
                        namespace=ns)
    running = await wait_for(client, node, "bystander", lambda p: p["status"].get("phase") == "Running",
                             timeout=60, what="Running")
    before = cstatus(running, "main")["containerID"]
    killed_before = _kubelet_log(node).count("leaked shim killed")
    try:
        cid, shim_pid = await _leak_a_shim(node)
        shim = psutil.Process(shim_pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and shim.is_running() and shim.status() != psutil.STATUS_ZOMBIE:
            await asyncio.sleep(0.2)
        assert not shim.is_running() or shim.status() == psutil.STATUS_ZOMBIE, node.log_tail(40)
        lines = [x for x in _kubelet_log(node).splitlines() if "leaked shim killed" in x][killed_before:]
        assert len(lines) == 1 and f"pid={shim_pid} id={cid} " in lines[0], lines
        now = await client.get("pods", "bystander", namespace=ns)
        cs = cstatus(now, "main")
        assert (cs["containerID"], cs["restartCount"]) == (before, 0), now["status"]
    finally:
        for s in _our_shims(node):
            if s.id.startswith("kptnode-leak-"):
                kill_shim(s)
        rt = make_runtime(KubeletConfig(container_runtime_endpoint=node.socket))
        for c in await rt.list_containers(reap=False):
            if c.id.startswith("kptnode-leak-"):
                await rt.remove(c.id)
        await client.delete("pods", "bystander", namespace=ns)


async def test_pod_deleted_while_kubelet_away_is_stopped_then_confirmed(kubelet_node: KubeletNode, client: Client):
    node, ns = kubelet_node, kubelet_node.test_ns
    await client.create("pods", pod(node, "away", [{"name": "main", "command": ["sleep", "3600"]}]), namespace=ns)
    running = await wait_for(client, node, "away", lambda p: p["status"].get("phase") == "Running",
                             timeout=60, what="Running")
    cid = cstatus(running, "main")["containerID"].removeprefix("containerd://")
    node.stop_kubelet()
    try:
        await client.delete("pods", "away", namespace=ns)   # the pod's grace period (2 s)
        await asyncio.sleep(4.0)                            # longer than the grace period
        p = await client.get("pods", "away", namespace=ns)
        assert p["metadata"].get("deletionTimestamp"), p["metadata"]
        assert any(line.split()[:1] == [cid] and "RUNNING" in line for line in node.ctr("tasks", "ls").splitlines())
    finally:
        node.start_kubelet()
    deadline = time.monotonic() + 60
    gone = False
    while time.monotonic() < deadline and not gone:
        try:
            await client.get("pods", "away", namespace=ns)
            await asyncio.sleep(0.2)
        except NotFoundError:
            gone = True
    assert gone, node.log_tail(40)
    # Confirmed only after the container stopped: its task and container are gone from containerd.
    assert cid not in node.ctr("tasks", "ls") and cid not in node.ctr("containers", "ls", "-q")
    log = sorted(node.tmp.glob("kubelet-*.log"))[-1].read_text(errors="replace")   # this start's log
    assert "pod terminating pod=" + f"{ns}/away" in log and f"pod deleted pod={ns}/away" in log
    assert log.index(f"pod terminating pod={ns}/away") < log.index(f"pod deleted pod={ns}/away")
