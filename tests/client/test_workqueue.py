"""WorkQueue and run_workers: dedupe, exclusivity, dirty re-queue, backoff, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from kubepy.client import QueueShutdown, WorkQueue, run_workers


async def test_add_dedupes_waiting_keys():
    q = WorkQueue()
    q.add("a")
    q.add("b")
    q.add("a")
    assert len(q) == 2
    assert await q.get() == "a"
    assert await q.get() == "b"
    assert len(q) == 0


async def test_key_in_processing_is_not_handed_out_twice_and_requeued_on_done():
    q = WorkQueue()
    q.add("a")
    key = await q.get()
    q.add("a")  # while processing: dirty, not queued
    q.add("a")
    assert len(q) == 0
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    assert not second.done()
    q.done(key)
    assert await asyncio.wait_for(second, 1) == "a"
    q.done("a")
    assert len(q) == 0


async def test_done_without_dirty_does_not_requeue():
    q = WorkQueue()
    q.add("a")
    q.done(await q.get())
    assert len(q) == 0


async def test_get_waits_for_add():
    q = WorkQueue()
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    q.add("x")
    assert await asyncio.wait_for(getter, 1) == "x"


async def test_rate_limited_backoff_grows_and_forget_resets():
    # Delays of 50-150 ms keep the assertions far from scheduling noise on a busy machine:
    # each bound below sits between the right value and the value a bug would give.
    q = WorkQueue(base_delay=0.05, max_delay=0.15)
    delays = []
    loop = asyncio.get_running_loop()
    for _ in range(4):
        start = loop.time()
        q.add_rate_limited("k")
        q.done(await asyncio.wait_for(q.get(), 2))
        delays.append(loop.time() - start)
    assert q.num_requeues("k") == 4
    assert delays[0] >= 0.049 and delays[1] >= 0.099 and delays[2] >= 0.149  # 50, 100, then capped 150 ms
    assert delays[3] < 0.3  # capped at max_delay; uncapped it would be 400 ms
    q.forget("k")
    assert q.num_requeues("k") == 0
    start = loop.time()
    q.add_rate_limited("k")
    await asyncio.wait_for(q.get(), 2)
    assert loop.time() - start < 0.12  # back to base_delay (50 ms), not the 150 ms it had reached


async def test_add_after_orders_by_ready_time_and_keeps_earliest():
    q = WorkQueue()
    q.add_after("late", 0.06)
    q.add_after("early", 0.02)
    q.add_after("late", 0.5)  # a later request for a key already waiting earlier is ignored
    assert len(q) == 0
    assert await asyncio.wait_for(q.get(), 1) == "early"
    assert await asyncio.wait_for(q.get(), 1) == "late"
    q.add_after("now", 0)
    assert len(q) == 1


async def test_shutdown_wakes_getters_and_cancels_timers():
    q = WorkQueue()
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.add_after("x", 10)
    q.shutdown()
    with pytest.raises(QueueShutdown):
        await asyncio.wait_for(getter, 1)
    with pytest.raises(QueueShutdown):
        await q.get()
    q.add("y")
    assert len(q) == 0


async def test_run_workers_never_runs_a_key_concurrently_and_retries_failures():
    q = WorkQueue(base_delay=0.001)
    running: set[str] = set()
    seen: list[str] = []
    failures = {"bad": 2}

    async def reconcile(key: str) -> None:
        assert key not in running, f"{key} handed out twice at once"
        running.add(key)
        try:
            seen.append(key)
            await asyncio.sleep(0.005)
            q.add(key if len(seen) < 6 else "other")  # re-adds while processing
            if failures.get(key):
                failures[key] -= 1
                raise RuntimeError("boom\nsecond line")
        finally:
            running.discard(key)

    for key in ("a", "bad", "b"):
        q.add(key)
    workers = asyncio.create_task(run_workers(q, reconcile, workers=4))
    for _ in range(200):
        if failures["bad"] == 0 and len(seen) > 8:
            break
        await asyncio.sleep(0.01)
    q.shutdown()
    await asyncio.wait_for(workers, 2)
    assert failures["bad"] == 0
    assert seen.count("bad") >= 3


async def test_run_workers_forgets_after_success():
    q = WorkQueue(base_delay=0.001)
    calls = []

    async def reconcile(key: str) -> None:
        calls.append(key)
        if len(calls) < 3:
            raise ValueError("not yet")
        q.shutdown()

    q.add("k")
    await asyncio.wait_for(run_workers(q, reconcile, workers=1), 2)
    assert calls == ["k", "k", "k"]
    assert q.num_requeues("k") == 0


async def test_run_workers_shuts_the_queue_down_when_cancelled():
    """Controllers rely on this: once their workers are gone, the queue refuses more work."""
    q = WorkQueue()

    async def reconcile(key: str) -> None:
        pass

    task = asyncio.create_task(run_workers(q, reconcile, workers=2))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert q.is_shutting_down
    with pytest.raises(QueueShutdown):
        await asyncio.wait_for(q.get(), 1)


async def test_a_reconcile_that_requeues_itself_at_once_gets_backoff():
    # The livelock class of issue 11: reconcile(key) asks for key again with no delay, forever,
    # and never awaits. Without the guards the loop spins on one key and starves every other task.
    q = WorkQueue(base_delay=0.05, max_delay=0.2, name="hot")
    runs: list[float] = []
    loop = asyncio.get_running_loop()

    async def reconcile(key: str) -> None:
        runs.append(loop.time())
        q.add_after(key, 0)  # "come back now": the bug

    ticks = 0

    async def other_task() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    other = asyncio.create_task(other_task())
    workers = asyncio.create_task(run_workers(q, reconcile, workers=1))
    q.add("stuck")
    await asyncio.sleep(1.0)
    q.shutdown()
    await workers
    other.cancel()
    # Free runs, then 50, 100, 200, 200... ms apart: a handful of runs a second, not thousands.
    assert 4 <= len(runs) <= 15, len(runs)
    gaps = [b - a for a, b in zip(runs, runs[1:])]
    assert max(gaps) >= 0.15, gaps
    assert q.hot_streak("stuck") > 3
    assert ticks >= 20, "the event loop was starved"


async def test_event_adds_during_reconcile_are_never_delayed_and_a_calm_run_ends_the_streak():
    q = WorkQueue(base_delay=0.5, max_delay=1.0, name="calm")
    seen: list[str] = []
    requeue_self = {"n": 10}

    async def reconcile(key: str) -> None:
        seen.append(key)
        if requeue_self["n"] > 0:
            requeue_self["n"] -= 1
            q.add(key)
        await asyncio.sleep(0)

    workers = asyncio.create_task(run_workers(q, reconcile, workers=1))
    q.add("k")
    await asyncio.sleep(0.05)
    assert q.hot_streak("k") == 4, "three free self-requeues, the fourth is delayed"
    requeue_self["n"] = 0
    await asyncio.sleep(0.8)  # the delayed run happens and asks for nothing
    assert q.hot_streak("k") == 0
    # An informer's add (another task) while a reconcile is running is queued at once.
    slow = asyncio.Event()

    async def slow_reconcile(key: str) -> None:
        seen.append(key)
        await slow.wait()

    q.shutdown()
    await workers
    q2 = WorkQueue(base_delay=0.5, name="events")
    seen.clear()
    workers = asyncio.create_task(run_workers(q2, slow_reconcile, workers=1))
    q2.add("e")
    await asyncio.sleep(0.01)
    for _ in range(10):
        q2.add("e")  # from this (test) task, not the reconcile's: never counted as hot
        slow.set()
        await asyncio.sleep(0.01)
        slow.clear()
    await asyncio.sleep(0.05)
    assert q2.hot_streak("e") == 0
    assert len(seen) >= 8
    q2.shutdown()
    slow.set()
    await workers
