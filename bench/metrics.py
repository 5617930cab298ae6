#!/usr/bin/env python3
"""Resource-metrics benchmark: what collecting metrics for N pods costs the kubelet and the metrics server.
Prints figures, asserts nothing.

In process, with FAKE cgroup trees: N pods (default 100) of C containers each (default 1) are
written as a cgroup v1 layout (``cpuacct`` and ``memory`` hierarchies, kubepy's
``/kubepy/<node>/pod<uid>/<container id>`` paths) in a temporary directory; the kubelet's real
code reads them (``kubepy.kubelet.stats``: real file reads, the same parsing) and renders
``/metrics/resource`` and ``/stats/summary``; the metrics server's real code parses that text,
stores it and computes rates (``kubepy.metricsserver.samples``) and builds every
PodMetrics/NodeMetrics object it would serve. Counters move between rounds, so rates are real.
What is not measured: HTTP and TLS (one request per node per resolution), and the kernel's cost
of producing cgroup files (real ones are a little slower to read than tmpfs files).

    .venv/bin/python bench/metrics.py [--pods 100] [--containers 1] [--rounds 20] [--resolution 15]

Per round: CPU time (process_time) and wall time of each side; peak Python memory of one
round (tracemalloc); then the share of one core each side spends at the given scrape interval.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubepy.kubelet.cgroups import PodCgroups  # noqa: E402
from kubepy.kubelet.stats import (  # noqa: E402
    CgroupStatsReader,
    ContainerRef,
    PodRef,
    StatsCollector,
    resource_metrics_text,
    summary,
)
from kubepy.metricsserver.samples import (  # noqa: E402
    Storage,
    format_cpu,
    format_memory,
    format_window,
    parse_scrape,
    pod_summary,
)

NODE = "kpbench-node1"
MEMSTAT = ("cache 1000\nrss 2000\ntotal_rss 3000000\ntotal_cache 100000\ntotal_inactive_file 50000\n"
           "total_active_file 50000\ntotal_pgfault 1234\ntotal_pgmajfault 5\n")


def make_tree(root: Path, pods: int, containers: int) -> tuple[dict[str, Path], list[PodRef]]:
    mounts = {"cpuacct": root / "cpuacct", "cpu": root / "cpuacct", "memory": root / "memory"}
    for m in mounts.values():
        m.mkdir(parents=True, exist_ok=True)
    (mounts["cpuacct"] / "cpuacct.usage").write_text("1000000000\n")
    refs = []
    for i in range(pods):
        uid = f"00000000-0000-0000-0000-{i:012d}"
        rel = f"kubepy/{NODE}/pod{uid}"
        ctrs = []
        for j in range(containers):
            cid = f"bench_pod{i}_c{j}_{i:08x}"
            ctrs.append(ContainerRef(f"c{j}", cid, "2026-01-01T00:00:00Z"))
            for sub in ("", cid):
                d_cpu, d_mem = mounts["cpuacct"] / rel / sub, mounts["memory"] / rel / sub
                d_cpu.mkdir(parents=True, exist_ok=True)
                d_mem.mkdir(parents=True, exist_ok=True)
                (d_cpu / "cpuacct.usage").write_text("0\n")
                (d_mem / "memory.usage_in_bytes").write_text("4000000\n")
                (d_mem / "memory.stat").write_text(MEMSTAT)
        refs.append(PodRef("bench", f"pod-{i}", uid, "2026-01-01T00:00:00Z", tuple(ctrs)))
    return mounts, refs


def advance(mounts: dict[str, Path], refs: list[PodRef], round_: int) -> None:
    """Every container used 10 ms of CPU more; the node 1 s."""
    (mounts["cpuacct"] / "cpuacct.usage").write_text(f"{1_000_000_000 * (round_ + 2)}\n")
    for p in refs:
        rel = f"kubepy/{NODE}/pod{p.uid}"
        for c in p.containers:
            (mounts["cpuacct"] / rel / c.id / "cpuacct.usage").write_text(f"{10_000_000 * (round_ + 1)}\n")
        (mounts["cpuacct"] / rel / "cpuacct.usage").write_text(f"{10_000_000 * (round_ + 1) * len(p.containers)}\n")


def serve_all(store: Storage, refs: list[PodRef]) -> int:
    """Build every object a metrics server would answer with; returns how many there were."""
    n = 0
    rate = store.node_rate(NODE)
    if rate is not None:
        _ = {"usage": {"cpu": format_cpu(rate.nano_cores), "memory": format_memory(rate.memory)},
             "window": format_window(rate.window)}
        n += 1
    for p in refs:
        rates = store.pod_rates(p.namespace, p.name)
        if rates:
            whole = pod_summary(rates)
            _ = {"window": format_window(whole.window),
                 "containers": [{"name": k, "usage": {"cpu": format_cpu(r.nano_cores),
                                                      "memory": format_memory(r.memory)}} for k, r in rates.items()]}
            n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--containers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--resolution", type=float, default=15.0, help="the metrics server's scrape interval, s")
    args = ap.parse_args()
    if args.pods < 1 or args.containers < 1 or args.rounds < 2 or args.resolution <= 0:
        ap.error("--pods, --containers >= 1, --rounds >= 2, --resolution > 0")
    tmp = Path(tempfile.mkdtemp(prefix="kpbench-metrics-"))
    try:
        mounts, refs = make_tree(tmp, args.pods, args.containers)
        (tmp / "meminfo").write_text("MemTotal: 16000000 kB\nMemFree: 8000000 kB\nInactive(file): 1000000 kB\n")
        reader = CgroupStatsReader(mode="v1", v1=mounts, meminfo=tmp / "meminfo")
        cg = PodCgroups("kubepy", node=NODE, v1_mounts={"memory": mounts["memory"]})
        collector = StatsCollector(reader, node_name=NODE, pod_path=cg.pod_path, pods=lambda: refs, boot_time=0.0)
        store = Storage()
        k_cpu, k_wall, m_cpu, m_wall, served, text_len = [], [], [], [], 0, 0
        for r in range(args.rounds):
            advance(mounts, refs, r)
            time.sleep(0.01)  # sample times must move for rates
            c0, w0 = time.process_time(), time.perf_counter()
            stats = collector.collect()
            text = resource_metrics_text(stats)
            summary(stats)
            c1, w1 = time.process_time(), time.perf_counter()
            store.store(NODE, parse_scrape(text.decode(), now=time.time()))
            served = serve_all(store, refs)
            c2, w2 = time.process_time(), time.perf_counter()
            k_cpu.append(c1 - c0)
            k_wall.append(w1 - w0)
            m_cpu.append(c2 - c1)
            m_wall.append(w2 - w1)
            text_len = len(text)
        tracemalloc.start()
        stats = collector.collect()
        text = resource_metrics_text(stats)
        summary(stats)
        _, k_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        store.store(NODE, parse_scrape(text.decode(), now=time.time()))
        serve_all(store, refs)
        _, m_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def ms(xs: list[float]) -> str:
        return f"median {statistics.median(xs) * 1000:7.2f} ms, max {max(xs) * 1000:7.2f} ms"

    n_ctr = args.pods * args.containers
    print(f"resource metrics for {args.pods} pods x {args.containers} container(s) on one node "
          f"({args.rounds} rounds)")
    print("mode: IN-PROCESS with FAKE cgroup trees (cgroup v1 layout in a temp dir, real file reads; "
          "no HTTP/TLS, no real pods)")
    print(f"kubelet        (collect {args.pods + n_ctr + 1} cgroups, render /metrics/resource "
          f"{text_len // 1024} KiB + /stats/summary):")
    print(f"  CPU  {ms(k_cpu)}   wall {ms(k_wall)}")
    print(f"  peak Python memory of one scrape: {k_peak / 2**20:.2f} MiB")
    print("metrics server (parse, store, rates, build every PodMetrics/NodeMetrics):")
    print(f"  CPU  {ms(m_cpu)}   wall {ms(m_wall)}   objects served: {served}")
    print(f"  peak Python memory of one scrape: {m_peak / 2**20:.2f} MiB")
    share = 100 / args.resolution
    print(f"at one scrape every {args.resolution:g}s: kubelet {statistics.median(k_cpu) * share:.3f}% of a core, "
          f"metrics server {statistics.median(m_cpu) * share:.3f}% of a core (per node)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
