#!/usr/bin/env python3
"""Proxy benchmark: prints figures, asserts nothing.

1. Sync time for N Services (2 endpoints each) in a throwaway netns
   ``kpbench-<rand>-rules``: a full resync (iptables-save + render +
   iptables-restore) and a one-Service change (partial render +
   iptables-restore), each beside the time the raw ``iptables-restore``
   of the same payload takes (so the Python share is visible). The same
   for nftables mode (list chains/sets + render + one ``nft -f``), printed
   beside it (``--modes``).
2. Request latency: a client pod netns makes fresh TCP connections
   (connect, read the answer, close) to a backend pod, straight to the
   pod IP and through a ClusterIP - with 1 Service, and with the largest
   N loaded (KUBE-SERVICES is a linear list).

Every loop is bounded; every netns is deleted at the end, even on error.

    /opt/kpvenv/bin/python bench/proxy.py [--sizes 100,1000,10000] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubepy.proxy.iptables import RealIPTables, parse_state
from kubepy.proxy.nftables import RealNFTables, render_nft_full, render_nft_partial
from kubepy.proxy.rules import (
    Endpoint,
    NodeConfig,
    ServicePort,
    render_full,
    render_partial,
)

CONFIG = NodeConfig(cluster_cidr="10.244.0.0/16")
SERVER = textwrap.dedent("""
    import socket
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 8080)); s.listen(512); print("ready", flush=True)
    while True:
        c, _ = s.accept(); c.sendall(b"pong"); c.close()
""")
CLIENT = textwrap.dedent("""
    import json, socket, sys, time
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for _ in range(20):  # warm-up
        s = socket.create_connection((host, port), timeout=3); s.recv(10); s.close()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        s = socket.create_connection((host, port), timeout=3); s.recv(10); s.close()
        out.append(time.perf_counter() - t0)
    print(json.dumps(out))
