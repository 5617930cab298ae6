"""An in-memory copy of one kind's objects, kept current from the store's watch.

For admission plugins that consult a few small kinds (ResourceQuota,
LimitRange) on every write: a dict lookup instead of a store read per
request. Like upstream's informer-backed listers it may lag the store by
one watch delivery; a plugin that must be exact reads the object itself
(as quota admission does before it charges).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubepy import jsonbytes
from kubepy.store.base import CompactedError, Store, StoreError

log = logging.getLogger(__name__)


class Mirror:
    def __init__(self, store: Store, prefix: str) -> None:
        self.store, self.prefix = store, prefix
        self._objects: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def _load(self) -> int:
        self._objects.clear()
        start: str | None = None
        while True:
            page = await self.store.range(self.prefix, start=start, limit=500)
            for kv in page.kvs:
                self._objects[kv.key] = jsonbytes.loads(kv.value)
            if not page.more or not page.kvs:
                return page.revision
            start = page.kvs[-1].key + "\x00"

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                revision = await self._load()
                self._ready.set()
                async for ev in self.store.watch(self.prefix, start_revision=revision + 1):
                    if ev.type == "DELETE":
                        self._objects.pop(ev.kv.key, None)
                    else:
                        self._objects[ev.kv.key] = jsonbytes.loads(ev.kv.value)
                    backoff = 0.1
            except asyncio.CancelledError:
                raise
            except (CompactedError, StoreError) as e:
                log.warning("mirror relist prefix=%s err=%s backoff=%.1fs", self.prefix, e, backoff)
            except Exception:
                log.exception("mirror failed prefix=%s", self.prefix)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def items(self, namespace: str) -> list[dict[str, Any]]:
        """The objects in ``namespace`` (waits for the first load)."""
        await self._started()
        head = f"{self.prefix}{namespace}/"
        return [o for k, o in self._objects.items() if k.startswith(head)]

    async def get(self, key: str) -> dict[str, Any] | None:
        """The object stored at ``key``, None if there is none (waits for the first load)."""
        await self._started()
        return self._objects.get(key)

    async def all(self) -> list[dict[str, Any]]:
        """Every object (a cluster-scoped kind's)."""
        await self._started()
        return list(self._objects.values())

    async def _started(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mirror:{self.prefix}")
        await self._ready.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
