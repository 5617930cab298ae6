"""The store contract (kubepy.store.base), checked against every backend.

Each test runs once per backend through the ``store`` fixture; the SQLite-only
tests at the end cover durability and reopening, which only the embedded
backend owns.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from typing import AsyncIterator

import pytest

import kubepy
from kubepy.store import (
    CompactedError,
    ConflictError,
    Event,
    KeyExistsError,
    KeyNotFoundError,
    Store,
    StoreUnavailableError,
)
from kubepy.store.etcd import EtcdStore
from kubepy.store.sqlite import SQLiteStore

WAIT = 10.0  # seconds a watch may take to deliver what a test expects


async def take(events: AsyncIterator[Event], n: int) -> list[Event]:
    """The next ``n`` events, failing rather than hanging."""
    if n == 0:
        return []

    async def collect() -> list[Event]:
        out = []
        async for event in events:
            out.append(event)
            if len(out) == n:
                break
        return out

    return await asyncio.wait_for(collect(), WAIT)


# ------------------------------------------------------------------ key/value


async def test_get_missing(store: Store, prefix: str) -> None:
    assert await store.get(prefix + "nope") is None


async def test_create_then_get(store: Store, prefix: str) -> None:
    kv = await store.create(prefix + "k", b"v1")
    assert kv.key == prefix + "k"
    assert kv.value == b"v1"
    assert kv.create_revision == kv.mod_revision > 0
    assert await store.get(prefix + "k") == kv


async def test_empty_and_binary_values(store: Store, prefix: str) -> None:
    await store.create(prefix + "empty", b"")
    await store.create(prefix + "bin", bytes(range(256)))
    assert (await store.get(prefix + "empty")).value == b""
    assert (await store.get(prefix + "bin")).value == bytes(range(256))


async def test_create_twice_fails(store: Store, prefix: str) -> None:
    first = await store.create(prefix + "k", b"v1")
    with pytest.raises(KeyExistsError):
        await store.create(prefix + "k", b"v2")
    assert await store.get(prefix + "k") == first


async def test_update_with_current_revision(store: Store, prefix: str) -> None:
    created = await store.create(prefix + "k", b"v1")
    updated = await store.update(prefix + "k", b"v2", revision=created.mod_revision)
    assert updated.value == b"v2"
    assert updated.create_revision == created.create_revision
    assert updated.mod_revision > created.mod_revision
    assert await store.get(prefix + "k") == updated


async def test_update_with_stale_revision_carries_current(store: Store, prefix: str) -> None:
    created = await store.create(prefix + "k", b"v1")
    updated = await store.update(prefix + "k", b"v2", revision=created.mod_revision)
    with pytest.raises(ConflictError) as caught:
        await store.update(prefix + "k", b"v3", revision=created.mod_revision)
    assert caught.value.current == updated
    assert await store.get(prefix + "k") == updated


async def test_update_missing(store: Store, prefix: str) -> None:
    with pytest.raises(KeyNotFoundError):
        await store.update(prefix + "nope", b"v", revision=1)
    # Revision 0 is what a missing key "has" in etcd; it must not create one.
    with pytest.raises(KeyNotFoundError):
        await store.update(prefix + "nope", b"v", revision=0)
    assert await store.get(prefix + "nope") is None


async def test_delete_missing(store: Store, prefix: str) -> None:
    with pytest.raises(KeyNotFoundError):
        await store.delete(prefix + "nope")
    with pytest.raises(KeyNotFoundError):
        await store.delete(prefix + "nope", revision=0)


async def test_delete_guarded(store: Store, prefix: str) -> None:
    created = await store.create(prefix + "k", b"v1")
    updated = await store.update(prefix + "k", b"v2", revision=created.mod_revision)
    with pytest.raises(ConflictError) as caught:
        await store.delete(prefix + "k", revision=created.mod_revision)
    assert caught.value.current == updated

    deleted = await store.delete(prefix + "k", revision=updated.mod_revision)
    assert deleted.key == prefix + "k"
    assert deleted.value == b"v2"
    assert deleted.create_revision == created.create_revision
    assert deleted.mod_revision > updated.mod_revision
    assert await store.get(prefix + "k") is None
    with pytest.raises(KeyNotFoundError):
        await store.delete(prefix + "k")


async def test_unguarded_delete_then_recreate(store: Store, prefix: str) -> None:
    first = await store.create(prefix + "k", b"v1")
    deleted = await store.delete(prefix + "k")
    assert deleted.value == b"v1"
    again = await store.create(prefix + "k", b"v2")
    assert again.create_revision == again.mod_revision > deleted.mod_revision > first.mod_revision


async def test_revisions_strictly_increase(store: Store, prefix: str) -> None:
    before = await store.current_revision()
    seen = [before]
    for i in range(5):
        kv = await store.create(f"{prefix}{i}", b"x")
        seen.append(kv.mod_revision)
        kv = await store.update(kv.key, b"y", revision=kv.mod_revision)
        seen.append(kv.mod_revision)
        seen.append((await store.delete(kv.key)).mod_revision)
    assert seen == sorted(set(seen))
    assert await store.current_revision() == seen[-1]


async def test_failed_writes_do_not_bump_revision(store: Store, prefix: str) -> None:
    kv = await store.create(prefix + "k", b"v")
    rev = await store.current_revision()
    with pytest.raises(KeyExistsError):
        await store.create(prefix + "k", b"v")
    with pytest.raises(ConflictError):
        await store.update(prefix + "k", b"v", revision=kv.mod_revision - 1)
    with pytest.raises(KeyNotFoundError):
        await store.delete(prefix + "nope")
    assert await store.current_revision() == rev


# ---------------------------------------------------------------------- range


async def test_range_sorted_and_prefix_isolated(store: Store, prefix: str) -> None:
    for name in ["a/3", "a/1", "ab/1", "a", "a/2", "b/1", "a/sub/1"]:
        await store.create(prefix + name, name.encode())
    result = await store.range(prefix + "a/")
    assert [kv.key for kv in result.kvs] == [prefix + k for k in ["a/1", "a/2", "a/3", "a/sub/1"]]
    assert [kv.value for kv in result.kvs] == [b"a/1", b"a/2", b"a/3", b"a/sub/1"]
    assert result.more is False
    assert result.revision == await store.current_revision()
    assert (await store.range(prefix + "zzz/")).kvs == []


async def test_range_omits_deleted(store: Store, prefix: str) -> None:
    await store.create(prefix + "1", b"")
    await store.create(prefix + "2", b"")
    await store.delete(prefix + "1")
    assert [kv.key for kv in (await store.range(prefix)).kvs] == [prefix + "2"]


async def test_range_paging(store: Store, prefix: str) -> None:
    keys = [f"{prefix}{i:02d}" for i in range(7)]
    for key in reversed(keys):
        await store.create(key, b"x")
    await store.create(prefix[:-1] + "0/outside", b"x")  # sorts right after the prefix range
    pages, start, rev = [], None, 0
    while True:
        page = await store.range(prefix, start=start, limit=3, revision=rev)
        rev = page.revision  # later pages read the first page's snapshot
        pages.append([kv.key for kv in page.kvs])
        if not page.more:
            break
        start = page.kvs[-1].key + "\x00"
    assert pages == [keys[0:3], keys[3:6], keys[6:7]]
    exact = await store.range(prefix, limit=7)
    assert len(exact.kvs) == 7 and exact.more is False


async def test_range_start_before_prefix_is_clamped(store: Store, prefix: str) -> None:
    await store.create(prefix + "x/1", b"")
    await store.create(prefix + "w", b"")
    result = await store.range(prefix + "x/", start=prefix)
    assert [kv.key for kv in result.kvs] == [prefix + "x/1"]


async def test_range_at_past_revision(store: Store, prefix: str) -> None:
    a = await store.create(prefix + "a", b"a1")
    b = await store.create(prefix + "b", b"b1")
    snapshot = b.mod_revision
    await store.update(prefix + "a", b"a2", revision=a.mod_revision)
    await store.delete(prefix + "b")
    await store.create(prefix + "c", b"c1")

    past = await store.range(prefix, revision=snapshot)
    assert past.kvs == [a, b]
    assert past.revision == snapshot
    now = await store.range(prefix)
    assert [(kv.key, kv.value) for kv in now.kvs] == [(prefix + "a", b"a2"), (prefix + "c", b"c1")]
    before_b = await store.range(prefix, revision=a.mod_revision)
    assert before_b.kvs == [a]


# ---------------------------------------------------------------------- watch


async def test_watch_replays_history_then_live(store: Store, prefix: str) -> None:
    created = await store.create(prefix + "k", b"v1")
    updated = await store.update(prefix + "k", b"v2", revision=created.mod_revision)
    events = store.watch(prefix, start_revision=created.mod_revision)
    try:
        history = await take(events, 2)
        assert [(e.type, e.kv, e.prev) for e in history] == [
            ("PUT", created, None),
            ("PUT", updated, created),
        ]
        other = await store.create(prefix + "other", b"o")
        deleted = await store.delete(prefix + "k")
        live = await take(events, 2)
        assert [(e.type, e.kv, e.prev) for e in live] == [
            ("PUT", other, None),
            ("DELETE", deleted, updated),
        ]
    finally:
        await events.aclose()


async def test_watch_from_middle_of_history(store: Store, prefix: str) -> None:
    kvs = [await store.create(f"{prefix}{i}", b"x") for i in range(5)]
    events = store.watch(prefix, start_revision=kvs[2].mod_revision)
    try:
        got = await take(events, 3)
        assert [e.kv for e in got] == kvs[2:]
    finally:
        await events.aclose()


async def test_watch_delete_event(store: Store, prefix: str) -> None:
    created = await store.create(prefix + "k", b"gone")
    deleted = await store.delete(prefix + "k", revision=created.mod_revision)
    events = store.watch(prefix, start_revision=deleted.mod_revision)
    try:
        (event,) = await take(events, 1)
    finally:
        await events.aclose()
    assert event.type == "DELETE"
    assert event.kv.key == prefix + "k"
    assert event.kv.value == b"gone"
    assert event.kv.mod_revision == deleted.mod_revision
    assert event.prev == created


async def test_watch_prefix_isolation(store: Store, prefix: str) -> None:
    start = await store.current_revision() + 1
    await store.create(prefix + "ab/x", b"")
    mine = await store.create(prefix + "a/x", b"")
    await store.create(prefix + "b/x", b"")
    last = await store.create(prefix + "a/y", b"")
    events = store.watch(prefix + "a/", start_revision=start)
    try:
        got = await take(events, 2)
    finally:
        await events.aclose()
    assert [e.kv for e in got] == [mine, last]


async def test_watch_closes_cleanly(store: Store, prefix: str) -> None:
    start = await store.current_revision() + 1
    events = store.watch(prefix, start_revision=start)
    await store.create(prefix + "k", b"")
    await take(events, 1)
    await events.aclose()
    # The store keeps working and a fresh watch sees the same history.
    await store.create(prefix + "k2", b"")
    again = store.watch(prefix, start_revision=start)
    try:
        assert len(await take(again, 2)) == 2
    finally:
        await again.aclose()


# ----------------------------------------------------------------- compaction


async def test_compaction(store: Store, prefix: str) -> None:
    a = await store.create(prefix + "a", b"a1")
    a = await store.update(prefix + "a", b"a2", revision=a.mod_revision)
    b = await store.create(prefix + "b", b"b1")
    await store.delete(prefix + "b")
    c = await store.create(prefix + "c", b"c1")
    compact_at = c.mod_revision
    after = await store.update(prefix + "c", b"c2", revision=c.mod_revision)

    await store.compact(compact_at)

    # Current values survive, deleted keys stay deleted.
    assert [(kv.key, kv.value) for kv in (await store.range(prefix)).kvs] == [
        (prefix + "a", b"a2"),
        (prefix + "c", b"c2"),
    ]
    assert await store.get(prefix + "a") == a
    # The compaction revision itself is still readable, older ones are not.
    assert (await store.range(prefix, revision=compact_at)).kvs == [a, c]
    with pytest.raises(CompactedError) as caught:
        await store.range(prefix, revision=b.mod_revision)
    assert caught.value.compact_revision >= compact_at

    # Watching at or below the compaction revision fails on first iteration.
    for start in (b.mod_revision, compact_at):
        events = store.watch(prefix, start_revision=start)
        with pytest.raises(CompactedError) as caught:
            await take(events, 1)
        assert caught.value.compact_revision >= compact_at
    # Right after it, history is complete.
    events = store.watch(prefix, start_revision=compact_at + 1)
    try:
        (event,) = await take(events, 1)
        assert (event.type, event.kv, event.prev) == ("PUT", after, c)
    finally:
        await events.aclose()

    # Compacting again at or below is harmless; writes go on.
    await store.compact(compact_at)
    later = await store.create(prefix + "d", b"")
    assert later.mod_revision > after.mod_revision


# ---------------------------------------------------------------- concurrency


async def test_concurrent_creates_one_wins(store: Store, prefix: str) -> None:
    results = await asyncio.gather(
        *(store.create(prefix + "k", str(i).encode()) for i in range(20)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(e, KeyExistsError) for e in losers)
    assert await store.get(prefix + "k") == winners[0]


async def test_concurrent_updates_one_wins(store: Store, prefix: str) -> None:
    kv = await store.create(prefix + "k", b"0")
    results = await asyncio.gather(
        *(store.update(prefix + "k", str(i).encode(), revision=kv.mod_revision) for i in range(20)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, ConflictError) for r in results if r is not winners[0])


async def test_concurrent_writers_and_watcher(store: Store, prefix: str) -> None:
    """Every write is seen exactly once, in revision order, with the right
    prev, even while the watch is switching from history to live."""
    start = await store.current_revision() + 1
    writers, per_writer = 8, 15
    events = store.watch(prefix, start_revision=start)

    async def writer(w: int) -> list[int]:
        revs = []
        for i in range(per_writer):
            kv = await store.create(f"{prefix}{w}/{i}", b"c")
            revs.append(kv.mod_revision)
            if i % 3 == 0:
                kv = await store.update(kv.key, b"u", revision=kv.mod_revision)
                revs.append(kv.mod_revision)
            if i % 5 == 0:
                revs.append((await store.delete(kv.key)).mod_revision)
        return revs

    expected = writers * (per_writer + len(range(0, per_writer, 3)) + len(range(0, per_writer, 5)))
    try:
        # The watcher runs while the writes are flowing.
        watching = asyncio.create_task(take(events, expected))
        await asyncio.sleep(0)
        written = sorted(r for revs in await asyncio.gather(*(writer(w) for w in range(writers))) for r in revs)
        seen = await watching
    finally:
        await events.aclose()
    assert len(written) == expected
    revisions = [e.kv.mod_revision for e in seen]
    assert revisions == written  # all of them, once each, ascending
    for e in seen:
        if e.type == "PUT" and e.kv.create_revision != e.kv.mod_revision:
            assert e.prev is not None and e.prev.mod_revision < e.kv.mod_revision
        if e.type == "DELETE":
            assert e.prev is not None


async def test_watch_starting_during_writes(store: Store, prefix: str) -> None:
    """A watch from a past revision opened while writes land must splice
    history and live events without a gap or a repeat."""
    start = await store.current_revision() + 1
    stop = asyncio.Event()
    written: list[int] = []

    async def write() -> None:
        i = 0
        while not stop.is_set():
            written.append((await store.create(f"{prefix}{i:05d}", b"")).mod_revision)
            i += 1

    task = asyncio.create_task(write())
    try:
        while len(written) < 10:
            await asyncio.sleep(0.005)
        events = store.watch(prefix, start_revision=start)
        try:
            first = await take(events, 20)
            stop.set()
            await task
            rest = await take(events, len(written) - 20)
        finally:
            await events.aclose()
    finally:
        stop.set()
        await task
    assert [e.kv.mod_revision for e in first + rest] == written


# ---------------------------------------------------------------- etcd only


def _dead_endpoint() -> str:
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.etcd
@pytest.mark.slow
async def test_etcd_fails_over_to_a_live_endpoint(etcd_endpoint: str, prefix: str) -> None:
    store = EtcdStore([_dead_endpoint(), etcd_endpoint])
    try:
        kv = await store.create(prefix + "k", b"v")  # a write whose connection never opened may move on
        assert await store.get(prefix + "k") == kv
        events = store.watch(prefix, start_revision=kv.mod_revision)
        try:
            assert [e.kv for e in await take(events, 1)] == [kv]
        finally:
            await events.aclose()
    finally:
        await store.close()


async def test_etcd_unreachable_is_unavailable() -> None:
    store = EtcdStore([_dead_endpoint(), _dead_endpoint()])
    try:
        with pytest.raises(StoreUnavailableError):
            await store.get("/k")
        with pytest.raises(StoreUnavailableError):
            await store.create("/k", b"")
        with pytest.raises(StoreUnavailableError):
            await take(store.watch("/", start_revision=1), 1)
    finally:
        await store.close()


# ------------------------------------------------------------- SQLite only


async def test_sqlite_close_ends_watches_and_refuses_calls(tmp_path) -> None:
    store = SQLiteStore(str(tmp_path / "state.db"))
    kv = await store.create("/k", b"")
    events = store.watch("/", start_revision=kv.mod_revision)
    await take(events, 1)
    pending = asyncio.create_task(take(events, 1))
    await asyncio.sleep(0.01)
    await store.close()
    assert await pending == []  # the watch ended cleanly
    with pytest.raises(StoreUnavailableError):
        await store.get("/k")
    with pytest.raises(StoreUnavailableError):
        await store.create("/x", b"")



async def test_sqlite_reopen_keeps_data_and_revision(tmp_path) -> None:
    path = str(tmp_path / "state.db")
    store = SQLiteStore(path)
    kv = await store.create("/k", b"v")
    gone = await store.create("/gone", b"")
    tomb = await store.delete("/gone", revision=gone.mod_revision)
    # Compaction removes the newest row (a tombstone): its revision must
    # still never be reused.
    await store.compact(tomb.mod_revision)
    await store.close()

    store = SQLiteStore(path)
    try:
        assert await store.get("/k") == kv
        assert await store.get("/gone") is None
        assert await store.current_revision() == tomb.mod_revision
        nxt = await store.create("/next", b"")
        assert nxt.mod_revision == tomb.mod_revision + 1
        with pytest.raises(CompactedError):
            await store.range("/", revision=kv.mod_revision)
    finally:
        await store.close()


_WRITER = """
import asyncio, sys
from kubepy.store.sqlite import SQLiteStore

