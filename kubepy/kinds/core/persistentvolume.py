"""PersistentVolume (v1): a piece of storage in the cluster, bound to at most one claim.

Defaults as SetDefaults_PersistentVolume (status.phase Available, reclaim
policy Retain, volumeMode Filesystem); validation as ValidatePersistentVolume
and ValidatePersistentVolumeUpdate with Kubernetes' field paths and messages
(one volume source, access modes, capacity with only ``storage``, reclaim
policy, a ``local`` volume needs node affinity, the source and the node
affinity cannot change).  kubepy mounts only ``local`` and ``hostPath``
volumes: any other source is refused with a 422 saying so, never accepted
and silently left unmounted.  Phases: Available, Bound, Released, Failed
(the persistent-volume controller writes them through ``status``); a PV
being deleted shows Terminating.  ``kubectl get pv`` columns as Kubernetes'
printer.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.meta.quantity import canonicalize_quantity, parse_quantity
from kubepy.meta.selectors import generic_fields
from kubepy.meta.volumes import PV_PROTECTION

ACCESS_MODES = ("ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")
VOLUME_MODES = ("Block", "Filesystem")
RECLAIM_POLICIES = ("Delete", "Recycle", "Retain")
PHASES = ("Pending", "Available", "Bound", "Released", "Failed")
HOST_PATH_TYPES = ("", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate",
                   "Socket")
SUPPORTED_SOURCES = ("hostPath", "local")
PV_SOURCES = (
    "gcePersistentDisk", "awsElasticBlockStore", "hostPath", "glusterfs", "nfs", "rbd", "iscsi", "cinder",
    "cephfs", "fc", "flocker", "flexVolume", "azureFile", "vsphereVolume", "quobyte", "azureDisk",
    "photonPersistentDisk", "portworxVolume", "scaleIO", "local", "storageos", "csi",
)
QUANTITY_RE_MSG = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list:
    return value if isinstance(value, list) else []


# -- shared with PersistentVolumeClaim -----------------------------------------------------------------
def access_modes_string(modes: Any) -> str:
    """helper.GetAccessModesAsString: RWO, ROX, RWX, RWOP in that order."""
    modes = set(_l(modes))
    short = (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"),
             ("ReadWriteOncePod", "RWOP"))
    return ",".join(s for m, s in short if m in modes)


def validate_access_modes(modes: Any, path: str, errs: v.Errs, *, required_detail: str) -> None:
    modes = _l(modes)
    if not modes:
        errs.required(path, required_detail)
    for mode in modes:
        if mode not in ACCESS_MODES:
            errs.not_supported(path, mode, ACCESS_MODES)
    if "ReadWriteOncePod" in modes and len(modes) > 1:
        errs.forbidden(path, "may not use ReadWriteOncePod with other access modes")


def validate_storage_quantity(value: Any, path: str, errs: v.Errs) -> None:
    try:
        amount = parse_quantity(str(value))
    except ValueError:
        errs.invalid(path, value, QUANTITY_RE_MSG)
        return
    if amount <= 0:
        errs.invalid(path, value, "must be greater than zero")


def validate_class_name(name: Any, path: str, errs: v.Errs) -> None:
    if name:
        errs.each(path, name, v.is_dns1123_subdomain(str(name)))


def terminating_or(obj: dict, phase: str) -> str:
    return "Terminating" if _d(obj.get("metadata")).get("deletionTimestamp") else phase


def quantity_cell(value: Any) -> str:
    if value is None or value == "":
        return ""
    try:
        return canonicalize_quantity(str(value))
    except ValueError:
        return str(value)


# -- strategy -----------------------------------------------------------------------------------
def _default(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        if not spec.get("persistentVolumeReclaimPolicy"):
            spec["persistentVolumeReclaimPolicy"] = "Retain"
        spec.setdefault("volumeMode", "Filesystem")
        if isinstance(spec.get("hostPath"), dict):
            spec["hostPath"].setdefault("type", "")
    status = obj.setdefault("status", {})
    if isinstance(status, dict) and not status.get("phase"):
        status["phase"] = "Pending" if old is not None and _d(old.get("status")).get("phase") == "Pending" \
            else "Available"


def _prepare_create(obj: dict) -> None:
    obj.pop("status", None)
    # The StorageObjectInUseProtection admission plugin's finalizer: a bound volume cannot vanish.
    meta = obj.setdefault("metadata", {})
    finalizers = list(meta.get("finalizers") or [])
    if PV_PROTECTION not in finalizers:
        meta["finalizers"] = finalizers + [PV_PROTECTION]


def _validate_node_affinity(affinity: Any, path: str, errs: v.Errs) -> None:
    required = _d(affinity).get("required")
    if required is None:
        errs.required(f"{path}.required", "must specify required node constraints")
        return
    terms = _l(_d(required).get("nodeSelectorTerms"))
    if not terms:
        errs.required(f"{path}.required.nodeSelectorTerms", "must have at least one node selector term")
    for i, term in enumerate(terms):
        for j, expr in enumerate(_l(_d(term).get("matchExpressions"))):
            p = f"{path}.required.nodeSelectorTerms[{i}].matchExpressions[{j}]"
            op = _d(expr).get("operator")
            ops = ("DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn")
            if op not in ops:
                errs.not_supported(f"{p}.operator", op, ops)
            elif op in ("In", "NotIn") and not _l(_d(expr).get("values")):
                errs.required(f"{p}.values", "must be specified when `operator` is 'In' or 'NotIn'")
            if not _d(expr).get("key"):
                errs.required(f"{p}.key")


def _validate_source(spec: dict, errs: v.Errs) -> None:
    present = [s for s in PV_SOURCES if spec.get(s) is not None]
    if not present:
        errs.required("spec", "must specify a volume type")
        return
    if len(present) > 1:
        errs.forbidden(f"spec.{present[1]}", "may not specify more than 1 volume type")
    source = present[0]
    if source not in SUPPORTED_SOURCES:
        errs.forbidden(f"spec.{source}", f"volume type {source!r} is not supported by kubepy "
                                         f"(supported: {', '.join(SUPPORTED_SOURCES)})")
        return
    src = _d(spec.get(source))
    path = src.get("path")
    if not path:
        errs.required(f"spec.{source}.path")
    elif ".." in str(path).split("/"):
        errs.invalid(f"spec.{source}.path", path, "must not contain '..'")
    elif source == "local" and not str(path).startswith("/"):
        errs.invalid(f"spec.{source}.path", path, "must be an absolute path")
    if source == "hostPath":
        typ = src.get("type")
        if typ is not None and typ not in HOST_PATH_TYPES:
            errs.not_supported("spec.hostPath.type", typ, HOST_PATH_TYPES)
    if source == "local" and spec.get("nodeAffinity") is None:
        errs.required("spec.nodeAffinity", "Local volume requires node affinity")


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    spec = _d(obj.get("spec"))
    validate_access_modes(spec.get("accessModes"), "spec.accessModes", errs,
                          required_detail="must specify at least 1 access mode")
    capacity = spec.get("capacity")
    if not capacity:
        errs.required("spec.capacity")
    elif not isinstance(capacity, dict) or "storage" not in capacity or len(capacity) > 1:
        errs.not_supported("spec.capacity", capacity, ["storage"])
    else:
        validate_storage_quantity(capacity["storage"], "spec.capacity[storage]", errs)
    policy = spec.get("persistentVolumeReclaimPolicy")
    if policy not in (None, "") and policy not in RECLAIM_POLICIES:
        errs.not_supported("spec.persistentVolumeReclaimPolicy", policy, RECLAIM_POLICIES)
    validate_class_name(spec.get("storageClassName"), "spec.storageClassName", errs)
    mode = spec.get("volumeMode")
    if mode is not None and mode not in VOLUME_MODES:
        errs.not_supported("spec.volumeMode", mode, VOLUME_MODES)
    if spec.get("nodeAffinity") is not None:
        _validate_node_affinity(spec["nodeAffinity"], "spec.nodeAffinity", errs)
    _validate_source(spec, errs)
    phase = _d(obj.get("status")).get("phase")
    if phase not in (None, "") and phase not in PHASES:
        errs.not_supported("status.phase", phase, PHASES)
    if old is not None:
        old_spec = _d(old.get("spec"))
        sources = {s: spec.get(s) for s in PV_SOURCES if s in spec or s in old_spec}
        old_sources = {s: old_spec.get(s) for s in sources}
        if sources != old_sources:
            errs.forbidden("spec.persistentvolumesource", "spec.persistentvolumesource is forbidden once the "
                                                          "PersistentVolume is created")
        v.validate_immutable(spec.get("volumeMode"), old_spec.get("volumeMode"), "volumeMode", errs)
        if old_spec.get("nodeAffinity") is not None:
            v.validate_immutable(spec.get("nodeAffinity"), old_spec.get("nodeAffinity"), "nodeAffinity", errs)


def _cells(obj: dict, now: dt.datetime) -> list:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    ref = _d(spec.get("claimRef"))
    claim = f"{ref.get('namespace', '')}/{ref.get('name', '')}" if spec.get("claimRef") else ""
    ann = _d(_d(obj.get("metadata")).get("annotations"))
    sc = ann.get("volume.beta.kubernetes.io/storage-class", spec.get("storageClassName") or "")
    return [printers.name_cell(obj), quantity_cell(_d(spec.get("capacity")).get("storage")),
            access_modes_string(spec.get("accessModes")), spec.get("persistentVolumeReclaimPolicy") or "",
            terminating_or(obj, status.get("phase") or ""), claim, sc,
            spec.get("volumeAttributesClassName") or "<unset>", status.get("reason") or "",
            printers.age_cell(obj, now), spec.get("volumeMode") or "<unset>"]


_COLUMNS = (
    printers.name_column(),
    printers.column("Capacity", "capacity is the description of the persistent volume's resources and capacity."),
    printers.column("Access Modes", "accessModes contains all ways the volume can be mounted."),
    printers.column("Reclaim Policy", "persistentVolumeReclaimPolicy defines what happens to a persistent "
                                      "volume when released from its claim."),
    printers.column("Status", "phase indicates if a volume is available, bound to a claim, or released by a "
                              "claim."),
    printers.column("Claim", "claimRef is part of a bi-directional binding between PersistentVolume and "
                             "PersistentVolumeClaim."),
    printers.column("StorageClass", "storageClassName is the name of StorageClass to which this persistent "
                                    "volume belongs."),
    printers.column("VolumeAttributesClass", "Name of VolumeAttributesClass to which this persistent volume "
                                             "belongs. Empty value is not allowed."),
    printers.column("Reason", "reason is a brief CamelCase string that describes any failure and is meant for "
                              "machine parsing and tidy display in the CLI."),
    printers.age_column(),
    printers.column("VolumeMode", "volumeMode defines if a volume is intended to be used with a formatted "
                                  "filesystem or to remain in raw block state.", priority=1),
)


def _fields(obj: dict) -> dict[str, str]:
    out = generic_fields(obj)
    out["name"] = out.get("metadata.name", "")
    return out


PERSISTENTVOLUME = register(Kind(
    "", "v1", "PersistentVolume", "persistentvolumes", namespaced=False, short_names=("pv",),
    subresources=("status",), has_status=True,
    model="V1PersistentVolume", proto="PersistentVolume",
    proto_schema="""
