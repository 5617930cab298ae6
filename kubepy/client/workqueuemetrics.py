"""client-go's work-queue metrics on a daemon's registry (``workqueue_*{name}``).

``WorkQueueMetrics(registry)`` is a ``QueueMetricsProvider``: put it in
``kubepy.client.workqueue.QUEUE_METRICS`` before making the queues (the
controller manager does, for all its controllers) and each named queue
reports under its own ``name`` label:

- ``workqueue_adds_total`` - keys added (a key already waiting is not added again)
- ``workqueue_depth`` - keys waiting now, read from the queues when scraped
- ``workqueue_queue_duration_seconds`` - how long a key waited before a worker took it
- ``workqueue_work_duration_seconds`` - how long a worker took over it
- ``workqueue_retries_total`` - re-adds after a failure (with backoff)
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from kubepy.client.workqueue import WorkQueue
from kubepy.metrics import WORKQUEUE_BUCKETS, CollectorRegistry, GaugeCallback

__all__ = ["WorkQueueMetrics"]


class _Queue:
    def __init__(self, owner: WorkQueueMetrics, name: str) -> None:
        self._adds = owner.adds.labels(name)
        self._retries = owner.retries.labels(name)
        self._waits = owner.queue_duration.labels(name)
        self._works = owner.work_duration.labels(name)

    def added(self) -> None:
        self._adds.inc()

    def retried(self) -> None:
        self._retries.inc()

    def waited(self, seconds: float) -> None:
        self._waits.observe(seconds)

    def worked(self, seconds: float) -> None:
        self._works.observe(seconds)


class WorkQueueMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._queues: list[WorkQueue] = []
        self.adds = Counter("workqueue_adds", "Total number of adds handled by workqueue", ["name"],
                            registry=registry)
        self.retries = Counter("workqueue_retries", "Total number of retries handled by workqueue", ["name"],
                               registry=registry)
        self.queue_duration = Histogram("workqueue_queue_duration_seconds",
                                        "How long in seconds an item stays in workqueue before being requested.",
                                        ["name"], buckets=WORKQUEUE_BUCKETS, registry=registry)
        self.work_duration = Histogram("workqueue_work_duration_seconds",
                                       "How long in seconds processing an item from workqueue takes.",
                                       ["name"], buckets=WORKQUEUE_BUCKETS, registry=registry)
        GaugeCallback("workqueue_depth", "Current depth of workqueue", ["name"], self._depths, registry=registry)

    def new_queue(self, queue: WorkQueue) -> _Queue:
        # A new list, not an append: a scrape on another thread may be walking the old one. Queues
        # shut down (a lost leadership's controllers) drop out, so their names count only live ones.
        self._queues = [q for q in self._queues if not q.is_shutting_down] + [queue]
        return _Queue(self, queue.name)

    def _depths(self) -> list[tuple[tuple[str], float]]:
        depths: dict[str, float] = {}
        for q in self._queues:
            if not q.is_shutting_down:
                depths[q.name] = depths.get(q.name, 0) + len(q)
        return [((name,), depth) for name, depth in depths.items()]
