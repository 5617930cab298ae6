"""CSIStorageCapacity (storage.k8s.io/v1): how much a storage class can still
provision in one topology segment.

kubepy's kubelets publish one per node for the ``local-path`` class
(``kube-system/local-path-<node>``, nodeTopology ``kubernetes.io/hostname``):
the free space of the filesystem holding the node's volume directories, or a
configured limit.  The scheduler's VolumeBinding filter and the provisioner
honour it.  Validation as ValidateCSIStorageCapacity: a class name, a valid
node topology selector, quantities not negative.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.kinds.core.persistentvolume import quantity_cell
from kubepy.meta.volumes import storage_bytes


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    name = obj.get("storageClassName")
    if not name:
        errs.required("storageClassName")
    else:
        errs.each("storageClassName", name, v.is_dns1123_subdomain(str(name)))
    if isinstance(obj.get("nodeTopology"), dict):
        v.validate_label_selector(obj["nodeTopology"], "nodeTopology", errs)
    for key in ("capacity", "maximumVolumeSize"):
        value = obj.get(key)
        if value is None:
            continue
        amount = storage_bytes(value)
        if amount is None:
            errs.invalid(key, value, "quantities must match the regular expression "
                                     "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
        elif amount < 0:
            errs.invalid(key, value, "must be greater than or equal to 0")
    if old is not None:
        v.validate_immutable(obj.get("storageClassName"), old.get("storageClassName"), "storageClassName", errs)
        v.validate_immutable(obj.get("nodeTopology"), old.get("nodeTopology"), "nodeTopology", errs)


def _cells(obj: dict, now: dt.datetime) -> list:
    return [printers.name_cell(obj), obj.get("storageClassName") or "", quantity_cell(obj.get("capacity"))]


_COLUMNS = (
    printers.name_column(),
    printers.column("StorageClassName", "storageClassName represents the name of the StorageClass that the "
                                        "reported capacity applies to."),
    printers.column("Capacity", "capacity is the value reported by the CSI driver in its GetCapacityResponse "
                                "for a GetCapacityRequest with topology and parameters that match the previous "
                                "fields."),
)

CSISTORAGECAPACITY = register(Kind(
    "storage.k8s.io", "v1", "CSIStorageCapacity", "csistoragecapacities", namespaced=True,
    model="V1CSIStorageCapacity", proto="CSIStorageCapacity",
    proto_schema="""
CSIStorageCapacity
    1 metadata                         ObjectMeta
    2 nodeTopology                     *LabelSelector
    3 storageClassName                 string
    4 capacity                         *Quantity
    5 maximumVolumeSize                *Quantity
""",
    api_types=("CSIStorageCapacity", "CSIStorageCapacityList"),
    strategy=Strategy(validate=_validate),
    printer=Printer(_COLUMNS, _cells),
))
