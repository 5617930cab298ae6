"""HorizontalPodAutoscaler: ``autoscaling/v2`` (the storage version) and ``autoscaling/v1``.

The horizontal-pod-autoscaler controller reads a target's ``/scale``, the pods'
metrics from ``metrics.k8s.io`` and writes the target's replicas and this
object's status.  As upstream's ``pkg/registry/autoscaling/horizontalpodautoscaler``
and ``pkg/apis/autoscaling/validation``:

- defaults (``SetDefaults_HorizontalPodAutoscaler``): ``minReplicas`` 1; no
  metrics means CPU at 80% utilization; a ``behavior`` that is given gets every
  unset part filled (scaleUp: stabilization 0 s, policies 4 Pods / 15 s and
  100 Percent / 15 s, selectPolicy Max; scaleDown: policy 100 Percent / 15 s,
  selectPolicy Max, stabilization left unset so the controller's
  ``--horizontal-pod-autoscaler-downscale-stabilization`` (300 s) applies).
  An HPA without ``behavior`` stays without: the controller then uses those
  same defaults (upstream does the same);
- validation: ``minReplicas`` ≥ 1 (0 is upstream's alpha HPAScaleToZero,
  refused here), ``maxReplicas`` > 0 and ≥ ``minReplicas``, the
  ``scaleTargetRef`` and every metric spec well-formed, behavior policies;
- ``autoscaling/v1`` is served by conversion (``kinds.autoscaling.conversion``).

Pure: no HTTP, no store.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from kubepy.kinds import Conversion, Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.kinds.autoscaling.conversion import v1_to_v2, v2_to_v1
from kubepy.meta.quantity import parse_quantity

__all__ = ["HPA", "HPA_V1", "METRIC_SOURCE_TYPES", "default_scale_up_rules", "default_scale_down_rules",
           "MAX_PERIOD_SECONDS", "MAX_STABILIZATION_WINDOW_SECONDS", "format_metrics"]

METRIC_SOURCE_TYPES = ("ContainerResource", "External", "Object", "Pods", "Resource")
TARGET_TYPES = ("Utilization", "Value", "AverageValue")
SELECT_POLICIES = ("Disabled", "Max", "Min")
POLICY_TYPES = ("Percent", "Pods")
MAX_PERIOD_SECONDS = 1800
MAX_STABILIZATION_WINDOW_SECONDS = 3600
MIN_REPLICAS_LOWER_BOUND = 1  # upstream's bound without the alpha HPAScaleToZero gate


def _d(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list:
    return x if isinstance(x, list) else []


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# -- defaults ---------------------------------------------------------------------------------------
def default_scale_up_rules() -> dict:
    return {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                         {"type": "Percent", "value": 100, "periodSeconds": 15}]}


def default_scale_down_rules() -> dict:
    return {"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}


def _fill_rules(given: Any, defaults: dict) -> dict:
    """upstream's copyHPAScalingRules: every field the user set wins, the rest from the defaults."""
    if not isinstance(given, dict):
        return defaults
    out = dict(defaults)
    for k, value in given.items():
        if value is not None:
            out[k] = value
    return out


def _default(obj: dict, old: dict | None) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if spec.get("minReplicas") is None:
        spec["minReplicas"] = 1
    if not spec.get("metrics"):
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 80}}}]
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):
        behavior["scaleUp"] = _fill_rules(behavior.get("scaleUp"), default_scale_up_rules())
        behavior["scaleDown"] = _fill_rules(behavior.get("scaleDown"), default_scale_down_rules())


def _prepare_create(obj: dict) -> None:
    obj.pop("status", None)


# -- validation (pkg/apis/autoscaling/validation) ---------------------------------------------------
def _path_segment_problems(value: str) -> list[str]:
    """apimachinery's IsValidPathSegmentName."""
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


