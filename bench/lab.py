#!/usr/bin/env python3
"""Lab cluster benchmark: time to a ready 3-node cluster, and what its daemons weigh. Prints figures,
asserts nothing.

1. ``kubepy up --nodes 3`` (a throwaway cluster ``kpbench-<rand>`` under a
   temp state dir), timed until it returns (it returns when every node is
   Ready and kube-dns is published), then until cluster DNS answers:
   ``kubernetes.default.svc.cluster.local`` asked from inside node1's
   network namespace of 10.96.0.10 (kube-proxy DNATs it to a node's DNS
   server) with dnspython. Each run ends with ``kubepy down`` (timed too).
   Beside the published figures for kind (~33 s) and k3d (~20 s) to a
   ready cluster.
2. With the last run's cluster still up: the example images
   (``kubepy.images.build_examples``, built before any cluster starts) are
   loaded into every node, ``examples/redis.yaml`` and ``examples/web.yaml``
   applied, the deployments waited for until available, NodePort 30080 on
   node1's address fetched once from the host; then the RSS (and PSS, which
   splits shared pages fairly) of every process of the cluster, by role.

    /opt/kpvenv/bin/python bench/lab.py [--runs 2] [--no-example]

Every cluster is taken down at the end, even on error; every wait is bounded.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubepy.lab.cluster import ClusterState  # noqa: E402
from kubepy.lab.network import LabNetwork, default_subnet  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
KP = [sys.executable, "-m", "kubepy"]
DNS_IP = "10.96.0.10"
DNS_NAME = "kubernetes.default.svc.cluster.local."
CLONE_NEWNET = 0x40000000
MiB = 1024 * 1024


def sh(*argv: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and cp.returncode:
        raise RuntimeError(f"{' '.join(argv)} exited {cp.returncode}:\n{cp.stdout}\n{cp.stderr}")
    return cp


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def up_cluster(name: str, root: Path, nodes: int) -> tuple[float, str]:
    """``kubepy up --nodes N`` timed until it returns; (seconds, its stdout)."""
    t0 = time.monotonic()
    proc = subprocess.run([*KP, "up", "--nodes", str(nodes), "--name", name, "--state-dir", str(root)],
                          capture_output=True, text=True, timeout=300)
    dt = time.monotonic() - t0
    if proc.returncode:
        raise RuntimeError(f"kubepy up exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return dt, proc.stdout


class Lab:
    def __init__(self) -> None:
        self.name = f"kpbench-{secrets.token_hex(3)}"
        self.root = Path(tempfile.mkdtemp(prefix="kpbench-", dir="/tmp"))
        self.where = ["--name", self.name, "--state-dir", str(self.root)]
        self.net = LabNetwork(self.name, default_subnet(self.name))

    @property
    def kubeconfig(self) -> Path:
        return self.root / self.name / "controlplane" / "admin.kubeconfig"

    def up(self, nodes: int) -> tuple[float, str]:
        return up_cluster(self.name, self.root, nodes)

    def down(self) -> float:
        t0 = time.monotonic()
        cp = sh(*KP, "down", *self.where, check=False, timeout=300)
        if cp.returncode:
            print(f"kubepy down exited {cp.returncode}:\n{cp.stdout}\n{cp.stderr}")
        dt = time.monotonic() - t0
        shutil.rmtree(self.root, ignore_errors=True)
        return dt

    def kubectl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return sh(*KP, "kubectl", *self.where, *args, timeout=timeout)

    def leftovers(self) -> list[str]:
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.splitlines()
        out = [f"netns {n}" for n in netns if n.startswith(f"{self.name}-")]
        seen = set()
        for tool in (["pgrep", "-af", "kubepy"], ["pgrep", "-af", "containerd"]):
            for line in subprocess.run(tool, capture_output=True, text=True, check=False).stdout.splitlines():
                if (self.name in line or str(self.root) in line) and line not in seen:
                    seen.add(line)
                    out.append(f"process {line}")
        return out


def in_netns(netns: str, fn):
    """Run ``fn()`` on a thread that has joined ``netns`` (setns changes only the calling thread)."""
    result: dict = {}

    def worker() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            result["error"] = e

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def dns_probe(timeout: float = 60, samples: int = 20) -> tuple[float | None, str, list[float]]:
    """Seconds until 10.96.0.10 answers the A query, the answer, then ``samples`` round trips."""
    import dns.exception
    import dns.message
    import dns.query

    t0 = time.monotonic()
    first, answer = None, ""
    while time.monotonic() - t0 < timeout:
        try:
            r = dns.query.udp(dns.message.make_query(DNS_NAME, "A"), DNS_IP, timeout=0.5)
            if r.answer:
                first = time.monotonic() - t0
                answer = " ".join(rr.to_text() for rrset in r.answer for rr in rrset)
                break
        except (dns.exception.DNSException, OSError):
            pass
        time.sleep(0.05)
    rtts = []
    if first is not None:
        for _ in range(samples):
            t = time.perf_counter()
            dns.query.udp(dns.message.make_query(DNS_NAME, "A"), DNS_IP, timeout=1)
            rtts.append(time.perf_counter() - t)
    return first, answer, rtts


def steps(up_out: str, name: str) -> str:
    """``kubepy up``'s step lines, short: ``network 0.1s, control plane 1.8s, node1 1.4s, ...``."""
    out = []
    for line in up_out.splitlines():
        line = line.strip()
        if line.startswith("✓") and line.endswith("s)"):
            title, _, secs = line[2:].rpartition(" (")
            title = title.replace(f"node {name}-", "").split(":")[0].split(" (")[0].split(" on ")[0]
            out.append(f"{title.split(',')[0]} {secs[:-1]}")
    return ", ".join(out)


