"""What every controller is given: client, shared informers, event recorder, settings."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from kubepy.client import Client, EventRecorder, Informer, by_namespace, by_node, by_owner

log = logging.getLogger(__name__)

# Every shared informer carries these indexes: they are cheap and most
# controllers want one of them.
DEFAULT_INDEXERS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "namespace": by_namespace,
    "owner": by_owner,
}
POD_INDEXERS = {**DEFAULT_INDEXERS, "node": by_node}


@dataclass
class ControllerConfig:
    """Settings with Kubernetes' own flag names (see ``kubepy controller-manager -h``)."""

    node_monitor_grace_period: float = 40.0
    node_monitor_period: float = 5.0
    default_not_ready_toleration_seconds: int = 300
    default_unreachable_toleration_seconds: int = 300
    cluster_cidr: str = "10.244.0.0/16"
    node_cidr_mask_size: int = 24
    concurrent_syncs: int = 4
    load_balancer_ip_range: str = ""  # the LoadBalancer address pool ("A-B", CIDRs, comma list); "" none
    controllers: list[str] = field(default_factory=lambda: ["*"])
    use_service_account_credentials: bool = False
    # The horizontal pod autoscaler (seconds; ratios as fractions), with kube-controller-manager's defaults.
    horizontal_pod_autoscaler_sync_period: float = 15.0
    horizontal_pod_autoscaler_downscale_stabilization: float = 300.0
    horizontal_pod_autoscaler_tolerance: float = 0.1
    horizontal_pod_autoscaler_cpu_initialization_period: float = 300.0
    horizontal_pod_autoscaler_initial_readiness_delay: float = 30.0


class InformerFactory:
    """One informer per resource, shared by every controller that asks."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._informers: dict[str, Informer] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def informer(self, resource: str, *, kind: Kind | None = None) -> Informer:
        """The informer of ``resource`` (a built-in plural); with ``kind``, of a kind the caller built (a
        custom resource's, from its CRD), keyed ``resource``. One started later runs once ``start`` is
        called again."""
        inf = self._informers.get(resource)
        if inf is None:
            indexers = POD_INDEXERS if resource == "pods" else DEFAULT_INDEXERS
            inf = Informer(self.client, kind or resource, indexers=dict(indexers))
            self._informers[resource] = inf
        return inf

    def remove(self, resource: str) -> None:
        """Stop and forget the informer of ``resource`` (a custom resource whose CRD is gone)."""
        self._informers.pop(resource, None)
        for t in [t for t in self._tasks if t.get_name() == f"informer:{resource}"]:
            t.cancel()
            self._tasks.remove(t)

    def start(self) -> None:
        for resource, inf in self._informers.items():
            if not any(t.get_name() == f"informer:{resource}" for t in self._tasks):
                self._tasks.append(asyncio.create_task(inf.run(), name=f"informer:{resource}"))

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.gather(*(inf.wait_synced(timeout) for inf in self._informers.values()))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


@dataclass
class ControllerContext:
    client: Client
    informers: InformerFactory
    recorder: EventRecorder
    config: ControllerConfig


class Controller(Protocol):
    """A reconcile loop. The constructor registers informer handlers; ``run``
    works the queue until cancelled."""

    name: str

    async def run(self) -> None: ...
