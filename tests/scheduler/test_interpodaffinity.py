"""Tables for InterPodAffinity: the filter and the score, cases after
upstream's interpodaffinity/filtering_test.go and scoring_test.go (our own
tables), and schedule_one's FailedScheduling text with them."""

from __future__ import annotations

import random
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
from kubepy.scheduler.interpodaffinity import (
    REASON_AFFINITY_NOT_MATCH,
    REASON_ANTI_AFFINITY_NOT_MATCH,
    REASON_EXISTING_ANTI_AFFINITY_NOT_MATCH,
    InterPodAffinity,
)
from kubepy.scheduler.listers import Listers

HOST = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"


def node(name: str, zone: str | None = None, **labels: str) -> dict[str, Any]:
    lab = {HOST: name, **labels}
    if zone:
        lab[ZONE] = zone
    return {"metadata": {"name": name, "labels": lab},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str = "p", labels: dict[str, str] | None = None, ns: str = "default", affinity: dict | None = None,
        **meta: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
    if affinity:
        spec["affinity"] = affinity
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", "labels": labels or {}, **meta},
            "spec": spec}


def term(key: str = HOST, ns: list[str] | None = None, ns_selector: dict | None = None, **match: str) -> dict:
    t: dict[str, Any] = {"labelSelector": {"matchLabels": match}, "topologyKey": key}
    if ns is not None:
        t["namespaces"] = ns
    if ns_selector is not None:
        t["namespaceSelector"] = ns_selector
    return t


def expr_term(key: str, op: str, values: list[str], topology: str = HOST) -> dict:
    return {"labelSelector": {"matchExpressions": [{"key": key, "operator": op, "values": values}]},
            "topologyKey": topology}


def required(kind: str, *terms: dict) -> dict:
    return {kind: {"requiredDuringSchedulingIgnoredDuringExecution": list(terms)}}