PersistentVolume
    1 metadata                         ObjectMeta
    2 spec                             PersistentVolumeSpec
    3 status                           PersistentVolumeStatus
PersistentVolumeSpec
    1 capacity                         map[string]Quantity
    2 (inline)                         PersistentVolumeSource
    3 accessModes                      []string
    4 claimRef                         *ObjectReference
    5 persistentVolumeReclaimPolicy    string
    6 storageClassName                 string
    7 mountOptions                     []string
    8 volumeMode                       *string
    9 nodeAffinity                     *VolumeNodeAffinity
   10 volumeAttributesClassName        *string
PersistentVolumeSource
    1 gcePersistentDisk                *GCEPersistentDiskVolumeSource
    2 awsElasticBlockStore             *AWSElasticBlockStoreVolumeSource
    3 hostPath                         *HostPathVolumeSource
    4 glusterfs                        *GlusterfsPersistentVolumeSource
    5 nfs                              *NFSVolumeSource
    6 rbd                              *RBDPersistentVolumeSource
    7 iscsi                            *ISCSIPersistentVolumeSource
    8 cinder                           *CinderPersistentVolumeSource
    9 cephfs                           *CephFSPersistentVolumeSource
   10 fc                               *FCVolumeSource
   11 flocker                          *FlockerVolumeSource
   12 flexVolume                       *FlexPersistentVolumeSource
   13 azureFile                        *AzureFilePersistentVolumeSource
   14 vsphereVolume                    *VsphereVirtualDiskVolumeSource
   15 quobyte                          *QuobyteVolumeSource
   16 azureDisk                        *AzureDiskVolumeSource
   17 photonPersistentDisk             *PhotonPersistentDiskVolumeSource
   18 portworxVolume                   *PortworxVolumeSource
   19 scaleIO                          *ScaleIOPersistentVolumeSource
   20 local                            *LocalVolumeSource
   21 storageos                        *StorageOSPersistentVolumeSource
   22 csi                              *CSIPersistentVolumeSource
