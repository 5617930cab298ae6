"""List-then-watch of one resource into an indexed in-memory ``Cache``.

An ``Informer`` lists (``Client.list_all``), replaces its cache, then
watches from the list's resourceVersion. Handlers see every change as
add/update/delete, in event order, called synchronously from the
informer's task. A re-list (after 410 Gone) is diffed against the cache,
so changes missed while disconnected - deletions included - still reach
the handlers: that is what makes consumers level-triggered. A broken
connection resumes the watch from the last seen resourceVersion with
backoff. Talks to the API server only through ``Client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

from kubepy.client.errors import APIStatusError, GoneError, TransportError

log = logging.getLogger(__name__)

Indexer = Callable[[dict[str, Any]], list[str]]
AddHandler = Callable[[dict[str, Any]], None]
UpdateHandler = Callable[[dict[str, Any], dict[str, Any]], None]
DeleteHandler = Callable[[dict[str, Any]], None]

BACKOFF_INITIAL = 0.2
BACKOFF_MAX = 5.0
WATCH_TIMEOUT_RANGE = (300, 600)  # seconds; spread so informers do not re-watch in step


def object_key(obj: dict[str, Any]) -> str:
    """"namespace/name", or "name" for a cluster-scoped object."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else meta["name"]


def by_namespace(obj: dict[str, Any]) -> list[str]:
    ns = (obj.get("metadata") or {}).get("namespace")
    return [ns] if ns else []


def by_node(obj: dict[str, Any]) -> list[str]:
    node = (obj.get("spec") or {}).get("nodeName")
    return [node] if node else []


def by_owner(obj: dict[str, Any]) -> list[str]:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [ref["uid"] for ref in refs if ref.get("uid")]


