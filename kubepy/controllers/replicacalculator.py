"""The horizontal pod autoscaler's arithmetic: desired replicas from pod metrics.

Learnt from upstream's ``pkg/controller/podautoscaler/replica_calculator.go``
and ``metrics/utilization.go`` (written anew): pure functions, no I/O.

Values are integers in milli-units, as upstream's ``MilliValue()``: CPU in
millicores, memory in thousandths of a byte.  Pods are sorted into:

- ignored: being deleted, or Failed: left out entirely;
- unready: Pending; or, for CPU only, not Ready yet or too fresh for its
  sample (within ``cpu_initialization_period`` of its start, the sample must
  postdate the Ready transition by one metric window; after that period, a
  pod that has never been Ready within ``delay_of_initial_readiness_status``
  of its start);
- missing: no metric for it;
- ready: the rest.

The ratio is computed over the ready pods.  If nothing is unready or missing
the answer is ``ceil(ratio × ready)``, unless within ``tolerance`` of 1.
Otherwise upstream's conservative assumptions are applied and the ratio
computed again: on a scale-down missing pods count as using 100% of their
request (or the target, if above 100%; for raw values: the target); on a
scale-up missing and unready pods count as using nothing.  No change happens
if the new ratio is within tolerance or would reverse the direction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kubepy.controllers.pods import parse_time, ready_condition
from kubepy.meta.quantity import parse_quantity

__all__ = ["PodMetric", "ReplicaCalculatorConfig", "MetricsError", "PodGroups", "group_pods", "pod_requests",
           "utilization_ratio", "resource_replicas", "raw_resource_replicas", "milli_value"]


class MetricsError(Exception):
    """No replica count could be computed; the message is upstream's wording."""


@dataclass(frozen=True)
class PodMetric:
    value: int  # milli-units
    timestamp: datetime
    window: timedelta


@dataclass(frozen=True)
class ReplicaCalculatorConfig:
    tolerance: float = 0.1  # --horizontal-pod-autoscaler-tolerance
    # --horizontal-pod-autoscaler-cpu-initialization-period
    cpu_initialization_period: timedelta = timedelta(minutes=5)
    # --horizontal-pod-autoscaler-initial-readiness-delay
    delay_of_initial_readiness_status: timedelta = timedelta(seconds=30)


@dataclass
class PodGroups:
    ready_count: int = 0
    unready: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    ignored: set[str] = field(default_factory=set)


def milli_value(quantity: Any) -> int:
    """A quantity in milli-units, rounded up (``resource.Quantity.MilliValue``)."""
    return math.ceil(parse_quantity(quantity) * 1000)


