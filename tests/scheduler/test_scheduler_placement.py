"""The scheduler loop on the in-memory FakeAPI with 60 nodes in 3 zones:
ReplicaSet pods are spread by the system default constraints (one per node,
zones balanced), hard anti-affinity by zone places one pod per zone and
leaves the rest Pending with Kubernetes' message, and a pod waiting for its
affinity peer is placed once the peer is."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from kubepy.scheduler import scheduler as scheduler_module
from kubepy.scheduler.scheduler import Scheduler
from kubepy.testing.fakeapi import FakeAPI

ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"


def node(i: int) -> dict[str, Any]:
    return {"metadata": {"name": f"n{i:02}", "labels": {HOST: f"n{i:02}", ZONE: f"z{i % 3}"}},
            "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}], **spec}}


def anti(**match: str) -> dict:
    return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": match}, "topologyKey": ZONE}]}}


async def wait_for(check, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = check()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out: {got!r}")
        await asyncio.sleep(0.05)


# "off": where numpy cannot load (scheduler.node_columns), every node is judged in Python: same placements.
@pytest.mark.parametrize("columns", ["on", "off"])
async def test_spreading_anti_affinity_and_affinity_through_the_loop(columns: str, monkeypatch) -> None:
    if columns == "off":
        monkeypatch.setattr(scheduler_module, "node_columns", lambda: None)
    api = FakeAPI(seed=1)
    for i in range(60):
        api.seed("nodes", node(i))
    api.seed("namespaces", {"metadata": {"name": "default"}})
    rs = api.seed("replicasets", {"metadata": {"name": "web-1", "namespace": "default"},
                                  "spec": {"selector": {"matchLabels": {"app": "web", "pod-template-hash": "1"}}}})
    for i in range(30):
        p = pod(f"web-{i}", {"app": "web", "pod-template-hash": "1"})
        p["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                                             "uid": rs["metadata"]["uid"], "controller": True}]
        api.seed("pods", p)
    for i in range(5):
        api.seed("pods", pod(f"db-{i}", {"app": "db"}, affinity=anti(app="db")))
    follower = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": HOST}]}}
    api.seed("pods", pod("follower", {"app": "f"}, affinity=follower))

    scheduler = Scheduler(api)
    assert (scheduler._columns is not None) == (columns == "on")
    task = asyncio.create_task(scheduler.run())
    try:
        def bound(prefix: str) -> list[dict]:
            return [p for p in api.objects("pods", "default")
                    if p["metadata"]["name"].startswith(prefix) and p["spec"].get("nodeName")]

        web = await wait_for(lambda: (b := bound("web-")) and len(b) == 30 and b)
        per_node = Counter(p["spec"]["nodeName"] for p in web)
        assert max(per_node.values()) == 1
        per_zone = Counter(f"z{int(n[1:]) % 3}" for n in per_node.elements())
        assert sorted(per_zone.values()) == [10, 10, 10]

        db = await wait_for(lambda: (b := bound("db-")) and len(b) == 3 and b)
        assert len({int(p["spec"]["nodeName"][1:]) % 3 for p in db}) == 3

        def pending_messages() -> list[str]:
            return [c["message"] for p in api.objects("pods", "default")
                    if p["metadata"]["name"].startswith("db-") and not p["spec"].get("nodeName")
                    for c in (p.get("status") or {}).get("conditions") or () if c["type"] == "PodScheduled"]
        messages = await wait_for(lambda: (m := pending_messages()) and len(m) == 2 and m)
        assert set(messages) == {"0/60 nodes are available: 60 node(s) didn't match pod anti-affinity rules. "
                                 "preemption: 0/60 nodes are available: 60 No preemption victims found for "
                                 "incoming pod."}
        assert not bound("follower")
        # The peer arrives (bound by its own nodeName): the follower is retried and joins it.
        await api.create("pods", {**pod("cache", {"app": "cache"}), "spec": {
            **pod("cache", {})["spec"], "nodeName": "n42"}}, namespace="default")
        follower_pod = await wait_for(lambda: bound("follower"), timeout=15)
        assert follower_pod[0]["spec"]["nodeName"] == "n42"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await api.close()
