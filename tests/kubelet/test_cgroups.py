"""PodCgroups: conversions, mount detection, fake v1/v2 trees, and (slow) real v1/v2 limits.

The real tests use the parent ``kptest-<rand>`` (node ``node1``), so they
never touch a real node's tree, and remove it all (killing what is left)
even when they fail.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubepy.kubelet.cgroups import PodCgroups, cpu_quota_us, cpu_shares, cpu_weight, detect_mounts

MOUNTINFO_HYBRID = """\
25 30 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
27 25 0:24 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
28 25 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
30 25 0:27 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
31 25 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
MOUNTINFO_V2 = "31 25 0:28 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
MOUNTINFO_COMOUNT = "26 25 0:23 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"


@pytest.mark.parametrize(("milli", "shares"), [(0, 2), (1, 2), (100, 102), (250, 256), (1000, 1024), (10**6, 262144)])
def test_cpu_shares(milli: int, shares: int) -> None:
    assert cpu_shares(milli) == shares


@pytest.mark.parametrize(("milli", "quota"), [(200, 20000), (1500, 150000), (5, 1000)])
def test_cpu_quota(milli: int, quota: int) -> None:
    assert cpu_quota_us(milli) == quota


def test_cpu_weight_matches_kubernetes() -> None:
    assert cpu_weight(2) == 1 and cpu_weight(1024) == 39 and cpu_weight(262144) == 10000


def test_detect_mounts() -> None:
    v1, v2 = detect_mounts(MOUNTINFO_HYBRID)
    assert v1["memory"] == Path("/sys/fs/cgroup/memory") and v1["name=systemd"] == Path("/sys/fs/cgroup/systemd")
    assert "xattr" not in v1 and v2 == Path("/sys/fs/cgroup/unified")
    assert detect_mounts(MOUNTINFO_V2) == ({}, Path("/sys/fs/cgroup"))
    v1, _ = detect_mounts(MOUNTINFO_COMOUNT)
    assert v1["cpu"] == v1["cpuacct"]


def test_hybrid_is_v1_and_parent_carries_node(tmp_path: Path) -> None:
    cg = PodCgroups(node="node1", v1_mounts={"memory": tmp_path}, v2_root=tmp_path / "unified")
    assert cg.mode == "v1" and cg.parent_path == "/kubepy/node1"
    assert cg.pod_path("abc") == "/kubepy/node1/podabc"
    with pytest.raises(ValueError):
        cg.pod_path("../x")


def test_fake_v1_writes(tmp_path: Path) -> None:
    mounts = {c: tmp_path / c for c in ("cpu", "cpuacct", "memory", "pids")}
    cg = PodCgroups(node="n1", v1_mounts=mounts)
    path = cg.create("u1", cpu_request_milli=250, cpu_limit_milli=200, memory_limit_bytes=64 << 20)
    assert path == "/kubepy/n1/podu1"
    pod = "kubepy/n1/podu1"
    assert (tmp_path / "cpu" / pod / "cpu.shares").read_text() == "256\n"
    assert (tmp_path / "cpu" / pod / "cpu.cfs_quota_us").read_text() == "20000\n"
    assert (tmp_path / "cpu" / pod / "cpu.cfs_period_us").read_text() == "100000\n"
    assert (tmp_path / "memory" / pod / "memory.limit_in_bytes").read_text() == f"{64 << 20}\n"
    assert (tmp_path / "cpuacct" / pod).is_dir() and (tmp_path / "pids" / pod).is_dir()
    cg.create("u2", cpu_request_milli=0)
    assert (tmp_path / "cpu" / "kubepy/n1/podu2" / "cpu.cfs_quota_us").read_text() == "-1\n"
    assert (tmp_path / "memory" / "kubepy/n1/podu2" / "memory.limit_in_bytes").read_text() == "-1\n"
    assert cg.list_pods() == ["u1", "u2"]
    assert PodCgroups(node="n2", v1_mounts=mounts).list_pods() == []


