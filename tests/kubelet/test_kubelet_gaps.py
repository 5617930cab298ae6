"""The kubelet end to end, the parts test_kubelet_e2e.py leaves out.

Images (ErrImagePull → ImagePullBackOff, ErrImageNeverPull, IfNotPresent
with a present image), tcpSocket readiness and startup probes, containers
that exit while the kubelet is down, ``kubectl logs --previous`` /
``logs -f`` / ``exec -it`` through the real kubelet, and deleting a pod in
CrashLoopBackOff. This module gets its own kubelet node (the fixtures are
module-scoped). All traffic stays on loopback or inside the test's netns:
the unpullable image names a registry on 127.0.0.1:1 (refused at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import select
import shlex
import subprocess
import threading
import time
from typing import Any

import pytest

from kubepy.client import Client, NotFoundError
from tests.e2e.conftest import KUBECTL
from tests.kubelet.conftest import KubeletNode
from tests.kubelet.test_kubelet_e2e import cond, cstatus, delete_and_wait_gone, leftovers, pod, wait_for

pytestmark = pytest.mark.slow


SLEEPER = "trap 'exit 0' TERM; while true; do sleep 1; done"


def waiting_reason(p: dict[str, Any], name: str) -> str | None:
    try:
        return (cstatus(p, name)["state"].get("waiting") or {}).get("reason")
    except StopIteration:
        return None


async def events_of(client: Client, node: KubeletNode, name: str) -> list[dict[str, Any]]:
    items = (await client.list("events", namespace=node.test_ns))["items"]
    return sorted((e for e in items if e["involvedObject"]["name"] == name),
                  key=lambda e: (e.get("firstTimestamp") or "", e["metadata"].get("creationTimestamp") or ""))


async def wait_events(client: Client, node: KubeletNode, name: str, check: Any, timeout: float = 15.0,
                      what: str = "") -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    evs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        evs = await events_of(client, node, name)
        if check(evs):
            return evs
        await asyncio.sleep(0.3)
    raise AssertionError(f"events of {name}: {what} not seen in {timeout}s: "
                         f"{[(e['reason'], e['message']) for e in evs]}")


# 90 s: these tests check what the pods did, not how fast they go. A starved host has made one
# `ctr tasks delete --force` take 26 s (CI, 2026-12-07), which a 30 s budget for three pods did not cover.
async def delete_all(client: Client, node: KubeletNode, names: list[str], timeout: float = 90.0) -> None:
    for n in names:
        with contextlib.suppress(NotFoundError):
            await client.delete("pods", n, namespace=node.test_ns)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = {p["metadata"]["name"] for p in (await client.list("pods", namespace=node.test_ns))["items"]}
        if not left & set(names):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"pods {sorted(left & set(names))} not finalized\n{node.log_tail()}")


def task_status(node: KubeletNode, cid: str) -> str | None:
    for line in node.ctr("tasks", "ls").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[0] == cid:
            return parts[2]
    return None


def pod_containers(node: KubeletNode, uid: str) -> list[str]:
    return node.ctr("containers", "ls", "-q", f'labels."io.kubernetes.pod.uid"=={uid}').split()


def snapshot_keys(node: KubeletNode) -> list[str]:
    return [line.split()[0] for line in node.ctr("snapshots", "ls").splitlines()[1:] if line.strip()]


# -- 1. images -----------------------------------------------------------------------

async def watch_pod(client: Client, node: KubeletNode, name: str, rv: str, until: Any,
                    timeout: float) -> list[tuple[float, dict[str, Any]]]:
    """Every version of pod ``name`` after ``rv`` (with the time it was seen) until ``until(obj)``."""
    seen: list[tuple[float, dict[str, Any]]] = []

    async def run() -> None:
        nonlocal rv
        while True:
            async for ev in client.watch("pods", namespace=node.test_ns, resource_version=rv,
                                         timeout_seconds=int(timeout) + 5):
                obj = ev["object"]
                rv = obj["metadata"].get("resourceVersion", rv)
                if ev["type"] in ("ADDED", "MODIFIED") and obj["metadata"]["name"] == name:
                    seen.append((time.monotonic(), obj))
                    if until(obj):
                        return

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        raise AssertionError(f"pod {name}: watched states {[waiting_reason(o, 'main') for _, o in seen]}, "
                             f"the awaited one not reached in {timeout}s\n{node.log_tail(60)}") from None
    return seen


async def test_image_pull_errors_never_pull_and_present_image(kubelet_node: KubeletNode, client: Client):
    node = kubelet_node
    ns = node.test_ns
    bad_ref = "127.0.0.1:1/nothing:1"       # a registry nobody serves: connection refused, on loopback
    missing = "kubepy.local/missing:1"
    created = await client.create("pods", pod(node, "pullfail", [{"name": "main", "image": bad_ref,
                                                                  "imagePullPolicy": "IfNotPresent"}]), namespace=ns)
    n_errpull = 0

    def second_errpull(obj: dict[str, Any]) -> bool:
        nonlocal n_errpull
        reason = waiting_reason(obj, "main")
        if (reason, n_errpull % 2) in (("ErrImagePull", 0), ("ImagePullBackOff", 1)):
            n_errpull += 1
        return n_errpull == 3        # ErrImagePull, ImagePullBackOff, ErrImagePull (after the back-off)

    watcher = asyncio.create_task(watch_pod(client, node, "pullfail", created["metadata"]["resourceVersion"],
                                            second_errpull, timeout=40))
    for p in (pod(node, "neverpull", [{"name": "main", "image": missing, "imagePullPolicy": "Never"}]),
              pod(node, "present", [{"name": "main", "command": ["sh", "-c", SLEEPER],
                                     "imagePullPolicy": "IfNotPresent"}])):
        await client.create("pods", p, namespace=ns)

    # imagePullPolicy Never and no such image: ErrImageNeverPull, never a pull.
    never = await wait_for(client, node, "neverpull", lambda p: waiting_reason(p, "main") == "ErrImageNeverPull",
                           what="ErrImageNeverPull")
    assert cstatus(never, "main")["state"]["waiting"]["message"] == \
        f'Container image "{missing}" is not present with pull policy of Never'
    assert never["status"]["phase"] == "Pending"
    evs = await wait_events(client, node, "neverpull", lambda evs: any(e["reason"] == "ErrImageNeverPull"
                                                                       for e in evs), what="ErrImageNeverPull")
    assert not [e for e in evs if e["reason"] in ("Pulling", "Pulled", "Started")], evs
    assert next(e for e in evs if e["reason"] == "ErrImageNeverPull")["type"] == "Warning"

    # IfNotPresent with the imported busybox: started at once, no pull.
    present = await wait_for(client, node, "present", lambda p: p["status"].get("phase") == "Running",
                             what="Running")
    assert "running" in cstatus(present, "main")["state"]
    evs = await wait_events(client, node, "present", lambda evs: any(e["reason"] == "Started" for e in evs),
                            what="Started")
    pulled = [e["message"] for e in evs if e["reason"] == "Pulled"]
    assert pulled == ['Container image "busybox:1.36" already present on machine'], pulled
    assert not [e for e in evs if e["reason"] == "Pulling"], evs

    # The unpullable image: ErrImagePull (with the registry's error), then ImagePullBackOff while the
    # 10s back-off runs, then ErrImagePull again from the next attempt - never Running.
    seen = await watcher
    reasons = [(t, waiting_reason(o, "main"), o) for t, o in seen if waiting_reason(o, "main")]
    first = next(r for r in reasons if r[1] == "ErrImagePull")
    backoff = next(r for r in reasons if r[1] == "ImagePullBackOff")
    again = reasons[-1]
    assert first[0] < backoff[0] < again[0] and again[1] == "ErrImagePull", [r[1] for r in reasons]
    w = cstatus(first[2], "main")["state"]["waiting"]
    assert w["message"].startswith(f'Failed to pull image "{bad_ref}": '), w
    assert "connection refused" in w["message"], w
    assert cstatus(backoff[2], "main")["state"]["waiting"]["message"] == f'Back-off pulling image "{bad_ref}"'
    assert again[0] - first[0] >= 8.0, again[0] - first[0]    # the back-off was waited out
    for _, reason, o in reasons:
        assert o["status"].get("phase") == "Pending" and cstatus(o, "main")["ready"] is False, o["status"]
        assert reason in ("ContainerCreating", "ErrImagePull", "ImagePullBackOff"), reason
    evs = await wait_events(client, node, "pullfail", lambda evs: sum(
        e.get("count") or 1 for e in evs if e["reason"] == "Pulling") >= 2, what="two Pulling")
    msgs = {(e["type"], e["reason"], e["message"]) for e in evs}
    assert ("Warning", "Failed", "Error: ErrImagePull") in msgs, msgs
    assert ("Normal", "Pulling", f'Pulling image "{bad_ref}"') in msgs, msgs
    assert ("Normal", "BackOff", f'Back-off pulling image "{bad_ref}"') in msgs, msgs

    # The Never pod is still waiting after all that.
    obj = await client.get("pods", "neverpull", namespace=ns)
    assert waiting_reason(obj, "main") == "ErrImageNeverPull" and obj["status"]["phase"] == "Pending"

    await delete_all(client, node, ["pullfail", "neverpull", "present"])


# -- 2. probes ---------------------------------------------------------------------------

async def test_tcp_readiness_and_startup_probe(kubelet_node: KubeletNode, client: Client):
    node = kubelet_node
    ns = node.test_ns
    t0 = time.monotonic()
    pods = [
        # a persistent TCP server on 9000: the tcpSocket probe connects, the pod becomes Ready
        pod(node, "tcpok", [{"name": "main", "command": ["nc", "-ll", "-p", "9000", "-e", "cat"],
                             "ports": [{"containerPort": 9000, "name": "echo"}],
                             "readinessProbe": {"tcpSocket": {"port": "echo"}, "periodSeconds": 1}}]),
        # nobody listens on 9001: never Ready
        pod(node, "tcpno", [{"name": "main", "command": ["sh", "-c", SLEEPER],
                             "readinessProbe": {"tcpSocket": {"port": 9001}, "periodSeconds": 1}}]),
        # startup: /tmp/started appears after 3s; liveness (failureThreshold 1) and readiness would
        # fail before that - the startup probe must hold them back.
        pod(node, "slowstart", [{
            "name": "main", "command": ["sh", "-c", f"sleep 3; touch /tmp/started; {SLEEPER}"],
            "startupProbe": {"exec": {"command": ["test", "-f", "/tmp/started"]}, "periodSeconds": 1,
                             "failureThreshold": 30},
            "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/started"]}, "periodSeconds": 1,
                              "failureThreshold": 1},
            "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/started"]}, "periodSeconds": 1}}]),
    ]
    for p in pods:
        await client.create("pods", p, namespace=ns)

    ready = await wait_for(client, node, "tcpok", lambda p: cond(p, "Ready") == "True", what="Ready")
    cs = cstatus(ready, "main")
    assert cs["ready"] is True and cs["restartCount"] == 0 and "running" in cs["state"]

    # Before the file exists: running, not started, not ready, and no restart.
    early = await wait_for(client, node, "slowstart", lambda p: "running" in cstatus(p, "main")["state"],
                           what="running")
    started_at = time.monotonic()
    assert cstatus(early, "main")["started"] is False and cond(early, "Ready") != "True"
    slow = await wait_for(client, node, "slowstart", lambda p: cond(p, "Ready") == "True", timeout=20,
                          what="Ready after the startup probe")
    became_ready = time.monotonic()
    cs = cstatus(slow, "main")
    assert cs["started"] is True and cs["ready"] is True and cs["restartCount"] == 0, cs
    # the container reports running before Ready; the file came after 3s of sleep
    assert became_ready - t0 >= 3.0, became_ready - t0
    assert became_ready - started_at >= 1.0, (started_at - t0, became_ready - t0)
    evs = await events_of(client, node, "slowstart")
    unhealthy = [e["message"] for e in evs if e["reason"] == "Unhealthy"]
    assert any(m.startswith("Startup probe failed") for m in unhealthy), unhealthy
    assert not [m for m in unhealthy if not m.startswith("Startup")], unhealthy   # liveness/readiness held back
    assert not [e for e in evs if e["reason"] == "Killing"], evs

    # still fine a little later (liveness now runs and succeeds)
    await asyncio.sleep(2)
    slow = await client.get("pods", "slowstart", namespace=ns)
    assert cstatus(slow, "main")["restartCount"] == 0 and cond(slow, "Ready") == "True"

    no = await client.get("pods", "tcpno", namespace=ns)
    assert no["status"]["phase"] == "Running" and cond(no, "Ready") == "False", no["status"]
    assert cstatus(no, "main")["ready"] is False
    evs = await events_of(client, node, "tcpno")
    assert any(e["reason"] == "Unhealthy" and e["message"].startswith("Readiness probe failed")
               and "refused" in e["message"].lower() for e in evs), [(e["reason"], e["message"]) for e in evs]

    await delete_all(client, node, ["tcpok", "tcpno", "slowstart"])


# -- 3. containers that exit while the kubelet is down -----------------------------------------------------

async def test_container_exits_while_kubelet_is_down(kubelet_node: KubeletNode, client: Client):
    node = kubelet_node
    ns = node.test_ns
    pods = [pod(node, "onfail", [{"name": "main", "command": ["sh", "-c", "echo up; sleep 7; exit 2"]}],
                restartPolicy="OnFailure"),
            pod(node, "never0", [{"name": "main", "command": ["sh", "-c", "sleep 7; exit 0"]}],
                restartPolicy="Never")]
    for p in pods:
        await client.create("pods", p, namespace=ns)
    cids = {}
    for name in ("onfail", "never0"):
        obj = await wait_for(client, node, name, lambda p: p["status"].get("phase") == "Running", what="Running")
        cids[name] = cstatus(obj, "main")["containerID"].removeprefix("containerd://")
    node.stop_kubelet()
    try:
        for name, cid in cids.items():
            assert task_status(node, cid) == "RUNNING", (name, node.ctr("tasks", "ls"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(task_status(node, cid) == "RUNNING" for cid in cids.values()):
            await asyncio.sleep(0.2)
        assert {task_status(node, cid) for cid in cids.values()} == {"STOPPED"}, node.ctr("tasks", "ls")
        # nobody told the API server: it still says Running
        for name in cids:
            assert (await client.get("pods", name, namespace=ns))["status"]["phase"] == "Running"
    finally:
        node.start_kubelet()

    onfail = await wait_for(client, node, "onfail", lambda p: cstatus(p, "main")["restartCount"] >= 1
                            and "terminated" in cstatus(p, "main")["lastState"], timeout=30,
                            what="restart after the kubelet came back")
    cs = cstatus(onfail, "main")
    assert cs["lastState"]["terminated"]["exitCode"] == 2 and cs["lastState"]["terminated"]["reason"] == "Error"
    assert cs["lastState"]["terminated"]["containerID"] == f"containerd://{cids['onfail']}"
    assert cs["containerID"] != f"containerd://{cids['onfail']}"
    assert onfail["status"]["phase"] == "Running"

    never0 = await wait_for(client, node, "never0", lambda p: p["status"].get("phase") == "Succeeded",
                            timeout=30, what="Succeeded after the kubelet came back")
    cs = cstatus(never0, "main")
    term = cs["state"]["terminated"]
    assert (term["exitCode"], term["reason"], cs["restartCount"]) == (0, "Completed", 0), cs
    assert term["containerID"] == f"containerd://{cids['never0']}"
    assert cond(never0, "Ready") == "False"

    await delete_all(client, node, ["onfail", "never0"])


async def test_dead_sandbox_restarts_the_pod_and_counts_on(kubelet_node: KubeletNode, client: Client):
    """What a node reboot does to a pod, in small: its sandbox is gone. The kubelet starts it again
    in a new sandbox, and the container's restartCount counts on (as in Kubernetes)."""
    from kubepy.kubelet.pods import container_id_for

    node = kubelet_node
    await client.create("pods", pod(node, "rebooted", [{"name": "main", "command": ["sh", "-c", SLEEPER]}]),
                        namespace=node.test_ns)
    first = await wait_for(client, node, "rebooted", lambda p: cond(p, "Ready") == "True", what="Ready")
    old_cid = cstatus(first, "main")["containerID"]
    prefix = container_id_for(node.test_ns, "rebooted", "pause").rsplit("_", 1)[0] + "_"
    [sandbox] = [c for c in node.ctr("containers", "ls", "-q").split() if c.startswith(prefix)]
    assert task_status(node, sandbox) == "RUNNING", node.ctr("tasks", "ls")
    node.ctr("tasks", "kill", "--all", "-s", "SIGKILL", sandbox)
    again = await wait_for(client, node, "rebooted",
                           lambda p: cond(p, "Ready") == "True" and cstatus(p, "main")["containerID"] != old_cid,
                           timeout=60, what="Ready again in a new sandbox")
    assert cstatus(again, "main")["restartCount"] == 1, cstatus(again, "main")
    await delete_all(client, node, ["rebooted"])


