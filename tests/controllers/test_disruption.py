"""Disruption controller (PodDisruptionBudget status) and the ReplicationController's
ReplicationManager: pure decisions in tables, reconciles against the FakeAPI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubepy.client import ConflictError
from kubepy.controllers.context import ControllerConfig, ControllerContext, InformerFactory
from kubepy.controllers.disruption import (
    DisruptionController,
    SyncError,
    build_disrupted_pods,
    count_healthy,
    desired_healthy,
)
from kubepy.controllers.replicaset import ReplicationManager
from kubepy.testing.fakeapi import FakeAPI
from tests.controllers.test_replicaset import FakeRecorder

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(name: str, *, ready: bool = True, owner: tuple[str, str, str] | None = None, deleting: bool = False,
        labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "1",
                            "labels": labels or {"app": "web"}}
    if owner:
        api_version, kind, owner_name = owner
        meta["ownerReferences"] = [{"apiVersion": api_version, "kind": kind, "name": owner_name,
                                    "uid": f"uid-{owner_name}", "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = ts(0)
    return {"metadata": meta, "spec": {"containers": [{"name": "c", "image": "img"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


# -- pure decisions ------------------------------------------------------------------
@pytest.mark.parametrize("spec, pods, scale, want", [
    ({"maxUnavailable": 1}, 3, 3, (3, 2)),
    ({"maxUnavailable": "34%"}, 3, 3, (3, 1)),      # 34% of 3 rounds up to 2 unavailable
    ({"maxUnavailable": 5}, 3, 3, (3, 0)),          # never below zero
    ({"minAvailable": 2}, 5, 99, (5, 2)),           # an int: the pods there are, no scale needed
    ({"minAvailable": "50%"}, 1, 3, (3, 2)),        # 50% of 3 rounds up
    ({}, 4, 4, (0, 0)),
])
def test_desired_healthy(spec, pods, scale, want):
    assert desired_healthy(spec, pods, lambda: scale) == want


def test_an_int_min_available_never_asks_for_the_scale():
    def boom() -> int:
        raise SyncError("no")
    assert desired_healthy({"minAvailable": 1}, 2, boom) == (2, 1)


def test_disrupted_pods_are_kept_until_seen_going_or_too_old():
    pods = [pod("fresh"), pod("old"), pod("going", deleting=True), pod("other")]
    disrupted = {"fresh": ts(10), "old": ts(300), "going": ts(5), "gone": ts(5)}
    kept, recheck, expired = build_disrupted_pods(pods, disrupted, NOW)
    assert kept == {"fresh": ts(10)}
    assert recheck == NOW - timedelta(seconds=10) + timedelta(minutes=2)
    assert expired == ["old"]
    # healthy: ready, not being deleted, not just approved for eviction
    assert count_healthy(pods + [pod("sick", ready=False)], kept, NOW) == 2  # old, other


# -- the controller against the FakeAPI ---------------------------------------------------
def controller(api: FakeAPI) -> tuple[DisruptionController, FakeRecorder]:
    recorder = FakeRecorder()
    ctx = ControllerContext(client=api, informers=InformerFactory(api), recorder=recorder,  # type: ignore[arg-type]
                            config=ControllerConfig())
    return DisruptionController(ctx), recorder


def arrange(api: FakeAPI, ctrl: Any, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The object in the API and in the controller's cache, as its informer would show it."""
    stored = api.seed(resource, obj)
    ctrl.ctx.informers.informer(resource).cache.set(stored)
    return stored


def pdb(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec}}


def owner(kind: str, name: str, replicas: int, *, controlled_by: tuple[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": f"uid-{name}"}
    if controlled_by:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": controlled_by[0], "name": controlled_by[1],
                                    "uid": f"uid-{controlled_by[1]}", "controller": True}]
    return {"kind": kind, "metadata": meta, "spec": {"replicas": replicas}}


def written_status(api: FakeAPI) -> dict[str, Any]:
    return api.calls("update", "poddisruptionbudgets", "status")[-1].body["status"]


async def test_a_deployment_budget_counts_the_deployments_scale():
    api = FakeAPI()
    ctrl, recorder = controller(api)
    arrange(api, ctrl, "deployments", owner("Deployment", "web", 3))
    arrange(api, ctrl, "replicasets", owner("ReplicaSet", "web-1", 2, controlled_by=("Deployment", "web")))
    for name in ("a", "b", "c"):
        arrange(api, ctrl, "pods", pod(name, owner=("apps/v1", "ReplicaSet", "web-1")))
    arrange(api, ctrl, "poddisruptionbudgets", pdb(maxUnavailable=1))
    await ctrl.reconcile("default/web")
    status = written_status(api)
    assert {k: status[k] for k in ("observedGeneration", "expectedPods", "currentHealthy", "desiredHealthy",
                                   "disruptionsAllowed")} == {
        "observedGeneration": 2, "expectedPods": 3, "currentHealthy": 3, "desiredHealthy": 2, "disruptionsAllowed": 1}
    [cond] = status["conditions"]
    assert (cond["type"], cond["status"], cond["reason"], cond["message"], cond["observedGeneration"]) == (
        "DisruptionAllowed", "True", "SufficientPods", "", 2)
    assert "disruptedPods" not in status
    # Nothing changed: nothing written again.
    ctrl.pdb_informer.cache.set(api.objects("poddisruptionbudgets")[0])
    await ctrl.reconcile("default/web")
    assert len(api.calls("update", "poddisruptionbudgets", "status")) == 1
    assert recorder.events == []


