"""ReplicaSet controller: pure decisions, expectations with a fake client, and a real API server."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubepy.client import InvalidError
from kubepy.controllers.context import (
    ControllerConfig,
    ControllerContext,
    InformerFactory,
)
from kubepy.controllers.expectations import ControllerExpectations as Expectations
from kubepy.controllers.pods import is_pod_available
from kubepy.controllers.replicaset import (
    ReplicaSetController,
    calculate_status,
    pods_to_delete,
)
from kubepy.controllers.slowstart import slow_start_batch
from kubepy.testing.fakeapi import Action, FakeAPI
from tests.controllers.conftest_rsdeploy import (
    apiserver_rsdeploy_fixture,  # noqa: F401 - registers the fixture "apiserver_rsdeploy"
    create_namespace,
    is_ready,
    live_pods,
    running_controllers,
    wait_for,
)

NOW = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(name: str, *, node: str = "", phase: str = "Running", ready: bool = True, ready_ago: float = 100,
        created_ago: float = 200, restarts: int = 0, labels: dict[str, str] | None = None,
        owner: str | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "1",
                            "labels": labels if labels is not None else {"app": "web"},
                            "creationTimestamp": ts(created_ago)}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner,
                                    "uid": f"uid-{owner}", "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = ts(0)
    conds = [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": ts(ready_ago)}]
    return {"metadata": meta, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "img"}]},
            "status": {"phase": phase, "conditions": conds, "containerStatuses": [{"restartCount": restarts}]}}


# -- pure decisions ------------------------------------------------------------------
@pytest.mark.parametrize("pods, count, expected", [
    # unassigned before assigned
    ([pod("a", node="n1"), pod("b")], 1, ["b"]),
    # Pending < Unknown < Running
    ([pod("a", node="n", phase="Running"), pod("b", node="n", phase="Unknown"),
      pod("c", node="n", phase="Pending")], 2, ["c", "b"]),
    # not ready before ready
    ([pod("a", node="n"), pod("b", node="n", ready=False)], 1, ["b"]),
    # ready more recently goes first
    ([pod("a", node="n", ready_ago=500), pod("b", node="n", ready_ago=5)], 1, ["b"]),
    # more restarts first
    ([pod("a", node="n", restarts=0), pod("b", node="n", restarts=3)], 1, ["b"]),
    # newer first when all else is equal
    ([pod("a", node="n", created_ago=1000, restarts=0), pod("b", node="n", created_ago=10)], 1, ["b"]),
    # doubled up on a node before alone on one
    ([pod("a", node="n1"), pod("b", node="n2"), pod("c", node="n2")], 1, ["b"]),
    # asking for more than there are
    ([pod("a"), pod("b")], 5, ["a", "b"]),
])
def test_pods_to_delete_ranking(pods, count, expected):
    assert [p["metadata"]["name"] for p in pods_to_delete(pods, count)] == expected


def test_pod_availability_needs_min_ready_seconds():
    p = pod("a", ready_ago=5)
    assert is_pod_available(p, 0, NOW)
    assert is_pod_available(p, 5, NOW)
    assert not is_pod_available(p, 10, NOW)
    assert not is_pod_available(pod("b", ready=False), 0, NOW)


@pytest.mark.parametrize("count, fail_after, calls, successes", [
    (10, None, 10, 10),   # 1 + 2 + 4 + 3
    (10, 0, 1, 0),        # the first batch of one fails: stop
    (10, 3, 7, 3),        # 1 + 2 ok, then the batch of four fails whole
    (0, None, 0, 0),
])
async def test_slow_start_batch(count, fail_after, calls, successes):
    made = itertools.count()
    attempts = 0

    async def fn() -> None:
        nonlocal attempts
        attempts += 1
        if fail_after is not None and next(made) >= fail_after:
            raise RuntimeError("quota")

    ok, err = await slow_start_batch(count, fn)
    assert (attempts, ok) == (calls, successes)
    assert (err is None) == (fail_after is None)


def test_expectations():
    exp = Expectations(timeout=300)
    assert exp.satisfied("ns/rs")
    exp.expect_creations("ns/rs", 2)
    assert not exp.satisfied("ns/rs")
    exp.creation_observed("ns/rs")
    assert not exp.satisfied("ns/rs")
    exp.creation_observed("ns/rs")
    assert exp.satisfied("ns/rs")
    exp.expect_deletions("ns/rs", ["ns/a", "ns/b"])
    exp.deletion_observed("ns/rs", "ns/a")
    exp.deletion_observed("ns/rs", "ns/a")  # seen twice (graceful, then gone): counted once
    assert not exp.satisfied("ns/rs")
    exp.deletion_observed("ns/rs", "ns/b")
    assert exp.satisfied("ns/rs")
    short = Expectations(timeout=0)
    short.expect_creations("k", 5)
    assert short.satisfied("k")  # expired: act again rather than stall forever


def test_calculate_status_counts_and_failure_condition():
    rs = {"metadata": {"generation": 3}, "spec": {"minReadySeconds": 10,
                                                  "template": {"metadata": {"labels": {"app": "web", "tier": "x"}}}},
          "status": {}}
    pods = [pod("a", ready_ago=100, labels={"app": "web", "tier": "x"}), pod("b", ready_ago=1),
            pod("c", ready=False)]
    status = calculate_status(rs, pods, RuntimeError("quota exceeded"), -2, NOW)
    assert {k: status[k] for k in ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas",
                                   "observedGeneration")} == {
        "replicas": 3, "fullyLabeledReplicas": 1, "readyReplicas": 2, "availableReplicas": 1, "observedGeneration": 3}
    [cond] = status["conditions"]
    assert (cond["type"], cond["reason"], cond["message"]) == ("ReplicaFailure", "FailedCreate", "quota exceeded")
    cleared = calculate_status({**rs, "status": status}, pods, None, 0, NOW)
    assert "conditions" not in cleared


# -- expectations against the fake API: the cache never catches up by itself -------
class FakeRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def event(self, obj, type, reason, message):
        self.events.append((type, reason, message))


def fake_controller(api: FakeAPI) -> tuple[ReplicaSetController, FakeRecorder]:
    recorder = FakeRecorder()
    ctx = ControllerContext(client=api, informers=InformerFactory(api), recorder=recorder,  # type: ignore[arg-type]
                            config=ControllerConfig())
    return ReplicaSetController(ctx), recorder


def replicaset(name: str = "web", replicas: int = 3) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "generation": 1,
                         "resourceVersion": "5"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "img"}]}}},
            "status": {}}


def cached_rs(api: FakeAPI, ctrl: ReplicaSetController, replicas: int) -> None:
    """The ReplicaSet as the API holds it, and in the controller's cache."""
    if not api.objects("replicasets"):
        api.seed("replicasets", replicaset(replicas=replicas))
    ctrl.rs_informer.cache.set(replicaset(replicas=replicas))


