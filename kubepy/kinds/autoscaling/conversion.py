"""HorizontalPodAutoscaler between ``autoscaling/v1`` and ``autoscaling/v2`` (the storage version).

As upstream's ``pkg/apis/autoscaling/v1/conversion.go``: v1 knows only
``targetCPUUtilizationPercentage`` and ``currentCPUUtilizationPercentage``;
everything else a v2 object says travels through v1 in annotations, in the
format upstream writes them, so a v2 object read and written back through v1
keeps its other metrics, behavior, metric statuses and conditions:

- ``autoscaling.alpha.kubernetes.io/metrics``: the non-CPU-utilization metric
  specs, as v1's (v2beta1-shaped) MetricSpec list;
- ``autoscaling.alpha.kubernetes.io/behavior``: the behavior, as upstream's
  internal type marshals it (Go field names: ``{"ScaleUp":{"StabilizationWindowSeconds":0,…}}``);
- ``autoscaling.alpha.kubernetes.io/current-metrics``: every metric status;
- ``autoscaling.alpha.kubernetes.io/conditions``: the conditions.

An annotation that does not parse is ignored (upstream's conversion does the
same); a v1 object without any metric gets v1's implicit 80% CPU target.
Pure functions on plain dicts: no HTTP, no store.
"""

from __future__ import annotations

import copy
import json
from typing import Any

__all__ = ["v1_to_v2", "v2_to_v1", "METRICS_ANNOTATION", "CURRENT_METRICS_ANNOTATION", "CONDITIONS_ANNOTATION",
           "BEHAVIOR_ANNOTATION", "DEFAULT_CPU_UTILIZATION"]

METRICS_ANNOTATION = "autoscaling.alpha.kubernetes.io/metrics"
CURRENT_METRICS_ANNOTATION = "autoscaling.alpha.kubernetes.io/current-metrics"
CONDITIONS_ANNOTATION = "autoscaling.alpha.kubernetes.io/conditions"
BEHAVIOR_ANNOTATION = "autoscaling.alpha.kubernetes.io/behavior"
ROUND_TRIP_ANNOTATIONS = (METRICS_ANNOTATION, CURRENT_METRICS_ANNOTATION, CONDITIONS_ANNOTATION, BEHAVIOR_ANNOTATION)
DEFAULT_CPU_UTILIZATION = 80


def _d(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list:
    return x if isinstance(x, list) else []


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _cpu_utilization_metric(value: Any) -> dict:
    return {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                      "averageUtilization": value}}}


def _is_cpu_utilization(metric: dict) -> bool:
    res = _d(metric.get("resource"))
    return (metric.get("type") == "Resource" and res.get("name") == "cpu"
            and _d(res.get("target")).get("averageUtilization") is not None)


# -- metric specs and statuses: v2 <-> v1's (v2beta1-shaped) annotation format ------------------------
def _spec_to_v1(m: dict) -> dict:
    out: dict[str, Any] = {"type": m.get("type")}
    if isinstance(m.get("resource"), dict):
        r, t = m["resource"], _d(m["resource"].get("target"))
        out["resource"] = _drop_none({"name": r.get("name"), "targetAverageUtilization": t.get("averageUtilization"),
                                      "targetAverageValue": t.get("averageValue")})
    if isinstance(m.get("containerResource"), dict):
        r, t = m["containerResource"], _d(m["containerResource"].get("target"))
        out["containerResource"] = _drop_none({
            "name": r.get("name"), "container": r.get("container"),
            "targetAverageUtilization": t.get("averageUtilization"), "targetAverageValue": t.get("averageValue")})
    if isinstance(m.get("pods"), dict):
        ident, t = _d(m["pods"].get("metric")), _d(m["pods"].get("target"))
        out["pods"] = _drop_none({"metricName": ident.get("name"), "selector": ident.get("selector"),
                                  "targetAverageValue": t.get("averageValue")})
    if isinstance(m.get("object"), dict):
        o, ident, t = m["object"], _d(m["object"].get("metric")), _d(m["object"].get("target"))
        out["object"] = _drop_none({"target": o.get("describedObject"), "metricName": ident.get("name"),
                                    "selector": ident.get("selector"), "targetValue": t.get("value"),
                                    "averageValue": t.get("averageValue")})
    if isinstance(m.get("external"), dict):
        ident, t = _d(m["external"].get("metric")), _d(m["external"].get("target"))
        out["external"] = _drop_none({"metricName": ident.get("name"), "metricSelector": ident.get("selector"),
                                      "targetValue": t.get("value"), "targetAverageValue": t.get("averageValue")})
    return out


