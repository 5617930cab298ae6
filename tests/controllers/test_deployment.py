"""Deployment controller: pure decisions in tables, then real rollouts judged by kubectl."""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import pytest

from kubepy.controllers.deployment import (
    DeploymentController,
    calculate_status,
    compute_hash,
    deployment_complete,
    deployment_timed_out,
    equal_ignore_hash,
    max_surge,
    max_unavailable,
    new_rs_new_replicas,
    plan_proportional_scale,
    plan_rolling_scale_down,
    progress_check_after,
    resolve_fenceposts,
    safe_encode,
    scaled_value,
)
from kubepy.controllers.replicaset import ReplicaSetController
from tests.controllers.conftest_rsdeploy import (
    apiserver_rsdeploy_fixture,  # noqa: F401 - registers the fixture "apiserver_rsdeploy"
    create_namespace,
    is_ready,
    live_pods,
    running_controllers,
    wait_for,
)

NOW = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
TEMPLATE = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}


# -- hashing ---------------------------------------------------------------------------
def test_hash_is_stable_and_safe():
    h = compute_hash(TEMPLATE)
    assert h == "79bfd649dc"  # pinned: changing it renames every ReplicaSet on upgrade
    reordered = {"spec": {"containers": [{"image": "nginx:1", "name": "c"}]}, "metadata": {"labels": {"app": "web"}}}
    assert compute_hash(reordered) == h
    assert compute_hash({**TEMPLATE, "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}) != h
    assert compute_hash(TEMPLATE, 1) != h and compute_hash(TEMPLATE, 1) == compute_hash(TEMPLATE, 1)
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789") and len(h) <= 10
    assert safe_encode("0123456789") == "456789bcdf"  # Kubernetes' SafeEncodeString


def test_equal_ignore_hash():
    hashed = {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}}, "spec": TEMPLATE["spec"]}
    assert equal_ignore_hash(hashed, TEMPLATE)
    assert not equal_ignore_hash(hashed, {**TEMPLATE, "spec": {"containers": [{"name": "c", "image": "x"}]}})
    assert hashed["metadata"]["labels"]["pod-template-hash"] == "abc"  # inputs untouched


# -- fenceposts --------------------------------------------------------------------------
@pytest.mark.parametrize("value, total, round_up, expected", [
    (3, 10, True, 3), ("25%", 10, True, 3), ("25%", 10, False, 2), ("25%", 4, False, 1), ("25%", 3, False, 0),
    ("25%", 3, True, 1), ("100%", 7, False, 7), ("0%", 5, True, 0), (None, 5, True, 0),
])
def test_scaled_value(value, total, round_up, expected):
    assert scaled_value(value, total, round_up=round_up) == expected


@pytest.mark.parametrize("surge, unavailable, replicas, expected", [
    ("25%", "25%", 10, (3, 2)),
    ("25%", "25%", 4, (1, 1)),
    ("25%", "25%", 1, (1, 0)),
    (0, "25%", 1, (0, 1)),    # both round to zero: one may be unavailable
    ("50%", "0%", 3, (2, 0)),
    (1, 1, 10, (1, 1)),
])
def test_resolve_fenceposts(surge, unavailable, replicas, expected):
    assert resolve_fenceposts(surge, unavailable, replicas) == expected


def deploy(replicas: int = 10, surge: Any = 1, unavailable: Any = 1, *, strategy: str = "RollingUpdate",
           status_replicas: int | None = None, generation: int = 1) -> dict[str, Any]:
    spec: dict[str, Any] = {"replicas": replicas, "strategy": {"type": strategy}, "template": TEMPLATE,
                            "progressDeadlineSeconds": 600}
    if strategy == "RollingUpdate":
        spec["strategy"]["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {"metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": generation},
            "spec": spec, "status": {"replicas": replicas if status_replicas is None else status_replicas}}


def test_max_unavailable_is_capped_and_zero_for_recreate():
    assert max_unavailable(deploy(3, 0, 5)) == 3
    assert max_unavailable(deploy(0, 1, 1)) == 0
    assert max_unavailable(deploy(5, strategy="Recreate")) == 0
    assert max_surge(deploy(5, strategy="Recreate")) == 0
    assert max_surge(deploy(10, "25%", "25%")) == 3


