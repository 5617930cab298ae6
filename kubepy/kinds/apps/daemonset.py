"""DaemonSet (apps/v1): one pod of a template on every eligible node; the
daemonset controller keeps them and rolls them out node by node.

As upstream's ``pkg/registry/apps/daemonset/strategy.go`` with
``pkg/apis/apps/v1/defaults.go`` (SetDefaults_DaemonSet) and
``pkg/apis/apps/validation`` (ValidateDaemonSet, ValidateDaemonSetUpdate):
field paths and messages are Kubernetes'.  An ``IntOrString`` in a message is rendered as Go renders the internal
type's value (``intstr.IntOrString{Type:0, IntVal:1, StrVal:""}``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v

STRATEGIES = ("RollingUpdate", "OnDelete")
TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"
_PERCENT = re.compile(r"[0-9]+%")


def _d(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# -- defaults ------------------------------------------------------------------
def default_daemonset(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    strategy = spec.setdefault("updateStrategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("maxUnavailable", 1)
                rolling.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    v.default_pod_template(obj)
    _count_template_generation(obj, old)


def _count_template_generation(obj: dict, old: dict | None) -> None:
    """The v1 face of the internal spec.templateGeneration: 1 on create, +1 whenever the template changes
    (PrepareForCreate/PrepareForUpdate); the controller labels pods with it (pod-template-generation)."""
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta, dict):
        return
    if not isinstance(meta.get("annotations"), dict):
        meta["annotations"] = {}
    generation = 1
    if old is not None:
        try:
            generation = int(_d(_d(old.get("metadata")).get("annotations")).get(TEMPLATE_GENERATION) or 1)
        except ValueError:
            generation = 1
        if _d(obj.get("spec")).get("template") != _d(old.get("spec")).get("template"):
            generation += 1
    meta["annotations"][TEMPLATE_GENERATION] = str(generation)


def _prepare_create(obj: dict) -> None:
    # The v1 status' four counters have no omitempty: a new DaemonSet shows them at 0.
    obj["status"] = {"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0,
                     "numberReady": 0}


# -- validation ------------------------------------------------------------------
def go_int_or_string(value: Any) -> str:
    """How Go's field errors print an ``intstr.IntOrString`` (``%#v``: it is no Stringer by value)."""
    if isinstance(value, str):
        return f"intstr.IntOrString{{Type:1, IntVal:0, StrVal:{json.dumps(value)}}}"
    n = value if _is_int(value) else 0
    return f'intstr.IntOrString{{Type:0, IntVal:{n}, StrVal:""}}'


def _percent(value: Any) -> int | None:
    return int(value[:-1]) if isinstance(value, str) and _PERCENT.fullmatch(value) else None


def _int_or_percent(value: Any) -> int:
    """upstream's getIntOrPercentValue: the percent's number, the int, 0 for anything else."""
    p = _percent(value)
    if p is not None:
        return p
    return value if _is_int(value) else 0


def _validate_positive_int_or_percent(value: Any, path: str, errs: v.Errs) -> None:
    if isinstance(value, str):
        for msg in v.is_valid_percent(value):
            errs.invalid_shown(path, go_int_or_string(value), msg)
    elif _is_int(value):
        errs.nonnegative(path, value)
    elif value is not None:
        errs.invalid_shown(path, go_int_or_string(value), "must be an integer or percentage (e.g '5%')")


def _validate_rolling_update(rolling: dict, path: str, errs: v.Errs) -> None:
    unavailable, surge = rolling.get("maxUnavailable"), rolling.get("maxSurge")
    _validate_positive_int_or_percent(unavailable, f"{path}.maxUnavailable", errs)
    _validate_positive_int_or_percent(surge, f"{path}.maxSurge", errs)
    for key, value in (("maxUnavailable", unavailable), ("maxSurge", surge)):
        if (_percent(value) or 0) > 100:
            errs.invalid_shown(f"{path}.{key}", go_int_or_string(value), "must not be greater than 100%")
    has_unavailable, has_surge = _int_or_percent(unavailable) != 0, _int_or_percent(surge) != 0
    if has_unavailable and has_surge:
        errs.invalid_shown(f"{path}.maxSurge", go_int_or_string(surge),
                           "may not be set when maxUnavailable is non-zero")
    elif not has_unavailable and not has_surge:
        errs.required(f"{path}.maxUnavailable", "cannot be 0 when maxSurge is 0")


def _validate_update_strategy(strategy: dict, errs: v.Errs) -> None:
    path = "spec.updateStrategy"
    kind = strategy.get("type")
    if kind == "OnDelete":
        return
    if kind == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if not isinstance(rolling, dict):
            errs.required(f"{path}.rollingUpdate")
            return
        _validate_rolling_update(rolling, f"{path}.rollingUpdate", errs)
        return
    errs.not_supported(path, strategy, STRATEGIES)


def _validate_selector_and_template(spec: dict, errs: v.Errs) -> None:
    selector = spec.get("selector")
    template = _d(spec.get("template"))
    labels = _d(_d(template.get("metadata")).get("labels"))
    if selector is None:
        errs.required("spec.selector")
    elif isinstance(selector, dict):
        v.validate_label_selector(selector, "spec.selector", errs)
    # A missing selector selects nothing, so it cannot match the template either.
    if not isinstance(selector, dict) or not v.selector_matches(selector, labels):
        errs.invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
    if isinstance(selector, dict) and not selector.get("matchLabels") and not selector.get("matchExpressions"):
        errs.invalid("spec.selector", selector, "empty selector is invalid for daemonset")
    v.validate_labels(labels, "spec.template.metadata.labels", errs)
    tspec = template.get("spec")
    if not isinstance(tspec, dict):
        errs.required("spec.template.spec")
        return
    v.validate_pod_spec(tspec, "spec.template.spec", errs)
    if tspec.get("ephemeralContainers"):
        errs.forbidden("spec.template.spec.ephemeralContainers", "ephemeral containers not allowed in pod template")
    if tspec.get("restartPolicy") != "Always":
        errs.not_supported("spec.template.spec.restartPolicy", tspec.get("restartPolicy") or "", ("Always",))
    if tspec.get("activeDeadlineSeconds") is not None:
        errs.forbidden("spec.template.spec.activeDeadlineSeconds",
                       "activeDeadlineSeconds in DaemonSet is not Supported")


