"""API semantics in process: the API server's aiohttp app on a temporary SQLite
store, driven over HTTP by aiohttp's test client (no subprocess, no TLS).

What real clients rely on, with the bodies Kubernetes sends: optimistic
concurrency (409), watch history and compaction (410), the patch content
types (415 for others), list paging, watch events and bookmarks,
generateName, dryRun, graceful deletion and finalizers, selectors, and the
``Status`` objects of errors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kubepy.api import auth
from kubepy.api import server as apiserver
from kubepy.api.server import APIServer, ServerConfig
from kubepy.store.base import open_store

NS = "default"
CM = f"/api/v1/namespaces/{NS}/configmaps"
PODS = f"/api/v1/namespaces/{NS}/pods"
DEPLOYS = f"/apis/apps/v1/namespaces/{NS}/deployments"


async def _serve(tmp_path: Path, **config: Any) -> AsyncIterator[TestClient]:
    store = open_store("sqlite", data_dir=str(tmp_path))
    server = APIServer(store, ServerConfig(data_dir=tmp_path, **config))
    await server.start()
    token = auth.token_for(auth.load_or_create_static_tokens(tmp_path), group=auth.MASTERS)
    client = TestClient(TestServer(server.app()), headers={"Authorization": f"Bearer {token}"})
    client.token = token  # type: ignore[attr-defined] - for tests that talk through kubepy's Client
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await server.stop()
        await store.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[TestClient]:
    async for client in _serve(tmp_path):
        yield client


@pytest.fixture
async def compacting_api(tmp_path: Path) -> AsyncIterator[TestClient]:
    """A server that compacts its history every 0.2 s."""
    async for client in _serve(tmp_path, compaction_interval=0.2):
        yield client


async def call(api: TestClient, method: str, path: str, body: Any = None, *, status: int = 200,
               content_type: str = "application/json", **params: Any) -> dict[str, Any]:
    data = None if body is None else json.dumps(body)
    headers = {"Content-Type": content_type} if data is not None else {}
    resp = await api.request(method, path, data=data, headers=headers, params=params)
    text = await resp.text()
    assert resp.status == status, f"{method} {path}: {resp.status} {text}"
    return json.loads(text) if text else {}


def configmap(name: str = "", **fields: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name} if name else {}
    meta.update(fields.pop("metadata", {}))
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, **fields}


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failure ``Status`` as Kubernetes serializes it (field order is not significant in JSON)."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details is not None:
        body["details"] = details
    return body


async def watch_events(api: TestClient, path: str, count: int, **params: Any) -> list[dict[str, Any]]:
    """The first ``count`` events of a watch (the stream is then dropped)."""
    resp = await api.get(path, params={"watch": "true", **params})
    assert resp.status == 200, await resp.text()
    events = []
    async with asyncio.timeout(10):
        while len(events) < count:
            line = await resp.content.readline()
            if not line:
                break
            events.append(json.loads(line))
    resp.close()
    return events


# -- errors as Status objects -----------------------------------------------------------
async def test_not_found_is_a_kubernetes_status(api: TestClient) -> None:
    body = await call(api, "GET", f"{CM}/nope", status=404)
    assert body == status_body(404, "NotFound", 'configmaps "nope" not found', {"name": "nope", "kind": "configmaps"})


async def test_already_exists(api: TestClient) -> None:
    await call(api, "POST", CM, configmap("dup"), status=201)
    body = await call(api, "POST", CM, configmap("dup"), status=409)
    assert body == status_body(409, "AlreadyExists", 'configmaps "dup" already exists',
                               {"name": "dup", "kind": "configmaps"})


async def test_update_with_stale_resource_version_conflicts(api: TestClient) -> None:
    made = await call(api, "POST", CM, configmap("c", data={"k": "1"}), status=201)
    stale = made["metadata"]["resourceVersion"]
    updated = await call(api, "PUT", f"{CM}/c", {**made, "data": {"k": "2"}})
    assert int(updated["metadata"]["resourceVersion"]) > int(stale)
    body = await call(api, "PUT", f"{CM}/c", {**made, "data": {"k": "3"}}, status=409)
    assert body == status_body(
        409, "Conflict", 'Operation cannot be fulfilled on configmaps "c": the object has been modified; '
        "please apply your changes to the latest version and try again", {"name": "c", "kind": "configmaps"})
    assert (await call(api, "GET", f"{CM}/c"))["data"] == {"k": "2"}


# -- patches ------------------------------------------------------------------------------
async def test_merge_json_and_strategic_patches(api: TestClient) -> None:
    await call(api, "POST", CM, configmap("p", data={"a": "1", "b": "2"}), status=201)
    merged = await call(api, "PATCH", f"{CM}/p", {"data": {"a": None, "c": "3"}},
                        content_type="application/merge-patch+json")
    assert merged["data"] == {"b": "2", "c": "3"}
    patched = await call(api, "PATCH", f"{CM}/p", [{"op": "replace", "path": "/data/b", "value": "20"}],
                         content_type="application/json-patch+json")
    assert patched["data"] == {"b": "20", "c": "3"}
    failed = await call(api, "PATCH", f"{CM}/p", [{"op": "test", "path": "/data/b", "value": "nope"}],
                        content_type="application/json-patch+json", status=422)
    assert (failed["kind"], failed["code"]) == ("Status", 422)

    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
              "spec": {"selector": {"matchLabels": {"app": "web"}},
                       "template": {"metadata": {"labels": {"app": "web"}},
                                    "spec": {"containers": [{"name": "a", "image": "a:1"},
                                                            {"name": "b", "image": "b:1"}]}}}}
    await call(api, "POST", DEPLOYS, deploy, status=201)
    # Strategic merge: containers merge by name; a merge patch would have replaced the list.
    smp = await call(api, "PATCH", f"{DEPLOYS}/web",
                     {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}},
                     content_type="application/strategic-merge-patch+json")
    assert [(c["name"], c["image"]) for c in smp["spec"]["template"]["spec"]["containers"]] == [
        ("a", "a:1"), ("b", "b:2")]


async def test_unknown_patch_type_is_415(api: TestClient) -> None:
    await call(api, "POST", CM, configmap("p"), status=201)
    body = await call(api, "PATCH", f"{CM}/p", {"data": {}}, content_type="application/xml", status=415)
    assert (body["kind"], body["status"], body["reason"], body["code"]) == (
        "Status", "Failure", "UnsupportedMediaType", 415)


# -- lists ----------------------------------------------------------------------------------
async def test_list_paging_with_limit_and_continue(api: TestClient) -> None:
    await call(api, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": "paging"}}, status=201)
    path = "/api/v1/namespaces/paging/configmaps"
    for i in range(5):
        await call(api, "POST", path, configmap(f"page-{i}"), status=201)
    first = await call(api, "GET", path, limit=2)
    pages = [first]
    while token := pages[-1]["metadata"].get("continue"):
        pages.append(await call(api, "GET", path, limit=2, **{"continue": token}))
    assert [[o["metadata"]["name"] for o in p["items"]] for p in pages] == [
        ["page-0", "page-1"], ["page-2", "page-3"], ["page-4"]]
    # Every page is the first page's snapshot.
    assert {p["metadata"]["resourceVersion"] for p in pages} == {first["metadata"]["resourceVersion"]}


async def test_expired_continue_token_is_410(compacting_api: TestClient) -> None:
    api = compacting_api
    for i in range(3):
        await call(api, "POST", CM, configmap(f"x-{i}"), status=201)
    first = await call(api, "GET", CM, limit=1)
    token = first["metadata"]["continue"]
    await call(api, "POST", CM, configmap("later"), status=201)  # history moves on, then is compacted
    async with asyncio.timeout(10):
        while True:
            resp = await api.get(CM, params={"limit": "1", "continue": token})
            if resp.status == 410:
                body = await resp.json()
                break
            await asyncio.sleep(0.1)
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Expired", 410)


async def test_label_and_field_selectors(api: TestClient) -> None:
    await call(api, "POST", CM, configmap("red", metadata={"labels": {"color": "red", "size": "s"}}), status=201)
    await call(api, "POST", CM, configmap("blue", metadata={"labels": {"color": "blue"}}), status=201)

    async def names(**params: Any) -> list[str]:
        return sorted(o["metadata"]["name"] for o in (await call(api, "GET", CM, **params))["items"])

    assert await names(labelSelector="color=red") == ["red"]
    assert await names(labelSelector="color in (red,blue),!size") == ["blue"]
    assert await names(labelSelector="color", fieldSelector="metadata.name!=red") == ["blue"]
    bad = await call(api, "GET", CM, fieldSelector="data.k=v", status=400)
    assert (bad["kind"], bad["reason"], bad["code"]) == ("Status", "BadRequest", 400)


# -- watch ------------------------------------------------------------------------------------
async def test_watch_added_modified_deleted_from_a_revision(api: TestClient) -> None:
    start = (await call(api, "GET", CM))["metadata"]["resourceVersion"]
    made = await call(api, "POST", CM, configmap("w", data={"v": "1"}), status=201)
    await call(api, "PATCH", f"{CM}/w", {"data": {"v": "2"}}, content_type="application/merge-patch+json")
    await call(api, "DELETE", f"{CM}/w")
    events = await watch_events(api, CM, 3, resourceVersion=start)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
    assert events[0]["object"]["metadata"]["uid"] == made["metadata"]["uid"]
    assert events[1]["object"]["data"] == {"v": "2"}
    revisions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert revisions == sorted(revisions) and revisions[0] > int(start)


async def test_watch_sends_bookmarks_when_allowed(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apiserver, "BOOKMARK_INTERVAL", 0.1)
    await call(api, "POST", CM, configmap("b"), status=201)
    # The initial state, then the bookmark that marks its end, then a periodic one.
    events = await watch_events(api, CM, 3, sendInitialEvents="true", allowWatchBookmarks="true",
                                resourceVersionMatch="NotOlderThan", labelSelector="!absent",
                                fieldSelector="metadata.name=b")
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK", "BOOKMARK"]
    end = events[1]["object"]
    assert (end["kind"], end["apiVersion"]) == ("ConfigMap", "v1")
    assert end["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(events[2]["object"]["metadata"]["resourceVersion"]) >= int(end["metadata"]["resourceVersion"])


async def test_watch_from_a_compacted_revision_is_gone(compacting_api: TestClient) -> None:
    api = compacting_api
    first = await call(api, "POST", CM, configmap("old"), status=201)
    await call(api, "POST", CM, configmap("new"), status=201)
    rv = first["metadata"]["resourceVersion"]
    async with asyncio.timeout(10):
        while True:
            resp = await api.get(CM, params={"watch": "true", "resourceVersion": rv})
            if resp.status == 410:
                status = await resp.json()
                break
            line = json.loads(await resp.content.readline())
            resp.close()
            if line["type"] == "ERROR":
                status = line["object"]
                break
            await asyncio.sleep(0.1)
    assert (status["kind"], status["status"], status["reason"], status["code"]) == ("Status", "Failure", "Expired",
                                                                                    410)
    assert status["message"].startswith("too old resource version")


# -- create options ---------------------------------------------------------------------------
async def test_generate_name(api: TestClient) -> None:
    made = await call(api, "POST", CM, configmap(metadata={"generateName": "gen-"}), status=201)
    name = made["metadata"]["name"]
    assert name.startswith("gen-") and len(name) == len("gen-") + 5
    assert made["metadata"]["generateName"] == "gen-"
    assert (await call(api, "GET", f"{CM}/{name}"))["metadata"]["uid"] == made["metadata"]["uid"]


async def test_dry_run_writes_nothing(api: TestClient) -> None:
    before = (await call(api, "GET", CM))["metadata"]["resourceVersion"]
    dry = await call(api, "POST", CM, configmap("dry", data={"k": "v"}), status=201, dryRun="All")
    assert dry["metadata"]["name"] == "dry" and dry["data"] == {"k": "v"}
    await call(api, "GET", f"{CM}/dry", status=404)
    await call(api, "POST", CM, configmap("real"), status=201)
    await call(api, "DELETE", f"{CM}/real", dryRun="All")
    await call(api, "GET", f"{CM}/real")
    after = (await call(api, "GET", f"{CM}/real"))["metadata"]["resourceVersion"]
    assert int(after) > int(before)


# -- deletion ----------------------------------------------------------------------------------
async def test_finalizers_hold_deletion_until_removed(api: TestClient) -> None:
    await call(api, "POST", CM, configmap("f", metadata={"finalizers": ["example.com/hold"]}), status=201)
    marked = await call(api, "DELETE", f"{CM}/f")
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["finalizers"] == ["example.com/hold"]
    still = await call(api, "GET", f"{CM}/f")
    assert still["metadata"]["deletionTimestamp"]
    await call(api, "PATCH", f"{CM}/f", {"metadata": {"finalizers": None}},
               content_type="application/merge-patch+json")
    await call(api, "GET", f"{CM}/f", status=404)


async def test_delete_preconditions_and_status(api: TestClient) -> None:
    await call(api, "POST", CM, configmap("d"), status=201)
    body = await call(api, "DELETE", f"{CM}/d", {"kind": "DeleteOptions", "apiVersion": "v1",
                                                 "preconditions": {"uid": "not-the-uid"}}, status=409)
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Conflict", 409)
    await call(api, "DELETE", f"{CM}/d")
    again = await call(api, "DELETE", f"{CM}/d", status=404)
    assert again == status_body(404, "NotFound", 'configmaps "d" not found', {"name": "d", "kind": "configmaps"})


async def test_graceful_pod_deletion(api: TestClient) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}
    await call(api, "POST", PODS, pod, status=201)
    marked = await call(api, "DELETE", f"{PODS}/p", {"kind": "DeleteOptions", "apiVersion": "v1",
                                                     "gracePeriodSeconds": 30})
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 30 and marked["metadata"]["deletionTimestamp"]
    await call(api, "GET", f"{PODS}/p")  # a bound pod waits for its kubelet
    await call(api, "DELETE", f"{PODS}/p", {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
    await call(api, "GET", f"{PODS}/p", status=404)
    # An unbound pod has no kubelet to wait for: it goes at once.
    await call(api, "POST", PODS, {**pod, "spec": {"containers": pod["spec"]["containers"]}}, status=201)
    await call(api, "DELETE", f"{PODS}/p")
    await call(api, "GET", f"{PODS}/p", status=404)


# ---------------------------------------------------------------------------
# A kind registered while the server runs is served like a built-in one
# ---------------------------------------------------------------------------


async def test_a_kind_registered_at_runtime_is_served(api: TestClient):
    from kubepy import kinds
    from kubepy.kinds import validation

    def no_blue(obj: dict, old: dict | None, errs: validation.Errs) -> None:
        if (obj.get("data") or {}).get("color") == "blue":
            errs.invalid("data.color", "blue", "no blue widgets")

    widgets = f"/apis/example.kubepy.test/v1/namespaces/{NS}/widgets"
    await call(api, "GET", widgets, status=404)
    w = kinds.register(kinds.Kind("example.kubepy.test", "v1", "Widget", "widgets", namespaced=True,
                                  model="V1ConfigMap", strategy=kinds.Strategy(validate=no_blue)))
    try:
        watch = await api.get(widgets, params={"watch": "true", "resourceVersion": "0"})
        made = await call(api, "POST", widgets, {"apiVersion": "example.kubepy.test/v1", "kind": "Widget",
                                                 "metadata": {"name": "w1"}, "data": {"color": "red"}}, status=201)
        assert made["metadata"]["uid"]
        event = json.loads(await watch.content.readline())
        assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "w1")
        watch.close()
        bad = await call(api, "POST", widgets, {"metadata": {"name": "w2"}, "data": {"color": "blue"}}, status=422)
        assert bad["details"]["causes"][0]["field"] == "data.color" and bad["details"]["kind"] == "Widget"
        listed = await call(api, "GET", widgets)
        assert [i["metadata"]["name"] for i in listed["items"]] == ["w1"] and listed["kind"] == "WidgetList"
        group = await call(api, "GET", "/apis/example.kubepy.test/v1")
        assert [r["name"] for r in group["resources"]] == ["widgets"]
        await call(api, "DELETE", f"{widgets}/w1")
    finally:
        kinds.unregister(w)
    await call(api, "GET", widgets, status=404)


async def test_creates_follow_the_namespace_lifecycle_at_once(api: TestClient) -> None:
    """A create checks its namespace from memory (kept from the namespaces watch), yet sees this
    server's own namespace writes at once: a namespace just made takes objects, one just deleted
    (terminating: the kubernetes finalizer holds it) refuses them with upstream's 403, a missing one 404."""
    for i in range(5):
        ns = f"life-{i}"
        await call(api, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": ns}}, status=201)
        await call(api, "POST", f"/api/v1/namespaces/{ns}/configmaps", configmap("a"), status=201)
        await call(api, "DELETE", f"/api/v1/namespaces/{ns}")
        refused = await call(api, "POST", f"/api/v1/namespaces/{ns}/configmaps", configmap("b"), status=403)
        assert f"unable to create new content in namespace {ns} because it is being terminated" in \
            refused["message"], refused
        assert refused["reason"] == "Forbidden"
    missing = await call(api, "POST", "/api/v1/namespaces/never-made/configmaps", configmap("c"), status=404)
    assert missing["reason"] == "NotFound" and missing["details"] == {"name": "never-made", "kind": "namespaces"}
    # An update that leaves a namespace open keeps it usable.
    await call(api, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": "life-open"}}, status=201)
    await call(api, "PATCH", "/api/v1/namespaces/life-open", {"metadata": {"labels": {"a": "b"}}},
               content_type="application/merge-patch+json")
    await call(api, "POST", "/api/v1/namespaces/life-open/configmaps", configmap("d"), status=201)
