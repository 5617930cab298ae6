"""The kubelet's ``/metrics`` (on :10250, authorized as ``nodes/metrics``), with upstream's names.

- ``kubelet_running_pods`` - pods whose sandbox runs; ``kubelet_running_containers{container_state}``
  - their containers by state (``running``, ``exited``); both read from the pod workers when scraped
- ``kubelet_pod_start_sli_duration_seconds`` - from when the kubelet saw a pod until all its app
  containers ran, image pulls left out (upstream's pod start-up SLI)
- ``kubelet_runtime_operations_total``, ``_errors_total`` and ``_duration_seconds{operation_type}`` -
  every call into the container runtime (``ctr``), by upstream's CRI operation names

``instrument_runtime`` wraps a ``Runtime``'s methods, as upstream's instrumentedRuntimeService wraps
the CRI client: the runtime itself stays unaware of metrics.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import Counter, Histogram

from kubepy.metrics import CollectorRegistry, GaugeCallback

__all__ = ["KubeletMetrics", "RUNTIME_OPERATIONS", "instrument_runtime"]

# Runtime method -> upstream's operation_type (pkg/kubelet/kuberuntime/instrumented_services.go).
RUNTIME_OPERATIONS = {
    "status": "status", "pull": "pull_image", "list_images": "list_images", "image_info": "image_status",
    "remove_image": "remove_image", "run": "start_container", "kill": "stop_container",
    "remove": "remove_container", "list_containers": "list_containers", "exit_status": "container_status",
    "exec": "exec",
}
# Upstream: ExponentialBuckets(0.005, 2.5, 14) for runtime operations.
RUNTIME_BUCKETS = tuple(0.005 * 2.5 ** i for i in range(14))
# Upstream's pod start SLI buckets.
POD_START_BUCKETS = (0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200,
                     1800, 2700, 3600)

# What the workers are: (sandbox running, [container running?, ...]) per pod.
PodStates = Callable[[], Iterable[tuple[bool, list[bool]]]]


class KubeletMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._pods: PodStates = list
        self.pod_start = Histogram("kubelet_pod_start_sli_duration_seconds",
                                   "Duration in seconds to start a pod, excluding time to pull images and run "
                                   "init containers, measured from pod creation timestamp to when all its "
                                   "containers are reported as started and observed via watch",
                                   buckets=POD_START_BUCKETS, registry=registry)
        self.operations = Counter("kubelet_runtime_operations", "Cumulative number of runtime operations by "
                                  "operation type.", ["operation_type"], registry=registry)
        self.errors = Counter("kubelet_runtime_operations_errors", "Cumulative number of runtime operation "
                              "errors by operation type.", ["operation_type"], registry=registry)
        self.durations = Histogram("kubelet_runtime_operations_duration_seconds", "Duration in seconds of "
                                   "runtime operations. Broken down by operation type.", ["operation_type"],
                                   buckets=RUNTIME_BUCKETS, registry=registry)
        GaugeCallback("kubelet_running_pods", "Number of pods that have a running pod sandbox", [],
                      lambda: [((), sum(1 for sandbox, _ in self._pods() if sandbox))], registry=registry)
        GaugeCallback("kubelet_running_containers", "Number of containers currently running",
                      ["container_state"], self._containers, registry=registry)

    def watch_pods(self, pods: PodStates) -> None:
        """Where the running pods and containers are read from (the kubelet's pod workers)."""
        self._pods = pods

    def _containers(self) -> list[tuple[tuple[str], float]]:
        running = exited = 0
        for _, containers in self._pods():
            running += sum(containers)
            exited += len(containers) - sum(containers)
        return [(("running",), running), (("exited",), exited)]

    def pod_started(self, seconds: float) -> None:
        self.pod_start.observe(seconds)


def instrument_runtime(runtime: Any, metrics: KubeletMetrics) -> Any:
    """``runtime`` with each method of RUNTIME_OPERATIONS counted and timed (on the instance)."""
    for method, operation in RUNTIME_OPERATIONS.items():
        original = getattr(runtime, method, None)
        if original is None:
            continue
        setattr(runtime, method, _timed(original, operation, metrics))
    return runtime


def _timed(call: Callable[..., Any], operation: str, metrics: KubeletMetrics) -> Callable[..., Any]:
    total, errors = metrics.operations.labels(operation), metrics.errors.labels(operation)
    duration = metrics.durations.labels(operation)

    @functools.wraps(call)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        total.inc()
        try:
            return await call(*args, **kwargs)
        except Exception:
            errors.inc()
            raise
        finally:
            duration.observe(time.monotonic() - started)

    return timed
