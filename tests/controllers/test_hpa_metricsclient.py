"""The HPA's metrics.k8s.io client against a fake aggregated API at the HTTP level:
the path and labelSelector it asks for, PodMetrics summed per pod in milli-units,
a pod with a container reporting no usage left out (missing), the window parsed,
and a failing API worded as upstream's metrics client words it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kubepy.client import Client, ClientConfig
from kubepy.controllers.metricsclient import RESTMetricsClient, pod_metrics_from_list
from kubepy.controllers.replicacalculator import MetricsError

POD_METRICS = [
    {"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "web"}}, "timestamp": "2026-01-01T00:00:00Z",
     "window": "30s", "containers": [{"name": "c", "usage": {"cpu": "12m", "memory": "10Mi"}},
                                     {"name": "side", "usage": {"cpu": "1234567n", "memory": "12345Ki"}}]},
    {"metadata": {"name": "b", "namespace": "ns"}, "timestamp": "2026-01-01T00:00:01Z", "window": "1m0.5s",
     "containers": [{"name": "c", "usage": {"memory": "1Mi"}}]},
]


def test_pod_metrics_sum_containers_in_milli_units_and_leave_out_incomplete_pods():
    cpu, ts = pod_metrics_from_list(POD_METRICS, "cpu")
    assert set(cpu) == {"a"}  # b reports no cpu for its container
    assert cpu["a"].value == 12 + 2  # 1234567n is 1.234567m, rounded up as MilliValue does
    assert cpu["a"].window == timedelta(seconds=30) and ts.isoformat() == "2026-01-01T00:00:00+00:00"
    memory, _ = pod_metrics_from_list(POD_METRICS, "memory")
    assert memory["a"].value == (10 * 1024 * 1024 + 12345 * 1024) * 1000
    assert memory["b"].window == timedelta(seconds=60.5)
    only_side, _ = pod_metrics_from_list(POD_METRICS, "cpu", container="side")
    assert only_side["a"].value == 2 and "b" not in only_side
    with pytest.raises(MetricsError, match="no metrics returned from resource metrics API"):
        pod_metrics_from_list([], "cpu")


async def test_the_rest_client_asks_metrics_k8s_io_for_the_selected_pods():
    asked: list[tuple[str, str]] = []

    async def pods(request: web.Request) -> web.Response:
        asked.append((request.path, request.query.get("labelSelector", "")))
        if request.match_info["ns"] == "gone":
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503,
                                      "reason": "ServiceUnavailable", "message": "the server is currently unable "
                                      "to handle the request"}, status=503)
        return web.json_response({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
                                  "metadata": {}, "items": POD_METRICS})

    app = web.Application()
    app.router.add_get("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods", pods)
    server = TestServer(app)
    await server.start_server()
    client = Client(ClientConfig(server=str(server.make_url("")).rstrip("/"), token=None))
    try:
        metrics, _ = await RESTMetricsClient(client).pod_resource_metrics("cpu", "ns", "app=web,tier in (a,b)")
        assert metrics["a"].value == 14
        assert asked == [("/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods", "app=web,tier in (a,b)")]
        with pytest.raises(MetricsError, match="^unable to fetch metrics from resource metrics API: 503"):
            await RESTMetricsClient(client).pod_resource_metrics("cpu", "gone", "app=web")
    finally:
        await client.close()
        await server.close()
