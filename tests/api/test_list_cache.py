"""Lists served from the watch cache's memory: the same answers as the store's, and never stale.

A kind's watch cache reads its state from the store at its first list and keeps it by its events
(``WatchCache.snapshot``); ``Storage.list`` serves from it once it has applied the newest revision
the store wrote under the listed prefix (``Store.prefix_revisions``), so a client always reads its
own writes, and falls back to the store whenever the cache can't promise that.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from kubepy.api import objects
from kubepy.api.storage import Storage
from kubepy.api.watchcache import WatchCache
from kubepy.kinds import by_plural
from kubepy.store.sqlite import SQLiteStore

PODS = by_plural("pods")


def pod(name: str, ns: str = "ns1", **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def put(store: SQLiteStore, obj: dict):
    m = obj["metadata"]
    return store.create(f"{PODS.prefix}{m['namespace']}/{m['name']}", objects.encode(obj))


async def newest(store: SQLiteStore, prefix: str) -> tuple[int]:
    """(the newest revision under ``prefix``,) for ``snapshot``'s positional argument."""
    revisions = await store.prefix_revisions(prefix)
    assert revisions is not None
    return (revisions[0],)


async def from_store(store: SQLiteStore, prefix: str) -> list[tuple[str, bytes]]:
    page = await store.range(prefix)
    return [(kv.key, objects.with_resource_version(kv.value, kv.mod_revision)) for kv in page.kvs]


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteStore(str(tmp_path / "state.db"))
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def cache(store: SQLiteStore):
    c = WatchCache(store, PODS.prefix)
    await c.start()
    await c.ready.wait()
    for _ in range(100):   # the store watch opens in the cache's task
        if c.watching:
            break
        await asyncio.sleep(0.01)
    try:
        yield c
    finally:
        await c.stop()


async def test_sqlite_knows_the_newest_write_under_each_prefix(tmp_path: Path):
    path = str(tmp_path / "state.db")
    store = SQLiteStore(path)
    try:
        a = await put(store, pod("a"))
        b = await put(store, pod("b"))
        other = await put(store, pod("c", "ns2"))
        assert await store.prefix_revisions(f"{PODS.prefix}ns1/") == (b.mod_revision, other.mod_revision)
        assert await store.prefix_revisions(f"{PODS.prefix}ns2/") == (other.mod_revision, other.mod_revision)
        assert await store.prefix_revisions(PODS.prefix) == (other.mod_revision, other.mod_revision)
        gone = await store.delete(a.key)   # a delete is a write under the prefix too
        assert await store.prefix_revisions(f"{PODS.prefix}ns1/") == (gone.mod_revision, gone.mod_revision)
        assert await store.prefix_revisions(f"{PODS.prefix}ns2/") == (other.mod_revision, gone.mod_revision)
        assert await store.prefix_revisions(f"{PODS.prefix}ns") is None   # not a "/"-ending prefix
        current = await store.current_revision()
    finally:
        await store.close()
    reopened = SQLiteStore(path)
    try:   # nothing written since opening: the revision it opened at
        assert await reopened.prefix_revisions(f"{PODS.prefix}ns2/") == (current, current)
    finally:
        await reopened.close()


async def test_a_snapshot_is_the_store_s_state_and_reads_every_write_it_follows(store, cache):
    first = [await put(store, pod(n)) for n in ("b", "a")] + [await put(store, pod("z", "ns2"))]
    ns1 = f"{PODS.prefix}ns1/"
    items, at = await cache.snapshot(ns1, *await newest(store, ns1))
    assert items == await from_store(store, ns1) and [k.rsplit("/", 1)[1] for k, _ in items] == ["a", "b"]
    assert at >= first[1].mod_revision
    assert json.loads(items[0][1])["metadata"]["resourceVersion"] == str(first[1].mod_revision)
    # Each write is in the very next snapshot: no waiting on the client's side.
    kv = await put(store, pod("c"))
    items, _ = await cache.snapshot(ns1, *await newest(store, ns1))
    assert [k for k, _ in items] == [f"{ns1}a", f"{ns1}b", f"{ns1}c"]
    updated = await store.update(kv.key, objects.encode(pod("c", app="web")), revision=kv.mod_revision)
    items, at = await cache.snapshot(ns1, *await newest(store, ns1))
    assert json.loads(dict(items)[kv.key])["metadata"]["labels"] == {"app": "web"} and at == updated.mod_revision
    await store.delete(first[1].key)
    items, _ = await cache.snapshot(ns1, *await newest(store, ns1))
    assert items == await from_store(store, ns1) and [k for k, _ in items] == [f"{ns1}b", f"{ns1}c"]
    everything, _ = await cache.snapshot(PODS.prefix, *await newest(store, PODS.prefix))
    assert everything == await from_store(store, PODS.prefix)