class Cache:
    """Objects by key, plus secondary indexes (index name -> value -> keys).

    Not thread-safe and needs no lock: one event loop owns it."""

    def __init__(self, indexers: dict[str, Indexer] | None = None) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._indexers = dict(indexers or {})
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}

    def get(self, key: str) -> dict[str, Any] | None:
        return self._items.get(key)

    def list(self) -> list[dict[str, Any]]:
        return list(self._items.values())

    def keys(self) -> list[str]:
        return list(self._items)

    def by_index(self, index_name: str, value: str) -> list[dict[str, Any]]:
        keys = self._indices[index_name].get(value, ())
        return [self._items[k] for k in sorted(keys)]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    # -- writes (the informer's, or a test's) ---------------------------------
    def set(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Store ``obj``; return what it replaced."""
        key = object_key(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        self._index(key, obj)
        return old

    def delete(self, key: str) -> dict[str, Any] | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def replace(self, objs: Iterable[dict[str, Any]]) -> None:
        self._items.clear()
        for index in self._indices.values():
            index.clear()
        for obj in objs:
            self.set(obj)

    def _index(self, key: str, obj: dict[str, Any]) -> None:
        for name, fn in self._indexers.items():
            for value in fn(obj):
                self._indices[name].setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: dict[str, Any]) -> None:
        for name, fn in self._indexers.items():
            index = self._indices[name]
            for value in fn(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]


class _Backoff:
    def __init__(self) -> None:
        self.delay = BACKOFF_INITIAL

    def reset(self) -> None:
        self.delay = BACKOFF_INITIAL

    async def sleep(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, BACKOFF_MAX)


class Informer:
    def __init__(self, client: Any, resource: Any, *, namespace: str | None = None,
                 label_selector: str | None = None, field_selector: str | None = None,
                 indexers: dict[str, Indexer] | None = None, resync_period: float | None = None) -> None:
        self.client = client
        self.resource = resource  # a plural, or a Kind the caller built (a custom resource's)
        self.name = resource if isinstance(resource, str) else resource.qualified  # for the logs
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.cache = Cache(indexers)
        self.resource_version = ""  # the newest we have seen, from a list, an event or a bookmark
        self._handlers: list[tuple[AddHandler | None, UpdateHandler | None, DeleteHandler | None]] = []
        self._synced = asyncio.Event()
        self._watch_events = 0  # carried by the current (or last) watch stream

    def add_handler(self, on_add: AddHandler | None = None, on_update: UpdateHandler | None = None,
                    on_delete: DeleteHandler | None = None) -> None:
        self._handlers.append((on_add, on_update, on_delete))

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Until the first list is in the cache; TimeoutError after ``timeout``."""
        await asyncio.wait_for(self._synced.wait(), timeout)

    async def run(self) -> None:
        """List and watch until cancelled."""
        resync = asyncio.create_task(self._resync_loop()) if self.resync_period else None
        backoff = _Backoff()
        need_list = True
        try:
            while True:
                try:
                    if need_list:
                        await self._list()
                        need_list = False
                    if await self._watch(backoff) == 0:
                        # The server ended a stream that carried nothing: normal after
                        # timeoutSeconds, but never spin if it does so at once.
                        await backoff.sleep()
                except GoneError as e:
                    log.info("watch expired, re-listing resource=%s rv=%s err=%s",
                             self.name, self.resource_version, e.message)
                    if need_list or self._watch_events == 0:
                        await backoff.sleep()  # 410 again straight after a list: do not hammer the server
                    need_list = True
                except (TransportError, APIStatusError) as e:
                    log.warning("%s failed resource=%s rv=%s retry_in=%.1fs err=%s",
                                "list" if need_list else "watch", self.name, self.resource_version,
                                backoff.delay, e)
                    await backoff.sleep()
                except Exception:
                    # A bug must not silently stop every consumer of this cache:
                    # log it and start over from a fresh list.
                    log.exception("informer error resource=%s retry_in=%.1fs", self.name, backoff.delay)
                    need_list = True
                    await backoff.sleep()
        finally:
            if resync is not None:
                resync.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await resync

    async def _list(self) -> None:
        items, rv = await self.client.list_all(self.resource, namespace=self.namespace,
                                               label_selector=self.label_selector,
                                               field_selector=self.field_selector)
        old = {object_key(obj): obj for obj in self.cache.list()}
        self.cache.replace(items)
        self.resource_version = rv
        log.info("listed resource=%s items=%d rv=%s", self.name, len(items), rv)
        # The cache is whole again before any handler runs.
        for obj in items:
            previous = old.pop(object_key(obj), None)
            if previous is not None and _uid(previous) != _uid(obj):
                self._emit_delete(previous)  # deleted and re-created under the same name while we looked away
                previous = None
            if previous is None:
                self._emit_add(obj)
            elif _rv(previous) != _rv(obj):
                self._emit_update(previous, obj)
        for gone in old.values():
            self._emit_delete(gone)
        self._synced.set()

    async def _watch(self, backoff: _Backoff) -> int:
        """Watch until the stream ends; the number of events it carried."""
        timeout = random.randint(*WATCH_TIMEOUT_RANGE)
        events = self.client.watch(self.resource, namespace=self.namespace, resource_version=self.resource_version,
                                   label_selector=self.label_selector, field_selector=self.field_selector,
                                   timeout_seconds=timeout, allow_bookmarks=True)
        self._watch_events = 0
        async with contextlib.aclosing(events):
            async for event in events:
                self._watch_events += 1
                backoff.reset()
                self._handle(event)
        return self._watch_events

    def _handle(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        rv = _rv(obj)
        if kind == "BOOKMARK":
            self.resource_version = rv or self.resource_version
            return
        if kind in ("ADDED", "MODIFIED"):
            old = self.cache.set(obj)
            if old is None:
                self._emit_add(obj)
            else:
                self._emit_update(old, obj)
        elif kind == "DELETED":
            self.cache.delete(object_key(obj))
            self._emit_delete(obj)
        else:
            log.warning("unexpected watch event resource=%s type=%s", self.name, kind)
        self.resource_version = rv or self.resource_version

    async def _resync_loop(self) -> None:
        assert self.resync_period
        while True:
            await asyncio.sleep(self.resync_period)
            if self.has_synced:
                for obj in self.cache.list():
                    self._emit_update(obj, obj)

    # -- handlers: their exceptions are logged, never stop the informer ------
    def _emit_add(self, obj: dict[str, Any]) -> None:
        for on_add, _, _ in self._handlers:
            if on_add:
                self._call(on_add, "add", obj)

    def _emit_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        for _, on_update, _ in self._handlers:
            if on_update:
                self._call(on_update, "update", old, new)

    def _emit_delete(self, obj: dict[str, Any]) -> None:
        for _, _, on_delete in self._handlers:
            if on_delete:
                self._call(on_delete, "delete", obj)

    def _call(self, fn: Callable[..., None], what: str, *args: dict[str, Any]) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("handler failed resource=%s event=%s key=%s", self.name, what, object_key(args[-1]))


def _rv(obj: dict[str, Any] | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


def _uid(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")
