"""``EventRecorder``: core/v1 Events about objects, written in the background.

``event()`` never blocks and never raises: it schedules the write on the
running loop. Writes are serialized, so a repeat of the same event
(object, type, reason, message) within ``AGGREGATION_WINDOW`` finds the
one already created and PATCHes its ``count``/``lastTimestamp`` instead of
creating another, as Kubernetes' event correlator does. Talks to the API
server only through ``Client``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubepy.client.errors import NotFoundError

log = logging.getLogger(__name__)

AGGREGATION_WINDOW = 600.0  # seconds
MAX_REMEMBERED = 512


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
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    def event(self, obj: dict[str, Any], type: str, reason: str, message: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("event dropped: no running loop reason=%s", reason)
            return
        task = loop.create_task(self._record(obj, type, reason, message, _now(), time.monotonic()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Wait for every event scheduled so far to be written (or dropped)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

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
        # Serialized, in the order event() was called: the second of two quick
        # repeats must see the first one's Event.
        async with self._lock:
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
