#!/usr/bin/env python3
"""API server benchmark: prints figures, asserts nothing.

Starts a real ``kubepy apiserver`` (SQLite, or --store etcd://...) on
loopback and measures, with N concurrent clients on one event loop:
creates/s, gets/s (beside GET /healthz/s, the HTTP floor in the same run),
list latency for 1,000 and 10,000 pods, watch delivery latency from write
to event across W watchers, and the server's RSS (idle, after the pods,
with W watchers).

    .venv/bin/python bench/apiserver.py [--clients 16] [--watchers 100] [--store etcd://127.0.0.1:2379]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil
import yaml


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def fmt_ms(values: list[float]) -> str:
    return f"p50={pct(values, 50) * 1000:.1f}ms p99={pct(values, 99) * 1000:.1f}ms n={len(values)}"


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"],
                                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}


class Client:
    def __init__(self, url: str, token: str, ca: str) -> None:
        self.url = url
        ctx = ssl.create_default_context(cafile=ca)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx, limit=0),
            headers={"Authorization": f"Bearer {token}"})

    async def req(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        async with self.session.request(method, self.url + path, json=body) as r:
            return r.status, await r.read()


async def timed_many(n: int, concurrency: int, fn) -> tuple[float, list[float]]:
    """Runs fn(i) for i in range(n) with ``concurrency`` workers; (seconds, latencies)."""
    lat: list[float] = []
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            t0 = time.perf_counter()
            await fn(i)
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, lat


async def run(args: argparse.Namespace, url: str, token: str, ca: str, proc: psutil.Process) -> None:
    c = Client(url, token, ca)
    rss = lambda: proc.memory_info().rss / 2**20  # noqa: E731
    print(f"server RSS idle: {rss():.0f} MiB")
    for ns in ("bench-1k", "bench-10k", "bench-w"):
        await c.req("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # Floor: the cheapest authenticated round trip this server can do.
    secs, lat = await timed_many(args.requests, args.clients, lambda i: c.req("GET", "/healthz"))
    floor = args.requests / secs
    print(f"GET /healthz (HTTP floor): {floor:.0f}/s {fmt_ms(lat)}")

    async def create(ns: str, i: int) -> None:
        status, body = await c.req("POST", f"/api/v1/namespaces/{ns}/pods", pod(f"p-{i}"))
        assert status == 201, body[:300]

    secs, lat = await timed_many(1000, args.clients, lambda i: create("bench-1k", i))
    print(f"create pod: {1000 / secs:.0f}/s {fmt_ms(lat)}  ({1000 / secs / floor:.2f}x the floor)")
    secs, lat = await timed_many(10000, args.clients, lambda i: create("bench-10k", i))
    print(f"create pod (10k more): {10000 / secs:.0f}/s {fmt_ms(lat)}")
    print(f"server RSS after 11,000 pods: {rss():.0f} MiB")

    async def get(i: int) -> None:
        status, _ = await c.req("GET", f"/api/v1/namespaces/bench-10k/pods/p-{(i * 7919) % 10000}")
        assert status == 200

    secs, lat = await timed_many(args.requests, args.clients, get)
    print(f"get pod: {args.requests / secs:.0f}/s {fmt_ms(lat)}  ({args.requests / secs / floor:.2f}x the floor)")

    for ns, n in (("bench-1k", 1000), ("bench-10k", 10000)):
        lats = []
        for _ in range(args.list_runs):
            t0 = time.perf_counter()
            status, body = await c.req("GET", f"/api/v1/namespaces/{ns}/pods")
            lats.append(time.perf_counter() - t0)
            assert status == 200 and len(json.loads(body)["items"]) == n
        print(f"list {n} pods: {fmt_ms(lats)} ({len(body) / 2**20:.1f} MiB)")
        lats = []
        for _ in range(args.list_runs):
            t0 = time.perf_counter()
            status, body = await c.req("GET", f"/api/v1/namespaces/{ns}/pods?limit=500")
            lats.append(time.perf_counter() - t0)
        print(f"list {n} pods, first page of 500: {fmt_ms(lats)}")

    print(f"server RSS after the lists: {rss():.0f} MiB")

    # Watch delivery: W watchers on one namespace, timestamps in the objects.
    status, body = await c.req("GET", "/api/v1/namespaces/bench-w/configmaps")
    rv = json.loads(body)["metadata"]["resourceVersion"]
    delays: list[float] = []
    writes = args.watch_writes
    done = 0
    ready = asyncio.Event()
    opened = 0

    async def watcher() -> None:
        nonlocal done, opened
        async with c.session.get(f"{url}/api/v1/namespaces/bench-w/configmaps?watch=true&resourceVersion={rv}",
                                 timeout=aiohttp.ClientTimeout(total=None)) as r:
            opened += 1
            if opened == args.watchers:
                ready.set()
            seen = 0
            async for line in r.content:
                ev = json.loads(line)
                sent = float(ev["object"]["data"]["t"])
                delays.append(time.time() - sent)
                seen += 1
                if seen == writes:
                    break
        done += 1

    tasks = [asyncio.create_task(watcher()) for _ in range(args.watchers)]
    await asyncio.wait_for(ready.wait(), 30)
    await asyncio.sleep(0.5)
    print(f"server RSS with {args.watchers} idle watchers: {rss():.0f} MiB")
    for i in range(writes):
        await c.req("POST", "/api/v1/namespaces/bench-w/configmaps",
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"w-{i}"}, "data": {"t": repr(time.time())}})
        await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    print(f"watch delivery write->event, {args.watchers} watchers x {writes} writes: {fmt_ms(delays)}")
    print(f"server RSS at end: {rss():.0f} MiB")
    await c.session.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--list-runs", type=int, default=10)
    ap.add_argument("--watch-writes", type=int, default=100)
    ap.add_argument("--store", default="sqlite")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kubepy-bench-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp / "apiserver.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "kubepy", "--log-level", "warning", "apiserver",
                             "--data-dir", str(tmp), "--bind-address", "127.0.0.1", "--port", str(port),
                             "--store", args.store], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while not (tmp / "admin.kubeconfig").exists():
            if proc.poll() is not None or time.time() > deadline:
                print((tmp / "apiserver.log").read_text(), file=sys.stderr)
                return 1
            time.sleep(0.1)
        time.sleep(0.3)
        cfg = yaml.safe_load((tmp / "admin.kubeconfig").read_text())
        token = cfg["users"][0]["user"]["token"]
        print(f"kubepy apiserver benchmark: store={args.store} clients={args.clients} cores={os.cpu_count()}")
        asyncio.run(run(args, f"https://127.0.0.1:{port}", token, str(tmp / "ca.crt"), psutil.Process(proc.pid)))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
