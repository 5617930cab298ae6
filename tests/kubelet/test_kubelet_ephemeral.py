"""Ephemeral containers end to end: stock kubectl → API server → a real kubelet → containerd.

``kubectl debug POD --image=busybox:1.36 --target=app`` adds a container to a
running pod through ``pods/ephemeralcontainers``; the kubelet starts it in
the pod's sandbox (network, IPC, UTS) and, with a target, in the target's
PID namespace. One kubelet (the module fixture ``kubelet_node``) serves
every test; every pod lives in the fixture's own ``kptest-<rand>``
namespace, which the fixture's cleanup removes with the whole node even
when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from typing import Any

import pytest

from kubepy.client import Client
from tests.kubelet.conftest import KubeletNode
from tests.kubelet.test_kubelet_e2e import delete_and_wait_gone, leftovers, pod, wait_for

pytestmark = pytest.mark.slow
MARK = "31337"   # the target's distinctive process: `sleep 31337`


def kubectl(node: KubeletNode, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return node.apiserver.kubectl("-n", node.test_ns, *args, check=check, timeout=120)


def ephemeral_status(p: dict[str, Any], name: str) -> dict[str, Any]:
    return next((s for s in (p.get("status") or {}).get("ephemeralContainerStatuses") or [] if s["name"] == name), {})


def terminated(name: str):
    return lambda p: "terminated" in ephemeral_status(p, name).get("state", {})


async def logs_of(node: KubeletNode, pod_name: str, container: str) -> str:
    cp = kubectl(node, "logs", pod_name, "-c", container)
    return cp.stdout


async def test_kubectl_debug_targets_a_container_then_the_pod_goes_without_a_trace(kubelet_node: KubeletNode,
                                                                                  client: Client):
    node = kubelet_node
    name = "ephem-target"
    await client.create("pods", pod(node, name, [{"name": "app", "command": ["sleep", MARK]}]),
                        namespace=node.test_ns)
    await wait_for(client, node, name, lambda p: p["status"].get("phase") == "Running", what="Running", timeout=60)

    debug = kubectl(node, "debug", name, "--image=busybox:1.36", "--target=app", "-c", "dbg", "--", "ps")
    assert 'Targeting container "app"' in debug.stderr + debug.stdout, debug
    p = await wait_for(client, node, name, terminated("dbg"), what="dbg terminated", timeout=60)
    out = await logs_of(node, name, "dbg")
    assert f"sleep {MARK}" in out, out   # the target's process, seen from its PID namespace

    got = json.loads(kubectl(node, "get", "pod", name, "-o", "json").stdout)
    dbg = ephemeral_status(got, "dbg")
    assert dbg["state"]["terminated"]["exitCode"] == 0 and dbg["state"]["terminated"]["reason"] == "Completed"
    assert dbg["restartCount"] == 0 and dbg["ready"] is False and dbg["containerID"].startswith("containerd://")
    assert got["status"]["phase"] == "Running"
    assert [c["name"] for c in got["spec"]["ephemeralContainers"]] == ["dbg"]
    assert got["spec"]["ephemeralContainers"][0]["targetContainerName"] == "app"

    # A second one, without a target: its own PID namespace, but the pod's network and hostname.
    kubectl(node, "debug", name, "--image=busybox:1.36", "-c", "dbg2", "--",
            "sh", "-c", "ps; echo host=$(hostname); ip -o -4 addr")
    p = await wait_for(client, node, name, terminated("dbg2"), what="dbg2 terminated", timeout=60)
    out = await logs_of(node, name, "dbg2")
    assert MARK not in out and "ps" in out, out
    assert f"host={name}" in out and p["status"]["podIP"] in out, out
    assert ephemeral_status(p, "dbg2")["state"]["terminated"]["exitCode"] == 0
    # Never restarted: dbg is the same container, ended once, many syncs later.
    assert ephemeral_status(p, "dbg")["containerID"] == dbg["containerID"]
    assert ephemeral_status(p, "dbg")["restartCount"] == 0

    # Existing ones may not be changed; an ephemeral container may have no ports (Kubernetes' 422s).
    changed = kubectl(node, "patch", "pod", name, "--subresource=ephemeralcontainers", "-p",
                      json.dumps({"spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox:1.37"}]}}),
                      check=False)
    assert changed.returncode != 0
    assert f'The Pod "{name}" is invalid: spec.ephemeralContainers: Forbidden: existing ephemeral containers ' \
           '"dbg" may not be changed' in changed.stderr, changed.stderr
    ported = kubectl(node, "patch", "pod", name, "--subresource=ephemeralcontainers", "-p", json.dumps(
        {"spec": {"ephemeralContainers": [{"name": "dbg3", "image": "busybox:1.36",
                                           "ports": [{"containerPort": 80}]}]}}), check=False)
    assert ported.returncode != 0
    # Without $setElementOrder a strategic merge patch puts its new items first, as Kubernetes' does.
    assert 'spec.ephemeralContainers[0].ports: Forbidden: cannot be set for an Ephemeral Container' \
        in ported.stderr, ported.stderr

    # A long-running one is stopped with the pod; nothing of the pod stays behind.
    kubectl(node, "debug", name, "--image=busybox:1.36", "--target=app", "-c", "dbg4", "--", "sleep", "3600")
    p = await wait_for(client, node, name, lambda p: "running" in ephemeral_status(p, "dbg4").get("state", {}),
                       what="dbg4 running", timeout=60)
    uid, ip = p["metadata"]["uid"], p["status"]["podIP"]
    assert len(node.ctr("containers", "ls", "-q", f'labels."io.kubernetes.pod.uid"=={uid}').split()) == 5
    await delete_and_wait_gone(client, node, name, node.test_ns, timeout=60)
    assert leftovers(node, uid, ip) == {}


async def test_a_debug_container_waits_for_a_target_that_is_not_running(kubelet_node: KubeletNode,
                                                                        client: Client):
    """Kubernetes' CreateContainerConfigError "unable to find target container", until the target runs."""
    node = kubelet_node
    name = "ephem-waits"
    spec = pod(node, name, [{"name": "app", "command": ["sleep", MARK]}],
               initContainers=[{"name": "setup", "command": ["true"]}])
    await client.create("pods", spec, namespace=node.test_ns)
    await wait_for(client, node, name, lambda p: p["status"].get("phase") == "Running", what="Running", timeout=60)
    # The init container has exited: as a target it is not running.
    kubectl(node, "debug", name, "--image=busybox:1.36", "--target=setup", "-c", "dbg", "--", "ps")
    p = await wait_for(client, node, name, lambda p: ephemeral_status(p, "dbg").get("state", {}).get("waiting"),
                       what="dbg waiting", timeout=60)
    waiting = ephemeral_status(p, "dbg")["state"]["waiting"]
    assert waiting == {"reason": "CreateContainerConfigError", "message": "unable to find target container setup"}
    events = (await client.list("events", namespace=node.test_ns))["items"]
    assert any(e["involvedObject"]["name"] == name and e["reason"] == "Failed"
               and "unable to find target container setup" in e["message"] for e in events)
    await delete_and_wait_gone(client, node, name, node.test_ns, timeout=60)


