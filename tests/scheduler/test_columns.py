"""NodeColumns: schedule_one with columns decides exactly as without them.

Random clusters (cordoned, not-ready and tainted nodes, full nodes, nodes with
no allocatable, extended resources, node figures too large for int64 maths)
and random pods (tolerations, requests or none, extended resources, host
ports) are scheduled twice, once per path, from the same random state, after
random changes to the nodes (pods added and removed, nodes updated) so the
columns' journal-driven updates are exercised too.  Everything a caller sees
must be equal: the node, every rejected node's status, the scores and each
plugin's contribution, examined/feasible and where the next attempt starts.
"""

from __future__ import annotations

import logging
import platform
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kubepy.scheduler.columns import NodeColumns, balanced, least_requested
from kubepy.scheduler.framework import NodeInfo, PodInfo, default_filters, default_scorers, schedule_one
from kubepy.scheduler.plugins import _least_requested


def _node(rng: random.Random, i: int) -> dict:
    cpu = rng.choice(["0", "1", "2", "4", "32", "1500m"])
    mem = rng.choice(["0", "1Gi", "4Gi", "128Gi", "3Gi", "12345678", "9000Pi"])
    alloc = {"cpu": cpu, "memory": mem, "pods": str(rng.choice([1, 3, 110]))}
    if rng.random() < 0.1:
        alloc["example.com/gpu"] = str(rng.choice([0, 1, 2]))
    taints = []
    if rng.random() < 0.15:
        taints.append({"key": rng.choice(["dedicated", "node-role.kubernetes.io/control-plane"]),
                       "effect": rng.choice(["NoSchedule", "NoExecute", "PreferNoSchedule"])})
    ready = rng.choices(["True", "False", "Unknown"], [0.85, 0.1, 0.05])[0]
    return {"metadata": {"name": f"n{i:04d}", "labels": {"kubernetes.io/hostname": f"n{i:04d}"}},
            "spec": {"unschedulable": rng.random() < 0.05, "taints": taints},
            "status": {"allocatable": alloc, "conditions": [{"type": "Ready", "status": ready}]}}


def _pod(rng: random.Random, i: int) -> dict:
    requests = {}
    if rng.random() < 0.8:
        requests["cpu"] = rng.choice(["10m", "100m", "900m", "3"])
    if rng.random() < 0.8:
        requests["memory"] = rng.choice(["16Mi", "500Mi", "2Gi"])
    if rng.random() < 0.05:
        requests["example.com/gpu"] = "1"
    container: dict = {"name": "c", "image": "busybox", "resources": {"requests": requests}}
    if rng.random() < 0.05:
        container["ports"] = [{"containerPort": 80, "hostPort": 8080}]
    tolerations = []
    if rng.random() < 0.2:
        tolerations.append({"key": rng.choice(["dedicated", "node.kubernetes.io/not-ready"]),
                            "operator": "Exists"})
    if rng.random() < 0.05:
        tolerations.append({"operator": "Exists"})
    return {"metadata": {"name": f"p{i}", "namespace": "default", "uid": f"u{i}"},
            "spec": {"containers": [container], "tolerations": tolerations}}


class CountingColumns(NodeColumns):
    """Counts the attempts the columns decided, so the test knows it compared something."""

    def __init__(self) -> None:
        super().__init__()
        self.decided = 0

    def feasible(self, *args, **kw):
        found = super().feasible(*args, **kw)
        self.decided += found is not None
        return found


def _compare(pod: dict, nodes: list[NodeInfo], cols: NodeColumns, seed: int, **kw) -> None:
    filters, scorers = default_filters(), default_scorers()
    plain = schedule_one(PodInfo(pod), nodes, filters=filters, scorers=scorers, rng=random.Random(seed), **kw)
    fast = schedule_one(PodInfo(pod), nodes, filters=filters, scorers=scorers, rng=random.Random(seed),
                        columns=cols, **kw)
    assert (fast.node, fast.examined, fast.feasible, fast.next_start) == \
        (plain.node, plain.examined, plain.feasible, plain.next_start)
    assert fast.statuses == plain.statuses
    assert fast.scores == plain.scores
    # int64 arrays where the columns judged, lists where the per-node path did
    assert [(n, w, list(map(int, r))) for n, w, r in fast.contributions] == \
        [(n, w, list(r)) for n, w, r in plain.contributions]
    assert all(type(r) is list for _, _, r in plain.contributions)
    assert fast.why() == plain.why()
    assert fast.message() == plain.message()


@pytest.mark.parametrize("seed", range(12))
def test_columns_decide_exactly_as_the_per_node_loop(seed: int):
    rng = random.Random(seed)
    nodes = [NodeInfo.from_node(_node(rng, i)) for i in range(rng.choice([1, 2, 40, 300]))]
    cols = CountingColumns()
    placed: list[tuple[NodeInfo, dict]] = []
    for i in range(120):
        pod = _pod(rng, i)
        max_feasible = rng.choice([None, 1, 5, 100])
        start = rng.randrange(len(nodes) * 2)
        _compare(pod, nodes, cols, seed * 1000 + i, max_feasible=max_feasible, start=start)
        # Change the cluster as a scheduler's informers would: assume pods, lose pods, update nodes.
        roll = rng.random()
        if roll < 0.6:
            target = rng.choice(nodes)
            target.add_pod(pod | {"spec": pod["spec"] | {"nodeName": target.name}})
            placed.append((target, pod))
        elif roll < 0.8 and placed:
            target, gone = placed.pop(rng.randrange(len(placed)))
            target.remove_pod(gone)
        else:
            j = rng.randrange(len(nodes))
            nodes[j].set_node(_node(rng, j))
    assert cols.decided > 60, "most of these pods are for the columns (no hostPort, no extended resource)"