async def test_a_percentage_over_a_replication_controller_and_an_approved_eviction():
    api = FakeAPI()
    ctrl, _ = controller(api)
    arrange(api, ctrl, "replicationcontrollers", owner("ReplicationController", "web", 4))
    for name in ("a", "b", "c", "d"):
        arrange(api, ctrl, "pods", pod(name, owner=("v1", "ReplicationController", "web")))
    budget = pdb(minAvailable="50%")
    budget["status"] = {"disruptedPods": {"a": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}}
    arrange(api, ctrl, "poddisruptionbudgets", budget)
    await ctrl.reconcile("default/web")
    status = written_status(api)
    assert (status["expectedPods"], status["desiredHealthy"], status["currentHealthy"],
            status["disruptionsAllowed"]) == (4, 2, 3, 1)
    assert list(status["disruptedPods"]) == ["a"]  # approved, not yet seen going: kept, not healthy


async def test_no_pods_and_unmanaged_pods():
    api = FakeAPI()
    ctrl, recorder = controller(api)
    arrange(api, ctrl, "poddisruptionbudgets", pdb(maxUnavailable=1))
    await ctrl.reconcile("default/web")
    assert ("Normal", "NoPods", "No matching pods found") in recorder.events
    status = written_status(api)
    assert (status["expectedPods"], status["disruptionsAllowed"], status["conditions"][0]["reason"]) == (
        0, 0, "InsufficientPods")
    arrange(api, ctrl, "pods", pod("stray"))
    ctrl.pdb_informer.cache.set(api.objects("poddisruptionbudgets")[0])
    await ctrl.reconcile("default/web")
    assert any(r == "UnmanagedPods" and "To account for these pods" in m for _, r, m in recorder.events)


async def test_a_pod_whose_controller_is_missing_closes_the_budget():
    api = FakeAPI()
    ctrl, recorder = controller(api)
    arrange(api, ctrl, "pods", pod("a", owner=("apps/v1", "ReplicaSet", "gone")))
    budget = pdb(maxUnavailable=1)
    budget["status"] = {"disruptionsAllowed": 1, "observedGeneration": 2}
    arrange(api, ctrl, "poddisruptionbudgets", budget)
    with pytest.raises(SyncError):
        await ctrl.reconcile("default/web")
    status = written_status(api)
    assert status["disruptionsAllowed"] == 0
    [cond] = status["conditions"]
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "SyncFailed",
                                                                 'found no controllers for pod "a"')
    assert any(r == "CalculateExpectedPodCountFailed" for _, r, _ in recorder.events)


async def test_status_is_written_against_the_version_it_was_computed_from():
    # An eviction spent the budget after the cache saw it: the controller's write must conflict, not undo it.
    api = FakeAPI()
    ctrl, _ = controller(api)
    for name in ("a", "b"):
        arrange(api, ctrl, "pods", pod(name))
    arrange(api, ctrl, "poddisruptionbudgets", pdb(minAvailable=1))
    await api.patch("poddisruptionbudgets", "web", {"status": {"disruptionsAllowed": 0,
                                                               "disruptedPods": {"a": ts(0)}}},
                    namespace="default", subresource="status")
    with pytest.raises(ConflictError):
        await ctrl.reconcile("default/web")
    assert api.objects("poddisruptionbudgets")[0]["status"]["disruptedPods"] == {"a": ts(0)}


# -- ReplicationManager: the ReplicaSet controller with a label-map selector -------------
def replication_controller(replicas: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": "web", "namespace": "default", "uid": "uid-web", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"app": "web"},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "img"}]}}}}


async def test_replication_manager_adopts_creates_and_writes_status():
    api = FakeAPI()
    recorder = FakeRecorder()
    ctx = ControllerContext(client=api, informers=InformerFactory(api), recorder=recorder,  # type: ignore[arg-type]
                            config=ControllerConfig())
    ctrl = ReplicationManager(ctx)
    assert ctrl.rs_informer.resource == "replicationcontrollers"
    arrange(api, ctrl, "replicationcontrollers", replication_controller(3))
    arrange(api, ctrl, "pods", pod("orphan"))
    arrange(api, ctrl, "pods", pod("other", labels={"app": "db"}))
    await ctrl.reconcile("default/web")
    assert [a.name for a in api.calls("patch", "pods")] == ["orphan"]
    [ref] = next(p for p in api.objects("pods") if p["metadata"]["name"] == "orphan")["metadata"]["ownerReferences"]
    assert (ref["apiVersion"], ref["kind"], ref["uid"], ref["controller"]) == (
        "v1", "ReplicationController", "uid-web", True)
    created = [a.body for a in api.calls("create", "pods")]
    assert len(created) == 2
    assert created[0]["metadata"]["ownerReferences"][0]["kind"] == "ReplicationController"
    assert created[0]["metadata"]["labels"] == {"app": "web"}
    [status_patch] = api.calls("patch", "replicationcontrollers", "status")
    assert status_patch.body["status"]["replicas"] == 1  # the adopted one; the two new ones are not seen yet
    assert [r for _, r, _ in recorder.events] == ["SuccessfulCreate"] * 2
