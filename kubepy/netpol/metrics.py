"""The network-policy agent's sync metrics. Upstream Kubernetes has no such agent, so the names
follow kube-proxy's (``kubeproxy_sync_proxy_rules_*``) under kubepy's own prefix:

- ``kubepy_netpol_sync_rules_duration_seconds`` - every sync that rendered rules, failed ones too
- ``kubepy_netpol_sync_rules_last_timestamp_seconds`` - when the rules were last applied (or found current)

Served as ``/metrics`` on ``--metrics-bind-address`` (default 127.0.0.1:10262), beside ``/healthz``,
``/livez`` and ``/readyz`` (``kubepy.healthz``).
"""

from __future__ import annotations

import time

from prometheus_client import Gauge, Histogram

from kubepy.metrics import CollectorRegistry

__all__ = ["AgentMetrics"]

SYNC_BUCKETS = tuple(0.001 * 2 ** i for i in range(15))


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sync_duration = Histogram("kubepy_netpol_sync_rules_duration_seconds",
                                       "Network-policy rule sync latency in seconds", buckets=SYNC_BUCKETS,
                                       registry=registry)
        self.last_sync = Gauge("kubepy_netpol_sync_rules_last_timestamp_seconds",
                               "The last time network-policy rules were successfully synced", registry=registry)

    def synced(self, seconds: float, *, ok: bool) -> None:
        self.sync_duration.observe(seconds)
        if ok:
            self.last_sync.set(time.time())
