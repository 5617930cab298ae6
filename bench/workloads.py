#!/usr/bin/env python3
"""Workload controllers on hollow nodes: prints figures, asserts nothing.

Starts a real control plane (``kubepy controlplane``: API server, scheduler,
controller manager) and hollow nodes (kubepy.testing.hollow: they report
pods Running and Ready, and a Job's pods Succeeded after ``--run`` seconds),
then times, one after the other in the same run:

- the baseline: a Deployment of 100 replicas, creation → all Ready;
- a Job of 1,000 completions at parallelism 100 (completions/s);
- a DaemonSet over 500 nodes, creation → 500 Ready (seconds);
- a StatefulSet of 100 replicas with Parallel pod management, creation → all Ready.

Each figure is also printed as a ratio to the Deployment's pods/s, since the
machine is shared and absolute figures move with its load.  A kind the server
does not serve yet is reported as such.

    .venv/bin/python bench/workloads.py [--nodes 500] [--run 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubepy import kinds  # noqa: E402
from kubepy.client import Client, NotFoundError  # noqa: E402
from kubepy.testing.hollow import HollowCluster  # noqa: E402
from bench.common import controlplane  # noqa: E402

NS = "default"


def template(app: str, restart: str = "Always") -> dict[str, Any]:
    return {"metadata": {"labels": {"app": app}},
            "spec": {"restartPolicy": restart,
                     "containers": [{"name": "c", "image": "busybox:1.36",
                                     "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]}}


async def served(client: Client, group_version: str, plural: str) -> bool:
    """Whether this checkout serves the kind (the server runs the same code)."""
    group, _, version = group_version.rpartition("/")
    return kinds.lookup(group, version, plural) is not None


async def wait_for(client: Client, resource: str, name: str, done: Callable[[dict[str, Any]], bool],
                   timeout: float = 600) -> float:
    """Seconds until ``done(object)``, polling its status every 0.2 s."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            obj = await client.get(resource, name, namespace=NS)
            if done(obj):
                return time.monotonic() - t0
        except NotFoundError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{resource}/{name} not done after {timeout} s")


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


async def deployment_case(client: Client, replicas: int) -> float:
    await client.create("deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bench-deploy"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "bench-deploy"}},
                 "template": template("bench-deploy")}}, namespace=NS)
    secs = await wait_for(client, "deployments", "bench-deploy",
                          lambda d: _status(d).get("readyReplicas", 0) >= replicas)
    print(f"baseline  Deployment, {replicas} replicas: all Ready in {secs:.2f} s ({replicas / secs:.1f} pods/s)")
    await client.delete("deployments", "bench-deploy", namespace=NS, propagation_policy="Background")
    return replicas / secs


async def job_case(client: Client, completions: int, parallelism: int, base_rate: float) -> None:
    if not await served(client, "batch/v1", "jobs"):
        print("Job: batch/v1 jobs not served")
        return
    await client.create("jobs", {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "bench-job"},
        "spec": {"completions": completions, "parallelism": parallelism, "backoffLimit": 0,
                 "template": template("bench-job", restart="Never")}}, namespace=NS)
    secs = await wait_for(client, "jobs", "bench-job", lambda j: _status(j).get("succeeded", 0) >= completions,
                          timeout=1800)
    rate = completions / secs
    print(f"Job, {completions} completions at parallelism {parallelism}: {secs:.1f} s, {rate:.1f} completions/s "
          f"({rate / base_rate:.2f}x the Deployment's pods/s)")


async def daemonset_case(client: Client, nodes: int, base_rate: float) -> None:
    if not await served(client, "apps/v1", "daemonsets"):
        print("DaemonSet: apps/v1 daemonsets not served")
        return
    await client.create("daemonsets", {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "bench-ds"},
        "spec": {"selector": {"matchLabels": {"app": "bench-ds"}}, "template": template("bench-ds")}}, namespace=NS)
    secs = await wait_for(client, "daemonsets", "bench-ds",
                          lambda d: _status(d).get("numberReady", 0) >= nodes)
    rate = nodes / secs
    print(f"DaemonSet over {nodes} nodes: all Ready in {secs:.1f} s ({rate:.1f} pods/s, "
          f"{rate / base_rate:.2f}x the Deployment's)")
    await client.delete("daemonsets", "bench-ds", namespace=NS, propagation_policy="Background")


async def statefulset_case(client: Client, replicas: int, base_rate: float) -> None:
    if not await served(client, "apps/v1", "statefulsets"):
        print("StatefulSet: apps/v1 statefulsets not served")
        return
    await client.create("statefulsets", {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "bench-sts"},
        "spec": {"replicas": replicas, "serviceName": "bench-sts", "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": "bench-sts"}}, "template": template("bench-sts")}},
        namespace=NS)
    secs = await wait_for(client, "statefulsets", "bench-sts",
                          lambda s: _status(s).get("readyReplicas", 0) >= replicas)
    rate = replicas / secs
    print(f"StatefulSet, {replicas} replicas, Parallel: all Ready in {secs:.2f} s ({rate:.1f} pods/s, "
          f"{rate / base_rate:.2f}x the Deployment's)")
    await client.delete("statefulsets", "bench-sts", namespace=NS, propagation_policy="Background")


async def run(nodes: int, run_seconds: float) -> None:
    async with controlplane() as client:
        is_job_pod = lambda pod: run_seconds if "job-name" in ((pod.get("metadata") or {}).get("labels") or {}) \
            else None  # noqa: E731
        cluster = HollowCluster(client, nodes, cpu="64", memory="256Gi", max_pods=250, lease_interval=10,
                                run_for=is_job_pod)
        t0 = time.monotonic()
        await cluster.start()
        print(f"{nodes} hollow nodes registered in {time.monotonic() - t0:.1f} s")
        await asyncio.sleep(3)  # the scheduler's and controllers' informers see the nodes
        base = await deployment_case(client, 100)
        await job_case(client, 1000, 100, base)
        await daemonset_case(client, nodes, base)
        await statefulset_case(client, 100, base)
        await cluster.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--run", type=float, default=0.5, help="seconds a Job's pod runs before it exits 0")
    args = ap.parse_args()
    asyncio.run(run(args.nodes, args.run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