def validate_daemonset(obj: dict, old: dict | None, errs: v.Errs) -> None:
    spec = _d(obj.get("spec"))
    _validate_selector_and_template(spec, errs)
    errs.nonnegative("spec.minReadySeconds", spec.get("minReadySeconds"))
    _validate_update_strategy(_d(spec.get("updateStrategy")), errs)
    errs.nonnegative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    if old is not None:  # apps/v1: the selector may not change
        v.validate_immutable(spec.get("selector"), _d(old.get("spec")).get("selector"), "spec.selector", errs)


# -- printing ----------------------------------------------------------------------
_STATUS_DOC = "More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/"
_COLUMNS = (
    printers.name_column(),
    printers.column("Desired", "The total number of nodes that should be running the daemon pod (including nodes "
                               f"correctly running the daemon pod). {_STATUS_DOC}", type_="integer"),
    printers.column("Current", "The number of nodes that are running at least 1 daemon pod and are supposed to run "
                               f"the daemon pod. {_STATUS_DOC}", type_="integer"),
    printers.column("Ready", "numberReady is the number of nodes that should be running the daemon pod and have one "
                             "or more of the daemon pod running with a Ready Condition.", type_="integer"),
    printers.column("Up-to-date", "The total number of nodes that are running updated daemon pod", type_="integer"),
    printers.column("Available", "The number of nodes that should be running the daemon pod and have one or more of "
                                 "the daemon pod running and available (ready for at least spec.minReadySeconds)",
                    type_="integer"),
    printers.column("Node Selector", "NodeSelector is a selector which must be true for the pod to fit on a node. "
                                     "Selector which must match a node's labels for the pod to be scheduled on that "
                                     "node. More info: https://kubernetes.io/docs/concepts/configuration/"
                                     "assign-pod-node/"),
    printers.age_column(),
    printers.column("Containers", printers.CONTAINERS_DOC, priority=1),
    printers.column("Images", printers.IMAGES_DOC, priority=1),
    printers.column("Selector", "A label query over pods that are managed by the daemon set. Must match in order to "
                                "be controlled. It must match the pod template's labels. More info: "
                                "https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/"
                                "#label-selectors", priority=1),
)


def _count(status: dict, key: str) -> int:
    value = status.get(key)
    return value if _is_int(value) else 0


def _cells(obj: dict, now: dt.datetime) -> list:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    tspec = _d(_d(spec.get("template")).get("spec"))
    node_selector = sorted(_d(tspec.get("nodeSelector")).items())
    containers, images = printers.containers_and_images(tspec)
    return [
        printers.name_cell(obj), _count(status, "desiredNumberScheduled"), _count(status, "currentNumberScheduled"),
        _count(status, "numberReady"), _count(status, "updatedNumberScheduled"), _count(status, "numberAvailable"),
        ",".join(f"{k}={val}" for k, val in node_selector) or "<none>", printers.age_cell(obj, now),
        containers, images, printers.format_label_selector(spec.get("selector")),
    ]


DAEMONSET = register(Kind(
    "apps", "v1", "DaemonSet", "daemonsets", namespaced=True, short_names=("ds",),
    subresources=("status",), categories=("all",), has_status=True, has_spec_generation=True,
    model="V1DaemonSet", proto="DaemonSet",
    subresource_strategies={"status": Strategy(validate=v.status_counters(
        "currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady",
        "observedGeneration", "updatedNumberScheduled", "numberAvailable", "numberUnavailable"))},
    proto_schema="""
DaemonSet
    1 metadata                         ObjectMeta
    2 spec                             DaemonSetSpec
    3 status                           DaemonSetStatus
DaemonSetSpec
    1 selector                         *LabelSelector
    2 template                         PodTemplateSpec
    3 updateStrategy                   DaemonSetUpdateStrategy
    4 minReadySeconds                  int32
    6 revisionHistoryLimit             *int32
DaemonSetUpdateStrategy
    1 type                             string
    2 rollingUpdate                    *RollingUpdateDaemonSet
RollingUpdateDaemonSet
    1 maxUnavailable                   *IntOrString
    2 maxSurge                         *IntOrString
DaemonSetStatus
    1 currentNumberScheduled           int32
    2 numberMisscheduled               int32
    3 desiredNumberScheduled           int32
    4 numberReady                      int32
    5 observedGeneration               int64
    6 updatedNumberScheduled           int32
    7 numberAvailable                  int32
    8 numberUnavailable                int32
    9 collisionCount                   *int32
   10 conditions                       []DaemonSetCondition
DaemonSetCondition
    1 type                             string
    2 status                           string
    3 lastTransitionTime               Time
    4 reason                           string
    5 message                          string
""",
    api_types=("DaemonSet", "DaemonSetList", "DaemonSetSpec", "DaemonSetStatus", "DaemonSetCondition",
               "DaemonSetUpdateStrategy", "RollingUpdateDaemonSet"),
    strategy=Strategy(default=default_daemonset, validate=validate_daemonset, prepare_create=_prepare_create),
    printer=Printer(_COLUMNS, _cells),
))
