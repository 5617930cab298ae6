"""Resource samples: the kubelet's ``/metrics/resource`` parsed, and CPU rates from two scrapes (pure).

Parsing is prometheus_client's text parser; only the families metrics-server reads are kept:
``node_cpu_usage_seconds_total``, ``node_memory_working_set_bytes``,
``container_cpu_usage_seconds_total``, ``container_memory_working_set_bytes`` and
``container_start_time_seconds``, each sample with the time the kubelet read it (a sample
without a timestamp is taken at the scrape's time).

Rates, as upstream's storage computes them: a node's or container's CPU is
``(cpu₂ - cpu₁) / (t₂ - t₁)`` over its last two samples, the window is ``t₂ - t₁`` and the
timestamp ``t₂``. There is no rate (the object is not served) until two samples exist; a
counter that went down, a sample no newer than the last, or a container whose start time
changed (it restarted) starts over from the new sample. A pod is served once every one of
its containers has a rate; its usage is their sum, its timestamp and window its newest
container's. Memory is the newest working set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Point", "Rate", "Scrape", "Storage", "format_cpu", "format_memory", "format_window", "parse_scrape"]


@dataclass(frozen=True)
class Point:
    time: float          # seconds since the epoch
    cpu_seconds: float   # cumulative core-seconds
    memory: int          # working set, bytes
    start_time: float = 0.0


@dataclass(frozen=True)
class Rate:
    time: float
    window: float
    nano_cores: int
    memory: int


@dataclass
class Scrape:
    """One node's scrape: the node's point and each container's, by (namespace, pod) then name."""

    node: Point | None = None
    pods: dict[tuple[str, str], dict[str, Point]] = field(default_factory=dict)


def parse_scrape(text: str, *, now: float) -> Scrape:
    """A kubelet's ``/metrics/resource`` → a Scrape; ValueError for text that is not the format."""
    node_cpu: tuple[float, float] | None = None
    node_mem: tuple[float, float] | None = None
    cpu: dict[tuple[str, str, str], tuple[float, float]] = {}
    mem: dict[tuple[str, str, str], tuple[float, float]] = {}
    start: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            t = float(s.timestamp) if s.timestamp is not None else now
            if s.name == "node_cpu_usage_seconds_total":
                node_cpu = (t, float(s.value))
            elif s.name == "node_memory_working_set_bytes":
                node_mem = (t, float(s.value))
            elif s.name.startswith("container_"):
                key = (s.labels.get("namespace", ""), s.labels.get("pod", ""), s.labels.get("container", ""))
                if not all(key):
                    continue
                if s.name == "container_cpu_usage_seconds_total":
                    cpu[key] = (t, float(s.value))
                elif s.name == "container_memory_working_set_bytes":
                    mem[key] = (t, float(s.value))
                elif s.name == "container_start_time_seconds":
                    start[key] = float(s.value)
    out = Scrape()
    if node_cpu is not None and node_mem is not None:
        out.node = Point(node_cpu[0], node_cpu[1], int(node_mem[1]))
    for key, (t, value) in cpu.items():
        if key not in mem:
            continue  # upstream drops a container without both
        ns, pod, name = key
        out.pods.setdefault((ns, pod), {})[name] = Point(t, value, int(mem[key][1]), start.get(key, 0.0))
    return out


def _rate(prev: Point | None, last: Point) -> Rate | None:
    if prev is None or last.time <= prev.time or last.cpu_seconds < prev.cpu_seconds:
        return None
    window = last.time - prev.time
    return Rate(last.time, window, int((last.cpu_seconds - prev.cpu_seconds) / window * 1e9), last.memory)


def _advance(pair: tuple[Point | None, Point] | None, new: Point) -> tuple[Point | None, Point]:
    """The (previous, last) pair after a new sample (see the module docstring for when it starts over)."""
    if pair is None:
        return None, new
    _, last = pair
    if new.time <= last.time:
        return pair
    if new.cpu_seconds < last.cpu_seconds or (new.start_time and last.start_time and
                                               new.start_time != last.start_time):
        return None, new
    return last, new


class Storage:
    """The last two samples of every node and container, replaced node by node as scrapes come in."""

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[Point | None, Point]] = {}
        self.pods: dict[tuple[str, str], dict[str, tuple[Point | None, Point]]] = {}
        self._pod_node: dict[tuple[str, str], str] = {}

    def store(self, node: str, scrape: Scrape) -> None:
        if scrape.node is not None:
            self.nodes[node] = _advance(self.nodes.get(node), scrape.node)
        # Pods this node no longer reports are gone (deleted, or moved): forget them.
        for key in [k for k, n in self._pod_node.items() if n == node and k not in scrape.pods]:
            self.pods.pop(key, None)
            self._pod_node.pop(key, None)
        for key, containers in scrape.pods.items():
            old = self.pods.get(key, {})
            self.pods[key] = {name: _advance(old.get(name), p) for name, p in containers.items()}
            self._pod_node[key] = node

    def forget_nodes(self, keep: Iterable[str]) -> None:
        keep = set(keep)
        for node in [n for n in self.nodes if n not in keep]:
            del self.nodes[node]
        for key in [k for k, n in self._pod_node.items() if n not in keep]:
            self.pods.pop(key, None)
            self._pod_node.pop(key, None)

    def node_rate(self, node: str) -> Rate | None:
        pair = self.nodes.get(node)
        return _rate(*pair) if pair else None

    def pod_rates(self, namespace: str, pod: str) -> dict[str, Rate] | None:
        """Every container's rate, or None unless all of them have one."""
        containers = self.pods.get((namespace, pod))
        if not containers:
            return None
        rates = {name: _rate(*pair) for name, pair in containers.items()}
        if any(r is None for r in rates.values()):
            return None
        return {k: v for k, v in rates.items() if v is not None}

    def pod_keys(self) -> list[tuple[str, str]]:
        return sorted(self.pods)


def pod_summary(rates: dict[str, Rate]) -> Rate:
    newest = max(rates.values(), key=lambda r: r.time)
    return dataclasses.replace(newest, nano_cores=sum(r.nano_cores for r in rates.values()),
                               memory=sum(r.memory for r in rates.values()))


# -- quantities as upstream writes them -----------------------------------------------
def format_cpu(nano_cores: int) -> str:
    return f"{max(0, nano_cores)}n"


def format_memory(b: int) -> str:
    b = max(0, b)
    return f"{b // 1024}Ki" if b % 1024 == 0 and b else str(b)


def format_window(seconds: float) -> str:
    """A Go duration string (metav1.Duration): ``15.012s``."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"