def _validate_reference(ref: Any, path: str, errs: v.Errs) -> None:
    ref = _d(ref)
    for key in ("kind", "name"):
        value = ref.get(key)
        if not value:
            errs.required(f"{path}.{key}")
        elif not isinstance(value, str):
            errs.invalid(f"{path}.{key}", value, "must be a string")
        else:
            errs.each(f"{path}.{key}", value, _path_segment_problems(value))
    api_version = ref.get("apiVersion")
    if api_version is not None and (not isinstance(api_version, str) or api_version.count("/") > 1):
        errs.invalid(f"{path}.apiVersion", api_version, "must be a valid group/version")


def _quantity(value: Any) -> Decimal | None:
    try:
        return parse_quantity(value)
    except (ValueError, TypeError):
        return None


def _validate_target(target: Any, path: str, errs: v.Errs) -> None:
    target = _d(target)
    ttype = target.get("type")
    if not ttype:
        errs.required(f"{path}.type", "must specify a metric target type")
    if ttype not in TARGET_TYPES:
        errs.invalid(f"{path}.type", ttype or "", "must be either Utilization, Value, or AverageValue")
    for key in ("value", "averageValue"):
        if target.get(key) is not None:
            q = _quantity(target[key])
            if q is None:
                errs.invalid(f"{path}.{key}", target[key], "must be a quantity")
            elif q <= 0:
                errs.invalid(f"{path}.{key}", target[key], "must be positive")
    utilization = target.get("averageUtilization")
    if utilization is not None and (not _is_int(utilization) or utilization < 1):
        errs.invalid(f"{path}.averageUtilization", utilization, "must be greater than 0")


def _validate_identifier(ident: Any, path: str, errs: v.Errs) -> None:
    ident = _d(ident)
    if not ident.get("name"):
        errs.required(f"{path}.name", "must specify a metric name")
    else:
        errs.each(f"{path}.name", ident["name"], _path_segment_problems(str(ident["name"])))
    if isinstance(ident.get("selector"), dict):
        v.validate_label_selector(ident["selector"], f"{path}.selector", errs)


def _validate_resource_source(src: dict, path: str, errs: v.Errs, *, container: bool) -> None:
    if not src.get("name"):
        errs.required(f"{path}.name", "must specify a resource name")
    if container:
        if not src.get("container"):
            errs.required(f"{path}.container", "must specify a container")
        else:
            errs.each(f"{path}.container", src["container"], v.is_dns1123_label(str(src["container"])))
    target = _d(src.get("target"))
    _validate_target(target, f"{path}.target", errs)
    if target.get("averageUtilization") is None and target.get("averageValue") is None:
        errs.required(f"{path}.target.averageUtilization", "must set either a target raw value or a target utilization")
    if target.get("averageUtilization") is not None and target.get("averageValue") is not None:
        errs.forbidden(f"{path}.target.averageValue", "may not set both a target raw value and a target utilization")


def _validate_pods_source(src: dict, path: str, errs: v.Errs) -> None:
    _validate_identifier(src.get("metric"), f"{path}.metric", errs)
    target = _d(src.get("target"))
    _validate_target(target, f"{path}.target", errs)
    if target.get("averageValue") is None:
        errs.required(f"{path}.target.averageValue", "must specify a positive target averageValue")


def _validate_object_source(src: dict, path: str, errs: v.Errs) -> None:
    _validate_reference(src.get("describedObject"), f"{path}.describedObject", errs)
    _validate_identifier(src.get("metric"), f"{path}.metric", errs)
    target = _d(src.get("target"))
    _validate_target(target, f"{path}.target", errs)
    if target.get("value") is None and target.get("averageValue") is None:
        errs.required(f"{path}.target.averageValue", "must set either a target value or averageValue")


def _validate_external_source(src: dict, path: str, errs: v.Errs) -> None:
    _validate_identifier(src.get("metric"), f"{path}.metric", errs)
    target = _d(src.get("target"))
    _validate_target(target, f"{path}.target", errs)
    if target.get("value") is None and target.get("averageValue") is None:
        errs.required(f"{path}.target.averageValue", "must set either a target value for metric or a per-pod target")
    if target.get("value") is not None and target.get("averageValue") is not None:
        errs.forbidden(f"{path}.target.value", "may not set both a target value for metric and a per-pod target")


