"""Pod garbage collector: force-deletes pods bound to nodes that no longer exist.

A pod whose ``spec.nodeName`` names a node absent from the node informer is
quarantined for ``orphan_grace`` seconds (a node may be re-registering, or
the cache lagging); if the node is still missing then - confirmed by a live
GET - the pod is force-deleted (grace 0): no kubelet will ever stop it, and
its owner must replace it. Every ``gc_period`` all pods are looked at again.
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
        self.nodes.add_handler(None, None, self._node_deleted)

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and self.nodes.has_synced and self.nodes.cache.get(node) is None:
            self.queue.add(object_key(pod))

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
        if not node or not self.nodes.has_synced or self.nodes.cache.get(node) is not None:
            self._orphaned_since.pop(uid, None)
            return
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
        log.info("pod force-deleted pod=%s node=%s reason=NodeGone", key, node)