def _ident(name: Any, selector: Any) -> dict:
    return _drop_none({"name": name, "selector": selector})


def _value_target(value: Any, average: Any) -> dict:
    if value is not None:
        return {"type": "Value", "value": value}
    return _drop_none({"type": "AverageValue", "averageValue": average})


def _utilization_target(utilization: Any, average: Any) -> dict:
    if utilization is not None:
        return {"type": "Utilization", "averageUtilization": utilization}
    return _drop_none({"type": "AverageValue", "averageValue": average})


def _spec_from_v1(m: dict) -> dict:
    out: dict[str, Any] = {"type": m.get("type")}
    if isinstance(m.get("resource"), dict):
        r = m["resource"]
        out["resource"] = {"name": r.get("name"),
                           "target": _utilization_target(r.get("targetAverageUtilization"),
                                                         r.get("targetAverageValue"))}
    if isinstance(m.get("containerResource"), dict):
        r = m["containerResource"]
        out["containerResource"] = {"name": r.get("name"), "container": r.get("container"),
                                    "target": _utilization_target(r.get("targetAverageUtilization"),
                                                                  r.get("targetAverageValue"))}
    if isinstance(m.get("pods"), dict):
        p = m["pods"]
        out["pods"] = {"metric": _ident(p.get("metricName"), p.get("selector")),
                       "target": _drop_none({"type": "AverageValue", "averageValue": p.get("targetAverageValue")})}
    if isinstance(m.get("object"), dict):
        o = m["object"]
        out["object"] = _drop_none({"describedObject": o.get("target"),
                                    "metric": _ident(o.get("metricName"), o.get("selector")),
                                    "target": _value_target(o.get("targetValue"), o.get("averageValue"))})
    if isinstance(m.get("external"), dict):
        e = m["external"]
        out["external"] = {"metric": _ident(e.get("metricName"), e.get("metricSelector")),
                           "target": _value_target(e.get("targetValue"), e.get("targetAverageValue"))}
    return out


def _status_to_v1(m: dict) -> dict:
    out: dict[str, Any] = {"type": m.get("type")}
    if isinstance(m.get("resource"), dict):
        r, c = m["resource"], _d(m["resource"].get("current"))
        out["resource"] = _drop_none({"name": r.get("name"), "currentAverageUtilization": c.get("averageUtilization"),
                                      "currentAverageValue": c.get("averageValue")})
    if isinstance(m.get("containerResource"), dict):
        r, c = m["containerResource"], _d(m["containerResource"].get("current"))
        out["containerResource"] = _drop_none({
            "name": r.get("name"), "container": r.get("container"),
            "currentAverageUtilization": c.get("averageUtilization"), "currentAverageValue": c.get("averageValue")})
    if isinstance(m.get("pods"), dict):
        ident, c = _d(m["pods"].get("metric")), _d(m["pods"].get("current"))
        out["pods"] = _drop_none({"metricName": ident.get("name"), "selector": ident.get("selector"),
                                  "currentAverageValue": c.get("averageValue")})
    if isinstance(m.get("object"), dict):
        o, ident, c = m["object"], _d(m["object"].get("metric")), _d(m["object"].get("current"))
        out["object"] = _drop_none({"target": o.get("describedObject"), "metricName": ident.get("name"),
                                    "selector": ident.get("selector"), "currentValue": c.get("value"),
                                    "averageValue": c.get("averageValue")})
    if isinstance(m.get("external"), dict):
        ident, c = _d(m["external"].get("metric")), _d(m["external"].get("current"))
        out["external"] = _drop_none({"metricName": ident.get("name"), "metricSelector": ident.get("selector"),
                                      "currentValue": c.get("value"), "currentAverageValue": c.get("averageValue")})
    return out


