#!/usr/bin/env python3
"""Server-side apply against update: prints figures, asserts nothing.

Runs the API server in process (its aiohttp app on a temporary SQLite store,
plain HTTP on loopback, as tests/api do) and times, with one client:

- creates/s of Deployments (each write records its managedFields);
- updates/s: PUT of one Deployment changing its replicas and an annotation;
- applies/s: server-side apply of the same change to the same object;

each per CPU second of the process (server, client and store are all in it),
so other load on the machine does not move the figures much,

and prints applies/s ÷ updates/s, the ratio that matters on a shared
machine. Run it from another checkout (``cd /work/main && python
/path/to/bench/apply.py``) to measure that checkout's kubepy: a kubepy
without server-side apply prints creates and updates only, which gives a
before/after ratio of plain write throughput.

    .venv/bin/python bench/apply.py [--writes 300]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path.cwd()))

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from kubepy.api import auth  # noqa: E402
from kubepy.api.server import APIServer, ServerConfig  # noqa: E402
from kubepy.store.base import open_store  # noqa: E402

DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"
HAS_APPLY = importlib.util.find_spec("kubepy.api.fieldmanager") is not None


def deployment(name: str, replicas: int, note: str) -> dict[str, Any]:
    """A Deployment of realistic size: labels, two containers with ports, env, resources, probes."""
    container = {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80, "name": "http"}],
                 "env": [{"name": f"VAR{i}", "value": str(i)} for i in range(5)],
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                 "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}
    sidecar = {"name": "log", "image": "busybox:1.36", "command": ["sh", "-c", "tail -f /dev/null"]}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name, "tier": "web"}, "annotations": {"note": note}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name, "tier": "web"}},
                                  "spec": {"containers": [container, sidecar]}}}}


async def timed(n: int, fn: Any) -> float:
    """Writes per CPU second of this process (server, client and store together): CPU time,
    not wall time, so that other load on a shared machine does not move the figure."""
    start = time.process_time()
    for i in range(n):
        await fn(i)
    return n / (time.process_time() - start)


async def run(writes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="kubepy-bench-apply-") as tmp:
        data = Path(tmp)
        store = open_store("sqlite", data_dir=str(data))
        server = APIServer(store, ServerConfig(data_dir=data))
        await server.start()
        token = auth.token_for(auth.load_or_create_static_tokens(data), group=auth.MASTERS)
        client = TestClient(TestServer(server.app()), headers={"Authorization": f"Bearer {token}"})
        await client.start_server()
        try:
            async def req(method: str, path: str, body: Any, ctype: str = "application/json",
                          **params: str) -> None:
                # The response is read, not parsed: the client's share of the CPU stays small.
                resp = await client.request(method, path, data=json.dumps(body), params=params,
                                            headers={"Content-Type": ctype})
                raw = await resp.read()
                if resp.status >= 300:
                    raise RuntimeError(f"{method} {path}: {resp.status} {raw[:300]!r}")

            async def create(i: int) -> None:
                await req("POST", DEPLOYS, deployment(f"c{i}", 1, "x"), fieldManager="bench")

            await req("POST", DEPLOYS, deployment("warm", 1, "x"))
            creates = await timed(writes, create)
            await req("POST", DEPLOYS, deployment("u", 1, "x"), fieldManager="bench")

            async def update(i: int) -> None:
                await req("PUT", f"{DEPLOYS}/u", deployment("u", 1 + i % 5, f"n{i}"), fieldManager="bench")

            updates = await timed(writes, update)
            print(f"creates/s={creates:.0f} updates/s={updates:.0f} writes={writes} "
                  f"server-side-apply={'yes' if HAS_APPLY else 'no'}")
            if not HAS_APPLY:
                return
            await req("PATCH", f"{DEPLOYS}/a", deployment("a", 1, "x"), "application/apply-patch+yaml",
                      fieldManager="bench")

            async def apply(i: int) -> None:
                await req("PATCH", f"{DEPLOYS}/a", deployment("a", 1 + i % 5, f"n{i}"),
                          "application/apply-patch+yaml", fieldManager="bench")

            applies = await timed(writes, apply)
            print(f"applies/s={applies:.0f} apply/update={applies / updates:.2f}")
        finally:
            await client.close()
            await server.stop()
            await store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writes", type=int, default=300, help="writes of each kind (default 300)")
    args = ap.parse_args()
    asyncio.run(run(args.writes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
