"""Resource usage of the node, its pods and their containers, read from cgroups.

Role: what the kubelet serves on ``/stats/summary`` (the Summary API JSON,
``stats/v1alpha1``) and ``/metrics/resource`` (the Prometheus text that
metrics-server scrapes), both rendered here from one ``NodeStats``
snapshot. Talks to nothing but files: the pod cgroups the kubelet made
(``kubepy.kubelet.cgroups``: ``/<parent>/<node>/pod<uid>/<container id>``),
the root cgroup for the node's CPU and ``/proc/meminfo`` for its memory.

What is read, as cAdvisor reads it:

=========================  ===================================  ===========================================
                           cgroup v1 (also hybrid)              cgroup v2
=========================  ===================================  ===========================================
CPU, cumulative            ``cpuacct.usage`` (ns)               ``cpu.stat`` ``usage_usec`` * 1000
memory usage               ``memory.usage_in_bytes``            ``memory.current``
working set                usage - ``total_inactive_file``      usage - ``inactive_file`` (``memory.stat``)
RSS                        ``total_rss``                        ``anon``
page faults                ``total_pgfault``/``total_pgmajfault``  ``pgfault``/``pgmajfault``
=========================  ===================================  ===========================================

The node is the whole machine, as a kubelet on a real node reports it: CPU
from the root cgroup (v1 ``cpuacct.usage``, v2 ``cpu.stat``), memory from
``/proc/meminfo`` (usage = MemTotal - MemFree, working set = usage -
Inactive(file)). In a lab cluster every node shares one host, so every
node shows the host's totals.

``usageNanoCores`` in the summary is the rate between this snapshot and the
collector's previous one of the same cgroup (omitted on the first, as
upstream omits what it cannot compute); ``/metrics/resource`` carries only
cumulative counters and gauges, each with the time it was read, and
metrics-server computes rates itself.

A cgroup that vanished while it was read (a container that just exited)
is skipped, not an error; anything else unreadable counts in
``resource_scrape_error``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger(__name__)

__all__ = [
    "ContainerRef",
    "CgroupStatsReader",
    "NodeStats",
    "PodRef",
    "StatsCollector",
    "Usage",
    "parse_flat_keyed",
    "parse_meminfo",
    "resource_metrics_text",
    "summary",
]

RESOURCE_METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# -- parsing (pure) ------------------------------------------------------------
def parse_flat_keyed(text: str) -> dict[str, int]:
    """``memory.stat``/``cpu.stat``'s ``key value`` lines."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` in bytes (``MemTotal:  24683792 kB``)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        try:
            n = int(parts[0])
        except ValueError:
            continue
        out[key.strip()] = n * 1024 if len(parts) > 1 and parts[1] == "kB" else n
    return out


@dataclass(frozen=True)
class Usage:
    """One cgroup's (or the node's) usage at ``time`` (seconds since the epoch)."""

    time: float
    cpu_ns: int
    memory_usage: int
    working_set: int
    rss: int = 0
    page_faults: int = 0
    major_page_faults: int = 0
    nano_cores: int | None = None  # the rate since the collector's previous look, when it had one


def memory_from_stat(usage: int, stat: dict[str, int], *, v2: bool) -> tuple[int, int, int, int]:
    """(working set, rss, page faults, major page faults) as cAdvisor derives them."""
    inactive = stat.get("inactive_file" if v2 else "total_inactive_file", 0)
    working_set = max(0, usage - inactive)
    if v2:
        return working_set, stat.get("anon", 0), stat.get("pgfault", 0), stat.get("pgmajfault", 0)
    return working_set, stat.get("total_rss", 0), stat.get("total_pgfault", 0), stat.get("total_pgmajfault", 0)


# -- reading cgroups -------------------------------------------------------------
class CgroupStatsReader:
    """Reads a cgroup (by its path relative to every hierarchy's root) the way its mode asks.

    ``mode`` is "v1" (the cpuacct and memory hierarchies) or "v2" (one unified
    tree); ``v1`` maps controller names to mount points, as ``PodCgroups.v1``.
    """

    def __init__(self, *, mode: str, v1: dict[str, Path] | None = None, v2_root: Path | None = None,
                 meminfo: Path = Path("/proc/meminfo"), clock: Callable[[], float] = time.time) -> None:
        if mode not in ("v1", "v2"):
            raise ValueError(f"unknown cgroup mode {mode!r}")
        self.mode = mode
        self.v1 = dict(v1 or {})
        self.v2_root = v2_root
        self.meminfo = meminfo
        self.clock = clock

    def _dir(self, controller: str, rel: str) -> Path:
        root = self.v2_root if self.mode == "v2" else self.v1.get(controller)
        if root is None:
            raise FileNotFoundError(f"cgroup controller {controller} is not mounted")
        return root / rel.strip("/") if rel.strip("/") else root

    def cpu_ns(self, rel: str) -> int:
        if self.mode == "v2":
            return parse_flat_keyed((self._dir("cpu", rel) / "cpu.stat").read_text())["usage_usec"] * 1000
        return int((self._dir("cpuacct", rel) / "cpuacct.usage").read_text())

    def read(self, rel: str) -> Usage:
        """The cgroup's usage now; FileNotFoundError when it is gone."""
        now = self.clock()
        cpu = self.cpu_ns(rel)
        mem = self._dir("memory", rel)
        if self.mode == "v2":
            usage = int((mem / "memory.current").read_text())
        else:
            usage = int((mem / "memory.usage_in_bytes").read_text())
        stat = parse_flat_keyed((mem / "memory.stat").read_text())
        ws, rss, faults, major = memory_from_stat(usage, stat, v2=self.mode == "v2")
        return Usage(now, cpu, usage, ws, rss, faults, major)

    def read_node(self) -> Usage:
        """The machine: CPU of the root cgroup, memory from /proc/meminfo."""
        now = self.clock()
        cpu = self.cpu_ns("")
        info = parse_meminfo(self.meminfo.read_text())
        usage = max(0, info.get("MemTotal", 0) - info.get("MemFree", 0))
        ws = max(0, usage - info.get("Inactive(file)", 0))
        return Usage(now, cpu, usage, ws, rss=max(0, usage - info.get("Cached", 0) - info.get("Buffers", 0)))


