"""``WorkQueue``: keys waiting to be reconciled, and the workers that drain it.

Kubernetes' work-queue contract: a key waiting is queued once however
often it is added; a key being processed is never handed to a second
worker - adding it marks it dirty and it is queued again on ``done``;
failures requeue with per-key exponential backoff until ``forget``.
Event handlers only ``add`` keys; ``run_workers`` calls ``reconcile(key)``.
Talks to nothing outside the event loop.

Two guards make a hot loop impossible, whatever a controller does:

- A reconcile that re-queues its own key with no delay (``add`` or
  ``add_after(key, 0)`` from inside ``reconcile(key)``) more than
  ``HOT_FREE`` times in a row gets the same per-key backoff as a failure.
  The streak ends when a reconcile of that key finishes without asking to
  come straight back. Adds from event handlers are never delayed: they run
  in the informers' tasks, not in the worker's, which is how the two are told
  apart (a context variable holds the key a worker is reconciling).
- A worker yields to the event loop after every key, so a reconcile that never
  awaits cannot starve informers, other controllers or the health endpoint.

Metrics (client-go's ``workqueue_*`` series, ``kubepy.client.workqueuemetrics``): a
queue made while ``QUEUE_METRICS`` holds a provider reports its adds, how long
keys wait and how long they take to it, as upstream's ``workqueue.SetProvider``;
the provider sits in a context variable rather than a global so that several
daemons in one test process each count their own queues.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)

# Self-requeues with no delay allowed in a row before backoff applies.
HOT_FREE = 3

# The key the current worker task is reconciling (None outside a worker).
_reconciling: contextvars.ContextVar[str | None] = contextvars.ContextVar("kubepy_reconciling", default=None)


class QueueMetrics(Protocol):
    """What a queue reports (client-go's queueMetrics): each call is cheap and never fails."""

    def added(self) -> None: ...
    def waited(self, seconds: float) -> None: ...
    def worked(self, seconds: float) -> None: ...
    def retried(self) -> None: ...


class QueueMetricsProvider(Protocol):
    def new_queue(self, queue: WorkQueue) -> QueueMetrics: ...


# The provider queues made in this context report to (None: no metrics).
QUEUE_METRICS: contextvars.ContextVar[QueueMetricsProvider | None] = contextvars.ContextVar(
    "kubepy_queue_metrics", default=None)


class QueueShutdown(Exception):
    """The queue was shut down: workers stop."""


class WorkQueue:
    def __init__(self, *, base_delay: float = 0.05, max_delay: float = 60.0, name: str = "") -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.name = name
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()  # needs processing: queued, or to be queued when done
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}  # add_after: one timer per key, the earliest
        self._self_requeued: set[str] = set()  # asked to come straight back by their own reconcile
        self._hot: dict[str, int] = {}  # consecutive reconciles that re-queued themselves at once
        self._getters: list[asyncio.Future[None]] = []
        self._shutting_down = False
        self._added_at: dict[str, float] = {}  # keys queued and not yet handed out: when they were added
        self._started_at: dict[str, float] = {}  # keys being processed: when a worker got them
        provider = QUEUE_METRICS.get()
        self._metrics = provider.new_queue(self) if provider is not None and name else None

    def add(self, key: str) -> None:
        self._add(key, by_own_reconcile=_reconciling.get() == key)

    def _add(self, key: str, *, by_own_reconcile: bool) -> None:
        if self._shutting_down:
            return
        if by_own_reconcile and key in self._processing:
            self._self_requeued.add(key)
        if key in self._dirty:
            return
        self._dirty.add(key)
        if self._metrics is not None:
            self._metrics.added()
            self._added_at.setdefault(key, time.monotonic())
        if key in self._processing:
            return
        self._push(key)
        self._wake()

    def add_after(self, key: str, delay: float) -> None:
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def add_rate_limited(self, key: str) -> None:
        if self._metrics is not None:
            self._metrics.retried()
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        self.add_after(key, min(self.base_delay * 2 ** failures, self.max_delay))

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: str) -> int:
        return self._failures.get(key, 0)

    async def get(self) -> str:
        """The next key to process; the caller must call ``done(key)``."""
        while True:
            if self._shutting_down:
                raise QueueShutdown(self.name)
            if self._queue:
                key = self._pop()
                self._dirty.discard(key)
                self._processing.add(key)
                if self._metrics is not None:
                    now = time.monotonic()
                    self._metrics.waited(now - self._added_at.pop(key, now))
                    self._started_at[key] = now
                return key
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._getters:
                    self._getters.remove(waiter)

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if self._metrics is not None:
            started = self._started_at.pop(key, None)
            if started is not None:
                self._metrics.worked(time.monotonic() - started)
        if key in self._self_requeued:
            self._self_requeued.discard(key)
            streak = self._hot.get(key, 0) + 1
            self._hot[key] = streak
            if streak > HOT_FREE and key in self._dirty and not self._shutting_down:
                # A hot loop: the key comes back after the backoff, not at once.
                delay = min(self.base_delay * 2 ** (streak - HOT_FREE - 1), self.max_delay)
                self._dirty.discard(key)
                self._added_at.pop(key, None)  # it waits again from when the backoff re-adds it
                if streak == HOT_FREE + 1 or delay >= self.max_delay:
                    log.warning("hot requeue queue=%s key=%s streak=%d delay=%.2fs", self.name, key, streak, delay)
                self.add_after(key, delay)
                return
        else:
            self._hot.pop(key, None)
        if key in self._dirty and not self._shutting_down:
            self._push(key)
            self._wake()

    def hot_streak(self, key: str) -> int:
        """How many reconciles of ``key`` in a row re-queued it at once (0 when it is not looping)."""
        return self._hot.get(key, 0)

    def shutdown(self) -> None:
        self._shutting_down = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._wake()

    @property
    def is_shutting_down(self) -> bool:
        return self._shutting_down

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def num_delayed(self) -> int:
        """Keys waiting for their ``add_after`` (a backoff) before they are queued."""
        return len(self._timers)

    def _push(self, key: str) -> None:
        self._queue.append(key)

    def _pop(self) -> str:
        return self._queue.popleft()

    def _fire(self, key: str) -> None:
        # A timer is never the reconcile itself, whatever context it was scheduled from.
        self._timers.pop(key, None)
        self._add(key, by_own_reconcile=False)

    def _wake(self) -> None:
        # Wake every waiting getter; each re-checks the queue, so a getter
        # cancelled after being woken cannot strand an item.
        getters, self._getters = self._getters, []
        for waiter in getters:
            if not waiter.done():
                waiter.set_result(None)


async def run_workers(queue: WorkQueue, reconcile: Callable[[str], Awaitable[None]], *, workers: int = 2,
                      logger: logging.Logger | None = None) -> None:
    """Drain ``queue`` with ``workers`` concurrent loops until it shuts down.

    However it ends (shutdown or cancellation), the queue is shut down on the
    way out: with its workers gone, nothing would ever drain it again."""
    logger = logger or log

    async def worker() -> None:
        while True:
            try:
                key = await queue.get()
            except QueueShutdown:
                return
            token = _reconciling.set(key)
            try:
                await reconcile(key)
            except Exception as e:  # noqa: BLE001 - any failure is retried with backoff
                logger.warning("reconcile failed queue=%s key=%s requeues=%d err=%s", queue.name, key,
                               queue.num_requeues(key), f"{type(e).__name__}: {e}".replace("\n", " "))
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
            finally:
                _reconciling.reset(token)
                queue.done(key)
            await asyncio.sleep(0)  # let the rest of the loop run between keys, even if reconcile never awaited

    tasks = [asyncio.create_task(worker(), name=f"worker-{queue.name}-{i}") for i in range(workers)]
    try:
        await asyncio.gather(*tasks)
    finally:
        queue.shutdown()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
