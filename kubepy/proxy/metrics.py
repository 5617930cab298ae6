"""kube-proxy's sync metrics, with upstream's names (pkg/proxy/metrics).

- ``kubeproxy_sync_proxy_rules_duration_seconds`` - every sync, failed ones too
- ``kubeproxy_sync_proxy_rules_last_timestamp_seconds`` - when the rules were last applied
- ``kubeproxy_sync_proxy_rules_iptables_total{table}`` is not kept: the ruleset's size is in the sync log line

Served as ``/metrics`` on ``--metrics-bind-address`` (upstream's 127.0.0.1:10249), beside
``/healthz``, ``/livez`` and ``/readyz`` (``kubepy.healthz``).
"""

from __future__ import annotations

import time

from prometheus_client import Gauge, Histogram

from kubepy.metrics import CollectorRegistry

__all__ = ["ProxyMetrics"]

# Upstream: ExponentialBuckets(0.001, 2, 15).
SYNC_BUCKETS = tuple(0.001 * 2 ** i for i in range(15))


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sync_duration = Histogram("kubeproxy_sync_proxy_rules_duration_seconds",
                                       "SyncProxyRules latency in seconds", buckets=SYNC_BUCKETS, registry=registry)
        self.last_sync = Gauge("kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                               "The last time proxy rules were successfully synced", registry=registry)

    def synced(self, seconds: float, *, ok: bool) -> None:
        self.sync_duration.observe(seconds)
        if ok:
            self.last_sync.set(time.time())
