"""Fixtures for the ReplicaSet and Deployment controller tests (imported explicitly).

``apiserver_rsdeploy`` is one real API server per test module;
``running_controllers`` runs controllers in-process against it; and
``FakeKubelet`` plays every node's part: it binds new pods to a fake node,
reports them Running and Ready (or Running and never Ready, for images
listed in ``never_ready_images``), and finishes graceful deletions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import pytest

from kubepy.client import (
    AlreadyExistsError,
    Client,
    ClientConfig,
    ConflictError,
    EventRecorder,
    Informer,
    NotFoundError,
    WorkQueue,
    object_key,
    run_workers,
)
from kubepy.controllers.context import (
    ControllerConfig,
    ControllerContext,
    InformerFactory,
)
from tests.e2e.conftest import running_apiserver


@pytest.fixture(scope="module", name="apiserver_rsdeploy")
def apiserver_rsdeploy_fixture():
    with running_apiserver("kubepy-rsdeploy-") as srv:
        yield srv


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKubelet:
    """Binds, starts and readies pods as a kubelet would, without containers."""

    def __init__(self, client: Client, *, node: str = "fake-node", never_ready_images: Iterable[str] = ()) -> None:
        self.client = client
        self.node = node
        self.never_ready_images = set(never_ready_images)
        self.paused = False  # while set, new pods stay Pending and unassigned
        self.informer = Informer(client, "pods")
        self.queue = WorkQueue(name="fake-kubelet")
        self.informer.add_handler(lambda p: self.queue.add(object_key(p)),
                                  lambda o, n: self.queue.add(object_key(n)), None)

    def resume(self) -> None:
        self.paused = False
        for key in self.informer.cache.keys():  # noqa: SIM118 - Cache is not a dict
            self.queue.add(key)

    async def run(self) -> None:
        informer = asyncio.create_task(self.informer.run())
        try:
            await run_workers(self.queue, self._sync, workers=4)
        finally:
            informer.cancel()
            await asyncio.gather(informer, return_exceptions=True)

    def _is_ready_image(self, pod: dict[str, Any]) -> bool:
        images = {c.get("image") for c in (pod.get("spec") or {}).get("containers") or []}
        return not (images & self.never_ready_images)

    async def _sync(self, key: str) -> None:
        pod = self.informer.cache.get(key)
        if pod is None:
            return
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        ns, name = meta["namespace"], meta["name"]
        try:
            if meta.get("deletionTimestamp"):
                await self.client.delete("pods", name, namespace=ns, grace_period_seconds=0)
                return
            if self.paused:
                return
            if not spec.get("nodeName"):
                await self.client.create("pods", {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                                                  "target": {"kind": "Node", "name": self.node}},
                                         namespace=ns, subresource="binding", name=name)
                return  # the update event brings it back here
            ready = self._is_ready_image(pod)
            want = "True" if ready else "False"
            current = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
            if status.get("phase") == "Running" and current.get("Ready") == want:
                return
            now = _now()
            conds = [{"type": t, "status": s, "lastProbeTime": None, "lastTransitionTime": now}
                     for t, s in (("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", want),
                                  ("Ready", want))]
            container_statuses = [{"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": ready,
                                   "restartCount": 0, "started": True,
                                   "state": {"running": {"startedAt": now}}}
                                  for c in spec.get("containers") or []]
            await self.client.patch("pods", name, {"status": {
                "phase": "Running", "conditions": conds, "containerStatuses": container_statuses,
                "hostIP": "10.0.0.1", "podIP": "10.244.0.10", "startTime": now}},
                namespace=ns, subresource="status")
        except (NotFoundError, ConflictError):
            return


@contextlib.asynccontextmanager
async def running_controllers(srv: Any, *controller_classes: type, kubelet: bool = True,
                              never_ready_images: Iterable[str] = (), start: bool = True
                              ) -> AsyncIterator[tuple[ControllerContext, list[Any], FakeKubelet | None]]:
    """Controllers (and a fake kubelet) running in this loop until the block ends."""
    client = Client(ClientConfig.from_kubeconfig(srv.kubeconfig))
    factory = InformerFactory(client)
    recorder = EventRecorder(client, component="test-controller-manager")
    ctx = ControllerContext(client=client, informers=factory, recorder=recorder,
                            config=ControllerConfig(concurrent_syncs=4))
    controllers = [cls(ctx) for cls in controller_classes]
    fake = FakeKubelet(Client(ClientConfig.from_kubeconfig(srv.kubeconfig)),
                       never_ready_images=never_ready_images) if kubelet else None
    factory.start()
    tasks: list[asyncio.Task[Any]] = []
    try:
        if fake is not None:
            tasks.append(asyncio.create_task(fake.run(), name="fake-kubelet"))
        if start:
            tasks.extend(asyncio.create_task(c.run(), name=f"controller:{c.name}") for c in controllers)
        await factory.wait_synced(10)
        yield ctx, controllers, fake
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await factory.stop()
        await recorder.flush()
        await client.close()
        if fake is not None:
            await fake.client.close()


async def create_namespace(client: Client, name: str) -> None:
    with contextlib.suppress(AlreadyExistsError):
        await client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


async def wait_for(predicate: Any, *, timeout: float = 15.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while True:
        last = await predicate()
        if last:
            return last
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")
        await asyncio.sleep(interval)


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


async def live_pods(client: Client, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
    """Pods not being deleted."""
    items, _ = await client.list_all("pods", namespace=namespace, label_selector=selector)
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]
