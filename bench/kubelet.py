#!/usr/bin/env python3
"""Kubelet benchmark: pod startup latency on a real lab node. Prints figures, asserts nothing.

Brings up a throwaway lab cluster with one node (``kubepy up --nodes 1``,
name ``kpbench-<rand>``, state under a temp dir), loads a busybox image into
it, and then, for batch sizes 1, 10 and 30, creates that many pods at once
(busybox ``sleep 3600``, no probes, ``imagePullPolicy: IfNotPresent``) in a
namespace of its own. One watch (started before the creates) records, per
pod, the time from its create call to the first event showing it bound and
to the first event showing ``Ready=True``. Each batch is deleted
(grace 0) and waited for until the API, the node's containerd and the pod
network namespaces are empty again before the next one starts. One
unmeasured pod warms the node up first (the log shim, cgroup parents).

Beside it, in the same run and on the same node's containerd: the raw time
of ``ctr run -d`` for the same image (in a containerd namespace of its own,
``kpbench``), one at a time and as 10 / 30 concurrent runs, so the overhead
kubepy adds is a ratio. Kubernetes' SLO: p99 <= 5 s (pod startup, image
present).

    /opt/kpvenv/bin/python bench/kubelet.py [--batches 1x5,10x3,30x2] [--ctr-runs 20]

The cluster is brought up with ``bench/lab.py``'s ``up_cluster`` and always
taken down (``kubepy down``) at the end, even on error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.lab import other_clusters, up_cluster  # noqa: E402
from kubepy.client import Client, ClientConfig  # noqa: E402

IMAGE = "docker.io/library/busybox:1.36"
CTR_NS = "kpbench"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def ms(v: float) -> str:
    return f"{v * 1000:7.0f}"


def sh(*argv: str, check: bool = True, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if check and cp.returncode:
        raise RuntimeError(f"{' '.join(argv)} exited {cp.returncode}:\n{cp.stdout}\n{cp.stderr}")
    return cp


def host_state(name: str, root: Path) -> list[str]:
    """Network namespaces and processes (not zombies) that belong to this run's cluster."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.splitlines()
    out = [f"netns {n}" for n in netns if n.startswith((f"{name}-", "kp-kpbench-"))]
    for tool in (["pgrep", "-af", "kubepy"], ["pgrep", "-af", "containerd"]):
        for line in subprocess.run(tool, capture_output=True, text=True, check=False).stdout.splitlines():
            if (name in line or str(root) in line) and f"process {line}" not in out:
                out.append(f"process {line}")
    return out


class Node:
    """The lab node's containerd, driven with plain ctr from inside the node's netns."""

    def __init__(self, root: Path, name: str) -> None:
        self.netns = f"{name}-node1"
        self.cdir = root / name / "nodes" / self.netns / "containerd"
        self.sock = str(self.cdir / "containerd.sock")
        self.snapshotter = (self.cdir / "snapshotter").read_text().strip()
        self.runc_root = str(self.cdir / "runc")
        self.env = {**os.environ, "CONTAINERD_SNAPSHOTTER": self.snapshotter}

    def ctr_argv(self, ns: str, *args: str) -> list[str]:
        return ["nsenter", f"--net=/var/run/netns/{self.netns}", "ctr", "--address", self.sock, "-n", ns, *args]

    def ctr(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh(*self.ctr_argv(ns, *args), check=check, env=self.env)

    def run_argv(self, cid: str) -> list[str]:
        return self.ctr_argv(CTR_NS, "run", "-d", "--snapshotter", self.snapshotter, "--runc-root", self.runc_root,
                             IMAGE, cid, "sleep", "3600")

    def remove(self, cid: str) -> None:
        self.ctr(CTR_NS, "tasks", "kill", "-s", "SIGKILL", cid, check=False)
        self.ctr(CTR_NS, "tasks", "delete", "--force", cid, check=False)
        self.ctr(CTR_NS, "containers", "rm", cid, check=False)


async def timed_ctr_runs(node: Node, ids: list[str]) -> list[float]:
    """Start ``ctr run -d`` for every id at once; seconds from spawn to exit, each."""
    async def one(cid: str) -> float:
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(*node.run_argv(cid), stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE, env=node.env)
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        dt = time.perf_counter() - t0
        if proc.returncode:
            raise RuntimeError(f"ctr run {cid} exited {proc.returncode}: {err.decode(errors='replace')}")
        return dt

    return list(await asyncio.gather(*(one(c) for c in ids)))


def ctr_baseline(node: Node, archive: Path, runs: int) -> dict[str, list[float]]:
    node.ctr(CTR_NS, "images", "import", str(archive))
    out: dict[str, list[float]] = {"1": [], "10": [], "30": []}
    n = 0
    try:
        for i in range(runs + 1):   # the first one is a warm-up (snapshot unpack)
            cid = f"kpb-{n}"
            n += 1
            dt = asyncio.run(timed_ctr_runs(node, [cid]))[0]
            if i:
                out["1"].append(dt)
            node.remove(cid)
        for size in (10, 30):
            ids = [f"kpb-{n + j}" for j in range(size)]
            n += size
            out[str(size)] = asyncio.run(timed_ctr_runs(node, ids))
            for cid in ids:
                node.remove(cid)
    finally:
        for cid in node.ctr(CTR_NS, "containers", "ls", "-q", check=False).stdout.split():
            node.remove(cid)
        node.ctr(CTR_NS, "images", "rm", IMAGE, check=False)
        node.ctr("default", "namespaces", "rm", CTR_NS, check=False)
    return out


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "kpbench"}},
            "spec": {"terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
                                     "command": ["sleep", "3600"]}]}}


