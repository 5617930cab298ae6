"""Persistent storage vocabulary every component shares: annotation names, the
default local-path class, and the pure decisions about claims and volumes.

Role: the API server (admission), the persistent-volume controller, the
scheduler's VolumeBinding filter and the kubelet's local volumes all ask the
same questions ("does this volume fit this claim?", "may this volume be used
on that node?", "how much does this claim ask for?"); they are answered here,
once, as pure functions of API objects (dicts).  Nothing here talks to
anything.

Upstream references: pkg/controller/volume/persistentvolume (index.go's
findBestMatchForClaim, util.go's CheckVolumeModeMismatches/CheckAccessModes),
component-helpers/storage/volume (annotations, node affinity checks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from kubepy.meta.quantity import parse_quantity
from kubepy.meta.selectors import SelectorError, label_selector_from_dict

__all__ = [
    "ANN_BIND_COMPLETED", "ANN_BOUND_BY_CONTROLLER", "ANN_SELECTED_NODE", "ANN_STORAGE_PROVISIONER",
    "ANN_BETA_STORAGE_PROVISIONER", "ANN_PROVISIONED_BY", "ANN_DEFAULT_CLASS", "ANN_LOCAL_PATH_NODE",
    "ANN_LOCAL_PATH_DIR", "PVC_PROTECTION", "PV_PROTECTION", "LOCAL_PATH_CLASS", "LOCAL_PATH_PROVISIONER",
    "CAPACITY_NAMESPACE", "HOSTNAME_LABEL", "local_path_class", "capacity_name", "is_default_class",
    "default_class", "storage_bytes", "claim_request", "pv_capacity", "claim_class", "pv_node_terms",
    "node_affinity_matches", "pv_matches_claim", "find_best_pv", "pv_path", "is_bound_to", "pod_claims",
]

# Annotations and finalizers, as Kubernetes names them.
ANN_BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
ANN_BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node"
ANN_STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
ANN_BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
ANN_DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
HOSTNAME_LABEL = "kubernetes.io/hostname"

# kubepy's own node-local provisioner (the class every cluster gets).
LOCAL_PATH_CLASS = "local-path"
LOCAL_PATH_PROVISIONER = "kubepy.io/local-path"
ANN_LOCAL_PATH_NODE = "kubepy.io/local-path-node"  # on a provisioned PV: the node holding its directory
ANN_LOCAL_PATH_DIR = "kubepy.io/local-path-dir"  # on a node's CSIStorageCapacity: where its volumes live
CAPACITY_NAMESPACE = "kube-system"


def local_path_class() -> dict[str, Any]:
    """The StorageClass every kubepy cluster starts with (as kind's and k3s's ``standard``/``local-path``)."""
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": LOCAL_PATH_CLASS, "annotations": {ANN_DEFAULT_CLASS: "true"}},
            "provisioner": LOCAL_PATH_PROVISIONER, "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer"}


def capacity_name(node: str) -> str:
    """The CSIStorageCapacity a node publishes for the local-path class."""
    return f"local-path-{node}"


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _meta(obj: Mapping[str, Any]) -> dict:
    return _d(obj.get("metadata"))


def is_default_class(sc: Mapping[str, Any]) -> bool:
    ann = _d(_meta(sc).get("annotations"))
    return ann.get(ANN_DEFAULT_CLASS) == "true" or ann.get("storageclass.beta.kubernetes.io/is-default-class") == "true"


def default_class(classes: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The default StorageClass: the newest of those annotated default (as the
    DefaultStorageClass admission plugin picks since Kubernetes 1.26), the first name among equals."""
    defaults = [sc for sc in classes if is_default_class(sc) and not _meta(sc).get("deletionTimestamp")]
    if not defaults:
        return None
    defaults.sort(key=lambda sc: str(_meta(sc).get("name")))
    return max(defaults, key=lambda sc: str(_meta(sc).get("creationTimestamp") or ""))  # first of the newest