def rs(name: str, replicas: int, available: int | None = None, *, age: int = 0, max_replicas: int | None = None,
       desired: int | None = None) -> dict[str, Any]:
    annotations = {}
    if max_replicas is not None:
        annotations["deployment.kubernetes.io/max-replicas"] = str(max_replicas)
    if desired is not None:
        annotations["deployment.kubernetes.io/desired-replicas"] = str(desired)
    created = (NOW - timedelta(seconds=1000 - age)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": name, "creationTimestamp": created, "annotations": annotations},
            "spec": {"replicas": replicas},
            "status": {"replicas": replicas, "availableReplicas": replicas if available is None else available}}


# -- rolling steps ---------------------------------------------------------------------------
@pytest.mark.parametrize("d, old, new, expected", [
    (deploy(10, 1, 1), [rs("old", 10)], rs("new", 0), 1),          # surge by one
    (deploy(10, 1, 1), [rs("old", 9)], rs("new", 1), 2),           # old shrank: one more
    (deploy(10, 1, 1), [rs("old", 10)], rs("new", 1), 1),          # at max total: wait
    (deploy(10, "25%", "25%"), [rs("old", 10)], rs("new", 0), 3),  # 25% of 10 surges 3
    (deploy(10, 0, 2), [rs("old", 10)], rs("new", 0), 0),          # no surge: old must shrink first
    (deploy(10, 1, 1), [], rs("new", 4), 10),                      # alone: straight to replicas
    (deploy(5, strategy="Recreate"), [rs("old", 3)], rs("new", 0), 5),
])
def test_new_rs_new_replicas(d, old, new, expected):
    assert new_rs_new_replicas(d, [*old, new], new) == expected


def sizes(plan: list[tuple[dict[str, Any], int]]) -> dict[str, int]:
    return {r["metadata"]["name"]: n for r, n in plan}


@pytest.mark.parametrize("d, old, new, expected", [
    # 11 pods, 10 available, min 9: one old may go although the new pod is not available yet
    (deploy(10, 1, 1), [rs("old", 10)], rs("new", 1, 0), {"old": 9}),
    # the new pod is available too: two may go
    (deploy(10, 1, 1), [rs("old", 10)], rs("new", 1, 1), {"old": 8}),
    # no surge: old shrinks by maxUnavailable first
    (deploy(10, 0, 2), [rs("old", 10)], rs("new", 0, 0), {"old": 8}),
    # unhealthy old replicas go first, bounded by the room above the floor (11 - 9 = 2)
    (deploy(10, 1, 1), [rs("old", 10, 6)], rs("new", 1, 1), {"old": 8}),
    # the new RS's unavailable pods use up the room: nothing may go
    (deploy(10, 1, 1), [rs("old", 9)], rs("new", 2, 0), {}),
    # oldest first across several old ReplicaSets
    (deploy(10, 1, 3), [rs("older", 3, age=0), rs("old", 5, age=10)], rs("new", 3, 3), {"older": 0, "old": 4}),
    # nothing old left
    (deploy(10, 1, 1), [rs("old", 0)], rs("new", 10, 10), {}),
])
def test_plan_rolling_scale_down(d, old, new, expected):
    assert sizes(plan_rolling_scale_down(d, new, old)) == expected


def test_rolling_update_never_drops_below_min_available():
    """Simulate a whole rollout where every pod becomes available at once: at
    each step the available count stays >= replicas - maxUnavailable and the
    total stays <= replicas + maxSurge."""
    for surge, unavailable in ((1, 1), (0, 1), (2, 0), ("25%", "25%"), (3, 2)):
        d = deploy(10, surge, unavailable)
        old, new = rs("old", 10), rs("new", 0)
        lowest, highest = 10, 10
        for _ in range(100):
            target = new_rs_new_replicas(d, [old, new], new)
            if target != new["spec"]["replicas"]:
                new = rs("new", target, new["status"]["availableReplicas"])
                highest = max(highest, old["spec"]["replicas"] + new["spec"]["replicas"])
                new = rs("new", target, target)  # the pods come up
                continue
            plan = plan_rolling_scale_down(d, new, [old])
            if not plan:
                break
            [(_, size)] = plan
            old = rs("old", size)
            lowest = min(lowest, old["status"]["availableReplicas"] + new["status"]["availableReplicas"])
        assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (0, 10), (surge, unavailable)
        assert lowest >= 10 - max_unavailable(d), (surge, unavailable)
        assert highest <= 10 + max_surge(d), (surge, unavailable)