def created_pods(api: FakeAPI) -> list[dict[str, Any]]:
    return [a.body for a in api.calls("create", "pods")]


def deleted_pods(api: FakeAPI) -> list[str]:
    return [a.name for a in api.calls("delete", "pods")]


async def test_expectations_stop_a_second_sync_before_the_cache_catches_up():
    api = FakeAPI()
    ctrl, recorder = fake_controller(api)
    cached_rs(api, ctrl, 3)
    await ctrl.reconcile("default/web")
    await ctrl.reconcile("default/web")  # the pod watch has shown nothing yet
    assert len(created_pods(api)) == 3
    assert ctrl.expectations.pending("default/web") == (3, 0)
    assert [r for _, r, _ in recorder.events] == ["SuccessfulCreate"] * 3
    made = created_pods(api)[0]
    assert made["metadata"]["generateName"] == "web-"
    assert made["metadata"]["ownerReferences"][0] == {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                                                      "uid": "uid-web", "controller": True,
                                                      "blockOwnerDeletion": True}
    # The informer delivers the creates: now (and only now) it may act again.
    for p in api.objects("pods"):
        ctrl.pod_informer.cache.set(p)
        ctrl._on_pod_add(p)
    assert ctrl.expectations.satisfied("default/web")
    await ctrl.reconcile("default/web")
    assert len(created_pods(api)) == 3 and deleted_pods(api) == []

    # Scale down: deletions are expected by pod key, observed once each.
    ctrl.rs_informer.cache.set(replicaset(replicas=1))
    pods = api.objects("pods")
    await ctrl.reconcile("default/web")
    await ctrl.reconcile("default/web")
    assert len(deleted_pods(api)) == 2
    for p in pods:
        if p["metadata"]["name"] in deleted_pods(api):
            ctrl.pod_informer.cache.delete(f"default/{p['metadata']['name']}")
            ctrl._on_pod_delete(p)
    assert ctrl.expectations.satisfied("default/web")


