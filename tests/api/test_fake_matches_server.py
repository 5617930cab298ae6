"""The in-memory ``FakeAPI`` and the real API server answer kubepy's ``Client`` alike.

Each scenario runs twice: against ``kubepy.testing.fakeapi.FakeAPI``, and
through ``kubepy.client.Client`` against the server's app in process. When
the server's behaviour changes, the fake that controller tests rely on
must follow, or this fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kubepy.client import (
    AlreadyExistsError,
    Client,
    ClientConfig,
    ConflictError,
    GoneError,
    InvalidError,
    NotFoundError,
)
from kubepy.testing.fakeapi import FakeAPI
from tests.api.test_semantics import _serve

NS = "default"


@pytest.fixture(params=["fake", "server"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "fake":
        fake = FakeAPI()
        fake.seed("namespaces", {"metadata": {"name": NS}})
        yield fake
        return
    async for test_client in _serve(tmp_path):
        client = Client(ClientConfig(server=str(test_client.make_url("")).rstrip("/"),
                                     token=test_client.token))  # type: ignore[attr-defined]
        try:
            yield client
        finally:
            await client.close()


def cm(name: str = "", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {**({"name": name} if name else {}), **meta},
            "data": {"k": "v"}}


async def test_create_get_update_conflict(api: Any) -> None:
    made = await api.create("configmaps", cm("a"), namespace=NS)
    assert made["metadata"]["uid"] and made["metadata"]["resourceVersion"]
    with pytest.raises(AlreadyExistsError):
        await api.create("configmaps", cm("a"), namespace=NS)
    got = await api.get("configmaps", "a", namespace=NS)
    assert got == made
    updated = await api.update("configmaps", {**got, "data": {"k": "2"}})
    assert int(updated["metadata"]["resourceVersion"]) > int(made["metadata"]["resourceVersion"])
    with pytest.raises(ConflictError):
        await api.update("configmaps", {**got, "data": {"k": "3"}})
    with pytest.raises(NotFoundError):
        await api.get("configmaps", "missing", namespace=NS)
    gen = await api.create("configmaps", cm(generateName="g-"), namespace=NS)
    assert gen["metadata"]["name"].startswith("g-") and len(gen["metadata"]["name"]) == 7


async def test_patches_and_status(api: Any) -> None:
    await api.create("configmaps", cm("p", labels={"a": "1"}), namespace=NS)
    merged = await api.patch("configmaps", "p", {"metadata": {"labels": {"b": "2"}}}, namespace=NS)
    assert merged["metadata"]["labels"] == {"a": "1", "b": "2"}
    with pytest.raises(InvalidError):
        await api.patch("configmaps", "p", [{"op": "test", "path": "/data/k", "value": "x"}], namespace=NS,
                        patch_type="json")
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
          "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                   "template": {"metadata": {"labels": {"app": "x"}},
                                "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    made = await api.create("replicasets", rs, namespace=NS)
    assert made["metadata"]["generation"] == 1
    st = await api.patch("replicasets", "rs", {"status": {"replicas": 1}}, namespace=NS, subresource="status")
    assert st["status"]["replicas"] == 1 and st["metadata"]["generation"] == 1
    # The main resource ignores status; a spec change moves the generation.
    scaled = await api.patch("replicasets", "rs", {"spec": {"replicas": 2}, "status": {"replicas": 9}}, namespace=NS)
    assert (scaled["spec"]["replicas"], scaled["status"]["replicas"], scaled["metadata"]["generation"]) == (2, 1, 2)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "owned"},
           "spec": {"containers": [{"name": "c", "image": "i"}]}}
    await api.create("pods", pod, namespace=NS)
    ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": made["metadata"]["uid"],
           "controller": True, "blockOwnerDeletion": True}
    adopted = await api.patch("pods", "owned", {"metadata": {"ownerReferences": [ref]}}, namespace=NS,
                              patch_type="strategic")
    assert adopted["metadata"]["ownerReferences"] == [ref]
    released = await api.patch("pods", "owned", {"metadata": {"ownerReferences": [
        {"$patch": "delete", "uid": made["metadata"]["uid"]}]}}, namespace=NS, patch_type="strategic")
    assert not released["metadata"].get("ownerReferences")


async def test_selectors_and_watch(api: Any) -> None:
    _, rv = await api.list_all("configmaps", namespace=NS)
    await api.create("configmaps", cm("red", labels={"color": "red"}), namespace=NS)
    await api.create("configmaps", cm("blue", labels={"color": "blue"}), namespace=NS)
    await api.patch("configmaps", "red", {"metadata": {"labels": {"color": "blue"}}}, namespace=NS)
    await api.delete("configmaps", "blue", namespace=NS)
    items, _ = await api.list_all("configmaps", namespace=NS, label_selector="color=blue")
    assert [o["metadata"]["name"] for o in items] == ["red"]
    items, _ = await api.list_all("configmaps", namespace=NS, field_selector="metadata.name=red")
    assert [o["metadata"]["name"] for o in items] == ["red"]
    seen = []
    async for event in api.watch("configmaps", namespace=NS, resource_version=rv, allow_bookmarks=False):
        seen.append((event["type"], event["object"]["metadata"]["name"]))
        if len(seen) == 4:
            break
    assert seen == [("ADDED", "red"), ("ADDED", "blue"), ("MODIFIED", "red"), ("DELETED", "blue")]


async def test_deletion_with_finalizers_and_grace(api: Any) -> None:
    await api.create("configmaps", cm("f", finalizers=["example.com/hold"]), namespace=NS)
    marked = await api.delete("configmaps", "f", namespace=NS)
    assert marked["metadata"]["deletionTimestamp"]
    with pytest.raises(ConflictError):
        await api.delete("configmaps", "f", namespace=NS, preconditions={"uid": "other"})
    await api.patch("configmaps", "f", {"metadata": {"finalizers": None}}, namespace=NS)
    with pytest.raises(NotFoundError):
        await api.get("configmaps", "f", namespace=NS)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}}
    await api.create("pods", pod, namespace=NS)
    graceful = await api.delete("pods", "p", namespace=NS, grace_period_seconds=30)
    assert graceful["metadata"]["deletionGracePeriodSeconds"] == 30
    await api.delete("pods", "p", namespace=NS, grace_period_seconds=0)
    with pytest.raises(NotFoundError):
        await api.get("pods", "p", namespace=NS)


async def test_fake_watch_from_a_compacted_revision_is_gone() -> None:
    # The server's compaction is timed; tests/api/test_semantics.py checks its 410.
    api = FakeAPI()
    first = await api.create("configmaps", cm("a"), namespace=NS)
    await api.create("configmaps", cm("b"), namespace=NS)
    api.compact()  # what came after the first write is history no more
    with pytest.raises(GoneError):
        async for _ in api.watch("configmaps", namespace=NS, resource_version=first["metadata"]["resourceVersion"]):
            pass