""")


def sh(*argv: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, check=check, capture_output=True, text=True, timeout=600)


def synthetic(n: int) -> dict[str, ServicePort]:
    ports = {}
    for i in range(n):
        ip = f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}"
        eps = (Endpoint(f"10.244.{i // 127 % 256}.{2 * (i % 127) + 1}", 8080),
               Endpoint(f"10.244.{i // 127 % 256}.{2 * (i % 127) + 2}", 8080))
        sp = ServicePort(namespace="bench", name=f"svc-{i}", port_name="http", protocol="tcp", cluster_ip=ip,
                         port=80, node_port=None, endpoints=eps)
        ports[f"{sp.key}|tcp"] = sp
    return ports


CPU: dict[str, float] = {}  # the last raw apply's CPU seconds (user + system), by tool


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def raw_restore(netns: str, payload: str) -> float:
    t0, c0 = time.perf_counter(), children_cpu()
    sh("ip", "netns", "exec", netns, "iptables-restore", "--noflush", "-w", stdin=payload)
    CPU["iptables"] = children_cpu() - c0
    return time.perf_counter() - t0


async def bench_sync(netns: str, n: int) -> dict[str, float]:
    ipt = RealIPTables(netns=netns)
    ports = synthetic(n)
    t0 = time.perf_counter()
    state = parse_state(await ipt.save())
    t1 = time.perf_counter()
    full = render_full(ports, CONFIG, kernel=state)
    t2 = time.perf_counter()
    await ipt.restore(full.text)
    t3 = time.perf_counter()
    # A second full sync, now over a populated kernel (the steady state of a periodic resync).
    t4 = time.perf_counter()
    state = parse_state(await ipt.save())
    full2 = render_full(ports, CONFIG, kernel=state)
    await ipt.restore(full2.text)
    t5 = time.perf_counter()
    raw_full = raw_restore(netns, full2.text)
    raw_full_cpu = CPU["iptables"]
    # One Service changes an endpoint.
    key = next(iter(ports))
    old = ports[key]
    changed = dict(ports)
    changed[key] = ServicePort(**{**old.__dict__, "endpoints": (old.endpoints[0], Endpoint("10.244.255.254", 8080))})
    t6 = time.perf_counter()
    part = render_partial(changed, CONFIG, {key}, previous_chains=full2.nat_chains)
    t7 = time.perf_counter()
    await ipt.restore(part.text)
    t8 = time.perf_counter()
    raw_part = raw_restore(netns, part.text)
    return {"services": n, "rules": full.rules, "payload_kb": len(full.text) / 1024,
            "first_save_ms": (t1 - t0) * 1e3, "first_render_ms": (t2 - t1) * 1e3, "first_restore_ms": (t3 - t2) * 1e3,
            "full_sync_ms": (t5 - t4) * 1e3, "full_raw_restore_ms": raw_full * 1e3,
            "partial_render_ms": (t7 - t6) * 1e3, "partial_sync_ms": (t8 - t6) * 1e3,
            "partial_raw_restore_ms": raw_part * 1e3, "partial_payload_kb": len(part.text) / 1024,
            # CPU of the raw applies: wall times on a busy 2-core host wait for a core, this doesn't.
            "full_raw_cpu_ms": raw_full_cpu * 1e3, "partial_raw_cpu_ms": CPU["iptables"] * 1e3}


async def bench_nft_sync(netns: str, n: int) -> dict[str, float]:
    nft = RealNFTables(netns=netns)
    ports = synthetic(n)
    t0 = time.perf_counter()
    state = await nft.state()
    t1 = time.perf_counter()
    full = render_nft_full(ports, CONFIG, kernel=state)
    t2 = time.perf_counter()
    await nft.apply(full.text)
    t3 = time.perf_counter()
    # A second full sync over a populated kernel (the periodic resync).
    t4 = time.perf_counter()
    full2 = render_nft_full(ports, CONFIG, kernel=await nft.state())
    await nft.apply(full2.text)
    t5 = time.perf_counter()
    raw_full = raw_nft(netns, full2.text)
    raw_full_cpu = CPU["nftables"]
    key = next(iter(ports))
    old = ports[key]
    changed = dict(ports)
    changed[key] = ServicePort(**{**old.__dict__, "endpoints": (old.endpoints[0], Endpoint("10.244.255.254", 8080))})
    t6 = time.perf_counter()
    part = render_nft_partial(changed, CONFIG, {key}, previous=ports, previous_chains=full2.nat_chains)
    t7 = time.perf_counter()
    await nft.apply(part.text)
    t8 = time.perf_counter()
    # The raw figure re-applies the change backwards (the same payload twice would fail on its elements).
    back = render_nft_partial(ports, CONFIG, {key}, previous=changed)
    raw_part = raw_nft(netns, back.text)
    return {"services": n, "rules": full.rules, "payload_kb": len(full.text) / 1024,
            "first_save_ms": (t1 - t0) * 1e3, "first_render_ms": (t2 - t1) * 1e3, "first_restore_ms": (t3 - t2) * 1e3,
            "full_sync_ms": (t5 - t4) * 1e3, "full_raw_restore_ms": raw_full * 1e3,
            "partial_render_ms": (t7 - t6) * 1e3, "partial_sync_ms": (t8 - t6) * 1e3,
            "partial_raw_restore_ms": raw_part * 1e3, "partial_payload_kb": len(part.text) / 1024,
            # CPU of the raw applies: wall times on a busy 2-core host wait for a core, this doesn't.
            "full_raw_cpu_ms": raw_full_cpu * 1e3, "partial_raw_cpu_ms": CPU["nftables"] * 1e3}


def raw_nft(netns: str, payload: str) -> float:
    t0, c0 = time.perf_counter(), children_cpu()
    sh("ip", "netns", "exec", netns, "nft", "-f", "-", stdin=payload)
    CPU["nftables"] = children_cpu() - c0
    return time.perf_counter() - t0


def latency(prefix: str, tmp: Path, requests: int, big: int, mode: str = "iptables") -> dict[str, float]:
    node, pod, cli = f"{prefix}-node", f"{prefix}-a", f"{prefix}-c"
    for ns in (node, pod, cli):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0")
    sh("ip", "-n", node, "link", "add", "cni0", "type", "bridge")
    sh("ip", "-n", node, "addr", "add", "10.244.1.1/24", "dev", "cni0")
    sh("ip", "-n", node, "link", "set", "cni0", "up")
    sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.conf.cni0.send_redirects=0")
    for ns, ip, veth in ((pod, "10.244.1.10", "vpa"), (cli, "10.244.1.12", "vpc")):
        sh("ip", "-n", node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", node, "link", "set", veth, "master", "cni0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", "10.244.1.1")
    (tmp / "server.py").write_text(SERVER)
    (tmp / "client.py").write_text(CLIENT)
    server = subprocess.Popen(["ip", "netns", "exec", pod, sys.executable, str(tmp / "server.py")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        ipt = RealIPTables(netns=node)
        target = ServicePort(namespace="bench", name="target", port_name="", protocol="tcp",
                             cluster_ip="10.111.0.1", port=80, endpoints=(Endpoint("10.244.1.10", 8080),))

        def measure(host: str, port: int) -> list[float]:
            out = sh("ip", "netns", "exec", cli, sys.executable, str(tmp / "client.py"), host, str(port),
                     str(requests)).stdout
            return json.loads(out)

        nft = RealNFTables(netns=node)

        async def load(ports: dict[str, ServicePort]) -> None:
            if mode == "nftables":
                await nft.apply(render_nft_full(ports, CONFIG, kernel=await nft.state()).text)
            else:
                await ipt.restore(render_full(ports, CONFIG, kernel=parse_state(await ipt.save())).text)

        asyncio.run(load({"t": target}))
        direct = measure("10.244.1.10", 8080)
        via_svc = measure("10.111.0.1", 80)
        # The target Service last in KUBE-SERVICES, behind `big` others ("~" sorts after "b");
        # in nftables mode one element among `big` in the service-ips map.
        many = synthetic(big) | {"~target": target}
        asyncio.run(load(many))
        via_svc_big = measure("10.111.0.1", 80)
    finally:
        server.kill()
        server.wait(timeout=10)

    def med(xs: list[float]) -> float:
        return statistics.median(xs) * 1e6

    def p99(xs: list[float]) -> float:
        return sorted(xs)[int(len(xs) * 0.99) - 1] * 1e6

    return {"requests": requests, "direct_median_us": med(direct), "direct_p99_us": p99(direct),
            "clusterip_median_us": med(via_svc), "clusterip_p99_us": p99(via_svc),
            "ratio_median": med(via_svc) / med(direct),
            f"clusterip_{big}_services_median_us": med(via_svc_big),
            f"clusterip_{big}_services_p99_us": p99(via_svc_big),
            f"ratio_{big}_services_median": med(via_svc_big) / med(direct)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--modes", default="iptables,nftables", help="sync figures of these proxy modes")
    ap.add_argument("--no-latency", action="store_true", help="sync figures only")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    if set(modes) - {"iptables", "nftables"}:
        ap.error(f"--modes: iptables and/or nftables, not {args.modes!r}")
    prefix = f"kpbench-{secrets.token_hex(3)}"
    made: list[str] = []
    try:
        print("sync (ms)        mode      services   rules  full_sync  raw_restore  1-svc_sync  raw_restore  "
              "render_full  render_1svc")
        figures: dict[tuple[str, int], dict[str, float]] = {}
        for n in sizes:
            for mode in modes:
                ns = f"{prefix}-{mode[:3]}{n}"
                sh("ip", "netns", "add", ns)
                made.append(ns)
                r = asyncio.run(bench_sync(ns, n) if mode == "iptables" else bench_nft_sync(ns, n))
                figures[(mode, n)] = r
                print(f"{'':17}{mode:9}{n:8d} {r['rules']:7d} {r['full_sync_ms']:10.1f} "
                      f"{r['full_raw_restore_ms']:12.1f} {r['partial_sync_ms']:11.1f} "
                      f"{r['partial_raw_restore_ms']:12.1f} {r['first_render_ms']:12.1f} {r['partial_render_ms']:12.1f}")
                print("  " + json.dumps({k: round(v, 1) for k, v in r.items()}))
                sh("ip", "netns", "del", ns)
                made.remove(ns)
            if {"iptables", "nftables"} <= set(modes):
                ipt, nft = figures[("iptables", n)], figures[("nftables", n)]
                print(f"  {n} services: nftables full sync {nft['full_sync_ms']:.0f} ms vs iptables "
                      f"{ipt['full_sync_ms']:.0f} ms ({ipt['full_sync_ms'] / nft['full_sync_ms']:.1f}x faster); "
                      f"one-Service change {nft['partial_sync_ms']:.1f} ms vs {ipt['partial_sync_ms']:.1f} ms")
        if args.no_latency:
            return
        for mode in modes:
            lprefix = f"{prefix}-{mode[:3]}"
            made.extend(f"{lprefix}-{s}" for s in ("node", "a", "c"))
            with tempfile.TemporaryDirectory() as tmp:
                lat = latency(lprefix, Path(tmp), args.requests, max(sizes), mode)
            print(f"latency, {mode} mode (fresh TCP connection + 4-byte answer, µs)")
            print("  " + json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in lat.items()}))
            for s in ("node", "a", "c"):
                sh("ip", "netns", "del", f"{lprefix}-{s}", check=False)
                made.remove(f"{lprefix}-{s}")
    finally:
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)


if __name__ == "__main__":
    main()
