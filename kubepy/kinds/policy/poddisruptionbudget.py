"""PodDisruptionBudget (policy/v1): how many of an application's pods voluntary
disruptions may take at once.

The disruption controller writes its status (expected, healthy and desired
pods, ``disruptionsAllowed``, the ``DisruptionAllowed`` condition); the
``pods/eviction`` subresource of the API server reads and decrements it.
Validation as Kubernetes' ValidatePodDisruptionBudgetSpec: minAvailable and
maxUnavailable are each an int or a percentage of at most 100%, never both;
the selector is a valid label selector; unhealthyPodEvictionPolicy is
IfHealthyBudget or AlwaysAllow.  The spec may change (the generation moves)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v

UNHEALTHY_POD_EVICTION_POLICIES = ("AlwaysAllow", "IfHealthyBudget")

# The status condition the disruption controller and the eviction subresource both keep.
CONDITION_DISRUPTION_ALLOWED = "DisruptionAllowed"
REASON_SUFFICIENT_PODS = "SufficientPods"
REASON_INSUFFICIENT_PODS = "InsufficientPods"
REASON_SYNC_FAILED = "SyncFailed"


def set_condition(conditions: list[dict[str, Any]], cond: dict[str, Any], now: dt.datetime) -> list[dict[str, Any]]:
    """meta.SetStatusCondition on a copy: lastTransitionTime moves only when the status does."""
    out = [dict(c) for c in conditions]
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for c in out:
        if c.get("type") == cond["type"]:
            if c.get("status") != cond["status"]:
                c["lastTransitionTime"] = stamp
            c.update(status=cond["status"], reason=cond["reason"], message=cond["message"],
                     observedGeneration=cond["observedGeneration"])
            return out
    out.append({"type": cond["type"], "status": cond["status"], "observedGeneration": cond["observedGeneration"],
                "lastTransitionTime": stamp, "reason": cond["reason"], "message": cond["message"]})
    return out


def disruption_allowed_condition(status: dict[str, Any], now: dt.datetime) -> list[dict[str, Any]]:
    """The conditions with DisruptionAllowed following ``disruptionsAllowed``
    (upstream's pdbhelper.UpdateDisruptionAllowedCondition)."""
    allowed = int(status.get("disruptionsAllowed") or 0) > 0
    return set_condition(status.get("conditions") or [], {
        "type": CONDITION_DISRUPTION_ALLOWED, "status": "True" if allowed else "False",
        "reason": REASON_SUFFICIENT_PODS if allowed else REASON_INSUFFICIENT_PODS, "message": "",
        "observedGeneration": int(status.get("observedGeneration") or 0)}, now)


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _prepare_create(obj: dict) -> None:
    obj.pop("status", None)


def _validate_int_or_percent(value: Any, path: str, errs: v.Errs) -> None:
    v.validate_int_or_percent(value, path, errs)
    if isinstance(value, str) and (v.int_or_percent(value) or 0) > 100:
        errs.invalid(path, value, "must not be greater than 100%")


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    spec = _d(obj.get("spec"))
    min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")
    if min_available is not None and max_unavailable is not None:
        errs.invalid("spec", json.loads(json.dumps(spec)), "minAvailable and maxUnavailable cannot be both set")
    if min_available is not None:
        _validate_int_or_percent(min_available, "spec.minAvailable", errs)
    if max_unavailable is not None:
        _validate_int_or_percent(max_unavailable, "spec.maxUnavailable", errs)
    selector = spec.get("selector")
    if isinstance(selector, dict):
        v.validate_label_selector(selector, "spec.selector", errs)
    elif selector is not None:
        errs.invalid("spec.selector", selector, "must be a label selector")
    policy = spec.get("unhealthyPodEvictionPolicy")
    if policy is not None and policy not in UNHEALTHY_POD_EVICTION_POLICIES:
        errs.not_supported("spec.unhealthyPodEvictionPolicy", policy, UNHEALTHY_POD_EVICTION_POLICIES)


def _shown(value: Any) -> str:
    return "N/A" if value is None else str(value)


def _cells(obj: dict, now: dt.datetime) -> list:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    return [printers.name_cell(obj), _shown(spec.get("minAvailable")), _shown(spec.get("maxUnavailable")),
            int(status.get("disruptionsAllowed") or 0), printers.age_cell(obj, now)]


_COLUMNS = (
    printers.name_column(),
    printers.column("Min Available", "The minimum number of pods that must be available."),
    printers.column("Max Unavailable", "The maximum number of pods that may be unavailable."),
    printers.column("Allowed Disruptions", "Calculated number of pods that may be disrupted at this time.",
                    type_="integer"),
    printers.age_column(),
)

PODDISRUPTIONBUDGET = register(Kind(
    "policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", namespaced=True, short_names=("pdb",),
    subresources=("status",), has_status=True, has_spec_generation=True,
    model="V1PodDisruptionBudget", proto="PodDisruptionBudget",
    proto_schema="""
PodDisruptionBudget
    1 metadata                         ObjectMeta
    2 spec                             PodDisruptionBudgetSpec
    3 status                           PodDisruptionBudgetStatus
PodDisruptionBudgetSpec
    1 minAvailable                     *IntOrString
    2 selector                         *LabelSelector
    3 maxUnavailable                   *IntOrString
    4 unhealthyPodEvictionPolicy       *string
PodDisruptionBudgetStatus
    1 observedGeneration               int64
    2 disruptedPods                    map[string]Time
    3 disruptionsAllowed               int32
    4 currentHealthy                   int32
    5 desiredHealthy                   int32
    6 expectedPods                     int32
    7 conditions                       []Condition
""",
    api_types=("PodDisruptionBudget", "PodDisruptionBudgetList", "PodDisruptionBudgetSpec",
               "PodDisruptionBudgetStatus", "Eviction"),
    strategy=Strategy(validate=_validate, prepare_create=_prepare_create),
    printer=Printer(_COLUMNS, _cells),
))
