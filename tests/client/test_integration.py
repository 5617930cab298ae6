"""The client library against a real ``kubepy apiserver`` process."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import struct
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kubepy.client import (
    AlreadyExistsError,
    Client,
    ClientConfig,
    ConflictError,
    EventRecorder,
    GoneError,
    Informer,
    InvalidError,
    NotFoundError,
    TransportError,
    by_node,
)
from kubepy.client import api as client_api
from tests.client.informers import running, until
from tests.e2e.conftest import free_port, running_apiserver, start_apiserver, stop_apiserver

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    with running_apiserver("kubepy-client-") as srv:
        yield srv


@pytest.fixture
async def client(server) -> AsyncIterator[Client]:
    async with Client(ClientConfig.from_kubeconfig(server.kubeconfig), user_agent="kubepy-test") as c:
        yield c


@pytest.fixture
async def ns(client: Client) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    await client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def configmap(name: str, ns: str, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data}


def pod(name: str, ns: str, node: str | None = None) -> dict:
    spec: dict = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}, "spec": spec}


# -- REST verbs and typed errors ----------------------------------------------
async def test_crud_and_typed_errors(client: Client, ns: str):
    created = await client.create("configmaps", configmap("one", ns, a="1"))
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    assert (await client.get("configmaps", "one", namespace=ns))["data"] == {"a": "1"}

    with pytest.raises(AlreadyExistsError) as e:
        await client.create("configmaps", configmap("one", ns))
    assert e.value.status == 409 and e.value.reason == "AlreadyExists"

    stale = dict(created, data={"a": "2"})
    updated = await client.update("configmaps", stale)
    assert updated["data"] == {"a": "2"}
    with pytest.raises(ConflictError) as e:
        await client.update("configmaps", dict(created, data={"a": "3"}))  # created's resourceVersion is stale
    assert e.value.status == 409 and e.value.reason == "Conflict" and e.value.body["kind"] == "Status"

    merged = await client.patch("configmaps", "one", {"data": {"b": "x"}}, namespace=ns)
    assert merged["data"] == {"a": "2", "b": "x"}
    jp = await client.patch("configmaps", "one", [{"op": "remove", "path": "/data/a"}], namespace=ns,
                            patch_type="json")
    assert jp["data"] == {"b": "x"}
    dry = await client.create("configmaps", configmap("dry", ns), dry_run=True)
    assert dry["metadata"]["name"] == "dry"
    with pytest.raises(NotFoundError):
        await client.get("configmaps", "dry", namespace=ns)

    with pytest.raises(ConflictError):
        await client.delete("configmaps", "one", namespace=ns, preconditions={"uid": "not-the-uid"})
    await client.delete("configmaps", "one", namespace=ns, preconditions={"uid": created["metadata"]["uid"]})
    with pytest.raises(NotFoundError) as e:
        await client.get("configmaps", "one", namespace=ns)
    assert e.value.status == 404 and e.value.reason == "NotFound"

    with pytest.raises(InvalidError) as e:
        await client.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", "namespace": ns},
                                     "spec": {"containers": []}})
    assert e.value.status == 422 and e.value.causes and all("field" in c for c in e.value.causes)


async def test_subresources_binding_and_status(client: Client, ns: str):
    await client.create("pods", pod("p", ns))
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p", "namespace": ns},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}}
    await client.create("pods", binding, namespace=ns, subresource="binding", name="p")
    assert (await client.get("pods", "p", namespace=ns))["spec"]["nodeName"] == "node-1"
    patched = await client.patch("pods", "p", {"status": {"phase": "Running"}}, namespace=ns, subresource="status",
                                 patch_type="strategic")
    assert patched["status"]["phase"] == "Running"
    gone = await client.delete("pods", "p", namespace=ns, grace_period_seconds=0)
    assert gone is None or isinstance(gone, dict)


async def test_cluster_scoped_and_transport_error(client: Client, ns: str):
    got = await client.get("namespaces", ns, namespace="ignored-for-cluster-scoped")
    assert got["metadata"]["name"] == ns
    dead = Client(ClientConfig(server=f"https://127.0.0.1:{free_port()}", token="x", ca_data=client.config.ca_data))
    try:
        with pytest.raises(TransportError):
            await dead.get("namespaces", "default")
    finally:
        await dead.close()


@contextlib.asynccontextmanager
async def resetting_proxy(target_port: int, resets: int):
    """A loopback TCP proxy to ``target_port`` whose first ``resets`` connections get a RST at once."""
    connections: list[int] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        if len(connections) <= resets:
            # SO_LINGER 0: close() sends RST, as a server with a full backlog or a failed handshake does.
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connections
    finally:
        server.close()


@pytest.mark.parametrize("resets, created", [(1, True), (2, False)])
async def test_a_connection_reset_before_the_request_is_retried_once(server, client: Client, ns: str,
                                                                     resets: int, created: bool):
    """A reset during the TLS handshake carried no request: even a POST is sent again, once."""
    async with resetting_proxy(server.port, resets) as (port, connections):
        via = Client(ClientConfig(server=f"https://127.0.0.1:{port}", token=client.config.token,
                                  ca_data=client.config.ca_data))
        try:
            if created:
                await via.create("configmaps", configmap("through-reset", ns, a="1"), namespace=ns)
            else:
                with pytest.raises(TransportError, match="POST"):
                    await via.create("configmaps", configmap("through-reset", ns, a="1"), namespace=ns)
        finally:
            await via.close()
    assert len(connections) == 2, "one retry, not more"
    names = [c["metadata"]["name"] for c in (await client.list("configmaps", namespace=ns))["items"]]
    assert names.count("through-reset") == (1 if created else 0)


async def test_list_all_pages(client: Client, ns: str, monkeypatch):
    await asyncio.gather(*(client.create("configmaps", configmap(f"cm-{i:02d}", ns)) for i in range(8)))
    monkeypatch.setattr(client_api, "LIST_PAGE_SIZE", 3)
    pages = []
    real_list = client.list

    async def spy(*args, **kw):
        page = await real_list(*args, **kw)
        pages.append(len(page["items"]))
        return page

    monkeypatch.setattr(client, "list", spy)
    items, rv = await client.list_all("configmaps", namespace=ns)
    assert sorted(i["metadata"]["name"] for i in items) == [f"cm-{i:02d}" for i in range(8)]
    assert pages == [3, 3, 2] and int(rv) > 0
    only = await real_list("configmaps", namespace=ns, field_selector="metadata.name=cm-03")
    assert [i["metadata"]["name"] for i in only["items"]] == ["cm-03"]


async def test_watch_yields_added_modified_deleted(client: Client, ns: str):
    _, rv = await client.list_all("configmaps", namespace=ns)
    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        events = client.watch("configmaps", namespace=ns, resource_version=rv, timeout_seconds=30)
        async with contextlib.aclosing(events):
            async for ev in events:
                if ev["type"] != "BOOKMARK":
                    seen.append((ev["type"], ev["object"]["metadata"]["name"]))
                if ev["type"] == "DELETED":
                    return

    watcher = asyncio.create_task(consume())
    await client.create("configmaps", configmap("w", ns))
    await client.patch("configmaps", "w", {"data": {"k": "v"}}, namespace=ns)
    await client.delete("configmaps", "w", namespace=ns)
    await asyncio.wait_for(watcher, 10)
    assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


# -- Informer -----------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.adds: list[str] = []
        self.updates: list[str] = []
        self.deletes: list[str] = []

    def attach(self, informer: Informer) -> None:
        informer.add_handler(lambda o: self.adds.append(o["metadata"]["name"]),
                             lambda old, new: self.updates.append(new["metadata"]["name"]),
                             lambda o: self.deletes.append(o["metadata"]["name"]))


async def test_informer_add_update_delete_and_node_index(client: Client, ns: str):
    await client.create("pods", pod("pre", ns, node="n1"))
    inf = Informer(client, "pods", namespace=ns, indexers={"node": by_node})
    rec = Recorder()
    rec.attach(inf)
    async with running(inf):
        await inf.wait_synced(10)
        assert inf.has_synced and rec.adds == ["pre"]
        await client.create("pods", pod("a", ns, node="n2"))
        await client.create("pods", pod("b", ns))
        await until(lambda: len(inf.cache) == 3)
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b", "namespace": ns},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}}
        await client.create("pods", binding, namespace=ns, subresource="binding", name="b")
        await until(lambda: "b" in rec.updates)
        assert sorted(p["metadata"]["name"] for p in inf.cache.by_index("node", "n1")) == ["b", "pre"]
        await client.delete("pods", "pre", namespace=ns, grace_period_seconds=0)
        await until(lambda: "pre" in rec.deletes)
        assert [p["metadata"]["name"] for p in inf.cache.by_index("node", "n1")] == ["b"]
        assert sorted(inf.cache.keys()) == [f"{ns}/a", f"{ns}/b"]
        assert rec.adds == ["pre", "a", "b"]


@pytest.mark.parametrize("compact_while_away", [False, True], ids=["resume", "gone-relist"])
async def test_informer_survives_apiserver_kill_and_restart(compact_while_away: bool):
    """SIGKILL the API server; while the informer is cut off, another server
    process on the same data dir changes things (and, in gone-relist, compacts
    the informer's resourceVersion away); then the server comes back on the
    original port. The informer must end with the right cache and the
    handlers must have seen every change, the deletion included."""
    tmp = Path(tempfile.mkdtemp(prefix="kubepy-client-restart-"))
    srv = start_apiserver(tmp)
    interim = None
    lists = 0
    try:
        async with Client(ClientConfig.from_kubeconfig(srv.kubeconfig)) as c:
            real_list_all = c.list_all

            async def counting_list_all(*a, **kw):
                nonlocal lists
                lists += 1
                return await real_list_all(*a, **kw)

            c.list_all = counting_list_all  # type: ignore[method-assign]
            for name in ("keep", "change", "remove"):
                await c.create("configmaps", configmap(name, "default", v="0"))
            inf = Informer(c, "configmaps", namespace="default")
            rec = Recorder()
            rec.attach(inf)
            async with running(inf) as task:
                await inf.wait_synced(10)
                old_rv = inf.resource_version
                srv.kill9()

                extra = ["--etcd-compaction-interval", "1s"] if compact_while_away else []
                # Off the loop thread, so the informer keeps retrying meanwhile.
                interim = await asyncio.to_thread(start_apiserver, tmp, extra=extra)
                async with Client(ClientConfig.from_kubeconfig(interim.kubeconfig)) as c2:
                    await c2.delete("configmaps", "remove", namespace="default")
                    await c2.patch("configmaps", "change", {"data": {"v": "1"}}, namespace="default")
                    await c2.create("configmaps", configmap("new", "default"))
                    if compact_while_away:
                        await asyncio.sleep(2.5)  # two compaction ticks: old_rv's successors are gone
                        with pytest.raises(GoneError):
                            events = c2.watch("configmaps", namespace="default", resource_version=old_rv)
                            async with contextlib.aclosing(events):
                                async for _ in events:
                                    pass
                await asyncio.to_thread(stop_apiserver, interim)
                assert not task.done()

                srv = await asyncio.to_thread(start_apiserver, tmp, port=srv.port)
                await until(lambda: "remove" in rec.deletes and "new" in rec.adds and "change" in rec.updates, 20)
                assert sorted(inf.cache.keys()) == ["default/change", "default/keep", "default/new"]
                assert inf.cache.get("default/change")["data"] == {"v": "1"}
                # and it is watching again
                await c.create("configmaps", configmap("after", "default"))
                await until(lambda: "after" in rec.adds)
        if compact_while_away:
            assert lists >= 2, "a 410 must make the informer re-list"
        else:
            assert lists == 1, "history was still there: the watch should just resume"
    finally:
        for s in (interim, srv):
            if s is not None:
                stop_apiserver(s)
        shutil.rmtree(tmp, ignore_errors=True)


# -- EventRecorder ------------------------------------------------------------
async def test_event_recorder_aggregates_repeats(client: Client, ns: str):
    target = await client.create("pods", pod("ev", ns))
    rec = EventRecorder(client, component="test-component", host="host-1")
    rec.event(target, "Normal", "Scheduled", "assigned to n1")
    rec.event(target, "Normal", "Scheduled", "assigned to n1")
    rec.event(target, "Warning", "Failed", "something else")
    rec.event({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "u"}}, "Normal", "Ready", "ok")
    await rec.flush()

    events = (await client.list("events", namespace=ns))["items"]
    by_reason = {e["reason"]: e for e in events}
    assert sorted(by_reason) == ["Failed", "Scheduled"]
    sched = by_reason["Scheduled"]
    assert sched["count"] == 2 and sched["type"] == "Normal"
    assert sched["metadata"]["name"].startswith("ev.")
    assert sched["involvedObject"]["uid"] == target["metadata"]["uid"]
    assert sched["involvedObject"]["kind"] == "Pod" and sched["involvedObject"]["namespace"] == ns
    assert sched["source"] == {"component": "test-component", "host": "host-1"}
    assert sched["reportingComponent"] == "test-component"
    assert by_reason["Failed"]["count"] == 1
    node_events = (await client.list("events", namespace="default", field_selector="involvedObject.name=n1"))["items"]
    assert [e["reason"] for e in node_events] == ["Ready"]


async def test_event_recorder_never_raises(client: Client):
    rec = EventRecorder(client, component="t")
    rec.event({"kind": "Pod", "metadata": {"name": "x", "namespace": "no-such-namespace-xyz"}}, "Normal", "R", "m")
    await rec.flush()  # the write failed; logged, not raised