async def worker(store, w):
    i = 0
    while True:
        kv = await store.create(f"/durable/{w}/{i:08d}", f"{w}-{i}".encode())
        # Reported only after create() returned, i.e. after the commit.
        sys.stdout.write(f"{kv.key} {kv.mod_revision}\\n")
        sys.stdout.flush()
        i += 1

async def main():
    store = SQLiteStore(sys.argv[1])
    await asyncio.gather(*(worker(store, w) for w in range(4)))

asyncio.run(main())
"""


@pytest.mark.slow
async def test_sqlite_kill9_loses_no_committed_write(tmp_path) -> None:
    path = str(tmp_path / "state.db")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(kubepy.__file__)))
    env = {**os.environ, "PYTHONPATH": repo}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, path], stdout=subprocess.PIPE, env=env, text=True
    )
    reported: list[tuple[str, int]] = []
    try:
        while len(reported) < 400:
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), WAIT)
            assert line, f"writer died early with {proc.poll()}"
            key, rev = line.split()
            reported.append((key, int(rev)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WAIT)
        # Lines already in the pipe were reported before the kill, too.
        # (only whole lines: an unterminated tail was never fully reported)
        for line in proc.stdout.read().split("\n")[:-1]:
            key, rev = line.split()
            reported.append((key, int(rev)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    store = SQLiteStore(path)
    try:
        for key, rev in reported:
            kv = await store.get(key)
            assert kv is not None, f"{key} was reported committed but is missing"
            assert kv.mod_revision == rev
        assert await store.current_revision() >= max(rev for _, rev in reported)
    finally:
        await store.close()