async def test_the_state_read_while_writes_go_on_ends_up_exactly_the_store_s(store, cache):
    kvs = [await put(store, pod(f"p{i:04d}")) for i in range(600)]

    async def writer() -> None:
        for i, kv in enumerate(kvs[:300]):
            if i % 3 == 0:
                await store.delete(kv.key)
            else:
                await store.update(kv.key, objects.encode(pod(kv.key.rsplit("/", 1)[1], n=str(i))),
                                   revision=kv.mod_revision)
            await put(store, pod(f"q{i:04d}"))

    task = asyncio.create_task(writer())
    snaps = []
    while not task.done():
        snaps.append(await cache.snapshot(PODS.prefix, *await newest(store, PODS.prefix)))
        await asyncio.sleep(0.002)   # a fresh snapshot never suspends: let the writer on
    await task
    assert all(s is not None for s in snaps) and len(snaps) > 1
    items, at = await cache.snapshot(PODS.prefix, *await newest(store, PODS.prefix))
    assert at == await store.current_revision()
    assert items == await from_store(store, PODS.prefix)
    # A snapshot taken mid-way was the store's state at its revision.
    items, at = snaps[len(snaps) // 2]
    page = await store.range(PODS.prefix, revision=at)
    assert items == [(kv.key, objects.with_resource_version(kv.value, kv.mod_revision)) for kv in page.kvs]


async def test_a_cache_that_cannot_promise_fresh_answers_defers_to_the_store(store, cache):
    await put(store, pod("a"))
    (latest,) = await newest(store, PODS.prefix)
    assert await cache.snapshot(PODS.prefix, latest + 5, timeout=0.1) is None   # not applied within the wait
    assert await cache.snapshot(PODS.prefix, latest) is not None
    cache._reset(await store.current_revision())   # fell behind compaction: the state is read again
    assert cache._state is None
    await put(store, pod("b"))
    items, _ = await cache.snapshot(PODS.prefix, *await newest(store, PODS.prefix))
    assert items == await from_store(store, PODS.prefix) and len(items) == 2
    idle = WatchCache(store, PODS.prefix)   # never started: not watching
    assert await idle.snapshot(PODS.prefix, 0) is None


async def test_storage_lists_from_the_cache_as_it_does_from_the_store(store, cache):
    for i in range(25):
        await put(store, pod(f"p{i:02d}", "ns1" if i % 5 else "ns2", app="web" if i % 2 else "db"))
    cached, direct = Storage(store), Storage(store)
    cached.list_cache = lambda res: cache if res is PODS else None
    calls = []
    real = cache.snapshot

    async def counted(*a, **kw):
        calls.append(a)
        return await real(*a, **kw)

    cache.snapshot = counted

    def web(obj: dict) -> bool:
        return obj["metadata"]["labels"].get("app") == "web"

    for kwargs in ({}, {"matches": web}, {"limit": 7}, {"limit": 4, "matches": web}):
        for ns in ("ns1", None):
            got = await cached.list(PODS, ns, raw=True, **kwargs)
            want = await direct.list(PODS, ns, raw=True, **kwargs)
            assert got == want, (ns, kwargs)
            assert await cached.list(PODS, ns, **kwargs) == await direct.list(PODS, ns, **kwargs)
            token, pages = got[2], [got[0]]
            while token:   # the next pages come from the store, at the first page's revision
                more = await cached.list(PODS, ns, continue_token=token, raw=True, **kwargs)
                pages.append(more[0])
                token = more[2]
            if "limit" in kwargs:
                everything = await direct.list(PODS, ns, raw=True, matches=kwargs.get("matches"))
                assert [i for p in pages for i in p] == everything[0]
    assert calls   # the cache answered
    # A dict the caller changes is its own: the cache's bytes stay as they were.
    items, _, _ = await cached.list(PODS, "ns1")
    items[0]["metadata"]["labels"]["app"] = "changed"
    again, _, _ = await cached.list(PODS, "ns1")
    assert again[0]["metadata"]["labels"]["app"] != "changed"


async def test_events_the_state_read_already_holds_are_not_applied_again(store):
    """The store watch can deliver events older than the state read (they were committed before it
    but not yet dispatched): those must not bring back what the read saw deleted."""
    from kubepy.api.watchcache import to_watch_event
    from kubepy.store.base import Event

    start = await store.current_revision()
    cache = WatchCache(store, PODS.prefix)   # fed by hand: no store watch of its own
    cache.last_revision, cache.complete_from, cache.watching = start, start + 1, True
    created = await put(store, pod("a"))
    deleted = await store.delete(created.key)
    items, at = await cache.snapshot(PODS.prefix, deleted.mod_revision)   # reads the state: no pod
    assert items == [] and at == deleted.mod_revision
    cache._dispatch(to_watch_event(Event("PUT", created, None)))   # the create arrives late
    items, at = await cache.snapshot(PODS.prefix, deleted.mod_revision)
    assert items == [] and at == deleted.mod_revision
    cache._dispatch(to_watch_event(Event("DELETE", deleted, created)))
    later = await put(store, pod("b"))
    cache._dispatch(to_watch_event(Event("PUT", later, None)))   # newer than the read: applied
    items, at = await cache.snapshot(PODS.prefix, later.mod_revision)
    assert [k for k, _ in items] == [later.key] and at == later.mod_revision


async def test_a_list_of_an_idle_kind_is_at_the_store_s_revision_and_can_be_watched_from(store, cache, tmp_path):
    """Writes to other kinds move the store on: the list's resourceVersion must follow, or after a
    compaction a watch from it would be 410 Gone for ever (an informer relisting in a loop)."""
    await put(store, pod("a"))
    storage = Storage(store)
    storage.list_cache = lambda res: cache if res is PODS else None
    _, first, _ = await storage.list(PODS, "ns1")
    for i in range(5):   # another kind's writes
        await store.create(f"/registry/configmaps/ns1/c{i}", objects.encode(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}", "namespace": "ns1"}}))
    current = await store.current_revision()
    items, at, _ = await storage.list(PODS, "ns1")
    assert at == current > first and [o["metadata"]["name"] for o in items] == ["a"]
    await store.compact(current)
    cache.compacted(current)
    sub = cache.subscribe(after=at, matches=lambda o: True)   # a watch from the list's revision works
    assert sub is not None
    later = await put(store, pod("b"))
    ev = await asyncio.wait_for(sub.queue.get(), 5)
    assert ev is not None and ev.type == "ADDED" and ev.revision == later.mod_revision
    sub.close()