# -- what is on the node ---------------------------------------------------------
@dataclass(frozen=True)
class ContainerRef:
    name: str
    id: str
    start_time: str  # RFC 3339


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str
    uid: str
    start_time: str
    containers: tuple[ContainerRef, ...]


@dataclass
class ContainerStats:
    ref: ContainerRef
    usage: Usage


@dataclass
class PodStats:
    ref: PodRef
    usage: Usage
    containers: list[ContainerStats] = field(default_factory=list)


@dataclass
class NodeStats:
    node_name: str
    start_time: str
    usage: Usage
    pods: list[PodStats] = field(default_factory=list)
    errors: int = 0  # cgroups that could not be read (not counting ones that went away)


class StatsCollector:
    """Snapshots of the node; remembers the previous sample of each cgroup for ``usageNanoCores``."""

    def __init__(self, reader: CgroupStatsReader, *, node_name: str, pod_path: Callable[[str], str],
                 pods: Callable[[], Iterable[PodRef]], boot_time: float | None = None) -> None:
        self.reader = reader
        self.node_name = node_name
        self.pod_path = pod_path
        self.pods = pods
        boot = boot_time if boot_time is not None else _boot_time()
        self.start_time = rfc3339(boot)
        self._previous: dict[str, Usage] = {}
        self._lock = threading.Lock()  # collect() runs in worker threads; one at a time keeps rates sane

    def _rate(self, key: str, u: Usage, seen: dict[str, Usage]) -> Usage:
        seen[key] = u
        prev = self._previous.get(key)
        if prev is None or u.time <= prev.time or u.cpu_ns < prev.cpu_ns:
            return u
        nano = int((u.cpu_ns - prev.cpu_ns) / (u.time - prev.time))
        return Usage(u.time, u.cpu_ns, u.memory_usage, u.working_set, u.rss, u.page_faults, u.major_page_faults,
                     nano)

    def collect(self) -> NodeStats:
        with self._lock:
            return self._collect()

    def _collect(self) -> NodeStats:
        seen: dict[str, Usage] = {}
        errors = 0
        node = self._rate("/", self.reader.read_node(), seen)
        out = NodeStats(self.node_name, self.start_time, node)
        for pod in self.pods():
            rel = self.pod_path(pod.uid)
            try:
                pod_usage = self._rate(rel, self.reader.read(rel), seen)
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError) as e:
                errors += 1
                log.warning("pod stats unreadable pod=%s/%s cgroup=%s err=%s", pod.namespace, pod.name, rel, e)
                continue
            ps = PodStats(pod, pod_usage)
            for c in pod.containers:
                crel = f"{rel}/{c.id}"
                try:
                    ps.containers.append(ContainerStats(c, self._rate(crel, self.reader.read(crel), seen)))
                except FileNotFoundError:
                    continue
                except (OSError, ValueError, KeyError) as e:
                    errors += 1
                    log.warning("container stats unreadable pod=%s/%s container=%s err=%s", pod.namespace,
                                pod.name, c.name, e)
            out.pods.append(ps)
        out.errors = errors
        # Only what exists now is remembered: a deleted pod's samples do not pile up.
        self._previous = seen
        return out


