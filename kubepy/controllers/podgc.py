"""Pod garbage collector: force-deletes pods no kubelet will ever finish.

Two cases (``gc_reason``, pure):

- ``NodeGone``: the pod's ``spec.nodeName`` names a node absent from the node
  informer. It is quarantined for ``orphan_grace`` seconds (a node may be
  re-registering, or the cache lagging); if the node is still missing then -
  confirmed by a live GET - the pod is force-deleted (grace 0).
- ``OutOfService``: the pod is terminating on a node that is not Ready and
  carries the ``node.kubernetes.io/out-of-service`` taint - an admin's word
  that the node is down for good (Kubernetes' non-graceful node shutdown) -
  so it is force-deleted at once.

A terminating pod on a node that is merely unreachable is left alone: its
containers may still run there, and only its kubelet (or one of the cases
above) may end it. Every ``gc_period`` all pods are looked at again.
Kubernetes' terminated-pod threshold is not implemented. Reads the pods and
nodes informers; deletes through the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from kubepy.client import ConflictError, NotFoundError, WorkQueue, object_key, run_workers
from kubepy.controllers.context import ControllerContext

log = logging.getLogger(__name__)

TAINT_OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
NODE_GONE, OUT_OF_SERVICE = "NodeGone", "OutOfService"


def _is_ready(node: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def is_out_of_service(node: dict[str, Any]) -> bool:
    return any(t.get("key") == TAINT_OUT_OF_SERVICE and t.get("effect") in ("NoExecute", "NoSchedule")
               for t in (node.get("spec") or {}).get("taints") or [])


def gc_reason(pod: dict[str, Any], node: dict[str, Any] | None) -> str | None:
    """Why pod GC force-deletes ``pod`` (bound to ``node``, None if no such node), or None."""
    if not (pod.get("spec") or {}).get("nodeName"):
        return None
    if node is None:
        return NODE_GONE
    if (pod.get("metadata") or {}).get("deletionTimestamp") and is_out_of_service(node) and not _is_ready(node):
        return OUT_OF_SERVICE
    return None


class PodGCController:
    name = "podgc"

    def __init__(self, ctx: ControllerContext, *, orphan_grace: float = 40.0, gc_period: float = 20.0) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.orphan_grace = orphan_grace
        self.gc_period = gc_period
        self.pods = ctx.informers.informer("pods")
        self.nodes = ctx.informers.informer("nodes")
        self.queue = WorkQueue(name=self.name)
        self._orphaned_since: dict[str, float] = {}  # pod uid -> monotonic time first seen orphaned
        self.pods.add_handler(self._pod_changed, lambda old, new: self._pod_changed(new),
                              lambda p: self._orphaned_since.pop(p["metadata"].get("uid", ""), None))
        self.nodes.add_handler(self._node_changed, lambda old, new: self._node_changed(new), self._node_deleted)

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and self.nodes.has_synced and gc_reason(pod, self.nodes.cache.get(node)) is not None:
            self.queue.add(object_key(pod))

    def _node_changed(self, node: dict[str, Any]) -> None:
        if is_out_of_service(node):
            for pod in self.pods.cache.by_index("node", node["metadata"]["name"]):
                self._pod_changed(pod)

    def _node_deleted(self, node: dict[str, Any]) -> None:
        for pod in self.pods.cache.by_index("node", node["metadata"]["name"]):
            self.queue.add(object_key(pod))

    async def run(self) -> None:
        resync = asyncio.create_task(self._resync(), name=f"{self.name}-resync")
        try:
            await run_workers(self.queue, self.reconcile, workers=self.ctx.config.concurrent_syncs, logger=log)
        finally:
            resync.cancel()
            await asyncio.gather(resync, return_exceptions=True)

    async def _resync(self) -> None:
        # Pods listed before the nodes were known were skipped: look again.
        await self.nodes.wait_synced()
        while True:
            for pod in self.pods.cache.list():
                self._pod_changed(pod)
            await asyncio.sleep(self.gc_period)

    async def reconcile(self, key: str) -> None:
        pod = self.pods.cache.get(key)
        if pod is None:
            return
        meta = pod["metadata"]
        uid = meta.get("uid", "")
        node = (pod.get("spec") or {}).get("nodeName")
        reason = gc_reason(pod, self.nodes.cache.get(node)) if node and self.nodes.has_synced else None
        if reason != NODE_GONE:
            self._orphaned_since.pop(uid, None)
        if reason is None:
            return
        if reason == NODE_GONE:
            since = self._orphaned_since.setdefault(uid, time.monotonic())
            wait = self.orphan_grace - (time.monotonic() - since)
            if wait > 0:
                self.queue.add_after(key, wait)
                return
            try:
                await self.client.get("nodes", node)
                self._orphaned_since.pop(uid, None)
                return  # the cache lags: the node is there
            except NotFoundError:
                pass
        try:
            await self.client.delete("pods", meta["name"], namespace=meta.get("namespace"), grace_period_seconds=0,
                                     preconditions={"uid": uid})
        except (NotFoundError, ConflictError):
            return
        self._orphaned_since.pop(uid, None)
        log.info("pod force-deleted pod=%s node=%s reason=%s", key, node, reason)
