#!/usr/bin/env python3
"""Control-plane failover benchmark (issue 21). Prints figures, asserts nothing.

On a lab cluster of three control-plane nodes (``kubepy up --control-planes 3
--nodes 0``: three etcd members with TLS, three API servers behind HAProxy,
scheduler and controller manager leader-elected):

1. **Write throughput**, 3-member etcd vs 1: W concurrent writers create
   ConfigMaps through the admin kubeconfig for T seconds; the same on a
   single control plane on one etcd member (``kubepy up --store etcd
   --nodes 0``), measured in the same run; printed as writes/s and a ratio.
2. **Leaders' node cut off** (its link down): under one steady writer, the
   longest gap between two acknowledged writes (how long the API was
   unavailable through the stable address), and when the scheduler's and
   controller manager's Leases were held by another node (leader handover).
3. **etcd leader killed** (SIGKILL of that member alone): the longest write gap.

Each fault is repeated ``--rounds`` times (the node comes back, or the member
is restarted by the lab's supervisor, before the next round); every
acknowledged write is checked to be present at the end (a lost one is
printed, not hidden). Every cluster is taken down at the end, even on error.

    .venv/bin/python bench/ha.py [--seconds 15] [--writers 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.writer import Writer  # noqa: E402

KP = [sys.executable, "-m", "kubepy"]
KUBECTL = shutil.which("kubectl") or str(REPO / ".venv" / "bin" / "kubectl")


class Lab:
    def __init__(self, *up_args: str) -> None:
        self.name = f"kpbench-{secrets.token_hex(3)}"
        self.root = Path(tempfile.mkdtemp(prefix="kpbench-ha-"))
        self.up_args = up_args

    def kubepy(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        cp = subprocess.run([*KP, *args, "--name", self.name, "--state-dir", str(self.root)], capture_output=True,
                            text=True, timeout=timeout)
        if check and cp.returncode:
            raise RuntimeError(f"kubepy {' '.join(args)} exited {cp.returncode}:\n{cp.stdout}\n{cp.stderr}")
        return cp

    def __enter__(self) -> "Lab":
        start = time.monotonic()
        self.kubepy("up", *self.up_args)
        self.up_seconds = time.monotonic() - start
        return self

    def __exit__(self, *exc: object) -> None:
        self.kubepy("down", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def kubeconfig(self) -> Path:
        ha = self.root / self.name / "admin.kubeconfig"
        return ha if ha.exists() else self.root / self.name / "controlplane" / "admin.kubeconfig"

    def kubectl_json(self, *args: str) -> dict | None:
        cp = subprocess.run([KUBECTL, "--kubeconfig", str(self.kubeconfig), "--request-timeout=5s", *args,
                             "-o", "json"], capture_output=True, text=True, timeout=30)
        return json.loads(cp.stdout) if cp.returncode == 0 else None

    def holder(self, lease: str) -> str:
        got = self.kubectl_json("get", "lease", "-n", "kube-system", lease)
        return ((got or {}).get("spec") or {}).get("holderIdentity", "") if got else ""

    def names(self) -> set[str]:
        got = self.kubectl_json("get", "configmaps", "-n", "default")
        return {c["metadata"]["name"] for c in (got or {}).get("items", [])}


def throughput(lab: Lab, writers: int, seconds: float) -> tuple[float, int]:
    ws = [Writer(lab.kubeconfig, f"tp{k}-{secrets.token_hex(2)}", pause=0) for k in range(writers)]
    for w in ws:
        w.start()
    time.sleep(2)   # connections made, caches warm
    start = time.monotonic()
    before = sum(len(w.acked) for w in ws)
    time.sleep(seconds)
    done = sum(len(w.acked) for w in ws) - before
    for w in ws:
        w.stop.set()
    for w in ws:
        w.join(15)
    return done / (time.monotonic() - start), sum(w.errors for w in ws)


def wait(cond, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(interval)
    return None


def cp_link(lab: Lab, j: int, state: str) -> None:
    subprocess.run(["ip", "-n", f"{lab.name}-cp{j}", "link", "set", "eth0", state], check=True)


def etcd_members(lab: Lab) -> dict[int, psutil.Process]:
    out = {}
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd and os.path.basename(cmd[0]) == "etcd":
            for arg in cmd:
                if arg.startswith(f"--name={lab.name}-cp"):
                    out[int(arg.rsplit("cp", 1)[1])] = p
    return out


def etcd_leader(lab: Lab) -> int | None:
    """The member whose /metrics says etcd_server_is_leader 1 (with the API server's client certificate)."""
    pki = lab.root / lab.name / "etcd" / "cp1" / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "apiserver-etcd-client.crt"), str(pki / "apiserver-etcd-client.key"))
    for j, proc in etcd_members(lab).items():
        url = next((a.split("=", 1)[1].split(",")[0] for a in proc.cmdline() if a.startswith("--advertise-client-urls=")),
                   None)
        if not url:
            continue
        try:
            with urllib.request.urlopen(f"{url}/metrics", context=ctx, timeout=2) as r:
                if "\netcd_server_is_leader 1" in "\n" + r.read().decode():
                    return j
        except OSError:
            continue
    return None