def test_fake_v2_writes_and_enables_controllers(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    for d in (tmp_path, tmp_path / "kubepy", tmp_path / "kubepy/n1", tmp_path / "kubepy/n1/podu1"):
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.subtree_control").write_text("")
    cg = PodCgroups(node="n1", v2_root=tmp_path)
    assert cg.mode == "v2"
    cg.create("u1", cpu_request_milli=1000, cpu_limit_milli=200, memory_limit_bytes=1 << 20)
    pod = tmp_path / "kubepy/n1/podu1"
    assert (pod / "cpu.weight").read_text() == "39\n"
    assert (pod / "cpu.max").read_text() == "20000 100000\n"
    assert (pod / "memory.max").read_text() == f"{1 << 20}\n"
    assert (pod / "pids.max").read_text() == "max\n"
    for d in (tmp_path, tmp_path / "kubepy", tmp_path / "kubepy/n1", pod):
        assert (d / "cgroup.subtree_control").read_text() == "+cpu +memory +pids\n"
    (pod / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (pod / "memory.current").write_text("4096\n")
    assert cg.oom_kill_count("u1") == 1 and cg.memory_usage("u1") == 4096
    cg.create("u1", cpu_limit_milli=None)
    assert (pod / "cpu.max").read_text() == "max 100000\n"


# -- real system ---------------------------------------------------------------------
@pytest.fixture
def real() -> Iterator[PodCgroups]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    cg = PodCgroups(f"kptest-{secrets.token_hex(3)}", node="node1")
    try:
        yield cg
    finally:
        cg.remove_parent()
        for root in cg._roots(all_hierarchies=True).values():
            assert not (root / cg.parent_path.lstrip("/")).exists()
        top = cg.parent_path.strip("/").split("/")[0]
        for root in cg._roots(all_hierarchies=True).values():
            if (root / top).is_dir():
                (root / top).rmdir()


def _start_in(cg: PodCgroups, uid: str, code: str, *, container: str = "") -> subprocess.Popen[bytes]:
    """Start python in the pod cgroup (or a runc-like child cgroup ``<pod>/<container>``)."""
    dirs = list(cg.paths(uid).values())
    if container:
        dirs = [d / container for d in dirs]
        for d in dirs:
            d.mkdir(exist_ok=True)

    # The child moves itself in before running the code (no preexec_fn: unsafe with threads).
    enter = (
        f"import os\nfor f in {[str(d / 'cgroup.procs') for d in dirs]!r}:\n    open(f, 'w').write(str(os.getpid()))\n"
    )
    return subprocess.Popen([sys.executable, "-c", enter + code])


@pytest.mark.slow
def test_real_memory_limit_oom_kills_and_cpu_is_throttled(real: PodCgroups) -> None:
    uid = "kptest-" + secrets.token_hex(4)
    path = real.create(uid, cpu_request_milli=100, cpu_limit_milli=200, memory_limit_bytes=64 << 20)
    assert path.endswith(f"/pod{uid}") and real.list_pods() == [uid]
    files = real.paths(uid)
    if real.mode == "v1":
        assert (files["memory"] / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        assert (files["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "20000"
        assert (files["cpu"] / "cpu.shares").read_text().strip() == "102"
    assert real.oom_kill_count(uid) == 0

    # A memory hog in a runc-like container cgroup under the pod: killed by the pod's limit.
    hog = _start_in(
        real, uid, "b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])", container="ctr-hog"
    )
    assert hog.wait(timeout=30) == -9
    assert real.oom_kill_count(uid) >= 1

    # 200m: one busy second of wall time gets about 0.2 s of CPU.
    busy = _start_in(
        real,
        uid,
        "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 1.0: pass\n"
        "import os\nprint(os.times().user + os.times().system)",
        container="ctr-busy",
    )
    busy.wait(timeout=30)
    # cpu time from /proc is gone once reaped; measure through cpuacct/cpu.stat instead
    if real.mode == "v1":
        used_ns = int((real.paths(uid)["cpuacct"] / "ctr-busy" / "cpuacct.usage").read_text())
        # The limit shows as a ceiling (a busy loop would take ~1e9 ns); a loaded machine may give less.
        assert 0.01e9 < used_ns < 0.45e9, used_ns

    # A process still inside: remove() kills it, then removes children first.
    sleeper = _start_in(real, uid, "import time; time.sleep(60)", container="ctr-sleep")
    time.sleep(0.1)
    assert real.memory_usage(uid) > 0
    t = time.perf_counter()
    real.remove(uid)
    elapsed = time.perf_counter() - t
    assert sleeper.wait(timeout=5) == -9
    print(f"remove with one live process: {elapsed * 1000:.1f}ms")
    for d in real.paths(uid, all_hierarchies=True).values():
        assert not d.exists()
    assert real.list_pods() == []
    real.remove(uid)  # idempotent
