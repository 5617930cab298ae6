"""SQLite store backend: the embedded default for a single API server.

The database is an append-only revision log (the kine layout): every write
inserts one row into ``kv`` and that row's id *is* the store revision.  A
delete inserts a tombstone row carrying the deleted value.  The current value
of a key is its highest row unless that row is a tombstone.

Threads:

* one writer thread owns the only writing connection.  It takes queued
  writes, runs as many as are waiting in one transaction (group commit: one
  fsync for many writes) and only then resolves their futures, so a write
  that returned is on disk (WAL + ``synchronous=FULL``).
* a small reader pool with one connection per thread serves reads; WAL lets
  them run while the writer commits.

Watchers are notified in-process by the writer after each commit (only one
process ever opens a given database).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from kubepy.store.base import (
    CompactedError,
    ConflictError,
    Event,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    RangeResult,
    Store,
    StoreError,
    StoreUnavailableError,
)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    -- AUTOINCREMENT: compaction may delete the newest row (a tombstone);
    -- its id must never be handed out again or revisions would repeat.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
-- Two writers that both read the same latest row cannot both append after it.
CREATE UNIQUE INDEX IF NOT EXISTS kv_key_prev ON kv (key, prev_revision);
CREATE INDEX IF NOT EXISTS kv_key_id ON kv (key, id);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# Most writes that one transaction may carry; bounds the latency a single
# fsync adds to the first write of a batch.
_MAX_BATCH = 256
_READERS = 2

_ROW = "id, key, value, create_revision, prev_revision, deleted"


def _prefix_end(prefix: bytes) -> bytes | None:
    """Smallest byte string greater than every key starting with ``prefix``
    (None: no upper bound), as etcd computes range_end."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return None


def _key_bounds(prefix: str, start: str | None, column: str = "key") -> tuple[str, list[bytes]]:
    """SQL condition (and its arguments) selecting keys under ``prefix`` and
    >= ``start``; written as a plain index range so SQLite seeks, not scans."""
    low = prefix.encode()
    if start is not None and start.encode() > low:
        low = start.encode()
    high = _prefix_end(prefix.encode())
    if high is None:
        return f"{column} >= ?", [low]
    return f"{column} >= ? AND {column} < ?", [low, high]


def _kv(row: tuple) -> KeyValue:
    rid, key, value, create_rev = row[:4]
    return KeyValue(key=key.decode(), value=bytes(value), create_revision=create_rev, mod_revision=rid)


def _make_private(path: str) -> None:
    """The database exists 0600 before SQLite opens it: SQLite gives its -wal and -shm
    the database file's mode. Files older versions made 0644 are narrowed."""
    if path == ":memory:" or path.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # an empty file is an empty database
    for name in (path, path + "-wal", path + "-shm"):
        with contextlib.suppress(FileNotFoundError):
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)


def _connect(path: str) -> sqlite3.Connection:
    # check_same_thread=False only so close() may run from another thread
    # once the owning thread is gone; every connection has a single user.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is fsynced at every commit, so a returned write survives kill -9
    # and power loss.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


@dataclass(eq=False)  # identity hashing: watchers live in a set
class _Watcher:
    prefix: str
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    def offer(self, events: list[Event]) -> None:
        """Called from the writer thread after a commit."""
        mine = [e for e in events if e.kv.key.startswith(self.prefix)]
        if mine:
            try:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, mine)
            except RuntimeError:  # the watcher's loop is closed; it is gone
                pass


