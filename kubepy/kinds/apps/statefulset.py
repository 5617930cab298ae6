"""StatefulSet (apps/v1): pods with stable names, hostnames and claims, kept by the statefulset controller.

Defaults as Kubernetes' SetDefaults_StatefulSet (podManagementPolicy
OrderedReady, updateStrategy RollingUpdate with partition 0, replicas 1,
revisionHistoryLimit 10, persistentVolumeClaimRetentionPolicy Retain/Retain)
and each claim template as a PersistentVolumeClaim is defaulted (volumeMode
Filesystem, status phase Pending).  Validation as ValidateStatefulSetSpec and
ValidateStatefulSetUpdate, with Kubernetes' field paths and messages; the
name is a DNS label (pods are named ``<name>-<ordinal>``).  Beyond upstream
(whose template check is a TODO) the pod template is validated as the pods
will be made from it: the claim templates become its volumes, so a
volumeMount naming a claim is valid and one naming nothing is not.  Claim
templates are checked as PersistentVolumeClaims are (name, access modes,
requested storage, volume mode).  ``kubectl scale sts`` goes through ``scale``.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.meta.quantity import parse_quantity

OWNER = "StatefulSet"
POD_MANAGEMENT_POLICIES = ("OrderedReady", "Parallel")
UPDATE_STRATEGIES = ("RollingUpdate", "OnDelete")
RETENTION_POLICIES = ("Retain", "Delete")
ACCESS_MODES = ("ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")
VOLUME_MODES = ("Block", "Filesystem")
UPDATABLE = ("replicas", "ordinals", "template", "updateStrategy", "revisionHistoryLimit",
             "persistentVolumeClaimRetentionPolicy", "minReadySeconds")
FORBIDDEN_UPDATE = ("updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
                    "'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and "
                    "'minReadySeconds' are forbidden")


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list:
    return value if isinstance(value, list) else []


def _prepare_create(obj: dict) -> None:
    obj.pop("status", None)


# -- defaults -----------------------------------------------------------------------
def _default_claim(claim: Any) -> None:
    if not isinstance(claim, dict):
        return
    claim.setdefault("apiVersion", "v1")
    claim.setdefault("kind", "PersistentVolumeClaim")
    spec = claim.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("volumeMode", "Filesystem")
    status = claim.setdefault("status", {})
    if isinstance(status, dict):
        status.setdefault("phase", "Pending")


def _default(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    if not spec.get("podManagementPolicy"):
        spec["podManagementPolicy"] = "OrderedReady"
    strategy = spec.setdefault("updateStrategy", {})
    if isinstance(strategy, dict):
        if not strategy.get("type"):
            strategy["type"] = "RollingUpdate"
            strategy.setdefault("rollingUpdate", {})
        rolling = strategy.get("rollingUpdate")
        if strategy["type"] == "RollingUpdate" and isinstance(rolling, dict):
            rolling.setdefault("partition", 0)
    policy = spec.setdefault("persistentVolumeClaimRetentionPolicy", {})
    if isinstance(policy, dict):
        for key in ("whenDeleted", "whenScaled"):
            if not policy.get(key):
                policy[key] = "Retain"
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    for claim in _l(spec.get("volumeClaimTemplates")):
        _default_claim(claim)
    v.default_pod_template(obj)


# -- validation ---------------------------------------------------------------------
def _name_rule(name: str) -> list[str]:
    return v.is_dns1123_label(name)


def _validate_update_strategy(strategy: Any, errs: v.Errs) -> None:
    strategy = _d(strategy)
    kind, rolling = strategy.get("type"), strategy.get("rollingUpdate")
    path = "spec.updateStrategy"
    if not kind:
        errs.required(path)
    elif kind == "OnDelete":
        if rolling is not None:
            errs.invalid(f"{path}.rollingUpdate", rolling, "only allowed for updateStrategy 'RollingUpdate'")
    elif kind == "RollingUpdate":
        if isinstance(rolling, dict):
            p = f"{path}.rollingUpdate"
            errs.nonnegative(f"{p}.partition", rolling.get("partition"))
            unavailable = rolling.get("maxUnavailable")
            if unavailable is not None:
                v.validate_int_or_percent(unavailable, f"{p}.maxUnavailable", errs)
                if v.int_or_percent(unavailable) == 0:
                    errs.invalid(f"{p}.maxUnavailable", unavailable, "cannot be 0")
                if isinstance(unavailable, str) and (v.int_or_percent(unavailable) or 0) > 100:
                    errs.invalid(f"{p}.maxUnavailable", unavailable, "must not be greater than 100%")
    else:
        errs.invalid(path, strategy, "must be 'RollingUpdate' or 'OnDelete'")


def _validate_claim_templates(claims: Any, errs: v.Errs) -> list[str]:
    """Each claim template as a PersistentVolumeClaim; the valid names (in order)."""
    names: list[str] = []
    if claims is None:
        return names
    if not isinstance(claims, list):
        errs.invalid("spec.volumeClaimTemplates", claims, "must be a list of PersistentVolumeClaims")
        return names
    for i, claim in enumerate(claims):
        p = f"spec.volumeClaimTemplates[{i}]"
        claim = _d(claim)
        name = _d(claim.get("metadata")).get("name")
        if not name:
            errs.required(f"{p}.metadata.name", "name or generateName is required")
        elif not isinstance(name, str) or (problems := v.is_dns1123_subdomain(name)):
            errs.each(f"{p}.metadata.name", name, problems if isinstance(name, str) else ["must be a string"])
        elif name in names:
            errs.duplicate(f"{p}.metadata.name", name)
        else:
            names.append(name)
        v.validate_labels(_d(claim.get("metadata")).get("labels"), f"{p}.metadata.labels", errs)
        spec = _d(claim.get("spec"))
        modes = _l(spec.get("accessModes"))
        if not modes:
            errs.required(f"{p}.spec.accessModes", "at least 1 access mode is required")
        for mode in modes:
            if mode not in ACCESS_MODES:
                errs.not_supported(f"{p}.spec.accessModes", mode, ACCESS_MODES)
        storage_path = f"{p}.spec.resources.requests[storage]"
        storage = _d(_d(spec.get("resources")).get("requests")).get("storage")
        if storage is None:
            errs.required(storage_path)
        else:
            try:
                amount = parse_quantity(str(storage))
            except ValueError:
                errs.invalid(storage_path, storage, "quantities must match the regular expression "
                             "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
            else:
                if amount <= 0:
                    errs.invalid(storage_path, storage, "must be greater than zero")
        mode = spec.get("volumeMode")
        if mode is not None and mode not in VOLUME_MODES:
            errs.not_supported(f"{p}.spec.volumeMode", mode, VOLUME_MODES)
        if isinstance(spec.get("selector"), dict):
            v.validate_label_selector(spec["selector"], f"{p}.spec.selector", errs)
    return names


def template_with_claims(template: dict, claim_names: list[str], set_name: str, ordinal: int | None = None) -> dict:
    """The pod template with a claim volume per claim template, replacing a template
    volume of the same name (upstream's updateStorage). Without an ordinal the claim
    names are the templates' own (for validation)."""
    out = copy.deepcopy(template)
    spec = out.setdefault("spec", {})
    volumes = [vol for vol in _l(spec.get("volumes")) if _d(vol).get("name") not in claim_names]
    for name in claim_names:
        claim = name if ordinal is None else f"{name}-{set_name}-{ordinal}"
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim}})
    if volumes:
        spec["volumes"] = volumes
    return out