async def test_failed_creates_stop_the_slow_start_and_set_replica_failure():
    api = FakeAPI()

    def quota(action: Action) -> None:
        if len(api.objects("pods")) >= 3:
            raise InvalidError(422, "Invalid", "pods x is forbidden: exceeded quota")

    api.react("create", "pods", quota)
    ctrl, recorder = fake_controller(api)
    cached_rs(api, ctrl, 20)
    with pytest.raises(InvalidError):
        await ctrl.reconcile("default/web")
    assert len(api.objects("pods")) == 3  # batches 1, 2 ok; the batch of 4 fails and nothing more is tried
    assert len(created_pods(api)) == 7
    assert ctrl.expectations.pending("default/web") == (3, 0)  # only the ones that will show up
    assert ("Warning", "FailedCreate") in {(t, r) for t, r, _ in recorder.events}
    [cond] = api.calls("patch", "replicasets", "status")[-1].body["status"]["conditions"]
    assert (cond["type"], cond["reason"]) == ("ReplicaFailure", "FailedCreate")


async def test_adopts_orphans_and_ignores_terminal_or_deleting_pods():
    api = FakeAPI()
    ctrl, _ = fake_controller(api)
    cached_rs(api, ctrl, 3)
    for p in (pod("orphan", node="n"), pod("done", node="n", phase="Succeeded"), pod("going", deleting=True),
              pod("other", labels={"app": "db"})):
        ctrl.pod_informer.cache.set(api.seed("pods", p))
    await ctrl.reconcile("default/web")
    assert [a.name for a in api.calls("patch", "pods")] == ["orphan"]
    [ref] = next(p for p in api.objects("pods") if p["metadata"]["name"] == "orphan")["metadata"]["ownerReferences"]
    assert (ref["uid"], ref["controller"]) == ("uid-web", True)
    assert len(created_pods(api)) == 2  # 3 wanted, the adopted orphan counts


# -- against a real API server -------------------------------------------------------
def rs_manifest(name: str, replicas: int, *, image: str = "busybox", min_ready: int = 0) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "minReadySeconds": min_ready,
                     "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}}


async def owned(client, ns: str, name: str) -> list[dict[str, Any]]:
    return [p for p in await live_pods(client, ns, f"app={name}")
            if any(r.get("name") == name and r.get("controller") for r in p["metadata"].get("ownerReferences") or [])]


@pytest.mark.slow
async def test_replicaset_converges_replaces_and_scales_down_the_right_pods(apiserver_rsdeploy):
    async with running_controllers(apiserver_rsdeploy, ReplicaSetController) as (ctx, _, kubelet):
        c, ns = ctx.client, "rs-converge"
        await create_namespace(c, ns)
        await c.create("replicasets", rs_manifest("web", 5), namespace=ns)

        async def converged(n: int) -> Any:
            pods = await owned(c, ns, "web")
            rs = await c.get("replicasets", "web", namespace=ns)
            st = rs.get("status") or {}
            ok = (len(pods) == n and all(is_ready(p) for p in pods) and st.get("readyReplicas") == n
                  and st.get("availableReplicas") == n and st.get("replicas") == n
                  and st.get("observedGeneration") == rs["metadata"]["generation"])
            return pods if ok else None

        pods = await wait_for(lambda: converged(5), what="5 ready pods")
        assert all(p["metadata"]["name"].startswith("web-") for p in pods)

        # A deleted pod is replaced.
        victim = pods[0]["metadata"]["name"]
        await c.delete("pods", victim, namespace=ns, grace_period_seconds=0)
        pods = await wait_for(lambda: converged(5), what="replacement")
        assert victim not in {p["metadata"]["name"] for p in pods}

        # Scale down prefers pods that serve nobody: two new ones left Pending.
        assert kubelet is not None
        kubelet.paused = True
        await c.patch("replicasets", "web", {"spec": {"replicas": 7}}, namespace=ns)
        pending = await wait_for(lambda: _pending_names(c, ns), what="two pending pods")
        await c.patch("replicasets", "web", {"spec": {"replicas": 5}}, namespace=ns)
        await wait_for(lambda: _names_gone(c, ns, pending), what="pending pods deleted")
        kubelet.resume()
        pods = await wait_for(lambda: converged(5), what="scale down to 5")
        assert not pending & {p["metadata"]["name"] for p in pods}

        # Events name the pods.
        await ctx.recorder.flush()
        events, _ = await c.list_all("events", namespace=ns)
        messages = {e["message"] for e in events}
        assert {f"Deleted pod: {name}" for name in pending} <= messages
        assert {f"Created pod: {p['metadata']['name']}" for p in pods} <= messages
        assert {e["reason"] for e in events} >= {"SuccessfulCreate", "SuccessfulDelete"}


