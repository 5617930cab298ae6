"""Resource-quota controller against the FakeAPI, and the quota evaluators (kubepy.meta.quota) in tables."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from kubepy.controllers.context import ControllerConfig, ControllerContext, InformerFactory
from kubepy.controllers.resourcequota import ResourceQuotaController
from kubepy.meta import quota
from kubepy.testing.fakeapi import FakeAPI
from tests.controllers.test_replicaset import FakeRecorder


def pod(name: str, *, phase: str = "Running", cpu: str | None = None, mem_limit: str | None = None,
        init_cpu: str | None = None, **spec: Any) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if cpu:
        res.setdefault("requests", {})["cpu"] = cpu
    if mem_limit:
        res.setdefault("limits", {})["memory"] = mem_limit
    containers = [{"name": "c", "image": "i", **({"resources": res} if res else {})}]
    s: dict[str, Any] = {"containers": containers, **spec}
    if init_cpu:
        s["initContainers"] = [{"name": "init", "image": "i", "resources": {"requests": {"cpu": init_cpu}}}]
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "1"},
            "spec": s, "status": {"phase": phase}}


@pytest.mark.parametrize("obj, want", [
    (pod("a", cpu="250m"), {"count/pods": 1, "pods": 1, "cpu": Decimal("0.25"), "requests.cpu": Decimal("0.25")}),
    (pod("done", phase="Succeeded", cpu="1"), {"count/pods": 1}),          # finished pods cost only their count
    (pod("init", cpu="100m", init_cpu="2"), {"count/pods": 1, "pods": 1, "cpu": 2, "requests.cpu": 2}),
    (pod("mem", mem_limit="1Gi"), {"count/pods": 1, "pods": 1, "limits.memory": 1024 ** 3}),
])
def test_pod_usage(obj, want):
    assert quota.usage("", "pods", obj) == {k: Decimal(v) for k, v in want.items()}


def test_claims_services_and_other_kinds_cost_what_upstream_counts():
    pvc = {"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "5Gi"}}}}
    assert quota.usage("", "persistentvolumeclaims", pvc) == {
        "persistentvolumeclaims": 1, "count/persistentvolumeclaims": 1, "requests.storage": 5 * 1024 ** 3,
        "fast.storageclass.storage.k8s.io/persistentvolumeclaims": 1,
        "fast.storageclass.storage.k8s.io/requests.storage": 5 * 1024 ** 3}
    lb = {"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}}
    assert quota.usage("", "services", lb) == {"services": 1, "count/services": 1, "services.loadbalancers": 1,
                                               "services.nodeports": 2}
    assert quota.usage("apps", "deployments", {}) == {"count/deployments.apps": 1}
    assert quota.kinds_for(["count/deployments.apps", "pods", "requests.storage", "services.nodeports"]) == {
        ("apps", "deployments"), ("", "pods"), ("", "persistentvolumeclaims"), ("", "services")}


def test_scopes():
    q = {"spec": {"hard": {"pods": "1"}, "scopes": ["NotBestEffort"]}}
    assert quota.applies(q, "", "pods", pod("x", cpu="1"))
    assert not quota.applies(q, "", "pods", pod("y"))
    assert not quota.applies(q, "", "services", {})  # a scoped quota charges pods only
    pc = {"spec": {"scopeSelector": {"matchExpressions": [
        {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}}
    assert quota.applies(pc, "", "pods", pod("h", priorityClassName="high"))
    assert not quota.applies(pc, "", "pods", pod("l", priorityClassName="low"))


def controller(api: FakeAPI) -> ResourceQuotaController:
    ctx = ControllerContext(client=api, informers=InformerFactory(api), recorder=FakeRecorder(),  # type: ignore[arg-type]
                            config=ControllerConfig())
    return ResourceQuotaController(ctx)


def arrange(api: FakeAPI, ctrl: Any, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
    stored = api.seed(resource, obj)
    ctrl.ctx.informers.informer(resource).cache.set(stored)
    return stored


async def test_the_controller_counts_used_and_gives_back_what_finished_pods_held():
    api = FakeAPI()
    ctrl = controller(api)
    arrange(api, ctrl, "resourcequotas", {"metadata": {"name": "q", "namespace": "default"},
                                          "spec": {"hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "4Gi"}}})
    arrange(api, ctrl, "pods", pod("a", cpu="500m", mem_limit="1Gi"))
    arrange(api, ctrl, "pods", pod("b", cpu="250m"))
    arrange(api, ctrl, "pods", pod("done", cpu="1", phase="Failed"))
    await ctrl.reconcile("default/q")
    status = api.calls("update", "resourcequotas", "status")[-1].body["status"]
    assert status == {"hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "4Gi"},
                      "used": {"pods": "2", "requests.cpu": "750m", "limits.memory": "1Gi"}}
    # Unchanged: nothing is written again.
    ctrl.quotas.cache.set(api.objects("resourcequotas")[0])
    await ctrl.reconcile("default/q")
    assert len(api.calls("update", "resourcequotas", "status")) == 1


async def test_a_pod_finishing_enqueues_its_namespaces_quotas():
    api = FakeAPI()
    ctrl = controller(api)
    arrange(api, ctrl, "resourcequotas", {"metadata": {"name": "q", "namespace": "default"},
                                          "spec": {"hard": {"pods": "10"}},
                                          "status": {"hard": {"pods": "10"}, "used": {"pods": "1"}}})
    running = pod("a")
    ctrl._object_updated("", "pods")(running, {**running, "status": {"phase": "Running", "podIP": "10.0.0.1"}})
    assert len(ctrl.queue) == 0  # costs the same: nothing to count
    ctrl._object_updated("", "pods")(running, {**running, "status": {"phase": "Succeeded"}})
    assert len(ctrl.queue) == 1
