"""Pod resource metrics for the horizontal pod autoscaler, from ``metrics.k8s.io/v1beta1``.

Role: the seam between the HPA controller and wherever usage comes from.
``ResourceMetricsClient`` is the one-method Protocol the controller needs;
``RESTMetricsClient`` answers it from the aggregated ``metrics.k8s.io`` API
(``GET /apis/metrics.k8s.io/v1beta1/namespaces/NS/pods?labelSelector=…``,
PodMetrics as the metrics server serves them), as upstream's
``pkg/controller/podautoscaler/metrics/client.go``: a pod's value is the sum
over its containers (or the one container asked for), and a pod with a
container that reports no usage of the resource is left out (missing).
Tests give the controller a fake instead.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from kubepy.client import APIStatusError, Client, TransportError
from kubepy.controllers.pods import parse_time
from kubepy.controllers.replicacalculator import MetricsError, PodMetric, milli_value

__all__ = ["ResourceMetricsClient", "RESTMetricsClient", "pod_metrics_from_list", "METRICS_PATH"]

METRICS_PATH = "/apis/metrics.k8s.io/v1beta1"


class ResourceMetricsClient(Protocol):
    async def pod_resource_metrics(self, resource: str, namespace: str, selector: str,
                                   container: str = "") -> tuple[dict[str, PodMetric], datetime]:
        """{pod name: metric} of the pods ``selector`` picks, and the samples' timestamp;
        raises ``MetricsError`` when there are none."""
        ...


def _window(value: Any) -> timedelta:
    """A metav1.Duration such as ``"30s"``, ``"1m0s"`` or ``"15.5s"``."""
    text, total, number = str(value or ""), 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else ch
        total += float(number or 0) * units.get(unit, 0.0)
        number, i = "", i + len(unit)
    return timedelta(seconds=total)


def pod_metrics_from_list(items: list[dict[str, Any]], resource: str,
                          container: str = "") -> tuple[dict[str, PodMetric], datetime]:
    if not items:
        raise MetricsError("no metrics returned from resource metrics API")
    out: dict[str, PodMetric] = {}
    for m in items:
        total, missing, seen = 0, False, False
        for c in m.get("containers") or []:
            if container and c.get("name") != container:
                continue
            seen = True
            usage = (c.get("usage") or {}).get(resource)
            if usage is None:
                missing = True
                break
            total += milli_value(usage)
        if container and not seen:
            missing = True
        if not missing:
            out[m["metadata"]["name"]] = PodMetric(total, parse_time(m.get("timestamp")) or datetime.min,
                                                   _window(m.get("window")))
    first = parse_time(items[0].get("timestamp"))
    return out, first or datetime.now().astimezone()


class RESTMetricsClient:
    def __init__(self, client: Client) -> None:
        self.client = client

    async def pod_resource_metrics(self, resource: str, namespace: str, selector: str,
                                   container: str = "") -> tuple[dict[str, PodMetric], datetime]:
        try:
            answer = await self.client.get_path(f"{METRICS_PATH}/namespaces/{namespace}/pods",
                                                params={"labelSelector": selector})
        except (APIStatusError, TransportError) as e:
            raise MetricsError(f"unable to fetch metrics from resource metrics API: {e}") from e
        items = answer.get("items") if isinstance(answer, dict) else None
        return pod_metrics_from_list(items or [], resource, container)
