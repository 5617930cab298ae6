"""ResourceQuota and LimitRange admission in process, against the aiohttp app.

Messages are Kubernetes' (plugin/pkg/admission/resourcequota,
plugin/pkg/admission/limitranger): a refused write is 403 Forbidden
``pods "x" is forbidden: …``. No quota controller runs here: admission
counts a quota it finds without ``status.used`` from the store, and charges
``status.used`` itself on every admitted write.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.api.test_semantics import NS, PODS, api, call  # noqa: F401 - api is a fixture

QUOTAS = f"/api/v1/namespaces/{NS}/resourcequotas"
LIMITS = f"/api/v1/namespaces/{NS}/limitranges"
SERVICES = f"/api/v1/namespaces/{NS}/services"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"


def pod(name: str, *, requests: dict | None = None, limits: dict | None = None, containers: int = 1,
        **spec: Any) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if requests:
        res["requests"] = requests
    if limits:
        res["limits"] = limits
    cs = [{"name": f"c{i}", "image": "busybox", **({"resources": res} if res else {})} for i in range(containers)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": cs, **spec}}


async def quota(api: TestClient, name: str, hard: dict[str, str], **spec: Any) -> dict[str, Any]:
    return await call(api, "POST", QUOTAS, {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
                                            "spec": {"hard": hard, **spec}}, status=201)


async def limit_range(api: TestClient, *items: dict[str, Any], name: str = "limits") -> dict[str, Any]:
    return await call(api, "POST", LIMITS, {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": name},
                                            "spec": {"limits": list(items)}}, status=201)


async def used(api: TestClient, name: str) -> dict[str, str]:
    return ((await call(api, "GET", f"{QUOTAS}/{name}")).get("status") or {}).get("used") or {}


# -- ResourceQuota -------------------------------------------------------------------------------
async def test_a_pod_past_the_pods_quota_is_refused_with_kubernetes_message(api: TestClient) -> None:
    await quota(api, "q", {"pods": "2"})
    await call(api, "POST", PODS, pod("a"), status=201)
    await call(api, "POST", PODS, pod("b"), status=201)
    assert await used(api, "q") == {"pods": "2"}
    body = await call(api, "POST", PODS, pod("c"), status=403)
    assert body["reason"] == "Forbidden"
    assert body["message"] == ('pods "c" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, '
                               'limited: pods=2')
    assert body["details"] == {"name": "c", "kind": "pods"}


async def test_compute_quota_requires_and_sums_requests_and_limits(api: TestClient) -> None:
    await quota(api, "compute", {"requests.cpu": "1", "limits.memory": "1Gi"})
    body = await call(api, "POST", PODS, pod("bare"), status=403)
    assert body["message"] == ('pods "bare" is forbidden: failed quota: compute: must specify '
                               'limits.memory for: c0; requests.cpu for: c0')
    await call(api, "POST", PODS, pod("p1", requests={"cpu": "600m"}, limits={"memory": "512Mi"}), status=201)
    assert await used(api, "compute") == {"requests.cpu": "600m", "limits.memory": "512Mi"}
    body = await call(api, "POST", PODS, pod("p2", requests={"cpu": "300m"}, limits={"memory": "768Mi"}), status=403)
    assert body["message"] == ('pods "p2" is forbidden: exceeded quota: compute, requested: limits.memory=768Mi, '
                               'used: limits.memory=512Mi, limited: limits.memory=1Gi')
    # Two containers: the pod costs their sum.
    body = await call(api, "POST", PODS, pod("p3", containers=2, requests={"cpu": "250m"}, limits={"memory": "256Mi"}),
                      status=403)
    assert "requested: requests.cpu=500m" in body["message"], body["message"]


async def test_object_counts_and_services_nodeports(api: TestClient) -> None:
    await quota(api, "objects", {"count/deployments.apps": "0", "configmaps": "1", "services.nodeports": "1"})
    body = await call(api, "POST", DEPLOYMENTS, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}, status=403)
    assert body["message"] == ('deployments.apps "d" is forbidden: exceeded quota: objects, '
                               'requested: count/deployments.apps=1, used: count/deployments.apps=0, '
                               'limited: count/deployments.apps=0')
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "one"}}
    await call(api, "POST", CONFIGMAPS, cm, status=201)
    body = await call(api, "POST", CONFIGMAPS, {**cm, "metadata": {"name": "two"}}, status=403)
    assert "exceeded quota: objects, requested: configmaps=1, used: configmaps=1" in body["message"]
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np"},
           "spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81, "name": "b"}],
                    "selector": {"a": "b"}}}
    svc["spec"]["ports"][0]["name"] = "a"
    body = await call(api, "POST", SERVICES, svc, status=403)
    assert "requested: services.nodeports=2, used: services.nodeports=0, limited: services.nodeports=1" \
        in body["message"]
    # A ClusterIP service costs no node port; turning it into a NodePort one is charged on the update.
    svc["spec"] = {"ports": [{"port": 80}], "selector": {"a": "b"}}
    created = await call(api, "POST", SERVICES, svc, status=201)
    created["spec"]["type"] = "NodePort"
    await call(api, "PUT", f"{SERVICES}/np", created, status=200)
    assert (await used(api, "objects"))["services.nodeports"] == "1"


async def test_scopes_select_the_pods_a_quota_charges(api: TestClient) -> None:
    await quota(api, "best-effort", {"pods": "1"}, scopes=["BestEffort"])
    await call(api, "POST", PODS, pod("be1"), status=201)
    body = await call(api, "POST", PODS, pod("be2"), status=403)
    assert "exceeded quota: best-effort" in body["message"]
    # A pod with requests is not BestEffort: the quota does not see it.
    await call(api, "POST", PODS, pod("burst", requests={"cpu": "100m"}), status=201)
    bad = await call(api, "POST", QUOTAS, {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "x"},
                                           "spec": {"hard": {"cpu": "1"}, "scopes": ["BestEffort"]}}, status=422)
    assert bad["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.hard[cpu]",
                                         "message": 'Invalid value: "cpu": unsupported scope applied to resource'}]


async def test_a_dry_run_is_checked_but_charges_nothing(api: TestClient) -> None:
    await quota(api, "q", {"pods": "1"})
    await call(api, "POST", f"{PODS}?dryRun=All", pod("dry"), status=201)
    assert (await used(api, "q")).get("pods", "0") == "0"
    await call(api, "POST", PODS, pod("real"), status=201)
    await call(api, "POST", f"{PODS}?dryRun=All", pod("dry"), status=403)


async def test_concurrent_creates_never_exceed_the_quota(api: TestClient) -> None:
    await quota(api, "q", {"pods": "5"})
    results = await asyncio.gather(*(api.post(PODS, json=pod(f"p{i}")) for i in range(12)))
    assert sorted(r.status for r in results) == [201] * 5 + [403] * 7
    assert await used(api, "q") == {"pods": "5"}


async def test_quota_validation_and_printer(api: TestClient) -> None:
    body = await call(api, "POST", QUOTAS, {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "bad"},
                                            "spec": {"hard": {"pods": "-1", "widgets": "1"}}}, status=422)
    fields = {c["field"]: c["message"] for c in body["details"]["causes"]}
    assert fields == {"spec.hard[pods]": 'Invalid value: "-1": must be greater than or equal to 0',
                      "spec.hard[widgets]": 'Invalid value: "widgets": must be a standard resource for quota'}
    await quota(api, "q", {"pods": "3", "limits.cpu": "2"})
    await call(api, "POST", PODS, pod("a", limits={"cpu": "500m"}), status=201)
    resp = await api.get(QUOTAS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    table = await resp.json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age", "Request", "Limit"]
    row = table["rows"][0]["cells"]
    assert row[0] == "q" and row[2] == "pods: 1/3" and row[3] == "limits.cpu: 500m/2"


# -- LimitRange ----------------------------------------------------------------------------------
async def test_limit_range_fills_in_defaults_and_notes_them(api: TestClient) -> None:
    lr = await limit_range(api, {"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"},
                                 "defaultRequest": {"cpu": "100m"}})
    # The item is defaulted as upstream: defaultRequest memory from default.
    assert lr["spec"]["limits"][0]["defaultRequest"] == {"cpu": "100m", "memory": "256Mi"}
    created = await call(api, "POST", PODS, pod("p"), status=201)
    assert created["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "256Mi"}}
    assert created["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == (
        "LimitRanger plugin set: cpu, memory request for container c0; cpu, memory limit for container c0")
    # What a container names itself is kept.
    mine = await call(api, "POST", PODS, pod("mine", requests={"cpu": "200m"}, limits={"cpu": "300m"}), status=201)
    assert mine["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "300m", "memory": "256Mi"}
    assert mine["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == (
        "LimitRanger plugin set: memory request for container c0; memory limit for container c0")


async def test_limit_range_bounds_containers_pods_and_claims(api: TestClient) -> None:
    await limit_range(api, {"type": "Container", "max": {"cpu": "1"}, "min": {"cpu": "100m"},
                            "maxLimitRequestRatio": {"cpu": "4"}},
                      {"type": "Pod", "max": {"cpu": "1500m"}})
    body = await call(api, "POST", PODS, pod("big", limits={"cpu": "2"}), status=403)
    assert body["message"] == ('pods "big" is forbidden: [maximum cpu usage per Container is 1, but limit is 2, '
                               'maximum cpu usage per Pod is 1500m, but limit is 2]')
    body = await call(api, "POST", PODS, pod("small", requests={"cpu": "50m"}, limits={"cpu": "100m"}), status=403)
    assert body["message"] == 'pods "small" is forbidden: minimum cpu usage per Container is 100m, but request is 50m'
    body = await call(api, "POST", PODS, pod("ratio", requests={"cpu": "100m"}, limits={"cpu": "800m"}), status=403)
    assert body["message"] == ('pods "ratio" is forbidden: cpu max limit to request ratio per Container is 4, '
                               'but provided ratio is 8.000000')
    body = await call(api, "POST", PODS, pod("sum", containers=2, requests={"cpu": "800m"}, limits={"cpu": "800m"}),
                      status=403)
    assert body["message"] == 'pods "sum" is forbidden: maximum cpu usage per Pod is 1500m, but limit is 1600m'
    # Defaults from max/min make a bare pod fit.
    ok = await call(api, "POST", PODS, pod("ok"), status=201)
    assert ok["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}


async def test_limit_range_validation_messages(api: TestClient) -> None:
    body = await call(api, "POST", LIMITS, {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "bad"},
                                            "spec": {"limits": [
                                                {"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}},
                                                {"type": "Pod", "default": {"cpu": "1"}},
                                                {"type": "PersistentVolumeClaim"}]}}, status=422)
    causes = {(c["field"], c["message"]) for c in body["details"]["causes"]}
    assert ("spec.limits[0].min[cpu]", 'Invalid value: "2": min value 2 is greater than max value 1') in causes
    assert ("spec.limits[1].default", "Forbidden: may not be specified when `type` is 'Pod'") in causes
    assert ("spec.limits[2].limits", "Required value: either minimum or maximum storage value is required, "
                                     "but neither was provided") in causes
