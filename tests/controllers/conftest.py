"""Controller tests: a real API server and the controllers under test running in-process.

Fixtures and helpers (reuse them from any ``tests/controllers/test_*.py``):

``apiserver`` (module scope)
    A real ``kubepy apiserver`` over SQLite in a temporary directory
    (``tests.e2e.conftest.start_apiserver``): ``.kubeconfig``, ``.kubectl(...)``.

``controller_env(apiserver, *controllers, config=None, **config_fields)``
    An async context manager that builds a ``Client`` from the admin
    kubeconfig, an ``InformerFactory``, an ``EventRecorder`` and a
    ``ControllerContext``, constructs each controller (a class, or any
    ``factory(ctx)`` such as ``functools.partial(PodGCController,
    orphan_grace=1)``), then starts the informers, waits for them to sync and
    runs every controller's ``run()`` as a task. It yields an ``Env``:
    ``env.client``, ``env.ctx``, ``env.controllers[name]``, and
    ``await env.wait_for(check, timeout=...)`` which polls a sync or async
    ``check()`` until it returns something truthy (returning it) or fails the
    test with the last value seen. On exit every task is cancelled, the
    informers stopped, pending events flushed and the client closed. A
    controller task that dies makes ``wait_for`` fail at once. Example::

        async with controller_env(apiserver, ReplicaSetController, concurrent_syncs=2) as env:
            await env.client.create("replicasets", rs, namespace=ns)
            await env.wait_for(lambda: pods_of(env, ns))

``namespace`` (function scope, needs ``apiserver``)
    A fresh namespace name, created with kubectl, unique per test.

``no_leftover_tasks`` (autouse)
    Fails a test that leaves asyncio tasks running.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from kubepy.client import Client, ClientConfig, EventRecorder
from kubepy.controllers.context import ControllerConfig, ControllerContext, InformerFactory
from tests.e2e.conftest import running_apiserver

_names = itertools.count()


@pytest.fixture(scope="module")
def apiserver():
    with running_apiserver("kubepy-ctrl-") as srv:
        yield srv


@pytest.fixture
def namespace(apiserver, request) -> str:
    name = f"t{next(_names)}-{request.node.name.lower().replace('_', '-')[:40].strip('-')}"
    apiserver.kubectl("create", "namespace", name)
    return name


@pytest.fixture(autouse=True)
async def no_leftover_tasks():
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not left, f"tasks left running: {left}"


@dataclass
class Env:
    client: Client
    ctx: ControllerContext
    controllers: dict[str, Any] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def check_alive(self) -> None:
        for task in self.tasks:
            if task.done():
                exc = None if task.cancelled() else task.exception()
                raise AssertionError(f"controller task {task.get_name()} ended: {exc!r}")

    async def wait_for(self, check: Callable[[], Any], *, timeout: float = 15.0, interval: float = 0.1,
                       message: str = "") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            self.check_alive()
            last = check()
            if inspect.isawaitable(last):
                last = await last
            if last:
                return last
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {message or check}: last={last!r}")
            await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def controller_env(apiserver: Any, *controllers: Callable[[ControllerContext], Any],
                         config: ControllerConfig | None = None, **config_fields: Any) -> AsyncIterator[Env]:
    cfg = config or ControllerConfig()
    for k, v in config_fields.items():
        setattr(cfg, k, v)
    client = Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig), user_agent="kubepy-controller-test")
    informers = InformerFactory(client)
    recorder = EventRecorder(client, component="kubepy-controller-manager")
    ctx = ControllerContext(client=client, informers=informers, recorder=recorder, config=cfg)
    env = Env(client=client, ctx=ctx)
    try:
        for make in controllers:
            ctrl = make(ctx)
            env.controllers[ctrl.name] = ctrl
        informers.start()
        await informers.wait_synced(timeout=15)
        env.tasks = [asyncio.create_task(c.run(), name=f"controller:{n}") for n, c in env.controllers.items()]
        yield env
    finally:
        for task in env.tasks:
            task.cancel()
        await asyncio.gather(*env.tasks, return_exceptions=True)
        await informers.stop()
        await recorder.flush()
        await client.close()


async def get_or_none(client: Client, resource: str, name: str, namespace: str | None = None) -> dict | None:
    from kubepy.client import NotFoundError
    try:
        return await client.get(resource, name, namespace=namespace)
    except NotFoundError:
        return None


async def crd_established(client: Client, name: str) -> bool:
    """The CustomResourceDefinition ``name`` has condition Established=True (its kind is served)."""
    crd = await client.get("customresourcedefinitions", name)
    return any(x["type"] == "Established" and x["status"] == "True"
               for x in (crd.get("status") or {}).get("conditions") or [])
