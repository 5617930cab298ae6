#!/usr/bin/env python3
"""NetworkPolicy benchmark: programming time for N policies over 300 hollow pods. Prints figures, asserts nothing.

300 pods (hollow: API objects only, no containers) in 30 namespaces on 3 nodes;
N policies (default 100 and 1,000), each selecting one app of one namespace,
with a mix of ingress rules (namespace + pod selectors, an ipBlock with an
except, numbered, ranged and named ports) and egress rules (a namespace, DNS).
For node 1 of the 3, in a throwaway netns ``kpbench-<rand>-netpol<N>``:

- compile: ``node_state`` + ``compile_node`` (the agent's pure part);
- first apply: iptables-restore of the whole payload into an empty netns;
- full sync: what the agent does every sync_period: iptables-save, compile, restore;
- one change: one policy edited (the agent recompiles the node and restores it whole);
- raw restore: the same payload through iptables-restore alone (the kernel's share).

Every netns is deleted at the end, even on error.

    .venv/bin/python bench/netpol.py [--sizes 100,1000] [--pods 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubepy.netpol.agent import RealIPTables
from kubepy.netpol.rules import compile_node, node_state, parse_kernel

NODES = 3
NAMESPACES = 30
APPS = 10


def sh(*argv: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, check=check, capture_output=True, text=True, timeout=600)


def hollow_pods(n: int) -> list[dict]:
    pods = []
    for i in range(n):
        node = i % NODES
        pods.append({"metadata": {"namespace": f"ns-{i % NAMESPACES}", "name": f"pod-{i}",
                                  "labels": {"app": f"app-{i // NAMESPACES % APPS}", "tier": ("web", "db")[i % 2]}},
                     "spec": {"nodeName": f"node-{node}", "containers": [{"name": "c", "ports": [
                         {"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
                     "status": {"podIP": f"10.244.{node}.{i // NODES + 2}", "phase": "Running"}})
    return pods


def namespaces() -> list[dict]:
    return [{"metadata": {"name": f"ns-{i}", "labels": {"team": f"team-{i % 5}"}}} for i in range(NAMESPACES)]


def policy(i: int) -> dict:
    ns = f"ns-{i % NAMESPACES}"
    return {"metadata": {"namespace": ns, "name": f"pol-{i}"}, "spec": {
        "podSelector": {"matchLabels": {"app": f"app-{i // NAMESPACES % APPS}"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"team": f"team-{i % 5}"}},
                       "podSelector": {"matchLabels": {"tier": "web"}}},
                      {"podSelector": {"matchLabels": {"app": f"app-{(i + 1) % APPS}"}}}],
             "ports": [{"port": 80, "protocol": "TCP"}, {"port": "http", "protocol": "TCP"}]},
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}}],
             "ports": [{"port": 30000, "endPort": 30100, "protocol": "TCP"}]},
        ],
        "egress": [
            {"to": [{"namespaceSelector": {"matchLabels": {"team": f"team-{(i + 2) % 5}"}}}]},
            {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
        ]}}


def raw_restore(netns: str, payload: str) -> float:
    t0 = time.perf_counter()
    sh("ip", "netns", "exec", netns, "iptables-restore", "--noflush", "-w", stdin=payload)
    return time.perf_counter() - t0


async def bench(netns: str, n: int, pods: list[dict]) -> dict[str, float]:
    ipt = RealIPTables(netns=netns)
    policies = [policy(i) for i in range(n)]
    nss = namespaces()
    t0 = time.perf_counter()
    state = node_state(policies, pods, nss)
    first = compile_node(state, node="node-0", pod_cidr="10.244.0.0/24", kernel=parse_kernel(await ipt.save()))
    t1 = time.perf_counter()
    await ipt.restore(first.text)
    t2 = time.perf_counter()
    # The periodic full sync over a populated kernel.
    kernel = parse_kernel(await ipt.save())
    full = compile_node(node_state(policies, pods, nss), node="node-0", pod_cidr="10.244.0.0/24", kernel=kernel,
                        previous=first.bodies)
    await ipt.restore(full.text)
    t3 = time.perf_counter()
    raw = raw_restore(netns, full.text)
    # One policy edited: a port added.
    edited = [dict(p) for p in policies]
    edited[0] = json.loads(json.dumps(policies[0]))
    edited[0]["spec"]["ingress"][0]["ports"].append({"port": 8443, "protocol": "TCP"})
    t4 = time.perf_counter()
    one = compile_node(node_state(edited, pods, nss), node="node-0", pod_cidr="10.244.0.0/24",
                       previous=full.bodies)
    t5 = time.perf_counter()
    await ipt.restore(one.text)
    t6 = time.perf_counter()
    return {"policies": n, "pods": len(pods), "local_policies": first.policies, "targets": first.targets,
            "rules": first.rules, "chains": len(first.chains), "payload_kb": len(first.text) / 1024,
            "compile_ms": (t1 - t0) * 1e3, "first_apply_ms": (t2 - t0) * 1e3, "full_sync_ms": (t3 - t2) * 1e3,
            "raw_restore_ms": raw * 1e3, "one_change_compile_ms": (t5 - t4) * 1e3,
            "one_change_ms": (t6 - t4) * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--pods", type=int, default=300)
    args = ap.parse_args()
    pods = hollow_pods(args.pods)
    prefix = f"kpbench-{secrets.token_hex(3)}"
    made: list[str] = []
    try:
        print("netpol (ms)   policies  pods  rules  compile  first_apply  full_sync  raw_restore  one_change")
        for n in (int(s) for s in args.sizes.split(",")):
            ns = f"{prefix}-netpol{n}"
            sh("ip", "netns", "add", ns)
            made.append(ns)
            r = asyncio.run(bench(ns, n, pods))
            print(f"{'':13}{n:9d} {r['pods']:5d} {r['rules']:6d} {r['compile_ms']:8.1f} {r['first_apply_ms']:12.1f} "
                  f"{r['full_sync_ms']:10.1f} {r['raw_restore_ms']:12.1f} {r['one_change_ms']:11.1f}")
            print("  " + json.dumps({k: round(v, 1) for k, v in r.items()}))
            sh("ip", "netns", "del", ns)
            made.remove(ns)
    finally:
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)


if __name__ == "__main__":
    main()
