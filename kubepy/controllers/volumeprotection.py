"""Storage object in-use protection: the controllers that lift the
``kubernetes.io/pvc-protection`` and ``kubernetes.io/pv-protection`` finalizers.

As upstream's pkg/controller/volume/pvcprotection and pvprotection: the API
server adds the finalizers on create; a claim being deleted keeps its
finalizer (and shows Terminating) while a scheduled pod that has not
terminated uses it, and a volume being deleted keeps its finalizer while it
is Bound.  ``claim_in_use`` and ``volume_in_use`` are the pure decisions.
"""

from __future__ import annotations

import logging
from typing import Any

from kubepy.client import NotFoundError, WorkQueue, object_key, run_workers
from kubepy.controllers.context import ControllerContext
from kubepy.meta.volumes import PV_PROTECTION, PVC_PROTECTION, pod_claims

log = logging.getLogger(__name__)


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def claim_in_use(claim: dict, pods: list[dict]) -> str | None:
    """The pod (``ns/name``) that keeps ``claim`` from going, or None: a pod
    on a node (the kubelet refuses to start one whose claim is being deleted,
    so unscheduled pods do not count) that has not finished."""
    name = claim["metadata"]["name"]
    for pod in pods:
        if not _d(pod.get("spec")).get("nodeName"):
            continue
        if _d(pod.get("status")).get("phase") in ("Succeeded", "Failed"):
            continue
        if any(c == name for c, _ in pod_claims(pod)):
            return object_key(pod)
    return None


def volume_in_use(pv: dict) -> bool:
    return _d(pv.get("status")).get("phase") == "Bound"


async def _drop_finalizer(client: Any, resource: str, obj: dict, finalizer: str) -> None:
    meta = obj["metadata"]
    rest = [f for f in meta.get("finalizers") or [] if f != finalizer]
    try:
        await client.patch(resource, meta["name"], {"metadata": {"finalizers": rest or None,
                                                                 "resourceVersion": meta.get("resourceVersion")}},
                           namespace=meta.get("namespace"))
    except NotFoundError:
        return
    log.info("finalizer removed resource=%s object=%s finalizer=%s", resource, object_key(obj), finalizer)


class PVCProtectionController:
    name = "pvc-protection"

    def __init__(self, ctx: ControllerContext) -> None:
        self.client = ctx.client
        self.claims = ctx.informers.informer("persistentvolumeclaims")
        self.pods = ctx.informers.informer("pods")
        self.queue = WorkQueue(name=self.name)
        self.claims.add_handler(self._claim, lambda _o, n: self._claim(n), None)
        self.pods.add_handler(self._pod, lambda _o, n: self._pod(n), self._pod)

    def _claim(self, claim: dict) -> None:
        meta = claim["metadata"]
        if meta.get("deletionTimestamp") and PVC_PROTECTION in (meta.get("finalizers") or []):
            self.queue.add(object_key(claim))

    def _pod(self, pod: dict) -> None:
        ns = pod["metadata"].get("namespace")
        for name, _ in pod_claims(pod):
            claim = self.claims.cache.get(f"{ns}/{name}")
            if claim is not None:
                self._claim(claim)

    async def run(self) -> None:
        await run_workers(self.queue, self.reconcile, workers=1, logger=log)

    async def reconcile(self, key: str) -> None:
        claim = self.claims.cache.get(key)
        if claim is None or not claim["metadata"].get("deletionTimestamp") \
                or PVC_PROTECTION not in (claim["metadata"].get("finalizers") or []):
            return
        pods = self.pods.cache.by_index("namespace", claim["metadata"]["namespace"])
        user = claim_in_use(claim, pods)
        if user is None:
            # The cache may lag behind a pod just scheduled: ask the API, as upstream does.
            live, _ = await self.client.list_all("pods", namespace=claim["metadata"]["namespace"])
            user = claim_in_use(claim, live)
        if user is not None:
            log.info("claim in use claim=%s pod=%s", key, user)
            return
        await _drop_finalizer(self.client, "persistentvolumeclaims", claim, PVC_PROTECTION)


class PVProtectionController:
    name = "pv-protection"

    def __init__(self, ctx: ControllerContext) -> None:
        self.client = ctx.client
        self.volumes = ctx.informers.informer("persistentvolumes")
        self.queue = WorkQueue(name=self.name)
        self.volumes.add_handler(self._volume, lambda _o, n: self._volume(n), None)

    def _volume(self, pv: dict) -> None:
        meta = pv["metadata"]
        if meta.get("deletionTimestamp") and PV_PROTECTION in (meta.get("finalizers") or []):
            self.queue.add(object_key(pv))

    async def run(self) -> None:
        await run_workers(self.queue, self.reconcile, workers=1, logger=log)

    async def reconcile(self, key: str) -> None:
        pv = self.volumes.cache.get(key)
        if pv is None or not pv["metadata"].get("deletionTimestamp") \
                or PV_PROTECTION not in (pv["metadata"].get("finalizers") or []):
            return
        if volume_in_use(pv):
            log.info("volume in use volume=%s", key)
            return
        await _drop_finalizer(self.client, "persistentvolumes", pv, PV_PROTECTION)


__all__ = ["PVCProtectionController", "PVProtectionController", "claim_in_use", "volume_in_use"]
