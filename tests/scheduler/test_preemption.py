"""Preemption (kubepy.scheduler.preemption) and the priority-ordered scheduling queue, in tables.

Cases follow kube-scheduler's DefaultPreemption documentation and tests:
only lower-priority pods are victims, the fewest are chosen (most important
reprieved first), PodDisruptionBudgets are honoured when another victim
exists, nodes no eviction can fix are "not helpful", preemptionPolicy Never
and a nomination still waiting for its victims make a pod ineligible.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kubepy.scheduler import preemption
from kubepy.scheduler.framework import NodeInfo, PodInfo, default_filters, default_scorers, schedule_one
from kubepy.scheduler.scheduler import PriorityQueue
from tests.scheduler.test_plugins import make_node, make_pod


def pod(name: str, cpu: str, priority: int = 0, *, labels: dict[str, str] | None = None, start: str = "",
        **spec: Any) -> dict[str, Any]:
    p = make_pod(name, cpu=cpu, priority=priority, **spec)
    if labels:
        p["metadata"]["labels"] = labels
    if start:
        p["status"] = {"startTime": start}
    return p


def cluster(*nodes: tuple[str, list[dict[str, Any]]], cpu: str = "4") -> list[NodeInfo]:
    return [NodeInfo.from_node(make_node(name, cpu=cpu), pods) for name, pods in nodes]


def preempt(preemptor: dict[str, Any], infos: list[NodeInfo], pdbs: list[dict[str, Any]] = ()):  # type: ignore[assignment]
    info = PodInfo(preemptor)
    result = schedule_one(info, infos, filters=default_filters(), scorers=default_scorers())
    assert result.node is None, "the preemptor must not fit as things are"
    return preemption.find_candidate(info, infos, result.statuses, default_filters(), pdbs)


def names(cand: preemption.Candidate | None) -> tuple[str, list[str]] | None:
    return None if cand is None else (cand.node, sorted(v.metadata["name"] for v in cand.victims))


def test_the_fewest_lowest_priority_victims_on_the_best_node():
    infos = cluster(("a", [pod("a-low", "2", 1), pod("a-mid", "2", 5)]),
                    ("b", [pod("b-low1", "1", 1), pod("b-low2", "1", 1), pod("b-mid", "2", 5)]))
    cand, _ = preempt(pod("hi", "2", 10), infos)
    # On "a" one victim of priority 1 is enough; on "b" two are needed: "a" wins on the victims' sum.
    assert names(cand) == ("a", ["a-low"])


def test_higher_or_equal_priority_pods_are_never_victims():
    infos = cluster(("a", [pod("same", "4", 10)]), ("b", [pod("higher", "4", 20)]))
    cand, verdicts = preempt(pod("hi", "2", 10), infos)
    assert cand is None
    assert verdicts == {"a": preemption.NO_VICTIMS, "b": preemption.NO_VICTIMS}


def test_victims_are_reprieved_most_important_first():
    infos = cluster(("a", [pod("p1", "1", 1, start="2026-01-01T00:00:00Z"), pod("p3", "1", 3),
                           pod("p2", "2", 2)]))
    cand, _ = preempt(pod("hi", "2", 10), infos)
    # All three gone frees 4 cpu. p3 (priority 3) comes back first and the pod still fits; p2 back
    # would leave 1 cpu, so p2 goes; p1 back leaves 2: it stays.
    assert names(cand) == ("a", ["p2"])


def test_a_pod_protected_by_a_budget_is_spared_when_another_victim_exists():
    infos = cluster(("a", [pod("guarded", "3", 1, labels={"app": "db"})]),
                    ("b", [pod("plain", "3", 1, labels={"app": "web"})]))
    pdb = {"metadata": {"name": "db", "namespace": "default"},
           "spec": {"selector": {"matchLabels": {"app": "db"}}}, "status": {"disruptionsAllowed": 0}}
    cand, _ = preempt(pod("hi", "3", 10), infos, [pdb])
    assert names(cand) == ("b", ["plain"]) and cand.pdb_violations == 0
    # With no other choice the budget is broken, and the candidate says so.
    only = cluster(("a", [pod("guarded", "3", 1, labels={"app": "db"})]))
    cand, _ = preempt(pod("hi", "3", 10), only, [pdb])
    assert names(cand) == ("a", ["guarded"]) and cand.pdb_violations == 1


def test_nodes_no_eviction_can_fix_are_not_helpful():
    tainted = make_node("t", cpu="4")
    tainted["spec"]["taints"] = [{"key": "k", "value": "v", "effect": "NoSchedule"}]
    infos = [NodeInfo.from_node(tainted, [pod("x", "4", 1)]),
             NodeInfo.from_node(make_node("small", cpu="1"), [pod("y", "1", 1)])]
    cand, verdicts = preempt(pod("hi", "2", 10), infos)
    # Evicting y from "small" still leaves too little cpu: no victims there.
    assert cand is None
    assert verdicts == {"t": preemption.NOT_HELPFUL, "small": preemption.NO_VICTIMS}


def test_eligibility():
    assert preemption.eligible(PodInfo(pod("n", "1", 10, preemptionPolicy="Never")), {}) == \
        "not eligible due to preemptionPolicy=Never."
    leaving = pod("victim", "4", 1)
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    infos = {"a": NodeInfo.from_node(make_node("a"), [leaving])}
    waiting = pod("hi", "4", 10)
    waiting["status"] = {"nominatedNodeName": "a"}
    assert preemption.eligible(PodInfo(waiting), infos) == \
        "not eligible due to a terminating pod on the nominated node."
    assert preemption.eligible(PodInfo(pod("hi", "4", 10)), infos) is None


async def test_the_queue_hands_out_higher_priority_first_then_in_order():
    prios = {"low1": 0, "high": 100, "low2": 0, "mid": 50}
    q = PriorityQueue(prios.__getitem__, name="test")
    for key in ("low1", "high", "low2", "mid"):
        q.add(key)
    got = []
    for _ in range(4):
        key = await asyncio.wait_for(q.get(), 1)
        got.append(key)
        q.done(key)
    assert got == ["high", "mid", "low1", "low2"]
    assert len(q) == 0