PersistentVolumeStatus
    1 phase                            string
    2 message                          string
    3 reason                           string
    4 lastPhaseTransitionTime          *Time
VolumeNodeAffinity
    1 required                         *NodeSelector
LocalVolumeSource
    1 path                             string
    2 fsType                           *string
GlusterfsPersistentVolumeSource
    1 endpoints                        string
    2 path                             string
    3 readOnly                         bool
    4 endpointsNamespace               *string
RBDPersistentVolumeSource
    1 monitors                         []string
    2 image                            string
    3 fsType                           string
    4 pool                             string
    5 user                             string
    6 keyring                          string
    7 secretRef                        *SecretReference
    8 readOnly                         bool
ISCSIPersistentVolumeSource
    1 targetPortal                     string
    2 iqn                              string
    3 lun                              int32
    4 iscsiInterface                   string
    5 fsType                           string
    6 readOnly                         bool
    7 portals                          []string
    8 chapAuthDiscovery                bool
   10 secretRef                        *SecretReference
   11 chapAuthSession                  bool
   12 initiatorName                    *string
CinderPersistentVolumeSource
    1 volumeID                         string
    2 fsType                           string
    3 readOnly                         bool
    4 secretRef                        *SecretReference
CephFSPersistentVolumeSource
    1 monitors                         []string
    2 path                             string
    3 user                             string
    4 secretFile                       string
    5 secretRef                        *SecretReference
    6 readOnly                         bool