def cut_leaders_node(lab: Lab) -> dict[str, float] | None:
    leader = lab.holder("kube-controller-manager").split("_")[0]
    if "-cp" not in leader:
        return None
    j = int(leader.rsplit("cp", 1)[1])
    w = Writer(lab.kubeconfig, f"cut-{secrets.token_hex(2)}", pause=0.02)
    w.start()
    wait(lambda: len(w.acked) >= 10, 30)
    cut = time.monotonic()
    cp_link(lab, j, "down")
    try:
        moved = {}
        for lease in ("kube-controller-manager", "kube-scheduler"):
            if wait(lambda: (lambda h: h and not h.startswith(leader + "_"))(lab.holder(lease)), 60):
                moved[lease] = time.monotonic() - cut
        wait(lambda: len(w.acked) and w.times[-1] > cut + 3, 60)
        end = time.monotonic()
    finally:
        cp_link(lab, j, "up")
    w.stop.set()
    w.join(15)
    wait(lambda: lab.holder("kube-controller-manager"), 30)
    out = {"api unavailable (s)": w.longest_gap(cut, end), **{f"{k} lease moved (s)": v for k, v in moved.items()}}
    present = lab.names()
    out["lost"] = len([n for n in w.acked if n not in present])
    return out


def kill_etcd_leader(lab: Lab) -> dict[str, float] | None:
    j = wait(lambda: etcd_leader(lab), 30)
    if j is None:
        return None
    w = Writer(lab.kubeconfig, f"etcd-{secrets.token_hex(2)}", pause=0.02)
    w.start()
    wait(lambda: len(w.acked) >= 10, 30)
    killed = time.monotonic()
    victim = etcd_members(lab)[j]
    victim.send_signal(signal.SIGKILL)

    def new_leader() -> int | None:
        # Another member, or the killed one restarted by the lab's supervisor and elected again.
        k = etcd_leader(lab)
        members = etcd_members(lab)
        return k if k is not None and k in members and members[k].pid != victim.pid else None
    new = wait(new_leader, 60)
    elected = time.monotonic() - killed
    wait(lambda: len(w.acked) and w.times[-1] > killed + 3, 60)
    end = time.monotonic()
    w.stop.set()
    w.join(15)
    # The lab's supervisor restarts the member; wait for it before the next round.
    wait(lambda: j in etcd_members(lab), 60)
    present = lab.names()
    return {"api unavailable (s)": w.longest_gap(killed, end),
            "new etcd leader (s)": elected if new else float("nan"),
            "lost": len([n for n in w.acked if n not in present])}


def summary(rounds: list[dict[str, float]]) -> str:
    keys = list(dict.fromkeys(k for r in rounds for k in r))
    parts = []
    for k in keys:
        vals = [r[k] for r in rounds if k in r and r[k] == r[k]]   # NaN: not seen within the wait
        if not vals:
            parts.append(f"{k}: not seen")
            continue
        if k == "lost":
            parts.append(f"acknowledged writes lost: {sum(vals):.0f}")
        else:
            parts.append(f"{k}: median {statistics.median(vals):.1f} (max {max(vals):.1f})")
    return "; ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="each throughput measurement")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="each fault, this many times")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/ha.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    figures: dict[str, str] = {}
    with Lab("--store", "etcd", "--nodes", "0") as one:
        figures["1 control plane, 1 etcd member: up (s)"] = f"{one.up_seconds:.1f}"
        single, single_errors = throughput(one, args.writers, args.seconds)
    with Lab("--control-planes", "3", "--nodes", "0") as three:
        figures["3 control planes, 3 etcd members: up (s)"] = f"{three.up_seconds:.1f}"
        triple, triple_errors = throughput(three, args.writers, args.seconds)
        figures["writes/s, 1 member"] = f"{single:.0f} ({single_errors} errors)"
        figures["writes/s, 3 members (through HAProxy)"] = f"{triple:.0f} ({triple_errors} errors)"
        figures["3 members vs 1 (ratio)"] = f"{triple / single:.2f}" if single else "n/a"
        cuts = [r for r in (cut_leaders_node(three) for _ in range(args.rounds)) if r]
        figures["leaders' node cut off"] = summary(cuts) if cuts else "no leader found"
        kills = [r for r in (kill_etcd_leader(three) for _ in range(args.rounds)) if r]
        figures["etcd leader killed"] = summary(kills) if kills else "no etcd leader found"
    print(f"\ncontrol-plane failover ({args.writers} writers x {args.seconds:.0f}s for throughput, "
          f"{args.rounds} rounds per fault, {os.cpu_count()} CPUs):")
    for k, v in figures.items():
        print(f"  {k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
