"""Restarting containerd never restarts healthy pods (the kubelet half is in test_kubelet_e2e.py).

containerd is stopped (SIGTERM: its shims and containers keep running) and
started again on the same state dir and netns, under a running kubelet. The
kubelet's ``ctr events`` child dies with the old daemon and every ``ctr`` call
fails meanwhile: the kubelet must neither take that for dead containers nor
stay deaf to the new daemon's events.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from kubepy.client import Client
from kubepy.kubelet.containerd import Containerd
from tests.kubelet.conftest import KubeletNode
from tests.kubelet.test_kubelet_e2e import (
    cond,
    cstatus,
    node_exec,
    pod,
    wait_for,
)

pytestmark = pytest.mark.slow


def _healthy(p: dict[str, Any], cid: str) -> str | None:
    """None if the pod is Running+Ready on container ``cid`` with no restart, else what is wrong."""
    st = p.get("status") or {}
    if st.get("phase") != "Running":
        return f"phase={st.get('phase')}"
    if cond(p, "Ready") != "True" or cond(p, "ContainersReady") != "True":
        return f"Ready={cond(p, 'Ready')} ContainersReady={cond(p, 'ContainersReady')}"
    cs = cstatus(p, "httpd")
    if cs["containerID"] != cid or cs["restartCount"] != 0 or "running" not in cs["state"] or not cs["ready"]:
        return f"container={cs}"
    return None


def _ctr_events_children(pid: int) -> list[int]:
    """The pids of ``pid``'s live ``ctr ... events`` children."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_bytes().rsplit(b")", 1)[1].split()
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == pid and stat[0] != b"Z" and os.path.basename(argv[0]) == b"ctr" and b"events" in argv:
            out.append(int(d.name))
    return out


def _unix_peers(node: KubeletNode) -> dict[int, tuple[str, int]]:
    """pid -> (listening path, pid) of the other end, for connected unix sockets in the node netns."""
    by_inode: dict[str, tuple[str, str, int]] = {}   # inode -> (local path, peer inode, pid)
    for line in node_exec(node, "ss", "-xpnH").splitlines():
        parts = line.split()
        m = re.search(r"pid=(\d+)", line)
        if len(parts) < 8 or parts[0] != "u_str" or parts[1] != "ESTAB" or not m:
            continue
        # u_str ESTAB rq sq LOCAL_PATH LOCAL_INODE PEER_PATH PEER_INODE users:((...))
        by_inode[parts[5]] = (parts[4], parts[7], int(m.group(1)))
    out = {}
    for _path, peer, pid in by_inode.values():
        if peer in by_inode:
            out[pid] = (by_inode[peer][0], by_inode[peer][2])
    return out


