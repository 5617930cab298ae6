"""StorageClass (storage.k8s.io/v1): how claims of a class are provisioned.

Defaults as SetDefaults_StorageClass (reclaimPolicy Delete, volumeBindingMode
Immediate); validation as ValidateStorageClass/Update (a qualified-name
provisioner, at most 512 parameters, supported policy and mode; provisioner,
parameters, reclaimPolicy and volumeBindingMode never change).  The class
annotated ``storageclass.kubernetes.io/is-default-class: "true"`` is the one a
claim without a class gets; ``kubectl get sc`` marks it "(default)".  Every
kubepy cluster starts with ``local-path`` (kubepy.meta.volumes.local_path_class).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.meta.volumes import is_default_class

RECLAIM_POLICIES = ("Delete", "Retain")
BINDING_MODES = ("Immediate", "WaitForFirstConsumer")
MAX_PARAMETERS = 512
MAX_PARAMETERS_BYTES = 256 * 1024


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _default(obj: dict, old: dict | None) -> None:
    if not obj.get("reclaimPolicy"):
        obj["reclaimPolicy"] = "Delete"
    if not obj.get("volumeBindingMode"):
        obj["volumeBindingMode"] = "Immediate"


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    provisioner = obj.get("provisioner")
    if not provisioner:
        errs.required("provisioner")
    else:
        errs.each("provisioner", provisioner, v.is_qualified_name(str(provisioner).lower()))
    params = obj.get("parameters")
    if params is not None:
        params = _d(params)
        if len(params) > MAX_PARAMETERS:
            errs.invalid("parameters", params, f"must have at most {MAX_PARAMETERS} parameters")
        size = sum(len(str(k)) + len(str(val)) for k, val in params.items())
        if size > MAX_PARAMETERS_BYTES:
            errs.too_long("parameters", MAX_PARAMETERS_BYTES)
        for key in params:
            if not key:
                errs.invalid("parameters", params, "key must not be empty")
    errs.enum("reclaimPolicy", obj.get("reclaimPolicy"), RECLAIM_POLICIES, required=False)
    errs.enum("volumeBindingMode", obj.get("volumeBindingMode"), BINDING_MODES)
    for i, term in enumerate(obj.get("allowedTopologies") or []):
        exprs = _d(term).get("matchLabelExpressions") or []
        if not exprs:
            errs.required(f"allowedTopologies[{i}].matchLabelExpressions", "must have at least one label selector")
        for j, expr in enumerate(exprs):
            p = f"allowedTopologies[{i}].matchLabelExpressions[{j}]"
            if not _d(expr).get("values"):
                errs.required(f"{p}.values", "must specify as least one value")
    if old is not None:
        if _d(obj.get("parameters")) != _d(old.get("parameters")):
            errs.forbidden("parameters", "updates to parameters are forbidden.")
        if obj.get("provisioner") != old.get("provisioner"):
            errs.forbidden("provisioner", "updates to provisioner are forbidden.")
        if obj.get("reclaimPolicy") != old.get("reclaimPolicy"):
            errs.forbidden("reclaimPolicy", "updates to reclaimPolicy are forbidden.")
        v.validate_immutable(obj.get("volumeBindingMode"), old.get("volumeBindingMode"), "volumeBindingMode", errs)


def _cells(obj: dict, now: dt.datetime) -> list:
    name = printers.name_cell(obj)
    if is_default_class(obj):
        name += " (default)"
    return [name, obj.get("provisioner") or "", obj.get("reclaimPolicy") or "Delete",
            obj.get("volumeBindingMode") or "Immediate", bool(obj.get("allowVolumeExpansion")),
            printers.age_cell(obj, now)]


_COLUMNS = (
    printers.name_column(),
    printers.column("Provisioner", "provisioner indicates the type of the provisioner."),
    printers.column("ReclaimPolicy", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned "
                                     "PersistentVolumes of this storage class. Defaults to Delete."),
    printers.column("VolumeBindingMode", "volumeBindingMode indicates how PersistentVolumeClaims should be "
                                         "provisioned and bound.  When unset, VolumeBindingImmediate is used."),
    printers.column("AllowVolumeExpansion", "allowVolumeExpansion shows whether the storage class allow volume "
                                            "expand."),
    printers.age_column(),
)

STORAGECLASS = register(Kind(
    "storage.k8s.io", "v1", "StorageClass", "storageclasses", namespaced=False, short_names=("sc",),
    model="V1StorageClass", proto="StorageClass",
    proto_schema="""
StorageClass
    1 metadata                         ObjectMeta
    2 provisioner                      string
    3 parameters                       map[string]string
    4 reclaimPolicy                    *string
    5 mountOptions                     []string
    6 allowVolumeExpansion             *bool
    7 volumeBindingMode                *string
    8 allowedTopologies                []TopologySelectorTerm
TopologySelectorTerm
    1 matchLabelExpressions            []TopologySelectorLabelRequirement
TopologySelectorLabelRequirement
    1 key                              string
    2 values                           []string
""",
    api_types=("StorageClass", "StorageClassList"),
    strategy=Strategy(default=_default, validate=_validate),
    printer=Printer(_COLUMNS, _cells),
))