def _validate_spec(obj: dict, errs: v.Errs) -> None:
    spec = _d(obj.get("spec"))
    policy = spec.get("podManagementPolicy")
    if not policy:
        errs.required("spec.podManagementPolicy")
    elif policy not in POD_MANAGEMENT_POLICIES:
        errs.invalid("spec.podManagementPolicy", policy, "must be 'OrderedReady' or 'Parallel'")
    _validate_update_strategy(spec.get("updateStrategy"), errs)
    retention = spec.get("persistentVolumeClaimRetentionPolicy")
    if isinstance(retention, dict):
        for key in ("whenDeleted", "whenScaled"):
            if retention.get(key) not in RETENTION_POLICIES:
                errs.not_supported(f"spec.persistentVolumeClaimRetentionPolicy.{key}", retention.get(key),
                                   RETENTION_POLICIES)
    errs.nonnegative("spec.replicas", spec.get("replicas"))
    errs.nonnegative("spec.minReadySeconds", spec.get("minReadySeconds"))
    errs.nonnegative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    ordinals = spec.get("ordinals")
    if isinstance(ordinals, dict):
        errs.nonnegative("spec.ordinals.start", ordinals.get("start"))
    selector = spec.get("selector")
    if not isinstance(selector, dict):
        errs.required("spec.selector")
    else:
        v.validate_label_selector(selector, "spec.selector", errs)
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):
            errs.invalid("spec.selector", selector, "empty selector is invalid for statefulset")
    claim_names = _validate_claim_templates(spec.get("volumeClaimTemplates"), errs)
    template = spec.get("template")
    if not isinstance(template, dict):
        errs.required("spec.template")
        return
    labels = _d(_d(template.get("metadata")).get("labels"))
    if isinstance(selector, dict) and (selector.get("matchLabels") or selector.get("matchExpressions")):
        if not v.selector_matches(selector, labels):
            errs.invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
    v.validate_pod_template(template_with_claims(template, claim_names, ""), "spec.template", errs, owner=OWNER)


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    _validate_spec(obj, errs)
    if old is None:
        return
    new_spec, old_spec = dict(_d(obj.get("spec"))), dict(_d(old.get("spec")))
    for key in UPDATABLE:
        new_spec.pop(key, None)
        old_spec.pop(key, None)
    if new_spec != old_spec:
        errs.forbidden("spec", FORBIDDEN_UPDATE)