_SOURCE_FIELDS = {"Object": "object", "Pods": "pods", "Resource": "resource", "ContainerResource": "containerResource",
                  "External": "external"}


def _validate_metric(metric: Any, path: str, errs: v.Errs) -> None:
    metric = _d(metric)
    mtype = metric.get("type")
    if not mtype:
        errs.required(f"{path}.type", "must specify a metric source type")
    elif mtype not in METRIC_SOURCE_TYPES:
        errs.not_supported(f"{path}.type", mtype, METRIC_SOURCE_TYPES)
    present = [f for f in ("object", "external", "pods", "resource", "containerResource")
               if metric.get(f) is not None]
    validators = {"object": _validate_object_source, "external": _validate_external_source,
                  "pods": _validate_pods_source,
                  "resource": lambda s, p, e: _validate_resource_source(s, p, e, container=False),
                  "containerResource": lambda s, p, e: _validate_resource_source(s, p, e, container=True)}
    if len(present) == 1:
        validators[present[0]](_d(metric[present[0]]), f"{path}.{present[0]}", errs)
    expected = _SOURCE_FIELDS.get(str(mtype))
    if expected is not None and metric.get(expected) is None:
        errs.required(f"{path}.{expected}", "must populate information for the given metric source")
    if len(present) > 1:
        for f in present:
            if f != expected:
                errs.forbidden(f"{path}.{f}", "must populate the given metric source only")


def _validate_rules(rules: Any, path: str, errs: v.Errs) -> None:
    if rules is None:
        return
    rules = _d(rules)
    window = rules.get("stabilizationWindowSeconds")
    if window is not None:
        if not _is_int(window) or window < 0:
            errs.invalid(f"{path}.stabilizationWindowSeconds", window, "must be greater than or equal to zero")
        elif window > MAX_STABILIZATION_WINDOW_SECONDS:
            errs.invalid(f"{path}.stabilizationWindowSeconds", window,
                         f"must be less than or equal to {MAX_STABILIZATION_WINDOW_SECONDS}")
    select = rules.get("selectPolicy")
    if select is not None and select not in SELECT_POLICIES:
        errs.not_supported(f"{path}.selectPolicy", select, SELECT_POLICIES)
    if rules.get("tolerance") is not None:
        # upstream's alpha HPAConfigurableTolerance; kubepy uses the controller-wide tolerance.
        errs.forbidden(f"{path}.tolerance", "a per-rule tolerance is not supported (the HPAConfigurableTolerance "
                       "feature is disabled); the controller's --horizontal-pod-autoscaler-tolerance applies")
    policies = rules.get("policies")
    if not policies:
        errs.required(f"{path}.policies", "must specify at least one Policy")
    for i, policy in enumerate(_l(policies)):
        policy, p = _d(policy), f"{path}.policies[{i}]"
        if policy.get("type") not in POLICY_TYPES:
            errs.not_supported(f"{p}.type", policy.get("type", ""), POLICY_TYPES)
        value, period = policy.get("value", 0), policy.get("periodSeconds", 0)
        if not _is_int(value) or value <= 0:
            errs.invalid(f"{p}.value", value, "must be greater than zero")
        if not _is_int(period) or period <= 0:
            errs.invalid(f"{p}.periodSeconds", period, "must be greater than zero")
        elif period > MAX_PERIOD_SECONDS:
            errs.invalid(f"{p}.periodSeconds", period, f"must be less than or equal to {MAX_PERIOD_SECONDS}")


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    spec = _d(obj.get("spec"))
    min_replicas, max_replicas = spec.get("minReplicas"), spec.get("maxReplicas", 0)
    if min_replicas is not None and (not _is_int(min_replicas) or min_replicas < MIN_REPLICAS_LOWER_BOUND):
        errs.invalid("spec.minReplicas", min_replicas,
                     f"must be greater than or equal to {MIN_REPLICAS_LOWER_BOUND}")
    if not _is_int(max_replicas) or max_replicas < 1:
        errs.invalid("spec.maxReplicas", max_replicas, "must be greater than 0")
    elif _is_int(min_replicas) and max_replicas < min_replicas:
        errs.invalid("spec.maxReplicas", max_replicas, "must be greater than or equal to `minReplicas`")
    _validate_reference(spec.get("scaleTargetRef"), "spec.scaleTargetRef", errs)
    for i, metric in enumerate(_l(spec.get("metrics"))):
        _validate_metric(metric, f"spec.metrics[{i}]", errs)
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):
        _validate_rules(behavior.get("scaleUp"), "spec.behavior.scaleUp", errs)
        _validate_rules(behavior.get("scaleDown"), "spec.behavior.scaleDown", errs)


