"""ResourceQuota (v1): a namespace's limits on object counts and compute/storage totals.

``spec.hard`` is enforced at admission (kubepy.api.resourcequota) and
recounted into ``status.used`` by the resource-quota controller; the
status is written through ``/status`` only. ``kubectl get quota`` shows
``used/hard`` per resource, requests and counts apart from ``limits.*``.
"""

from __future__ import annotations

import datetime as dt

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.meta import quota
from kubepy.meta.quantity import parse_quantity

_SCOPE_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
# Which resources each scope may be applied to (upstream's pod quota scopes).
_POD_SCOPES = ("Terminating", "NotTerminating", "BestEffort", "NotBestEffort", "PriorityClass",
               "CrossNamespacePodAffinity")


def _validate_list(rl: dict, path: str, errs: v.Errs) -> None:
    for name, value in v._d(rl).items():
        p = f"{path}[{name}]"
        msgs = v.is_qualified_name(str(name))
        if msgs:
            errs.each(p, name, msgs)
        elif "/" not in name and name not in quota.STANDARD and not name.startswith(("requests.", "limits.")):
            errs.invalid(p, name, "must be a standard resource for quota")
        try:
            q = parse_quantity(value)
        except (ValueError, TypeError):
            errs.invalid(p, value, "quantities must match the regular expression "
                         "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
            continue
        if q < 0:
            errs.invalid(p, value, "must be greater than or equal to 0")


def _validate_spec(spec: dict, errs: v.Errs) -> None:
    hard = v._d(spec.get("hard"))
    _validate_list(hard, "spec.hard", errs)
    scopes = list(v._l(spec.get("scopes")))
    for i, s in enumerate(scopes):
        if s not in _POD_SCOPES:
            errs.not_supported(f"spec.scopes[{i}]", s, _POD_SCOPES)
    selector = v._d(spec.get("scopeSelector"))
    for i, e in enumerate(v._l(selector.get("matchExpressions"))):
        e, p = v._d(e), f"spec.scopeSelector.matchExpressions[{i}]"
        name, op, values = e.get("scopeName"), e.get("operator"), v._l(e.get("values"))
        if name not in _POD_SCOPES:
            errs.not_supported(f"{p}.scopeName", name, _POD_SCOPES)
        if op not in _SCOPE_OPERATORS:
            errs.not_supported(f"{p}.operator", op, _SCOPE_OPERATORS)
        elif op in ("In", "NotIn") and not values:
            errs.required(f"{p}.values", "must be at least one value when `operator` is 'In' or 'NotIn' for scope selector")
        elif op in ("Exists", "DoesNotExist") and values:
            errs.invalid(f"{p}.values", values, "must be no value when `operator` is 'Exist' or 'DoesNotExist' "
                         "for scope selector")
        if name in ("Terminating", "NotTerminating", "BestEffort", "NotBestEffort") and op not in ("Exists", None):
            errs.invalid(f"{p}.operator", op, "must be 'Exist' when scope is any of ResourceQuotaScopeTerminating, "
                         "ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort or "
                         "ResourceQuotaScopeNotBestEffort")
    names = set(scopes) | {v._d(e).get("scopeName") for e in v._l(selector.get("matchExpressions"))}
    for a, b in (("Terminating", "NotTerminating"), ("BestEffort", "NotBestEffort")):
        if a in names and b in names:
            errs.invalid("spec.scopes", sorted(names), f"conflicting scopes: {a}, {b}")
    if "BestEffort" in names:
        for r in hard:
            if r not in ("pods", "count/pods"):
                errs.invalid(f"spec.hard[{r}]", r, "unsupported scope applied to resource")


def validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    _validate_spec(v._d(obj.get("spec")), errs)
    if old is not None:
        old_spec, spec = v._d(old.get("spec")), v._d(obj.get("spec"))
        for f in ("scopes", "scopeSelector"):
            if spec.get(f) != old_spec.get(f):
                errs.invalid(f"spec.{f}", spec.get(f), "field is immutable")


def _validate_status(obj: dict, old: dict | None, errs: v.Errs) -> None:
    status = v._d(obj.get("status"))
    _validate_list(v._d(status.get("hard")), "status.hard", errs)
    _validate_list(v._d(status.get("used")), "status.used", errs)


def _prepare_create(obj: dict) -> None:
    obj.pop("status", None)


def _cells(obj: dict, now: dt.datetime) -> list:
    status = v._d(obj.get("status"))
    hard, used = v._d(status.get("hard")), v._d(status.get("used"))
    req, lim = [], []
    for name in sorted(hard):
        cell = f"{name}: {used.get(name, '0')}/{hard[name]}"
        (lim if name.startswith("limits.") else req).append(cell)
    return [printers.name_cell(obj), printers.age_cell(obj, now), ", ".join(req), ", ".join(lim)]


_COLUMNS = (
    printers.name_column(),
    printers.age_column(),
    printers.column("Request", "Request represents a minimum amount of cpu/memory that a container may consume."),
    printers.column("Limit", "Limits control the maximum amount of cpu/memory that a container may use "
                             "independent of contention on the node."),
)

RESOURCEQUOTA = register(Kind(
    "", "v1", "ResourceQuota", "resourcequotas", namespaced=True, short_names=("quota",),
    subresources=("status",), has_status=True,
    model="V1ResourceQuota", proto="ResourceQuota",
    proto_schema="""
ResourceQuota
    1 metadata                         ObjectMeta
    2 spec                             ResourceQuotaSpec
    3 status                           ResourceQuotaStatus
ResourceQuotaSpec
    1 hard                             map[string]Quantity
    2 scopes                           []string
    3 scopeSelector                    *ScopeSelector
ScopeSelector
    1 matchExpressions                 []ScopedResourceSelectorRequirement
ScopedResourceSelectorRequirement
    1 scopeName                        string
    2 operator                         string
    3 values                           []string
ResourceQuotaStatus
    1 hard                             map[string]Quantity
    2 used                             map[string]Quantity
""",
    api_types=("ResourceQuota", "ResourceQuotaList", "ResourceQuotaSpec", "ResourceQuotaStatus", "ScopeSelector",
               "ScopedResourceSelectorRequirement"),
    strategy=Strategy(validate=validate, prepare_create=_prepare_create),
    subresource_strategies={"status": Strategy(validate=_validate_status)},
    printer=Printer(_COLUMNS, _cells),
))
