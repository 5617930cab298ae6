"""Informer against the in-memory fake API: deltas on re-list after 410,
resume from the last resourceVersion after a transport error, handler
errors contained, periodic resync."""

from __future__ import annotations

import asyncio

from kubepy.client import GoneError, Informer, TransportError, by_node
from kubepy.testing.fakeapi import Action, FakeAPI
from tests.client.informers import running, until


def pod(name: str, rv: int, node: str | None = None, uid: str | None = None) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv), "uid": uid or f"uid-{name}"},
            "spec": {"nodeName": node} if node else {}}


class Recorder:
    def __init__(self) -> None:
        self.log: list[tuple] = []

    def add(self, obj: dict) -> None:
        self.log.append(("add", obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))

    def update(self, old: dict, new: dict) -> None:
        self.log.append(("update", new["metadata"]["name"], new["metadata"]["resourceVersion"]))

    def delete(self, obj: dict) -> None:
        self.log.append(("delete", obj["metadata"]["name"]))


def watch_rvs(api: FakeAPI) -> list[str]:
    return [a.options["resource_version"] for a in api.calls("watch")]


def list_calls(api: FakeAPI) -> int:
    return len(api.calls("list"))


async def test_relist_after_gone_emits_deltas():
    api = FakeAPI()
    for p in (pod("a", 1, "n1"), pod("b", 2), pod("c", 3)):
        api.seed("pods", p)
    rec = Recorder()
    inf = Informer(api, "pods", indexers={"node": by_node})
    inf.add_handler(rec.add, rec.update, rec.delete)
    async with running(inf):
        await inf.wait_synced(2)
        await until(lambda: api.open_watches() == 1)
        await api.create("pods", pod("e", 0))
        await until(lambda: len(rec.log) == 4)
        # The watch is gone (history compacted); while it was, a was deleted,
        # b left alone, c modified, d added, and e deleted and re-created under
        # one name (new uid). No await between: the informer sees none of it live.
        api.compact()
        api.stop_watches(GoneError(410, "Expired", "too old resource version", None))
        await api.delete("pods", "a", namespace="ns", grace_period_seconds=0)  # bound: no kubelet to wait for
        await api.delete("pods", "e", namespace="ns")
        await api.patch("pods", "c", {"metadata": {"labels": {"v": "2"}}}, namespace="ns")
        await api.create("pods", pod("d", 0, "n1"))
        await api.create("pods", pod("e", 0, uid="new"))
        await until(lambda: list_calls(api) == 2 and len(watch_rvs(api)) == 2)
    assert rec.log == [
        ("add", "a", "1"), ("add", "b", "2"), ("add", "c", "3"),
        ("add", "e", "4"),
        ("update", "c", "7"), ("add", "d", "8"), ("delete", "e"), ("add", "e", "9"), ("delete", "a"),
    ]
    assert sorted(inf.cache.keys()) == ["ns/b", "ns/c", "ns/d", "ns/e"]
    assert [p["metadata"]["name"] for p in inf.cache.by_index("node", "n1")] == ["d"]
    assert watch_rvs(api) == ["3", "9"]


async def test_transport_error_resumes_watch_from_last_rv_with_bookmarks():
    api = FakeAPI(start_revision=4)
    api.seed("pods", pod("a", 5))
    rec = Recorder()
    inf = Informer(api, "pods")
    inf.add_handler(rec.add, rec.update, rec.delete)
    async with running(inf):
        await until(lambda: api.open_watches() == 1)
        await api.patch("pods", "a", {"metadata": {"labels": {"v": "6"}}}, namespace="ns")
        for n in range(4):  # writes elsewhere move the revision to 10
            await api.create("configmaps", {"metadata": {"name": f"cm{n}", "namespace": "ns"}})
        api.bookmark()
        await until(lambda: len(rec.log) == 2)
        api.stop_watches(TransportError("connection reset"))
        await api.delete("pods", "a", namespace="ns")
        await until(lambda: len(rec.log) == 3 and api.open_watches() == 1)
        api.stop_watches()  # the server ended a stream (timeout): just watch again
        await until(lambda: len(watch_rvs(api)) == 3 and api.open_watches() == 1)
        api.stop_watches()
        await until(lambda: len(watch_rvs(api)) == 4)
    assert list_calls(api) == 1
    assert watch_rvs(api) == ["5", "10", "11", "11"]
    assert rec.log == [("add", "a", "5"), ("update", "a", "6"), ("delete", "a")]
    assert len(inf.cache) == 0


async def test_handler_exception_does_not_stop_informer():
    api = FakeAPI()
    api.seed("pods", pod("a", 1))
    seen = []

    def bad(obj: dict) -> None:
        raise RuntimeError("handler bug")

    inf = Informer(api, "pods")
    inf.add_handler(on_add=bad)
    inf.add_handler(on_add=lambda o: seen.append(o["metadata"]["name"]))
    async with running(inf) as task:
        await until(lambda: api.open_watches() == 1)
        await api.create("pods", pod("b", 2))
        await until(lambda: seen == ["a", "b"])
        assert not task.done()


async def test_resync_calls_update_with_same_object():
    api = FakeAPI()
    api.seed("pods", pod("a", 1))
    api.seed("pods", pod("b", 2))
    updates = []
    inf = Informer(api, "pods", resync_period=0.02)
    inf.add_handler(on_update=lambda old, new: updates.append((old is new, new["metadata"]["name"])))
    async with running(inf):
        await until(lambda: len(updates) >= 4)
    assert set(updates) == {(True, "a"), (True, "b")}


async def test_persistent_gone_backs_off_instead_of_spinning():
    api = FakeAPI()
    api.seed("pods", pod("a", 1))

    def gone(action: Action) -> None:
        raise GoneError(410, "Expired", "too old", None)

    api.react("watch", "pods", gone)
    inf = Informer(api, "pods")
    async with running(inf):
        await asyncio.sleep(0.5)
    assert 2 <= list_calls(api) <= 4  # 0.2s, then 0.4s between re-lists