def is_ready(obj: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


async def batch(client: Client, node: Node, ns: str, size: int, tag: str) -> dict[str, list[float]]:
    """Create ``size`` pods at once; per pod: create→bound, create→Ready; then delete and wait until gone."""
    names = [f"{tag}-{i}" for i in range(size)]
    rv = (await client.list("pods", namespace=ns, limit=1))["metadata"]["resourceVersion"]
    started: dict[str, float] = {}
    bound: dict[str, float] = {}
    ready: dict[str, float] = {}

    async def watch() -> None:
        nonlocal rv
        deadline = time.monotonic() + 180
        while len(ready) < size and time.monotonic() < deadline:
            async for ev in client.watch("pods", namespace=ns, resource_version=rv, timeout_seconds=60):
                now = time.monotonic()
                obj = ev["object"]
                rv = obj["metadata"]["resourceVersion"]
                name = obj["metadata"].get("name")
                if ev["type"] not in ("ADDED", "MODIFIED") or name not in names:
                    continue
                if obj["spec"].get("nodeName"):
                    bound.setdefault(name, now)
                if is_ready(obj):
                    ready.setdefault(name, now)
                    if len(ready) >= size:
                        return

    async def create(name: str) -> None:
        started[name] = time.monotonic()
        await client.create("pods", pod(name), namespace=ns)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.05)   # let the watch connect (it resumes from rv anyway)
    await asyncio.gather(*(create(n) for n in names))
    try:
        await asyncio.wait_for(watcher, 200)
    except TimeoutError:
        print(f"  ! {tag}: only {len(ready)}/{size} pods Ready within the time limit")
    t_del = time.monotonic()
    await asyncio.gather(*(client.delete("pods", n, namespace=ns, grace_period_seconds=0) for n in names))
    gone_api = await wait_gone(client, node, ns)
    return {"bound": [bound[n] - started[n] for n in names if n in bound],
            "ready": [ready[n] - started[n] for n in names if n in ready],
            "cleanup": [gone_api - t_del]}


