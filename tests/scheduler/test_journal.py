"""The node journal: caches that span every node (topology spread's domain
counts, InterPodAffinity's nodes with affinity pods) catch up on the nodes
that changed, and rescan when the journal no longer reaches back."""

from __future__ import annotations

import pytest

from kubepy.scheduler import framework
from kubepy.scheduler.framework import NodeInfo, NodeSubset, PodInfo
from kubepy.scheduler.topologyspread import PodTopologySpread
from tests.scheduler.test_plugins import make_node, make_pod

ZONE = "topology.kubernetes.io/zone"


def zoned(i: int) -> NodeInfo:
    return NodeInfo.from_node(make_node(f"n{i}", labels={ZONE: f"z{i % 2}", "kubernetes.io/hostname": f"n{i}"}))


def spread_pod(name: str) -> PodInfo:
    pod = make_pod(name)
    pod["metadata"]["labels"] = {"app": "a"}
    pod["spec"]["topologySpreadConstraints"] = [{"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable":
                                                 "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "a"}}}]
    return PodInfo(pod)


def counts(plugin: PodTopologySpread, nodes: list[NodeInfo], name: str) -> dict[str, int]:
    pod = spread_pod(name)
    plugin.pre_filter_nodes(pod, nodes)
    return pod.recall("PodTopologySpread/filter").counts[0]


@pytest.mark.parametrize("limit", [16384, 2])
def test_domain_counts_follow_the_nodes_that_changed(monkeypatch, limit) -> None:
    monkeypatch.setattr(framework._Journal, "LIMIT", limit)   # 2: the journal overflows, counts rescan
    monkeypatch.setattr(framework, "JOURNAL", framework._Journal())
    import kubepy.scheduler.topologyspread as ts
    monkeypatch.setattr(ts, "JOURNAL", framework.JOURNAL)
    nodes = [zoned(i) for i in range(6)]
    plugin = PodTopologySpread()
    assert counts(plugin, nodes, "p0") == {"z0": 0, "z1": 0}
    for i, n in enumerate((0, 2, 1)):
        p = spread_pod(f"bound{i}").pod
        nodes[n].add_pod({**p, "spec": {**p["spec"], "nodeName": nodes[n].name}})
    assert counts(plugin, nodes, "p1") == {"z0": 2, "z1": 1}
    nodes[2].remove_pod(spread_pod("bound1").pod)
    # A copy made to simulate on is not one of the list's nodes: it changes nothing.
    sim = nodes[1].clone()
    sim.add_pod(spread_pod("ghost").pod)
    assert counts(plugin, nodes, "p2") == {"z0": 1, "z1": 1}


def test_node_subset_tracks_its_predicate() -> None:
    nodes = [zoned(i) for i in range(4)]
    subset = NodeSubset(lambda ni: ni.pod_count)
    assert list(subset.of(nodes)) == []
    nodes[3].add_pod(make_pod("x"))
    other = zoned(9)
    other.add_pod(make_pod("y"))          # a node of no list we asked about
    assert [n.name for n in subset.of(nodes)] == ["n3"]
    nodes[3].remove_pod(make_pod("x"))
    assert list(subset.of(nodes)) == []
    fresh = [*nodes, other]               # a new list: counted afresh
    assert [n.name for n in subset.of(fresh)] == ["n9"]