@dataclass
class _Write:
    op: Callable[[sqlite3.Connection], tuple[Any, Event | None]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


_CLOSE = object()


class SQLiteStore(Store):
    """etcd semantics over one SQLite file (see module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        _make_private(path)
        self._conn = _connect(path)
        self._conn.executescript(_SCHEMA)
        self._revision = self._load_revision(self._conn)  # for logs; reads ask the database
        # The newest revision written under each "/"-ending prefix of a key since the store was
        # opened (prefix_revisions); a prefix not written since has nothing newer than the opening.
        self._opened_at = self._revision
        self._newest: dict[str, int] = {}
        self._noted = self._revision   # the revision of the last write noted in _newest
        self._newest_lock = threading.Lock()
        self._watchers: set[_Watcher] = set()
        self._watchers_lock = threading.Lock()
        self._writes: queue.Queue = queue.Queue()
        self._closed = False
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_local = threading.local()
        self._readers = concurrent.futures.ThreadPoolExecutor(
            max_workers=_READERS, thread_name_prefix="sqlite-reader"
        )
        self._writer = threading.Thread(target=self._write_loop, name="sqlite-writer", daemon=True)
        self._writer.start()
        log.info(
            "sqlite store opened path=%s revision=%d compacted=%d",
            path,
            self._revision,
            self._load_compacted(self._conn),
        )

    # ---------------------------------------------------------------- helpers

    @staticmethod
    def _load_revision(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kv'").fetchone()
        return row[0] if row else 0

    @staticmethod
    def _load_compacted(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE name = 'compact_revision'").fetchone()
        return row[0] if row else 0

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            self._reader_local.conn = conn
            self._reader_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._closed:
            raise StoreUnavailableError("store is closed")

        def run() -> Any:
            conn = self._reader()
            # One read transaction: revision, compaction mark and rows agree.
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        try:
            return await asyncio.get_running_loop().run_in_executor(self._readers, run)
        except sqlite3.Error as e:
            raise StoreUnavailableError(f"sqlite read failed: {e}") from e

    async def _write(self, op: Callable[[sqlite3.Connection], tuple[Any, Event | None]]) -> Any:
        if self._closed:
            raise StoreUnavailableError("store is closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._writes.put(_Write(op, loop, future))
        return await future

    # ------------------------------------------------------------ writer thread

    def _write_loop(self) -> None:
        while True:
            first = self._writes.get()
            if first is _CLOSE:
                return
            batch = [first]
            while len(batch) < _MAX_BATCH:
                try:
                    item = self._writes.get_nowait()
                except queue.Empty:
                    break
                if item is _CLOSE:
                    self._commit_batch(batch)
                    return
                batch.append(item)
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[_Write]) -> None:
        conn = self._conn
        outcomes: list[tuple[_Write, Any, BaseException | None]] = []
        events: list[Event] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for w in batch:
                # A savepoint per write: one failing write must not undo the
                # others sharing the transaction.
                conn.execute("SAVEPOINT w")
                try:
                    result, event = w.op(conn)
                except StoreError as e:
                    conn.execute("ROLLBACK TO w")
                    outcomes.append((w, None, e))
                except sqlite3.Error as e:
                    conn.execute("ROLLBACK TO w")
                    outcomes.append((w, None, StoreUnavailableError(f"sqlite write failed: {e}")))
                except Exception as e:  # a caller's bug (say, a str value) must not kill the writer
                    conn.execute("ROLLBACK TO w")
                    outcomes.append((w, None, e))
                else:
                    outcomes.append((w, result, None))
                    if event is not None:
                        events.append(event)
                conn.execute("RELEASE w")
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            log.error("sqlite commit failed error=%s writes=%d", e, len(batch))
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._revision = self._load_revision(conn)
            err = StoreUnavailableError(f"sqlite commit failed: {e}")
            outcomes = [(w, None, err) for w in batch]
            events = []
        if events:
            self._revision = events[-1].kv.mod_revision
            self._note_newest(events)   # before any writer hears back: a read after it sees the write
            self._broadcast(events)
        for w, result, err in outcomes:
            _resolve(w, result, err)

    def _note_newest(self, events: list[Event]) -> None:
        with self._newest_lock:
            newest = self._newest
            for e in events:
                key, rev = e.kv.key, e.kv.mod_revision
                i = key.find("/")
                while i >= 0:
                    prefix = key[:i + 1]
                    if newest.get(prefix, 0) < rev:
                        newest[prefix] = rev
                    i = key.find("/", i + 1)
                self._noted = max(self._noted, rev)

    async def prefix_revisions(self, prefix: str) -> tuple[int, int] | None:
        if not prefix.endswith("/"):
            return None
        with self._newest_lock:
            return self._newest.get(prefix, self._opened_at), self._noted

    def _broadcast(self, events: list[Event]) -> None:
        with self._watchers_lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.offer(events)

    # ------------------------------------------------------------------- reads

    async def get(self, key: str) -> KeyValue | None:
        def read(conn: sqlite3.Connection) -> KeyValue | None:
            row = _latest(conn, key.encode())
            return None if row is None or row[5] else _kv(row)

        return await self._read(read)

    async def range(
        self, prefix: str, *, start: str | None = None, limit: int = 0, revision: int = 0
    ) -> RangeResult:
        where, bounds = _key_bounds(prefix, start)

        def read(conn: sqlite3.Connection) -> RangeResult:
            current = self._load_revision(conn)
            at = self._check_revision(conn, revision, current)
            # Walk the (key, id) index in key order and keep each key's newest
            # row at ``at``: ordered without a sort, and LIMIT stops the walk early.
            sql = (
                f"SELECT {_ROW} FROM kv k WHERE {where} AND id <= ? AND deleted = 0"
                " AND id = (SELECT MAX(k2.id) FROM kv k2 WHERE k2.key = k.key AND k2.id <= ?)"
                " ORDER BY key"
            )
            args: list[Any] = [*bounds, at, at]
            if limit > 0:
                sql += " LIMIT ?"
                args.append(limit + 1)  # one extra row tells us whether there is more
            rows = conn.execute(sql, args).fetchall()
            more = limit > 0 and len(rows) > limit
            if more:
                rows = rows[:limit]
            return RangeResult(kvs=[_kv(r) for r in rows], revision=at, more=more)

        return await self._read(read)

    def _check_revision(self, conn: sqlite3.Connection, revision: int, current: int) -> int:
        if revision <= 0:
            return current
        compacted = self._load_compacted(conn)
        if revision < compacted:
            raise CompactedError(f"revision {revision} is compacted (at {compacted})", compacted)
        if revision > current:
            raise StoreError(f"revision {revision} is a future revision (current {current})")
        return revision

    async def current_revision(self) -> int:
        return await self._read(self._load_revision)

    # ------------------------------------------------------------------ writes

    async def create(self, key: str, value: bytes) -> KeyValue:
        bkey = key.encode()

        def op(conn: sqlite3.Connection) -> tuple[KeyValue, Event]:
            prev = _latest(conn, bkey)
            if prev is not None and not prev[5]:
                raise KeyExistsError(f"key {key!r} exists")
            rev = _append(conn, bkey, value, None, prev, deleted=False)
            kv = KeyValue(key, bytes(value), rev, rev)
            return kv, Event("PUT", kv, None)

        return await self._write(op)

    async def update(self, key: str, value: bytes, *, revision: int) -> KeyValue:
        bkey = key.encode()

        def op(conn: sqlite3.Connection) -> tuple[KeyValue, Event]:
            prev = _live(conn, bkey, key)
            if prev[0] != revision:
                current = _kv(prev)
                raise ConflictError(
                    f"key {key!r} is at revision {prev[0]}, not {revision}", current
                )
            rev = _append(conn, bkey, value, prev[3], prev, deleted=False)
            kv = KeyValue(key, bytes(value), prev[3], rev)
            return kv, Event("PUT", kv, _kv(prev))

        return await self._write(op)

    async def delete(self, key: str, *, revision: int | None = None) -> KeyValue:
        bkey = key.encode()

        def op(conn: sqlite3.Connection) -> tuple[KeyValue, Event]:
            prev = _live(conn, bkey, key)
            if revision is not None and prev[0] != revision:
                raise ConflictError(
                    f"key {key!r} is at revision {prev[0]}, not {revision}", _kv(prev)
                )
            # The tombstone keeps the deleted value: DELETE events carry it.
            rev = _append(conn, bkey, prev[2], prev[3], prev, deleted=True)
            kv = KeyValue(key, bytes(prev[2]), prev[3], rev)
            return kv, Event("DELETE", kv, _kv(prev))

        return await self._write(op)

    async def compact(self, revision: int) -> None:
        def op(conn: sqlite3.Connection) -> tuple[None, None]:
            current = self._load_revision(conn)
            if revision > current:
                raise StoreError(f"cannot compact to future revision {revision} (current {current})")
            if revision <= self._load_compacted(conn):
                return None, None
            # Keep, per key, the newest row at or below ``revision`` unless it is
            # a tombstone: exactly what a read at ``revision`` or later needs.
            deleted = conn.execute(
                "DELETE FROM kv WHERE id <= :rev AND (deleted = 1 OR id < ("
                " SELECT MAX(k2.id) FROM kv k2 WHERE k2.key = kv.key AND k2.id <= :rev))",
                {"rev": revision},
            ).rowcount
            conn.execute(
                "INSERT INTO meta (name, value) VALUES ('compact_revision', ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (revision,),
            )
            log.info("sqlite compacted revision=%d rows_removed=%d", revision, deleted)
            return None, None

        await self._write(op)

    # ------------------------------------------------------------------- watch

    async def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[Event]:
        if self._closed:
            raise StoreUnavailableError("store is closed")
        watcher = _Watcher(prefix, asyncio.get_running_loop())
        # Subscribe before reading history: any commit the history read does
        # not see is then certain to reach the queue (duplicates are dropped).
        with self._watchers_lock:
            self._watchers.add(watcher)
        try:
            last = start_revision - 1  # never yield below start_revision
            if start_revision > 0:
                for event in await self._history(prefix, start_revision):
                    last = event.kv.mod_revision
                    yield event
            else:
                last = await self.current_revision()
            while True:
                batch = await watcher.queue.get()
                if batch is _CLOSE:
                    return
                for event in batch:
                    if event.kv.mod_revision > last:
                        last = event.kv.mod_revision
                        yield event
        finally:
            with self._watchers_lock:
                self._watchers.discard(watcher)

    async def _history(self, prefix: str, start_revision: int) -> list[Event]:
        where, bounds = _key_bounds(prefix, None, column="k.key")

        def read(conn: sqlite3.Connection) -> list[Event]:
            compacted = self._load_compacted(conn)
            # At-or-below: the compaction may have dropped a delete at exactly
            # ``compacted``, so history from there is no longer complete.
            if start_revision <= compacted:
                raise CompactedError(
                    f"watch from revision {start_revision} is compacted (at {compacted})", compacted
                )
            rows = conn.execute(
                "SELECT k.id, k.key, k.value, k.create_revision, k.prev_revision, k.deleted,"
                " p.id, p.key, p.value, p.create_revision, p.deleted"
                " FROM kv k LEFT JOIN kv p ON p.id = k.prev_revision"
                f" WHERE k.id >= ? AND {where} ORDER BY k.id",
                (start_revision, *bounds),
            ).fetchall()
            return [_history_event(r) for r in rows]

        return await self._read(read)

    # ------------------------------------------------------------------- close

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writes.put(_CLOSE)
        await asyncio.to_thread(self._writer.join)
        self._readers.shutdown(wait=True)
        with self._watchers_lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            try:
                watcher.loop.call_soon_threadsafe(watcher.queue.put_nowait, _CLOSE)
            except RuntimeError:
                pass
        for conn in [self._conn, *self._reader_conns]:
            conn.close()
        log.info("sqlite store closed path=%s revision=%d", self.path, self._revision)


# ------------------------------------------------------------------ row helpers


def _latest(conn: sqlite3.Connection, bkey: bytes) -> tuple | None:
    return conn.execute(
        f"SELECT {_ROW} FROM kv WHERE key = ? ORDER BY id DESC LIMIT 1", (bkey,)
    ).fetchone()


def _live(conn: sqlite3.Connection, bkey: bytes, key: str) -> tuple:
    row = _latest(conn, bkey)
    if row is None or row[5]:
        raise KeyNotFoundError(f"key {key!r} not found")
    return row


def _append(
    conn: sqlite3.Connection,
    bkey: bytes,
    value: bytes,
    create_revision: int | None,
    prev: tuple | None,
    *,
    deleted: bool,
) -> int:
    """Insert the next row for ``bkey``; returns its id, the new revision."""
    prev_id = prev[0] if prev is not None else 0
    cur = conn.execute(
        "INSERT INTO kv (key, value, create_revision, prev_revision, deleted)"
        " VALUES (?, ?, COALESCE(?, 0), ?, ?)",
        (bkey, value, create_revision, prev_id, int(deleted)),
    )
    rev = cur.lastrowid
    if create_revision is None:
        # A create: the key's create_revision is this row's own id.
        conn.execute("UPDATE kv SET create_revision = id WHERE id = ?", (rev,))
    return rev


def _history_event(r: tuple) -> Event:
    rid, key, value, create_rev, _prev_rev, deleted = r[:6]
    pid, pkey, pvalue, pcreate, pdeleted = r[6:]
    prev = None
    if pid is not None and not pdeleted:
        prev = KeyValue(pkey.decode(), bytes(pvalue), pcreate, pid)
    kv = KeyValue(key.decode(), bytes(value), create_rev, rid)
    return Event("DELETE" if deleted else "PUT", kv, prev)


def _resolve(w: _Write, result: Any, err: BaseException | None) -> None:
    def settle() -> None:
        if w.future.done():  # the caller was cancelled; the write still happened
            return
        if err is not None:
            w.future.set_exception(err)
        else:
            w.future.set_result(result)

    try:
        w.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # caller's loop closed
        pass