_STATUS_COUNTERS = v.status_counters("replicas", "readyReplicas", "currentReplicas", "updatedReplicas",
                                     "availableReplicas", "observedGeneration")


def _validate_status(obj: dict, old: dict | None, errs: v.Errs) -> None:
    """ValidateStatefulSetStatusUpdate: counters >= 0, none above replicas (available not above
    ready), collisionCount never decremented."""
    _STATUS_COUNTERS(obj, old, errs)
    status = _d(obj.get("status"))
    counts = {k: status.get(k) for k in ("replicas", "readyReplicas", "currentReplicas", "updatedReplicas",
                                          "availableReplicas")}
    if not all(v.is_int(n) for n in counts.values() if n is not None):
        return
    n = {k: int(val or 0) for k, val in counts.items()}
    for key in ("readyReplicas", "currentReplicas", "updatedReplicas", "availableReplicas"):
        if n[key] > n["replicas"]:
            errs.invalid(f"status.{key}", n[key], "cannot be greater than status.replicas")
    if n["availableReplicas"] > n["readyReplicas"]:
        errs.invalid("status.availableReplicas", n["availableReplicas"], "cannot be greater than status.readyReplicas")


# -- printing -------------------------------------------------------------------------
def _cells(obj: dict, now: dt.datetime) -> list:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    containers, images = printers.containers_and_images(_d(_d(spec.get("template")).get("spec")))
    return [printers.name_cell(obj), f"{int(status.get('readyReplicas') or 0)}/{int(spec.get('replicas') or 0)}",
            printers.age_cell(obj, now), containers, images]


_COLUMNS = (
    printers.name_column(),
    printers.column("Ready", "Number of the pod with ready state"),
    printers.age_column(),
    printers.column("Containers", printers.CONTAINERS_DOC, priority=1),
    printers.column("Images", printers.IMAGES_DOC, priority=1),
)

STATEFULSET = register(Kind(
    "apps", "v1", "StatefulSet", "statefulsets", namespaced=True, short_names=("sts",),
    subresources=("status", "scale"), categories=("all",), has_status=True, has_spec_generation=True,
    model="V1StatefulSet", proto="StatefulSet",
    proto_schema="""
StatefulSet
    1 metadata                         ObjectMeta
    2 spec                             StatefulSetSpec
    3 status                           StatefulSetStatus
StatefulSetSpec
    1 replicas                         *int32
    2 selector                         *LabelSelector
    3 template                         PodTemplateSpec
    4 volumeClaimTemplates             []PersistentVolumeClaim
    5 serviceName                      string
    6 podManagementPolicy              string
    7 updateStrategy                   StatefulSetUpdateStrategy
    8 revisionHistoryLimit             *int32
    9 minReadySeconds                  int32
   10 persistentVolumeClaimRetentionPolicy *StatefulSetPersistentVolumeClaimRetentionPolicy
   11 ordinals                         *StatefulSetOrdinals
StatefulSetStatus
    1 observedGeneration               int64
    2 replicas                         int32
    3 readyReplicas                    int32
    4 currentReplicas                  int32
    5 updatedReplicas                  int32
    6 currentRevision                  string
    7 updateRevision                   string
    9 collisionCount                   *int32
   10 conditions                       []StatefulSetCondition
   11 availableReplicas                int32
StatefulSetCondition
    1 type                             string
    2 status                           string
    3 lastTransitionTime               Time
    4 reason                           string
    5 message                          string
StatefulSetUpdateStrategy
    1 type                             string
    2 rollingUpdate                    *RollingUpdateStatefulSetStrategy
RollingUpdateStatefulSetStrategy
    1 partition                        *int32
    2 maxUnavailable                   *IntOrString
StatefulSetPersistentVolumeClaimRetentionPolicy
    1 whenDeleted                      string
    2 whenScaled                       string
StatefulSetOrdinals
    1 start                            int32
""",
    api_types=("StatefulSet", "StatefulSetList", "StatefulSetSpec", "StatefulSetStatus", "StatefulSetCondition",
               "StatefulSetUpdateStrategy", "RollingUpdateStatefulSetStrategy",
               "StatefulSetPersistentVolumeClaimRetentionPolicy", "StatefulSetOrdinals"),
    strategy=Strategy(default=_default, validate=_validate, name_rule=_name_rule, prepare_create=_prepare_create),
    subresource_strategies={"scale": Strategy(validate=v.validate_scale, kind="Scale", group="autoscaling"),
                            "status": Strategy(validate=_validate_status)},
    printer=Printer(_COLUMNS, _cells),
))