async def _names_gone(c, ns: str, names: set[str]) -> bool:
    return not names & {p["metadata"]["name"] for p in await owned(c, ns, "web")}


async def _pending_names(c, ns: str) -> set[str] | None:
    pods = await owned(c, ns, "web")
    pending = {p["metadata"]["name"] for p in pods if not p["spec"].get("nodeName")}
    return pending if len(pods) == 7 and len(pending) == 2 else None


@pytest.mark.slow
async def test_replicaset_adopts_and_releases(apiserver_rsdeploy):
    async with running_controllers(apiserver_rsdeploy, ReplicaSetController) as (ctx, _, _k):
        c, ns = ctx.client, "rs-adopt"
        await create_namespace(c, ns)
        await c.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stray", "labels": {"app": "web"}},
                                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, namespace=ns)
        rs = await c.create("replicasets", rs_manifest("web", 3), namespace=ns)
        pods = await wait_for(lambda: _owned_n(c, ns, 3), what="3 owned pods")
        stray = next(p for p in pods if p["metadata"]["name"] == "stray")
        ref = stray["metadata"]["ownerReferences"][0]
        assert (ref["uid"], ref["controller"], ref["blockOwnerDeletion"]) == (rs["metadata"]["uid"], True, True)
        # Relabelled out of the selector: released, and replaced.
        await c.patch("pods", "stray", {"metadata": {"labels": {"app": "other"}}}, namespace=ns)
        pods = await wait_for(lambda: _owned_n(c, ns, 3, exclude="stray"), what="release and replace")
        freed = await c.get("pods", "stray", namespace=ns)
        assert not freed["metadata"].get("ownerReferences")


async def _owned_n(c, ns: str, n: int, exclude: str | None = None) -> list[dict[str, Any]] | None:
    pods = await owned(c, ns, "web")
    names = {p["metadata"]["name"] for p in pods}
    return pods if len(pods) == n and (exclude is None or exclude not in names) else None


@pytest.mark.slow
async def test_replicaset_never_over_creates_while_its_watch_lags(apiserver_rsdeploy):
    # Informers run, the controller's workers do not: we call reconcile ourselves,
    # back to back, before the pod watch can have shown the first round.
    async with running_controllers(apiserver_rsdeploy, ReplicaSetController, kubelet=False,
                                   start=False) as (ctx, [ctrl], _):
        c, ns = ctx.client, "rs-expect"
        await create_namespace(c, ns)
        await c.create("replicasets", rs_manifest("web", 6), namespace=ns)
        await wait_for(lambda: _cached(ctrl, f"{ns}/web"), what="rs in cache")
        creates = 0
        original = ctx.client.create

        async def counting_create(resource, obj, **kw):
            nonlocal creates
            if resource == "pods":
                creates += 1
            return await original(resource, obj, **kw)

        ctx.client.create = counting_create  # type: ignore[method-assign]
        await asyncio.gather(ctrl.reconcile(f"{ns}/web"), ctrl.reconcile(f"{ns}/web"))
        await ctrl.reconcile(f"{ns}/web")
        assert creates == 6
        await wait_for(lambda: _satisfied(ctrl, f"{ns}/web"), what="creates observed")
        await ctrl.reconcile(f"{ns}/web")
        assert creates == 6
        assert len(await owned(c, ns, "web")) == 6


async def _cached(ctrl, key):
    return ctrl.rs_informer.cache.get(key) is not None


async def _satisfied(ctrl, key):
    return ctrl.expectations.satisfied(key)


@pytest.mark.slow
async def test_replicaset_min_ready_seconds_delays_availability(apiserver_rsdeploy):
    async with running_controllers(apiserver_rsdeploy, ReplicaSetController) as (ctx, _, _k):
        c, ns = ctx.client, "rs-minready"
        await create_namespace(c, ns)
        await c.create("replicasets", rs_manifest("web", 2, min_ready=2), namespace=ns)

        async def status() -> dict[str, Any]:
            return (await c.get("replicasets", "web", namespace=ns)).get("status") or {}

        st = await wait_for(lambda: _if(status(), lambda s: s.get("readyReplicas") == 2), what="ready")
        assert st.get("availableReplicas", 0) == 0
        await wait_for(lambda: _if(status(), lambda s: s.get("availableReplicas") == 2), timeout=6,
                       what="available after minReadySeconds")


async def _if(aw, pred):
    value = await aw
    return value if pred(value) else None