FlexPersistentVolumeSource
    1 driver                           string
    2 fsType                           string
    3 secretRef                        *SecretReference
    4 readOnly                         bool
    5 options                          map[string]string
AzureFilePersistentVolumeSource
    1 secretName                       string
    2 shareName                        string
    3 readOnly                         bool
    4 secretNamespace                  *string
ScaleIOPersistentVolumeSource
    1 gateway                          string
    2 system                           string
    3 secretRef                        *SecretReference
    4 sslEnabled                       bool
    5 protectionDomain                 string
    6 storagePool                      string
    7 storageMode                      string
    8 volumeName                       string
    9 fsType                           string
   10 readOnly                         bool
StorageOSPersistentVolumeSource
    1 volumeName                       string
    2 volumeNamespace                  string
    3 fsType                           string
    4 readOnly                         bool
    5 secretRef                        *ObjectReference
CSIPersistentVolumeSource
    1 driver                           string
    2 volumeHandle                     string
    3 readOnly                         bool
    4 fsType                           string
    5 volumeAttributes                 map[string]string
    6 controllerPublishSecretRef       *SecretReference
    7 nodeStageSecretRef               *SecretReference
    8 nodePublishSecretRef             *SecretReference
    9 controllerExpandSecretRef        *SecretReference
   10 nodeExpandSecretRef              *SecretReference
SecretReference
    1 name                             string
    2 namespace                        string
""",
    strategy=Strategy(default=_default, validate=_validate, prepare_create=_prepare_create),
    subresource_strategies={"status": Strategy(default=_default, validate=_validate)},
    printer=Printer(_COLUMNS, _cells),
    fields=_fields,
))
