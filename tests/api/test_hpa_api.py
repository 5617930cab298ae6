"""HorizontalPodAutoscaler through the API server: autoscaling/v2 stored, autoscaling/v1
served by conversion (reads, writes, patches, status, lists, watches and tables in
either version, v2-only fields kept through a v1 read-modify-write), upstream's 422s,
and stock kubectl (``autoscale``, ``get hpa``, ``describe hpa``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.api.test_semantics import _serve, call
from tests.e2e.conftest import running_apiserver

V2 = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers"
V1 = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers"
REF = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[TestClient]:
    async for client in _serve(tmp_path):
        yield client


def _v2(name: str = "web", **spec) -> dict:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": REF, "maxReplicas": 5, **spec}}


async def test_a_v1_object_is_stored_as_v2_and_read_in_either(api):
    created = await call(api, "POST", V1, {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
                                           "metadata": {"name": "web"},
                                           "spec": {"scaleTargetRef": REF, "maxReplicas": 5,
                                                    "targetCPUUtilizationPercentage": 50}}, status=201)
    assert created["apiVersion"] == "autoscaling/v1" and created["spec"]["targetCPUUtilizationPercentage"] == 50
    assert created["spec"]["minReplicas"] == 1  # defaulted, in storage
    v2 = await call(api, "GET", f"{V2}/web")
    assert v2["apiVersion"] == "autoscaling/v2"
    assert v2["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]
    listed = await call(api, "GET", V1)
    assert listed["apiVersion"] == "autoscaling/v1"
    assert [(i["apiVersion"], i["spec"]["targetCPUUtilizationPercentage"]) for i in listed["items"]] == [
        ("autoscaling/v1", 50)]
    assert (await call(api, "GET", V1, limit="1"))["items"][0]["apiVersion"] == "autoscaling/v1"


async def test_a_v1_read_modify_write_keeps_what_only_v2_can_say(api):
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 60, "selectPolicy": "Max",
                              "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}]}}
    memory = {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue",
                                                                            "averageValue": "100Mi"}}}
    cpu = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                      "averageUtilization": 60}}}
    await call(api, "POST", V2, _v2(metrics=[cpu, memory], behavior=behavior), status=201)
    v1 = await call(api, "GET", f"{V1}/web")
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 60
    assert "autoscaling.alpha.kubernetes.io/metrics" in v1["metadata"]["annotations"]
    v1["spec"]["targetCPUUtilizationPercentage"] = 70
    written = await call(api, "PUT", f"{V1}/web", v1)
    assert written["apiVersion"] == "autoscaling/v1" and written["spec"]["targetCPUUtilizationPercentage"] == 70
    v2 = await call(api, "GET", f"{V2}/web")
    assert v2["spec"]["metrics"] == [memory, {**cpu, "resource": {**cpu["resource"], "target": {
        "type": "Utilization", "averageUtilization": 70}}}]
    assert v2["spec"]["behavior"]["scaleDown"] == behavior["scaleDown"]
    assert "annotations" not in v2["metadata"]  # the round-trip annotations are never stored
    assert v2["metadata"]["generation"] == 2
    # a merge patch through v1 changes only what it says
    patched = await call(api, "PATCH", f"{V1}/web", {"spec": {"maxReplicas": 7}},
                         content_type="application/merge-patch+json")
    assert patched["apiVersion"] == "autoscaling/v1" and patched["spec"]["maxReplicas"] == 7
    v2 = await call(api, "GET", f"{V2}/web")
    assert v2["spec"]["maxReplicas"] == 7 and len(v2["spec"]["metrics"]) == 2 and v2["spec"]["behavior"]


async def test_status_is_written_through_status_in_either_version(api):
    await call(api, "POST", V2, _v2(status={"currentReplicas": 9}), status=201)
    hpa = await call(api, "GET", f"{V2}/web")
    assert not (hpa.get("status") or {}).get("currentReplicas")  # not on create
    hpa["status"] = {"currentReplicas": 2, "desiredReplicas": 3, "currentMetrics": [
        {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 75,
                                                                    "averageValue": "75m"}}}]}
    await call(api, "PUT", f"{V2}/web/status", hpa)
    v1 = await call(api, "GET", f"{V1}/web/status")
    assert v1["apiVersion"] == "autoscaling/v1"
    assert v1["status"]["currentCPUUtilizationPercentage"] == 75 and v1["status"]["desiredReplicas"] == 3
    v1["status"]["desiredReplicas"] = 4
    v1["spec"]["maxReplicas"] = 99  # ignored: a status write moves only status
    out = await call(api, "PUT", f"{V1}/web/status", v1)
    assert out["apiVersion"] == "autoscaling/v1" and out["status"]["desiredReplicas"] == 4
    v2 = await call(api, "GET", f"{V2}/web")
    assert v2["spec"]["maxReplicas"] == 5 and v2["status"]["desiredReplicas"] == 4
    assert v2["status"]["currentMetrics"][0]["resource"]["current"]["averageValue"] == "75m"
    bad = await call(api, "PUT", f"{V2}/web/status", {**v2, "status": {"currentReplicas": -1}}, status=422)
    assert bad["details"]["causes"][0]["field"] == "status.currentReplicas"


@pytest.mark.parametrize("path, body, field, message", [
    (V2, _v2(minReplicas=0), "spec.minReplicas", "Invalid value: 0: must be greater than or equal to 1"),
    (V1, {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
          "spec": {"scaleTargetRef": REF, "minReplicas": 3, "maxReplicas": 2}},
     "spec.maxReplicas", "Invalid value: 2: must be greater than or equal to `minReplicas`"),
    (V2, {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
          "spec": {"maxReplicas": 2}}, "spec.scaleTargetRef.kind", "Required value"),
])
async def test_invalid_objects_are_upstreams_422(api, path, body, field, message):
    err = await call(api, "POST", path, body, status=422)
    assert err["reason"] == "Invalid" and err["details"]["kind"] == "HorizontalPodAutoscaler"
    assert {"reason": err["details"]["causes"][0]["reason"], "field": field, "message": message} in \
        err["details"]["causes"], err


async def test_tables_and_watches_of_either_version(api):
    await call(api, "POST", V2, _v2(), status=201)
    for path in (V1, V2):
        resp = await api.get(path, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
        table = await resp.json()
        assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Reference", "Targets", "MinPods",
                                                                    "MaxPods", "Replicas", "Age"]
        assert table["rows"][0]["cells"][:6] == ["web", "Deployment/web", "cpu: <unknown>/80%", "1", 5, 0]
    resp = await api.get(V1, params={"watch": "true", "timeoutSeconds": "1"})
    first = json.loads((await resp.content.readline()).decode())
    assert first["type"] == "ADDED" and first["object"]["apiVersion"] == "autoscaling/v1"
    assert first["object"]["spec"]["targetCPUUtilizationPercentage"] == 80
    resp.close()
    deleted = await call(api, "DELETE", f"{V1}/web")
    assert deleted["apiVersion"] == "autoscaling/v1"


# -- stock kubectl ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server():
    with running_apiserver("kubepy-hpa-") as srv:
        yield srv


def test_kubectl_autoscale_get_and_describe(server):
    server.kubectl("create", "deployment", "web", "--image=busybox")
    out = server.kubectl("autoscale", "deployment", "web", "--cpu-percent=50", "--min=1", "--max=5", "-v=6")
    assert "horizontalpodautoscaler.autoscaling/web autoscaled" in out.stdout
    assert "POST\" url=\"https://" in out.stderr and "/apis/autoscaling/v2/namespaces/default/" \
                                                       "horizontalpodautoscalers" in out.stderr
    lines = server.kubectl("get", "hpa").stdout.splitlines()
    assert lines[0].split() == ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]
    assert lines[1].split()[:7] == ["web", "Deployment/web", "cpu:", "<unknown>/50%", "1", "5", "0"]
    v1 = json.loads(server.kubectl("get", "horizontalpodautoscalers.v1.autoscaling", "web", "-o", "json").stdout)
    assert v1["apiVersion"] == "autoscaling/v1" and v1["spec"]["targetCPUUtilizationPercentage"] == 50
    described = server.kubectl("describe", "hpa", "web").stdout
    assert "Reference:" in described and "Deployment/web" in described
    assert "resource cpu on pods  (as a percentage of request):  <unknown> / 50%" in described
    assert "Min replicas:" in described and "Max replicas:" in described
    bad = server.kubectl("create", "-f", "-", check=False, input=json.dumps({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "bad"},
        "spec": {"scaleTargetRef": REF, "minReplicas": 0, "maxReplicas": 2}}))
    assert bad.returncode != 0
    assert ('The HorizontalPodAutoscaler "bad" is invalid: spec.minReplicas: Invalid value: 0: must be greater '
            'than or equal to 1') in bad.stderr, bad.stderr
    # what the controller writes, as describe and get show it
    status = {"currentReplicas": 3, "desiredReplicas": 3, "currentMetrics": [{"type": "Resource", "resource": {
        "name": "cpu", "current": {"averageUtilization": 73, "averageValue": "73m"}}}], "conditions": [
        {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale",
         "message": "recommended size matches current size", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound",
         "message": "the HPA was able to successfully calculate a replica count from cpu resource utilization "
                    "(percentage of request)", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    server.kubectl("patch", "hpa", "web", "--subresource=status", "--type=merge", "-p",
                   json.dumps({"status": status}))
    assert server.kubectl("get", "hpa", "web").stdout.splitlines()[1].split()[:7] == [
        "web", "Deployment/web", "cpu:", "73%/50%", "1", "5", "3"]
    described = server.kubectl("describe", "hpa", "web").stdout
    assert "resource cpu on pods  (as a percentage of request):  73% (73m) / 50%" in described, described
    assert "Deployment pods:" in described and "3 current / 3 desired" in described
    assert "AbleToScale" in described and "ReadyForNewScale" in described and "ValidMetricFound" in described


def test_kubectl_applies_a_v1_manifest(server):
    manifest = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "legacy"},
                "spec": {"scaleTargetRef": REF, "minReplicas": 2, "maxReplicas": 4,
                         "targetCPUUtilizationPercentage": 65}}
    server.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    v2 = json.loads(server.kubectl("get", "hpa", "legacy", "-o", "json").stdout)
    assert v2["apiVersion"] == "autoscaling/v2" and v2["spec"]["minReplicas"] == 2
    assert v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 65
    manifest["spec"]["targetCPUUtilizationPercentage"] = 75
    server.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    v2 = json.loads(server.kubectl("get", "hpa", "legacy", "-o", "json").stdout)
    assert v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 75


def test_the_official_python_client_in_both_versions(server):
    from kubernetes import client, config

    api_client = config.new_client_from_config(str(server.kubeconfig))
    try:
        v2 = client.AutoscalingV2Api(api_client)
        v1 = client.AutoscalingV1Api(api_client)
        body = client.V2HorizontalPodAutoscaler(
            metadata=client.V1ObjectMeta(name="py"),
            spec=client.V2HorizontalPodAutoscalerSpec(
                scale_target_ref=client.V2CrossVersionObjectReference(api_version="apps/v1", kind="Deployment",
                                                                      name="web"),
                max_replicas=4,
                metrics=[client.V2MetricSpec(type="Resource", resource=client.V2ResourceMetricSource(
                    name="memory", target=client.V2MetricTarget(type="AverageValue", average_value="64Mi")))],
                behavior=client.V2HorizontalPodAutoscalerBehavior(scale_down=client.V2HPAScalingRules(
                    stabilization_window_seconds=30))))
        created = v2.create_namespaced_horizontal_pod_autoscaler("default", body)
        assert created.spec.min_replicas == 1
        assert created.spec.behavior.scale_up.policies[0].type == "Pods"  # defaults filled in a given behavior
        assert created.spec.behavior.scale_down.stabilization_window_seconds == 30
        old = v1.read_namespaced_horizontal_pod_autoscaler("py", "default")
        assert old.spec.target_cpu_utilization_percentage is None  # no CPU target: v1 has none to show
        assert "autoscaling.alpha.kubernetes.io/metrics" in old.metadata.annotations
        old.spec.max_replicas = 6
        v1.replace_namespaced_horizontal_pod_autoscaler("py", "default", old)
        again = v2.read_namespaced_horizontal_pod_autoscaler("py", "default")
        assert again.spec.max_replicas == 6 and again.spec.metrics[0].resource.name == "memory"
        assert again.spec.behavior.scale_down.stabilization_window_seconds == 30
        names = [h.metadata.name for h in v1.list_namespaced_horizontal_pod_autoscaler("default").items]
        assert "py" in names
    finally:
        api_client.close()
