"""PriorityClass and Priority admission in process, against the aiohttp app (upstream's messages)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.api.test_semantics import NS, PODS, api, call  # noqa: F401 - api is a fixture

PCS = "/apis/scheduling.k8s.io/v1/priorityclasses"


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def pc(name: str, value: int, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
            "value": value, **fields}


async def test_the_system_classes_exist_from_the_start(api: TestClient) -> None:
    got = {i["metadata"]["name"]: (i["value"], i["preemptionPolicy"]) for i in (await call(api, "GET", PCS))["items"]}
    assert got == {"system-cluster-critical": (2000000000, "PreemptLowerPriority"),
                   "system-node-critical": (2000001000, "PreemptLowerPriority")}


async def test_a_pod_takes_its_priority_from_its_class(api: TestClient) -> None:
    await call(api, "POST", PCS, pc("high", 1000, preemptionPolicy="Never"), status=201)
    created = await call(api, "POST", PODS, pod("p", priorityClassName="high"), status=201)
    assert (created["spec"]["priority"], created["spec"]["preemptionPolicy"]) == (1000, "Never")
    plain = await call(api, "POST", PODS, pod("plain"), status=201)
    assert (plain["spec"]["priority"], plain["spec"]["preemptionPolicy"]) == (0, "PreemptLowerPriority")
    crit = await call(api, "POST", PODS, pod("crit", priorityClassName="system-node-critical"), status=201)
    assert crit["spec"]["priority"] == 2000001000


async def test_unknown_classes_and_disagreeing_priorities_are_refused(api: TestClient) -> None:
    body = await call(api, "POST", PODS, pod("x", priorityClassName="nope"), status=403)
    assert body["message"] == 'pods "x" is forbidden: no PriorityClass with name nope was found'
    await call(api, "POST", PCS, pc("mid", 10), status=201)
    body = await call(api, "POST", PODS, pod("y", priorityClassName="mid", priority=5), status=403)
    assert body["message"] == ('pods "y" is forbidden: the integer value of priority (5) must not be provided in '
                               'pod spec; priority admission controller computed 10 from the given PriorityClass name')
    # The same value is fine (a pod spec copied from `kubectl get -o yaml`).
    await call(api, "POST", PODS, pod("z", priorityClassName="mid", priority=10), status=201)


async def test_the_global_default_applies_and_is_unique(api: TestClient) -> None:
    await call(api, "POST", PCS, pc("default-prio", 7, globalDefault=True), status=201)
    created = await call(api, "POST", PODS, pod("d"), status=201)
    assert (created["spec"]["priorityClassName"], created["spec"]["priority"]) == ("default-prio", 7)
    body = await call(api, "POST", PCS, pc("another", 8, globalDefault=True), status=403)
    assert body["message"] == ('priorityclasses.scheduling.k8s.io "another" is forbidden: PriorityClass '
                               'default-prio is already marked as default. Only one default can exist')


async def test_priority_class_validation(api: TestClient) -> None:
    body = await call(api, "POST", PCS, pc("system-mine", 5), status=422)
    assert body["details"]["causes"][0]["message"] == \
        "Forbidden: priority class names with 'system-' prefix are reserved for system use only"
    body = await call(api, "POST", PCS, pc("huge", 1000000001), status=422)
    assert body["details"]["causes"][0]["message"] == \
        "Forbidden: maximum allowed value of a user defined priority is 1000000000"
    made = await call(api, "POST", PCS, pc("fixed", 3), status=201)
    made["value"] = 4
    body = await call(api, "PUT", f"{PCS}/fixed", made, status=422)
    assert body["message"] == 'PriorityClass.scheduling.k8s.io "fixed" is invalid: value: Forbidden: may not be changed in an update.'


async def test_scheduling_gates_hold_a_pod_and_may_only_be_removed(api: TestClient) -> None:
    created = await call(api, "POST", PODS, pod("gated", schedulingGates=[{"name": "example.com/wait"}]), status=201)
    [cond] = created["status"]["conditions"]
    assert (cond["type"], cond["status"], cond["reason"], cond["message"]) == (
        "PodScheduled", "False", "SchedulingGated", "Scheduling is blocked due to non-empty scheduling gates")
    created["spec"]["schedulingGates"].append({"name": "another"})
    body = await call(api, "PUT", f"{PODS}/gated", created, status=422)
    assert body["details"]["causes"] == [{"reason": "FieldValueForbidden", "field": "spec.schedulingGates[1].name",
                                          "message": "Forbidden: only deletion is allowed, but found new scheduling "
                                                     "gate 'another'"}]
    created["spec"]["schedulingGates"] = []
    await call(api, "PUT", f"{PODS}/gated", created, status=200)
    body = await call(api, "POST", PODS, pod("both", nodeName="n1", schedulingGates=[{"name": "a"}, {"name": "a"}]),
                      status=422)
    fields = {c["field"]: c["message"] for c in body["details"]["causes"]}
    assert fields == {"spec.schedulingGates[1]": 'Duplicate value: "a"',
                      "spec.nodeName": "Forbidden: cannot be set until all schedulingGates have been cleared"}
