#!/usr/bin/env python3
"""LoadBalancer failover benchmark: how long a load-balancer address is unanswered when the node
announcing it goes down. Prints figures, asserts nothing.

A throwaway 3-node lab cluster (``kpbench-<rand>`` under a temp state dir) runs a busybox httpd
DaemonSet behind a ``type: LoadBalancer`` Service with ``externalTrafficPolicy: Local``. Each round:
the node the host's requests reach (the one holding the address, ``ip -4 addr`` in the node
namespaces, unless the host's ARP cache is behind) gets its link set down, and
the host requests ``http://<address>/`` every 50 ms (200 ms timeout) until a pod on another node
answers; that time is the failover. The link comes back up and the address settles before the
next round. Beside it: MetalLB's layer-2 mode documents failover "within seconds" (memberlist
detection), kube-vip's ARP mode likewise.

    python bench/loadbalancer.py [--rounds 5]

The cluster is taken down at the end, even on error; every wait is bounded. Traffic stays on the
lab's bridge.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

KP = [sys.executable, "-m", "kubepy"]
APP = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: lb}
spec:
  selector: {matchLabels: {app: lb}}
  template:
    metadata: {labels: {app: lb}}
    spec:
      containers:
      - name: httpd
        image: busybox:1.36
        command: ["sh", "-c", "mkdir -p /w && hostname > /w/index.html && exec httpd -f -p 8080 -h /w"]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: lb}
  ports: [{port: 80, targetPort: 8080}]
"""


def sh(*argv: str, check: bool = True, input: str | None = None, timeout: float = 300) -> str:
    cp = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout, check=False)
    if check and cp.returncode:
        raise RuntimeError(f"{' '.join(argv)} exited {cp.returncode}:\n{cp.stdout}\n{cp.stderr}")
    return cp.stdout


def wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def get(ip: str, timeout: float) -> str | None:
    try:
        with urllib.request.urlopen(f"http://{ip}/", timeout=timeout) as r:
            return r.read().decode().strip()
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    name, root = f"kpbench-{secrets.token_hex(3)}", Path(tempfile.mkdtemp(prefix="kpbench-lb-"))
    lab = ["--name", name, "--state-dir", str(root)]
    kubeconfig = root / name / "controlplane" / "admin.kubeconfig"
    kubectl = [shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl"), "--kubeconfig", str(kubeconfig)]
    try:
        sh(*KP, "up", "--nodes", "3", *lab, timeout=600)
        from kubepy.images import busybox_image

        busybox_image("docker.io/library/busybox:1.36", root / "busybox.tar")
        sh(*KP, "image", "load", str(root / "busybox.tar"), *lab)
        sh(*kubectl, "apply", "-f", "-", input=APP)
        netns = [f"{name}-node{i}" for i in (1, 2, 3)]

        def pods() -> dict[str, str]:
            items = json.loads(sh(*kubectl, "get", "pods", "-l", "app=lb", "-o", "json"))["items"]
            return {p["metadata"]["name"]: p["spec"]["nodeName"] for p in items
                    if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))}

        wait(lambda: len(pods()) == 3, 120, "a ready pod per node")
        svc = lambda: json.loads(sh(*kubectl, "get", "svc", "lb", "-o", "json"))  # noqa: E731
        ip = wait(lambda: (svc()["status"].get("loadBalancer", {}).get("ingress") or [{}])[0].get("ip"), 60,
                  "an address")
        gateway = sh("ip", "-n", netns[0], "-4", "route", "show", "default").split()[2]

        def holders() -> list[str]:
            return [n for n in netns if f" {ip}/32 " in sh("ip", "-n", n, "-4", "-o", "addr")]

        times = []
        for _ in range(args.rounds):
            [holder] = wait(lambda: (lambda h: h if len(h) == 1 else None)(holders()), 60, "one holder")
            owner = pods()
            # The node the host's traffic reaches (its ARP cache decides) is the one taken down.
            dead = owner[wait(lambda: get(ip, 1.0), 30, "the address answering")]
            if dead != holder:
                print(f"  note: traffic reached {dead}, the address is held by {holder}", flush=True)
            sh("ip", "-n", dead, "link", "set", "eth0", "down")
            start = time.monotonic()
            try:
                wait(lambda: (lambda pod: pod and owner.get(pod) != dead)(get(ip, 0.2)), 60, "another node")
                times.append(time.monotonic() - start)
            finally:
                sh("ip", "-n", dead, "link", "set", "eth0", "up")
                sh("ip", "-n", dead, "route", "replace", "default", "via", gateway, check=False)
            print(f"  round {len(times)}: {times[-1]:.2f}s (node {dead} down)", flush=True)
            wait(lambda: len(holders()) == 1 and len(pods()) == 3, 120, "the cluster settling")
        print(f"load-balancer failover over {len(times)} rounds: min {min(times):.2f}s, "
              f"median {statistics.median(times):.2f}s, max {max(times):.2f}s")
    finally:
        subprocess.run([*KP, "down", *lab], capture_output=True, timeout=300)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
