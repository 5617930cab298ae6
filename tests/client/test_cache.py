"""Cache: keys and secondary indexes stay right through set/delete/replace."""

from __future__ import annotations

from kubepy.client import Cache, by_namespace, by_node, by_owner, object_key


def pod(name: str, ns: str = "default", node: str | None = None, owners: tuple[str, ...] = (), rv: str = "1") -> dict:
    meta = {"name": name, "namespace": ns, "resourceVersion": rv,
            "ownerReferences": [{"uid": u, "kind": "ReplicaSet", "name": "rs"} for u in owners]}
    return {"metadata": meta, "spec": {"nodeName": node} if node else {}}


def names(objs: list[dict]) -> list[str]:
    return [o["metadata"]["name"] for o in objs]


def test_object_key():
    assert object_key(pod("a", "ns1")) == "ns1/a"
    assert object_key({"metadata": {"name": "node-1"}}) == "node-1"


def test_indexes_follow_updates_and_deletes():
    c = Cache({"namespace": by_namespace, "node": by_node, "owner": by_owner})
    c.set(pod("a", node="n1", owners=("u1",)))
    c.set(pod("b", node="n1", owners=("u1", "u2")))
    c.set(pod("c", "other"))
    assert len(c) == 3
    assert names(c.by_index("node", "n1")) == ["a", "b"]
    assert names(c.by_index("owner", "u2")) == ["b"]
    assert names(c.by_index("namespace", "other")) == ["c"]
    assert c.by_index("node", "nope") == []

    old = c.set(pod("a", node="n2", rv="2"))  # rescheduled: leaves n1's index
    assert old is not None and old["metadata"]["resourceVersion"] == "1"
    assert names(c.by_index("node", "n1")) == ["b"]
    assert names(c.by_index("node", "n2")) == ["a"]

    assert c.delete("default/b") is not None
    assert c.delete("default/b") is None
    assert c.by_index("node", "n1") == []
    assert c.by_index("owner", "u1") == []  # owner u1's pod a had no owners after the update
    assert sorted(c.keys()) == ["default/a", "other/c"]
    assert c.get("other/c") is not None and c.get("default/zz") is None
    assert "default/a" in c


def test_replace_rebuilds_everything():
    c = Cache({"node": by_node})
    c.set(pod("a", node="n1"))
    c.replace([pod("x", node="n9"), pod("y")])
    assert sorted(c.keys()) == ["default/x", "default/y"]
    assert c.by_index("node", "n1") == []
    assert names(c.by_index("node", "n9")) == ["x"]
    assert len(c.list()) == 2
