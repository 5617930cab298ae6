#!/usr/bin/env python3
"""Custom-resource write benchmark: prints figures, asserts nothing.

Starts a real ``kubepy apiserver`` (SQLite) on loopback, defines a CRD whose
schema has 50 typed fields (with defaults, an enum, bounds and one CEL rule),
and measures with C concurrent clients: creates/s and merge-patch updates/s
of that custom resource against a ConfigMap with 50 data keys of similar
size, and the ratio (custom / ConfigMap).

    .venv/bin/python bench/crd.py [--objects 300] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
from pathlib import Path

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.conftest import running_apiserver  # noqa: E402

GROUP = "bench.kubepy.test"
FIELDS = 50


def crd() -> dict:
    props: dict = {}
    for i in range(FIELDS):
        kind = ("string", "integer", "boolean")[i % 3]
        p: dict = {"type": kind}
        if kind == "integer":
            p.update(minimum=0, maximum=1_000_000, default=i)
        if kind == "string" and i == 0:
            p["enum"] = ["a", "b", "c"]
        props[f"field{i:02d}"] = p
    schema = {"type": "object", "properties": {"spec": {
        "type": "object", "properties": props,
        "x-kubernetes-validations": [{"rule": "self.field01 >= 0", "message": "field01 must not be negative"}]}}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"samples.{GROUP}"},
            "spec": {"group": GROUP, "scope": "Namespaced",
                     "names": {"plural": "samples", "singular": "sample", "kind": "Sample"},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": schema}}]}}


def spec_values(n: int) -> dict:
    out: dict = {}
    for i in range(FIELDS):
        kind = ("string", "integer", "boolean")[i % 3]
        out[f"field{i:02d}"] = ("a" if i == 0 else f"value-{i}-{n}") if kind == "string" else \
            (i * 7 + n if kind == "integer" else bool(n % 2))
    return out


def sample(name: str) -> dict:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Sample", "metadata": {"name": name}, "spec": spec_values(0)}


def configmap(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {k: json.dumps(v) for k, v in spec_values(0).items()}}


async def timed(n: int, clients: int, fn) -> float:
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await fn(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return n / (time.perf_counter() - t0)


async def run(srv, args: argparse.Namespace) -> None:
    token = yaml.safe_load(srv.kubeconfig.read_text())["users"][0]["user"]["token"]
    ctx = ssl.create_default_context(cafile=str(srv.data_dir / "ca.crt"))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=0),
                                     headers={"Authorization": f"Bearer {token}"}) as s:
        async def req(method: str, path: str, body, ctype: str = "application/json") -> None:
            async with s.request(method, srv.url + path, data=json.dumps(body),
                                 headers={"Content-Type": ctype}) as r:
                if r.status >= 300:
                    raise RuntimeError(f"{method} {path}: {r.status} {await r.text()}")
                await r.read()

        await req("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd())
        for _ in range(100):
            async with s.get(srv.url + f"/apis/{GROUP}/v1") as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.05)
        cr_path = f"/apis/{GROUP}/v1/namespaces/default/samples"
        cm_path = "/api/v1/namespaces/default/configmaps"
        print(f"object sizes: custom={len(json.dumps(sample('x')))}B configmap={len(json.dumps(configmap('x')))}B")
        figures = {}
        for label, path, make, patch in (
                ("custom", cr_path, sample, lambda i: {"spec": {"field01": i}}),
                ("configmap", cm_path, configmap, lambda i: {"data": {"field01": str(i)}})):
            # a few warm-up writes, so both sides start with warm caches
            for i in range(5):
                await req("POST", path, make(f"warm-{i}"))
            creates = await timed(args.objects, args.clients, lambda i: req("POST", path, make(f"o-{i}")))
            updates = await timed(args.objects, args.clients, lambda i: req(
                "PATCH", f"{path}/o-{i}", patch(i + 1), "application/merge-patch+json"))
            figures[label] = (creates, updates)
            print(f"{label:9s} creates/s={creates:7.1f} updates/s={updates:7.1f}")
        (cc, cu), (mc, mu) = figures["custom"], figures["configmap"]
        print(f"ratio custom/configmap: creates={cc / mc:.2f} updates={cu / mu:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=300)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    with running_apiserver("kubepy-bench-crd-") as srv:
        asyncio.run(run(srv, args))


if __name__ == "__main__":
    main()
