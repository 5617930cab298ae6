"""HostLocalIPAM: allocation rules, persistence, exhaustion and races."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from kubepy.kubelet.ipam import AddressesExhausted, HostLocalIPAM


def test_first_allocation_skips_network_and_gateway(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(tmp_path, "10.244.1.0/24")
    assert ipam.gateway == "10.244.1.1"
    assert ipam.prefixlen == 24
    assert ipam.allocate("uid-a", name="default/a") == "10.244.1.2"
    assert ipam.allocate("uid-b") == "10.244.1.3"


def test_allocate_is_idempotent_per_uid(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(tmp_path, "10.244.1.0/24")
    ip = ipam.allocate("uid-a")
    assert ipam.allocate("uid-a") == ip
    assert ipam.allocations() == {"uid-a": ip}
    assert ipam.get("uid-a") == ip
    assert ipam.get("nope") is None


def test_release_and_round_robin(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(tmp_path, "10.244.1.0/24")
    a = ipam.allocate("a")
    assert ipam.release("a") == a
    assert ipam.release("a") is None  # idempotent
    # the freed address is not handed out again straight away
    assert ipam.allocate("b") != a
    assert ipam.get("a") is None


def test_state_survives_restart(tmp_path: Path) -> None:
    HostLocalIPAM(tmp_path, "10.244.1.0/24").allocate("a", name="ns/a")
    again = HostLocalIPAM(tmp_path, "10.244.1.0/24")
    assert again.allocations() == {"a": "10.244.1.2"}
    assert again.names() == {"a": "ns/a"}
    assert again.allocate("b") == "10.244.1.3"


def test_exhaustion_and_no_broadcast(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(tmp_path, "10.244.1.0/29")  # .2 - .6 usable
    ips = [ipam.allocate(f"u{i}") for i in range(5)]
    assert ips == [f"10.244.1.{n}" for n in range(2, 7)]
    with pytest.raises(AddressesExhausted):
        ipam.allocate("one-too-many")
    ipam.release("u2")
    assert ipam.allocate("later") == "10.244.1.4"  # wraps round to the only free one


def test_wraps_round_after_end_of_range(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(tmp_path, "10.244.1.0/29")
    for i in range(5):
        ipam.allocate(f"u{i}")
    ipam.release("u0")
    assert ipam.allocate("x") == "10.244.1.2"


def test_rejects_tiny_cidr(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        HostLocalIPAM(tmp_path, "10.0.0.0/31")


def test_threads_never_share_an_address(tmp_path: Path) -> None:
    results: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        ipam = HostLocalIPAM(tmp_path, "10.244.1.0/24")
        for i in range(10):
            ip = ipam.allocate(f"t{n}-{i}")
            with lock:
                results.append(ip)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80 == len(set(results))


def _allocate_many(state_dir: str, prefix: str, count: int, out: multiprocessing.Queue[str]) -> None:
    ipam = HostLocalIPAM(Path(state_dir), "10.244.2.0/24")
    for i in range(count):
        out.put(ipam.allocate(f"{prefix}-{i}"))


def test_processes_never_share_an_address(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_allocate_many, args=(str(tmp_path), f"p{n}", 20, out)) for n in range(4)]
    for p in procs:
        p.start()
    ips = [out.get(timeout=30) for _ in range(80)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert len(set(ips)) == 80
    assert len(HostLocalIPAM(tmp_path, "10.244.2.0/24").allocations()) == 80
