"""The VolumeBinding filter: a pod goes only where its claims can be used.

As kube-scheduler's volumebinding plugin, with its exact messages:

- PreFilter: a claim that does not exist (``persistentvolumeclaim "x" not
  found``), is being deleted, or is unbound with an ``Immediate`` class ("pod
  has unbound immediate PersistentVolumeClaims") rejects the pod everywhere;
- Filter, per node: a claim bound to a volume whose node affinity excludes
  the node → "node(s) had volume node affinity conflict"; bound to a volume
  that does not exist → "node(s) unavailable due to one or more pvc(s) bound
  to non-existent pv(s)"; an unbound ``WaitForFirstConsumer`` claim needs a
  matching Available volume usable on the node, or a provisioner that can
  make one there: for kubepy's local-path class that is the node's published
  CSIStorageCapacity ("node(s) did not have enough free storage"); a claim
  already provisioned for another node, or a class that provisions nothing,
  → "node(s) didn't find available persistent volumes to bind".

``selected_node_claims`` says which claims the scheduler annotates with
``volume.kubernetes.io/selected-node`` once it binds the pod (the
provisioner reads it).  Pure: the scheduler passes ``VolumeListers`` reading
its informers' caches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from kubepy.meta.selectors import SelectorError, label_selector_from_dict
from kubepy.meta.volumes import (
    ANN_BIND_COMPLETED,
    ANN_SELECTED_NODE,
    claim_class,
    claim_request,
    find_best_pv,
    node_affinity_matches,
    pod_claims,
    storage_bytes,
)
from kubepy.scheduler.framework import (
    OK,
    UNSCHEDULABLE,
    UNSCHEDULABLE_AND_UNRESOLVABLE,
    NodeInfo,
    PodInfo,
    Status,
)

__all__ = [
    "VolumeListers",
    "VolumeBinding",
    "REASON_NODE_CONFLICT",
    "REASON_BIND_CONFLICT",
    "REASON_NOT_ENOUGH_SPACE",
    "REASON_PV_NOT_EXIST",
    "REASON_UNBOUND_IMMEDIATE",
    "selected_node_claims",
]

REASON_NODE_CONFLICT = "node(s) had volume node affinity conflict"
REASON_BIND_CONFLICT = "node(s) didn't find available persistent volumes to bind"
REASON_NOT_ENOUGH_SPACE = "node(s) did not have enough free storage"
REASON_PV_NOT_EXIST = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
REASON_UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
NO_PROVISIONER = "kubernetes.io/no-provisioner"

Obj = Mapping[str, Any]


class VolumeListers(Protocol):
    def claim(self, namespace: str, name: str) -> Obj | None: ...
    def volume(self, name: str) -> Obj | None: ...
    def volumes(self) -> list[Obj]: ...
    def storage_class(self, name: str) -> Obj | None: ...
    def capacities(self) -> list[Obj]: ...


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _is_bound(claim: Obj) -> bool:
    return bool(_d(claim.get("spec")).get("volumeName")) or \
        bool(_d(_d(claim.get("metadata")).get("annotations")).get(ANN_BIND_COMPLETED))


def _is_delayed(claim: Obj, listers: VolumeListers) -> bool:
    name = claim_class(claim)
    sc = listers.storage_class(name) if name else None
    return sc is not None and sc.get("volumeBindingMode") == "WaitForFirstConsumer"


def _has_room(claim: Obj, sc: Obj, node_info: NodeInfo, listers: VolumeListers) -> bool:
    """Whether a capacity published on this node for the claim's class (or another class of the
    same provisioner) holds the claim."""
    request = claim_request(claim)
    for cap in listers.capacities():
        # A node's room is its provisioner's: every class of that provisioner shares it.
        published_for = listers.storage_class(str(cap.get("storageClassName") or "")) or {}
        if cap.get("storageClassName") != _d(sc.get("metadata")).get("name") \
                and published_for.get("provisioner") != sc.get("provisioner"):
            continue
        topology = cap.get("nodeTopology")
        try:
            if not isinstance(topology, dict) or not label_selector_from_dict(topology).matches(node_info.labels):
                continue
        except SelectorError:
            continue
        limit = storage_bytes(cap.get("maximumVolumeSize"))
        free = storage_bytes(cap.get("capacity"))
        if free is not None and free >= request and (limit is None or limit >= request):
            return True
    return False


class VolumeBinding:
    name = "VolumeBinding"

    def __init__(self, listers: VolumeListers, *, capacity_provisioners: frozenset[str] = frozenset()) -> None:
        self.listers = listers
        # Provisioners whose capacity is published (CSIDriver.storageCapacity upstream): only
        # those are held to it; others are trusted to find room.
        self.capacity_provisioners = capacity_provisioners

    def _claims(self, pod: PodInfo) -> list[Obj] | Status:
        ns = str(pod.metadata.get("namespace") or "default")
        out = []
        for name, _ in pod_claims(pod.pod):
            claim = self.listers.claim(ns, name)
            if claim is None:
                return Status(UNSCHEDULABLE_AND_UNRESOLVABLE, (f'persistentvolumeclaim "{name}" not found',))
            if _d(claim.get("metadata")).get("deletionTimestamp"):
                return Status(UNSCHEDULABLE_AND_UNRESOLVABLE, (f'persistentvolumeclaim "{name}" is being deleted',))
            out.append(claim)
        return out

    def pre_filter(self, pod: PodInfo) -> bool | Status:
        if not pod_claims(pod.pod):
            return False
        claims = self._claims(pod)
        if isinstance(claims, Status):
            return claims
        if any(not _is_bound(c) and not _is_delayed(c, self.listers) for c in claims):
            return Status(UNSCHEDULABLE_AND_UNRESOLVABLE, (REASON_UNBOUND_IMMEDIATE,))
        return True

    def filter(self, pod: PodInfo, node_info: NodeInfo) -> Status:
        verdict = self.pre_filter(pod)  # callers that only filter (preemption's simulation) hear it too
        if isinstance(verdict, Status):
            return verdict
        claims = self._claims(pod)
        if isinstance(claims, Status):
            return claims
        node = {"metadata": {"name": node_info.name, "labels": dict(node_info.labels)}}
        reasons: list[str] = []
        code = UNSCHEDULABLE
        for claim in claims:
            if _is_bound(claim):
                pv = self.listers.volume(str(_d(claim.get("spec")).get("volumeName") or ""))
                if pv is None:
                    reasons.append(REASON_PV_NOT_EXIST)
                    code = UNSCHEDULABLE_AND_UNRESOLVABLE
                elif not node_affinity_matches(pv, node):
                    reasons.append(REASON_NODE_CONFLICT)
                    code = UNSCHEDULABLE_AND_UNRESOLVABLE
                continue
            selected = _d(_d(claim.get("metadata")).get("annotations")).get(ANN_SELECTED_NODE)
            if selected and selected != node_info.name:
                reasons.append(REASON_BIND_CONFLICT)
                continue
            if find_best_pv(self.listers.volumes(), claim, node=node) is not None:
                continue
            sc = self.listers.storage_class(claim_class(claim)) or {}
            provisioner = sc.get("provisioner")
            if not provisioner or provisioner == NO_PROVISIONER:
                reasons.append(REASON_BIND_CONFLICT)
            elif provisioner in self.capacity_provisioners and not _has_room(claim, sc, node_info, self.listers):
                reasons.append(REASON_NOT_ENOUGH_SPACE)
        if not reasons:
            return OK
        return Status(code, tuple(dict.fromkeys(reasons)))


def selected_node_claims(pod: Obj, listers: VolumeListers) -> list[str]:
    """The pod's unbound WaitForFirstConsumer claims not yet annotated for a node."""
    ns = str(_d(pod.get("metadata")).get("namespace") or "default")
    out = []
    for name, _ in pod_claims(pod):
        claim = listers.claim(ns, name)
        if claim is None or _is_bound(claim) or not _is_delayed(claim, listers):
            continue
        if not _d(_d(claim.get("metadata")).get("annotations")).get(ANN_SELECTED_NODE):
            out.append(name)
    return out


def claims_to_bind(pod: Obj, listers: VolumeListers) -> list[str]:
    """The pod's unbound WaitForFirstConsumer claims: its binding waits for them (PreBind)."""
    ns = str(_d(pod.get("metadata")).get("namespace") or "default")
    out = []
    for name, _ in pod_claims(pod):
        claim = listers.claim(ns, name)
        if claim is not None and not _is_bound(claim) and _is_delayed(claim, listers):
            out.append(name)
    return out


def claim_progress(claim: Obj | None, node: str, *, seen_selected: bool) -> str:
    """Where a claim the scheduler put on *node* stands: "bound", "waiting", or why the
    binding must be abandoned (the claim went, or the provisioner gave the node up)."""
    if claim is None:
        return "the claim was deleted"
    if _is_bound(claim):
        return "bound"
    selected = _d(_d(claim.get("metadata")).get("annotations")).get(ANN_SELECTED_NODE)
    if selected and selected != node:
        return f'the claim was selected for node "{selected}"'
    if not selected and seen_selected:
        return "provisioning failed on the selected node"
    return "waiting"
