"""Scheduling the way charts ask, on a 3-node lab started with ``--zones a,b``
(node1 and node3 in zone a, node2 in zone b), driven by the stock kubectl:
hard anti-affinity by hostname leaves the fourth replica Pending with
Kubernetes' message, required affinity follows the peer, maxSkew 1 by
hostname gives 2/2/2 and 2/2/2/2 once a fourth node joins and the
Deployment is scaled, and zone spreading balances the zones.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter

import pytest

from tests.e2e.test_lab import Lab

pytestmark = pytest.mark.slow

IMAGE = "busybox:1.36"
ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"
ANTI_MESSAGE = ("0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. "
                "preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.")


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        up = lab.kubepy("up", "--nodes", "3", "--zones", "a,b")
        assert "ready in" in up.stdout, up.stdout
        from kubepy.images import busybox_image

        archive = lab.root / "busybox.tar"
        busybox_image("docker.io/library/busybox:1.36", archive)
        lab.kubepy("image", "load", str(archive), "--name", lab.name, "--state-dir", str(lab.root))
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


def wait_for(cond, timeout: float = 60, what: str = ""):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: last={last!r}")


def deployment(name: str, replicas: int, **pod_spec) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"terminationGracePeriodSeconds": 0, **pod_spec,
                                           "containers": [{"name": "main", "image": IMAGE,
                                                           "command": ["sleep", "3600"]}]}}}}


def apply(lab: Lab, obj: dict) -> None:
    lab.kubectl("apply", "-f", "-", input=json.dumps(obj))


def pods(lab: Lab, app: str) -> list[dict]:
    return [p for p in lab.json("get", "pods", "-l", f"app={app}")["items"]
            if not p["metadata"].get("deletionTimestamp")]


def placed(lab: Lab, app: str, n: int) -> list[dict] | None:
    """The app's pods once n of them are bound."""
    got = pods(lab, app)
    return got if sum(1 for p in got if p["spec"].get("nodeName")) == n else None


def node_labels(lab: Lab) -> dict[str, dict[str, str]]:
    return {n["metadata"]["name"]: n["metadata"]["labels"] for n in lab.json("get", "nodes")["items"]}


def test_nodes_carry_hostname_and_zones(lab: Lab):
    labels = node_labels(lab)
    assert {name: (lab_[HOST], lab_.get(ZONE)) for name, lab_ in labels.items()} == {
        f"{lab.name}-node1": (f"{lab.name}-node1", "a"),
        f"{lab.name}-node2": (f"{lab.name}-node2", "b"),
        f"{lab.name}-node3": (f"{lab.name}-node3", "a"),
    }
    # No node is tainted against ordinary pods: every node counts below.
    assert all(not n["spec"].get("taints") for n in lab.json("get", "nodes")["items"])


def test_hard_anti_affinity_leaves_the_fourth_replica_pending(lab: Lab):
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "anti"}}, "topologyKey": HOST}]}}
    apply(lab, deployment("anti", 4, affinity=anti))
    try:
        def three_running_one_pending():
            got = pods(lab, "anti")
            running = [p for p in got if p["status"].get("phase") == "Running"]
            pending = [p for p in got if not p["spec"].get("nodeName")]
            cond = next((c for p in pending for c in p["status"].get("conditions", [])
                         if c["type"] == "PodScheduled"), None)
            if len(got) == 4 and len(running) == 3 and len(pending) == 1 and cond:
                return running, pending[0], cond
            return None

        running, pending, cond = wait_for(three_running_one_pending, 90, "3 running and 1 pending")
        assert len({p["spec"]["nodeName"] for p in running}) == 3
        assert (cond["status"], cond["reason"], cond["message"]) == ("False", "Unschedulable", ANTI_MESSAGE)
        name = pending["metadata"]["name"]
        events = wait_for(lambda: [e for e in lab.json("get", "events", "--field-selector",
                                                       f"involvedObject.name={name}")["items"]
                                   if e["reason"] == "FailedScheduling"], 20, "FailedScheduling event")
        assert events[0]["message"] == ANTI_MESSAGE and events[0]["type"] == "Warning"
        described = lab.kubectl("describe", "pod", name).stdout
        assert "didn't match pod anti-affinity rules" in described
    finally:
        lab.kubectl("delete", "deployment", "anti", "--wait=false")


def test_required_affinity_lands_with_its_peer(lab: Lab):
    peer = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cache", "labels": {"app": "cache"}},
            "spec": {"terminationGracePeriodSeconds": 0, "nodeName": f"{lab.name}-node2",
                     "containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "3600"]}]}}
    apply(lab, peer)
    follow = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": HOST}]}}
    apply(lab, deployment("follower", 2, affinity=follow))
    try:
        got = wait_for(lambda: placed(lab, "follower", 2), 60, "followers bound")
        assert {p["spec"]["nodeName"] for p in got} == {f"{lab.name}-node2"}
    finally:
        lab.kubectl("delete", "deployment", "follower", "--wait=false")
        lab.kubectl("delete", "pod", "cache", "--wait=false")


def test_max_skew_one_by_hostname_is_two_two_two(lab: Lab):
    spread = [{"maxSkew": 1, "topologyKey": HOST, "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app": "even"}}}]
    apply(lab, deployment("even", 6, topologySpreadConstraints=spread))
    try:
        got = wait_for(lambda: placed(lab, "even", 6), 60, "6 pods bound")
        assert sorted(Counter(p["spec"]["nodeName"] for p in got).values()) == [2, 2, 2]
        # A fourth node joins (zone b, round-robin); scaling up fills it first.
        up = lab.kubepy("up", "--nodes", "4")
        assert "ready in" in up.stdout, up.stdout
        assert node_labels(lab)[f"{lab.name}-node4"][ZONE] == "b"
        lab.kubectl("scale", "deployment", "even", "--replicas", "8")
        got = wait_for(lambda: placed(lab, "even", 8), 60, "8 pods bound")
        assert sorted(Counter(p["spec"]["nodeName"] for p in got).values()) == [2, 2, 2, 2]
    finally:
        lab.kubectl("delete", "deployment", "even", "--wait=false")


def test_zone_spreading_balances_zones(lab: Lab):
    # node1 and node3 in zone a, node2 and node4 (joined above) in zone b.
    spread = [{"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app": "zonal"}}}]
    apply(lab, deployment("zonal", 4, topologySpreadConstraints=spread))
    try:
        got = wait_for(lambda: placed(lab, "zonal", 4), 60, "4 pods bound")
        zones = node_labels(lab)
        assert Counter(zones[p["spec"]["nodeName"]][ZONE] for p in got) == {"a": 2, "b": 2}
    finally:
        lab.kubectl("delete", "deployment", "zonal", "--wait=false")