def _boot_time() -> float:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return time.time() - time.monotonic()


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- rendering (pure) --------------------------------------------------------------
def _cpu(u: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {"time": rfc3339(u.time), "usageCoreNanoSeconds": u.cpu_ns}
    if u.nano_cores is not None:
        out["usageNanoCores"] = u.nano_cores
    return out


def _memory(u: Usage, *, available: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"time": rfc3339(u.time), "usageBytes": u.memory_usage, "workingSetBytes": u.working_set,
                           "rssBytes": u.rss, "pageFaults": u.page_faults, "majorPageFaults": u.major_page_faults}
    if available is not None:
        out["availableBytes"] = available
    return out


def summary(stats: NodeStats, *, memory_capacity: int | None = None) -> dict[str, Any]:
    """The Summary API (``stats/v1alpha1`` ``Summary``) of a snapshot: CPU and memory only."""
    avail = max(0, memory_capacity - stats.usage.working_set) if memory_capacity else None
    return {
        "node": {"nodeName": stats.node_name, "startTime": stats.start_time, "cpu": _cpu(stats.usage),
                 "memory": _memory(stats.usage, available=avail),
                 "systemContainers": []},
        "pods": [{
            "podRef": {"name": p.ref.name, "namespace": p.ref.namespace, "uid": p.ref.uid},
            "startTime": p.ref.start_time,
            "containers": [{"name": c.ref.name, "startTime": c.ref.start_time, "cpu": _cpu(c.usage),
                            "memory": _memory(c.usage)} for c in p.containers],
            "cpu": _cpu(p.usage),
            "memory": _memory(p.usage),
        } for p in stats.pods],
    }


class _Snapshot:
    """A prometheus_client collector over one snapshot (samples carry the time they were read)."""

    def __init__(self, stats: NodeStats) -> None:
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        s = self.stats
        node_cpu = CounterMetricFamily("node_cpu_usage_seconds", "Cumulative cpu time consumed by the node in "
                                       "core-seconds")
        node_cpu.add_metric([], s.usage.cpu_ns / 1e9, timestamp=s.usage.time)
        node_mem = GaugeMetricFamily("node_memory_working_set_bytes", "Current working set of the node in bytes")
        node_mem.add_metric([], s.usage.working_set, timestamp=s.usage.time)
        pod_labels = ["namespace", "pod"]
        ctr_labels = ["container", "namespace", "pod"]
        pod_cpu = CounterMetricFamily("pod_cpu_usage_seconds", "Cumulative cpu time consumed by the pod in "
                                      "core-seconds", labels=pod_labels)
        pod_mem = GaugeMetricFamily("pod_memory_working_set_bytes", "Current working set of the pod in bytes",
                                    labels=pod_labels)
        ctr_cpu = CounterMetricFamily("container_cpu_usage_seconds", "Cumulative cpu time consumed by the "
                                      "container in core-seconds", labels=ctr_labels)
        ctr_mem = GaugeMetricFamily("container_memory_working_set_bytes", "Current working set of the container "
                                    "in bytes", labels=ctr_labels)
        ctr_start = GaugeMetricFamily("container_start_time_seconds", "Start time of the container since unix "
                                      "epoch in seconds", labels=ctr_labels)
        for p in s.pods:
            pl = [p.ref.namespace, p.ref.name]
            pod_cpu.add_metric(pl, p.usage.cpu_ns / 1e9, timestamp=p.usage.time)
            pod_mem.add_metric(pl, p.usage.working_set, timestamp=p.usage.time)
            for c in p.containers:
                cl = [c.ref.name, p.ref.namespace, p.ref.name]
                ctr_cpu.add_metric(cl, c.usage.cpu_ns / 1e9, timestamp=c.usage.time)
                ctr_mem.add_metric(cl, c.usage.working_set, timestamp=c.usage.time)
                started = _parse_rfc3339(c.ref.start_time)
                if started is not None:
                    ctr_start.add_metric(cl, started, timestamp=c.usage.time)
        scrape = GaugeMetricFamily("scrape_error", "[ALPHA] 1 if there was an error while getting container "
                                   "metrics, 0 otherwise")
        scrape.add_metric([], 1 if s.errors else 0)
        resource_scrape = GaugeMetricFamily("resource_scrape_error", "[STABLE] 1 if there was an error while "
                                            "getting container metrics, 0 otherwise")
        resource_scrape.add_metric([], 1 if s.errors else 0)
        return [ctr_cpu, ctr_mem, ctr_start, node_cpu, node_mem, pod_cpu, pod_mem, resource_scrape, scrape]


def _parse_rfc3339(text: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def resource_metrics_text(stats: NodeStats) -> bytes:
    """``/metrics/resource``: Prometheus text format 0.0.4, samples with millisecond timestamps."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(stats))  # type: ignore[arg-type]
    return generate_latest(registry)


def pod_refs(workers: Iterable[Any]) -> list[PodRef]:
    """The running pods of the kubelet's pod workers, with their current app containers."""
    out = []
    for w in workers:
        pod = w.pod
        if pod is None or w.sandbox_id is None:
            continue
        meta = pod.get("metadata") or {}
        latest: dict[str, Any] = {}
        for r in w.records:
            if r.kind in ("app", "ephemeral") and r.running:
                latest[r.name] = r  # records are oldest first: the last is the current instance
        containers = tuple(ContainerRef(r.name, r.id, r.created_at) for r in latest.values())
        out.append(PodRef(meta.get("namespace") or "", meta.get("name") or "", w.uid,
                          w.start_time or "", containers))
    return out

