"""Pods of an unreachable node: evicted gracefully and left Terminating, replaced, force-deleted only by pod GC.

Pure decisions (tables): ``eviction_action`` (node lifecycle) and
``gc_reason`` (pod GC). Then the whole story in process against a real API
server with hollow nodes: a ReplicaSet's pods on two nodes that stop
heartbeating become Terminating (not gone) and stay so, the ReplicaSet
runs replacements on the live node meanwhile, and the terminating pods go
only when pod GC may end them - one node tainted out-of-service, the other
Node object deleted - never two running copies of one pod.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools

import pytest

from kubepy.controllers.nodelifecycle import (
    EVICT,
    KEEP,
    TAINT_UNREACHABLE,
    WAIT,
    NodeLifecycleController,
    eviction_action,
    rfc3339,
)
from kubepy.controllers.podgc import (
    NODE_GONE,
    OUT_OF_SERVICE,
    TAINT_OUT_OF_SERVICE,
    PodGCController,
    gc_reason,
)
from kubepy.controllers.replicaset import ReplicaSetController
from kubepy.testing.hollow import HollowCluster
from tests.controllers.conftest import controller_env, get_or_none

T0 = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
UNREACHABLE = {"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": rfc3339(T0)}
TOLERATE_10S = {"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}


def pod(*tolerations, terminating=False, node="n1"):
    meta = {"name": "p", "namespace": "ns", "uid": "u1"}
    if terminating:
        meta |= {"deletionTimestamp": rfc3339(T0), "deletionGracePeriodSeconds": 30}
    return {"metadata": meta, "spec": {"nodeName": node, "tolerations": list(tolerations)}}


@pytest.mark.parametrize("p, now, want", [
    (pod(), T0, (EVICT, 0.0)),                                             # no toleration: evict now
    (pod(TOLERATE_10S), T0 + dt.timedelta(seconds=4), (WAIT, 6.0)),        # tolerated for 6 s more
    (pod(TOLERATE_10S), T0 + dt.timedelta(seconds=10), (EVICT, 0.0)),
    (pod({"operator": "Exists"}), T0, (KEEP, 0.0)),                        # tolerated forever
    # already terminating (evicted before, or deleted by a user): never force-deleted here
    (pod(terminating=True), T0 + dt.timedelta(hours=1), (KEEP, 0.0)),
    (pod(TOLERATE_10S, terminating=True), T0 + dt.timedelta(hours=1), (KEEP, 0.0)),
])
def test_eviction_action(p, now, want):
    assert eviction_action(p, [UNREACHABLE], now) == want


def node(ready="Unknown", *taints):
    return {"metadata": {"name": "n1"}, "spec": {"taints": list(taints)},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}


OOS = {"key": TAINT_OUT_OF_SERVICE, "value": "nodeshutdown", "effect": "NoExecute"}


@pytest.mark.parametrize("p, n, want", [
    (pod(), None, NODE_GONE),                                       # bound to a node that doesn't exist
    (pod(terminating=True), None, NODE_GONE),
    ({"metadata": {"name": "p"}, "spec": {}}, None, None),          # not bound: the scheduler's
    (pod(), node("Unknown", UNREACHABLE), None),                    # unreachable, not terminating
    (pod(terminating=True), node("Unknown", UNREACHABLE), None),     # unreachable: wait for kubelet / GC
    (pod(terminating=True), node("Unknown", UNREACHABLE, OOS), OUT_OF_SERVICE),
    (pod(terminating=True), node("False", OOS), OUT_OF_SERVICE),
    (pod(), node("Unknown", OOS), None),                            # not terminating yet: eviction first
    (pod(terminating=True), node("True", OOS), None),               # a Ready node finishes it itself
])
def test_gc_reason(p, n, want):
    assert gc_reason(p, n) == want


# -- the story, in process ---------------------------------------------------------
def rs_manifest(name: str, replicas: int) -> dict:
    tolerate_1s = [{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1}]
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"tolerations": tolerate_1s, "terminationGracePeriodSeconds": 30,
                                           "containers": [{"name": "c", "image": "busybox"}]}}}}


class Binder:
    """A scheduler stand-in: binds the namespace's unbound pods to ``target``."""

    def __init__(self, client, ns: str, target: str) -> None:
        self.client, self.ns, self.target = client, ns, target

    async def run(self) -> None:
        while True:
            for p in (await self.client.list("pods", namespace=self.ns))["items"]:
                if p["spec"].get("nodeName") or p["metadata"].get("deletionTimestamp"):
                    continue
                name = p["metadata"]["name"]
                try:
                    await self.client.create("pods", {"apiVersion": "v1", "kind": "Binding",
                                                      "metadata": {"name": name},
                                                      "target": {"kind": "Node", "name": self.target}},
                                             namespace=self.ns, subresource="binding", name=name)
                except Exception:  # noqa: BLE001 - raced with a delete or another bind: next round
                    pass
            await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_pods_of_unreachable_nodes_stay_terminating_until_kubelet_or_pod_gc(apiserver, namespace):
    ns = namespace
    async with controller_env(apiserver, NodeLifecycleController, ReplicaSetController,
                              functools.partial(PodGCController, orphan_grace=1, gc_period=1),
                              node_monitor_grace_period=2, node_monitor_period=0.5) as env:
        c = env.client
        hollow = HollowCluster(c, 3, prefix=f"{ns}-h", lease_interval=0.5)
        dead_a, dead_b, alive = hollow.names
        await hollow.start()
        binder = Binder(c, ns, dead_a)
        binding = asyncio.create_task(binder.run())
        try:
            async def pods():
                return (await c.list("pods", namespace=ns))["items"]

            async def running_on(node_name, n):
                ps = [p for p in await pods() if p["spec"].get("nodeName") == node_name
                      and not p["metadata"].get("deletionTimestamp")
                      and (p.get("status") or {}).get("phase") == "Running"]
                return ps if len(ps) >= n else None

            await c.create("replicasets", rs_manifest("web", 1), namespace=ns)
            (on_a,) = await env.wait_for(lambda: running_on(dead_a, 1), timeout=30)
            binder.target = dead_b
            await c.patch("replicasets", "web", {"spec": {"replicas": 2}}, namespace=ns)
            (on_b,) = await env.wait_for(lambda: running_on(dead_b, 1), timeout=30)
            binder.target = alive
            doomed = {on_a["metadata"]["uid"]: dead_a, on_b["metadata"]["uid"]: dead_b}

            hollow.stop_heartbeat(dead_a)
            hollow.stop_heartbeat(dead_b)

            async def both_terminating():
                ps = {p["metadata"]["uid"]: p for p in await pods()}
                got = [ps.get(uid) for uid in doomed]
                return got if all(p is not None and p["metadata"].get("deletionTimestamp") for p in got) else None

            terminating = await env.wait_for(both_terminating, timeout=30, message="evicted pods Terminating")
            for p in terminating:
                assert p["metadata"]["deletionGracePeriodSeconds"] == 30   # graceful, not force-deleted
            # Events are written in the background: wait for both, one per evicted pod.
            async def eviction_events():
                events = [e for e in (await c.list("events", namespace=ns))["items"]
                          if e["reason"] == "TaintManagerEviction"]
                return events if len(events) >= 2 else None

            events = await env.wait_for(eviction_events, timeout=10, message="TaintManagerEviction events")
            assert sorted(e["involvedObject"]["uid"] for e in events) == sorted(doomed)

            # The ReplicaSet replaces them on the live node while they are still Terminating.
            await env.wait_for(lambda: running_on(alive, 2), timeout=30, message="replacements running")
            # ... and they stay Terminating: neither the node lifecycle controller nor pod GC ends them.
            await asyncio.sleep(4.0)
            still = {p["metadata"]["uid"] for p in await pods() if p["metadata"].get("deletionTimestamp")}
            assert still == set(doomed), still
            rs = await c.get("replicasets", "web", namespace=ns)
            assert rs["status"]["replicas"] == 2   # terminating pods are not counted as active

            # An admin declares dead_b out of service: pod GC force-deletes its terminating pod at once.
            node_b = await c.get("nodes", dead_b)
            node_b["spec"]["taints"] = [*(node_b["spec"].get("taints") or []),
                                        {"key": TAINT_OUT_OF_SERVICE, "value": "nodeshutdown",
                                         "effect": "NoExecute"}]
            await c.update("nodes", node_b)
            await env.wait_for(lambda: _gone(c, ns, on_b["metadata"]["name"]), timeout=15,
                               message="pod on the out-of-service node force-deleted")
            assert await get_or_none(c, "pods", on_a["metadata"]["name"], ns) is not None

            # dead_a's Node object is removed: pod GC force-deletes the pod bound to it.
            await c.delete("nodes", dead_a)
            await env.wait_for(lambda: _gone(c, ns, on_a["metadata"]["name"]), timeout=15,
                               message="pod of the removed node force-deleted")
            assert len(await running_on(alive, 2)) == 2
        finally:
            binding.cancel()
            await asyncio.gather(binding, return_exceptions=True)
            await hollow.stop()
            await c.delete("replicasets", "web", namespace=ns)
            for p in await pods():
                await c.delete("pods", p["metadata"]["name"], namespace=ns, grace_period_seconds=0)
            for name in hollow.names:
                for res, kw in (("nodes", {}), ("leases", {"namespace": "kube-node-lease"})):
                    try:
                        await c.delete(res, name, **kw)
                    except Exception:  # noqa: BLE001 - already gone
                        pass


async def _gone(client, ns, name):
    return await get_or_none(client, "pods", name, ns) is None
