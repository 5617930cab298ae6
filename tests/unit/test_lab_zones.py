"""`kubepy up --zones/--region`: which topology labels each lab node registers with."""

from __future__ import annotations

from kubepy.lab.cluster import ClusterState, up_conflict


def test_zones_round_robin_and_region() -> None:
    state = ClusterState("kp", 6443, nodes=5, zones="a,b", region="r1")
    assert [state.node_labels(i).get("topology.kubernetes.io/zone") for i in range(1, 6)] == ["a", "b", "a", "b", "a"]
    assert all(state.node_labels(i)["topology.kubernetes.io/region"] == "r1" for i in range(1, 6))
    assert ClusterState("kp", 6443, nodes=2).node_labels(1) == {}


def test_zones_survive_a_saved_state(tmp_path) -> None:
    path = tmp_path / "state.json"
    ClusterState("kp", 6443, nodes=3, zones="x,y,z").save(path)
    assert ClusterState.load(path).node_labels(3) == {"topology.kubernetes.io/zone": "z"}


def test_other_zones_than_the_cluster_has_conflict() -> None:
    state = ClusterState("kp", 6443, nodes=3, zones="a,b")
    kw = dict(nodes=None, store=None, port=None, subnet=None)
    assert up_conflict(state, **kw, zones="a,b") is None
    assert up_conflict(state, **kw) is None
    assert "zones a,b, not --zones a,b,c" in up_conflict(state, **kw, zones="a,b,c")
