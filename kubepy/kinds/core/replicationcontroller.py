"""ReplicationController (v1): the ReplicaSet's predecessor, with a plain label map as its selector.

The replicaset controller keeps its pods (as upstream's ReplicationManager
reuses the ReplicaSet controller); ``kubectl scale rc`` goes through its
``scale`` subresource.  Defaults as Kubernetes' SetDefaults_ReplicationController:
the selector and the object's labels default to the template's labels, replicas
to 1.  Unlike a ReplicaSet's, its selector may change.  ``status.replicas`` is
selectable."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.meta.selectors import replicaset_fields

OWNER = "ReplicationController"


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _prepare_create(obj: dict) -> None:
    obj.pop("status", None)


def _default(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    template = spec.get("template")
    labels = _d(template.get("metadata")).get("labels") if isinstance(template, dict) else None
    if labels:
        if not spec.get("selector"):
            spec["selector"] = dict(labels)
        meta = obj.setdefault("metadata", {})
        if isinstance(meta, dict) and not meta.get("labels"):
            meta["labels"] = dict(labels)
    spec.setdefault("replicas", 1)
    v.default_pod_template(obj)


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    spec = _d(obj.get("spec"))
    errs.nonnegative("spec.minReadySeconds", spec.get("minReadySeconds"))
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not selector:
        errs.required("spec.selector")
    else:
        v.validate_labels(selector, "spec.selector", errs)
    errs.nonnegative("spec.replicas", spec.get("replicas"))
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(selector, dict) and selector:
        labels = _d(_d(template.get("metadata")).get("labels"))
        if any(labels.get(k) != val for k, val in selector.items()):
            errs.invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
    v.validate_pod_template(template, "spec.template", errs, owner=OWNER)


def _format_labels(labels: Any) -> str:
    items = sorted(_d(labels).items())
    return ",".join(f"{k}={val}" for k, val in items) if items else "<none>"


def _cells(obj: dict, now: dt.datetime) -> list:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    containers, images = printers.containers_and_images(_d(_d(spec.get("template")).get("spec")))
    return [printers.name_cell(obj), int(spec.get("replicas") or 0), int(status.get("replicas") or 0),
            int(status.get("readyReplicas") or 0), printers.age_cell(obj, now), containers, images,
            _format_labels(spec.get("selector"))]


_COLUMNS = (
    printers.name_column(),
    printers.column("Desired", "Replicas is the number of desired replicas. This is a pointer to distinguish between "
                    "explicit zero and unspecified. Defaults to 1. More info: "
                    "https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller"
                    "#what-is-a-replicationcontroller", type_="integer"),
    printers.column("Current", "Replicas is the most recently observed number of replicas. More info: "
                    "https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller"
                    "#what-is-a-replicationcontroller", type_="integer"),
    printers.column("Ready", "The number of ready replicas for this replication controller.", type_="integer"),
    printers.age_column(),
    printers.column("Containers", printers.CONTAINERS_DOC, priority=1),
    printers.column("Images", printers.IMAGES_DOC, priority=1),
    printers.column("Selector", "Selector is a label query over pods that should match the Replicas count. If "
                    "Selector is empty, it is defaulted to the labels present on the Pod template. Label keys and "
                    "values that must match in order to be controlled by this replication controller, if empty "
                    "defaulted to labels on Pod template. More info: "
                    "https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
                    priority=1),
)

REPLICATIONCONTROLLER = register(Kind(
    "", "v1", "ReplicationController", "replicationcontrollers", namespaced=True, short_names=("rc",),
    subresources=("status", "scale"), categories=("all",), has_status=True, has_spec_generation=True,
    model="V1ReplicationController", proto="ReplicationController",
    proto_schema="""
ReplicationController
    1 metadata                         ObjectMeta
    2 spec                             ReplicationControllerSpec
    3 status                           ReplicationControllerStatus
ReplicationControllerSpec
    1 replicas                         *int32
    2 selector                         map[string]string
    3 template                         *PodTemplateSpec
    4 minReadySeconds                  int32
ReplicationControllerStatus
    1 replicas                         int32
    2 fullyLabeledReplicas             int32
    3 observedGeneration               int64
    4 readyReplicas                    int32
    5 availableReplicas                int32
    6 conditions                       []ReplicationControllerCondition
ReplicationControllerCondition
    1 type                             string
    2 status                           string
    3 lastTransitionTime               Time
    4 reason                           string
    5 message                          string
""",
    strategy=Strategy(default=_default, validate=_validate, prepare_create=_prepare_create),
    subresource_strategies={"scale": Strategy(validate=v.validate_scale, kind="Scale", group="autoscaling")},
    printer=Printer(_COLUMNS, _cells), fields=replicaset_fields,
))
