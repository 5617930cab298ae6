"""PersistentVolumeClaim (v1): a namespace's request for storage, bound to one PersistentVolume.

Defaults as SetDefaults_PersistentVolumeClaim (volumeMode Filesystem, status
phase Pending); on create the ``kubernetes.io/pvc-protection`` finalizer is
added (Kubernetes' StorageObjectInUseProtection admission) so a claim in use
by a pod stays Terminating until the pod is gone.  A claim without
``storageClassName`` gets the default class at admission (the API server's
DefaultStorageClass plugin, which needs the store: kubepy/api/admission.py).
Validation as ValidatePersistentVolumeClaim/Update: access modes, a positive
``resources.requests[storage]``, and a spec that is immutable after creation
except ``resources.requests`` growth of a bound claim (and ``volumeName``
being set once, by binding).  Phases: Pending, Bound, Lost.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.kinds.core.persistentvolume import (
    VOLUME_MODES,
    access_modes_string,
    quantity_cell,
    terminating_or,
    validate_access_modes,
    validate_class_name,
    validate_storage_quantity,
)
from kubepy.meta.selectors import generic_fields
from kubepy.meta.volumes import PVC_PROTECTION, storage_bytes

PHASES = ("Pending", "Bound", "Lost")
IMMUTABLE_SPEC = ("spec is immutable after creation except resources.requests and volumeAttributesClassName "
                  "for bound claims")


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _default(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("volumeMode", "Filesystem")
    status = obj.setdefault("status", {})
    if isinstance(status, dict) and not status.get("phase"):
        status["phase"] = "Pending"


def _prepare_create(obj: dict) -> None:
    obj.pop("status", None)
    meta = obj.setdefault("metadata", {})
    finalizers = list(meta.get("finalizers") or [])
    if PVC_PROTECTION not in finalizers:
        meta["finalizers"] = finalizers + [PVC_PROTECTION]


def _spec_diff(old: dict, new: dict) -> str:
    lines = ["  core.PersistentVolumeClaimSpec{"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            if key in old:
                lines.append(f"-   {key}: {json.dumps(old[key], sort_keys=True)},")
            if key in new:
                lines.append(f"+   {key}: {json.dumps(new[key], sort_keys=True)},")
    lines.append("  }")
    return "\n".join(lines)


def _validate_update(obj: dict, old: dict, errs: v.Errs) -> None:
    spec, old_spec = _d(obj.get("spec")), _d(old.get("spec"))
    new_clone, old_clone = json.loads(json.dumps(spec)), json.loads(json.dumps(old_spec))
    if not old_clone.get("volumeName"):
        old_clone["volumeName"] = new_clone.get("volumeName")  # binding sets it once
        if old_clone["volumeName"] is None:
            old_clone.pop("volumeName")
    for clone in (new_clone, old_clone):
        clone.pop("volumeAttributesClassName", None)
    bound = _d(obj.get("status")).get("phase") == "Bound"
    old_size = _d(_d(old_spec.get("resources")).get("requests")).get("storage")
    new_size = _d(_d(spec.get("resources")).get("requests")).get("storage")
    if bound and isinstance(_d(new_clone.get("resources")).get("requests"), dict):
        if old_size is None:
            new_clone["resources"]["requests"].pop("storage", None)
        else:
            new_clone["resources"]["requests"]["storage"] = old_size
    if new_clone != old_clone:
        errs.forbidden("spec", IMMUTABLE_SPEC + "\n" + _spec_diff(old_clone, new_clone))
    old_b, new_b = storage_bytes(old_size), storage_bytes(new_size)
    if old_b is not None and new_b is not None and new_b < old_b:
        errs.forbidden("spec.resources.requests.storage", "field can not be less than previous value")


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    spec = _d(obj.get("spec"))
    validate_access_modes(spec.get("accessModes"), "spec.accessModes", errs,
                          required_detail="at least 1 access mode is required")
    requests = _d(_d(spec.get("resources")).get("requests"))
    if "storage" not in requests:
        errs.required("spec.resources[storage]")
    else:
        validate_storage_quantity(requests["storage"], "spec.resources[storage]", errs)
    if isinstance(spec.get("selector"), dict):
        v.validate_label_selector(spec["selector"], "spec.selector", errs)
    validate_class_name(spec.get("storageClassName"), "spec.storageClassName", errs)
    mode = spec.get("volumeMode")
    if mode is not None and mode not in VOLUME_MODES:
        errs.not_supported("spec.volumeMode", mode, VOLUME_MODES)
    phase = _d(obj.get("status")).get("phase")
    if phase not in (None, "") and phase not in PHASES:
        errs.not_supported("status.phase", phase, PHASES)
    if old is not None:
        _validate_update(obj, old, errs)


def _validate_status(obj: dict, old: dict | None, errs: v.Errs) -> None:
    phase = _d(obj.get("status")).get("phase")
    if phase not in (None, "") and phase not in PHASES:
        errs.not_supported("status.phase", phase, PHASES)
    for key, value in _d(_d(obj.get("status")).get("capacity")).items():
        validate_storage_quantity(value, f"status.capacity[{key}]", errs)


def _cells(obj: dict, now: dt.datetime) -> list:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    capacity = modes = ""
    if spec.get("volumeName"):
        modes = access_modes_string(status.get("accessModes"))
        capacity = quantity_cell(_d(status.get("capacity")).get("storage"))
    ann = _d(_d(obj.get("metadata")).get("annotations"))
    sc = ann.get("volume.beta.kubernetes.io/storage-class", spec.get("storageClassName") or "")
    return [printers.name_cell(obj), terminating_or(obj, status.get("phase") or ""), spec.get("volumeName") or "",
            capacity, modes, sc, spec.get("volumeAttributesClassName") or "<unset>", printers.age_cell(obj, now),
            spec.get("volumeMode") or "<unset>"]


_COLUMNS = (
    printers.name_column(),
    printers.column("Status", "phase represents the current phase of PersistentVolumeClaim."),
    printers.column("Volume", "volumeName is the binding reference to the PersistentVolume backing this claim."),
    printers.column("Capacity", "capacity represents the actual resources of the underlying volume."),
    printers.column("Access Modes", "accessModes contains the desired access modes the volume should have."),
    printers.column("StorageClass", "storageClassName is the name of the StorageClass required by the claim."),
    printers.column("VolumeAttributesClass", "volumeAttributesClassName may be used to set the "
                                             "VolumeAttributesClass used by this claim."),
    printers.age_column(),
    printers.column("VolumeMode", "volumeMode defines what type of volume is required by the claim.", priority=1),
)


def _fields(obj: dict) -> dict[str, str]:
    out = generic_fields(obj)
    out["name"] = out.get("metadata.name", "")
    return out


PERSISTENTVOLUMECLAIM = register(Kind(
    "", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", namespaced=True, short_names=("pvc",),
    subresources=("status",), has_status=True,
    model="V1PersistentVolumeClaim", proto="PersistentVolumeClaim",
    strategy=Strategy(default=_default, validate=_validate, prepare_create=_prepare_create),
    subresource_strategies={"status": Strategy(default=_default, validate=_validate_status)},
    printer=Printer(_COLUMNS, _cells),
    fields=_fields,
))