def other_clusters(mine: str = "") -> list[str]:
    """Lab clusters of others on this host (node netns ``<name>-nodeN``): their kubelets share our pod CIDRs."""
    names = set()
    for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.splitlines():
        n = line.split()[0]
        base, sep, idx = n.rpartition("-node")
        if sep and idx.isdigit() and base != mine:
            names.add(base)
    return sorted(names)


# -- 2. the example, and what the daemons weigh ------------------------------

def wait_available(lab: Lab, deployments: tuple[str, ...], timeout: float = 240) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        cp = lab.kubectl("get", "deployments", *deployments, "-o", "json")
        items = json.loads(cp.stdout)["items"]
        if len(items) == len(deployments) and all(
                (d.get("status") or {}).get("availableReplicas", 0) >= d["spec"].get("replicas", 1) for d in items):
            return time.monotonic() - t0
        time.sleep(0.5)
    print(lab.kubectl("get", "pods", "-o", "wide").stdout)
    raise RuntimeError(f"deployments {deployments} not available after {timeout:.0f}s")


def http_get(host: str, port: int, timeout: float = 30) -> tuple[float, str]:
    """One plain-socket GET / (retried for a bounded time); (seconds of the successful request, first body line)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        t = time.perf_counter()
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                s.sendall(f"GET / HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            dt = time.perf_counter() - t
            head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
            status = head.splitlines()[0] if head else "(no answer)"
            if " 200 " in status:
                return dt, f"{status} | {body.strip().splitlines()[0] if body.strip() else ''}"
            last = f"{status} | {body.strip()[:120]}"
        except OSError as e:
            last = str(e)
        time.sleep(0.5)
    return float("nan"), f"no 200 within {timeout:.0f}s (last: {last})"


def memory_by_role(lab: Lab) -> list[tuple[str, list[tuple[int, int, int]]]]:
    """(role, [(pid, rss, pss), ...]) for every process of the cluster, each counted once."""
    state = ClusterState.load(lab.root / lab.name / "cluster.json")
    assert state is not None
    roles: dict[str, list[int]] = {}
    claimed: set[int] = set()

    def claim(role: str, proc: psutil.Process) -> None:
        if proc.pid not in claimed:
            claimed.add(proc.pid)
            roles.setdefault(role, []).append(proc.pid)

    # Shims first (they are nobody's children): containerd-shim-runc-v2 of this cluster's
    # containerds; below them the log shims and the containers themselves.
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            if proc.info["name"].startswith("containerd-shim") and str(lab.root) in " ".join(cmd):
                claim("containerd-shim-runc-v2", proc)
                for child in proc.children(recursive=True):
                    is_log = any("kubepy.kubelet.logshim" in a or "kubepy-logshim" in a for a in child.cmdline())
                    claim("log shim" if is_log else "containers (workload)", child)
        except psutil.Error:
            continue
    cp = psutil.Process(state.pids["controlplane"])
    claim("controlplane supervisor", cp)
    for child in cp.children():
        cmd = child.cmdline()
        role = next((r for r in ("apiserver", "scheduler", "controller-manager") if r in cmd), "controlplane other")
        claim(role, child)
        for sub in child.children(recursive=True):
            claim(f"{role} children", sub)
    for daemon, pid in state.pids.items():
        if daemon == "controlplane":
            continue
        role = daemon.split("/", 1)[1]
        try:
            proc = psutil.Process(pid)
            claim(role, proc)
            for sub in proc.children(recursive=True):
                claim(f"{role} children ({sub.name()})", sub)
        except psutil.Error:
            continue
    out = []
    for role, pids in roles.items():
        rows = []
        for pid in pids:
            try:
                m = psutil.Process(pid).memory_full_info()
                rows.append((pid, m.rss, getattr(m, "pss", 0)))
            except psutil.Error:
                continue
        out.append((role, rows))
    return out


def print_memory(groups: list[tuple[str, list[tuple[int, int, int]]]]) -> None:
    order = ["controlplane supervisor", "apiserver", "scheduler", "controller-manager", "kubelet", "proxy", "dns",
             "containerd", "containerd-shim-runc-v2", "log shim"]
    rank = {r: i for i, r in enumerate(order)}
    groups = sorted(groups, key=lambda g: (g[0] == "containers (workload)", rank.get(g[0].split(" children")[0], 99),
                                           g[0]))
    print(f"{'role':<40}{'procs':>6}{'RSS MiB':>10}{'each (MiB)':>18}{'PSS MiB':>10}")
    tot_rss = tot_pss = n = 0
    for role, rows in groups:
        if not rows:
            continue
        rss, pss = sum(r[1] for r in rows), sum(r[2] for r in rows)
        each = sorted(r[1] / MiB for r in rows)
        each_s = f"{each[0]:.0f}" if len(each) == 1 else f"{each[0]:.0f}-{each[-1]:.0f}"
        if role == "containers (workload)":
            print(f"{'total (kubepy + containerd + shims)':<40}{n:>6}{tot_rss / MiB:>10.0f}{'':>18}{tot_pss / MiB:>10.0f}")
            print(f"{'(not counted) ' + role:<40}{len(rows):>6}{rss / MiB:>10.0f}{each_s:>18}{pss / MiB:>10.0f}")
            return
        print(f"{role:<40}{len(rows):>6}{rss / MiB:>10.0f}{each_s:>18}{pss / MiB:>10.0f}")
        tot_rss, tot_pss, n = tot_rss + rss, tot_pss + pss, n + len(rows)
    print(f"{'total (kubepy + containerd + shims)':<40}{n:>6}{tot_rss / MiB:>10.0f}{'':>18}{tot_pss / MiB:>10.0f}")


def example(lab: Lab, archives: list[Path]) -> None:
    t0 = time.monotonic()
    for a in archives:
        sh(*KP, "image", "load", str(a), *lab.where)
    print(f"\nexample: {len(archives)} images loaded into 3 nodes in {time.monotonic() - t0:.1f} s")
    t0 = time.monotonic()
    lab.kubectl("apply", "-f", str(REPO / "examples/redis.yaml"), "-f", str(REPO / "examples/web.yaml"))
    avail = wait_available(lab, ("web", "redis"))
    print(f"example: redis (1) + web (3) available {avail:.1f} s after kubectl apply "
          f"({time.monotonic() - t0:.1f} s including the apply)")
    node1 = lab.net.node_ip(1)
    dt, line = http_get(node1, 30080)
    print(f"example: GET http://{node1}:30080/ from the host: {dt * 1000:.0f} ms -> {line}")
    time.sleep(2)  # let the readiness probes' first rounds settle
    print("\nmemory of every process of the running 3-node cluster with the example (MiB):")
    print_memory(memory_by_role(lab))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2, help="up/down cycles to time (the last one also runs the example)")
    ap.add_argument("--no-example", action="store_true", help="skip part 2 (example images, RSS)")
    args = ap.parse_args()

    if others := other_clusters():
        print(f"note: other lab clusters are up on this host ({', '.join(others)}): they share the CPUs")
    tmp = Path(tempfile.mkdtemp(prefix="kpbench-images-", dir="/tmp"))
    labs: list[Lab] = []
    try:
        archives: list[Path] = []
        if not args.no_example:
            from kubepy.images import build_examples
            t0 = time.monotonic()
            archives = list(build_examples(tmp).values())
            print(f"example images built in {time.monotonic() - t0:.1f} s: {', '.join(a.name for a in archives)}")
        results = []
        for run in range(1, args.runs + 1):
            lab = Lab()
            labs.append(lab)
            up_s, out = lab.up(3)
            t_dns0 = time.monotonic()
            first, answer, rtts = in_netns(lab.net.node_netns(1), dns_probe)
            dns_s = time.monotonic() - t_dns0 if first is not None else float("nan")
            print(f"run {run}: up {up_s:.1f} s ({steps(out, lab.name)}); DNS answered {dns_s:.2f} s later: "
                  f"{answer or 'NO ANSWER'}" + (f"; DNS round trip p50 {pct(rtts, 50) * 1000:.1f} ms" if rtts else ""))
            if run == args.runs and not args.no_example:
                example(lab, archives)
            down_s = lab.down()
            labs.remove(lab)
            left = lab.leftovers()
            results.append((up_s, dns_s, down_s, left))

        print("\ntime to a ready 3-node cluster (s)")
        print(f"{'':<26}{'up returns':>11}{'+ DNS':>8}{'total':>8}{'down':>7}")
        for i, (up_s, dns_s, down_s, _) in enumerate(results, 1):
            print(f"{f'kubepy up --nodes 3, #{i}':<26}{up_s:>11.1f}{dns_s:>8.2f}{up_s + dns_s:>8.1f}{down_s:>7.1f}")
        print(f"{'kind (published)':<26}{'':>11}{'':>8}{'~33':>8}")
        print(f"{'k3d (published)':<26}{'':>11}{'':>8}{'~20':>8}")
        left = [x for r in results for x in r[3]]
        print("left behind (netns, kubepy/containerd processes of these clusters): "
              + ("none" if not left else "\n  " + "\n  ".join(left)))
    finally:
        for lab in labs:
            lab.down()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