def preferred(kind: str, *weighted: tuple[int, dict]) -> dict:
    return {kind: {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": w, "podAffinityTerm": t} for w, t in weighted]}}


def cluster(nodes: list[dict], placed: dict[str, list[dict]]) -> list[NodeInfo]:
    return [NodeInfo.from_node(n, placed.get(n["metadata"]["name"], [])) for n in nodes]


def run_filter(plugin: InterPodAffinity, p: dict, nis: list[NodeInfo]) -> dict[str, tuple[str, ...]]:
    """Reasons per node name ('' tuple when it fits)."""
    info = PodInfo(p)
    if not plugin.pre_filter_nodes(info, nis):
        return {ni.name: () for ni in nis}
    out = {}
    for ni in nis:
        st = plugin.filter(info, ni)
        out[ni.name] = () if st is OK else st.reasons
    return out


SEC = {"security": "S1"}
THREE = [node("n1", "z1"), node("n2", "z1"), node("n3", "z2")]

AFF, ANTI, EXIST = (REASON_AFFINITY_NOT_MATCH,), (REASON_ANTI_AFFINITY_NOT_MATCH,), (REASON_EXISTING_ANTI_AFFINITY_NOT_MATCH,)

FILTER_CASES = [
    ("a pod without affinity fits everywhere", pod(), {"n1": [pod("x", SEC)]}, {"n1": (), "n2": (), "n3": ()}),
    ("required affinity by hostname: only the peer's node",
     pod(affinity=required("podAffinity", term(security="S1"))), {"n1": [pod("x", SEC)]},
     {"n1": (), "n2": AFF, "n3": AFF}),
    ("required affinity by zone: every node of the peer's zone",
     pod(affinity=required("podAffinity", expr_term("security", "In", ["S1", "S2"], ZONE))), {"n1": [pod("x", SEC)]},
     {"n1": (), "n2": (), "n3": AFF}),
    ("required affinity with NotIn matches the other pods",
     pod(affinity=required("podAffinity", expr_term("security", "NotIn", ["S1"]))),
     {"n1": [pod("x", SEC)], "n3": [pod("y", {"security": "S2"})]},
     {"n1": AFF, "n2": AFF, "n3": ()}),
    ("required affinity nobody matches, pod does not match itself",
     pod(affinity=required("podAffinity", term(security="S2"))), {"n1": [pod("x", SEC)]},
     {"n1": AFF, "n2": AFF, "n3": AFF}),
    ("the first pod of a group matching its own terms goes anywhere",
     pod(labels={"security": "S2"}, affinity=required("podAffinity", term(security="S2"))), {"n1": [pod("x", SEC)]},
     {"n1": (), "n2": (), "n3": ()}),
    ("... but not where the topology label is missing",
     pod(labels={"security": "S2"}, affinity=required("podAffinity", term("rack", security="S2"))), {},
     {"n1": AFF, "n2": AFF, "n3": AFF}),
    ("... and not once a matching pod exists elsewhere",
     pod(labels={"security": "S1"}, affinity=required("podAffinity", term(security="S1"))), {"n3": [pod("x", SEC)]},
     {"n1": AFF, "n2": AFF, "n3": ()}),
    ("a pod must match every affinity term to count",
     pod(affinity=required("podAffinity", term(security="S1"), term(ZONE, app="web"))),
     {"n1": [pod("x", SEC)], "n3": [pod("y", {"security": "S1", "app": "web"})]},
     {"n1": AFF, "n2": AFF, "n3": ()}),
    ("affinity terms look in the pod's own namespace by default",
     pod(affinity=required("podAffinity", term(security="S1"))), {"n1": [pod("x", SEC, ns="other")]},
     {"n1": AFF, "n2": AFF, "n3": AFF}),
    ("namespaces names the peers' namespace",
     pod(affinity=required("podAffinity", term(ns=["other"], security="S1"))), {"n1": [pod("x", SEC, ns="other")]},
     {"n1": (), "n2": AFF, "n3": AFF}),
    ("an empty namespaceSelector selects every namespace",
     pod(affinity=required("podAffinity", term(ns_selector={}, security="S1"))), {"n1": [pod("x", SEC, ns="other")]},
     {"n1": (), "n2": AFF, "n3": AFF}),
    ("required anti-affinity by hostname keeps off the matching pod's node",
     pod(affinity=required("podAntiAffinity", term(security="S1"))), {"n1": [pod("x", SEC)]},
     {"n1": ANTI, "n2": (), "n3": ()}),
    ("required anti-affinity by zone keeps off the whole zone",
     pod(affinity=required("podAntiAffinity", term(ZONE, security="S1"))), {"n1": [pod("x", SEC)]},
     {"n1": ANTI, "n2": ANTI, "n3": ()}),
    ("anti-affinity on a label no node has rejects nothing",
     pod(affinity=required("podAntiAffinity", term("rack", security="S1"))), {"n1": [pod("x", SEC)]},
     {"n1": (), "n2": (), "n3": ()}),
    ("anti-affinity against its own replicas (charts' hard rule)",
     pod(labels={"app": "db"}, affinity=required("podAntiAffinity", term(app="db"))),
     {"n1": [pod("a", {"app": "db"})], "n2": [pod("b", {"app": "db"})]},
     {"n1": ANTI, "n2": ANTI, "n3": ()}),
    ("symmetry: an existing pod's required anti-affinity keeps a matching pod away",
     pod(labels=SEC), {"n1": [pod("x", {"app": "db"}, affinity=required("podAntiAffinity", term(ZONE, security="S1")))]},
     {"n1": EXIST, "n2": EXIST, "n3": ()}),
    ("symmetry only within the existing term's namespaces",
     pod(labels=SEC, ns="other"),
     {"n1": [pod("x", affinity=required("podAntiAffinity", term(security="S1")))]},
     {"n1": (), "n2": (), "n3": ()}),
    ("affinity satisfied but existing anti-affinity rejects",
     pod(labels=SEC, affinity=required("podAffinity", term(ZONE, app="web"))),
     {"n1": [pod("x", {"app": "web"}, affinity=required("podAntiAffinity", term(security="S1")))]},
     {"n1": EXIST, "n2": (), "n3": AFF}),
]


@pytest.mark.parametrize("name,the_pod,placed,want", FILTER_CASES, ids=[c[0] for c in FILTER_CASES])
def test_filter(name: str, the_pod: dict, placed: dict, want: dict) -> None:
    assert run_filter(InterPodAffinity(), the_pod, cluster(THREE, placed)) == want


def test_filter_codes_as_upstream() -> None:
    assert InterPodAffinity._AFFINITY.code == UNSCHEDULABLE_AND_UNRESOLVABLE
    assert InterPodAffinity._ANTI.code == UNSCHEDULABLE
    assert InterPodAffinity._EXISTING.code == UNSCHEDULABLE


def test_namespace_selector_uses_namespace_labels() -> None:
    listers = Listers.of(namespaces=[{"metadata": {"name": "team-a", "labels": {"team": "a"}}},
                                     {"metadata": {"name": "team-b", "labels": {"team": "b"}}}])
    nis = cluster(THREE, {"n1": [pod("x", SEC, ns="team-a")], "n3": [pod("y", SEC, ns="team-b")]})
    p = pod(affinity=required("podAffinity", term(ns_selector={"matchLabels": {"team": "a"}}, security="S1")))
    assert run_filter(InterPodAffinity(listers), p, nis) == {"n1": (), "n2": AFF, "n3": AFF}
    # Symmetry: an existing pod's anti-affinity selects the new pod's namespace by its labels.
    existing = pod("z", affinity=required("podAntiAffinity", term(ns_selector={"matchLabels": {"team": "b"}},
                                                                  security="S1")))
    nis = cluster(THREE, {"n2": [existing]})
    assert run_filter(InterPodAffinity(listers), pod("new", SEC, ns="team-b"), nis) == {"n1": (), "n2": EXIST, "n3": ()}
    assert run_filter(InterPodAffinity(listers), pod("new", SEC, ns="team-a"), nis) == {"n1": (), "n2": (), "n3": ()}


def test_counts_follow_pods_added_and_removed() -> None:
    nis = cluster(THREE, {})
    p = pod(labels={"app": "db"}, affinity=required("podAntiAffinity", term(app="db")))
    plugin = InterPodAffinity()
    assert run_filter(plugin, p, nis) == {"n1": (), "n2": (), "n3": ()}
    peer = pod("a", {"app": "db"})
    nis[1].add_pod(peer)
    assert run_filter(plugin, p, nis) == {"n1": (), "n2": ANTI, "n3": ()}
    nis[1].remove_pod(peer)
    assert run_filter(plugin, p, nis) == {"n1": (), "n2": (), "n3": ()}


# ---------------------------------------------------------------------------
# score
# ---------------------------------------------------------------------------


def scores(plugin: InterPodAffinity, p: dict, nis: list[NodeInfo]) -> dict[str, int]:
    info = PodInfo(p)
    ctx = SchedulingContext(nis, nis)
    if not plugin.pre_score(info, ctx):
        return {ni.name: 0 for ni in nis}
    raw = [plugin.score(info, ni, ctx) for ni in nis]
    return dict(zip((ni.name for ni in nis), plugin.normalize(raw)))


FOUR = [node("n1", "z1"), node("n2", "z1"), node("n3", "z2"), node("n4", "z3")]

SCORE_CASES = [
    ("no affinity anywhere: all 0", pod(), {"n1": [pod("x", SEC)]}, {"n1": 0, "n2": 0, "n3": 0, "n4": 0}),
    ("preferred affinity by zone: the peer's zone wins",
     pod(affinity=preferred("podAffinity", (5, term(ZONE, security="S1")))), {"n1": [pod("x", SEC)]},
     {"n1": 100, "n2": 100, "n3": 0, "n4": 0}),
    ("preferred affinity weights add up per domain",
     pod(affinity=preferred("podAffinity", (5, term(ZONE, security="S1")), (3, term(ZONE, app="web")))),
     {"n1": [pod("x", SEC)], "n3": [pod("y", {"app": "web"})]},
     {"n1": 100, "n2": 100, "n3": 60, "n4": 0}),
    ("preferred anti-affinity: the peer's zone loses",
     pod(affinity=preferred("podAntiAffinity", (5, term(ZONE, security="S1")))), {"n1": [pod("x", SEC)]},
     {"n1": 0, "n2": 0, "n3": 100, "n4": 100}),
    ("affinity and anti-affinity together",
     pod(affinity={**preferred("podAffinity", (5, term(security="S1"))),
                   **preferred("podAntiAffinity", (5, term(app="web")))}),
     {"n1": [pod("x", SEC)], "n2": [pod("y", {"app": "web"})]},
     {"n1": 100, "n2": 0, "n3": 50, "n4": 50}),
    ("symmetry: an existing pod's preferred affinity to the new pod",
     pod(labels=SEC), {"n3": [pod("x", affinity=preferred("podAffinity", (5, term(ZONE, security="S1"))))]},
     {"n1": 0, "n2": 0, "n3": 100, "n4": 0}),
    ("symmetry: an existing pod's preferred anti-affinity to the new pod",
     pod(labels=SEC), {"n3": [pod("x", affinity=preferred("podAntiAffinity", (5, term(security="S1"))))]},
     {"n1": 100, "n2": 100, "n3": 0, "n4": 100}),
    ("symmetry: existing required affinity counts with hardPodAffinityWeight 1",
     pod(labels=SEC, affinity=preferred("podAffinity", (1, term(app="web")))),
     {"n1": [pod("y", {"app": "web"})], "n2": [pod("x", affinity=required("podAffinity", term(security="S1"))),
                                                pod("x2", affinity=required("podAffinity", term(security="S1")))]},
     {"n1": 50, "n2": 100, "n3": 0, "n4": 0}),
]


@pytest.mark.parametrize("name,the_pod,placed,want", SCORE_CASES, ids=[c[0] for c in SCORE_CASES])
def test_score(name: str, the_pod: dict, placed: dict, want: dict) -> None:
    assert scores(InterPodAffinity(), the_pod, cluster(FOUR, placed)) == want


# ---------------------------------------------------------------------------
# schedule_one: messages and many nodes
# ---------------------------------------------------------------------------


def test_failed_scheduling_message_for_anti_affinity() -> None:
    nodes = [node(f"n{i}") for i in range(3)]
    nis = cluster(nodes, {f"n{i}": [pod(f"web-{i}", {"app": "web"})] for i in range(3)})
    p = pod("web-3", {"app": "web"}, affinity=required("podAntiAffinity", term(app="web")))
    result = schedule_one(p, nis, filters=default_filters(), scorers=default_scorers())
    assert result.node is None
    assert result.message() == ("0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. "
                                "preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.")


def test_failed_scheduling_message_for_affinity_and_existing_anti_affinity() -> None:
    nodes = [node(f"n{i}") for i in range(3)]
    guard = pod("guard", affinity=required("podAntiAffinity", term(app="web")))
    nis = cluster(nodes, {"n0": [guard]})
    p = pod("web", {"app": "web"}, affinity=required("podAffinity", term(app="cache")))
    result = schedule_one(p, nis, filters=default_filters(), scorers=default_scorers())
    assert result.message() == (
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules. "
        "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.")
    result = schedule_one(pod("web", {"app": "web"}), nis[:1], filters=default_filters(), scorers=default_scorers())
    assert result.message() == (
        "0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules. "
        "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.")


def test_hard_anti_affinity_places_one_per_node_over_many_nodes() -> None:
    nodes = [node(f"n{i:03}", f"z{i % 3}") for i in range(200)]
    nis = cluster(nodes, {})
    by_name = {ni.name: ni for ni in nis}
    rng = random.Random(1)
    filters, scorers = default_filters(), default_scorers()
    start = 0
    for i in range(200):
        p = PodInfo(pod(f"db-{i}", {"app": "db"}, affinity=required("podAntiAffinity", term(app="db"))))
        result = schedule_one(p, nis, filters=filters, scorers=scorers, rng=rng, max_feasible=100, start=start)
        start = result.next_start
        assert result.node is not None, result.message()
        by_name[result.node].add_pod(p)
    assert all(ni.pod_count == 1 for ni in nis)
    last = schedule_one(pod("db-x", {"app": "db"}, affinity=required("podAntiAffinity", term(app="db"))), nis,
                        filters=filters, scorers=scorers)
    assert last.message().startswith("0/200 nodes are available: 200 node(s) didn't match pod anti-affinity rules.")


def test_required_affinity_follows_the_peer_over_many_nodes() -> None:
    nodes = [node(f"n{i:03}", f"z{i % 10}") for i in range(300)]
    nis = cluster(nodes, {"n137": [pod("cache", {"app": "cache"})]})
    filters, scorers = default_filters(), default_scorers()
    for i in range(20):
        p = PodInfo(pod(f"web-{i}", {"app": "web"}, affinity=required("podAffinity", term(ZONE, app="cache"))))
        result = schedule_one(p, nis, filters=filters, scorers=scorers, rng=random.Random(i))
        assert result.node is not None and nis[int(result.node[1:])].labels[ZONE] == "z7"
        nis[int(result.node[1:])].add_pod(p)


def test_preemption_evicts_the_pod_the_anti_affinity_avoids() -> None:
    from kubepy.scheduler import preemption

    def prio(p: dict, value: int) -> dict:
        p["spec"]["priority"] = value
        return p

    nis = cluster(THREE[:2], {"n1": [prio(pod("low", {"app": "db"}), 0)],
                              "n2": [prio(pod("high", {"app": "db"}), 1000), prio(pod("other", {"app": "x"}), 0)]})
    incoming = PodInfo(prio(pod("new", {"app": "db"}, affinity=required("podAntiAffinity", term(app="db"))), 500))
    filters = default_filters()
    result = schedule_one(incoming, nis, filters=filters, scorers=default_scorers())
    assert result.node is None and result.filter_reasons == {"n1": list(ANTI), "n2": list(ANTI)}
    cand, verdicts = preemption.find_candidate(incoming, nis, result.statuses, filters)
    assert cand is not None and cand.node == "n1" and [v.metadata["name"] for v in cand.victims] == ["low"]
    assert verdicts == {"n2": preemption.NO_VICTIMS}
