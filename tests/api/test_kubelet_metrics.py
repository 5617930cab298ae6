"""The kubelet's /metrics on :10250: authorized as nodes/metrics through the real API server
(anonymous 401, a token without nodes/metrics 403), and Prometheus' text format carrying
kubelet_running_pods, kubelet_running_containers, the pod start-up SLI and the runtime
operations counted by an instrumented runtime. The kubelet server runs in process."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from kubepy.api import certs
from kubepy.api.server import NODE_TOKEN_PREFIX, APIServer, ServerConfig
from kubepy.client import Client, ClientConfig
from kubepy.kubelet.auth import KubeletAuth
from kubepy.kubelet.metrics import KubeletMetrics, instrument_runtime
from kubepy.kubelet.server import KubeletServer
from kubepy.kubelet.servingcert import ensure_serving_cert
from kubepy.metrics import new_registry
from kubepy.store.base import open_store
from tests.api.test_kubelet_auth import NODE, Setup, _Locator


class _Runtime:
    """Answers like the containerd adapter, so its calls can be counted."""

    async def status(self) -> str:
        return "1.6.20"

    async def list_containers(self, *, reap: bool = True) -> list:
        return []

    async def pull(self, ref: str) -> str:
        raise RuntimeError(f"pull {ref}: no registry")


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Setup, KubeletMetrics]]:
    with (tmp_path / "tokens.csv").open("w") as f:
        csv.writer(f).writerow(["tok-admin", "admin", "admin", "system:masters"])
    certs.ensure_ca(tmp_path)
    store = open_store("sqlite", data_dir=str(tmp_path))
    await store.create(NODE_TOKEN_PREFIX + NODE, json.dumps({"token": "tok-node"}).encode())
    server = APIServer(store, ServerConfig(data_dir=tmp_path))
    await server.start()
    api = TestClient(TestServer(server.app()))
    await api.start_server()
    ca = (tmp_path / "ca.crt").read_bytes()
    node_client = Client(ClientConfig(server=str(api.make_url("")).rstrip("/"), token="tok-node", ca_data=ca))
    serving = await ensure_serving_cert(node_client, tmp_path / "pki", node_name=NODE, address="127.0.0.1", ca_pem=ca)
    metrics = KubeletMetrics(new_registry())
    kubelet = KubeletServer(_Locator(), node_name=NODE, auth=KubeletAuth(node_client, node_name=NODE, ca_pem=ca),
                            cert_dir=tmp_path / "pki", address="127.0.0.1", port=0, client_ca=ca, serving_cert=serving,
                            registry=metrics.registry)
    await kubelet.start()
    try:
        yield Setup(api, kubelet, tmp_path), metrics
    finally:
        await kubelet.stop()
        await node_client.close()
        await api.close()
        await server.stop()
        await store.close()


async def test_metrics_are_nodes_metrics_and_carry_the_kubelet_series(setup) -> None:
    s, metrics = setup
    code, out = await s.call("/metrics")
    assert code == 401 and out["reason"] == "Unauthorized", out
    token = await s.sa_token("prometheus")
    await s.grant("prometheus", "nodes/proxy")    # not enough: /metrics is nodes/metrics
    code, out = await s.call("/metrics", token=token)
    assert code == 403 and out["message"].endswith("subresource=metrics)"), out

    # Two pods with running sandboxes (one container running, one exited) and a pod being set up.
    metrics.watch_pods(lambda: [(True, [True, False]), (True, [True]), (False, [])])
    metrics.pod_started(1.5)
    runtime = instrument_runtime(_Runtime(), metrics)
    assert await runtime.status() == "1.6.20"
    await runtime.list_containers()
    await runtime.list_containers(reap=False)
    with pytest.raises(RuntimeError):
        await runtime.pull("busybox")

    monitor = await s.sa_token("monitor")
    await s.grant("monitor", "nodes/metrics")
    # The binding reaches the authorizer through a watch, and the kubelet would cache a denial for
    # 30 s: ask the API server first, until it allows.
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": "system:serviceaccount:default:monitor",
                       "groups": ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"],
                       "resourceAttributes": {"verb": "get", "resource": "nodes", "subresource": "metrics",
                                              "name": NODE}}}
    for _ in range(100):
        if (await s.admin("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review))["status"].get("allowed"):
            break
        await asyncio.sleep(0.05)
    code, text = await s.call("/metrics", token=monitor)
    assert code == 200, text
    got = {(x.name, tuple(sorted(x.labels.items()))): x.value
           for f in text_string_to_metric_families(text) for x in f.samples}
    assert got[("kubelet_running_pods", ())] == 2
    assert got[("kubelet_running_containers", (("container_state", "running"),))] == 2
    assert got[("kubelet_running_containers", (("container_state", "exited"),))] == 1
    assert got[("kubelet_pod_start_sli_duration_seconds_count", ())] == 1
    assert got[("kubelet_pod_start_sli_duration_seconds_bucket", (("le", "2.0"),))] == 1
    assert got[("kubelet_pod_start_sli_duration_seconds_bucket", (("le", "1.0"),))] == 0
    op = "operation_type"
    assert got[("kubelet_runtime_operations_total", ((op, "list_containers"),))] == 2
    assert got[("kubelet_runtime_operations_total", ((op, "status"),))] == 1
    assert got[("kubelet_runtime_operations_errors_total", ((op, "pull_image"),))] == 1
    assert got[("kubelet_runtime_operations_duration_seconds_count", ((op, "list_containers"),))] == 2
    assert ("process_cpu_seconds_total", ()) in got