def storage_bytes(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return parse_quantity(str(value))
    except ValueError:
        return None


def claim_request(claim: Mapping[str, Any]) -> Decimal:
    requests = _d(_d(_d(claim.get("spec")).get("resources")).get("requests"))
    return storage_bytes(requests.get("storage")) or Decimal(0)


def pv_capacity(pv: Mapping[str, Any]) -> Decimal:
    return storage_bytes(_d(_d(pv.get("spec")).get("capacity")).get("storage")) or Decimal(0)


def claim_class(claim: Mapping[str, Any]) -> str:
    """The claim's class ("" = none), the beta annotation first as upstream's GetPersistentVolumeClaimClass."""
    ann = _d(_meta(claim).get("annotations"))
    if "volume.beta.kubernetes.io/storage-class" in ann:
        return str(ann["volume.beta.kubernetes.io/storage-class"])
    return str(_d(claim.get("spec")).get("storageClassName") or "")


def _pv_class(pv: Mapping[str, Any]) -> str:
    ann = _d(_meta(pv).get("annotations"))
    if "volume.beta.kubernetes.io/storage-class" in ann:
        return str(ann["volume.beta.kubernetes.io/storage-class"])
    return str(_d(pv.get("spec")).get("storageClassName") or "")


# -- node affinity -------------------------------------------------------------------------
def pv_node_terms(pv: Mapping[str, Any]) -> list[dict]:
    required = _d(_d(_d(pv.get("spec")).get("nodeAffinity")).get("required"))
    return [t for t in required.get("nodeSelectorTerms") or [] if isinstance(t, dict)]


def _requirement_matches(expr: Mapping[str, Any], values: Mapping[str, str]) -> bool:
    key, op = expr.get("key"), expr.get("operator")
    wanted = [str(v) for v in expr.get("values") or []]
    have = values.get(str(key)) if key in values else None
    if op == "In":
        return have is not None and have in wanted
    if op == "NotIn":
        return have is None or have not in wanted
    if op == "Exists":
        return have is not None
    if op == "DoesNotExist":
        return have is None
    if op in ("Gt", "Lt") and have is not None and len(wanted) == 1:
        try:
            a, b = int(have), int(wanted[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def node_affinity_matches(pv: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """Whether ``pv`` may be used on ``node`` (upstream's CheckNodeAffinity): no
    affinity matches every node; otherwise one term must match entirely."""
    terms = pv_node_terms(pv)
    if not terms:
        return not _d(_d(pv.get("spec")).get("nodeAffinity")).get("required")
    labels = {str(k): str(v) for k, v in _d(_meta(node).get("labels")).items()}
    fields = {"metadata.name": str(_meta(node).get("name") or "")}
    for term in terms:
        exprs, matchfields = term.get("matchExpressions") or [], term.get("matchFields") or []
        if not exprs and not matchfields:
            continue
        if all(_requirement_matches(e, labels) for e in exprs) and \
                all(_requirement_matches(e, fields) for e in matchfields):
            return True
    return False


# -- binding ------------------------------------------------------------------------------
def is_bound_to(pv: Mapping[str, Any], claim: Mapping[str, Any]) -> bool:
    """The PV's claimRef names this claim (and its uid, when the ref carries one)."""
    ref = _d(_d(pv.get("spec")).get("claimRef"))
    m = _meta(claim)
    if ref.get("name") != m.get("name") or ref.get("namespace") != m.get("namespace"):
        return False
    return not ref.get("uid") or ref.get("uid") == m.get("uid")


def pv_matches_claim(pv: Mapping[str, Any], claim: Mapping[str, Any], *,
                     node: Mapping[str, Any] | None = None) -> bool:
    """Whether an available ``pv`` satisfies ``claim`` (size, access modes, class,
    volume mode, selector; and node affinity to ``node`` when given)."""
    spec, cspec = _d(pv.get("spec")), _d(claim.get("spec"))
    if _meta(pv).get("deletionTimestamp"):
        return False
    if pv_capacity(pv) < claim_request(claim):
        return False
    if not set(cspec.get("accessModes") or []) <= set(spec.get("accessModes") or []):
        return False
    if _pv_class(pv) != claim_class(claim):
        return False
    if (spec.get("volumeMode") or "Filesystem") != (cspec.get("volumeMode") or "Filesystem"):
        return False
    selector = cspec.get("selector")
    if isinstance(selector, dict) and selector:
        try:
            if not label_selector_from_dict(selector).matches(_d(_meta(pv).get("labels"))):
                return False
        except SelectorError:
            return False
    if node is not None and not node_affinity_matches(pv, node):
        return False
    return True


def find_best_pv(pvs: Iterable[Mapping[str, Any]], claim: Mapping[str, Any], *,
                 node: Mapping[str, Any] | None = None) -> Mapping[str, Any] | None:
    """The smallest volume that fits ``claim`` (upstream's findBestMatchForClaim):
    a volume pre-bound to the claim wins; volumes pre-bound to other claims and
    volumes not Available are skipped."""
    best = None
    for pv in pvs:
        spec = _d(pv.get("spec"))
        ref = spec.get("claimRef")
        if ref:
            if is_bound_to(pv, claim) and pv_matches_claim(pv, claim, node=node):
                return pv
            continue
        if _d(pv.get("status")).get("phase") not in (None, "", "Available"):
            continue
        if not pv_matches_claim(pv, claim, node=node):
            continue
        if best is None or pv_capacity(pv) < pv_capacity(best):
            best = pv
    return best


def pv_path(pv: Mapping[str, Any]) -> str | None:
    """The directory of a ``local`` or ``hostPath`` volume (the only kinds kubepy serves)."""
    spec = _d(pv.get("spec"))
    for source in ("local", "hostPath"):
        if isinstance(spec.get(source), dict) and spec[source].get("path"):
            return str(spec[source]["path"])
    return None


def pod_claims(pod: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """(claim name, read-only) per persistentVolumeClaim volume of a pod."""
    out = []
    for v in _d(pod.get("spec")).get("volumes") or []:
        src = _d(v).get("persistentVolumeClaim")
        if isinstance(src, dict) and src.get("claimName"):
            out.append((str(src["claimName"]), bool(src.get("readOnly"))))
    return out
