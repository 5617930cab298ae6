#!/usr/bin/env python3
"""Scheduler benchmark: prints figures, asserts nothing.

For each case (pods on hollow nodes) it starts a real API server, registers
the nodes, creates the pods while no scheduler runs, then starts a real
``kubepy scheduler`` process and watches until every pod is bound.
Reported: bind throughput from the first to the last binding (pods/s), and
the wall time from the scheduler's start (including its informers' sync).
With --deployment it also runs the whole control plane and times a
100-replica Deployment from creation until all its pods are bound.

    .venv/bin/python bench/scheduler.py [--cases 1000x100,5000x500] [--deployment]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubepy.client import Client, ClientConfig  # noqa: E402
from kubepy.testing.hollow import HollowCluster  # noqa: E402
from bench.common import controlplane  # noqa: E402
from tests.e2e.conftest import start_apiserver, stop_apiserver  # noqa: E402


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}


async def create_pods(client: Client, n: int, concurrency: int = 16) -> None:
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await client.create("pods", pod(f"p-{i}"), namespace="default")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def wait_bound(client: Client, n: int, rv: str, bound_times: list[float]) -> None:
    bound: set[str] = set()
    while len(bound) < n:
        async for ev in client.watch("pods", namespace="default", resource_version=rv, timeout_seconds=300):
            obj = ev["object"]
            rv = obj["metadata"]["resourceVersion"]
            if ev["type"] in ("ADDED", "MODIFIED") and obj.get("spec", {}).get("nodeName"):
                name = obj["metadata"]["name"]
                if name not in bound:
                    bound.add(name)
                    bound_times.append(time.monotonic())
                    if len(bound) >= n:
                        return


async def scheduler_case(pods: int, nodes: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="kubepy-bench-"))
    srv = start_apiserver(tmp)
    sched = None
    try:
        client = Client(ClientConfig.from_kubeconfig(srv.kubeconfig))
        cluster = HollowCluster(client, nodes, cpu="32", memory="128Gi", max_pods=110, run_pods=False,
                                lease_interval=3600)
        await cluster.start()
        await create_pods(client, pods)
        rv = (await client.list("pods", namespace="default", limit=1))["metadata"]["resourceVersion"]
        times: list[float] = []
        waiter = asyncio.create_task(wait_bound(client, pods, rv, times))
        started = time.monotonic()
        sched = subprocess.Popen([sys.executable, "-m", "kubepy", "--log-level", "warning", "scheduler",
                                  "--kubeconfig", str(srv.kubeconfig)])
        await asyncio.wait_for(waiter, 900)
        wall = time.monotonic() - started
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")
        print(f"{pods} pods on {nodes} hollow nodes: {rate:.0f} pods/s bound (first to last binding); "
              f"{wall:.1f} s from scheduler start to all bound (includes its start-up and sync)")
        await cluster.stop()
        await client.close()
    finally:
        if sched:
            sched.terminate()
            sched.wait(10)
        stop_apiserver(srv)
        shutil.rmtree(tmp, ignore_errors=True)


async def deployment_case(replicas: int, nodes: int) -> None:
    async with controlplane() as client:
        cluster = HollowCluster(client, nodes, cpu="32", memory="128Gi", run_pods=False, lease_interval=5)
        await cluster.start()
        await asyncio.sleep(3)  # the scheduler's and controllers' informers see the nodes
        rv = (await client.list("pods", namespace="default", limit=1))["metadata"]["resourceVersion"]
        times: list[float] = []
        waiter = asyncio.create_task(wait_bound(client, replicas, rv, times))
        t0 = time.monotonic()
        await client.create("deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bench"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "bench"}},
                     "template": {"metadata": {"labels": {"app": "bench"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}},
            namespace="default")
        await asyncio.wait_for(waiter, 300)
        print(f"Deployment of {replicas} replicas on {nodes} hollow nodes: all pods bound "
              f"{times[-1] - t0:.2f} s after creation (first bound at {times[0] - t0:.2f} s)")
        await cluster.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="1000x100,5000x500", help="PODSxNODES,…")
    ap.add_argument("--deployment", action="store_true", help="also time a 100-replica Deployment")
    args = ap.parse_args()
    for case in args.cases.split(","):
        pods, nodes = (int(x) for x in case.split("x"))
        asyncio.run(scheduler_case(pods, nodes))
    if args.deployment:
        asyncio.run(deployment_case(100, 10))
    print("reference: Kubernetes' scheduler_perf asks for several hundred pods/s on 5,000 nodes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