def _validate_status(obj: dict, old: dict | None, errs: v.Errs) -> None:
    status = _d(obj.get("status"))
    errs.nonnegative("status.currentReplicas", status.get("currentReplicas"))
    errs.nonnegative("status.desiredReplicas", status.get("desiredReplicas"))


# -- printer (printHorizontalPodAutoscaler) ---------------------------------------------------------
def _metric_cell(spec: dict, status: dict | None) -> str:
    mtype = spec.get("type")
    field = _SOURCE_FIELDS.get(str(mtype))
    src, cur = _d(spec.get(field)) if field else {}, _d(_d(status).get(field)) if field else {}
    target, current = _d(src.get("target")), _d(cur.get("current"))
    if mtype in ("External", "Object"):
        if target.get("averageValue") is not None:
            return f"{current.get('averageValue', '<unknown>')}/{target['averageValue']} (avg)"
        return f"{current.get('value', '<unknown>') if cur else '<unknown>'}/{target.get('value')}"
    if mtype == "Pods":
        return f"{current.get('averageValue', '<unknown>') if cur else '<unknown>'}/{target.get('averageValue')}"
    if mtype in ("Resource", "ContainerResource"):
        prefix = f"{src.get('name')}" + (f" of container \"{src.get('container')}\"" if mtype != "Resource" else "")
        if target.get("averageValue") is not None:
            now = current.get("averageValue", "<unknown>") if cur else "<unknown>"
            return f"{prefix}: {now}/{target['averageValue']}"
        now = f"{current['averageUtilization']}%" if current.get("averageUtilization") is not None else "<unknown>"
        goal = f"{target['averageUtilization']}%" if target.get("averageUtilization") is not None else "<auto>"
        return f"{prefix}: {now}/{goal}"
    return "<unknown type>"


def format_metrics(specs: list, statuses: list) -> str:
    """kubectl's TARGETS: the first two metrics, ``current/target`` each, then ``+ N more...``."""
    if not specs:
        return "<none>"
    cells = [_metric_cell(_d(s), _d(statuses[i]) if i < len(statuses) else None) for i, s in enumerate(specs)]
    if len(cells) > 2:
        return ", ".join(cells[:2]) + f" + {len(cells) - 2} more..."
    return ", ".join(cells)


def _cells(obj: dict, now: dt.datetime) -> list:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    ref = _d(spec.get("scaleTargetRef"))
    min_replicas = spec.get("minReplicas")
    return [printers.name_cell(obj), f"{ref.get('kind', '')}/{ref.get('name', '')}",
            format_metrics(_l(spec.get("metrics")), _l(status.get("currentMetrics"))),
            "<unset>" if min_replicas is None else str(min_replicas), int(spec.get("maxReplicas") or 0),
            int(status.get("currentReplicas") or 0), printers.age_cell(obj, now)]


