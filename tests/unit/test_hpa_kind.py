"""HorizontalPodAutoscaler as the registry describes it: upstream's defaults and
validation messages, the v1 ⇄ v2 conversion with its round-trip annotations,
and kubectl's TARGETS column."""

from __future__ import annotations

import copy
import datetime as dt
import json

import pytest

from kubepy import kinds
from kubepy.kinds import validation
from kubepy.kinds.autoscaling.conversion import (BEHAVIOR_ANNOTATION, CONDITIONS_ANNOTATION,
                                                 CURRENT_METRICS_ANNOTATION, METRICS_ANNOTATION, v1_to_v2, v2_to_v1)
from kubepy.kinds.autoscaling.horizontalpodautoscaler import HPA, HPA_V1, format_metrics


def _hpa(**spec) -> dict:
    base = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 5}
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"}, "spec": {**base, **spec}}


def _causes(obj: dict) -> list[tuple[str, str]]:
    validation.default_object(HPA, obj)
    with pytest.raises(kinds.Invalid) as e:
        validation.validate_object(HPA, obj)
    assert str(e.value).startswith('HorizontalPodAutoscaler.autoscaling "web" is invalid: ')
    return [(c["field"], c["message"]) for c in e.value.causes]


def test_registered_as_v2_storage_and_v1_by_conversion():
    assert kinds.by_plural("horizontalpodautoscalers") is HPA
    assert kinds.group_versions()["autoscaling"] == ["v2", "v1"]  # v2 preferred, as upstream
    assert HPA.short_names == ("hpa",) and "status" in HPA.subresources and HPA.has_status
    assert HPA_V1.conversion is not None and HPA_V1.conversion.storage is HPA
    assert HPA_V1.prefix == HPA.prefix
    assert [c["name"] for c in HPA.printer.columns] == ["Name", "Reference", "Targets", "MinPods", "MaxPods",
                                                       "Replicas", "Age"]


def test_defaults_min_replicas_cpu_80_and_no_behavior_unless_given():
    obj = _hpa()
    validation.default_object(HPA, obj)
    assert obj["spec"]["minReplicas"] == 1
    assert obj["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
    assert "behavior" not in obj["spec"]
    validation.validate_object(HPA, obj)


def test_a_given_behavior_gets_upstreams_defaults_for_what_it_leaves_out():
    obj = _hpa(behavior={"scaleDown": {"stabilizationWindowSeconds": 60}})
    validation.default_object(HPA, obj)
    assert obj["spec"]["behavior"] == {
        "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                    "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                 {"type": "Percent", "value": 100, "periodSeconds": 15}]},
        "scaleDown": {"stabilizationWindowSeconds": 60, "selectPolicy": "Max",
                      "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}}


@pytest.mark.parametrize("spec, expected", [
    ({"minReplicas": 0}, ("spec.minReplicas", "Invalid value: 0: must be greater than or equal to 1")),
    ({"maxReplicas": 0}, ("spec.maxReplicas", "Invalid value: 0: must be greater than 0")),
    ({"minReplicas": 6}, ("spec.maxReplicas", "Invalid value: 5: must be greater than or equal to `minReplicas`")),
    ({"scaleTargetRef": {"kind": "Deployment"}}, ("spec.scaleTargetRef.name", "Required value")),
    ({"scaleTargetRef": {"name": "a/b", "kind": "Deployment"}},
     ("spec.scaleTargetRef.name", "Invalid value: \"a/b\": may not contain '/'")),
    ({"metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}}]},
     ("spec.metrics[0].resource.target.averageUtilization",
      "Required value: must set either a target raw value or a target utilization")),
    ({"metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 50, "averageValue": "100m"}}}]},
     ("spec.metrics[0].resource.target.averageValue",
      "Forbidden: may not set both a target raw value and a target utilization")),
    ({"metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 0}}}]},
     ("spec.metrics[0].resource.target.averageUtilization", "Invalid value: 0: must be greater than 0")),
    ({"metrics": [{"type": "Resource", "resource": {"name": "memory", "target": {
        "type": "AverageValue", "averageValue": "-1Mi"}}}]},
     ("spec.metrics[0].resource.target.averageValue", 'Invalid value: "-1Mi": must be positive')),
    ({"metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Bogus", "averageUtilization": 5}}}]},
     ("spec.metrics[0].resource.target.type",
      'Invalid value: "Bogus": must be either Utilization, Value, or AverageValue')),
    ({"metrics": [{"type": "Resource"}]},
     ("spec.metrics[0].resource", "Required value: must populate information for the given metric source")),
    ({"metrics": [{"type": "Gauge", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                            "averageUtilization": 5}}}]},
     ("spec.metrics[0].type", 'Unsupported value: "Gauge": supported values: "ContainerResource", "External", '
                              '"Object", "Pods", "Resource"')),
    ({"metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 5}}, "pods": {"metric": {"name": "qps"}, "target": {
            "type": "AverageValue", "averageValue": "1"}}}]},
     ("spec.metrics[0].pods", "Forbidden: must populate the given metric source only")),
    ({"metrics": [{"type": "Pods", "pods": {"metric": {}, "target": {"type": "AverageValue", "averageValue": "1"}}}]},
     ("spec.metrics[0].pods.metric.name", "Required value: must specify a metric name")),
    ({"behavior": {"scaleUp": {"stabilizationWindowSeconds": 3601}}},
     ("spec.behavior.scaleUp.stabilizationWindowSeconds", "Invalid value: 3601: must be less than or equal to 3600")),
    ({"behavior": {"scaleDown": {"selectPolicy": "Most"}}},
     ("spec.behavior.scaleDown.selectPolicy",
      'Unsupported value: "Most": supported values: "Disabled", "Max", "Min"')),
    ({"behavior": {"scaleDown": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 15}]}}},
     ("spec.behavior.scaleDown.policies[0].value", "Invalid value: 0: must be greater than zero")),
    ({"behavior": {"scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 1801}]}}},
     ("spec.behavior.scaleDown.policies[0].periodSeconds", "Invalid value: 1801: must be less than or equal to 1800")),
    ({"behavior": {"scaleUp": {"policies": [{"type": "Requests", "value": 1, "periodSeconds": 15}]}}},
     ("spec.behavior.scaleUp.policies[0].type", 'Unsupported value: "Requests": supported values: "Percent", "Pods"')),
])
def test_validation_as_upstream_words_it(spec, expected):
    assert expected in _causes(_hpa(**spec))


