"""Watch fan-out: one store watch per resource, shared by every API watcher.

The cache keeps the last ``capacity`` events of its resource so that a
client resuming from a recent resourceVersion is served from memory. A
client asking for something older gets a direct store watch (which the
store may refuse as compacted: the API answers 410 Gone). Events are
shared read-only by all subscribers, each decoded at most once and only when
a subscriber (or its selector) first reads it.

What must stay true: a subscriber sees every event with revision greater
than the one it asked for, exactly once, in revision order.

Once a kind is first listed, its cache also keeps every object's current
API bytes (``snapshot``), as upstream's watch cache does: the state is read
from the store once, at a revision the event buffer still continues, and
kept by the same events afterwards. A list is then served from memory,
consistent as upstream's consistent lists from cache are: the store says
the newest revision under the prefix, and the cache answers only once it
has applied that revision (see ``Storage.list``).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging
from typing import Any, Callable

from kubepy.api.objects import decode_bytes, with_resource_version
from kubepy.store import CompactedError, Event, Store, StoreError

log = logging.getLogger(__name__)

# A subscriber whose queue grows past this is too slow to keep: it is ended
# (the client re-watches) rather than letting the server's memory grow.
MAX_PENDING = 20_000
_STATE_PAGE = 1000   # keys per store read while reading a cache's state


def prefix_end(prefix: str) -> str:
    """The first key after every key that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"


class _Decoded:
    """One stored version of an object, shared by every event that carries it: decoded to a dict
    and turned into API bytes each at most once, and only if someone asks. Most events of a busy
    resource reach no subscriber (nobody watches it, or no selector matches), and then cost
    neither a JSON decode nor an encode; 100 watchers still mean one of each."""

    __slots__ = ("value", "revision", "_obj", "_bytes")

    def __init__(self, value: bytes, revision: int) -> None:
        self.value = value
        self.revision = revision
        self._obj: dict[str, Any] | None = None
        self._bytes: bytes | None = None

    def obj(self) -> dict[str, Any]:
        if self._obj is None:
            self._obj = decode(self.value, self.revision)
        return self._obj

    def bytes(self) -> bytes:
        if self._bytes is None:
            # The stored bytes with metadata.resourceVersion spliced in (what a list sends): no
            # decode and encode of the object.
            self._bytes = with_resource_version(self.value, self.revision)
        return self._bytes


class WatchEvent:
    """``type`` (ADDED | MODIFIED | DELETED) of the object stored at ``key`` at ``revision``;
    ``obj`` and ``prev`` (the version before, or None) are decoded when first read. Shared
    read-only."""

    __slots__ = ("type", "revision", "key", "_cur", "_prev")

    def __init__(self, type: str, cur: _Decoded, prev: _Decoded | None, revision: int, key: str = "") -> None:
        self.type = type
        self.revision = revision
        self.key = key
        self._cur = cur
        self._prev = prev

    @property
    def obj(self) -> dict[str, Any]:
        return self._cur.obj()

    @property
    def prev(self) -> dict[str, Any] | None:
        return self._prev.obj() if self._prev is not None else None

    def retyped(self, type: str) -> WatchEvent:
        """The same object as another event type (a selector watch's ADDED or DELETED)."""
        return WatchEvent(type, self._cur, self._prev, self.revision, self.key)

    def json_line(self) -> bytes:
        return b'{"type":"%s","object":%s}\n' % (self.type.encode(), self._cur.bytes())


def decode(value: bytes, revision: int) -> dict[str, Any]:
    return decode_bytes(value, revision)


def to_watch_event(ev: Event) -> WatchEvent:
    prev = _Decoded(ev.prev.value, ev.prev.mod_revision) if ev.prev else None
    if ev.type == "DELETE":
        kind = "DELETED"
    else:
        kind = "ADDED" if ev.prev is None else "MODIFIED"
    return WatchEvent(kind, _Decoded(ev.kv.value, ev.kv.mod_revision), prev, ev.kv.mod_revision, ev.kv.key)


# matches(obj) -> bool; decides what one subscriber sees.
Matcher = Callable[[dict[str, Any]], bool]


