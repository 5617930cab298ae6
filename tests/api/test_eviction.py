"""``pods/eviction`` and the ReplicationController's ``scale`` in process, against the aiohttp app.

Eviction as Kubernetes' EvictionREST answers it: deleted (201 Status), or
429 TooManyRequests with the DisruptionBudget cause when the pod's budget has
no disruption left (the budget is spent by a compare-and-swap write of its
status first), 500 when two budgets select the pod, and no budget consulted
for Pending, terminal or terminating pods. Budgets' statuses are written here
by hand, as their controller would.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.api.test_semantics import NS, PODS, api, call  # noqa: F401 - api is a fixture
from tests.unit.test_protobuf import envelope, f_msg, f_varint, objmeta

PDBS = f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets"
RCS = f"/api/v1/namespaces/{NS}/replicationcontrollers"
VIOLATES = "Cannot evict pod as it would violate the pod's disruption budget."


def eviction(name: str, api_version: str = "policy/v1", **delete_options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": api_version, "kind": "Eviction", "metadata": {"name": name}}
    if delete_options:
        body["deleteOptions"] = delete_options
    return body


async def make_pod(api: TestClient, name: str, *, phase: str = "Running", ready: bool = True,
                   labels: dict[str, str] | None = None, node: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    pod = await call(api, "POST", PODS, {"apiVersion": "v1", "kind": "Pod",
                                         "metadata": {"name": name, "labels": labels or {"app": "web"}},
                                         "spec": spec}, status=201)
    pod["status"] = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return await call(api, "PUT", f"{PODS}/{name}/status", pod)


async def make_pdb(api: TestClient, name: str = "web", *, allowed: int, current: int = 2, desired: int = 2,
                   selector: dict[str, str] | None = None, observed: bool = True, **spec: Any) -> dict[str, Any]:
    pdb = await call(api, "POST", PDBS, {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
        "spec": {"minAvailable": desired, "selector": {"matchLabels": selector or {"app": "web"}}, **spec}},
        status=201)
    pdb["status"] = {"observedGeneration": pdb["metadata"]["generation"] if observed else 0,
                     "disruptionsAllowed": allowed, "currentHealthy": current, "desiredHealthy": desired,
                     "expectedPods": current}
    return await call(api, "PUT", f"{PDBS}/{name}/status", pdb)


async def evict(api: TestClient, name: str, *, status: int = 201, **kw: Any) -> dict[str, Any]:
    return await call(api, "POST", f"{PODS}/{name}/eviction", eviction(name, **kw), status=status)


async def exists(api: TestClient, name: str) -> bool:
    resp = await api.get(f"{PODS}/{name}")
    return resp.status == 200


# -- discovery ---------------------------------------------------------------------------
async def test_discovery_lists_pods_eviction_as_policy_v1(api: TestClient) -> None:
    resources = {r["name"]: r for r in (await call(api, "GET", "/api/v1"))["resources"]}
    assert {k: resources["pods/eviction"][k] for k in ("kind", "group", "version", "verbs")} == {
        "kind": "Eviction", "group": "policy", "version": "v1", "verbs": ["create"]}
    policy = {r["name"] for r in (await call(api, "GET", "/apis/policy/v1"))["resources"]}
    assert policy == {"poddisruptionbudgets", "poddisruptionbudgets/status"}


# -- no budget / budgets not consulted ---------------------------------------------------
async def test_evicting_a_pod_without_budget_deletes_it(api: TestClient) -> None:
    await make_pod(api, "a")
    body = await evict(api, "a")
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
    assert not await exists(api, "a")


async def test_pending_terminal_and_terminating_pods_ignore_the_budget(api: TestClient) -> None:
    await make_pdb(api, allowed=0)
    await make_pod(api, "pending", phase="Pending", ready=False)
    await make_pod(api, "done", phase="Succeeded", ready=False)
    await make_pod(api, "going", node="n1")  # bound and running: deletion is graceful, it stays terminating
    await call(api, "DELETE", f"{PODS}/going")
    for name in ("pending", "done", "going"):
        await evict(api, name)
    assert not await exists(api, "pending") and not await exists(api, "done")
    assert (await call(api, "GET", f"{PODS}/going"))["metadata"]["deletionTimestamp"]
    pdb = await call(api, "GET", f"{PDBS}/web")
    assert pdb["status"]["disruptionsAllowed"] == 0 and "disruptedPods" not in pdb["status"]


# -- the budget --------------------------------------------------------------------------
async def test_an_eviction_that_breaks_the_budget_is_429(api: TestClient) -> None:
    await make_pdb(api, allowed=0, current=2, desired=2)
    await make_pod(api, "a")
    body = await evict(api, "a", status=429)
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": VIOLATES,
                    "reason": "TooManyRequests", "details": {"causes": [
                        {"reason": "DisruptionBudget",
                         "message": "The disruption budget web needs 2 healthy pods and has 2 currently"}]},
                    "code": 429}
    assert await exists(api, "a")


async def test_an_allowed_eviction_spends_the_budget_first(api: TestClient) -> None:
    await make_pdb(api, allowed=1, current=3, desired=2)
    await make_pod(api, "a")
    await make_pod(api, "b")
    await evict(api, "a")
    assert not await exists(api, "a")
    status = (await call(api, "GET", f"{PDBS}/web"))["status"]
    assert status["disruptionsAllowed"] == 0
    assert list(status["disruptedPods"]) == ["a"]
    [cond] = status["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("DisruptionAllowed", "False", "InsufficientPods")
    await evict(api, "b", status=429)
    assert await exists(api, "b")


async def test_concurrent_evictions_spend_one_disruption_once(api: TestClient) -> None:
    await make_pdb(api, allowed=1, current=3, desired=2)
    for name in ("a", "b", "c"):
        await make_pod(api, name)
    responses = await asyncio.gather(*(api.post(f"{PODS}/{n}/eviction", json=eviction(n)) for n in ("a", "b", "c")))
    assert sorted(r.status for r in responses) == [201, 429, 429]
    assert sum([await exists(api, n) for n in ("a", "b", "c")]) == 2


async def test_a_budget_its_controller_has_not_seen_is_429(api: TestClient) -> None:
    await make_pdb(api, allowed=1, observed=False)
    await make_pod(api, "a")
    body = await evict(api, "a", status=429)
    assert body["details"] == {"causes": [{"reason": "DisruptionBudget", "message":
                                           "The disruption budget web is still being processed by the server."}],
                               "retryAfterSeconds": 10}


async def test_two_budgets_for_one_pod_is_500(api: TestClient) -> None:
    await make_pdb(api, "one", allowed=1)
    await make_pdb(api, "two", allowed=1)
    await make_pod(api, "a")
    body = await evict(api, "a", status=500)
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 500,
                    "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource "
                               "does not support."}
    assert await exists(api, "a")


async def test_unready_pods_follow_the_unhealthy_pod_eviction_policy(api: TestClient) -> None:
    # IfHealthyBudget (the default): an unready pod goes while the budget is met, without spending it ...
    await make_pdb(api, allowed=0, current=2, desired=2)
    await make_pod(api, "sick", ready=False)
    await evict(api, "sick")
    assert not await exists(api, "sick")
    assert (await call(api, "GET", f"{PDBS}/web"))["status"]["disruptionsAllowed"] == 0
    # ... but not while it is not.
    await call(api, "DELETE", f"{PDBS}/web")
    await make_pdb(api, allowed=0, current=1, desired=2)
    await make_pod(api, "sick2", ready=False)
    await evict(api, "sick2", status=429)
    # AlwaysAllow: an unready pod always goes.
    await call(api, "DELETE", f"{PDBS}/web")
    await make_pdb(api, allowed=0, current=1, desired=2, unhealthyPodEvictionPolicy="AlwaysAllow")
    await evict(api, "sick2")
    assert not await exists(api, "sick2")


async def test_dry_run_deletes_nothing_and_spends_nothing(api: TestClient) -> None:
    await make_pdb(api, allowed=1, current=3, desired=2)
    await make_pod(api, "a")
    await evict(api, "a", dryRun=["All"])
    assert await exists(api, "a")
    assert (await call(api, "GET", f"{PDBS}/web"))["status"]["disruptionsAllowed"] == 1


async def test_bad_evictions_are_400(api: TestClient) -> None:
    await make_pod(api, "a")
    body = await call(api, "POST", f"{PODS}/a/eviction", eviction("b"), status=400)
    assert body["message"] == "name in URL does not match name in Eviction object"
    await call(api, "GET", f"{PODS}/a/eviction", status=405)


async def test_v1beta1_and_protobuf_evictions_with_delete_options(api: TestClient) -> None:
    await make_pod(api, "a", node="n1")
    await evict(api, "a", api_version="policy/v1beta1", gracePeriodSeconds=7)
    going = await call(api, "GET", f"{PODS}/a")
    assert going["metadata"]["deletionGracePeriodSeconds"] == 7
    cond = next(c for c in going["status"]["conditions"] if c["type"] == "DisruptionTarget")
    assert (cond["status"], cond["reason"], cond["message"]) == ("True", "EvictionByEvictionAPI",
                                                                 "Eviction API: evicting")
    await make_pod(api, "b")
    raw = objmeta("b", NS) + f_msg(2, f_varint(1, 0))  # deleteOptions {gracePeriodSeconds: 0}
    resp = await api.post(f"{PODS}/b/eviction", data=envelope("policy/v1", "Eviction", raw),
                          headers={"Content-Type": "application/vnd.kubernetes.protobuf"})
    assert resp.status == 201, await resp.text()
    assert not await exists(api, "b")


# -- ReplicationController: defaults, validation, scale ------------------------------------
def rc(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": name},
            "spec": {"template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, **spec}}


async def test_replication_controller_defaults_validation_and_scale(api: TestClient) -> None:
    made = await call(api, "POST", RCS, rc(), status=201)
    assert made["spec"]["selector"] == {"app": "web"} and made["spec"]["replicas"] == 1
    assert made["metadata"]["labels"] == {"app": "web"}
    bad = await call(api, "POST", RCS, rc("x", selector={"app": "other"}), status=422)
    assert bad["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.template.metadata.labels",
                                         "message": 'Invalid value: {"app":"x"}: `selector` does not match '
                                                    "template `labels`"}]
    scale = await call(api, "GET", f"{RCS}/web/scale")
    assert (scale["kind"], scale["spec"], scale["status"]) == (
        "Scale", {"replicas": 1}, {"replicas": 0, "selector": "app=web"})
    await call(api, "PATCH", f"{RCS}/web/scale", {"spec": {"replicas": 4}},
               content_type="application/merge-patch+json")
    assert (await call(api, "GET", f"{RCS}/web"))["spec"]["replicas"] == 4
    table = await api.get(RCS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    [row] = (await table.json())["rows"]
    assert row["cells"][:4] == ["web", 4, 0, 0] and row["cells"][5:] == ["c", "busybox", "app=web"]


async def test_pod_disruption_budget_validation(api: TestClient) -> None:
    def budget(**spec: Any) -> dict[str, Any]:
        return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "b"},
                "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec}}

    bad = await call(api, "POST", PDBS, budget(minAvailable=1, maxUnavailable="101%",
                                               unhealthyPodEvictionPolicy="Sometimes"), status=422)
    assert [(c["field"], c["message"].rsplit(": ", 1)[-1]) for c in bad["details"]["causes"]] == [
        ("spec", "minAvailable and maxUnavailable cannot be both set"),
        ("spec.maxUnavailable", "must not be greater than 100%"),
        ("spec.unhealthyPodEvictionPolicy", '"AlwaysAllow", "IfHealthyBudget"'),
    ]
    bad = await call(api, "POST", PDBS, budget(minAvailable=-1), status=422)
    assert bad["details"]["causes"][0]["message"] == "Invalid value: -1: must be greater than or equal to 0"
    made = await call(api, "POST", PDBS, budget(maxUnavailable="25%"), status=201)
    assert "status" not in made or not made["status"].get("disruptionsAllowed")
    table = await api.get(PDBS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    [row] = (await table.json())["rows"]
    assert row["cells"][:4] == ["b", "N/A", "25%", 0]