def _d(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def group_pods(pods: list[dict], metrics: Mapping[str, PodMetric], resource: str, config: ReplicaCalculatorConfig,
               now: datetime) -> PodGroups:
    groups = PodGroups()
    for pod in pods:
        name = pod["metadata"]["name"]
        status = _d(pod.get("status"))
        if pod["metadata"].get("deletionTimestamp") or status.get("phase") == "Failed":
            groups.ignored.add(name)
            continue
        if status.get("phase") == "Pending":
            groups.unready.add(name)
            continue
        metric = metrics.get(name)
        if metric is None:
            groups.missing.add(name)
            continue
        if resource == "cpu":
            condition = ready_condition(pod)
            start = parse_time(status.get("startTime"))
            if condition is None or start is None:
                unready = True
            else:
                transition = parse_time(condition.get("lastTransitionTime")) or start
                if start + config.cpu_initialization_period > now:
                    # Within the initialization period: not Ready, or no full window of samples since it became so.
                    unready = condition.get("status") == "False" or metric.timestamp < transition + metric.window
                else:
                    # Afterwards only a pod that has never been Ready is left out.
                    unready = (condition.get("status") == "False"
                               and start + config.delay_of_initial_readiness_status > transition)
            if unready:
                groups.unready.add(name)
                continue
        groups.ready_count += 1
    return groups


def pod_requests(pods: list[dict], resource: str, container: str = "") -> dict[str, int]:
    """Each pod's request of ``resource`` (milli-units), summed over its containers (and its
    restartable init containers); a container without a request is an error, as upstream."""
    out: dict[str, int] = {}
    for pod in pods:
        spec = _d(pod.get("spec"))
        containers = list(spec.get("containers") or [])
        containers += [c for c in spec.get("initContainers") or [] if _d(c).get("restartPolicy") == "Always"]
        total = 0
        for c in containers:
            if container and c.get("name") != container:
                continue
            request = _d(_d(c.get("resources")).get("requests")).get(resource)
            if request is None:
                raise MetricsError(f"missing request for {resource} in container {c.get('name')} "
                                   f"of Pod {pod['metadata']['name']}")
            total += milli_value(request)
        out[pod["metadata"]["name"]] = total
    return out


def utilization_ratio(metrics: Mapping[str, PodMetric], requests: Mapping[str, int],
                      target_utilization: int) -> tuple[float, int, int]:
    """(usage ratio, current utilization %, raw average value): upstream's GetResourceUtilizationRatio."""
    metrics_total = requests_total = entries = 0
    for name, metric in metrics.items():
        if name not in requests:
            continue  # a metric without a known pod
        metrics_total += metric.value
        requests_total += requests[name]
        entries += 1
    if requests_total == 0:
        raise MetricsError("no metrics returned matched known pods")
    utilization = (metrics_total * 100) // requests_total
    return utilization / target_utilization, utilization, metrics_total // entries


def _usage_ratio(metrics: Mapping[str, PodMetric], target: int) -> tuple[float, int]:
    total = sum(m.value for m in metrics.values())
    return (total / len(metrics)) / target, total // len(metrics)


def _within(ratio: float, tolerance: float) -> bool:
    return abs(1.0 - ratio) <= tolerance


def _usable(pods: list[dict], metrics: Mapping[str, PodMetric], resource: str, config: ReplicaCalculatorConfig,
            now: datetime) -> tuple[list[dict], dict[str, PodMetric], PodGroups]:
    if not pods:
        raise MetricsError("no pods returned by selector while calculating replica count")
    groups = group_pods(pods, metrics, resource, config, now)
    kept = {n: m for n, m in metrics.items() if n not in groups.ignored and n not in groups.unready}
    if not kept:
        raise MetricsError("did not receive metrics for targeted pods (pods might be unready)")
    return pods, kept, groups


def _settle(current: int, ratio: float, new_ratio: float, counted: int, tolerance: float) -> int:
    """The replica count once missing and unready pods are assumed in: no change within tolerance
    or when the assumptions would reverse the direction of the change."""
    if _within(new_ratio, tolerance) or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    proposal = math.ceil(new_ratio * counted)
    if (new_ratio < 1.0 and proposal > current) or (new_ratio > 1.0 and proposal < current):
        return current
    return proposal


def resource_replicas(current: int, target_utilization: int, resource: str, pods: list[dict],
                      metrics: Mapping[str, PodMetric], config: ReplicaCalculatorConfig, now: datetime,
                      container: str = "") -> tuple[int, int, int]:
    """(replicas, utilization %, raw average milli-value) for a Utilization target (GetResourceReplicas)."""
    pods, kept, groups = _usable(pods, metrics, resource, config, now)
    requests = pod_requests(pods, resource, container)
    ratio, utilization, raw = utilization_ratio(kept, requests, target_utilization)
    scale_up_with_unready = bool(groups.unready) and ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if _within(ratio, config.tolerance):
            return current, utilization, raw
        return math.ceil(ratio * groups.ready_count), utilization, raw
    assumed = dict(kept)
    if groups.missing:
        if ratio < 1.0:
            fallback = max(100, target_utilization)
            for name in groups.missing:
                assumed[name] = PodMetric(requests[name] * fallback // 100, now, timedelta(0))
        elif ratio > 1.0:
            for name in groups.missing:
                assumed[name] = PodMetric(0, now, timedelta(0))
    if scale_up_with_unready:
        for name in groups.unready:
            assumed[name] = PodMetric(0, now, timedelta(0))
    new_ratio, _, _ = utilization_ratio(assumed, requests, target_utilization)
    return _settle(current, ratio, new_ratio, len(assumed), config.tolerance), utilization, raw


def raw_resource_replicas(current: int, target_milli: int, resource: str, pods: list[dict],
                          metrics: Mapping[str, PodMetric], config: ReplicaCalculatorConfig,
                          now: datetime) -> tuple[int, int]:
    """(replicas, average milli-value) for an AverageValue target (GetRawResourceReplicas)."""
    pods, kept, groups = _usable(pods, metrics, resource, config, now)
    ratio, usage = _usage_ratio(kept, target_milli)
    scale_up_with_unready = bool(groups.unready) and ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if _within(ratio, config.tolerance):
            return current, usage
        return math.ceil(ratio * groups.ready_count), usage
    assumed = dict(kept)
    for name in groups.missing:
        # on a scale-down missing pods use exactly the target; on a scale-up, nothing
        assumed[name] = PodMetric(target_milli if ratio < 1.0 else 0, now, timedelta(0))
    if scale_up_with_unready:
        for name in groups.unready:
            assumed[name] = PodMetric(0, now, timedelta(0))
    new_ratio, _ = _usage_ratio(assumed, target_milli)
    return _settle(current, ratio, new_ratio, len(assumed), config.tolerance), usage