def test_a_new_node_list_rebuilds_the_columns():
    rng = random.Random(7)
    nodes = [NodeInfo.from_node(_node(rng, i)) for i in range(50)]
    cols = NodeColumns()
    _compare(_pod(rng, 0), nodes, cols, 1)
    fewer = nodes[:20]  # a node was deleted: the scheduler builds a new list
    _compare(_pod(rng, 1), fewer, cols, 2)
    assert cols.size == 20


def test_column_figures_match_the_per_node_functions():
    rng = random.Random(3)
    caps = [0, 1, 7, 100, 1000, 2**40, 3 * 2**50]
    req = np.array([rng.choice([0, 1, 5, 99, 100, 1001, 2**41, 2**52]) for _ in range(400)], dtype=np.int64)
    cap = np.array([rng.choice(caps) for _ in range(400)], dtype=np.int64)
    assert least_requested(req, cap).tolist() == [_least_requested(int(r), int(c)) for r, c in zip(req, cap)]
    cpu_used, mem_used = req, req[::-1].copy()
    cpu_cap, mem_cap = cap, cap[::-1].copy()
    want = []
    for cu, cc, mu, mc in zip(cpu_used.tolist(), cpu_cap.tolist(), mem_used.tolist(), mem_cap.tolist()):
        if not cc or not mc:
            want.append(100)
        else:
            a, b = min(1.0, cu / cc), min(1.0, mu / mc)
            want.append(int((1 - abs(a - b) / 2) * 100))
    assert balanced(cpu_used, cpu_cap, mem_used, mem_cap).tolist() == want
    # Beyond 2**53 a float64 conversion is not exact: the columns decline and the node is scored per node.
    assert balanced(np.array([2**53]), np.array([2**54]), np.array([1]), np.array([1])) is None


def test_a_list_grown_in_place_or_made_of_clones_is_not_judged_from_stale_columns():
    rng = random.Random(11)
    nodes = [NodeInfo.from_node(_node(rng, i)) for i in range(3)]
    cols = CountingColumns()
    _compare(_pod(rng, 0), nodes, cols, 1)
    nodes.append(NodeInfo.from_node(_node(rng, 3)))  # grown in place: the same list object
    _compare(_pod(rng, 1), nodes, cols, 2)
    assert cols.size == 4
    # Copies made to simulate on are not journaled: a pod added to one must still count.
    clones = [ni.clone() for ni in nodes]
    decided = cols.decided
    for i in range(5):
        pod = _pod(rng, 10 + i)
        _compare(pod, clones, cols, 3 + i)
        clones[0].add_pod(pod | {"spec": pod["spec"] | {"nodeName": clones[0].name}})
    assert cols.decided == decided, "the columns declined the clones"


def test_a_max_feasible_below_one_means_one():
    rng = random.Random(5)
    nodes = [NodeInfo.from_node(_node(rng, i)) for i in range(30)]
    for max_feasible in (0, -1):
        _compare(_pod(rng, max_feasible), nodes, NodeColumns(), 9, max_feasible=max_feasible)


def test_a_numpy_that_cannot_load_turns_the_columns_off_and_says_why(caplog):
    """numpy 2 on a CPU without x86-64-v2 (QEMU's qemu64) dies of SIGILL on import: the scheduler
    probes in a child, and runs without columns instead of dying."""
    from kubepy.scheduler.scheduler import node_columns, node_columns_available

    assert node_columns_available() == (True, "")
    assert node_columns() is not None
    sigill = ("sh", "-c", "kill -ILL $$")
    assert node_columns_available(sigill) == (False, "importing numpy was killed by signal 4")
    failing = (sys.executable, "-c", "raise ImportError('numpy: no such luck')")
    ok, why = node_columns_available(failing)
    assert not ok and why == "importing numpy failed: ImportError: numpy: no such luck"
    assert node_columns_available(("/nonexistent/python",))[0] is False
    with caplog.at_level(logging.WARNING, logger="kubepy.scheduler.scheduler"):
        assert node_columns(sigill) is None
    assert "node columns off reason='importing numpy was killed by signal 4'" in caplog.text


QEMU64_SCRIPT = """
import sys
from kubepy.scheduler import scheduler
from kubepy.scheduler.framework import NodeInfo, PodInfo, default_filters, default_scorers, schedule_one
cols = scheduler.node_columns(tuple(sys.argv[1:]))
nodes = [NodeInfo.from_node({"metadata": {"name": f"n{i}"}, "status": {
    "allocatable": {"cpu": str(4 + 4 * i), "memory": f"{8 + 8 * i}Gi", "pods": "110"},  # n2 has most room
    "conditions": [{"type": "Ready", "status": "True"}]}}) for i in range(3)]
pod = PodInfo({"metadata": {"name": "p", "namespace": "d"}, "spec": {"containers": [{"name": "c", "image": "x"}]}})
result = schedule_one(pod, nodes, filters=default_filters(), scorers=default_scorers(), columns=cols)
print(cols is None, result.node, "numpy" in sys.modules)
"""


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates an x86-64 CPU older than x86-64-v2")
def test_on_a_qemu64_cpu_the_scheduler_runs_without_columns():
    """The VM test's case for real: Python on QEMU's qemu64 CPU (qemu-user), where importing numpy 2 dies
    of SIGILL. The scheduler's modules load, the probe turns the columns off, a pod is placed, and
    numpy was never imported."""
    qemu = ["qemu-x86_64", "-cpu", "qemu64"]
    probe = [*qemu, sys.executable, "-c", "import numpy"]
    done = subprocess.run([*qemu, sys.executable, "-c", QEMU64_SCRIPT, *probe], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "n2", "False"], done.stdout
    assert "node columns off reason='importing numpy was killed by signal 4'" in done.stderr

