"""DaemonSet controller: pure decisions by table, and the controller against the
FakeAPI with real informers, a fake scheduler (binds each pod to the node its
``metadata.name`` affinity names) and a fake kubelet (runs pods, finishes
deletions)."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubepy.controllers.context import ControllerConfig, ControllerContext, InformerFactory
from kubepy.controllers.daemonset import (
    Backoff,
    DaemonSetController,
    calculate_status,
    daemon_pod_tolerations,
    node_should_run,
    nodes_to_daemon_pods,
    plan_rolling_update,
    target_node,
)
from kubepy.controllers.history import REVISION_LABEL, revision_data
from kubepy.kinds.apps.daemonset import default_daemonset
from kubepy.testing.fakeapi import FakeAPI

NS = "default"
KEY = f"{NS}/agent"
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def node(name: str, *, labels: dict[str, str] | None = None, taints: list[dict] | None = None,
         unschedulable: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}}, "spec": spec,
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def daemonset(name: str = "agent", *, image: str = "busybox:1.36", tspec: dict | None = None, **spec: Any) -> dict:
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet",
          "metadata": {"name": name, "namespace": NS},
          "spec": {"selector": {"matchLabels": {"app": name}},
                   "template": {"metadata": {"labels": {"app": name}},
                                "spec": {"containers": [{"name": "agent", "image": image}], **(tspec or {})}},
                   **spec}}
    default_daemonset(ds, None)
    return ds


# -- pure decisions --------------------------------------------------------------------
def test_daemon_tolerations_are_added_and_replace_equal_ones():
    spec = {"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": 300}, {"key": "gpu", "operator": "Exists"}]}
    tols = daemon_pod_tolerations(spec)
    assert {"key": "gpu", "operator": "Exists"} in tols
    assert {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"} in tols
    assert [t["key"] for t in tols] == ["node.kubernetes.io/not-ready", "gpu", "node.kubernetes.io/unreachable",
                                        "node.kubernetes.io/disk-pressure", "node.kubernetes.io/memory-pressure",
                                        "node.kubernetes.io/pid-pressure", "node.kubernetes.io/unschedulable"]
    assert all("tolerationSeconds" not in t for t in tols)
    assert {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"} in \
        daemon_pod_tolerations({"hostNetwork": True})


def affinity(*terms: dict) -> dict:
    return {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": list(terms)}}}}


@pytest.mark.parametrize("n, tspec, expected", [
    (node("a"), {}, (True, True)),
    (node("a", labels={"disk": "ssd"}), {"nodeSelector": {"disk": "ssd"}}, (True, True)),
    (node("a"), {"nodeSelector": {"disk": "ssd"}}, (False, False)),
    (node("a", labels={"zone": "z1"}),
     affinity({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1", "z2"]}]}), (True, True)),
    (node("a", labels={"zone": "z3"}),
     affinity({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]},
              {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["z1"]}]}), (True, True)),
    (node("a"), affinity({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}),
     (False, False)),
    (node("a"), affinity(), (False, False)),  # no terms match nothing
    (node("a"), {"nodeName": "b"}, (False, False)),
    # untolerated NoSchedule: no new pod, a running one stays
    (node("a", taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]), {}, (False, True)),
    # untolerated NoExecute: the pod goes
    (node("a", taints=[{"key": "dedicated", "value": "db", "effect": "NoExecute"}]), {}, (False, False)),
    (node("a", taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
     {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db"}]}, (True, True)),
    (node("a", taints=[{"key": "dedicated", "effect": "PreferNoSchedule"}]), {}, (True, True)),
    # what every daemon tolerates: cordoned, pressured, not ready (NoExecute) nodes
    (node("a", unschedulable=True, taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
     {}, (True, True)),
    (node("a", taints=[{"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"},
                       {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]), {}, (True, True)),
    # the not-ready NoSchedule taint is not tolerated: no new pod until the node is Ready
    (node("a", taints=[{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]), {}, (False, True)),
])
def test_node_should_run(n, tspec, expected):
    assert node_should_run(n, daemonset(tspec=tspec)) == expected


def test_target_node_from_node_name_or_affinity():
    pinned = affinity({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]})
    assert target_node({"spec": pinned}) == "n2"
    assert target_node({"spec": {**pinned, "nodeName": "n3"}}) == "n3"
    assert target_node({"spec": {}}) is None


def pod(name: str, node_name: str, *, hash_: str = "h1", ready: bool = True, ready_ago: float = 100,
        created_ago: float = 200, phase: str = "Running", deleting: bool = False) -> dict:
    meta = {"name": name, "namespace": NS, "uid": f"uid-{name}",
            "labels": {"app": "agent", REVISION_LABEL: hash_},
            "creationTimestamp": (NOW - timedelta(seconds=created_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if deleting:
        meta["deletionTimestamp"] = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    cond = {"type": "Ready", "status": "True" if ready else "False",
            "lastTransitionTime": (NOW - timedelta(seconds=ready_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    return {"metadata": meta, "spec": {"nodeName": node_name}, "status": {"phase": phase, "conditions": [cond]}}


NODES = [node("n1"), node("n2"), node("n3"), node("n4")]


def names(pods: list[dict]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


@pytest.mark.parametrize("rolling, pods, deleted, created", [
    # maxUnavailable 1: one old pod at a time, by node name
    ({"maxUnavailable": 1, "maxSurge": 0}, [pod(f"p{i}", f"n{i}") for i in range(1, 5)], ["p1"], []),
    # one node is already without an available pod: nothing more may go
    ({"maxUnavailable": 1, "maxSurge": 0},
     [pod("p1", "n1", hash_="h2", ready=False)] + [pod(f"p{i}", f"n{i}") for i in range(2, 5)], [], []),
    # an old pod that is not available anyway is replaced at once, beside the budget
    ({"maxUnavailable": 1, "maxSurge": 0},
     [pod("p1", "n1", ready=False)] + [pod(f"p{i}", f"n{i}") for i in range(2, 5)], ["p1", "p2"][:1], []),
    # 50% of 4 nodes: two at a time; a node still terminating its old pod counts as unavailable
    ({"maxUnavailable": "50%", "maxSurge": 0},
     [pod("p1", "n1", deleting=True)] + [pod(f"p{i}", f"n{i}") for i in range(2, 5)], ["p2"], []),
    # maxSurge 1: a new pod starts beside an old one; the old goes once the new is available
    ({"maxUnavailable": 0, "maxSurge": 1}, [pod(f"p{i}", f"n{i}") for i in range(1, 5)], [], ["n1"]),
    ({"maxUnavailable": 0, "maxSurge": 1},
     [pod("p1", "n1"), pod("q1", "n1", hash_="h2")] + [pod(f"p{i}", f"n{i}") for i in range(2, 5)], ["p1"], ["n2"]),
    ({"maxUnavailable": 0, "maxSurge": 1},
     [pod("p1", "n1"), pod("q1", "n1", hash_="h2", ready=False)] + [pod(f"p{i}", f"n{i}") for i in range(2, 5)],
     [], []),
])
def test_rolling_update_plans(rolling, pods, deleted, created):
    ds = daemonset(updateStrategy={"type": "RollingUpdate", "rollingUpdate": rolling})
    delete, create = plan_rolling_update(ds, NODES, nodes_to_daemon_pods(pods), "h2", NOW)
    assert (names(delete), create) == (deleted, created)


def test_status_counts_the_oldest_pod_per_node():
    ds = daemonset(tspec={"nodeSelector": {"role": "agent"}}, minReadySeconds=30)
    nodes = [node("n1", labels={"role": "agent"}), node("n2", labels={"role": "agent"}),
             node("n3", labels={"role": "agent"}), node("n4")]
    pods = [pod("a", "n1", hash_="h2"), pod("b", "n1", hash_="h1", created_ago=10),
            pod("c", "n2", ready_ago=5), pod("d", "n4")]
    assert calculate_status(ds, nodes, nodes_to_daemon_pods(pods), "h2", NOW) == {
        "desiredNumberScheduled": 3, "currentNumberScheduled": 2, "numberMisscheduled": 1, "numberReady": 2,
        "updatedNumberScheduled": 1, "numberAvailable": 1, "numberUnavailable": 2}


def test_backoff_doubles_and_starts_over_when_idle():
    now = [0.0]
    b = Backoff(1, 8, clock=lambda: now[0])
    assert b.in_backoff("k") == 0
    assert [b.next("k") for _ in range(5)] == [1, 2, 4, 8, 8]
    assert b.in_backoff("k") == 8
    now[0] = 5
    assert b.in_backoff("k") == 3
    now[0] = 100
    assert b.next("k") == 1


# -- the controller against the FakeAPI ---------------------------------------------------
class FakeRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def event(self, obj, type, reason, message):
        self.events.append((type, reason, message))

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.events]


class Cluster:
    """The FakeAPI, the controller with real informers, and a fake scheduler and kubelet."""

    def __init__(self, clock: list[float]) -> None:
        self.api = FakeAPI()
        self.recorder = FakeRecorder()
        self.ctx = ControllerContext(client=self.api, informers=InformerFactory(self.api),  # type: ignore[arg-type]
                                     recorder=self.recorder, config=ControllerConfig())  # type: ignore[arg-type]
        self.ctrl = DaemonSetController(self.ctx, backoff=Backoff(1, 60, clock=lambda: clock[0]))
        self.running = True  # the fake kubelet makes pods Running and Ready

    async def start(self) -> None:
        self.ctx.informers.start()
        await self.ctx.informers.wait_synced(timeout=5)

    async def caught_up(self) -> None:
        """Until every informer shows what the API holds."""
        for _ in range(200):
            ok = True
            for resource, inf in (("daemonsets", self.ctrl.ds_informer), ("pods", self.ctrl.pod_informer),
                                  ("nodes", self.ctrl.node_informer),
                                  ("controllerrevisions", self.ctrl.revision_informer)):
                want = {(o["metadata"].get("namespace"), o["metadata"]["name"], o["metadata"]["resourceVersion"])
                        for o in self.api.objects(resource)}
                have = {(o["metadata"].get("namespace"), o["metadata"]["name"], o["metadata"]["resourceVersion"])
                        for o in inf.cache.list()}
                ok &= want == have
            if ok:
                return
            await asyncio.sleep(0.005)
        raise AssertionError("informers did not catch up")

    async def sync(self) -> None:
        await self.caught_up()
        await self.ctrl.reconcile(KEY)
        await self.caught_up()

    async def world(self) -> None:
        """The scheduler binds, the kubelet runs pods and finishes deletions."""
        for p in self.api.objects("pods", NS):
            name = p["metadata"]["name"]
            if p["metadata"].get("deletionTimestamp"):
                await self.api.delete("pods", name, namespace=NS, grace_period_seconds=0)
                continue
            if not p["spec"].get("nodeName"):
                await self.api.patch("pods", name, {"spec": {"nodeName": target_node(p)}}, namespace=NS)
            if self.running and p.get("status", {}).get("phase") not in ("Running", "Failed", "Succeeded"):
                await self.api.patch("pods", name, {"status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": ts(60)}]}},
                    namespace=NS, subresource="status")
        await self.caught_up()

    async def settle(self, rounds: int = 12) -> None:
        for _ in range(rounds):
            await self.sync()
            await self.world()

    def pods(self) -> list[dict]:
        return sorted(self.api.objects("pods", NS), key=lambda p: p["spec"].get("nodeName") or "")

    def ds(self) -> dict:
        return self.api.objects("daemonsets", NS)[0]

    def by_node(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for p in self.pods():
            out.setdefault(p["spec"].get("nodeName") or "-", []).append(p["metadata"]["name"])
        return out

    async def set_template(self, **container: Any) -> None:
        ds = self.ds()
        ds["spec"]["template"]["spec"]["containers"][0].update(container)
        gen = int(ds["metadata"]["annotations"]["deprecated.daemonset.template.generation"]) + 1
        ds["metadata"]["annotations"]["deprecated.daemonset.template.generation"] = str(gen)
        await self.api.update("daemonsets", ds)


@pytest.fixture
async def cluster():
    clock = [0.0]
    c = Cluster(clock)
    c.clock = clock  # type: ignore[attr-defined]
    for n in ("n1", "n2", "n3"):
        c.api.seed("nodes", node(n))
    await c.start()
    try:
        yield c
    finally:
        await c.ctx.informers.stop()


async def test_one_pod_per_node_pinned_by_affinity_with_daemon_tolerations(cluster):
    await cluster.api.create("daemonsets", daemonset(), namespace=NS)
    await cluster.sync()
    made = [a.body for a in cluster.api.calls("create", "pods")]
    assert len(made) == 3 and cluster.recorder.reasons() == ["SuccessfulCreate"] * 3
    pinned = sorted(p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                    ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0] for p in made)
    assert pinned == ["n1", "n2", "n3"]
    assert all("nodeName" not in p["spec"] for p in made)  # the scheduler binds them
    rev = cluster.api.objects("controllerrevisions", NS)
    assert len(rev) == 1 and rev[0]["revision"] == 1
    hash_ = rev[0]["metadata"]["labels"][REVISION_LABEL]
    for p in made:
        assert p["metadata"]["labels"] == {"app": "agent", REVISION_LABEL: hash_, "pod-template-generation": "1"}
        assert p["metadata"]["generateName"] == "agent-"
        assert p["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
        assert {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"} in \
            p["spec"]["tolerations"]
    await cluster.sync()  # the cache shows them now: nothing more
    assert len(cluster.api.calls("create", "pods")) == 3
    await cluster.settle()
    assert {n: len(ps) for n, ps in cluster.by_node().items()} == {"n1": 1, "n2": 1, "n3": 1}
    st = cluster.ds()["status"]
    assert {k: st[k] for k in ("desiredNumberScheduled", "currentNumberScheduled", "numberReady",
                               "updatedNumberScheduled", "numberAvailable", "numberUnavailable",
                               "numberMisscheduled", "observedGeneration")} == {
        "desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 3, "updatedNumberScheduled": 3,
        "numberAvailable": 3, "numberUnavailable": 0, "numberMisscheduled": 0, "observedGeneration": 1}


async def test_expectations_stop_a_second_create_before_the_cache_catches_up():
    """Informers not running: the caches show only what the test puts there."""
    c = Cluster([0.0])
    for n in ("n1", "n2", "n3"):
        c.ctrl.node_informer.cache.set(c.api.seed("nodes", node(n)))
    c.ctrl.ds_informer.cache.set(await c.api.create("daemonsets", daemonset(), namespace=NS))
    await c.ctrl.reconcile(KEY)
    c.ctrl.revision_informer.cache.replace(c.api.objects("controllerrevisions", NS))
    await c.ctrl.reconcile(KEY)  # the pod watch has shown nothing yet
    assert len(c.api.calls("create", "pods")) == 3
    assert c.ctrl.expectations.pending(KEY) == (3, 0)
    for p in c.api.objects("pods", NS):
        c.ctrl.pod_informer.cache.set(p)
        c.ctrl._on_pod_add(p)
    assert c.ctrl.expectations.satisfied(KEY)
    c.ctrl.ds_informer.cache.set(c.api.objects("daemonsets", NS)[0])
    await c.ctrl.reconcile(KEY)
    assert len(c.api.calls("create", "pods")) == 3


async def test_nodes_that_join_leave_or_stop_matching(cluster):
    await cluster.api.create("daemonsets", daemonset(tspec={"nodeSelector": {"agent": "yes"}}), namespace=NS)
    for n in ("n1", "n2"):
        await cluster.api.patch("nodes", n, {"metadata": {"labels": {"agent": "yes"}}})
    await cluster.settle()
    assert sorted(cluster.by_node()) == ["n1", "n2"]
    assert cluster.ds()["status"]["desiredNumberScheduled"] == 2
    await cluster.api.create("nodes", node("n4", labels={"agent": "yes"}))
    await cluster.settle()
    assert sorted(cluster.by_node()) == ["n1", "n2", "n4"]
    # n1 stops matching: its pod goes
    await cluster.api.patch("nodes", "n1", {"metadata": {"labels": {"agent": None}}})
    await cluster.settle()
    assert sorted(cluster.by_node()) == ["n2", "n4"]
    assert "SuccessfulDelete" in cluster.recorder.reasons()
    # a node that leaves before its pod was bound: the pod waiting for it is deleted
    cluster.running = False
    await cluster.api.create("nodes", node("n5", labels={"agent": "yes"}))
    await cluster.sync()
    waiting = [p for p in cluster.api.objects("pods", NS) if target_node(p) == "n5"]
    assert len(waiting) == 1 and not waiting[0]["spec"].get("nodeName")
    await cluster.api.delete("nodes", "n5")
    await cluster.sync()
    assert not [p for p in cluster.api.objects("pods", NS) if target_node(p) == "n5"
                and not p["metadata"].get("deletionTimestamp")]
    assert cluster.ds()["status"]["desiredNumberScheduled"] == 2


async def test_taints_no_execute_evicts_no_schedule_keeps(cluster):
    await cluster.api.create("daemonsets", daemonset(), namespace=NS)
    await cluster.settle()
    await cluster.api.patch("nodes", "n1", {"spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}})
    await cluster.settle()
    assert sorted(cluster.by_node()) == ["n1", "n2", "n3"]  # stays
    assert cluster.ds()["status"]["numberMisscheduled"] == 1  # but it is no longer desired there
    await cluster.api.patch("nodes", "n2", {"spec": {"taints": [{"key": "x", "effect": "NoExecute"}]}})
    await cluster.settle()
    assert sorted(cluster.by_node()) == ["n1", "n3"]
    # cordoned and not-ready (NoExecute) nodes keep and get daemon pods
    await cluster.api.patch("nodes", "n2", {"spec": {"taints": [
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}], "unschedulable": True}})
    await cluster.settle()
    assert sorted(cluster.by_node()) == ["n1", "n2", "n3"]


async def test_extra_pods_on_a_node_keep_the_oldest(cluster):
    await cluster.api.create("daemonsets", daemonset(), namespace=NS)
    await cluster.settle()
    [keep] = cluster.by_node()["n1"]
    extra = copy.deepcopy(next(p for p in cluster.pods() if p["spec"].get("nodeName") == "n1"))
    extra["metadata"] = {"name": "agent-extra", "namespace": NS, "labels": extra["metadata"]["labels"],
                         "creationTimestamp": ts(-5)}
    extra.pop("status")
    await cluster.api.create("pods", extra, namespace=NS)  # an orphan: adopted, then pruned
    await cluster.settle()
    assert cluster.by_node()["n1"] == [keep]


async def test_failed_pods_are_replaced_with_backoff(cluster):
    await cluster.api.create("daemonsets", daemonset(), namespace=NS)
    await cluster.settle()

    async def fail_on_n1() -> str:
        [name] = cluster.by_node()["n1"]
        await cluster.api.patch("pods", name, {"status": {"phase": "Failed"}}, namespace=NS, subresource="status")
        return name

    first = await fail_on_n1()
    await cluster.settle()
    [second] = cluster.by_node()["n1"]
    assert second != first
    failed = [m for _, r, m in cluster.recorder.events if r == "FailedDaemonPod"]
    assert failed == [f"Found failed daemon pod {NS}/{first} on node n1, will try to kill it"]
    # it fails again at once: within the backoff (1s) the failed pod stays
    assert await fail_on_n1() == second
    await cluster.settle(3)
    assert cluster.by_node()["n1"] == [second]
    assert len([r for r in cluster.recorder.reasons() if r == "FailedDaemonPod"]) == 1
    cluster.clock[0] += 1.5  # type: ignore[attr-defined]
    await cluster.settle()
    [third] = cluster.by_node()["n1"]
    assert third not in (first, second)


async def test_rolling_update_node_by_node_then_undo(cluster):
    await cluster.api.create("daemonsets", daemonset(revisionHistoryLimit=1), namespace=NS)
    await cluster.settle()
    v1 = {p["metadata"]["name"] for p in cluster.pods()}
    [rev1] = cluster.api.objects("controllerrevisions", NS)
    await cluster.set_template(image="busybox:1.37")
    seen: list[int] = []
    cluster.running = False  # the kubelet is slow: each new pod must wait to be counted available
    deletes_per_sync = []
    for _ in range(12):
        before = len(cluster.api.calls("delete", "pods"))
        await cluster.sync()
        deletes_per_sync.append(len(cluster.api.calls("delete", "pods")) - before)
        await cluster.world()
        for p in cluster.api.objects("pods", NS):  # start pods one sync later than they appear
            if p["spec"].get("nodeName") and p.get("status", {}).get("phase") != "Running" \
                    and not p["metadata"].get("deletionTimestamp"):
                await cluster.api.patch("pods", p["metadata"]["name"], {"status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": ts(60)}]}}, namespace=NS,
                    subresource="status")
        live = [p for p in cluster.api.objects("pods", NS) if not p["metadata"].get("deletionTimestamp")]
        running = {p["spec"].get("nodeName") for p in live if p.get("status", {}).get("phase") == "Running"}
        seen.append(3 - len(running))
    assert max(deletes_per_sync) == 1 and max(seen) <= 1, (deletes_per_sync, seen)
    images = {p["spec"]["containers"][0]["image"] for p in cluster.pods()}
    assert images == {"busybox:1.37"} and not v1 & {p["metadata"]["name"] for p in cluster.pods()}
    revs = sorted(cluster.api.objects("controllerrevisions", NS), key=lambda r: r["revision"])
    assert [r["revision"] for r in revs] == [1, 2]
    st = cluster.ds()["status"]
    assert (st["updatedNumberScheduled"], st["numberAvailable"], st["observedGeneration"]) == (3, 3, 2)

    # kubectl rollout undo: the old revision's data as a strategic merge patch
    await cluster.api.patch("daemonsets", "agent", rev1["data"], namespace=NS, patch_type="strategic")
    await cluster.api.patch("daemonsets", "agent", {"metadata": {"annotations": {  # what the API server counts
        "deprecated.daemonset.template.generation": "3"}}}, namespace=NS)
    cluster.running = True
    await cluster.settle(20)
    assert {p["spec"]["containers"][0]["image"] for p in cluster.pods()} == {"busybox:1.36"}
    revs = {r["metadata"]["name"]: r["revision"] for r in cluster.api.objects("controllerrevisions", NS)}
    assert revs[rev1["metadata"]["name"]] == 3  # renumbered, not copied
    assert {p["metadata"]["labels"][REVISION_LABEL] for p in cluster.pods()} == \
        {rev1["metadata"]["labels"][REVISION_LABEL]}
    # a third template: history keeps the limit (1 old) besides the current one
    await cluster.set_template(image="busybox:1.38")
    await cluster.settle(20)
    assert len(cluster.api.objects("controllerrevisions", NS)) == 2


async def test_surge_starts_the_new_pod_before_the_old_one_goes(cluster):
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    await cluster.api.create("daemonsets", daemonset(updateStrategy=rolling), namespace=NS)
    await cluster.settle()
    await cluster.set_template(image="busybox:1.37")
    most = 0
    for _ in range(20):
        await cluster.sync()
        await cluster.world()
        live = [p for p in cluster.api.objects("pods", NS) if not p["metadata"].get("deletionTimestamp")]
        running_nodes = {p["spec"]["nodeName"] for p in live if p.get("status", {}).get("phase") == "Running"}
        assert running_nodes == {"n1", "n2", "n3"}  # never a node without a running pod
        most = max(most, len(live))
    assert most == 4  # one surge pod at a time
    assert {p["spec"]["containers"][0]["image"] for p in cluster.pods()} == {"busybox:1.37"}
    assert len(cluster.pods()) == 3


async def test_on_delete_replaces_only_deleted_pods(cluster):
    await cluster.api.create("daemonsets", daemonset(updateStrategy={"type": "OnDelete"}), namespace=NS)
    await cluster.settle()
    await cluster.set_template(image="busybox:1.37")
    await cluster.settle()
    assert {p["spec"]["containers"][0]["image"] for p in cluster.pods()} == {"busybox:1.36"}
    assert cluster.ds()["status"]["updatedNumberScheduled"] == 0
    [victim] = cluster.by_node()["n2"]
    await cluster.api.delete("pods", victim, namespace=NS)
    await cluster.settle()
    images = {p["spec"]["nodeName"]: p["spec"]["containers"][0]["image"] for p in cluster.pods()}
    assert images == {"n1": "busybox:1.36", "n2": "busybox:1.37", "n3": "busybox:1.36"}
    assert cluster.ds()["status"]["updatedNumberScheduled"] == 1


async def test_an_empty_selector_is_refused_with_an_event(cluster):
    ds = daemonset()
    ds["spec"]["selector"] = {}
    await cluster.api.create("daemonsets", ds, namespace=NS)
    await cluster.sync()
    assert cluster.api.calls("create", "pods") == []
    assert cluster.recorder.events[-1][1] == "SelectingAll"


def test_revision_data_is_what_undo_patches_with():
    ds = daemonset()
    data = revision_data(ds)
    assert data["spec"]["template"]["$patch"] == "replace"