async def test_a_debug_container_is_not_restarted_in_a_new_sandbox(kubelet_node: KubeletNode, client: Client):
    """The sandbox dies (a node reboot, in small): the pod starts again in a new one, its
    running debug container is stopped with the old one and stays as it ended."""
    from kubepy.kubelet.pods import container_id_for

    node = kubelet_node
    name = "ephem-resandboxed"
    await client.create("pods", pod(node, name, [{"name": "app", "command": ["sleep", MARK]}]),
                        namespace=node.test_ns)
    await wait_for(client, node, name, lambda p: p["status"].get("phase") == "Running", what="Running", timeout=60)
    kubectl(node, "debug", name, "--image=busybox:1.36", "--target=app", "-c", "dbg", "--", "sleep", "3600")
    p = await wait_for(client, node, name, lambda p: "running" in ephemeral_status(p, "dbg").get("state", {}),
                       what="dbg running", timeout=60)
    dbg_cid = ephemeral_status(p, "dbg")["containerID"]
    app_cid = next(c for c in p["status"]["containerStatuses"] if c["name"] == "app")["containerID"]
    prefix = container_id_for(node.test_ns, name, "pause").rsplit("_", 1)[0] + "_"
    [sandbox] = [c for c in node.ctr("containers", "ls", "-q").split() if c.startswith(prefix)]
    node.ctr("tasks", "kill", "--all", "-s", "SIGKILL", sandbox)

    def app_again(p: dict[str, Any]) -> bool:
        app = next(c for c in p["status"]["containerStatuses"] if c["name"] == "app")
        return app["containerID"] != app_cid and "running" in app["state"] and terminated("dbg")(p)

    p = await wait_for(client, node, name, app_again, what="app again in a new sandbox, dbg ended", timeout=60)
    dbg = ephemeral_status(p, "dbg")
    assert dbg["containerID"] == dbg_cid and dbg["restartCount"] == 0, dbg
    uid = p["metadata"]["uid"]
    dbg_containers = node.ctr("containers", "ls", "-q", f'labels."io.kubernetes.pod.uid"=={uid},'
                              'labels."io.kubernetes.container.name"==dbg').split()   # "," is "and"
    assert dbg_containers == [dbg_cid.removeprefix("containerd://")]
    await delete_and_wait_gone(client, node, name, node.test_ns, timeout=60)
    assert leftovers(node, uid, p["status"].get("podIP", "")) == {}


