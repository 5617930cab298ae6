"""Volumes inside real pods: downwardAPI and projected files, tmpfs emptyDir and /dev/shm,
emptyDir sizeLimit eviction, fsGroup ownership, subPath/subPathExpr.

One kubelet (``kubelet_node``, a real containerd) for the module. The
projected serviceAccountToken source is checked in process against a fake
TokenRequest API (tests/kubelet/test_volumes_unit.py).
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import pytest

from kubepy.client import Client
from tests.kubelet.conftest import KubeletNode
from tests.kubelet.test_kubelet_e2e import cstatus, delete_and_wait_gone, pod, runtime_exec, wait_for

pytestmark = pytest.mark.slow


def running(p: dict[str, Any]) -> bool:
    return p["status"].get("phase") == "Running" and all(
        "running" in (s.get("state") or {}) for s in p["status"].get("containerStatuses") or [{}])


def cid(p: dict[str, Any], name: str) -> str:
    return cstatus(p, name)["containerID"].removeprefix("containerd://")


def host_mounts_below(path: Path) -> list[str]:
    prefix = str(path)
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(prefix)]


async def sh(node: KubeletNode, container: str, script: str) -> str:
    return await runtime_exec(node, container, ["sh", "-c", script])


async def test_downward_api_and_projected_files(kubelet_node: KubeletNode, client: Client):
    node, ns = kubelet_node, kubelet_node.test_ns
    await client.create("configmaps", {"metadata": {"name": "pcfg"}, "data": {"a": "A", "b": "B"}}, namespace=ns)
    await client.create("secrets", {"metadata": {"name": "psec"},
                                    "data": {"pw": base64.b64encode(b"hunter2").decode()}}, namespace=ns)
    spec = pod(node, "dapi", [{
        "name": "c", "command": ["sleep", "3600"],
        "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}, "requests": {"memory": "32Mi", "cpu": "100m"}},
        "volumeMounts": [{"name": "info", "mountPath": "/etc/info"}, {"name": "all", "mountPath": "/etc/all"}],
    }], volumes=[
        {"name": "info", "downwardAPI": {"defaultMode": 0o640, "items": [
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}},
            {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}},
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}, "mode": 0o600},
            {"path": "sub/app", "fieldRef": {"fieldPath": "metadata.labels['app']"}},
            {"path": "mem_limit", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory",
                                                       "divisor": "1Mi"}},
            {"path": "cpu_request", "resourceFieldRef": {"containerName": "c", "resource": "requests.cpu",
                                                         "divisor": "1m"}}]}},
        {"name": "all", "projected": {"defaultMode": 0o444, "sources": [
            {"configMap": {"name": "pcfg", "items": [{"key": "a", "path": "cfg/a"}]}},
            {"secret": {"name": "psec", "items": [{"key": "pw", "path": "pw", "mode": 0o400}]}},
            {"configMap": {"name": "absent", "optional": True}},
            {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}}])
    spec["metadata"]["labels"] = {"app": "web", "tier": "front"}
    spec["metadata"]["annotations"] = {"note": 'say "hi"'}
    await client.create("pods", spec, namespace=ns)
    p = await wait_for(client, node, "dapi", running, what="Running")
    c, uid = cid(p, "c"), p["metadata"]["uid"]
    out = await sh(node, c, "cd /etc/info; for f in name ns uid labels annotations sub/app mem_limit cpu_request;"
                            " do cat $f; echo; done")
    assert out.splitlines() == ["dapi", ns, uid, 'app="web"', 'tier="front"', 'note="say \\"hi\\""', "web",
                                "64", "100"]
    modes = await sh(node, c, "stat -L -c '%n %a' /etc/info/name /etc/info/annotations /etc/all/cfg/a /etc/all/pw")
    assert modes.split("\n")[:4] == ["/etc/info/name 640", "/etc/info/annotations 600", "/etc/all/cfg/a 444",
                                     "/etc/all/pw 400"]
    # Kubernetes' atomic writer layout: ..data → ..<timestamp>, names are symlinks into ..data.
    layout = await sh(node, c, "cd /etc/info; readlink ..data; readlink name; readlink sub")
    stamp, name_link, sub_link = layout.split()
    assert stamp.startswith(f"..{time.gmtime().tm_year}_") and name_link == "..data/name" and sub_link == "..data/sub"
    assert (await sh(node, c, "cat /etc/all/cfg/a /etc/all/pw; echo; cat /etc/all/labels")).splitlines() == [
        "Ahunter2", 'app="web"', 'tier="front"']
    assert "ro" in (await sh(node, c, "touch /etc/info/x 2>/dev/null && echo rw || echo ro"))

    # A label change reaches both files (a new ..data directory, swapped in one rename).
    await client.patch("pods", "dapi", {"metadata": {"labels": {"tier": "back"}}}, namespace=ns)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if 'tier="back"' in await sh(node, c, "cat /etc/info/labels /etc/all/labels"):
            break
        await asyncio.sleep(0.3)
    both = await sh(node, c, "cat /etc/info/labels; echo; cat /etc/all/labels; echo; readlink /etc/info/..data")
    assert both.splitlines()[:4] == ['app="web"', 'tier="back"', 'app="web"', 'tier="back"'], both
    assert both.splitlines()[4] != stamp
    await delete_and_wait_gone(client, node, "dapi", ns)


async def test_memory_emptydir_and_pod_shm_are_tmpfs_and_go_with_the_pod(kubelet_node: KubeletNode,
                                                                         client: Client):
    node, ns = kubelet_node, kubelet_node.test_ns
    spec = pod(node, "tmpfs", [
        {"name": "a", "command": ["sleep", "3600"], "resources": {"limits": {"memory": "96Mi"}},
         "volumeMounts": [{"name": "small", "mountPath": "/small"}, {"name": "big", "mountPath": "/big"}]},
        {"name": "b", "command": ["sleep", "3600"], "resources": {"limits": {"memory": "32Mi"}}},
    ], volumes=[{"name": "small", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
                {"name": "big", "emptyDir": {"medium": "Memory"}}])
    await client.create("pods", spec, namespace=ns)
    p = await wait_for(client, node, "tmpfs", running, what="Running")
    a, b, uid = cid(p, "a"), cid(p, "b"), p["metadata"]["uid"]
    # busybox: "tmpfs on /small type tmpfs (rw,relatime,size=8192k)"
    mounts = {line.split()[2]: line for line in (await sh(node, a, "mount")).splitlines()}
    assert "type tmpfs" in mounts["/small"] and "size=8192k" in mounts["/small"], mounts["/small"]
    # No sizeLimit: the pod's memory limit (96Mi + 32Mi), as upstream sizes it.
    assert "type tmpfs" in mounts["/big"] and "size=131072k" in mounts["/big"], mounts["/big"]
    assert "type tmpfs" in mounts["/dev/shm"] and "size=65536k" in mounts["/dev/shm"], mounts["/dev/shm"]
    assert (await sh(node, a, "stat -c %a /small")).strip() == "777"
    # One /dev/shm for the pod: what one container writes the other reads.
    await sh(node, a, "echo shared > /dev/shm/x")
    assert (await sh(node, b, "cat /dev/shm/x")).strip() == "shared"
    pod_dir = node.root_dir / "pods" / uid
    assert len(host_mounts_below(pod_dir)) == 3
    await delete_and_wait_gone(client, node, "tmpfs", ns)
    assert host_mounts_below(pod_dir) == [] and not pod_dir.exists()


async def test_emptydir_over_its_size_limit_evicts_the_pod(kubelet_node: KubeletNode, client: Client):
    node, ns = kubelet_node, kubelet_node.test_ns
    spec = pod(node, "hog", [{"name": "c", "command": ["sh", "-c", "dd if=/dev/zero of=/scratch/f bs=1024 count=2048;"
                                                                    " sleep 3600"],
                              "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
               volumes=[{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}])
    await client.create("pods", spec, namespace=ns)
    p = await wait_for(client, node, "hog", lambda p: p["status"].get("phase") == "Failed", timeout=40,
                       what="Failed (evicted)")
    st = p["status"]
    assert st["reason"] == "Evicted"
    assert st["message"] == 'Usage of EmptyDir volume "scratch" exceeds the limit "1Mi". '
    dt = next(c for c in st["conditions"] if c["type"] == "DisruptionTarget")
    assert dt["status"] == "True" and dt["reason"] == "TerminationByKubelet"
    events, _ = await client.list_all("events", namespace=ns)
    assert any(e["reason"] == "Evicted" and e["involvedObject"]["name"] == "hog" for e in events)
    await wait_for(client, node, "hog", lambda p: "terminated" in cstatus(p, "c")["state"], what="container killed")
    await delete_and_wait_gone(client, node, "hog", ns)


async def test_fs_group_supplemental_groups_and_sub_paths(kubelet_node: KubeletNode, client: Client):
    node, ns = kubelet_node, kubelet_node.test_ns
    await client.create("configmaps", {"metadata": {"name": "gcfg"}, "data": {"k": "v"}}, namespace=ns)
    spec = pod(node, "fsg", [{
        "name": "c", "command": ["sleep", "3600"],
        "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "cfg", "mountPath": "/cfg"},
                         {"name": "data", "mountPath": "/mine", "subPathExpr": "per-pod/$(POD)"},
                         {"name": "data", "mountPath": "/ro", "readOnly": True},
                         {"name": "cfg", "mountPath": "/k", "subPath": "k"}]}],
        volumes=[{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "gcfg"}}],
        securityContext={"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000, "supplementalGroups": [3000],
                         "fsGroupChangePolicy": "OnRootMismatch"})
    await client.create("pods", spec, namespace=ns)
    p = await wait_for(client, node, "fsg", running, what="Running")
    c = cid(p, "c")
    ids = (await sh(node, c, "id -u; id -G")).split("\n")
    assert ids[0] == "1000" and set(ids[1].split()) == {"1000", "2000", "3000"}, ids
    st = (await sh(node, c, "stat -c '%g %a' /data; stat -L -c '%g %a' /cfg/k")).splitlines()
    assert st[0] == "2000 2777" and st[1] == "2000 644", st   # setgid dir; g+r file (644 already)
    out = await sh(node, c, "echo hi > /data/f && stat -c %g /data/f; echo x > /mine/y && cat /data/per-pod/fsg/y;"
                            " cat /k; echo; touch /ro/z 2>/dev/null && echo rw || echo ro")
    assert out.split() == ["2000", "x", "v", "ro"], out
    await delete_and_wait_gone(client, node, "fsg", ns)

    # subPath may not leave its volume: a symlink pointing out is refused, as upstream words it.
    spec = pod(node, "escape", [{"name": "c", "command": ["sleep", "3600"],
                                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
               volumes=[{"name": "data", "emptyDir": {}}],
               initContainers=[{"name": "mk", "command": ["busybox", "ln", "-s", "/", "/data/out"],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}])
    spec["spec"]["containers"][0]["volumeMounts"].append({"name": "data", "mountPath": "/x", "subPath": "out/etc"})
    spec["spec"]["containers"].append({"name": "p", "image": "busybox:1.36", "command": ["sleep", "3600"],
                                       "volumeMounts": [{"name": "data", "mountPath": "/d",
                                                         "mountPropagation": "HostToContainer"}]})
    await client.create("pods", spec, namespace=ns)

    def waiting(name: str) -> Any:
        return lambda p: (cstatus(p, name).get("state") or {}).get("waiting", {}).get(
            "reason") == "CreateContainerConfigError" if p["status"].get("containerStatuses") else False

    p = await wait_for(client, node, "escape", lambda p: waiting("c")(p) and waiting("p")(p), what="config errors")
    assert cstatus(p, "c")["state"]["waiting"]["message"] == \
        'failed to prepare subPath for volumeMount "data" of container "c"'
    assert "mountPropagation \"HostToContainer\" is not supported" in cstatus(p, "p")["state"]["waiting"]["message"]
    await delete_and_wait_gone(client, node, "escape", ns)


async def test_kubelet_start_unmounts_and_removes_what_a_vanished_pod_left(kubelet_node: KubeletNode,
                                                                           client: Client):
    node, ns = kubelet_node, kubelet_node.test_ns
    spec = pod(node, "gone", [{"name": "c", "command": ["sleep", "3600"],
                               "volumeMounts": [{"name": "m", "mountPath": "/m"}]}],
               volumes=[{"name": "m", "emptyDir": {"medium": "Memory", "sizeLimit": "4Mi"}}])
    await client.create("pods", spec, namespace=ns)
    p = await wait_for(client, node, "gone", running, what="Running")
    pod_dir = node.root_dir / "pods" / p["metadata"]["uid"]
    assert len(host_mounts_below(pod_dir)) == 2   # the Memory emptyDir and /dev/shm
    node.stop_kubelet()
    try:
        await client.delete("pods", "gone", namespace=ns, grace_period_seconds=0)   # gone while no kubelet runs
    finally:
        node.start_kubelet()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (pod_dir.exists() or host_mounts_below(pod_dir)):
        await asyncio.sleep(0.3)
    assert host_mounts_below(pod_dir) == [] and not pod_dir.exists(), node.log_tail(40)


async def test_the_service_account_volume_carries_a_working_bound_token(kubelet_node: KubeletNode, client: Client):
    """ServiceAccount admission adds kube-api-access; the kubelet fills it through TokenRequest: the token
    names the account and this pod, ca.crt is the cluster CA, and it stops working with the pod."""
    node, ns = kubelet_node, kubelet_node.test_ns
    await client.create("pods", pod(node, "sa", [{"name": "c", "command": ["sleep", "3600"]}]), namespace=ns)
    p = await wait_for(client, node, "sa", running, what="Running")
    c = cid(p, "c")
    where = "/var/run/secrets/kubernetes.io/serviceaccount"
    assert (await sh(node, c, f"cat {where}/namespace")).strip() == ns
    assert (await sh(node, c, f"cat {where}/ca.crt")).strip() == (node.apiserver.data_dir / "ca.crt").read_text().strip()
    token = (await sh(node, c, f"cat {where}/token")).strip()
    review = await client.create("tokenreviews", {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                                  "spec": {"token": token}})
    status = review["status"]
    assert status["authenticated"] is True, status
    assert status["user"]["username"] == f"system:serviceaccount:{ns}:default"
    assert status["user"]["extra"]["authentication.kubernetes.io/pod-name"] == ["sa"]
    await delete_and_wait_gone(client, node, "sa", ns)
    review = await client.create("tokenreviews", {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                                  "spec": {"token": token}})
    assert review["status"].get("authenticated") is not True
