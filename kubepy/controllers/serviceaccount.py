"""ServiceAccount controller: every active namespace has a ServiceAccount "default".

Namespace adds and updates, and the deletion of a "default" ServiceAccount,
enqueue the namespace; reconcile creates the account when the namespace is
active and the account is missing. Reads the namespaces and serviceaccounts
informers; creates through the client.
"""

from __future__ import annotations

import logging
from typing import Any

from kubepy.client import AlreadyExistsError, ForbiddenError, NotFoundError, WorkQueue, run_workers
from kubepy.controllers.context import ControllerContext

log = logging.getLogger(__name__)

DEFAULT_NAME = "default"


class ServiceAccountController:
    name = "serviceaccount"

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.namespaces = ctx.informers.informer("namespaces")
        self.serviceaccounts = ctx.informers.informer("serviceaccounts")
        self.queue = WorkQueue(name=self.name)
        self.namespaces.add_handler(self._enqueue_ns, lambda old, new: self._enqueue_ns(new), None)
        self.serviceaccounts.add_handler(None, None, self._sa_deleted)

    def _enqueue_ns(self, ns: dict[str, Any]) -> None:
        self.queue.add(ns["metadata"]["name"])

    def _sa_deleted(self, sa: dict[str, Any]) -> None:
        if sa["metadata"]["name"] == DEFAULT_NAME and sa["metadata"].get("namespace"):
            self.queue.add(sa["metadata"]["namespace"])

    async def run(self) -> None:
        await run_workers(self.queue, self.reconcile, workers=self.ctx.config.concurrent_syncs, logger=log)

    async def reconcile(self, namespace: str) -> None:
        ns = self.namespaces.cache.get(namespace)
        if ns is None or ns["metadata"].get("deletionTimestamp") \
                or (ns.get("status") or {}).get("phase") == "Terminating":
            return
        if self.serviceaccounts.cache.get(f"{namespace}/{DEFAULT_NAME}") is not None:
            return
        body = {"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": DEFAULT_NAME, "namespace": namespace}}
        try:
            await self.client.create("serviceaccounts", body, namespace=namespace)
        except (AlreadyExistsError, ForbiddenError, NotFoundError):
            return  # already there (the cache lags), or the namespace is going away
        log.info("service account created namespace=%s name=%s", namespace, DEFAULT_NAME)
