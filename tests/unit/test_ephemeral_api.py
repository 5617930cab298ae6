"""pods/ephemeralcontainers in process: a real APIServer on a SQLite store behind
aiohttp's test client, driven with the requests kubectl 1.37 sends
(``kubectl debug POD --image=... --target=app`` PATCHes a strategic merge patch
of the Pod onto the subresource)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kubepy.api import auth
from kubepy.api.server import APIServer, ServerConfig
from kubepy.store.sqlite import SQLiteStore

NS = "default"
POD = "kubepy-ephem-unit"
PATH = f"/api/v1/namespaces/{NS}/pods/{POD}"
SMP = {"Content-Type": "application/strategic-merge-patch+json"}

# The exact body kubectl 1.37 sends for `kubectl debug POD --image=busybox:1.36 --target=app -c dbg -- ps`.
KUBECTL_DEBUG_PATCH = {"spec": {"ephemeralContainers": [{
    "command": ["ps"], "image": "busybox:1.36", "name": "dbg", "resources": {},
    "securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}}, "targetContainerName": "app",
    "terminationMessagePolicy": "File"}]}}


def debug_patch(name: str, **extra) -> dict:
    return {"spec": {"ephemeralContainers": [{"name": name, "image": "busybox:1.36", "command": ["ps"],
                                              "terminationMessagePolicy": "File", **extra}]}}


@pytest.fixture
async def api(tmp_path: Path):
    store = SQLiteStore(str(tmp_path / "state.db"))
    server = APIServer(store, ServerConfig(data_dir=tmp_path, compaction_interval=3600))
    await server.start()
    token = auth.token_for(auth.load_or_create_static_tokens(tmp_path), group=auth.MASTERS)
    client = TestClient(TestServer(server.app()), headers={"Authorization": f"Bearer {token}"})
    await client.start_server()
    try:
        r = await client.post(f"/api/v1/namespaces/{NS}/pods", json={
            "metadata": {"name": POD},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}],
                     "initContainers": [{"name": "setup", "image": "busybox:1.36", "command": ["true"]}]}})
        assert r.status == 201, await r.text()
        client.app_server = server  # type: ignore[attr-defined]
        yield client
    finally:
        await client.close()
        await server.stop()
        await store.close()


async def patch(api: TestClient, body, *, ctype: str = SMP["Content-Type"], path: str = PATH + "/ephemeralcontainers"):
    r = await api.patch(path, json=body, headers={"Content-Type": ctype})
    return r.status, await r.json()


async def test_discovery_lists_the_subresource_with_kubernetes_verbs(api):
    r = await api.get("/api/v1")
    entry = next(e for e in (await r.json())["resources"] if e["name"] == "pods/ephemeralcontainers")
    assert entry["kind"] == "Pod" and entry["namespaced"] is True
    assert sorted(entry["verbs"]) == ["get", "patch", "update"]


async def test_openapi_has_the_paths_the_official_client_calls(api):
    r = await api.get("/openapi/v3/api/v1")
    ops = (await r.json())["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/ephemeralcontainers"]
    assert {m: ops[m]["operationId"] for m in ("get", "put", "patch")} == {
        "get": "readCoreV1NamespacedPodEphemeralcontainers",
        "put": "replaceCoreV1NamespacedPodEphemeralcontainers",
        "patch": "patchCoreV1NamespacedPodEphemeralcontainers"}


async def test_kubectl_debug_patch_appends_a_defaulted_container(api):
    code, pod = await patch(api, KUBECTL_DEBUG_PATCH)
    assert code == 200, pod
    assert pod["kind"] == "Pod"
    (ec,) = pod["spec"]["ephemeralContainers"]
    assert ec["name"] == "dbg" and ec["targetContainerName"] == "app"
    assert ec["imagePullPolicy"] == "IfNotPresent" and ec["terminationMessagePath"] == "/dev/termination-log"
    r = await api.get(PATH + "/ephemeralcontainers")
    assert r.status == 200 and (await r.json())["spec"]["ephemeralContainers"][0]["name"] == "dbg"
    # A second one (kubectl then sends only the new element, with the order directive).
    second = debug_patch("dbg2")
    second["spec"]["$setElementOrder/ephemeralContainers"] = [{"name": "dbg"}, {"name": "dbg2"}]
    code, pod = await patch(api, second)
    assert code == 200, pod
    assert [c["name"] for c in pod["spec"]["ephemeralContainers"]] == ["dbg", "dbg2"]


async def test_only_ephemeral_containers_move_through_the_subresource(api):
    body = debug_patch("dbg")
    body["metadata"] = {"labels": {"sneaky": "yes"}}
    body["spec"]["containers"] = [{"name": "app", "image": "busybox:1.37"}]
    code, pod = await patch(api, body)
    assert code == 200, pod
    assert "sneaky" not in (pod["metadata"].get("labels") or {})
    assert pod["spec"]["containers"][0]["image"] == "busybox:1.36"
    assert [c["name"] for c in pod["spec"]["ephemeralContainers"]] == ["dbg"]


async def test_put_and_merge_and_json_patch(api):
    r = await api.get(PATH)
    pod = await r.json()
    pod["spec"]["ephemeralContainers"] = [{"name": "viaput", "image": "busybox:1.36", "command": ["true"]}]
    r = await api.put(PATH + "/ephemeralcontainers", json=pod)
    assert r.status == 200, await r.text()
    code, out = await patch(api, [{"op": "add", "path": "/spec/ephemeralContainers/-",
                                   "value": {"name": "viajson", "image": "busybox:1.36"}}],
                            ctype="application/json-patch+json")
    assert code == 200, out
    # A merge patch replaces the whole list: it must repeat the existing ones unchanged.
    merged = {"spec": {"ephemeralContainers": out["spec"]["ephemeralContainers"]
                       + [{"name": "viamerge", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
                           "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                           "resources": {}}]}}
    code, out = await patch(api, merged, ctype="application/merge-patch+json")
    assert code == 200, out
    assert [c["name"] for c in out["spec"]["ephemeralContainers"]] == ["viaput", "viajson", "viamerge"]


@pytest.mark.parametrize("extra,field,message", [
    ({"ports": [{"containerPort": 80}]}, "spec.ephemeralContainers[0].ports",
     "Forbidden: cannot be set for an Ephemeral Container"),
    ({"resources": {"limits": {"cpu": "1"}}}, "spec.ephemeralContainers[0].resources",
     "Forbidden: cannot be set for an Ephemeral Container"),
    ({"readinessProbe": {"exec": {"command": ["true"]}}}, "spec.ephemeralContainers[0].readinessProbe",
     "Forbidden: cannot be set for an Ephemeral Container"),
    ({"lifecycle": {"preStop": {"exec": {"command": ["true"]}}}}, "spec.ephemeralContainers[0].lifecycle",
     "Forbidden: cannot be set for an Ephemeral Container"),
    ({"targetContainerName": "nope"}, "spec.ephemeralContainers[0].targetContainerName", 'Not found: "nope"'),
])
async def test_refused_containers(api, extra, field, message):
    code, st = await patch(api, debug_patch("dbg", **extra))
    assert code == 422 and st["reason"] == "Invalid", st
    assert {"reason": st["details"]["causes"][0]["reason"], "field": field, "message": message} \
        in st["details"]["causes"]
    assert st["message"] == f'Pod "{POD}" is invalid: {field}: {message}'


@pytest.mark.parametrize("name", ["app", "setup"])
async def test_name_must_be_unique_across_all_containers(api, name):
    code, st = await patch(api, debug_patch(name))
    assert code == 422, st
    assert st["details"]["causes"] == [{"reason": "FieldValueDuplicate", "field": "spec.ephemeralContainers[0].name",
                                        "message": f'Duplicate value: "{name}"'}]


async def test_init_container_is_a_valid_target(api):
    code, st = await patch(api, debug_patch("dbg", targetContainerName="setup"))
    assert code == 200, st


async def test_existing_ones_may_not_change_or_go(api):
    assert (await patch(api, debug_patch("dbg")))[0] == 200
    code, st = await patch(api, debug_patch("dbg", image="busybox:1.37"))
    assert code == 422, st
    (cause,) = st["details"]["causes"]
    assert cause["field"] == "spec.ephemeralContainers" and cause["reason"] == "FieldValueForbidden"
    assert cause["message"].startswith('Forbidden: existing ephemeral containers "dbg" may not be changed\n')
    assert "busybox:1.37" in cause["message"]
    code, st = await patch(api, {"spec": {"ephemeralContainers": [{"name": "dbg", "$patch": "delete"}]}})
    assert code == 422, st
    assert st["details"]["causes"][0]["message"] == \
        'Forbidden: existing ephemeral containers "dbg" may not be removed\n'


async def test_a_plain_pod_write_may_not_touch_them(api):
    code, st = await patch(api, debug_patch("dbg"), path=PATH)
    assert code == 422, st
    assert st["details"]["causes"][0]["message"].startswith("Forbidden: pod updates may not change fields other than")
    r = await api.post(f"/api/v1/namespaces/{NS}/pods", json={
        "metadata": {"name": POD + "-2"},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}],
                 "ephemeralContainers": [{"name": "dbg", "image": "busybox:1.36"}]}})
    st = await r.json()
    assert r.status == 422 and {"reason": "FieldValueForbidden", "field": "spec.ephemeralContainers",
                                "message": "Forbidden: cannot be set on create"} in st["details"]["causes"]


async def test_status_keeps_ephemeral_container_statuses(api):
    assert (await patch(api, debug_patch("dbg")))[0] == 200
    status = {"status": {"phase": "Running", "ephemeralContainerStatuses": [{
        "name": "dbg", "image": "busybox:1.36", "imageID": "", "ready": False, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}, "lastState": {}}]}}
    code, pod = await patch(api, status, path=PATH + "/status", ctype="application/merge-patch+json")
    assert code == 200, pod
    assert pod["status"]["ephemeralContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


async def test_a_node_may_not_add_ephemeral_containers(api):
    server = api.app_server
    r = await api.post(PATH + "/binding", json={"apiVersion": "v1", "kind": "Binding", "metadata": {"name": POD},
                                                "target": {"kind": "Node", "name": "n1"}})
    assert r.status == 201, await r.text()
    server.authn.add("node-token-for-test", auth.User(auth.NODE_PREFIX + "n1", (auth.NODES,)))
    r = await api.patch(PATH + "/ephemeralcontainers", json=debug_patch("dbg"),
                        headers={**SMP, "Authorization": "Bearer node-token-for-test"})
    assert r.status == 403, await r.text()
    # ... though it writes the pod's status, and may patch the pod itself.
    r = await api.patch(PATH + "/status", json={"status": {"phase": "Running"}},
                        headers={"Content-Type": "application/merge-patch+json",
                                 "Authorization": "Bearer node-token-for-test"})
    assert r.status == 200, await r.text()