# -- 4. kubectl logs --previous / -f, exec -it ----------------------------------------------------------------

def _kubectl_argv(node: KubeletNode, *args: str) -> list[str]:
    assert KUBECTL, "kubectl not found"
    return [KUBECTL, "--kubeconfig", str(node.apiserver.kubeconfig), "-n", node.test_ns, *args]


def run_on_pty(argv: list[str], timeout: float = 30.0) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as stdin/stdout/stderr; (exit code, everything it wrote)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    finally:
        os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(master, 4096)
                except OSError:          # EIO: every slave fd is closed
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(max(0.1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, out.decode(errors="replace")


async def test_kubectl_logs_previous_follow_and_exec_tty(kubelet_node: KubeletNode, client: Client):
    node = kubelet_node
    ns = node.test_ns
    counting = ("n=$(cat /d/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /d/n; echo run-$n; "
                f"if [ $n = 1 ]; then exit 1; fi; {SLEEPER}")
    pods = [
        pod(node, "prev", [{"name": "main", "command": ["sh", "-c", counting],
                            "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
            volumes=[{"name": "d", "emptyDir": {}}]),
        pod(node, "follow", [{"name": "main", "command": ["sh", "-c", "echo first; sleep 3; echo second; sleep 1"]}],
            restartPolicy="Never"),
        pod(node, "shell", [{"name": "main", "command": ["sh", "-c", SLEEPER]}]),
    ]
    for p in pods:
        await client.create("pods", p, namespace=ns)

    # logs -f: "first" at once, "second" ~3s later as it is written, then the stream ends with the container.
    await wait_for(client, node, "follow", lambda p: p["status"].get("phase") == "Running", what="Running")
    proc = await asyncio.to_thread(subprocess.Popen, _kubectl_argv(node, "logs", "-f", "follow"),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic(), line.rstrip("\n")))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        await asyncio.to_thread(proc.wait, 25)
    finally:
        if proc.poll() is None:
            proc.kill()
    t.join(5)
    ended = time.monotonic()
    assert proc.returncode == 0, (proc.returncode, proc.stderr.read() if proc.stderr else "")
    assert [text for _, text in lines] == ["first", "second"], lines
    assert lines[1][0] - lines[0][0] >= 1.5, lines       # streamed, not delivered at the end
    assert ended - lines[1][0] < 10, ended - lines[1][0]   # ended when the container exited
    done = await wait_for(client, node, "follow", lambda p: p["status"].get("phase") == "Succeeded",
                          what="Succeeded")
    assert cstatus(done, "main")["state"]["terminated"]["exitCode"] == 0

    # logs --previous after a restart: the first run's output; without it: the current run's.
    await wait_for(client, node, "prev", lambda p: cstatus(p, "main")["restartCount"] >= 1
                   and "running" in cstatus(p, "main")["state"], timeout=30, what="restarted and running")

    def kubectl(*args: str) -> subprocess.CompletedProcess:
        return node.apiserver.kubectl("-n", ns, *args, check=False)

    deadline = time.monotonic() + 10
    while True:
        cur, previous = kubectl("logs", "prev"), kubectl("logs", "prev", "--previous")
        if (cur.stdout.strip() == "run-2" and previous.stdout.strip() == "run-1") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert previous.returncode == 0 and previous.stdout == "run-1\n", previous
    assert cur.returncode == 0 and cur.stdout == "run-2\n", cur
    # no previous instance of a container that never restarted: an error, not some other output
    none = kubectl("logs", "shell", "--previous")
    assert none.returncode != 0 and "previous terminated container" in none.stderr, none

    # exec -it: a terminal on both ends, exit code and output come back
    await wait_for(client, node, "shell", lambda p: p["status"].get("phase") == "Running", what="Running")
    script = "test -t 0 && test -t 1 && echo is-a-tty; echo $((6*7)); exit 4"
    code, out = await asyncio.to_thread(run_on_pty, _kubectl_argv(node, "exec", "-it", "shell", "--",
                                                                  "sh", "-c", script))
    assert code == 4, (code, out)
    assert "is-a-tty" in out and "42" in out.split(), out
    assert "\r\n" in out, repr(out)        # the remote side is a terminal (ONLCR), not a pipe
    # the same through script(1), as a user would run it
    cmd = shlex.join(_kubectl_argv(node, "exec", "-it", "shell", "--", "sh", "-c", "echo $((6*7)); exit 4"))
    code, out = await asyncio.to_thread(run_on_pty, ["script", "-qec", cmd, "/dev/null"])
    assert code == 4 and "42" in out.split(), (code, out)

    await delete_all(client, node, ["prev", "follow", "shell"])


# -- 5. deleting a pod in CrashLoopBackOff -------------------------------------------------------------------

async def test_delete_during_crashloop_cleans_up(kubelet_node: KubeletNode, client: Client):
    node = kubelet_node
    ns = node.test_ns
    await client.create("pods", pod(node, "crashy", [{"name": "main", "command": ["sh", "-c", "echo boom; exit 1"]}]),
                        namespace=ns)
    crash = await wait_for(client, node, "crashy", lambda p: waiting_reason(p, "main") == "CrashLoopBackOff",
                           timeout=30, what="CrashLoopBackOff")
    uid, ip = crash["metadata"]["uid"], crash["status"]["podIP"]
    assert cstatus(crash, "main")["lastState"]["terminated"]["exitCode"] == 1
    before = leftovers(node, uid, ip)
    assert {"netns", "veth", "cgroups", "ipam", "pod_dir", "snapshots"} <= set(before), before
    # leftovers() matches containers by uid in their id, which kubepy's ids do not carry: by label here
    cids = pod_containers(node, uid)
    assert len(cids) >= 2, cids           # the sandbox and the dead instance of main
    assert set(cids) <= set(snapshot_keys(node)), (cids, node.ctr("snapshots", "ls"))
    assert (node.log_dir / f"{ns}_crashy_{uid}").exists()

    t0 = time.monotonic()
    await delete_and_wait_gone(client, node, "crashy", ns)
    # deleted promptly, not after the back-off ran out
    assert time.monotonic() - t0 < 8, time.monotonic() - t0
    assert leftovers(node, uid, ip) == {}
    assert pod_containers(node, uid) == [] and not set(cids) & set(node.ctr("containers", "ls", "-q").split())
    assert not set(cids) & set(snapshot_keys(node)), node.ctr("snapshots", "ls")
    assert not [c for c in cids if (node.containerd_dir / "kubepy-runtime" / "kubepy" / "rootfs" / c).exists()]
    assert not (node.log_dir / f"{ns}_crashy_{uid}").exists()
