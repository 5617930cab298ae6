"""client-go's workqueue_* series from kubepy's WorkQueue, scraped through the health server's
/metrics as the controller manager serves them (plain HTTP on its --healthz-bind-address)."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from kubepy.client.workqueue import QUEUE_METRICS, WorkQueue, run_workers
from kubepy.client.workqueuemetrics import WorkQueueMetrics
from kubepy.healthz import HealthServer, LoopHeartbeat
from kubepy.metrics import new_registry


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


async def test_queue_series_per_controller_name() -> None:
    registry = new_registry()
    token = QUEUE_METRICS.set(WorkQueueMetrics(registry))
    try:
        rs, jobs = WorkQueue(name="replicaset"), WorkQueue(name="job")
    finally:
        QUEUE_METRICS.reset(token)
    unnamed = WorkQueue()  # made outside the provider's context: reports nothing
    server = HealthServer(LoopHeartbeat(), "127.0.0.1:0", registry=registry)
    server.start()
    try:
        for key in ("a/1", "a/2", "a/1", "a/3"):   # a key already waiting is added once
            rs.add(key)
        jobs.add("b/1")
        unnamed.add("x")
        got = await asyncio.to_thread(_scrape, server.port)
        assert got[("workqueue_adds_total", (("name", "replicaset"),))] == 3
        assert got[("workqueue_depth", (("name", "replicaset"),))] == 3
        assert got[("workqueue_depth", (("name", "job"),))] == 1
        assert not any(dict(labels).get("name") == "" for _, labels in got)

        calls: list[str] = []

        async def reconcile(key: str) -> None:
            calls.append(key)
            await asyncio.sleep(0.02)
            if key == "a/2" and calls.count(key) == 1:
                raise RuntimeError("try again")

        workers = asyncio.create_task(run_workers(rs, reconcile, workers=1))
        name = (("name", "replicaset"),)
        for _ in range(200):   # three keys, one of them twice, each done
            got = await asyncio.to_thread(_scrape, server.port)
            if got[("workqueue_work_duration_seconds_count", name)] == 4:
                break
            await asyncio.sleep(0.02)
        workers.cancel()
        await asyncio.gather(workers, return_exceptions=True)
        assert sorted(calls) == ["a/1", "a/2", "a/2", "a/3"]
        assert got[("workqueue_depth", name)] == 0
        assert got[("workqueue_retries_total", name)] == 1
        assert got[("workqueue_adds_total", name)] == 4        # the retry came back once
        assert got[("workqueue_work_duration_seconds_count", name)] == 4
        assert got[("workqueue_work_duration_seconds_sum", name)] >= 4 * 0.02
        assert got[("workqueue_queue_duration_seconds_count", name)] == 4
        assert got[("workqueue_queue_duration_seconds_bucket", (("le", "+Inf"), ("name", "replicaset")))] == 4
        assert got[("workqueue_queue_duration_seconds_count", (("name", "job"),))] == 0
        assert ("process_resident_memory_bytes", ()) in got
        for path in ("/healthz", "/livez", "/readyz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as r:
                assert r.status == 200
    finally:
        server.stop()
        jobs.shutdown()
        unnamed.shutdown()
