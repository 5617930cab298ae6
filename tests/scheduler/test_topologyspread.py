"""Tables for PodTopologySpread: the filter (skew, missing labels, minDomains,
inclusion policies, matchLabelKeys) and the score (upstream's formula and
the system default constraints), cases after upstream's
podtopologyspread/filtering_test.go and scoring_test.go (our own tables)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from kubepy.scheduler.framework import (
    OK,
    UNSCHEDULABLE,
    UNSCHEDULABLE_AND_UNRESOLVABLE,
    NodeInfo,
    PodInfo,
    SchedulingContext,
    default_filters,
    default_scorers,
    schedule_one,
)
from kubepy.scheduler.listers import Listers
from kubepy.scheduler.topologyspread import (
    REASON_CONSTRAINTS_NOT_MATCH,
    REASON_NODE_LABEL_NOT_MATCH,
    PodTopologySpread,
)

HOST = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"
SKEW, LABEL = (REASON_CONSTRAINTS_NOT_MATCH,), (REASON_NODE_LABEL_NOT_MATCH,)


def node(name: str, zone: str | None = None, taints: list | None = None, **labels: str) -> dict[str, Any]:
    lab = {HOST: name, **labels}
    if zone:
        lab[ZONE] = zone
    return {"metadata": {"name": name, "labels": lab}, "spec": {"taints": taints or []},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str = "p", labels: dict[str, str] | None = None, ns: str = "default", *,
        constraints: list[dict] | None = None, terminating: bool = False, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", "labels": labels or {}}
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    s: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}], **spec}
    if constraints:
        s["topologySpreadConstraints"] = constraints
    return {"metadata": meta, "spec": s}


def spread(key: str = ZONE, skew: int = 1, when: str = "DoNotSchedule", **extra: Any) -> dict:
    c = {"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": when,
         "labelSelector": {"matchExpressions": [{"key": "foo", "operator": "Exists"}]}}
    c.update(extra)
    return c


FOO = {"foo": ""}


def pods_on(*names: str, ns: str = "default", labels: dict | None = None, **kw: Any) -> list[dict]:
    return [pod(n, FOO if labels is None else labels, ns, **kw) for n in names]


def cluster(nodes: list[dict], placed: dict[str, list[dict]]) -> list[NodeInfo]:
    return [NodeInfo.from_node(n, placed.get(n["metadata"]["name"], [])) for n in nodes]


def run_filter(plugin: PodTopologySpread, p: dict, nis: list[NodeInfo]) -> dict[str, tuple[str, ...]]:
    info = PodInfo(p)
    if not plugin.pre_filter_nodes(info, nis):
        return {ni.name: () for ni in nis}
    return {ni.name: (() if (st := plugin.filter(info, ni)) is OK else st.reasons) for ni in nis}


# zone1: node-a, node-b; zone2: node-x, node-y
FOUR = [node("node-a", "zone1"), node("node-b", "zone1"), node("node-x", "zone2"), node("node-y", "zone2")]

FILTER_CASES = [
    ("no existing pods", pod(labels=FOO, constraints=[spread()]), {},
     {"node-a": (), "node-b": (), "node-x": (), "node-y": ()}),
    ("no existing pods, incoming pod doesn't match itself", pod(constraints=[spread()]), {},
     {"node-a": (), "node-b": (), "node-x": (), "node-y": ()}),
    ("existing pods in a different namespace do not count",
     pod(labels=FOO, constraints=[spread()]), {"node-a": pods_on("p-a1", ns="ns1"), "node-b": pods_on("p-b1", ns="ns1")},
     {"node-a": (), "node-b": (), "node-x": (), "node-y": ()}),
    ("pods spread across zones as 3/3: all fit",
     pod(labels=FOO, constraints=[spread()]),
     {"node-a": pods_on("a1", "a2"), "node-b": pods_on("b1"), "node-x": pods_on("x1"), "node-y": pods_on("y1", "y2")},
     {"node-a": (), "node-b": (), "node-x": (), "node-y": ()}),
    ("pods spread across zones as 3/1: only zone2 fits",
     pod(labels=FOO, constraints=[spread()]),
     {"node-a": pods_on("a1", "a2"), "node-b": pods_on("b1"), "node-x": pods_on("x1")},
     {"node-a": SKEW, "node-b": SKEW, "node-x": (), "node-y": ()}),
    ("a pod not matching itself may make the skew equal to maxSkew",
     pod(constraints=[spread()]),
     {"node-a": pods_on("a1"), "node-b": pods_on("b1")},
     {"node-a": SKEW, "node-b": SKEW, "node-x": (), "node-y": ()}),
    ("terminating pods do not count",
     pod(labels=FOO, constraints=[spread()]),
     {"node-a": pods_on("a1", "a2", terminating=True), "node-x": pods_on("x1")},
     {"node-a": (), "node-b": (), "node-x": SKEW, "node-y": SKEW}),
    ("by hostname, maxSkew 1",
     pod(labels=FOO, constraints=[spread(HOST)]),
     {"node-a": pods_on("a1"), "node-b": pods_on("b1"), "node-x": pods_on("x1")},
     {"node-a": SKEW, "node-b": SKEW, "node-x": SKEW, "node-y": ()}),
    ("two constraints, zone and hostname",
     pod(labels=FOO, constraints=[spread(), spread(HOST)]),
     {"node-a": pods_on("a1", "a2"), "node-b": pods_on("b1"), "node-x": pods_on("x1", "x2"), "node-y": pods_on("y1")},
     {"node-a": SKEW, "node-b": (), "node-x": SKEW, "node-y": ()}),
    ("ScheduleAnyway does not filter",
     pod(labels=FOO, constraints=[spread(when="ScheduleAnyway")]),
     {"node-a": pods_on("a1", "a2", "a3")},
     {"node-a": (), "node-b": (), "node-x": (), "node-y": ()}),
    ("matchLabelKeys: only pods of the same revision count",
     pod(labels={"foo": "", "rev": "2"}, constraints=[spread(matchLabelKeys=["rev"])]),
     {"node-a": pods_on("a1", "a2", labels={"foo": "", "rev": "1"}), "node-x": pods_on("x1", labels={"foo": "", "rev": "2"})},
     {"node-a": (), "node-b": (), "node-x": SKEW, "node-y": SKEW}),
    ("minDomains above the number of domains: the global minimum counts as 0",
     pod(labels=FOO, constraints=[spread(minDomains=3)]),
     {"node-a": pods_on("a1"), "node-x": pods_on("x1")},
     {"node-a": SKEW, "node-b": SKEW, "node-x": SKEW, "node-y": SKEW}),
    ("minDomains met: the real minimum",
     pod(labels=FOO, constraints=[spread(minDomains=2)]),
     {"node-a": pods_on("a1"), "node-x": pods_on("x1")},
     {"node-a": (), "node-b": (), "node-x": (), "node-y": ()}),
]


@pytest.mark.parametrize("name,the_pod,placed,want", FILTER_CASES, ids=[c[0] for c in FILTER_CASES])
def test_filter(name: str, the_pod: dict, placed: dict, want: dict) -> None:
    assert run_filter(PodTopologySpread(), the_pod, cluster(FOUR, placed)) == want


def test_nodes_without_the_topology_label() -> None:
    nodes = [*FOUR, node("node-nozone")]
    nis = cluster(nodes, {"node-a": pods_on("a1"), "node-nozone": pods_on("n1", "n2", "n3")})
    got = run_filter(PodTopologySpread(), pod(labels=FOO, constraints=[spread()]), nis)
    # Its pods do not count anywhere, and it may not take the pod.
    assert got == {"node-a": SKEW, "node-b": SKEW, "node-x": (), "node-y": (), "node-nozone": LABEL}
    assert PodTopologySpread._LABEL.code == UNSCHEDULABLE_AND_UNRESOLVABLE
    assert PodTopologySpread._SKEW.code == UNSCHEDULABLE


def test_node_affinity_policy() -> None:
    # zone3's empty node is outside the pod's nodeSelector: with Honor it does
    # not pull the minimum down to 0; with Ignore it does.
    nodes = [node("a", "z1", disk="ssd"), node("b", "z2", disk="ssd"), node("c", "z3")]
    placed = {"a": pods_on("a1"), "b": pods_on("b1", "b2")}
    nis = cluster(nodes, placed)
    honor = pod(labels=FOO, constraints=[spread()], nodeSelector={"disk": "ssd"})
    assert run_filter(PodTopologySpread(), honor, nis) == {"a": (), "b": SKEW, "c": ()}
    ignore = pod(labels=FOO, constraints=[spread(nodeAffinityPolicy="Ignore")], nodeSelector={"disk": "ssd"})
    assert run_filter(PodTopologySpread(), ignore, nis) == {"a": SKEW, "b": SKEW, "c": ()}


def test_node_taints_policy() -> None:
    nodes = [node("a", "z1"), node("b", "z2"), node("c", "z3", taints=[{"key": "k", "effect": "NoSchedule"}])]
    nis = cluster(nodes, {"a": pods_on("a1"), "b": pods_on("b1")})
    ignore = pod(labels=FOO, constraints=[spread()])
    assert run_filter(PodTopologySpread(), ignore, nis) == {"a": SKEW, "b": SKEW, "c": ()}
    honor = pod(labels=FOO, constraints=[spread(nodeTaintsPolicy="Honor")])
    assert run_filter(PodTopologySpread(), honor, nis) == {"a": (), "b": (), "c": ()}


# ---------------------------------------------------------------------------
# score
# ---------------------------------------------------------------------------


def scores(plugin: PodTopologySpread, p: dict, nis: list[NodeInfo], feasible: list[NodeInfo] | None = None):
    info = PodInfo(p)
    ctx = SchedulingContext(nis, feasible or nis)
    if not plugin.pre_score(info, ctx):
        return None
    raw = [plugin.score(info, ni, ctx) for ni in ctx.feasible]
    return dict(zip((ni.name for ni in ctx.feasible), plugin.normalize(raw)))


NODES4 = [node("node-a", "zone1"), node("node-b", "zone1"), node("node-c", "zone2"), node("node-d", "zone2")]


def test_score_one_constraint_on_hostname() -> None:
    # upstream: "one constraint on node, all 4 nodes are candidates"
    nis = cluster(NODES4, {"node-a": pods_on("a1", "a2"), "node-b": pods_on("b1"), "node-d": pods_on("d1", "d2", "d3")})
    p = pod(labels=FOO, constraints=[spread(HOST, when="ScheduleAnyway")])
    assert scores(PodTopologySpread(), p, nis) == {"node-a": 20, "node-b": 60, "node-c": 100, "node-d": 0}


def test_score_all_equal_is_100() -> None:
    nis = cluster(NODES4, {n["metadata"]["name"]: pods_on(n["metadata"]["name"] + "-1") for n in NODES4})
    p = pod(labels=FOO, constraints=[spread(HOST, when="ScheduleAnyway")])
    assert scores(PodTopologySpread(), p, nis) == {"node-a": 100, "node-b": 100, "node-c": 100, "node-d": 100}


def test_score_zone_counts_all_nodes_of_the_domain() -> None:
    # zone1 holds 3 matching pods, zone2 1: zone2's nodes score higher, even
    # when a zone1 node is not a candidate.
    nis = cluster(NODES4, {"node-a": pods_on("a1", "a2"), "node-b": pods_on("b1"), "node-c": pods_on("c1")})
    p = pod(labels=FOO, constraints=[spread(ZONE, when="ScheduleAnyway")])
    got = scores(PodTopologySpread(), p, nis, feasible=[nis[1], nis[2], nis[3]])
    # weight log(2 domains + 2); node-b: round(3 * 1.386) = 4, the others 1:
    # 100 * (4 + 1 - score) / 4.
    assert got == {"node-b": 25, "node-c": 100, "node-d": 100}


def test_score_ignores_nodes_missing_a_key_of_the_pods_own_constraints() -> None:
    nis = cluster([*NODES4[:2], node("bare")], {"node-a": pods_on("a1")})
    p = pod(labels=FOO, constraints=[spread(ZONE, when="ScheduleAnyway")])
    assert scores(PodTopologySpread(), p, nis)["bare"] == 0


def test_score_skips_pods_without_soft_constraints() -> None:
    nis = cluster(NODES4, {})
    assert scores(PodTopologySpread(), pod(labels=FOO, constraints=[spread()]), nis) is None
    assert scores(PodTopologySpread(), pod(labels=FOO), nis) is None  # no listers: no defaults


RS = {"metadata": {"name": "web-1", "namespace": "default"},
      "spec": {"selector": {"matchLabels": {"app": "web", "pod-template-hash": "1"}}}}


def web_pod(name: str, **kw: Any) -> dict:
    p = pod(name, {"app": "web", "pod-template-hash": "1"}, **kw)
    p["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                                         "uid": "rs", "controller": True}]
    return p


def test_default_selector_from_services_and_owner() -> None:
    svc = {"metadata": {"name": "web", "namespace": "default"}, "spec": {"selector": {"app": "web", "tier": "fe"}}}
    other = {"metadata": {"name": "db", "namespace": "default"}, "spec": {"selector": {"app": "db"}}}
    listers = Listers.of(services=[svc, other], replicasets=[RS])
    p = web_pod("w")
    assert str(listers.default_selector(p)) == "app=web,pod-template-hash=1"
    p["metadata"]["labels"]["tier"] = "fe"
    assert str(listers.default_selector(p)) == "app=web,pod-template-hash=1,tier=fe"
    assert listers.default_selector(pod("lonely", {"x": "y"})).empty()


def test_system_default_constraints_spread_by_hostname_and_zone() -> None:
    listers = Listers.of(replicasets=[RS])
    nis = cluster(NODES4, {"node-a": [web_pod("w1"), web_pod("w2")], "node-b": [web_pod("w3")]})
    got = scores(PodTopologySpread(listers), web_pod("new"), nis)
    assert got is not None and got["node-c"] == got["node-d"] == 100 and got["node-a"] < got["node-b"] < 100
    # A node without a zone label still gets hostname spreading (not ignored).
    nis = cluster([*NODES4, node("bare")], {"node-a": [web_pod("w1")]})
    got = scores(PodTopologySpread(listers), web_pod("new"), nis)
    assert got is not None and got["bare"] > 0


def test_failed_scheduling_message_for_spread() -> None:
    nodes = [node("a", "z1"), node("b", "z2"), node("c")]
    nis = cluster(nodes, {"a": pods_on("a1", "a2"), "b": pods_on("b1")})
    p = pod(labels=FOO, constraints=[spread(ZONE, minDomains=3)])
    result = schedule_one(p, nis, filters=default_filters(), scorers=default_scorers())
    assert result.message() == (
        "0/3 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label), "
        "2 node(s) didn't match pod topology spread constraints. preemption: 0/3 nodes are available: "
        "1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.")


@pytest.mark.parametrize("n_nodes,zones", [(300, 3), (500, 5)])
def test_max_skew_one_over_many_nodes(n_nodes: int, zones: int) -> None:
    nodes = [node(f"n{i:03}", f"z{i % zones}") for i in range(n_nodes)]
    nis = cluster(nodes, {})
    by_name = {ni.name: ni for ni in nis}
    filters, scorers = default_filters(), default_scorers()
    rng, start = random.Random(3), 0
    for i in range(2 * n_nodes):
        p = PodInfo(pod(f"w{i}", FOO, constraints=[spread(ZONE), spread(HOST)]))
        result = schedule_one(p, nis, filters=filters, scorers=scorers, rng=rng, max_feasible=100, start=start)
        start = result.next_start
        assert result.node is not None, result.message()
        by_name[result.node].add_pod(p)
        per_zone = Counter(ni.labels[ZONE] for ni in nis for _ in range(ni.pod_count))
        assert max(per_zone.values()) - min(per_zone.values(), default=0) <= 1 or len(per_zone) < zones
    assert all(ni.pod_count == 2 for ni in nis)


def test_cached_domain_counts_follow_changes() -> None:
    """One plugin across pods (as in the scheduler): counts kept between
    pods follow binds, removals, relabelled and re-created nodes."""
    plugin = PodTopologySpread()
    nis = cluster(FOUR, {"node-a": pods_on("a1")})
    p = pod(labels=FOO, constraints=[spread()])
    assert run_filter(plugin, p, nis) == {"node-a": SKEW, "node-b": SKEW, "node-x": (), "node-y": ()}
    nis[2].add_pod(pod("x1", FOO))
    assert run_filter(plugin, p, nis) == {"node-a": (), "node-b": (), "node-x": (), "node-y": ()}
    nis[0].remove_pod(pod("a1", FOO))
    assert run_filter(plugin, p, nis) == {"node-a": (), "node-b": (), "node-x": SKEW, "node-y": SKEW}
    # node-a moves to zone2: zone1 is node-b alone (0), zone2 holds x1.
    nis[0].set_node(node("node-a", "zone2"))
    assert run_filter(plugin, p, nis) == {"node-a": SKEW, "node-b": (), "node-x": SKEW, "node-y": SKEW}
    # The same names re-created with other pods are counted afresh.
    nis = cluster(FOUR, {"node-y": pods_on("y1", "y2")})
    assert run_filter(plugin, p, nis) == {"node-a": (), "node-b": (), "node-x": SKEW, "node-y": SKEW}
    # node-y replaced by node-z: its two pods no longer count in zone2.
    nis = [*nis[:3], NodeInfo.from_node(node("node-z", "zone3"))]
    assert run_filter(plugin, p, nis) == {"node-a": (), "node-b": (), "node-x": (), "node-z": ()}
