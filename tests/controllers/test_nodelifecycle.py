"""Node lifecycle: condition/taint decisions, toleration math (pure), and a silent node live."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from kubepy.client import ConflictError
from kubepy.controllers.nodelifecycle import (
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    NodeLifecycleController,
    conditions_unknown,
    desired_taints,
    eviction_time,
    rfc3339,
    tolerates,
)
from tests.controllers.conftest import controller_env, get_or_none

T0 = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)


def node(ready=None, taints=None, **conds):
    conditions = [] if ready is None else [{"type": "Ready", "status": ready, "lastHeartbeatTime": "x"}]
    conditions += [{"type": t, "status": s} for t, s in conds.items()]
    return {"metadata": {"name": "n1", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"taints": taints or []}, "status": {"conditions": conditions}}


def keys(taints):
    return sorted((t["key"], t["effect"]) for t in taints)


def test_unknown_conditions_keep_heartbeat_and_fill_missing():
    n = node("True", MemoryPressure="False")
    conds = {c["type"]: c for c in conditions_unknown(n, T0)}
    assert conds["Ready"] == {"type": "Ready", "status": "Unknown", "lastHeartbeatTime": "x",
                              "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status.",
                              "lastTransitionTime": "2024-05-01T12:00:00Z"}
    assert conds["DiskPressure"]["reason"] == "NodeStatusNeverUpdated"
    assert conds["DiskPressure"]["lastHeartbeatTime"] == "2024-05-01T11:00:00Z"
    n["status"]["conditions"] = list(conds.values())
    assert conditions_unknown(n, T0) is None


def test_taints_follow_ready():
    assert keys(desired_taints(node("Unknown"), T0)) == [(TAINT_UNREACHABLE, "NoExecute"),
                                                          (TAINT_UNREACHABLE, "NoSchedule")]
    not_ready = desired_taints(node("False", taints=[{"key": "user", "effect": "NoSchedule"}]), T0)
    assert keys(not_ready) == [(TAINT_NOT_READY, "NoExecute"), (TAINT_NOT_READY, "NoSchedule"), ("user", "NoSchedule")]
    assert [t["timeAdded"] for t in not_ready if t["effect"] == "NoExecute"] == [rfc3339(T0)]
    # Recovered: condition taints go, the user's stays; a kept taint keeps its timeAdded.
    assert keys(desired_taints(node("True", taints=not_ready), T0)) == [("user", "NoSchedule")]
    old = [{"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": "2024-01-01T00:00:00Z"}]
    again = desired_taints(node("Unknown", taints=old), T0)
    assert {t["effect"]: t.get("timeAdded") for t in again}["NoExecute"] == "2024-01-01T00:00:00Z"
    assert keys(desired_taints(node("True", MemoryPressure="True"), T0)) == [
        ("node.kubernetes.io/memory-pressure", "NoSchedule")]


@pytest.mark.parametrize("toleration, taint, want", [
    ({"operator": "Exists"}, {"key": "k", "effect": "NoExecute"}, True),
    ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, {"key": "k", "effect": "NoExecute"}, True),
    ({"key": "k", "operator": "Exists", "effect": "NoSchedule"}, {"key": "k", "effect": "NoExecute"}, False),
    ({"key": "k", "value": "v"}, {"key": "k", "value": "v", "effect": "NoExecute"}, True),
    ({"key": "k", "value": "v"}, {"key": "k", "value": "w", "effect": "NoExecute"}, False),
    ({"key": "j", "operator": "Exists"}, {"key": "k", "effect": "NoExecute"}, False),
])
def test_tolerates(toleration, taint, want):
    assert tolerates(toleration, taint) is want


def test_eviction_time():
    taint = {"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": rfc3339(T0)}
    later = T0 + dt.timedelta(seconds=100)

    def pod(*tolerations):
        return {"spec": {"tolerations": list(tolerations)}}

    assert eviction_time(pod(), [taint], later) == later  # untolerated: now
    t300 = {"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
    assert eviction_time(pod(t300), [taint], later) == T0 + dt.timedelta(seconds=300)
    assert eviction_time(pod({"operator": "Exists"}), [taint], later) is None  # forever
    neg = {**t300, "tolerationSeconds": -5}
    assert eviction_time(pod(neg), [taint], later) == T0
    other = {"key": "other", "effect": "NoExecute", "timeAdded": rfc3339(T0)}
    assert eviction_time(pod(t300), [taint, other], later) == later
    assert eviction_time(pod(t300), [{"key": "x", "effect": "NoSchedule"}], later) is None


# -- against a real API server -------------------------------------------------------
def now_str():
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now():
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def ready_node(client, name):
    await client.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    await set_ready(client, name)
    await client.create("leases", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                   "metadata": {"name": name},
                                   "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                                            "renewTime": micro_now()}}, namespace="kube-node-lease")


async def set_ready(client, name):
    """What a kubelet posts; retried, since the controller writes the same node."""
    for _ in range(20):
        live = await client.get("nodes", name)
        live["status"] = {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                          "lastHeartbeatTime": now_str(), "lastTransitionTime": now_str()}]}
        try:
            await client.update("nodes", live, subresource="status")
            return
        except ConflictError:
            await asyncio.sleep(0.05)
    raise AssertionError("could not post node status")


async def running_pod(client, ns, name, node, tolerations):
    await client.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                                 "spec": {"nodeName": node, "tolerations": tolerations,
                                          "containers": [{"name": "c", "image": "busybox"}]}}, namespace=ns)
    live = await client.get("pods", name, namespace=ns)
    live["status"] = {"phase": "Running", "podIP": "10.244.0.5",
                      "conditions": [{"type": "Ready", "status": "True"}]}
    await client.update("pods", live, subresource="status")


@pytest.mark.slow
async def test_silent_node_becomes_unknown_tainted_and_evicted(apiserver, namespace):
    ns = namespace
    async with controller_env(apiserver, NodeLifecycleController,
                              node_monitor_grace_period=2, node_monitor_period=0.5) as env:
        c = env.client
        await ready_node(c, "silent")
        await ready_node(c, "alive")
        short = [{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1}]
        forever = [{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]
        await running_pod(c, ns, "short", "silent", short)
        await running_pod(c, ns, "forever", "silent", forever)
        await running_pod(c, ns, "elsewhere", "alive", short)

        async def renew():
            while True:
                lease = await c.get("leases", "alive", namespace="kube-node-lease")
                lease["spec"]["renewTime"] = micro_now()
                await c.update("leases", lease)
                await asyncio.sleep(0.5)

        renewer = asyncio.create_task(renew())
        try:
            async def unreachable():
                n = await c.get("nodes", "silent")
                ready = next(x for x in n["status"]["conditions"] if x["type"] == "Ready")
                taints = {(t["key"], t["effect"]) for t in (n.get("spec") or {}).get("taints") or []}
                return ready["status"] == "Unknown" and taints == {(TAINT_UNREACHABLE, "NoSchedule"),
                                                                   (TAINT_UNREACHABLE, "NoExecute")} and n
            n = await env.wait_for(unreachable, timeout=10)
            ready = next(x for x in n["status"]["conditions"] if x["type"] == "Ready")
            assert ready["reason"] == "NodeStatusUnknown"
            assert ready["message"] == "Kubelet stopped posting node status."
            assert {x["type"] for x in n["status"]["conditions"]} >= {"MemoryPressure", "DiskPressure", "PIDPressure"}

            # The pod tolerating 1 s is evicted gracefully: Terminating, not gone - its containers
            # may still run on the unreachable node, and only its kubelet or pod GC may end it.
            short = await env.wait_for(lambda: _terminating(c, ns, "short"), timeout=10)
            assert short["metadata"]["deletionGracePeriodSeconds"] == 30
            await asyncio.sleep(2.0)   # several monitor periods: still there
            assert await _terminating(c, ns, "short")
            forever_pod = await c.get("pods", "forever", namespace=ns)
            assert not forever_pod["metadata"].get("deletionTimestamp")
            ready_cond = next(x for x in forever_pod["status"]["conditions"] if x["type"] == "Ready")
            assert ready_cond["status"] == "False"  # MarkPodsNotReady

            alive = await c.get("nodes", "alive")
            assert not (alive.get("spec") or {}).get("taints")
            assert not (await c.get("pods", "elsewhere", namespace=ns))["metadata"].get("deletionTimestamp")

            events = (await c.list("events", namespace=ns))["items"]
            assert any(e["reason"] == "TaintManagerEviction" and e["message"] == f"Marking for deletion Pod {ns}/short"
                       for e in events)

            # The kubelet comes back: Ready again, taints gone.
            lease = await c.get("leases", "silent", namespace="kube-node-lease")
            lease["spec"]["renewTime"] = micro_now()
            await c.update("leases", lease)
            await set_ready(c, "silent")

            async def recovered():
                n = await c.get("nodes", "silent")
                return not (n.get("spec") or {}).get("taints")
            await env.wait_for(recovered, timeout=5)
            await env.ctx.recorder.flush()
            node_events = (await c.list("events", namespace="default"))["items"]
            assert any(e["reason"] == "NodeNotReady" and e["involvedObject"]["name"] == "silent" for e in node_events)
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            for name in ("silent", "alive"):
                await c.delete("nodes", name)
                await c.delete("leases", name, namespace="kube-node-lease")


async def _gone(client, ns, name):
    return await get_or_none(client, "pods", name, ns) is None


async def _terminating(client, ns, name):
    pod = await get_or_none(client, "pods", name, ns)
    return pod if pod is not None and pod["metadata"].get("deletionTimestamp") else None