def _any_version_cells(obj: dict, now: dt.datetime) -> list:
    """One printer for both versions (a v1 object is printed as its v2 self, as upstream prints the internal type)."""
    return _cells(v1_to_v2(obj) if obj.get("apiVersion") == "autoscaling/v1" else obj, now)


_COLUMNS = (
    printers.name_column(),
    printers.column("Reference", "scaleTargetRef points to the target resource to scale, and is used to the pods "
                    "for which metrics should be collected, as well as to actually change the replica count."),
    printers.column("Targets", "metrics contains the specifications for which to use to calculate the desired "
                    "replica count (the maximum replica count across all metrics will be used)."),
    printers.column("MinPods", "minReplicas is the lower limit for the number of replicas to which the autoscaler "
                    "can scale down.  It defaults to 1 pod."),
    printers.column("MaxPods", "maxReplicas is the upper limit for the number of replicas to which the autoscaler "
                    "can scale up. It cannot be less that minReplicas.", type_="integer"),
    printers.column("Replicas", "currentReplicas is current number of replicas of pods managed by this autoscaler, "
                    "as last seen by the autoscaler.", type_="integer"),
    printers.age_column(),
)

_PROTO_V2 = """
HorizontalPodAutoscalerV2
    1 metadata                         ObjectMeta
    2 spec                             HorizontalPodAutoscalerSpecV2
    3 status                           HorizontalPodAutoscalerStatusV2
HorizontalPodAutoscalerSpecV2
    1 scaleTargetRef                   CrossVersionObjectReferenceV2
    2 minReplicas                      *int32
    3 maxReplicas                      int32
    4 metrics                          []MetricSpec
    5 behavior                         *HorizontalPodAutoscalerBehavior
CrossVersionObjectReferenceV2
    1 kind                             string
    2 name                             string
    3 apiVersion                       string
MetricSpec
    1 type                             string
    2 object                           *ObjectMetricSource
    3 pods                             *PodsMetricSource
    4 resource                         *ResourceMetricSource
    7 containerResource                *ContainerResourceMetricSource
    5 external                         *ExternalMetricSource
ObjectMetricSource
    1 describedObject                  CrossVersionObjectReferenceV2
    2 target                           MetricTarget
    3 metric                           MetricIdentifier
PodsMetricSource
    1 metric                           MetricIdentifier
    2 target                           MetricTarget
ResourceMetricSource
    1 name                             string
    2 target                           MetricTarget
ContainerResourceMetricSource
    1 name                             string
    2 target                           MetricTarget
    3 container                        string
ExternalMetricSource
    1 metric                           MetricIdentifier
    2 target                           MetricTarget
MetricIdentifier
    1 name                             string
    2 selector                         *LabelSelector
MetricTarget
    1 type                             string
    2 value                            *Quantity
    3 averageValue                     *Quantity
    4 averageUtilization               *int32
HorizontalPodAutoscalerBehavior
    1 scaleUp                          *HPAScalingRules
    2 scaleDown                        *HPAScalingRules
HPAScalingRules
    3 stabilizationWindowSeconds       *int32
    1 selectPolicy                     *string
    2 policies                         []HPAScalingPolicy
    4 tolerance                        *Quantity
HPAScalingPolicy
    1 type                             string
    2 value                            int32
    3 periodSeconds                    int32
HorizontalPodAutoscalerStatusV2
    1 observedGeneration               *int64
    2 lastScaleTime                    *Time
    3 currentReplicas                  int32
    4 desiredReplicas                  int32
    5 currentMetrics                   []MetricStatus
    6 conditions                       []HorizontalPodAutoscalerCondition
MetricStatus
    1 type                             string
    2 object                           *ObjectMetricStatus
    3 pods                             *PodsMetricStatus
    4 resource                         *ResourceMetricStatus
    7 containerResource                *ContainerResourceMetricStatus
    5 external                         *ExternalMetricStatus
ObjectMetricStatus
    1 metric                           MetricIdentifier
    2 current                          MetricValueStatus
    3 describedObject                  CrossVersionObjectReferenceV2
PodsMetricStatus
    1 metric                           MetricIdentifier
    2 current                          MetricValueStatus
ResourceMetricStatus
    1 name                             string
    2 current                          MetricValueStatus
ContainerResourceMetricStatus
    1 name                             string
    2 current                          MetricValueStatus
    3 container                        string
ExternalMetricStatus
    1 metric                           MetricIdentifier
    2 current                          MetricValueStatus
MetricValueStatus
    1 value                            *Quantity
    2 averageValue                     *Quantity
    3 averageUtilization               *int32
HorizontalPodAutoscalerCondition
    1 type                             string
    2 status                           string
    3 lastTransitionTime               *Time
    4 reason                           string
    5 message                          string
"""

