"""kube-scheduler's metrics, with upstream's names and labels (pkg/scheduler/metrics).

- ``scheduler_schedule_attempts_total{result,profile}`` - attempts by result:
  ``scheduled``, ``unschedulable`` or ``error``
- ``scheduler_scheduling_attempt_duration_seconds{result,profile}`` - one attempt,
  filtering and scoring (the binding runs on after it, as upstream's does)
- ``scheduler_pending_pods{queue}`` - pods waiting: ``active`` (queued now),
  ``backoff`` (waiting out a failure's backoff), ``unschedulable`` (until the
  cluster changes), ``gated`` (held back by ``spec.schedulingGates``); read from the
  scheduler's queues when scraped
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Histogram

from kubepy.metrics import CollectorRegistry, GaugeCallback

__all__ = ["SchedulerMetrics"]

# Upstream: ExponentialBuckets(0.001, 2, 15).
ATTEMPT_BUCKETS = tuple(0.001 * 2 ** i for i in range(15))


class SchedulerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter("scheduler_schedule_attempts",
                                "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod "
                                "could not be scheduled, while 'error' means an internal scheduler problem.",
                                ["result", "profile"], registry=registry)
        self.attempt_duration = Histogram("scheduler_scheduling_attempt_duration_seconds",
                                          "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
                                          ["result", "profile"], buckets=ATTEMPT_BUCKETS, registry=registry)
        self._pending: Callable[[], dict[str, int]] = dict
        GaugeCallback("scheduler_pending_pods",
                      "Number of pending pods, by the queue type. 'active' means number of pods in activeQ; "
                      "'backoff' means number of pods in backoffQ; 'unschedulable' means number of pods in "
                      "unschedulablePods that the scheduler attempted to schedule and failed; 'gated' is the "
                      "number of unschedulable pods that the scheduler never attempted to schedule because "
                      "they are gated.", ["queue"],
                      lambda: [((queue,), count) for queue, count in self._pending().items()], registry=registry)

    def watch_pending(self, pending: Callable[[], dict[str, int]]) -> None:
        """Where ``scheduler_pending_pods`` is read from (the running scheduler's queues)."""
        self._pending = pending

    def attempted(self, result: str, profile: str, seconds: float) -> None:
        self.attempts.labels(result, profile).inc()
        self.attempt_duration.labels(result, profile).observe(seconds)
