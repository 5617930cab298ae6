"""Informer against a scripted fake client: deltas on re-list after 410,
resume from the last resourceVersion after a transport error, handler
errors contained, periodic resync."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from kubepy.client import GoneError, Informer, TransportError, by_node


def pod(name: str, rv: int, node: str | None = None, uid: str | None = None) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv), "uid": uid or f"uid-{name}"},
            "spec": {"nodeName": node} if node else {}}


class FakeClient:
    """Each list_all / watch call consumes the next scripted answer."""

    def __init__(self, lists: list[tuple[list[dict], str]], watches: list[list[Any]]) -> None:
        self.lists = lists
        self.watches = watches
        self.watch_rvs: list[str] = []
        self.list_calls = 0

    async def list_all(self, resource: str, **kw: Any) -> tuple[list[dict], str]:
        self.list_calls += 1
        return self.lists.pop(0)

    async def watch(self, resource: str, *, resource_version: str, **kw: Any):
        self.watch_rvs.append(resource_version)
        script = self.watches.pop(0) if self.watches else None
        if script is None:
            await asyncio.Event().wait()  # a quiet stream, until cancelled
        for item in script:
            if isinstance(item, Exception):
                raise item
            yield item


class Recorder:
    def __init__(self) -> None:
        self.log: list[tuple] = []

    def add(self, obj: dict) -> None:
        self.log.append(("add", obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))

    def update(self, old: dict, new: dict) -> None:
        self.log.append(("update", new["metadata"]["name"], new["metadata"]["resourceVersion"]))

    def delete(self, obj: dict) -> None:
        self.log.append(("delete", obj["metadata"]["name"]))


@contextlib.asynccontextmanager
async def running(informer: Informer):
    task = asyncio.create_task(informer.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(cond, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


async def test_relist_after_gone_emits_deltas():
    gone = GoneError(410, "Expired", "too old resource version", None)
    client = FakeClient(
        lists=[([pod("a", 1, "n1"), pod("b", 2), pod("c", 3)], "3"),
               # while the watch was gone: a deleted, b unchanged, c modified, d added,
               # and e deleted+re-created under one name (new uid)
               ([pod("b", 2), pod("c", 7), pod("d", 8, "n1"), pod("e", 9, uid="new")], "9")],
        watches=[[{"type": "ADDED", "object": pod("e", 4)}, gone]],
    )
    rec = Recorder()
    inf = Informer(client, "pods", indexers={"node": by_node})
    inf.add_handler(rec.add, rec.update, rec.delete)
    async with running(inf):
        await inf.wait_synced(2)
        await until(lambda: client.list_calls == 2 and len(client.watch_rvs) == 2)
    assert rec.log == [
        ("add", "a", "1"), ("add", "b", "2"), ("add", "c", "3"),
        ("add", "e", "4"),
        ("update", "c", "7"), ("add", "d", "8"), ("delete", "e"), ("add", "e", "9"), ("delete", "a"),
    ]
    assert sorted(inf.cache.keys()) == ["ns/b", "ns/c", "ns/d", "ns/e"]
    assert [p["metadata"]["name"] for p in inf.cache.by_index("node", "n1")] == ["d"]
    assert client.watch_rvs == ["3", "9"]


async def test_transport_error_resumes_watch_from_last_rv_with_bookmarks():
    client = FakeClient(
        lists=[([pod("a", 5)], "5")],
        watches=[[{"type": "MODIFIED", "object": pod("a", 6)},
                  {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "10"}}},
                  TransportError("connection reset")],
                 [{"type": "DELETED", "object": pod("a", 11)}],
                 []],  # the server ended a stream (timeout): just watch again
    )
    rec = Recorder()
    inf = Informer(client, "pods")
    inf.add_handler(rec.add, rec.update, rec.delete)
    async with running(inf):
        await until(lambda: len(client.watch_rvs) == 4)
    assert client.list_calls == 1
    assert client.watch_rvs == ["5", "10", "11", "11"]
    assert rec.log == [("add", "a", "5"), ("update", "a", "6"), ("delete", "a")]
    assert len(inf.cache) == 0


async def test_handler_exception_does_not_stop_informer():
    client = FakeClient(lists=[([pod("a", 1)], "1")], watches=[[{"type": "ADDED", "object": pod("b", 2)}]])
    seen = []

    def bad(obj: dict) -> None:
        raise RuntimeError("handler bug")

    inf = Informer(client, "pods")
    inf.add_handler(on_add=bad)
    inf.add_handler(on_add=lambda o: seen.append(o["metadata"]["name"]))
    async with running(inf) as task:
        await until(lambda: seen == ["a", "b"])
        assert not task.done()


async def test_resync_calls_update_with_same_object():
    client = FakeClient(lists=[([pod("a", 1), pod("b", 2)], "2")], watches=[])
    updates = []
    inf = Informer(client, "pods", resync_period=0.02)
    inf.add_handler(on_update=lambda old, new: updates.append((old is new, new["metadata"]["name"])))
    async with running(inf):
        await until(lambda: len(updates) >= 4)
    assert set(updates) == {(True, "a"), (True, "b")}


async def test_persistent_gone_backs_off_instead_of_spinning():
    gone = GoneError(410, "Expired", "too old", None)
    client = FakeClient(lists=[([pod("a", 1)], "1")] * 50, watches=[[gone]] * 50)
    inf = Informer(client, "pods")
    async with running(inf):
        await asyncio.sleep(0.5)
    assert 2 <= client.list_calls <= 4  # 0.2s, then 0.4s between re-lists