def _status_from_v1(m: dict) -> dict:
    out: dict[str, Any] = {"type": m.get("type")}
    if isinstance(m.get("resource"), dict):
        r = m["resource"]
        out["resource"] = {"name": r.get("name"), "current": _drop_none({
            "averageUtilization": r.get("currentAverageUtilization"), "averageValue": r.get("currentAverageValue")})}
    if isinstance(m.get("containerResource"), dict):
        r = m["containerResource"]
        out["containerResource"] = {"name": r.get("name"), "container": r.get("container"), "current": _drop_none({
            "averageUtilization": r.get("currentAverageUtilization"), "averageValue": r.get("currentAverageValue")})}
    if isinstance(m.get("pods"), dict):
        p = m["pods"]
        out["pods"] = {"metric": _ident(p.get("metricName"), p.get("selector")),
                       "current": _drop_none({"averageValue": p.get("currentAverageValue")})}
    if isinstance(m.get("object"), dict):
        o = m["object"]
        out["object"] = _drop_none({"describedObject": o.get("target"),
                                    "metric": _ident(o.get("metricName"), o.get("selector")),
                                    "current": _drop_none({"value": o.get("currentValue"),
                                                           "averageValue": o.get("averageValue")})})
    if isinstance(m.get("external"), dict):
        e = m["external"]
        out["external"] = {"metric": _ident(e.get("metricName"), e.get("metricSelector")),
                           "current": _drop_none({"value": e.get("currentValue"),
                                                  "averageValue": e.get("currentAverageValue")})}
    return out


# -- behavior: upstream marshals its internal type (no json tags: Go field names) ---------------------
_GO_RULES = (("stabilizationWindowSeconds", "StabilizationWindowSeconds"), ("selectPolicy", "SelectPolicy"),
             ("policies", "Policies"), ("tolerance", "Tolerance"))
_GO_POLICY = (("type", "Type"), ("value", "Value"), ("periodSeconds", "PeriodSeconds"))


def _rules_to_go(rules: Any) -> dict | None:
    if not isinstance(rules, dict):
        return None
    out: dict[str, Any] = {go: rules.get(js) for js, go in _GO_RULES if js != "policies"}
    out["Policies"] = [{go: _d(p).get(js) for js, go in _GO_POLICY} for p in _l(rules.get("policies"))] or None
    return out


def _rules_from_go(rules: Any) -> dict | None:
    if not isinstance(rules, dict):
        return None
    out = _drop_none({js: rules.get(go) for js, go in _GO_RULES if js != "policies"})
    if rules.get("Policies") is not None:
        out["policies"] = [_drop_none({js: _d(p).get(go) for js, go in _GO_POLICY}) for p in _l(rules["Policies"])]
    return out


