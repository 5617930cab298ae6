"""EventRecorder's queue, with a client that answers as slowly as told: events are written one at a
time in order, at most MAX_QUEUED wait (more are dropped and counted), and a stopping component waits
at most STOP_FLUSH for them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kubepy.client import events
from kubepy.client.events import EventRecorder


class SlowClient:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.created: list[str] = []

    async def create(self, plural: str, body: dict[str, Any], namespace: str) -> dict[str, Any]:
        await asyncio.sleep(self.delay)
        self.created.append(body["involvedObject"]["name"])
        return body

    async def patch(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise AssertionError("no repeats here")


def pod(name: str) -> dict[str, Any]:
    return {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name, "namespace": "default", "uid": name}}


async def test_events_are_written_in_order_by_one_writer() -> None:
    client = SlowClient(0.001)
    rec = EventRecorder(client, component="kptest")
    for i in range(50):
        rec.event(pod(f"p{i}"), "Normal", "Scheduled", f"m{i}")
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("events:")]
    assert len(tasks) == 1                      # not a task per event
    assert await rec.flush(timeout=10)
    assert client.created == [f"p{i}" for i in range(50)]
    rec.event(pod("late"), "Normal", "Scheduled", "again")   # the writer ended; a new one writes it
    assert await rec.flush(timeout=10) and client.created[-1] == "late"
    await rec.stop()


async def test_a_full_queue_drops_and_counts(monkeypatch) -> None:
    monkeypatch.setattr(events, "MAX_QUEUED", 10)
    client = SlowClient(0.05)
    rec = EventRecorder(client, component="kptest")
    for i in range(30):
        rec.event(pod(f"p{i}"), "Normal", "Scheduled", f"m{i}")
    assert rec.dropped == 20
    assert await rec.flush(timeout=10)
    assert client.created == [f"p{i}" for i in range(10)]
    await rec.stop()


async def test_stop_waits_for_the_queue_only_so_long(monkeypatch) -> None:
    monkeypatch.setattr(events, "STOP_FLUSH", 0.3)
    client = SlowClient(0.1)
    rec = EventRecorder(client, component="kptest")
    for i in range(100):                        # 10 s of writes
        rec.event(pod(f"p{i}"), "Normal", "Scheduled", f"m{i}")
    started = time.monotonic()
    await rec.stop()
    assert time.monotonic() - started < 2.0
    assert 1 <= len(client.created) < 100
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("events:")]
