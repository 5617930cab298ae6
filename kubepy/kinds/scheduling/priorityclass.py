"""PriorityClass (scheduling.k8s.io/v1): a name for a pod priority.

Priority admission (kubepy.api.priority) turns a pod's
``priorityClassName`` (or the ``globalDefault`` class) into
``spec.priority`` and ``spec.preemptionPolicy``; the scheduler orders its
queue by it and preempts lower-priority pods. The API server creates the
two built-in classes, ``system-cluster-critical`` (2000000000) and
``system-node-critical`` (2000001000), at start; names starting with
``system-`` are reserved for them. ``value``, ``preemptionPolicy`` are
immutable, as upstream.
"""

from __future__ import annotations

import datetime as dt

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v

HIGHEST_USER_DEFINABLE_PRIORITY = 1_000_000_000
SYSTEM_CRITICAL_PRIORITY = 2 * HIGHEST_USER_DEFINABLE_PRIORITY
SYSTEM_PRIORITY_CLASSES = {
    "system-node-critical": (SYSTEM_CRITICAL_PRIORITY + 1000, "Used for system critical pods that must not be "
                                                              "moved from their current node."),
    "system-cluster-critical": (SYSTEM_CRITICAL_PRIORITY, "Used for system critical pods that must run in the "
                                                          "cluster, but can be moved to another node if necessary."),
}
POLICIES = ("Never", "PreemptLowerPriority")


def _default(obj: dict, old: dict | None) -> None:
    obj.setdefault("preemptionPolicy", "PreemptLowerPriority")


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    name = str(v._d(obj.get("metadata")).get("name") or "")
    value = obj.get("value")
    if name.startswith("system-"):
        builtin = SYSTEM_PRIORITY_CLASSES.get(name)
        if builtin is None:
            errs.forbidden("metadata.name", "priority class names with 'system-' prefix are reserved for "
                           "system use only")
        elif value != builtin[0]:
            errs.forbidden("value", f"value of {name} PriorityClass must be {builtin[0]}")
    elif isinstance(value, int) and not isinstance(value, bool) and value > HIGHEST_USER_DEFINABLE_PRIORITY:
        errs.forbidden("value", f"maximum allowed value of a user defined priority is "
                       f"{HIGHEST_USER_DEFINABLE_PRIORITY}")
    if value is None:
        errs.required("value")
    elif not isinstance(value, int) or isinstance(value, bool):
        errs.invalid("value", value, "must be an integer")
    policy = obj.get("preemptionPolicy")
    if policy is not None:
        errs.enum("preemptionPolicy", policy, POLICIES)
    if old is not None:
        if value != old.get("value"):
            errs.forbidden("value", "may not be changed in an update.")
        if policy != old.get("preemptionPolicy"):
            errs.invalid("preemptionPolicy", policy, "field is immutable")


def _cells(obj: dict, now: dt.datetime) -> list:
    return [printers.name_cell(obj), obj.get("value", 0), bool(obj.get("globalDefault")),
            printers.age_cell(obj, now), obj.get("preemptionPolicy") or ""]


_COLUMNS = (
    printers.name_column(),
    printers.column("Value", "Value is the integer value of this priority class.", type_="integer"),
    printers.column("Global-Default", "GlobalDefault specifies whether this PriorityClass should be considered "
                                      "as the default priority.", type_="boolean"),
    printers.age_column(),
    printers.column("PreemptionPolicy", "PreemptionPolicy is the Policy for preempting pods with lower priority."),
)

PRIORITYCLASS = register(Kind(
    "scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", namespaced=False, short_names=("pc",),
    model="V1PriorityClass", proto="PriorityClass",
    proto_schema="""
PriorityClass
    1 metadata                         ObjectMeta
    2 value                            int32
    3 globalDefault                    bool
    4 description                      string
    5 preemptionPolicy                 *string
""",
    api_types=("PriorityClass", "PriorityClassList"),
    strategy=Strategy(default=_default, validate=_validate),
    printer=Printer(_COLUMNS, _cells),
))