async def test_kubectl_debug_node_still_works(kubelet_node: KubeletNode, client: Client):
    """``kubectl debug node/NAME`` makes an ordinary pod (host namespaces, / at /host): untouched by this work."""
    node = kubelet_node
    before = {p["metadata"]["name"] for p in (await client.list("pods", namespace=node.test_ns))["items"]}
    out = kubectl(node, "debug", f"node/{node.name}", "--image=busybox:1.36", "--", "sh", "-c",
                  "test -d /host/proc && echo node-debug-ok")
    assert "Creating debugging pod" in out.stdout + out.stderr, out
    deadline = time.monotonic() + 30
    created: list[str] = []
    while time.monotonic() < deadline and not created:
        created = [p["metadata"]["name"] for p in (await client.list("pods", namespace=node.test_ns))["items"]
                   if p["metadata"]["name"] not in before]
        await asyncio.sleep(0.3)
    assert len(created) == 1 and created[0].startswith(f"node-debugger-{node.name}-")
    name = created[0]
    p = await wait_for(client, node, name, lambda p: p["status"].get("phase") == "Succeeded", what="Succeeded",
                       timeout=60)
    assert p["spec"]["hostNetwork"] is True and "ephemeralContainers" not in p["spec"]
    assert "node-debug-ok" in await logs_of(node, name, "debugger")
    await delete_and_wait_gone(client, node, name, node.test_ns, timeout=60)


async def test_kubectl_debug_i_is_interactive_in_the_targets_pid_namespace(kubelet_node: KubeletNode,
                                                                          client: Client):
    """`kubectl debug -i --target` creates a stdin container and attaches to it: the
    commands piped in run beside the target's processes (pods/attach on an ephemeral
    container)."""
    node = kubelet_node
    name = "ephem-interactive"
    await client.create("pods", pod(node, name, [{"name": "app", "command": ["sleep", MARK]}]),
                        namespace=node.test_ns)
    await wait_for(client, node, name, lambda p: p["status"].get("phase") == "Running", what="Running", timeout=60)
    cp = node.apiserver.kubectl("-n", node.test_ns, "debug", "-i", name, "--image=busybox:1.36", "--target=app",
                                "-c", "dbgi", "--", "sh", input="ps; echo debug-$((6*7)); exit\n", timeout=120)
    assert f"sleep {MARK}" in cp.stdout and "debug-42" in cp.stdout, cp
    p = await wait_for(client, node, name, terminated("dbgi"), what="dbgi terminated", timeout=60)
    assert ephemeral_status(p, "dbgi")["state"]["terminated"]["exitCode"] == 0
    await delete_and_wait_gone(client, node, name, node.test_ns, timeout=60)
