"""Persistent-volume controller: binds claims to volumes, provisions local-path
volumes, and reclaims volumes whose claim is gone.

As upstream's pkg/controller/volume/persistentvolume (pv_controller.go):

- **binding** (``sync_claim``): a Pending claim gets the smallest Available
  volume that fits (capacity ≥ request, access modes ⊆, same class and volume
  mode, selector; ``spec.volumeName`` pre-binds a claim to a volume, a
  volume's ``claimRef`` pre-binds it to a claim).  The volume is written first
  (claimRef with the claim's uid, ``pv.kubernetes.io/bound-by-controller``,
  phase Bound), then the claim (``spec.volumeName``,
  ``pv.kubernetes.io/bind-completed``, phase Bound with the volume's capacity
  and access modes).  A bound claim whose volume vanished is Lost.
- **delayed binding**: a claim of a ``WaitForFirstConsumer`` class waits
  ("waiting for first consumer to be created before binding") until the
  scheduler has put a pod using it on a node and annotated the claim with
  ``volume.kubernetes.io/selected-node``; then only volumes usable on that
  node qualify.
- **provisioning**: with no volume to bind, a claim of a class with a
  provisioner is annotated ``volume.kubernetes.io/storage-provisioner``.  For
  kubepy's own ``kubepy.io/local-path`` provisioner this controller makes the
  PersistentVolume itself: a ``hostPath`` directory under the selected node's
  kubelet root (the node publishes where, and how much room it has, in its
  ``kube-system/local-path-<node>`` CSIStorageCapacity), node affinity to that
  node, pre-bound to the claim.  A claim bigger than the node's free space is
  not provisioned (Warning ProvisioningFailed says why).  The kubelet of the
  node makes the directory (kubepy/kubelet/localvolumes.py).
- **reclaim** (``sync_volume``): a volume whose claim is gone is Released.
  ``Retain`` keeps it and its data.  ``Delete`` of a local-path volume is the
  kubelet's: it removes the directory and then the volume.  Any other volume
  with ``Delete`` (or ``Recycle``) goes Failed: kubepy has no deleter for it.

Reads the claims, volumes, classes, capacities and nodes informers; writes
through the client.  One work queue of ``claim:<ns>/<name>`` and
``volume:<name>`` keys; everything is looked at again every ``resync`` seconds.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
from typing import Any

from kubepy.client import AlreadyExistsError, NotFoundError, WorkQueue, object_key, run_workers
from kubepy.controllers.context import ControllerContext
from kubepy.meta.quantity import format_quantity
from kubepy.meta.volumes import (
    ANN_BETA_STORAGE_PROVISIONER,
    ANN_BIND_COMPLETED,
    ANN_BOUND_BY_CONTROLLER,
    ANN_LOCAL_PATH_DIR,
    ANN_LOCAL_PATH_NODE,
    ANN_PROVISIONED_BY,
    ANN_SELECTED_NODE,
    ANN_STORAGE_PROVISIONER,
    CAPACITY_NAMESPACE,
    HOSTNAME_LABEL,
    LOCAL_PATH_PROVISIONER,
    capacity_name,
    claim_class,
    claim_request,
    find_best_pv,
    is_bound_to,
    pv_capacity,
    storage_bytes,
)

log = logging.getLogger(__name__)

COMPONENT = "persistentvolume-controller"
WAIT_FOR_FIRST_CONSUMER = "waiting for first consumer to be created before binding"


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _meta(obj: dict) -> dict:
    return obj.setdefault("metadata", {})


def _ann(obj: dict) -> dict:
    return _d(_d(obj.get("metadata")).get("annotations"))


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def claim_ref(claim: dict) -> dict[str, Any]:
    m = claim["metadata"]
    return {"kind": "PersistentVolumeClaim", "namespace": m["namespace"], "name": m["name"], "uid": m.get("uid"),
            "apiVersion": "v1", "resourceVersion": m.get("resourceVersion")}


def provisioned_volume(claim: dict, sc: dict, node: str, directory: str) -> dict[str, Any]:
    """The PersistentVolume local-path provisioning makes for ``claim`` on ``node``."""
    name = f"pvc-{claim['metadata']['uid']}"
    spec = _d(claim.get("spec"))
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {ANN_PROVISIONED_BY: LOCAL_PATH_PROVISIONER,
                                                   ANN_LOCAL_PATH_NODE: node}},
        "spec": {
            "capacity": {"storage": _d(_d(spec.get("resources")).get("requests")).get("storage")},
            "accessModes": list(spec.get("accessModes") or []),
            "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy") or "Delete",
            "storageClassName": sc["metadata"]["name"],
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": f"{directory.rstrip('/')}/{name}", "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}]}]}},
            "claimRef": claim_ref(claim),
            "mountOptions": list(sc.get("mountOptions") or []),
        },
    }


def _human(amount: Any) -> str:
    try:
        return format_quantity(int(amount), binary=True)
    except (TypeError, ValueError):
        return str(amount)


class PersistentVolumeController:
    name = "persistentvolume-binder"

    def __init__(self, ctx: ControllerContext, *, resync: float = 15.0) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.recorder = ctx.recorder
        self.resync = resync
        self.claims = ctx.informers.informer("persistentvolumeclaims")
        self.volumes = ctx.informers.informer("persistentvolumes")
        self.classes = ctx.informers.informer("storageclasses")
        self.capacities = ctx.informers.informer("csistoragecapacities")
        self.nodes = ctx.informers.informer("nodes")
        self.queue = WorkQueue(name="persistentvolume")
        self._said: dict[tuple[str, str], str] = {}  # (object key, reason) -> last message
        self.claims.add_handler(self._claim_changed, lambda _o, n: self._claim_changed(n), self._claim_deleted)
        self.volumes.add_handler(self._volume_changed, lambda _o, n: self._volume_changed(n), self._volume_changed)
        self.classes.add_handler(lambda _sc: self._pending_claims(), lambda _o, _n: self._pending_claims(), None)
        self.capacities.add_handler(lambda _c: self._pending_claims(), lambda _o, _n: self._pending_claims(), None)

    # -- handlers: only queue keys -------------------------------------------------------
    def _claim_changed(self, claim: dict) -> None:
        self.queue.add(f"claim:{object_key(claim)}")

    def _claim_deleted(self, claim: dict) -> None:
        key = f"claim:{object_key(claim)}"
        for said in [s for s in self._said if s[0] == key]:
            del self._said[said]
        for pv in self.volumes.cache.list():
            if is_bound_to(pv, claim):
                self.queue.add(f"volume:{pv['metadata']['name']}")

    def _volume_changed(self, pv: dict) -> None:
        self.queue.add(f"volume:{pv['metadata']['name']}")
        ref = _d(_d(pv.get("spec")).get("claimRef"))
        if ref.get("namespace") and ref.get("name"):
            self.queue.add(f"claim:{ref['namespace']}/{ref['name']}")

    def _pending_claims(self) -> None:
        for claim in self.claims.cache.list():
            if _d(claim.get("status")).get("phase") != "Bound":
                self._claim_changed(claim)

    # -- loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        resync = asyncio.create_task(self._resync(), name=f"{self.name}-resync")
        try:
            await run_workers(self.queue, self.reconcile, workers=1, logger=log)
        finally:
            resync.cancel()
            await asyncio.gather(resync, return_exceptions=True)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync)
            for claim in self.claims.cache.list():
                self._claim_changed(claim)
            for pv in self.volumes.cache.list():
                self.queue.add(f"volume:{pv['metadata']['name']}")

    async def reconcile(self, key: str) -> None:
        kind, _, name = key.partition(":")
        if kind == "claim":
            claim = self.claims.cache.get(name)
            if claim is not None:
                await self.sync_claim(copy.deepcopy(claim))
        elif kind == "volume":
            pv = self.volumes.cache.get(name)
            if pv is not None:
                await self.sync_volume(copy.deepcopy(pv))

    def _event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        """An event, once per object while it keeps saying the same thing."""
        prefix = "claim" if obj.get("kind") == "PersistentVolumeClaim" or _d(obj.get("metadata")).get("namespace") \
            else "volume"
        key = f"{prefix}:{object_key(obj)}"
        if self._said.get((key, reason)) == message:
            return
        self._said[(key, reason)] = message
        obj = {**obj, "kind": "PersistentVolumeClaim" if prefix == "claim" else "PersistentVolume",
               "apiVersion": "v1"}
        self.recorder.event(obj, type_, reason, message)

    # -- claims -------------------------------------------------------------------------
    async def sync_claim(self, claim: dict) -> None:
        if _ann(claim).get(ANN_BIND_COMPLETED):
            await self._sync_bound_claim(claim)
        else:
            await self._sync_unbound_claim(claim)

    async def _sync_bound_claim(self, claim: dict) -> None:
        volume_name = _d(claim.get("spec")).get("volumeName")
        pv = self.volumes.cache.get(volume_name) if volume_name else None
        if not volume_name:
            await self._claim_status(claim, "Lost")
            self._event(claim, "Warning", "ClaimLost", "Bound claim has lost reference to PersistentVolume. "
                                                       "Data on the volume is lost!")
            return
        if pv is None:
            await self._claim_status(claim, "Lost")
            self._event(claim, "Warning", "ClaimLost", "Bound claim has lost its PersistentVolume. "
                                                       "Data on the volume is lost!")
            return
        ref = _d(_d(pv.get("spec")).get("claimRef"))
        if not ref:
            await self._bind(claim, pv)  # the volume lost its half of the binding: restore it
        elif is_bound_to(pv, claim):
            await self._bind(claim, pv)  # idempotent: finishes a bind interrupted half-way
        else:
            await self._claim_status(claim, "Lost")
            self._event(claim, "Warning", "ClaimMisbound", "Two claims are bound to the same volume, this one is "
                                                           "bound incorrectly")

    async def _sync_unbound_claim(self, claim: dict) -> None:
        key = object_key(claim)
        volume_name = _d(claim.get("spec")).get("volumeName")
        if volume_name:
            pv = self.volumes.cache.get(volume_name)
            if pv is None:
                await self._claim_status(claim, "Pending")
                self._event(claim, "Normal", "FailedBinding", f'volume "{volume_name}" not found')
                return
            ref = _d(_d(pv.get("spec")).get("claimRef"))
            if ref and not is_bound_to(pv, claim):
                await self._claim_status(claim, "Pending")
                self._event(claim, "Warning", "FailedBinding",
                            f'volume "{volume_name}" already bound to a different claim.')
                return
            log.info("binding claim=%s volume=%s reason=PreBound", key, volume_name)
            await self._bind(claim, pv)
            return
        class_name = claim_class(claim)
        sc = self.classes.cache.get(class_name) if class_name else None
        delayed = sc is not None and sc.get("volumeBindingMode") == "WaitForFirstConsumer"
        selected = _ann(claim).get(ANN_SELECTED_NODE)
        if delayed and not selected:
            await self._claim_status(claim, "Pending")
            self._event(claim, "Normal", "WaitForFirstConsumer", WAIT_FOR_FIRST_CONSUMER)
            self._warn_if_no_room(claim, sc)
            return
        node = self.nodes.cache.get(selected) if delayed and selected else None
        if delayed and node is None:
            await self._claim_status(claim, "Pending")
            self._event(claim, "Warning", "ProvisioningFailed", f'node "{selected}" not found')
            await self._reschedule(claim, selected)
            return
        pv = find_best_pv(self.volumes.cache.list(), claim, node=node)
        if pv is not None:
            log.info("binding claim=%s volume=%s reason=Match", key, pv["metadata"]["name"])
            await self._bind(claim, pv)
            return
        if sc is None:
            await self._claim_status(claim, "Pending")
            if class_name:
                self._event(claim, "Warning", "ProvisioningFailed", f'storageclass.storage.k8s.io "{class_name}" '
                                                                    "not found")
            else:
                self._event(claim, "Normal", "FailedBinding", "no persistent volumes available for this claim and "
                                                              "no storage class is set")
            return
        await self._provision(claim, sc, selected)

    async def _reschedule(self, claim: dict, node: str) -> None:
        """The selected node cannot have this volume: drop the claim's selected-node so the
        scheduler, waiting to bind the pod (PreBind), sends it elsewhere (upstream's
        provisioner does the same on a final error)."""
        try:
            await self.client.patch("persistentvolumeclaims", _meta(claim)["name"],
                                    {"metadata": {"annotations": {ANN_SELECTED_NODE: None}}},
                                    namespace=_meta(claim).get("namespace"), patch_type="merge")
        except NotFoundError:
            return
        log.info("selected node dropped claim=%s node=%s reason=ProvisioningFailed", object_key(claim), node)

    def _warn_if_no_room(self, claim: dict, sc: dict) -> None:
        """A delayed local-path claim no node can hold: say so now (the scheduler will not place its pod)."""
        if sc.get("provisioner") != LOCAL_PATH_PROVISIONER:
            return
        free = [(storage_bytes(c.get("capacity")), c) for c in self.capacities.cache.list()
                if (self.classes.cache.get(str(c.get("storageClassName") or "")) or {}).get("provisioner")
                == sc.get("provisioner")]
        free = [(amount, c) for amount, c in free if amount is not None]
        if not free:
            return
        request = claim_request(claim)
        largest, holder = max(free, key=lambda f: f[0])
        if request > largest:
            node = _d(_d(holder.get("nodeTopology")).get("matchLabels")).get(HOSTNAME_LABEL, "?")
            self._event(claim, "Warning", "ProvisioningFailed",
                        f"no node has {_human(request)} of free storage for class {sc['metadata']['name']} "
                        f'(the most is {_human(largest)}, on node "{node}")')

    async def _provision(self, claim: dict, sc: dict, node: str | None) -> None:
        key = object_key(claim)
        provisioner = str(sc.get("provisioner") or "")
        if _ann(claim).get(ANN_STORAGE_PROVISIONER) != provisioner:
            ann = _meta(claim).setdefault("annotations", {})
            ann[ANN_STORAGE_PROVISIONER] = provisioner
            ann[ANN_BETA_STORAGE_PROVISIONER] = provisioner
            claim = await self.client.update("persistentvolumeclaims", claim)
        await self._claim_status(claim, "Pending")
        if provisioner != LOCAL_PATH_PROVISIONER:
            self._event(claim, "Normal", "ExternalProvisioning",
                        f"Waiting for a volume to be created either by the external provisioner '{provisioner}' "
                        "or manually by the system administrator. If volume creation is delayed, please verify "
                        "that the provisioner is running and correctly registered.")
            return
        if not node:
            self._event(claim, "Warning", "ProvisioningFailed",
                        f"the {LOCAL_PATH_PROVISIONER} provisioner makes node-local volumes and needs a node: use a "
                        "class with volumeBindingMode WaitForFirstConsumer")
            return
        cap = self.capacities.cache.get(f"{CAPACITY_NAMESPACE}/{capacity_name(node)}")
        directory = _ann(cap or {}).get(ANN_LOCAL_PATH_DIR)
        if cap is None or not directory:
            self._event(claim, "Warning", "ProvisioningFailed",
                        f'node "{node}" has not published its local-path storage ({CAPACITY_NAMESPACE}/'
                        f"{capacity_name(node)}): is its kubelet running?")
            self.queue.add_after(f"claim:{key}", 5.0)
            return
        free, request = storage_bytes(cap.get("capacity")), claim_request(claim)
        if free is not None and request > free:
            self._event(claim, "Warning", "ProvisioningFailed",
                        f'node "{node}" has {_human(free)} of free storage, the claim requests {_human(request)}')
            await self._reschedule(claim, node)
            return
        body = provisioned_volume(claim, sc, node, directory)
        name = body["metadata"]["name"]
        self._event(claim, "Normal", "Provisioning",
                    f'External provisioner is provisioning volume for claim "{key}"')
        try:
            await self.client.create("persistentvolumes", body)
        except AlreadyExistsError:
            pass  # made by an earlier attempt: binding picks it up
        log.info("provisioned claim=%s volume=%s node=%s path=%s", key, name, node, body["spec"]["hostPath"]["path"])
        self._event(claim, "Normal", "ProvisioningSucceeded", f"Successfully provisioned volume {name}")

    async def _bind(self, claim: dict, pv: dict) -> None:
        """Both halves of a binding, volume first (upstream's bind)."""
        name, key = pv["metadata"]["name"], object_key(claim)
        pv = copy.deepcopy(pv)
        if not is_bound_to(pv, claim) or not _d(pv["spec"].get("claimRef")).get("uid"):
            by_controller = not pv["spec"].get("claimRef")
            pv["spec"]["claimRef"] = claim_ref(claim)
            if by_controller:
                _meta(pv).setdefault("annotations", {})[ANN_BOUND_BY_CONTROLLER] = "yes"
            pv = await self.client.update("persistentvolumes", pv)
        if _d(pv.get("status")).get("phase") != "Bound":
            pv = await self._volume_status(pv, "Bound")
        spec = claim.setdefault("spec", {})
        ann = _ann(claim)
        if spec.get("volumeName") != name or not ann.get(ANN_BIND_COMPLETED):
            annotations = _meta(claim).setdefault("annotations", {})
            if spec.get("volumeName") != name:
                spec["volumeName"] = name
                annotations[ANN_BOUND_BY_CONTROLLER] = "yes"
            annotations[ANN_BIND_COMPLETED] = "yes"
            claim = await self.client.update("persistentvolumeclaims", claim)
            log.info("bound claim=%s volume=%s", key, name)
        await self._claim_status(claim, "Bound", pv=pv)

    async def _claim_status(self, claim: dict, phase: str, *, pv: dict | None = None) -> dict:
        status = _d(claim.get("status"))
        want = {**status, "phase": phase}
        if pv is not None:
            want["accessModes"] = list(_d(pv.get("spec")).get("accessModes") or [])
            want["capacity"] = {"storage": _d(_d(pv.get("spec")).get("capacity")).get("storage")}
        elif phase == "Pending":
            want.pop("accessModes", None)
            want.pop("capacity", None)
        if want == status:
            return claim
        claim = {**claim, "status": want}
        try:
            return await self.client.update("persistentvolumeclaims", claim, subresource="status")
        except NotFoundError:
            return claim

    async def _volume_status(self, pv: dict, phase: str, *, reason: str = "", message: str = "") -> dict:
        status = _d(pv.get("status"))
        if status.get("phase") == phase and status.get("message", "") == message:
            return pv
        want = {"phase": phase, "lastPhaseTransitionTime": _now()}
        if reason:
            want["reason"] = reason
        if message:
            want["message"] = message
        log.info("volume phase volume=%s phase=%s", pv["metadata"]["name"], phase)
        return await self.client.update("persistentvolumes", {**pv, "status": want}, subresource="status")

    # -- volumes ------------------------------------------------------------------------
    async def sync_volume(self, pv: dict) -> None:
        spec = _d(pv.get("spec"))
        ref = _d(spec.get("claimRef"))
        phase = _d(pv.get("status")).get("phase")
        if not ref:
            if phase != "Available":
                await self._volume_status(pv, "Available")
            return
        claim = self.claims.cache.get(f"{ref.get('namespace')}/{ref.get('name')}")
        if not ref.get("uid"):
            # Pre-bound by name to a claim that may not exist yet: the claim's sync binds it.
            if phase not in ("Available",):
                await self._volume_status(pv, "Available")
            return
        if claim is None or _d(claim.get("metadata")).get("uid") != ref.get("uid"):
            await self._reclaim(pv)
            return
        if _d(claim.get("spec")).get("volumeName") not in (None, "", pv["metadata"]["name"]):
            if _ann(pv).get(ANN_BOUND_BY_CONTROLLER):
                # The claim went to another volume while this one was being bound: let this one go.
                pv = copy.deepcopy(pv)
                pv["spec"].pop("claimRef", None)
                _meta(pv).setdefault("annotations", {}).pop(ANN_BOUND_BY_CONTROLLER, None)
                pv = await self.client.update("persistentvolumes", pv)
                await self._volume_status(pv, "Available")
            return
        if phase != "Bound":
            await self._volume_status(pv, "Bound")

    async def _reclaim(self, pv: dict) -> None:
        name = pv["metadata"]["name"]
        phase = _d(pv.get("status")).get("phase")
        if phase == "Failed":
            return
        if phase != "Released":
            pv = await self._volume_status(pv, "Released")
        policy = _d(pv.get("spec")).get("persistentVolumeReclaimPolicy") or "Retain"
        if policy == "Retain":
            log.info("volume released volume=%s policy=Retain", name)
            return
        if policy == "Delete" and _ann(pv).get(ANN_PROVISIONED_BY) == LOCAL_PATH_PROVISIONER:
            # The kubelet of the volume's node removes the directory, then the volume.
            return
        message = (f'error getting deleter volume plugin for volume "{name}": no deletable volume plugin matched'
                   if policy == "Delete" else f'no volume plugin matched name: kubernetes.io/{policy.lower()}')
        reason = "VolumeFailedDelete" if policy == "Delete" else "VolumeFailedRecycle"
        await self._volume_status(pv, "Failed", message=message)
        self._event(pv, "Warning", reason, message)
