"""LimitRange (v1): per-namespace defaults and bounds for containers, pods and claims.

Enforced at admission by kubepy.api.limitranger. Items of ``type:
Container`` are defaulted as upstream: ``default`` from ``max``,
``defaultRequest`` from ``default`` and then from ``min``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.meta.quantity import canonicalize_quantity, parse_quantity

TYPES = ("Pod", "Container", "PersistentVolumeClaim")


def default_item(item: dict) -> None:
    """SetDefaults_LimitRangeItem."""
    if item.get("type") != "Container":
        return
    default = dict(item.get("default") or {})
    request = dict(item.get("defaultRequest") or {})
    for k, q in (item.get("max") or {}).items():
        default.setdefault(k, q)
    for k, q in default.items():
        request.setdefault(k, q)
    for k, q in (item.get("min") or {}).items():
        request.setdefault(k, q)
    if default:
        item["default"] = default
    if request:
        item["defaultRequest"] = request


def _default(obj: dict, old: dict | None) -> None:
    for item in v._l(v._d(obj.get("spec")).get("limits")):
        if isinstance(item, dict):
            default_item(item)


def _s(q: object) -> str:
    try:
        return canonicalize_quantity(q)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return str(q)


def _parse(rl: object, path: str, errs: v.Errs) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for name, value in v._d(rl).items():
        p = f"{path}[{name}]"
        msgs = v.is_qualified_name(str(name))
        if msgs:
            errs.each(p, name, msgs)
        try:
            q = parse_quantity(value)
        except (ValueError, TypeError):
            errs.invalid(p, value, "quantities must match the regular expression "
                         "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
            continue
        if q < 0:
            errs.invalid(p, value, "must be greater than or equal to 0")
        out[name] = q
    return out


def validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    limits = v._l(v._d(obj.get("spec")).get("limits"))
    seen: set[str] = set()
    for i, item in enumerate(limits):
        item, p = v._d(item), f"spec.limits[{i}]"
        typ = item.get("type")
        if not typ:
            errs.required(f"{p}.type")
        elif typ in seen:
            errs.duplicate(f"{p}.type", typ)
        else:
            seen.add(typ)
        mx = _parse(item.get("max"), f"{p}.max", errs)
        mn = _parse(item.get("min"), f"{p}.min", errs)
        dflt: dict[str, Decimal] = {}
        dreq: dict[str, Decimal] = {}
        if typ == "Pod":
            if item.get("default"):
                errs.forbidden(f"{p}.default", "may not be specified when `type` is 'Pod'")
            if item.get("defaultRequest"):
                errs.forbidden(f"{p}.defaultRequest", "may not be specified when `type` is 'Pod'")
        else:
            dflt = _parse(item.get("default"), f"{p}.default", errs)
            dreq = _parse(item.get("defaultRequest"), f"{p}.defaultRequest", errs)
        if typ == "PersistentVolumeClaim" and "storage" not in mn and "storage" not in mx:
            errs.required(f"{p}.limits", "either minimum or maximum storage value is required, but neither was provided")
        ratio = _parse(item.get("maxLimitRequestRatio"), f"{p}.maxLimitRequestRatio", errs)
        raw = {f: v._d(item.get(f)) for f in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio")}
        for k in sorted(set(mx) | set(mn) | set(dflt) | set(dreq) | set(ratio)):
            if k in mn and k in mx and mn[k] > mx[k]:
                errs.invalid(f"{p}.min[{k}]", raw["min"][k],
                             f"min value {_s(raw['min'][k])} is greater than max value {_s(raw['max'][k])}")
            if k in dreq and k in mn and mn[k] > dreq[k]:
                errs.invalid(f"{p}.defaultRequest[{k}]", raw["defaultRequest"][k],
                             f"min value {_s(raw['min'][k])} is greater than default request value "
                             f"{_s(raw['defaultRequest'][k])}")
            if k in dreq and k in mx and dreq[k] > mx[k]:
                errs.invalid(f"{p}.defaultRequest[{k}]", raw["defaultRequest"][k],
                             f"default request value {_s(raw['defaultRequest'][k])} is greater than max value "
                             f"{_s(raw['max'][k])}")
            if k in dreq and k in dflt and dreq[k] > dflt[k]:
                errs.invalid(f"{p}.defaultRequest[{k}]", raw["defaultRequest"][k],
                             f"default request value {_s(raw['defaultRequest'][k])} is greater than default limit "
                             f"value {_s(raw['default'][k])}")
            if k in dflt and k in mn and mn[k] > dflt[k]:
                errs.invalid(f"{p}.default[{k}]", raw["default"][k],
                             f"min value {_s(raw['min'][k])} is greater than default value {_s(raw['default'][k])}")
            if k in dflt and k in mx and dflt[k] > mx[k]:
                errs.invalid(f"{p}.default[{k}]", raw["default"][k],
                             f"default value {_s(raw['default'][k])} is greater than max value {_s(raw['max'][k])}")
            if k in ratio and ratio[k] < 1:
                errs.invalid(f"{p}.maxLimitRequestRatio[{k}]", raw["maxLimitRequestRatio"][k],
                             f"ratio {_s(raw['maxLimitRequestRatio'][k])} is less than 1")
            if k in ratio and k in mn and k in mx and mn[k] > 0:
                most = mx[k] / mn[k]
                if ratio[k] > most:
                    errs.invalid(f"{p}.maxLimitRequestRatio[{k}]", raw["maxLimitRequestRatio"][k],
                                 f"ratio {_s(raw['maxLimitRequestRatio'][k])} is greater than max/min = "
                                 f"{float(most):f}")


def _cells(obj: dict, now: dt.datetime) -> list:
    return [printers.name_cell(obj), (obj.get("metadata") or {}).get("creationTimestamp", "")]


_COLUMNS = (
    printers.name_column(),
    printers.column("Created At", "Creation timestamp", format_="date"),
)

LIMITRANGE = register(Kind(
    "", "v1", "LimitRange", "limitranges", namespaced=True, short_names=("limits",),
    model="V1LimitRange", proto="LimitRange",
    proto_schema="""
LimitRange
    1 metadata                         ObjectMeta
    2 spec                             LimitRangeSpec
LimitRangeSpec
    1 limits                           []LimitRangeItem
LimitRangeItem
    1 type                             string
    2 max                              map[string]Quantity
    3 min                              map[string]Quantity
    4 default                          map[string]Quantity
    5 defaultRequest                   map[string]Quantity
    6 maxLimitRequestRatio             map[string]Quantity
""",
    api_types=("LimitRange", "LimitRangeList", "LimitRangeSpec", "LimitRangeItem"),
    strategy=Strategy(default=_default, validate=validate),
    printer=Printer(_COLUMNS, _cells),
))
