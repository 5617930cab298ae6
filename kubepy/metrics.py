"""``/metrics`` in the Prometheus text format, for every kubepy daemon.

Each daemon keeps one ``prometheus_client.CollectorRegistry`` of its own
(never the library's global default: tests run several daemons in one
process, and each must show only its own series), with ``process_*``
series added. A component defines its metrics on that registry with
Kubernetes' names and labels; this module only makes registries and
turns one into an HTTP answer (text format 0.0.4, or OpenMetrics when a
scraper asks for it, as Prometheus does).

Talks to nothing: the daemons serve the answer on their own ports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

__all__ = ["CollectorRegistry", "GaugeCallback", "exposition", "new_registry"]

# Kubernetes' request-duration buckets (apiserver_request_duration_seconds, pkg/endpoints/metrics).
REQUEST_DURATION_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10,
                            15, 20, 30, 45, 60)
# client-go's workqueue buckets: 10 ns … 10 s, exponential by 10.
WORKQUEUE_BUCKETS = tuple(10.0 ** e for e in range(-8, 2))


def new_registry() -> CollectorRegistry:
    """A daemon's registry: empty but for the process's own ``process_*`` and ``python_info`` series."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The registry's series as a scrape answer: (body, Content-Type) for this ``Accept`` header."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class GaugeCallback(Collector):
    """Gauges read at scrape time: ``read()`` yields (label values, value) for each series.

    For counts the daemon already keeps (queue lengths, cache sizes, running pods): reading them
    when Prometheus asks costs nothing on the daemon's own paths. ``read`` may run on another
    thread than the daemon's event loop (the health server's): it must only read."""

    def __init__(self, name: str, documentation: str, labels: Iterable[str],
                 read: Callable[[], Iterable[tuple[tuple[str, ...], float]]],
                 *, registry: CollectorRegistry | None = None) -> None:
        self.name, self.documentation, self.labels, self.read = name, documentation, tuple(labels), read
        if registry is not None:
            registry.register(self)

    def describe(self) -> list[Any]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self) -> list[Any]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, value in self.read():
            family.add_metric(list(values), value)
        return [family]
