"""``EventRecorder``: core/v1 Events about objects, written in the background.

``event()`` never blocks and never raises: it queues the event (at most
``MAX_QUEUED``; beyond that it is dropped and logged, as upstream's broadcaster
does) for one writer task on the running loop. Writes are in order, so a repeat of the same event
(object, type, reason, message) within ``AGGREGATION_WINDOW`` finds the
one already created and PATCHes its ``count``/``lastTimestamp`` instead of
creating another, as Kubernetes' event correlator does. Talks to the API
server only through ``Client``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubepy.client.errors import NotFoundError

log = logging.getLogger(__name__)

AGGREGATION_WINDOW = 600.0  # seconds
MAX_REMEMBERED = 512
MAX_QUEUED = 1000           # events waiting to be written (upstream's maxQueuedEvents); more are dropped
STOP_FLUSH = 3.0            # seconds a stopping component waits for its queued events


@dataclass
class _Recorded:
    namespace: str
    name: str
    count: int
    last_seen: float  # monotonic


class EventRecorder:
    def __init__(self, client: Any, *, component: str, host: str | None = None) -> None:
        self.client = client
        self.component = component
        self.host = host
        self._recent: OrderedDict[tuple[str, ...], _Recorded] = OrderedDict()
        # Waiting to be written, oldest first; one writer task at a time writes them in order, and ends
        # when there are none left.
        self._queue: deque[tuple[dict[str, Any], str, str, str, str, float]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self.dropped = 0

    def event(self, obj: dict[str, Any], type: str, reason: str, message: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("event dropped: no running loop reason=%s", reason)
            return
        if len(self._queue) >= MAX_QUEUED:
            # As upstream's broadcaster: a full queue drops the event rather than hold up the caller
            # or grow without bound (a scheduler binding hundreds of pods a second outruns one writer).
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("event dropped: queue full component=%s queued=%d dropped=%d reason=%s",
                            self.component, len(self._queue), self.dropped, reason)
            return
        self._queue.append((obj, type, reason, message, _now(), time.monotonic()))
        if self._writer is None or self._writer.done() or self._writer.get_loop() is not loop:
            self._writer = loop.create_task(self._write_all(), name=f"events:{self.component}")

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait for every event queued so far to be written (or dropped); False if ``timeout`` came first
        (what is left is still written in the background)."""
        try:
            async with asyncio.timeout(timeout):
                while self._writer is not None and not self._writer.done():
                    await asyncio.shield(self._writer)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """For a stopping component: what is queued gets ``STOP_FLUSH`` seconds to be written, then is dropped."""
        if not await self.flush(timeout=STOP_FLUSH):
            log.warning("events not written at stop component=%s queued=%d", self.component, len(self._queue))
        self._queue.clear()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write_all(self) -> None:
        while self._queue:
            await self._record(*self._queue.popleft())

    async def _record(self, obj: dict[str, Any], type: str, reason: str, message: str,
                      timestamp: str, seen: float) -> None:
        meta = obj.get("metadata") or {}
        involved = {
            "kind": obj.get("kind", ""),
            "namespace": meta.get("namespace", ""),
            "name": meta.get("name", ""),
            "uid": meta.get("uid", ""),
            "apiVersion": obj.get("apiVersion", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        key = (involved["kind"], involved["namespace"], involved["name"], involved["uid"], type, reason, message)
        # One at a time, in the order event() was called (the writer's): the second of two quick repeats
        # must see the first one's Event.
        try:
            if await self._aggregate(key, timestamp, seen):
                return
            namespace = involved["namespace"] or "default"
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{involved['name']}.{time.time_ns():x}", "namespace": namespace},
                "involvedObject": {k: v for k, v in involved.items() if v},
                "reason": reason,
                "message": message,
                "type": type,
                "source": {k: v for k, v in (("component", self.component), ("host", self.host)) if v},
                "firstTimestamp": timestamp,
                "lastTimestamp": timestamp,
                "count": 1,
                "reportingComponent": self.component,
                "reportingInstance": self.host or "",
            }
            created = await self.client.create("events", body, namespace=namespace)
            self._remember(key, _Recorded(namespace, created["metadata"]["name"], 1, seen))
        except Exception as e:  # noqa: BLE001 - an event is best effort; it must never hurt the caller
            log.warning("event not recorded object=%s/%s reason=%s err=%s", involved["namespace"],
                        involved["name"], reason, e)

    async def _aggregate(self, key: tuple[str, ...], timestamp: str, seen: float) -> bool:
        recorded = self._recent.get(key)
        if recorded is None or seen - recorded.last_seen > AGGREGATION_WINDOW:
            return False
        try:
            await self.client.patch("events", recorded.name, {"count": recorded.count + 1, "lastTimestamp": timestamp},
                                    namespace=recorded.namespace)
        except NotFoundError:
            del self._recent[key]  # expired or deleted: start a new one
            return False
        recorded.count += 1
        recorded.last_seen = seen
        self._recent.move_to_end(key)
        return True

    def _remember(self, key: tuple[str, ...], recorded: _Recorded) -> None:
        self._recent[key] = recorded
        self._recent.move_to_end(key)
        while len(self._recent) > MAX_REMEMBERED:
            self._recent.popitem(last=False)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