@pytest.mark.parametrize("d, old, new, expected", [
    # only one active RS: it takes the new size
    (deploy(15, 1, 1), [rs("old", 0)], rs("new", 10), {"new": 15}),
    (deploy(15, 1, 1), [rs("old", 10)], None, {"old": 15}),
    # mid-rollout 10 -> 20 (surge 1): 11 pods split 6/5 become 21 split by proportion
    (deploy(20, 1, 1, status_replicas=11), [rs("old", 6, max_replicas=11)], rs("new", 5, max_replicas=11),
     {"old": 11, "new": 10}),
    # scale to zero
    (deploy(0, 1, 1), [rs("old", 6, max_replicas=11)], rs("new", 5, max_replicas=11), {"old": 0, "new": 0}),
    # saturated new RS: old ones go to zero
    (deploy(5, 1, 1), [rs("old", 2)], rs("new", 5, 5, desired=5), {"old": 0}),
])
def test_plan_proportional_scale(d, old, new, expected):
    assert sizes(plan_proportional_scale(d, new, old)) == expected


# -- status ------------------------------------------------------------------------------
def test_calculate_status_and_completion():
    d = deploy(4, 1, 1, generation=2)
    old, new = rs("old", 1, 1), rs("new", 3, 2)
    for r, ready in ((old, 1), (new, 3)):
        r["status"]["readyReplicas"] = ready
    status = calculate_status(d, [old, new], new, NOW)
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "readyReplicas": 4,
        "availableReplicas": 3, "unavailableReplicas": 1}
    [avail] = status["conditions"]
    assert (avail["type"], avail["status"], avail["reason"]) == ("Available", "True", "MinimumReplicasAvailable")
    assert not deployment_complete(d, status)
    done = calculate_status(d, [rs("old", 0), rs("new", 4)], rs("new", 4), NOW)
    assert deployment_complete(d, done)
    short = calculate_status(d, [rs("new", 4, 1)], rs("new", 4, 1), NOW)
    assert short["conditions"][0]["reason"] == "MinimumReplicasUnavailable"


