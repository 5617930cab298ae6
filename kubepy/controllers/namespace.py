"""Namespace controller: empties a namespace being deleted, then finalizes it.

A namespace with a deletionTimestamp still carrying the ``kubernetes``
finalizer in ``spec.finalizers`` has every object of every served namespaced
kind deleted (listed live from the API server: nothing may be missed).
Objects that linger - finalizers, graceful pod deletion - are waited for,
with the namespace requeued until it is empty. Pods are deleted normally
first; a pod still there after ``force_pod_delete_after`` seconds, or bound
to a node that does not exist, is force-deleted (grace 0) since no kubelet
will finish it. When nothing is left the ``kubernetes`` finalizer is removed
through ``PUT /api/v1/namespaces/NAME/finalize`` and the API server deletes
the namespace. Custom resources are content too: the namespaced kinds of every
CustomResourceDefinition (listed live, as upstream reads discovery) are emptied
the same way. Reads the namespaces and nodes informers; lists, deletes and
finalizes through the client.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kubepy.client import ConflictError, NotFoundError, WorkQueue, run_workers
from kubepy.controllers.context import ControllerContext
from kubepy.kinds import Kind, all_kinds
from kubepy.kinds.apiextensions.customresource import kinds_for

log = logging.getLogger(__name__)

FINALIZER = "kubernetes"
# One per plural: a kind served in several versions (HorizontalPodAutoscaler) has one set of objects.
NAMESPACED_RESOURCES = tuple(dict.fromkeys(r.plural for r in all_kinds() if r.namespaced and not r.virtual))
RECHECK = 1.0  # seconds between looks at a namespace whose content lingers


class NamespaceController:
    name = "namespace"

    def __init__(self, ctx: ControllerContext, *, force_pod_delete_after: float = 30.0) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.force_pod_delete_after = force_pod_delete_after
        self.namespaces = ctx.informers.informer("namespaces")
        self.nodes = ctx.informers.informer("nodes")
        self.queue = WorkQueue(name=self.name)
        self._first_delete: dict[str, float] = {}  # pod uid -> monotonic time of our first delete
        self.namespaces.add_handler(self._enqueue, lambda old, new: self._enqueue(new), None)

    def _enqueue(self, ns: dict[str, Any]) -> None:
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            self.queue.add(ns["metadata"]["name"])

    async def run(self) -> None:
        await run_workers(self.queue, self.reconcile, workers=self.ctx.config.concurrent_syncs, logger=log)

    async def reconcile(self, name: str) -> None:
        ns = self.namespaces.cache.get(name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        if FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or []):
            return  # ours is done; other finalizers belong to others
        remaining = 0
        for resource in NAMESPACED_RESOURCES:
            remaining += await self._delete_all(resource, name)
        for kind in await self._custom_kinds():
            remaining += await self._delete_all(kind, name)
        if remaining:
            log.info("namespace content remaining namespace=%s objects=%d", name, remaining)
            self.queue.add_after(name, RECHECK)
            return
        await self._finalize(name)

    async def _custom_kinds(self) -> list[Kind]:
        """One served kind per namespaced, established CRD (every version shares the objects)."""
        crds, _ = await self.client.list_all("customresourcedefinitions")
        out = []
        for crd in crds:
            established = any(c.get("type") == "Established" and c.get("status") == "True"
                              for c in (crd.get("status") or {}).get("conditions") or [])
            if established and (crd.get("spec") or {}).get("scope") == "Namespaced":
                served = kinds_for(crd)
                if served:
                    out.append(served[0])
        return out

    async def _delete_all(self, resource: str | Kind, namespace: str) -> int:
        """Ask for every object of ``resource`` to go; how many are still there."""
        items, _ = await self.client.list_all(resource, namespace=namespace)
        for obj in items:
            meta = obj["metadata"]
            try:
                if resource == "pods":
                    await self._delete_pod(obj)
                elif not meta.get("deletionTimestamp"):
                    await self.client.delete(resource, meta["name"], namespace=namespace)
            except NotFoundError:
                continue
        return len(items)

    async def _delete_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta.get("uid", "")
        first = self._first_delete.setdefault(uid, time.monotonic())
        node = (pod.get("spec") or {}).get("nodeName")
        orphaned = bool(node) and self.nodes.cache.get(node) is None and await self._node_gone(node)
        if meta.get("deletionTimestamp") and not orphaned \
                and time.monotonic() - first < self.force_pod_delete_after:
            return  # its kubelet is stopping it
        force = bool(meta.get("deletionTimestamp")) or orphaned
        try:
            await self.client.delete("pods", meta["name"], namespace=meta.get("namespace"),
                                     grace_period_seconds=0 if force else None, preconditions={"uid": uid})
        except ConflictError:
            return  # another pod by that name now: next round
        if force:
            self._first_delete.pop(uid, None)
            log.info("pod force-deleted pod=%s/%s reason=%s", meta.get("namespace"), meta["name"],
                     "NodeGone" if orphaned else "GracePeriodOver")

    async def _node_gone(self, node: str) -> bool:
        try:
            await self.client.get("nodes", node)
        except NotFoundError:
            return True
        return False

    async def _finalize(self, name: str) -> None:
        try:
            live = await self.client.get("namespaces", name)
        except NotFoundError:
            return
        finalizers = (live.get("spec") or {}).get("finalizers") or []
        if FINALIZER not in finalizers:
            return
        live.setdefault("spec", {})["finalizers"] = [f for f in finalizers if f != FINALIZER]
        try:
            await self.client.update("namespaces", live, subresource="finalize")
        except NotFoundError:
            return  # the namespace is gone
        log.info("namespace finalized namespace=%s", name)