def test_v1_target_cpu_becomes_a_v2_metric_and_back():
    v1 = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
          "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                   "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50}}
    v2 = v1_to_v2(v1)
    assert v2["apiVersion"] == "autoscaling/v2"
    assert v2["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]
    assert "annotations" not in v2["metadata"]
    assert v2_to_v1(v2) == v1


def test_a_v1_object_without_a_target_gets_v1s_implicit_80_percent():
    v2 = v1_to_v2({"metadata": {"name": "a"}, "spec": {"maxReplicas": 3}})
    assert v2["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 80}


def test_v2_only_fields_round_trip_through_v1_in_upstreams_annotations():
    v2 = _hpa(minReplicas=2, metrics=[
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue",
                                                                       "averageValue": "100Mi"}}},
        {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
        {"type": "External", "external": {"metric": {"name": "queue", "selector": {"matchLabels": {"q": "a"}}},
                                          "target": {"type": "Value", "value": "30"}}},
    ], behavior={"scaleDown": {"stabilizationWindowSeconds": 60, "selectPolicy": "Max",
                               "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}]}})
    v2["metadata"]["annotations"] = {"team": "a"}
    v2["status"] = {"currentReplicas": 2, "desiredReplicas": 3, "lastScaleTime": "2026-01-01T00:00:00Z",
                    "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {
                        "averageUtilization": 75, "averageValue": "150m"}}}],
                    "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale",
                                    "message": "recommended size matches current size",
                                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    v1 = v2_to_v1(v2)
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 60
    assert v1["status"]["currentCPUUtilizationPercentage"] == 75
    ann = v1["metadata"]["annotations"]
    assert ann["team"] == "a"
    assert json.loads(ann[METRICS_ANNOTATION])[0] == {"type": "Resource", "resource": {
        "name": "memory", "targetAverageValue": "100Mi"}}
    assert json.loads(ann[METRICS_ANNOTATION])[1] == {"type": "Pods", "pods": {"metricName": "qps",
                                                                               "targetAverageValue": "10"}}
    # upstream marshals its internal type: Go field names
    assert json.loads(ann[BEHAVIOR_ANNOTATION])["ScaleDown"] == {
        "StabilizationWindowSeconds": 60, "SelectPolicy": "Max", "Tolerance": None,
        "Policies": [{"Type": "Pods", "Value": 1, "PeriodSeconds": 30}]}
    assert json.loads(ann[CURRENT_METRICS_ANNOTATION]) == [{"type": "Resource", "resource": {
        "name": "cpu", "currentAverageUtilization": 75, "currentAverageValue": "150m"}}]
    assert json.loads(ann[CONDITIONS_ANNOTATION])[0]["reason"] == "ReadyForNewScale"
    back = v1_to_v2(v1)
    assert back["metadata"]["annotations"] == {"team": "a"}
    # the CPU target comes back last (upstream appends it after the annotation's metrics)
    assert back["spec"]["metrics"] == v2["spec"]["metrics"][1:] + v2["spec"]["metrics"][:1]
    assert back["spec"]["behavior"] == v2["spec"]["behavior"]
    assert back["status"] == v2["status"]


def test_a_broken_round_trip_annotation_is_ignored_as_upstream_does():
    v1 = {"metadata": {"name": "a", "annotations": {METRICS_ANNOTATION: "{not json"}},
          "spec": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 40}}
    v2 = v1_to_v2(v1)
    assert [m["resource"]["name"] for m in v2["spec"]["metrics"]] == ["cpu"]
    assert "annotations" not in v2["metadata"]


def test_targets_column_like_kubectl():
    cpu = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                      "averageUtilization": 50}}}
    mem = {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue",
                                                                         "averageValue": "100Mi"}}}
    qps = {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue",
                                                                          "averageValue": "10"}}}
    assert format_metrics([], []) == "<none>"
    assert format_metrics([cpu], []) == "cpu: <unknown>/50%"
    status = [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 73,
                                                                          "averageValue": "73m"}}}]
    assert format_metrics([cpu, mem], status) == "cpu: 73%/50%, memory: <unknown>/100Mi"
    assert format_metrics([cpu, mem, qps], status) == "cpu: 73%/50%, memory: <unknown>/100Mi + 1 more..."
    obj = _hpa(metrics=[cpu])
    obj["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    v1 = v2_to_v1(copy.deepcopy(obj))
    now = dt.datetime(2026, 1, 1, 0, 5, tzinfo=dt.UTC)
    assert HPA.printer.cells(obj, now) == ["web", "Deployment/web", "cpu: <unknown>/50%", "<unset>", 5, 0, "5m"]
    assert HPA_V1.printer.cells(v1, now) == HPA.printer.cells(obj, now)