def test_progress_deadline():
    d = deploy(4)
    d["spec"]["progressDeadlineSeconds"] = 10

    def status(reason: str, ago: int) -> dict[str, Any]:
        t = (NOW - timedelta(seconds=ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"conditions": [{"type": "Progressing", "status": "True", "reason": reason,
                                "lastUpdateTime": t, "lastTransitionTime": t}]}

    assert not deployment_timed_out(d, status("ReplicaSetUpdated", 5), NOW)
    assert deployment_timed_out(d, status("ReplicaSetUpdated", 11), NOW)
    assert not deployment_timed_out(d, status("NewReplicaSetAvailable", 100), NOW)


@pytest.mark.parametrize("reason,ago,expected", [
    ("ReplicaSetUpdated", 4, 6.0),        # check again when the deadline passes
    ("ReplicaSetUpdated", 30, -20.0),     # overdue: checked (rate limited), then marked timed out
    ("NewReplicaSetCreated", 0, 10.0),
    ("NewReplicaSetAvailable", 30, None),  # a stable Deployment being scaled: can never time out
    ("ProgressDeadlineExceeded", 30, None),
    ("DeploymentPaused", 30, None),
])
def test_progress_check_after(reason: str, ago: int, expected: float | None):
    d = deploy(4)
    d["spec"]["progressDeadlineSeconds"] = 10
    t = (NOW - timedelta(seconds=ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {"replicas": 1, "updatedReplicas": 1, "availableReplicas": 1,
              "conditions": [{"type": "Progressing", "status": "True", "reason": reason,
                              "lastUpdateTime": t, "lastTransitionTime": t}]}
    assert progress_check_after(d, status, NOW) == expected
    del d["spec"]["progressDeadlineSeconds"]
    assert progress_check_after(d, status, NOW) is None


# -- real rollouts -----------------------------------------------------------------------------
def deployment_manifest(name: str, replicas: int, image: str, *, surge: Any = 1, unavailable: Any = 1,
                        strategy: str = "RollingUpdate", history: int = 10, deadline: int = 600) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas, "revisionHistoryLimit": history, "progressDeadlineSeconds": deadline,
        "selector": {"matchLabels": {"app": name}},
        "strategy": {"type": strategy},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "c", "image": image}]}},
    }
    if strategy == "RollingUpdate":
        spec["strategy"]["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


async def kubectl(srv, *args: str, check: bool = True):
    # kubectl blocks: run it off the loop so the controllers keep working.
    return await asyncio.to_thread(srv.kubectl, *args, check=check, timeout=60)


async def rollout_status(srv, ns: str, name: str, *, check: bool = True, timeout: str = "30s"):
    return await kubectl(srv, "rollout", "status", f"deployment/{name}", "-n", ns, f"--timeout={timeout}",
                         check=check)


async def replicasets(c, ns: str) -> list[dict[str, Any]]:
    items, _ = await c.list_all("replicasets", namespace=ns)
    return items


def image_of(obj: dict[str, Any]) -> str:
    return obj["spec"]["template"]["spec"]["containers"][0]["image"]


class Sampler:
    """Watches a namespace's pods continuously: lowest ready count, highest
    live count, and whether two images ever ran side by side."""

    def __init__(self, client, ns: str) -> None:
        self.client, self.ns = client, ns
        self.min_ready: int | None = None
        self.max_live = 0
        self.mixed = False
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            pods = await live_pods(self.client, self.ns)
            ready = sum(1 for p in pods if is_ready(p))
            self.min_ready = ready if self.min_ready is None else min(self.min_ready, ready)
            self.max_live = max(self.max_live, len(pods))
            self.mixed |= len({p["spec"]["containers"][0]["image"] for p in pods}) > 1
            self.samples += 1
            await asyncio.sleep(0.01)

    def __enter__(self) -> Self:
        self._task = asyncio.create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


CONTROLLERS = (DeploymentController, ReplicaSetController)


@pytest.mark.slow
async def test_rollout_update_undo_restart_with_kubectl(apiserver_rsdeploy):
    srv = apiserver_rsdeploy
    async with running_controllers(srv, *CONTROLLERS) as (ctx, _, _k):
        c, ns = ctx.client, "dep-roll"
        await create_namespace(c, ns)
        await c.create("deployments", deployment_manifest("web", 10, "nginx:1"), namespace=ns)
        await rollout_status(srv, ns, "web")

        d = await c.get("deployments", "web", namespace=ns)
        [first] = await replicasets(c, ns)
        pod_hash = first["metadata"]["labels"]["pod-template-hash"]
        assert first["metadata"]["name"] == f"web-{pod_hash}"
        assert first["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": pod_hash}
        assert first["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
        assert first["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "10"
        assert first["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "11"
        assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
        st = d["status"]
        assert (st["replicas"], st["updatedReplicas"], st["readyReplicas"], st["availableReplicas"],
                st.get("unavailableReplicas", 0), st["observedGeneration"]) == (10, 10, 10, 10, 0,
                                                                                 d["metadata"]["generation"])
        conds = {cd["type"]: cd for cd in st["conditions"]}
        assert (conds["Available"]["status"], conds["Available"]["reason"]) == ("True", "MinimumReplicasAvailable")
        assert (conds["Progressing"]["status"], conds["Progressing"]["reason"]) == ("True", "NewReplicaSetAvailable")
        pods = await live_pods(c, ns)
        assert len(pods) == 10 and all(p["metadata"]["labels"]["pod-template-hash"] == pod_hash for p in pods)

        # Rolling update: maxUnavailable=1 means never fewer than 9 ready.
        sampler = Sampler(c, ns)
        with sampler:
            await kubectl(srv, "set", "image", "deployment/web", "c=nginx:2", "-n", ns)
            await rollout_status(srv, ns, "web")
            await sampler.stop()
        assert sampler.samples > 10
        assert sampler.min_ready is not None and sampler.min_ready >= 9, sampler.min_ready
        rss = {r["metadata"]["name"]: r for r in await replicasets(c, ns)}
        assert len(rss) == 2 and rss[first["metadata"]["name"]]["spec"]["replicas"] == 0
        second = next(r for n, r in rss.items() if n != first["metadata"]["name"])
        assert image_of(second) == "nginx:2" and second["spec"]["replicas"] == 10
        assert second["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
        pods = await live_pods(c, ns)
        assert {p["spec"]["containers"][0]["image"] for p in pods} == {"nginx:2"} and len(pods) == 10

        history = (await kubectl(srv, "rollout", "history", "deployment/web", "-n", ns)).stdout
        assert re.search(r"^1\s", history, re.MULTILINE) and re.search(r"^2\s", history, re.MULTILINE), history

        # Undo (client-side in kubectl): the first ReplicaSet comes back as revision 3.
        await kubectl(srv, "rollout", "undo", "deployment/web", "-n", ns)
        await rollout_status(srv, ns, "web")
        d = await c.get("deployments", "web", namespace=ns)
        assert image_of(d) == "nginx:1"
        rss = {r["metadata"]["name"]: r for r in await replicasets(c, ns)}
        assert len(rss) == 2, sorted(rss)
        reused = rss[first["metadata"]["name"]]
        assert reused["spec"]["replicas"] == 10
        assert reused["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
        assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"

        # Restart: a new template annotation, hence a new ReplicaSet.
        await kubectl(srv, "rollout", "restart", "deployment/web", "-n", ns)
        await rollout_status(srv, ns, "web")
        rss = await replicasets(c, ns)
        assert len(rss) == 3
        newest = next(r for r in rss if r["spec"]["replicas"] == 10)
        assert "kubectl.kubernetes.io/restartedAt" in newest["spec"]["template"]["metadata"]["annotations"]
        assert newest["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4"

        await ctx.recorder.flush()
        events, _ = await c.list_all("events", namespace=ns)
        scaling = [e["message"] for e in events if e["reason"] == "ScalingReplicaSet"]
        assert any(re.fullmatch(r"Scaled up replica set web-\w+ from 0 to 1", m) for m in scaling), scaling
        assert any(re.fullmatch(r"Scaled down replica set web-\w+ from 10 to 9", m) for m in scaling), scaling


@pytest.mark.slow
async def test_scaling_past_the_progress_deadline_does_not_stop_the_controllers(apiserver_rsdeploy, caplog):
    # Issue 11's livelock: a Deployment stable for longer than its progress deadline, then scaled,
    # was requeued at once forever on the one event loop and nothing else progressed. The work
    # queue now backs such a key off (and says so); the controller must not need that.
    srv = apiserver_rsdeploy
    caplog.set_level("WARNING", logger="kubepy.client.workqueue")
    async with running_controllers(srv, *CONTROLLERS) as (ctx, controllers, _k):
        c, ns = ctx.client, "dep-deadline"
        await create_namespace(c, ns)
        # The deadline is also what the scaled pods get to become Ready in: 1 s failed on a loaded host.
        await c.create("deployments", deployment_manifest("old", 1, "nginx:1", deadline=3), namespace=ns)
        await rollout_status(srv, ns, "old")
        await asyncio.sleep(3.5)  # the Progressing condition is now older than the deadline
        await kubectl(srv, "scale", "deployment/old", "--replicas=3", "-n", ns)
        await c.create("deployments", deployment_manifest("new", 2, "nginx:1"), namespace=ns)
        await rollout_status(srv, ns, "new")
        await rollout_status(srv, ns, "old")
    hot = [r.getMessage() for r in caplog.records if "hot requeue" in r.getMessage()]
    assert not hot, hot


@pytest.mark.slow
async def test_never_ready_rollout_stops_and_old_pods_keep_serving(apiserver_rsdeploy):
    srv = apiserver_rsdeploy
    async with running_controllers(srv, *CONTROLLERS, never_ready_images={"broken:1"}) as (ctx, _, _k):
        c, ns = ctx.client, "dep-stuck"
        await create_namespace(c, ns)
        await c.create("deployments", deployment_manifest("web", 4, "nginx:1", deadline=2), namespace=ns)
        await rollout_status(srv, ns, "web")
        sampler = Sampler(c, ns)
        with sampler:
            await kubectl(srv, "set", "image", "deployment/web", "c=broken:1", "-n", ns)
            cp = await rollout_status(srv, ns, "web", check=False, timeout="20s")
            await sampler.stop()
        assert cp.returncode != 0
        assert "exceeded its progress deadline" in cp.stderr + cp.stdout, cp.stderr
        assert sampler.min_ready is not None and sampler.min_ready >= 3, sampler.min_ready
        d = await c.get("deployments", "web", namespace=ns)
        progressing = next(cd for cd in d["status"]["conditions"] if cd["type"] == "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
        by_image = {image_of(r): r for r in await replicasets(c, ns)}
        assert by_image["nginx:1"]["spec"]["replicas"] == 3 and by_image["nginx:1"]["status"]["readyReplicas"] == 3
        assert by_image["broken:1"]["spec"]["replicas"] == 2  # surge + the one unavailable slot, then stuck
        ready = [p for p in await live_pods(c, ns) if is_ready(p)]
        assert len(ready) == 3 and {p["spec"]["containers"][0]["image"] for p in ready} == {"nginx:1"}

        await kubectl(srv, "rollout", "undo", "deployment/web", "-n", ns)
        await rollout_status(srv, ns, "web")
        by_image = {image_of(r): r for r in await replicasets(c, ns)}
        assert (by_image["nginx:1"]["spec"]["replicas"], by_image["broken:1"]["spec"]["replicas"]) == (4, 0)


@pytest.mark.slow
async def test_revision_history_limit_trims_old_replicasets(apiserver_rsdeploy):
    srv = apiserver_rsdeploy
    async with running_controllers(srv, *CONTROLLERS) as (ctx, _, _k):
        c, ns = ctx.client, "dep-history"
        await create_namespace(c, ns)
        await c.create("deployments", deployment_manifest("web", 2, "nginx:1", history=1), namespace=ns)
        await rollout_status(srv, ns, "web")
        for version in (2, 3, 4):
            await kubectl(srv, "set", "image", "deployment/web", f"c=nginx:{version}", "-n", ns)
            await rollout_status(srv, ns, "web")

        async def trimmed() -> Any:
            rss = await replicasets(c, ns)
            return rss if len(rss) == 2 else None

        rss = await wait_for(trimmed, what="history trimmed to 1 old ReplicaSet")
        assert sorted(image_of(r) for r in rss) == ["nginx:3", "nginx:4"]


@pytest.mark.slow
async def test_recreate_stops_old_pods_before_starting_new(apiserver_rsdeploy):
    srv = apiserver_rsdeploy
    async with running_controllers(srv, *CONTROLLERS) as (ctx, _, _k):
        c, ns = ctx.client, "dep-recreate"
        await create_namespace(c, ns)
        await c.create("deployments", deployment_manifest("web", 3, "nginx:1", strategy="Recreate"), namespace=ns)
        await rollout_status(srv, ns, "web")
        sampler = Sampler(c, ns)
        with sampler:
            await kubectl(srv, "set", "image", "deployment/web", "c=nginx:2", "-n", ns)
            await rollout_status(srv, ns, "web")
            await sampler.stop()
        assert not sampler.mixed and sampler.max_live <= 3
        pods = await live_pods(c, ns)
        assert len(pods) == 3 and {p["spec"]["containers"][0]["image"] for p in pods} == {"nginx:2"}


@pytest.mark.slow
async def test_pause_scales_without_rolling_and_resume_rolls(apiserver_rsdeploy):
    srv = apiserver_rsdeploy
    async with running_controllers(srv, *CONTROLLERS) as (ctx, _, _k):
        c, ns = ctx.client, "dep-pause"
        await create_namespace(c, ns)
        await c.create("deployments", deployment_manifest("web", 2, "nginx:1"), namespace=ns)
        await rollout_status(srv, ns, "web")
        await kubectl(srv, "rollout", "pause", "deployment/web", "-n", ns)
        await kubectl(srv, "set", "image", "deployment/web", "c=nginx:2", "-n", ns)
        await kubectl(srv, "scale", "deployment/web", "--replicas=4", "-n", ns)

        async def scaled() -> Any:
            rss = await replicasets(c, ns)
            d = await c.get("deployments", "web", namespace=ns)
            ok = (len(rss) == 1 and rss[0]["spec"]["replicas"] == 4
                  and d["status"].get("observedGeneration") == d["metadata"]["generation"]
                  and d["status"].get("availableReplicas") == 4)
            return d if ok else None

        d = await wait_for(scaled, what="paused deployment scaled in place")
        progressing = next(cd for cd in d["status"]["conditions"] if cd["type"] == "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("Unknown", "DeploymentPaused")
        assert image_of((await replicasets(c, ns))[0]) == "nginx:1"

        await kubectl(srv, "rollout", "resume", "deployment/web", "-n", ns)
        await rollout_status(srv, ns, "web")
        pods = await live_pods(c, ns)
        assert len(pods) == 4 and {p["spec"]["containers"][0]["image"] for p in pods} == {"nginx:2"}