class Subscription:
    """A queue of events for one API watcher, filtered by its selectors.

    An object that stops matching is sent as DELETED, one that starts
    matching as ADDED, as Kubernetes does for selector watches."""

    def __init__(self, *, after: int, matches: Matcher) -> None:
        self.after = after
        self.matches = matches
        self.queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self.closed = False
        self._on_close: Callable[[], None] | None = None

    def offer(self, ev: WatchEvent) -> None:
        if self.closed or ev.revision <= self.after:
            return
        now = self.matches(ev.obj)
        prev = ev.prev
        before = prev is not None and self.matches(prev)
        if ev.type == "DELETED":
            out = ev if now else None
        elif now and before:
            out = ev
        elif now:
            out = ev.retyped("ADDED")
        elif before:
            out = ev.retyped("DELETED")
        else:
            out = None
        if out is None:
            return
        if self.queue.qsize() >= MAX_PENDING:
            log.warning("watch subscriber too slow, ending it pending=%d", self.queue.qsize())
            self.end()
            return
        self.queue.put_nowait(out)

    def end(self) -> None:
        """Ends the stream with an expiry: the client must re-list."""
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)

    def close(self) -> None:
        self.closed = True
        if self._on_close:
            self._on_close()
            self._on_close = None


class WatchCache:
    def __init__(self, store: Store, prefix: str, *, capacity: int = 10_000) -> None:
        self.store = store
        self.prefix = prefix
        self.capacity = capacity
        self.buffer: collections.deque[WatchEvent] = collections.deque()
        self.complete_from = 0  # every event with revision >= this is in buffer
        self.last_revision = 0
        self.subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.watching = False   # the store watch is open (not failed and waiting to retry)
        # The objects' current API bytes by key, and the keys sorted: None until first listed.
        self._state: dict[str, bytes] | None = None
        self._keys: list[str] = []
        self._state_at = 0   # the revision the state was read at: older events are in it already
        self._building: asyncio.Future[bool] | None = None
        self._applied = asyncio.Event()   # set at every dispatched event: snapshot waiters look again

    async def start(self) -> None:
        rev = await self.store.current_revision()
        self.last_revision = rev
        self.complete_from = rev + 1
        self._task = asyncio.create_task(self._run(), name=f"watchcache:{self.prefix}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for sub in list(self.subscribers):
            sub.end()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                stream = self.store.watch(self.prefix, start_revision=self.last_revision + 1)
                self.ready.set()
                self.watching = True
                async for ev in stream:
                    self._dispatch(to_watch_event(ev))
                    backoff = 0.1
            except asyncio.CancelledError:
                self.watching = False
                raise
            except CompactedError as e:
                # We fell behind compaction: history is gone, so every
                # subscriber must re-list. Start again from now.
                log.warning("watch cache compacted prefix=%s rev=%d", self.prefix, e.compact_revision)
                self._reset(await self._safe_current_revision())
            except StoreError as e:
                log.warning("watch cache store error prefix=%s err=%s backoff=%.1fs", self.prefix, e, backoff)
            except Exception:
                log.exception("watch cache failed prefix=%s", self.prefix)
            # Events may be missed until the watch is open again: no list is served from memory.
            self.watching = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _safe_current_revision(self) -> int:
        try:
            return await self.store.current_revision()
        except StoreError:
            return self.last_revision

    def _reset(self, revision: int) -> None:
        self.buffer.clear()
        self.last_revision = revision
        self.complete_from = revision + 1
        self._state, self._keys = None, []   # events were missed: read again at the next list
        for sub in list(self.subscribers):
            sub.end()
        self.subscribers.clear()

    def _dispatch(self, ev: WatchEvent) -> None:
        if ev.revision <= self.last_revision and self.buffer:
            return  # already seen (a store watch restarted from an older point)
        if len(self.buffer) >= self.capacity:
            old = self.buffer.popleft()
            self.complete_from = old.revision + 1
        self.buffer.append(ev)
        self.last_revision = ev.revision
        if self._state is not None and ev.revision > self._state_at:
            self._apply(ev)
        self._applied.set()
        for sub in list(self.subscribers):
            sub.offer(ev)

    def _apply(self, ev: WatchEvent) -> None:
        assert self._state is not None
        if ev.type == "DELETED":
            if self._state.pop(ev.key, None) is not None:
                i = bisect.bisect_left(self._keys, ev.key)
                if i < len(self._keys) and self._keys[i] == ev.key:
                    del self._keys[i]
            return
        if ev.key not in self._state:
            bisect.insort(self._keys, ev.key)
        self._state[ev.key] = ev._cur.bytes()

    async def snapshot(self, prefix: str, revision: int, *, current: int = 0,
                       timeout: float = 1.0) -> tuple[list[tuple[str, bytes]], int] | None:
        """([(key, API bytes)] under ``prefix`` in key order, the revision they are at) once this
        cache has applied ``revision`` (the store's newest under the prefix); None when it can't
        say within ``timeout`` (not watching, fell behind, or the state could not be read), and
        the caller reads the store. ``current``: the store's revision when ``revision`` was
        read; nothing under the prefix changed between the two, so the items are also the
        store's at ``current``, which is the revision returned if the cache has applied less (a
        kind idle for an hour must not list at an hour-old revision that compaction has since
        made too old to watch from)."""
        if not self.watching:
            return None
        if self._state is None and not await self._build():
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while max(self.last_revision, self._state_at) < revision:
            self._applied.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._applied.wait()
            except TimeoutError:
                log.warning("watch cache behind prefix=%s at=%d want=%d", self.prefix, self.last_revision, revision)
                return None
        if self._state is None or not self.watching:
            return None   # reset while waiting
        lo = bisect.bisect_left(self._keys, prefix)
        hi = bisect.bisect_left(self._keys, prefix_end(prefix), lo)
        state = self._state
        return [(k, state[k]) for k in self._keys[lo:hi]], max(self.last_revision, self._state_at, current)

    async def _build(self) -> bool:
        """Read the state once (callers that arrive meanwhile share the reading)."""
        if self._building is None:
            self._building = asyncio.get_running_loop().create_future()
            try:
                ok = await self._read_state()
            except asyncio.CancelledError:
                self._building.cancel()
                self._building = None
                raise
            self._building.set_result(ok)
            self._building = None
            return ok
        return await asyncio.shield(self._building)

    async def _read_state(self) -> bool:
        """Every key under the prefix at one revision, then the buffered events after it."""
        kvs: list[Any] = []
        start: str | None = None
        at = 0
        try:
            while True:
                page = await self.store.range(self.prefix, start=start, limit=_STATE_PAGE, revision=at)
                at = page.revision
                kvs.extend(page.kvs)
                if not page.more or not page.kvs:
                    break
                start = page.kvs[-1].key + "\x00"
        except (StoreError, CompactedError) as e:
            log.warning("watch cache state not read prefix=%s err=%s", self.prefix, e)
            return False
        # Every event after the read must still be in the buffer (or not have happened yet).
        if self.complete_from > at + 1 and self.last_revision > at:
            log.warning("watch cache state read too late prefix=%s at=%d buffered_from=%d",
                        self.prefix, at, self.complete_from)
            return False
        self._keys = [kv.key for kv in kvs]   # the store's key order
        self._state = {kv.key: with_resource_version(kv.value, kv.mod_revision) for kv in kvs}
        self._state_at = at
        for ev in self.buffer:
            if ev.revision > at:
                self._apply(ev)
        log.info("watch cache state read prefix=%s objects=%d revision=%d", self.prefix, len(kvs), at)
        return True

    def compacted(self, revision: int) -> None:
        """The store forgot history at or below ``revision``; so do we, so a
        watch from there is 410 Gone whether or not memory still had it."""
        while self.buffer and self.buffer[0].revision <= revision:
            self.buffer.popleft()
        self.complete_from = max(self.complete_from, revision + 1)

    def subscribe(self, *, after: int, matches: Matcher) -> Subscription | None:
        """Events with revision > ``after``; None when they are no longer in
        memory (the caller falls back to a store watch)."""
        if after + 1 < self.complete_from:
            return None
        sub = Subscription(after=after, matches=matches)
        # Replay and registration happen with no await between them, so no
        # event can fall in the gap.
        for ev in self.buffer:
            if ev.revision > after:
                sub.offer(ev)
        self.subscribers.add(sub)

        def remove() -> None:
            self.subscribers.discard(sub)

        sub._on_close = remove
        return sub


class StoreSubscription(Subscription):
    """A subscriber fed by its own store watch: for resourceVersions older
    than the cache holds. Raises nothing; a compacted start ends the stream."""

    def __init__(self, store: Store, prefix: str, *, after: int, matches: Matcher) -> None:
        super().__init__(after=after, matches=matches)
        self.compacted = False
        self._task = asyncio.create_task(self._pump(store, prefix))
        self._on_close = self._task.cancel

    async def _pump(self, store: Store, prefix: str) -> None:
        try:
            async for ev in store.watch(prefix, start_revision=self.after + 1):
                self.offer(to_watch_event(ev))
        except CompactedError:
            self.compacted = True
        except StoreError as e:
            log.warning("store watch failed prefix=%s err=%s", prefix, e)
        self.end()
