"""kube-scheduler's series from the scheduling loop on the in-memory FakeAPI, scraped through the
health server's /metrics as ``kubepy scheduler`` serves them: attempts by result and profile,
their durations, and pending pods by queue."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kubepy.healthz import HealthServer, LoopHeartbeat
from kubepy.metrics import new_registry
from kubepy.scheduler.metrics import SchedulerMetrics
from kubepy.scheduler.scheduler import Scheduler
from kubepy.testing.fakeapi import FakeAPI


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _pod(name: str, cpu: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}]}}


async def test_attempts_durations_and_pending_pods() -> None:
    api = FakeAPI(seed=1)
    api.seed("namespaces", {"metadata": {"name": "default"}})
    api.seed("nodes", {"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
                       "status": {"allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"},
                                  "conditions": [{"type": "Ready", "status": "True"}]}})
    for i in range(3):
        api.seed("pods", _pod(f"fits-{i}", "100m"))
    api.seed("pods", _pod("too-big", "64"))
    gated = _pod("gated", "100m")
    gated["spec"]["schedulingGates"] = [{"name": "example.com/wait"}]
    api.seed("pods", gated)
    registry = new_registry()
    scheduler = Scheduler(api, metrics=SchedulerMetrics(registry))
    server = HealthServer(LoopHeartbeat(), "127.0.0.1:0", registry=registry)
    server.start()
    task = asyncio.create_task(scheduler.run())
    profile = ("profile", "default-scheduler")
    try:
        for _ in range(200):
            got = await asyncio.to_thread(_scrape, server.port)
            if got.get(("scheduler_pending_pods", (("queue", "unschedulable"),))) == 1 and \
                    got.get(("scheduler_schedule_attempts_total", (profile, ("result", "scheduled")))) == 3:
                break
            await asyncio.sleep(0.02)
        assert got[("scheduler_schedule_attempts_total", (profile, ("result", "scheduled")))] == 3
        assert got[("scheduler_schedule_attempts_total", (profile, ("result", "unschedulable")))] == 1
        assert got[("scheduler_scheduling_attempt_duration_seconds_count", (profile, ("result", "scheduled")))] == 3
        assert got[("scheduler_scheduling_attempt_duration_seconds_sum", (profile, ("result", "scheduled")))] > 0
        assert got[("scheduler_pending_pods", (("queue", "unschedulable"),))] == 1
        assert got[("scheduler_pending_pods", (("queue", "active"),))] == 0
        assert got[("scheduler_pending_pods", (("queue", "gated"),))] == 1
        assert ("scheduler_pending_pods", (("queue", "backoff"),)) in got
        assert all(p["spec"].get("nodeName") == "n1" for p in api.objects("pods", "default")
                   if p["metadata"]["name"].startswith("fits-"))
        # Its gates removed, the gated pod is scheduled and leaves the count.
        gated = next(p for p in api.objects("pods", "default") if p["metadata"]["name"] == "gated")
        gated["spec"]["schedulingGates"] = []
        await api.update("pods", gated)
        for _ in range(200):
            got = await asyncio.to_thread(_scrape, server.port)
            if got[("scheduler_schedule_attempts_total", (profile, ("result", "scheduled")))] == 4:
                break
            await asyncio.sleep(0.02)
        assert got[("scheduler_schedule_attempts_total", (profile, ("result", "scheduled")))] == 4
        assert got[("scheduler_pending_pods", (("queue", "gated"),))] == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.stop()