# Message names are global in kubepy's protobuf schema: the two versions' own messages carry a suffix.
_PROTO_V1 = """
HorizontalPodAutoscalerV1
    1 metadata                         ObjectMeta
    2 spec                             HorizontalPodAutoscalerSpecV1
    3 status                           HorizontalPodAutoscalerStatusV1
HorizontalPodAutoscalerSpecV1
    1 scaleTargetRef                   CrossVersionObjectReference
    2 minReplicas                      *int32
    3 maxReplicas                      int32
    4 targetCPUUtilizationPercentage   *int32
CrossVersionObjectReference
    1 kind                             string
    2 name                             string
    3 apiVersion                       string
HorizontalPodAutoscalerStatusV1
    1 observedGeneration               *int64
    2 lastScaleTime                    *Time
    3 currentReplicas                  int32
    4 desiredReplicas                  int32
    5 currentCPUUtilizationPercentage  *int32
"""

_PRINTER = Printer(_COLUMNS, _any_version_cells)
_STRATEGY = Strategy(default=_default, validate=_validate, prepare_create=_prepare_create)
_STATUS_STRATEGY = Strategy(validate=_validate_status)

HPA = register(Kind(
    "autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", namespaced=True,
    short_names=("hpa",), subresources=("status",), categories=("all",), has_status=True, has_spec_generation=True,
    model="V2HorizontalPodAutoscaler", proto="HorizontalPodAutoscalerV2", proto_schema=_PROTO_V2,
    api_types=("HorizontalPodAutoscaler", "HorizontalPodAutoscalerList", "HorizontalPodAutoscalerSpec",
               "HorizontalPodAutoscalerStatus", "CrossVersionObjectReference", "MetricSpec", "MetricStatus",
               "ObjectMetricSource", "PodsMetricSource", "ResourceMetricSource", "ContainerResourceMetricSource",
               "ExternalMetricSource", "MetricIdentifier", "MetricTarget", "HorizontalPodAutoscalerBehavior",
               "HPAScalingRules", "HPAScalingPolicy", "ObjectMetricStatus", "PodsMetricStatus",
               "ResourceMetricStatus", "ContainerResourceMetricStatus", "ExternalMetricStatus", "MetricValueStatus",
               "HorizontalPodAutoscalerCondition"),
    strategy=_STRATEGY, subresource_strategies={"status": _STATUS_STRATEGY},
    printer=_PRINTER,
))

HPA_V1 = register(Kind(
    "autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", namespaced=True,
    short_names=(), subresources=("status",), categories=("all",), has_status=True, has_spec_generation=True,
    model="V1HorizontalPodAutoscaler", proto="HorizontalPodAutoscalerV1", proto_schema=_PROTO_V1,
    api_types=("HorizontalPodAutoscaler", "HorizontalPodAutoscalerList", "HorizontalPodAutoscalerSpec",
               "HorizontalPodAutoscalerStatus", "CrossVersionObjectReference"),
    strategy=_STRATEGY, subresource_strategies={"status": _STATUS_STRATEGY},
    printer=_PRINTER,
    conversion=Conversion(storage=HPA, to_storage=v1_to_v2, from_storage=v2_to_v1),
))