async def wait_gone(client: Client, node: Node, ns: str, timeout: float = 120) -> float:
    """Until no pod is left in ``ns``, nor a container in the node's containerd, nor a pod netns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = (await client.list("pods", namespace=ns))["items"]
        containers = node.ctr("kubepy", "containers", "ls", "-q", check=False).stdout.split()
        netns = [line for line in sh("ip", "netns", "list").stdout.splitlines() if line.startswith(f"kp-{ns}-")]
        if not pods and not containers and not netns:
            return time.monotonic()
        await asyncio.sleep(0.2)
    print(f"  ! pods/containers/netns of {ns} still there after {timeout:.0f}s")
    return time.monotonic()


async def pod_bench(kubeconfig: Path, node: Node, batches: list[tuple[int, int]]) -> dict[int, dict[str, list[float]]]:
    client = Client(ClientConfig.from_kubeconfig(kubeconfig))
    ns = f"kpbench-{secrets.token_hex(2)}"
    results: dict[int, dict[str, list[float]]] = {}
    try:
        await client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the ServiceAccount controller's default account
            if any(sa["metadata"]["name"] == "default"
                   for sa in (await client.list("serviceaccounts", namespace=ns))["items"]):
                break
            await asyncio.sleep(0.1)
        warm = await batch(client, node, ns, 1, "warm")
        print(f"warm-up pod (first on the node, not counted): Ready after {warm['ready'][0] * 1000:.0f} ms"
              if warm["ready"] else "warm-up pod never became Ready")
        for size, reps in batches:
            agg: dict[str, list[float]] = {"bound": [], "ready": [], "cleanup": []}
            for r in range(reps):
                res = await batch(client, node, ns, size, f"b{size}-{r}")
                for k in agg:
                    agg[k] += res[k]
                print(f"  batch {size:>2} #{r + 1}: Ready p50 {pct(res['ready'], 50) * 1000:.0f} ms, "
                      f"max {max(res['ready']) * 1000:.0f} ms; delete->gone {res['cleanup'][0]:.1f} s"
                      if res["ready"] else f"  batch {size} #{r + 1}: no pod Ready")
            results[size] = agg
        await client.delete("namespaces", ns)
    finally:
        await client.close()
    return results


def stage_breakdown(log: Path, sizes: list[int]) -> None:
    """The kubelet's own account (its ``pod started`` lines): where each batch's start-up time went."""
    import re

    try:
        text = log.read_text()
    except OSError as e:
        print(f"\n(no stage breakdown: {e})")
        return
    per_size: dict[int, dict[str, list[float]]] = {}
    for m in re.finditer(r"pod started pod=\S+/b(\d+)-\d+-\d+ uid=\S+ (.*)", text):
        stages = per_size.setdefault(int(m.group(1)), {})
        for k, v in re.findall(r"(\S+)=(\d+)ms", m.group(2)):
            stages.setdefault(k, []).append(float(v))
    for size in sizes:
        stages = per_size.get(size)
        if not stages:
            continue
        print(f"\nwhere the time went, {size} pods at once (the kubelet's stages, ms; each pod's own account):")
        print(f"{'stage':<14}{'n':>5}{'p50':>8}{'p99':>8}")
        for k, v in stages.items():
            print(f"{k:<14}{len(v):>5}{pct(v, 50):8.0f}{pct(v, 99):8.0f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1x5,10x3,30x2", help="PODSxREPEATS,… (pods created at once)")
    ap.add_argument("--ctr-runs", type=int, default=20, help="sequential `ctr run -d` samples")
    args = ap.parse_args()
    batches = [tuple(int(x) for x in b.split("x")) for b in args.batches.split(",")]

    if others := other_clusters():
        print(f"note: other lab clusters are up on this host ({', '.join(others)}): they share the CPUs")
    name = f"kpbench-{secrets.token_hex(3)}"
    root = Path(tempfile.mkdtemp(prefix="kpbench-", dir="/tmp"))
    kp = [sys.executable, "-m", "kubepy"]
    where = ["--name", name, "--state-dir", str(root)]
    try:
        up_s, _ = up_cluster(name, root, 1)
        print(f"cluster {name} (1 node) up in {up_s:.1f} s; state in {root}")
        from kubepy.images import busybox_image
        archive = root / "busybox.tar"
        busybox_image(IMAGE, archive)
        sh(*kp, "image", "load", str(archive), *where)
        node = Node(root, name)

        ctr = ctr_baseline(node, archive, args.ctr_runs)
        pods = asyncio.run(pod_bench(root / name / "controlplane" / "admin.kubeconfig", node, batches))

        print(f"\npod startup latency, 1 node, image present (snapshotter {node.snapshotter}); ms")
        print(f"{'what':<40}{'n':>4}{'p50':>8}{'p99':>8}{'max':>8}")
        base = pct(ctr["1"], 50)
        for size, r in pods.items():
            for key, label in (("bound", "create -> bound"), ("ready", "create -> Running+Ready")):
                v = r[key]
                if v:
                    print(f"{f'{size:>2} pods at once: {label}':<40}{len(v):>4}{ms(pct(v, 50))}{ms(pct(v, 99))}"
                          f"{ms(max(v))}")
        for size in ("1", "10", "30"):
            v = ctr[size]
            label = "ctr run -d, one at a time" if size == "1" else f"ctr run -d, {size} at once"
            print(f"{label:<40}{len(v):>4}{ms(pct(v, 50))}{ms(pct(v, 99))}{ms(max(v))}")
        print("\nratio pod Ready p50 / ctr run -d p50 (one at a time):")
        for size, r in pods.items():
            if r["ready"]:
                same = ctr.get(str(size))
                extra = (f"; vs {size} concurrent ctr runs: {pct(r['ready'], 50) / pct(same, 50):.1f}x"
                         if same and size != 1 else "")
                print(f"  {size:>2} pods at once: {pct(r['ready'], 50) / base:.1f}x{extra}")
        stage_breakdown(root / name / "logs" / f"{name}-node1-kubelet.log", [size for size, _ in batches])
        worst = max((pct(r["ready"], 99) for r in pods.values() if r["ready"]), default=float("nan"))
        print(f"Kubernetes' SLO: p99 <= 5000 ms (worst p99 here: {worst * 1000:.0f} ms); "
              f"floor: one ctr run ({base * 1000:.0f} ms here)")
    finally:
        cp = sh(*kp, "down", *where, check=False, timeout=300)
        if cp.returncode:
            print(f"kubepy down exited {cp.returncode}:\n{cp.stdout}\n{cp.stderr}")
        shutil.rmtree(root, ignore_errors=True)
        left = host_state(name, root)
        print("left behind (netns, kubepy/containerd processes of this cluster): "
              + ("none" if not left else "\n  " + "\n  ".join(left)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
