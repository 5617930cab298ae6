"""Root-CA publisher: a ``kube-root-ca.crt`` ConfigMap in every namespace.

Pods verify the API server at ``https://kubernetes.default.svc`` with the
``ca.crt`` their service-account volume projects from this ConfigMap (as
Kubernetes' root-ca-cert-publisher does). The CA is the one the controller
manager's own kubeconfig trusts. A namespace added, or the ConfigMap
deleted or changed, brings it back as it should be; namespaces being
deleted are left alone.
"""

from __future__ import annotations

import logging
from typing import Any

from kubepy.client import AlreadyExistsError, ConflictError, ForbiddenError, NotFoundError, WorkQueue, run_workers
from kubepy.controllers.context import ControllerContext

log = logging.getLogger(__name__)

NAME = "kube-root-ca.crt"
DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
               "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
               "distributions of Kubernetes clusters.")


class RootCACertPublisher:
    name = "root-ca-cert-publisher"

    def __init__(self, ctx: ControllerContext, *, ca_pem: str | None = None) -> None:
        self.ctx = ctx
        self.client = ctx.client
        data = getattr(getattr(ctx.client, "config", None), "ca_data", None)
        self.ca_pem = ca_pem if ca_pem is not None else (data.decode() if data else "")
        self.namespaces = ctx.informers.informer("namespaces")
        self.configmaps = ctx.informers.informer("configmaps")
        self.queue = WorkQueue(name=self.name)
        self.namespaces.add_handler(self._ns, lambda old, new: self._ns(new), None)
        self.configmaps.add_handler(None, lambda old, new: self._cm(new), self._cm)

    def _ns(self, ns: dict[str, Any]) -> None:
        self.queue.add(ns["metadata"]["name"])

    def _cm(self, cm: dict[str, Any]) -> None:
        if cm["metadata"]["name"] == NAME:
            self.queue.add(cm["metadata"].get("namespace", ""))

    def _wanted(self) -> dict[str, Any]:
        return {"data": {"ca.crt": self.ca_pem}, "annotations": {"kubernetes.io/description": DESCRIPTION}}

    async def reconcile(self, namespace: str) -> None:
        if not self.ca_pem:
            return
        ns = self.namespaces.cache.get(namespace)
        if ns is None or (ns.get("status") or {}).get("phase") == "Terminating" or \
                ns["metadata"].get("deletionTimestamp"):
            return
        cm = self.configmaps.cache.get(f"{namespace}/{NAME}")
        if cm is None:
            try:
                await self.client.create("configmaps", {
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": NAME, "annotations": {"kubernetes.io/description": DESCRIPTION}},
                    "data": {"ca.crt": self.ca_pem}}, namespace=namespace)
                log.info("published root ca namespace=%s", namespace)
            except (AlreadyExistsError, ForbiddenError, NotFoundError):
                pass  # exists already (the cache lags), or the namespace is going
            return
        if (cm.get("data") or {}) == {"ca.crt": self.ca_pem} and \
                (cm["metadata"].get("annotations") or {}).get("kubernetes.io/description") == DESCRIPTION:
            return
        fixed = {**cm, "data": {"ca.crt": self.ca_pem},
                 "metadata": {**cm["metadata"], "annotations": {**(cm["metadata"].get("annotations") or {}),
                                                               "kubernetes.io/description": DESCRIPTION}}}
        try:
            await self.client.update("configmaps", fixed)
            log.info("republished root ca namespace=%s reason=Changed", namespace)
        except ConflictError:
            self.queue.add(namespace)
        except NotFoundError:
            self.queue.add(namespace)

    async def run(self) -> None:
        await run_workers(self.queue, self.reconcile, workers=self.ctx.config.concurrent_syncs, logger=log)
