"""The API server's /metrics, in process: who may read it (system:monitoring, not anonymous,
not any authenticated user), and that it is Prometheus' text format carrying kube-apiserver's
series with their labels, counted from real requests to the aiohttp app.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from kubepy.api.server import APIServer, ServerConfig
from kubepy.store.base import open_store

USERS = {"admin": "system:masters", "prom": "system:monitoring", "alice": ""}


def _headers(who: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer tok-{who}"} if who else {}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    with (tmp_path / "tokens.csv").open("w") as f:
        for name, groups in USERS.items():
            csv.writer(f).writerow([f"tok-{name}", name, name, groups])
    store = open_store("sqlite", data_dir=str(tmp_path))
    server = APIServer(store, ServerConfig(data_dir=tmp_path))
    await server.start()
    c = TestClient(TestServer(server.app()))
    await c.start_server()
    try:
        yield c
    finally:
        await c.close()
        await server.stop()
        await store.close()


async def _scrape(client: TestClient, who: str = "prom") -> dict[str, list]:
    resp = await client.get("/metrics", headers=_headers(who))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {f.name: f.samples for f in text_string_to_metric_families(await resp.text())}


def _sample(samples: list, name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert found, f"no {name}{labels} in {[(s.name, s.labels) for s in samples][:20]}"
    return sum(found)


async def test_metrics_need_system_monitoring(client: TestClient) -> None:
    resp = await client.get("/metrics")
    assert resp.status == 401
    resp = await client.get("/metrics", headers=_headers("alice"))
    assert resp.status == 403
    assert (await resp.json())["message"] == 'forbidden: User "alice" cannot get path "/metrics"'
    assert (await client.get("/metrics", headers=_headers("prom"))).status == 200
    assert (await client.get("/metrics", headers=_headers("admin"))).status == 200


async def test_request_counts_and_durations_by_kubernetes_labels(client: TestClient) -> None:
    admin = _headers("admin")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"}, "data": {"a": "1"}}
    for i in range(3):
        cm["metadata"]["name"] = f"c{i}"
        resp = await client.post("/api/v1/namespaces/default/configmaps", data=json.dumps(cm),
                                 headers={**admin, "Content-Type": "application/json"})
        assert resp.status == 201
    assert (await client.get("/api/v1/namespaces/default/configmaps/c0", headers=admin)).status == 200
    assert (await client.get("/api/v1/namespaces/default/configmaps/nope", headers=admin)).status == 404
    assert (await client.get("/api/v1/configmaps", headers=admin)).status == 200
    apply = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c0"}, "data": {"a": "2"}}
    resp = await client.patch("/api/v1/namespaces/default/configmaps/c0?fieldManager=t&force=true", data=json.dumps(apply),
                              headers={**admin, "Content-Type": "application/apply-patch+yaml"})
    assert resp.status == 200, await resp.text()
    assert (await client.get("/api/v1/namespaces/default/pods")).status == 401

    families = await _scrape(client)
    total = families["apiserver_request"]
    cms = dict(group="", version="v1", resource="configmaps", subresource="", component="apiserver", dry_run="")
    assert _sample(total, "apiserver_request_total", verb="POST", scope="resource", code="201", **cms) == 3
    assert _sample(total, "apiserver_request_total", verb="GET", scope="resource", code="200", **cms) == 1
    assert _sample(total, "apiserver_request_total", verb="GET", scope="resource", code="404", **cms) == 1
    assert _sample(total, "apiserver_request_total", verb="LIST", scope="cluster", code="200", **cms) == 1
    assert _sample(total, "apiserver_request_total", verb="APPLY", scope="resource", code="200", **cms) == 1
    assert _sample(total, "apiserver_request_total", verb="LIST", scope="namespace", code="401",
                   resource="pods") == 1
    durations = families["apiserver_request_duration_seconds"]
    assert _sample(durations, "apiserver_request_duration_seconds_count", verb="POST", **cms) == 3
    assert _sample(durations, "apiserver_request_duration_seconds_bucket", verb="POST", le="+Inf", **cms) == 3
    assert _sample(durations, "apiserver_request_duration_seconds_sum", verb="POST", **cms) > 0
    # Scraping is a request too: a non-resource GET with no resource labels.
    families = await _scrape(client)
    assert _sample(families["apiserver_request"], "apiserver_request_total", verb="GET", resource="", scope="",
                   code="200") >= 1
    assert "process_resident_memory_bytes" in families
    assert "process_cpu_seconds" in families


async def test_what_the_server_does_not_serve_is_not_a_label(client: TestClient) -> None:
    """Label values come from URLs: made-up resources, versions and subresources must not become series."""
    for i in range(5):
        assert (await client.get(f"/api/v1/namespaces/default/made-up-{i}")).status == 401
        assert (await client.get(f"/apis/x{i}.example.com/v1/things", headers=_headers("admin"))).status == 404
        resp = await client.get(f"/api/v1/namespaces/default/pods/p/nonsense-{i}", headers=_headers("admin"))
        assert resp.status == 404
    samples = (await _scrape(client))["apiserver_request"]
    labels = {(s.labels["group"], s.labels["resource"], s.labels["subresource"]) for s in samples}
    assert not any("made-up" in r or "example.com" in g or "nonsense" in sub for g, r, sub in labels), labels
    assert _sample(samples, "apiserver_request_total", verb="LIST", resource="", code="401") == 5
    assert _sample(samples, "apiserver_request_total", verb="GET", resource="pods", subresource="",
                   code="404") == 5


async def test_storage_objects_watchers_and_long_running_requests(client: TestClient) -> None:
    admin = _headers("admin")
    families = await _scrape(client)
    objects = families["apiserver_storage_objects"]
    assert _sample(objects, "apiserver_storage_objects", resource="namespaces") >= 4   # default, kube-system, …
    assert _sample(objects, "apiserver_storage_objects", resource="clusterroles.rbac.authorization.k8s.io") > 10
    before = _sample(families["apiserver_registered_watchers"], "apiserver_registered_watchers",
                     group="", version="v1", kind="ConfigMap")

    resp = await client.get("/api/v1/namespaces/default/configmaps?watch=1", headers=admin)
    assert resp.status == 200
    try:
        for _ in range(50):
            families = await _scrape(client)
            running = [s for s in families["apiserver_longrunning_requests"]
                       if s.labels.get("verb") == "WATCH" and s.labels.get("resource") == "configmaps"]
            if running and running[0].value == 1:
                break
            await asyncio.sleep(0.02)
        assert running and running[0].labels["scope"] == "namespace" and running[0].value == 1
        assert _sample(families["apiserver_registered_watchers"], "apiserver_registered_watchers",
                       group="", version="v1", kind="ConfigMap") == before + 1
    finally:
        resp.close()
    for _ in range(100):
        families = await _scrape(client)
        if _sample(families["apiserver_longrunning_requests"], "apiserver_longrunning_requests",
                   verb="WATCH", resource="configmaps") == 0:
            break
        await asyncio.sleep(0.05)
    assert _sample(families["apiserver_longrunning_requests"], "apiserver_longrunning_requests",
                   verb="WATCH", resource="configmaps") == 0
    assert _sample(families["apiserver_request"], "apiserver_request_total", verb="WATCH",
                   resource="configmaps") == 1