async def test_containerd_restart_keeps_healthy_pods(kubelet_node: KubeletNode, client: Client):
    node = kubelet_node
    ns = node.test_ns
    web = pod(node, "web-ctrd", [{
        "name": "httpd",
        "command": ["sh", "-c", "echo hello-from-web > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"],
        "ports": [{"containerPort": 8080, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
    }])
    await client.create("pods", web, namespace=ns)
    ready = await wait_for(client, node, "web-ctrd", lambda p: p["status"].get("phase") == "Running"
                           and cond(p, "Ready") == "True", what="Running+Ready")
    cs = cstatus(ready, "httpd")
    cid, ip, uid = cs["containerID"], ready["status"]["podIP"], ready["metadata"]["uid"]
    assert cs["restartCount"] == 0
    assert node_exec(node, "wget", "-qO-", f"http://{ip}:8080/").strip() == "hello-from-web"
    bare_cid = cid.removeprefix("containerd://")
    assert bare_cid in node.ctr("tasks", "ls")
    assert node.proc is not None
    kubelet_pid = node.proc.pid
    subs_before = _ctr_events_children(kubelet_pid)
    assert subs_before, "kubelet has no ctr events subscription"

    # Watch the pod (as the API server sees it) from before the stop until the end.
    problems: list[str] = []
    samples = 0

    async def watch() -> None:
        nonlocal samples
        while True:
            p = await client.get("pods", "web-ctrd", namespace=ns)
            samples += 1
            if (what := _healthy(p, cid)) is not None:
                problems.append(f"t={time.monotonic() - t0:.1f}s {what}")
            await asyncio.sleep(0.2)

    t0 = time.monotonic()
    watcher = asyncio.create_task(watch())
    try:
        await asyncio.sleep(1.0)
        cd = Containerd(node.containerd_dir, netns=node.netns)
        old_pid = cd.pid
        assert old_pid is not None
        await cd.stop()
        assert cd.pid is None and not Path(node.socket).exists()   # daemon gone: every ctr call fails
        # Down for a few seconds: the kubelet's ctr calls fail (no socket), its ctr events child
        # dies and the one it starts again waits for the socket (ctr dials for up to 10 s).
        await asyncio.sleep(3.0)
        assert not watcher.done()
        # The container runs on without containerd (its shim keeps it).
        assert node_exec(node, "wget", "-qO-", f"http://{ip}:8080/").strip() == "hello-from-web"
        cd = Containerd(node.containerd_dir, netns=node.netns)
        await cd.start()
        assert cd.pid is not None and cd.pid != old_pid
        # Longer than the fixture's --sync-frequency (5s): at least two full resyncs + orphan sweeps.
        await asyncio.sleep(15.0)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert samples > 40, samples
    assert not problems, f"pod unhealthy during/after containerd restart: {problems[:10]}\n" \
                         f"--- kubelet log ---\n{node.log_tail(80)}"

    now = await client.get("pods", "web-ctrd", namespace=ns)
    assert _healthy(now, cid) is None, now["status"]
    assert cstatus(now, "httpd")["restartCount"] == 0
    assert node_exec(node, "wget", "-qO-", f"http://{ip}:8080/").strip() == "hello-from-web"
    # containerd still knows the very same container and its running task (no new instance)
    ids = node.ctr("containers", "ls", "-q", f'labels."io.kubernetes.pod.uid"=={uid}').split()
    assert [i for i in ids if "sandbox" not in i and i == bare_cid] == [bare_cid], ids
    assert any(line.split()[:1] == [bare_cid] and "RUNNING" in line for line in node.ctr("tasks", "ls").splitlines())

    # The kubelet resubscribed: its ctr events child started after the new containerd.
    # (It may have been started while containerd was down: ctr waits up to 10 s for the socket.)
    subs = _ctr_events_children(kubelet_pid)
    assert subs and not set(subs) & set(subs_before), (subs, subs_before)
    peers = _unix_peers(node)
    assert any(peers.get(p) == (node.socket, cd.pid) for p in subs), \
        (subs, cd.pid, node_exec(node, "ss", "-xpn"))

    # A new pod starts normally with the new containerd, and its exit is seen.
    t1 = time.monotonic()
    await client.create("pods", pod(node, "after-ctrd", [
        {"name": "main", "command": ["sh", "-c", "echo up; sleep 2; exit 3"]}], restartPolicy="Never"), namespace=ns)
    await wait_for(client, node, "after-ctrd", lambda p: p["status"].get("phase") == "Running", what="Running")
    t_running = time.monotonic() - t1
    done = await wait_for(client, node, "after-ctrd", lambda p: p["status"].get("phase") == "Failed",
                          what="Failed (exit 3)")
    term = cstatus(done, "main")["state"]["terminated"]
    assert (term["reason"], term["exitCode"]) == ("Error", 3)
    print(f"\nTIMING after containerd restart: new pod -> Running {t_running:.2f}s, "
          f"-> Failed {time.monotonic() - t1:.2f}s")
    # The old pod is still untouched.
    final = await client.get("pods", "web-ctrd", namespace=ns)
    assert _healthy(final, cid) is None, final["status"]
    for name in ("web-ctrd", "after-ctrd"):
        await client.delete("pods", name, namespace=ns)