def _annotation(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _parsed(annotations: dict, key: str) -> Any:
    try:
        return json.loads(annotations[key]) if key in annotations else None
    except (TypeError, ValueError):
        return None


# -- the two directions ---------------------------------------------------------------------------------
def v2_to_v1(obj: dict) -> dict:
    """A stored (v2) HorizontalPodAutoscaler as ``autoscaling/v1`` shows it."""
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    meta = copy.deepcopy(_d(obj.get("metadata")))
    annotations = {k: v for k, v in _d(meta.get("annotations")).items() if k not in ROUND_TRIP_ANNOTATIONS}
    metrics = _l(spec.get("metrics"))
    out_spec = {k: copy.deepcopy(spec[k]) for k in ("scaleTargetRef", "minReplicas", "maxReplicas") if k in spec}
    for m in metrics:
        if isinstance(m, dict) and m.get("type") == "Resource" and _d(m.get("resource")).get("name") == "cpu":
            utilization = _d(_d(m["resource"]).get("target")).get("averageUtilization")
            if utilization is not None:
                out_spec["targetCPUUtilizationPercentage"] = utilization
            break
    others = [_spec_to_v1(m) for m in metrics if isinstance(m, dict) and not _is_cpu_utilization(m)]
    if others:
        annotations[METRICS_ANNOTATION] = _annotation(others)
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):
        annotations[BEHAVIOR_ANNOTATION] = _annotation({"ScaleUp": _rules_to_go(behavior.get("scaleUp")),
                                                        "ScaleDown": _rules_to_go(behavior.get("scaleDown"))})
    out: dict[str, Any] = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": meta,
                           "spec": out_spec}
    if "status" in obj:
        out_status = {k: copy.deepcopy(status[k]) for k in ("observedGeneration", "lastScaleTime", "currentReplicas",
                                                            "desiredReplicas") if k in status}
        out_status.setdefault("currentReplicas", 0)
        out_status.setdefault("desiredReplicas", 0)
        current = [m for m in _l(status.get("currentMetrics")) if isinstance(m, dict)]
        for m in current:
            if m.get("type") == "Resource" and _d(m.get("resource")).get("name") == "cpu":
                value = _d(_d(m["resource"]).get("current")).get("averageUtilization")
                if value is not None:
                    out_status["currentCPUUtilizationPercentage"] = value
        if current:
            annotations[CURRENT_METRICS_ANNOTATION] = _annotation([_status_to_v1(m) for m in current])
        conditions = _l(status.get("conditions"))
        if conditions:
            annotations[CONDITIONS_ANNOTATION] = _annotation(conditions)
        out["status"] = out_status
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return out


def v1_to_v2(obj: dict) -> dict:
    """An ``autoscaling/v1`` HorizontalPodAutoscaler as stored (v2), its round-trip annotations consumed."""
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    meta = copy.deepcopy(obj.get("metadata")) if isinstance(obj.get("metadata"), dict) else obj.get("metadata")
    annotations = dict(_d(_d(meta).get("annotations")))
    out_spec: dict[str, Any] = {k: copy.deepcopy(spec[k]) for k in ("scaleTargetRef", "minReplicas", "maxReplicas")
                                if k in spec}
    metrics: list[dict] = []
    others = _parsed(annotations, METRICS_ANNOTATION)
    if isinstance(others, list):
        metrics += [_spec_from_v1(m) for m in others if isinstance(m, dict)]
    if spec.get("targetCPUUtilizationPercentage") is not None:
        metrics.append(_cpu_utilization_metric(spec["targetCPUUtilizationPercentage"]))
    # v1's implicit default, made explicit (upstream does it here, where every metric is known).
    out_spec["metrics"] = metrics or [_cpu_utilization_metric(DEFAULT_CPU_UTILIZATION)]
    behavior = _parsed(annotations, BEHAVIOR_ANNOTATION)
    if isinstance(behavior, dict):
        rules = {"scaleUp": _rules_from_go(behavior.get("ScaleUp")),
                 "scaleDown": _rules_from_go(behavior.get("ScaleDown"))}
        rules = {k: v for k, v in rules.items() if v is not None}
        if rules:
            out_spec["behavior"] = rules
    out: dict[str, Any] = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler"}
    if meta is not None:
        out["metadata"] = meta
    out["spec"] = out_spec
    if "status" in obj:
        out_status: dict[str, Any] = {k: copy.deepcopy(status[k]) for k in (
            "observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas") if k in status}
        if status.get("currentCPUUtilizationPercentage") is not None:
            out_status["currentMetrics"] = [{"type": "Resource", "resource": {
                "name": "cpu", "current": {"averageUtilization": status["currentCPUUtilizationPercentage"]}}}]
        current = _parsed(annotations, CURRENT_METRICS_ANNOTATION)
        if isinstance(current, list):
            out_status["currentMetrics"] = [_status_from_v1(m) for m in current if isinstance(m, dict)]
        conditions = _parsed(annotations, CONDITIONS_ANNOTATION)
        if isinstance(conditions, list):
            out_status["conditions"] = conditions
        out["status"] = out_status
    if isinstance(meta, dict) and "annotations" in meta:
        kept = {k: v for k, v in annotations.items() if k not in ROUND_TRIP_ANNOTATIONS}
        if kept:
            meta["annotations"] = kept
        else:
            del meta["annotations"]
    return out
