"""`kubectl drain` stops at a PodDisruptionBudget, and `kubectl scale rc` works, on a 2-node lab.

A Deployment of 2 with a budget of minAvailable 2: draining a node that runs
one of its pods cannot finish (every eviction is refused with 429, which
kubectl retries) and says why; scaled to 3, the budget allows one disruption
at a time and the drain completes. A ReplicationController scales with the
stock kubectl through its scale subresource. Everything with the stock kubectl.
"""

from __future__ import annotations

import shutil
import time

import pytest

from tests.e2e.test_lab import Lab, wait_for

pytestmark = pytest.mark.slow

VIOLATES = "Cannot evict pod as it would violate the pod's disruption budget."

WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: c
        image: busybox:1.36
        command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: web}}
"""

RC = """
apiVersion: v1
kind: ReplicationController
metadata: {name: legacy}
spec:
  replicas: 1
  template:
    metadata: {labels: {app: legacy}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:1.36
        command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
"""


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        up = lab.up_with_busybox(2)
        assert "ready in" in up.stdout, up.stdout
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


def ready_pods(lab: Lab, app: str) -> list[dict]:
    return [p for p in lab.json("get", "pods", "-l", f"app={app}")["items"]
            if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


def pdb_status(lab: Lab) -> dict:
    return lab.json("get", "pdb", "web").get("status") or {}


def test_drain_stops_at_the_budget_then_completes_when_it_allows(lab: Lab):
    lab.kubectl("apply", "-f", "-", input=WEB)
    pods = wait_for(lambda: (lambda ps: ps if len(ps) == 2 else None)(ready_pods(lab, "web")), 90, "2 ready pods")
    st = wait_for(lambda: (lambda s: s if s.get("currentHealthy") == 2 else None)(pdb_status(lab)), 30, "pdb status")
    assert (st["expectedPods"], st["desiredHealthy"], st["disruptionsAllowed"]) == (2, 2, 0)
    [cond] = st["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("DisruptionAllowed", "False", "InsufficientPods")
    line = lab.kubectl("get", "pdb", "web").stdout.splitlines()
    assert line[0].split() == ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE", "ALLOWED", "DISRUPTIONS", "AGE"]
    assert line[1].split()[:4] == ["web", "2", "N/A", "0"]

    node = pods[0]["spec"]["nodeName"]
    t0 = time.monotonic()
    blocked = lab.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=20s",
                          check=False, timeout=60)
    took = time.monotonic() - t0
    assert blocked.returncode != 0, blocked.stdout
    assert VIOLATES in blocked.stderr, blocked.stderr
    assert 18 < took < 45, took
    assert lab.json("get", "node", node)["spec"].get("unschedulable") is True  # drain cordons first
    assert {p["metadata"]["name"] for p in ready_pods(lab, "web")} == {p["metadata"]["name"] for p in pods}

    lab.kubectl("scale", "deployment", "web", "--replicas=3")
    wait_for(lambda: pdb_status(lab).get("disruptionsAllowed") == 1, 90, "one disruption allowed")
    drained = lab.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s",
                          timeout=150)
    assert f"node/{node} drained" in drained.stdout, drained.stdout
    left = [p for p in lab.json("get", "pods", "-l", "app=web")["items"] if p["spec"].get("nodeName") == node]
    assert not left, [p["metadata"]["name"] for p in left]
    wait_for(lambda: len(ready_pods(lab, "web")) == 3, 60, "3 ready pods on the other node")
    lab.kubectl("uncordon", node)
    assert not lab.json("get", "node", node)["spec"].get("unschedulable")


def test_scale_a_replication_controller(lab: Lab):
    lab.kubectl("apply", "-f", "-", input=RC)
    wait_for(lambda: len(ready_pods(lab, "legacy")) == 1, 60, "1 ready pod")
    lab.kubectl("scale", "rc", "legacy", "--replicas=3")
    pods = wait_for(lambda: (lambda ps: ps if len(ps) == 3 else None)(ready_pods(lab, "legacy")), 60, "3 ready")
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "ReplicationController" for p in pods)
    wait_for(lambda: lab.kubectl("get", "rc", "legacy").stdout.splitlines()[1].split()[:4]
             == ["legacy", "3", "3", "3"], 30, "kubectl get rc")
    wide = lab.kubectl("get", "rc", "legacy", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1].split()[5:] == ["c", "busybox:1.36", "app=legacy"]
    lab.kubectl("scale", "rc", "legacy", "--replicas=1")
    wait_for(lambda: len(lab.json("get", "pods", "-l", "app=legacy")["items"]) == 1, 60, "scaled down to 1")
    rc = lab.json("get", "rc", "legacy")
    assert (rc["status"]["replicas"], rc["status"]["readyReplicas"]) == (1, 1)
