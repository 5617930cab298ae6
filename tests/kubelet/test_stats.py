"""The kubelet's resource stats: cgroup files (v1 and v2 fake trees) → Summary JSON and /metrics/resource."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubepy.kubelet.cgroups import PodCgroups
from kubepy.kubelet.stats import (
    CgroupStatsReader,
    ContainerRef,
    PodRef,
    StatsCollector,
    parse_meminfo,
    resource_metrics_text,
    summary,
)

MEMINFO = "MemTotal:       1000 kB\nMemFree:         200 kB\nInactive(file):  100 kB\nCached: 50 kB\n"
POD = PodRef("default", "web", "u1", "2026-01-01T00:00:00Z",
             (ContainerRef("app", "cid-app", "2026-01-01T00:00:01Z"),))


def _write(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def _v1_tree(root: Path, *, pod_cpu: int, ctr_cpu: int) -> dict[str, Path]:
    mounts = {"cpuacct": root / "cpuacct", "cpu": root / "cpuacct", "memory": root / "memory"}
    _write(mounts["cpuacct"], {"cpuacct.usage": "5000000000\n"})
    _write(mounts["memory"], {})
    pod = "kubepy/node1/podu1"
    _write(mounts["cpuacct"] / pod, {"cpuacct.usage": f"{pod_cpu}\n"})
    _write(mounts["cpuacct"] / pod / "cid-app", {"cpuacct.usage": f"{ctr_cpu}\n"})
    stat = "cache 10\ntotal_rss 3000\ntotal_inactive_file 1000\ntotal_pgfault 7\ntotal_pgmajfault 1\n"
    _write(mounts["memory"] / pod, {"memory.usage_in_bytes": "9000\n", "memory.stat": stat})
    _write(mounts["memory"] / pod / "cid-app", {"memory.usage_in_bytes": "8000\n", "memory.stat": stat})
    return mounts


def _v2_tree(root: Path) -> Path:
    _write(root, {"cpu.stat": "usage_usec 4000000\nuser_usec 1\n"})
    pod = root / "kubepy/node1/podu1"
    _write(pod, {"cpu.stat": "usage_usec 2000\n", "memory.current": "7000\n",
                 "memory.stat": "anon 2500\ninactive_file 500\npgfault 3\npgmajfault 0\n"})
    _write(pod / "cid-app", {"cpu.stat": "usage_usec 1500\n", "memory.current": "6000\n",
                             "memory.stat": "anon 2000\ninactive_file 1000\n"})
    return root


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def _collector(reader: CgroupStatsReader, pods: list[PodRef]) -> StatsCollector:
    cg = PodCgroups("kubepy", node="node1", v1_mounts={"memory": Path("/x")})
    return StatsCollector(reader, node_name="node1", pod_path=cg.pod_path, pods=lambda: pods, boot_time=1.0)


def test_meminfo_in_bytes() -> None:
    assert parse_meminfo(MEMINFO) == {"MemTotal": 1024000, "MemFree": 204800, "Inactive(file)": 102400,
                                      "Cached": 51200}


def test_v1_summary_and_rate(tmp_path: Path) -> None:
    mounts = _v1_tree(tmp_path, pod_cpu=1_000_000_000, ctr_cpu=900_000_000)
    (tmp_path / "meminfo").write_text(MEMINFO)
    clock = Clock()
    reader = CgroupStatsReader(mode="v1", v1=mounts, meminfo=tmp_path / "meminfo", clock=clock)
    col = _collector(reader, [POD])
    first = summary(col.collect(), memory_capacity=1024000)
    pod = first["pods"][0]
    assert "usageNanoCores" not in pod["cpu"]          # no earlier sample: no rate
    assert pod["cpu"]["usageCoreNanoSeconds"] == 1_000_000_000
    assert pod["memory"]["workingSetBytes"] == 8000    # 9000 - total_inactive_file
    assert pod["memory"]["rssBytes"] == 3000 and pod["memory"]["pageFaults"] == 7
    assert pod["containers"][0]["name"] == "app"
    assert pod["containers"][0]["memory"]["workingSetBytes"] == 7000
    node = first["node"]
    assert node["nodeName"] == "node1" and node["cpu"]["usageCoreNanoSeconds"] == 5_000_000_000
    assert node["memory"]["workingSetBytes"] == (1024000 - 204800) - 102400
    assert node["memory"]["availableBytes"] == 1024000 - node["memory"]["workingSetBytes"]
    # Two seconds and half a core-second later: 250 millicores.
    clock.t += 2
    (mounts["cpuacct"] / "kubepy/node1/podu1/cpuacct.usage").write_text("1500000000\n")
    second = summary(col.collect())
    assert second["pods"][0]["cpu"]["usageNanoCores"] == 250_000_000
    assert second["pods"][0]["containers"][0]["cpu"]["usageNanoCores"] == 0


def test_v2_reads_the_unified_tree(tmp_path: Path) -> None:
    root = _v2_tree(tmp_path / "unified")
    (tmp_path / "meminfo").write_text(MEMINFO)
    reader = CgroupStatsReader(mode="v2", v2_root=root, meminfo=tmp_path / "meminfo", clock=Clock())
    s = summary(_collector(reader, [POD]).collect())
    pod = s["pods"][0]
    assert pod["cpu"]["usageCoreNanoSeconds"] == 2_000_000
    assert pod["memory"]["workingSetBytes"] == 6500 and pod["memory"]["rssBytes"] == 2500
    assert pod["containers"][0]["memory"]["workingSetBytes"] == 5000
    assert s["node"]["cpu"]["usageCoreNanoSeconds"] == 4_000_000_000


def test_gone_cgroups_are_skipped_broken_ones_counted(tmp_path: Path) -> None:
    mounts = _v1_tree(tmp_path, pod_cpu=1, ctr_cpu=1)
    (tmp_path / "meminfo").write_text(MEMINFO)
    reader = CgroupStatsReader(mode="v1", v1=mounts, meminfo=tmp_path / "meminfo", clock=Clock())
    gone = PodRef("default", "gone", "u2", "", ())
    broken = PodRef("default", "web", "u1", "", (ContainerRef("app", "cid-app", ""),))
    (mounts["cpuacct"] / "kubepy/node1/podu1/cid-app/cpuacct.usage").write_text("garbage\n")
    stats = _collector(reader, [gone, broken]).collect()
    assert [p.ref.name for p in stats.pods] == ["web"]
    assert stats.pods[0].containers == [] and stats.errors == 1
    families = {f.name: f for f in text_string_to_metric_families(resource_metrics_text(stats).decode())}
    assert families["resource_scrape_error"].samples[0].value == 1


def test_resource_metrics_parse_with_timestamps(tmp_path: Path) -> None:
    mounts = _v1_tree(tmp_path, pod_cpu=2_500_000_000, ctr_cpu=2_000_000_000)
    (tmp_path / "meminfo").write_text(MEMINFO)
    reader = CgroupStatsReader(mode="v1", v1=mounts, meminfo=tmp_path / "meminfo", clock=Clock())
    text = resource_metrics_text(_collector(reader, [POD]).collect()).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s
               for f in text_string_to_metric_families(text) for s in f.samples}
    ctr = samples[("container_cpu_usage_seconds_total", (("container", "app"), ("namespace", "default"),
                                                         ("pod", "web")))]
    assert ctr.value == pytest.approx(2.0)
    assert float(ctr.timestamp) == pytest.approx(1_700_000_000.0)
    assert samples[("container_memory_working_set_bytes", (("container", "app"), ("namespace", "default"),
                                                            ("pod", "web")))].value == 7000
    assert samples[("pod_cpu_usage_seconds_total", (("namespace", "default"), ("pod", "web")))].value == 2.5
    assert samples[("pod_memory_working_set_bytes", (("namespace", "default"), ("pod", "web")))].value == 8000
    assert samples[("node_cpu_usage_seconds_total", ())].value == 5.0
    assert samples[("node_memory_working_set_bytes", ())].value > 0
    assert samples[("scrape_error", ())].value == 0
    # The wire form metrics-server reads: "<name>{labels} <value> <ms timestamp>".
    line = next(x for x in text.splitlines() if x.startswith("node_cpu_usage_seconds_total"))
    assert line.split()[-1] == "1700000000000"


def test_bad_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown cgroup mode"):
        CgroupStatsReader(mode="v3")


class _AllowBearer:
    async def check(self, request):  # the kubelet's RequestAuth: one token, else 401
        if request.headers.get("Authorization") == "Bearer kptest-token":
            return None
        return 401, "Unauthorized", "Unauthorized"


async def test_the_kubelet_serves_both_formats_and_metrics_server_reads_them(tmp_path: Path) -> None:
    import aiohttp

    from kubepy.kubelet.server import KubeletServer
    from kubepy.metricsserver.samples import parse_scrape

    mounts = _v1_tree(tmp_path / "cg", pod_cpu=3_000_000_000, ctr_cpu=2_000_000_000)
    (tmp_path / "meminfo").write_text(MEMINFO)
    reader = CgroupStatsReader(mode="v1", v1=mounts, meminfo=tmp_path / "meminfo")
    srv = KubeletServer(object(), node_name="node1", auth=_AllowBearer(),  # type: ignore[arg-type]
                        cert_dir=tmp_path / "pki",
                        address="127.0.0.1", port=0, stats=_collector(reader, [POD]), memory_capacity=1024000)
    await srv.start()
    base = f"https://127.0.0.1:{srv.port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False),
                                         headers={"Authorization": "Bearer kptest-token"}) as s:
            async with s.get(f"{base}/stats/summary") as r:
                assert r.status == 200
                body = await r.json()
            assert body["pods"][0]["podRef"] == {"name": "web", "namespace": "default", "uid": "u1"}
            assert body["pods"][0]["containers"][0]["cpu"]["usageCoreNanoSeconds"] == 2_000_000_000
            async with s.get(f"{base}/stats/summary?only_cpu_and_memory=false") as r:
                assert r.status == 400  # network, filesystem and the rest are not collected: said, not faked
            async with s.get(f"{base}/metrics/resource") as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = await r.text()
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as anon:
                async with anon.get(f"{base}/metrics/resource") as r:
                    assert r.status == 401
        scrape = parse_scrape(text, now=0.0)
        assert scrape.node is not None and scrape.node.cpu_seconds == 5.0
        assert scrape.pods[("default", "web")]["app"].cpu_seconds == 2.0
        assert scrape.pods[("default", "web")]["app"].memory == 7000
    finally:
        await srv.stop()
