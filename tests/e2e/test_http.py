"""Raw HTTP against the API server: error shapes, auth, watch semantics, durability."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
import urllib3

from tests.e2e.conftest import start_apiserver, stop_apiserver

pytestmark = pytest.mark.slow


class HTTP:
    def __init__(self, srv, token: str | None = "admin") -> None:
        self.srv = srv
        self.token = srv.token() if token == "admin" else token
        self.pool = urllib3.PoolManager(ca_certs=str(srv.data_dir / "ca.crt"), cert_reqs="CERT_REQUIRED")

    def __call__(self, method: str, path: str, body=None, *, ctype: str = "application/json",
                 raw: bytes | None = None, headers: dict | None = None, **kw):
        h = {"Content-Type": ctype, **(headers or {})}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        r = self.pool.request(method, self.srv.url + path, body=data, headers=h, timeout=urllib3.Timeout(30),
                              retries=False, **kw)
        return r.status, (json.loads(r.data) if r.data and r.headers.get("Content-Type", "").startswith("application/json") else r.data)


def cm(name: str, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_error_statuses(apiserver):
    http = HTTP(apiserver)
    code, body = http("POST", "/api/v1/namespaces/default/configmaps", raw=b"{not json")
    assert code == 400 and body["kind"] == "Status" and body["reason"] == "BadRequest"
    code, body = http("POST", "/api/v1/namespaces/default/configmaps", raw=b"x" * (3 * 1024 * 1024 + 10))
    assert code == 413 and body["reason"] == "RequestEntityTooLarge"
    code, body = http("GET", "/api/v1/widgets")
    assert code == 404 and body["kind"] == "Status"
    code, body = http("GET", "/apis/nope.example.com/v1/things")
    assert code == 404 and body["kind"] == "Status"
    code, body = http("POST", "/api/v1/namespaces/default/configmaps", {**cm("x"), "apiVersion": "apps/v1"})
    assert code == 400 and "apiVersion" in body["message"]
    code, body = http("POST", "/api/v1/namespaces/default/configmaps", {**cm("x"), "kind": "Secret"})
    assert code == 400
    code, body = http("POST", "/api/v1/namespaces/nowhere/configmaps", cm("x"))
    assert code == 404 and body["details"]["kind"] == "namespaces"
    code, body = http("POST", "/api/v1/namespaces/default/configmaps", cm("Bad_Name"))
    assert code == 422 and body["reason"] == "Invalid"
    assert any(c["field"] == "metadata.name" for c in body["details"]["causes"])
    code, body = http("POST", "/api/v1/namespaces/default/configmaps", cm("dup"))
    assert code == 201
    code, body = http("POST", "/api/v1/namespaces/default/configmaps", cm("dup"))
    assert code == 409 and body["reason"] == "AlreadyExists"
    code, body = http("PATCH", "/api/v1/namespaces/default/configmaps/dup", {"data": {"a": "b"}}, ctype="text/plain")
    assert code == 415 and body["reason"] == "UnsupportedMediaType"
    code, body = http("GET", "/api/v1/namespaces/default/configmaps?fieldSelector=spec.nodeName%3Dx")
    assert code == 400 and "field label not supported" in body["message"]
    code, body = http("GET", "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20(")
    assert code == 400


def test_json_documents_end_with_a_newline(apiserver):
    """Go's json.Encoder ends each document with "\\n"; clients print bodies verbatim (the Python
    client's FailToCreateError is compared byte for byte by its e2e suite)."""
    http = HTTP(apiserver)
    raw = {}
    for name, (method, path, body) in {
        "created": ("POST", "/api/v1/namespaces/default/configmaps", cm("nl")),
        "conflict": ("POST", "/api/v1/namespaces/default/configmaps", cm("nl")),
        "got": ("GET", "/api/v1/namespaces/default/configmaps/nl", None),
        "list": ("GET", "/api/v1/namespaces/default/configmaps", None),
        "page": ("GET", "/api/v1/namespaces/default/configmaps?limit=1", None),
    }.items():
        r = http.pool.request(method, apiserver.url + path, body=json.dumps(body).encode() if body else None,
                              headers={"Authorization": f"Bearer {http.token}", "Content-Type": "application/json"},
                              retries=False)
        raw[name] = r.data
    assert all(b.endswith(b"}\n") and b.count(b"\n") == 1 for b in raw.values()), raw
    assert raw["conflict"] == (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                               b'"message":"configmaps \\"nl\\" already exists","reason":"AlreadyExists",'
                               b'"details":{"name":"nl","kind":"configmaps"},"code":409}\n')


def test_yaml_body_and_generate_name(apiserver):
    http = HTTP(apiserver)
    code, body = http("POST", "/api/v1/namespaces/default/configmaps",
                      raw=b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: gen-\ndata:\n  k: v\n",
                      ctype="application/yaml")
    assert code == 201, body
    assert body["metadata"]["name"].startswith("gen-") and len(body["metadata"]["name"]) == 9
    assert body["metadata"]["uid"] and body["metadata"]["creationTimestamp"].endswith("Z")


def test_table_output(apiserver):
    http = HTTP(apiserver)
    code, body = http("GET", "/api/v1/namespaces", headers={
        "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
    assert code == 200 and body["kind"] == "Table"
    assert [c["name"] for c in body["columnDefinitions"]] == ["Name", "Status", "Age"]
    names = [r["cells"][0] for r in body["rows"]]
    assert {"default", "kube-system", "kube-node-lease", "kube-public"} <= set(names)
    assert body["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_service_allocation_no_collisions(apiserver):
    http = HTTP(apiserver)
    ips, ports = set(), set()
    for i in range(20):
        code, body = http("POST", "/api/v1/namespaces/default/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"alloc-{i}"},
            "spec": {"type": "NodePort", "selector": {"a": "b"}, "ports": [{"port": 80}]}})
        assert code == 201, body
        ips.add(body["spec"]["clusterIP"])
        ports.add(body["spec"]["ports"][0]["nodePort"])
    assert len(ips) == 20 and len(ports) == 20
    taken = next(iter(ports))
    code, body = http("POST", "/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "alloc-clash"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": taken}]}})
    assert code == 422 and "already allocated" in body["message"]
    code, body = http("POST", "/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "alloc-dns"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 53, "protocol": "UDP"}]}})
    assert code == 201 and body["spec"]["clusterIP"] == "10.96.0.10"
    code, body = http("POST", "/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "alloc-out"},
        "spec": {"clusterIP": "192.168.0.1", "ports": [{"port": 53}]}})
    assert code == 422 and "valid range" in body["message"]


def test_node_identity_is_limited(apiserver):
    anon = HTTP(apiserver, token=None)
    code, body = anon("GET", "/api/v1/nodes")
    assert code == 401
    boot = HTTP(apiserver, token=apiserver.bootstrap_token())
    code, body = boot("GET", "/api/v1/pods")
    assert code == 403
    code, body = boot("POST", "/kubepy/v1/join", {"nodeName": "worker-1"})
    assert code == 201, body
    node = HTTP(apiserver, token=body["token"])
    # A name joins once: the node's token is never handed out again, not even to the admin.
    for who in (boot, HTTP(apiserver)):
        code, again = who("POST", "/kubepy/v1/join", {"nodeName": "worker-1"})
        assert code == 409 and 'node "worker-1"' in again["message"], again
        assert body["token"] not in json.dumps(again)
    n = lambda name: {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}  # noqa: E731
    assert node("POST", "/api/v1/nodes", n("worker-1"))[0] == 201
    assert node("POST", "/api/v1/nodes", n("worker-2"))[0] == 403
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "worker-1"},
             "spec": {"holderIdentity": "worker-1", "leaseDurationSeconds": 40}}
    assert node("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)[0] == 201
    assert node("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {**lease, "metadata": {"name": "worker-2"}})[0] == 403
    admin = HTTP(apiserver)
    for name, nn in (("mine", "worker-1"), ("theirs", "worker-2")):
        code, _ = admin("POST", "/api/v1/namespaces/default/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": nn, "containers": [{"name": "c", "image": "busybox"}]}})
        assert code == 201
    patch = {"status": {"phase": "Running"}}
    assert node("PATCH", "/api/v1/namespaces/default/pods/mine/status", patch,
                ctype="application/merge-patch+json")[0] == 200
    assert node("PATCH", "/api/v1/namespaces/default/pods/theirs/status", patch,
                ctype="application/merge-patch+json")[0] == 403
    assert node("GET", "/api/v1/pods")[0] == 200
    assert node("POST", "/api/v1/namespaces/default/configmaps", cm("nope"))[0] == 403


def _watch_lines(http: HTTP, path: str, n: int, timeout: float = 10, until=lambda ev: False) -> list[dict]:
    r = http.pool.request("GET", http.srv.url + path, headers={"Authorization": f"Bearer {http.token}"},
                          preload_content=False, timeout=urllib3.Timeout(connect=5, read=timeout))
    out: list[dict] = []
    buf = b""
    try:
        for chunk in r.stream(1024):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                out.append(json.loads(line))
                if len(out) >= n or until(out[-1]):
                    return out
    finally:
        r.release_conn()
    return out


def test_watch_from_resource_version_and_bookmarks(apiserver):
    http = HTTP(apiserver)
    code, body = http("GET", "/api/v1/namespaces/default/configmaps")
    rv = body["metadata"]["resourceVersion"]
    for i in range(3):
        assert http("POST", "/api/v1/namespaces/default/configmaps", cm(f"rv-{i}"))[0] == 201
    events = _watch_lines(http, f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}", 3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "rv-0"), ("ADDED", "rv-1"), ("ADDED", "rv-2")]
    revs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert revs == sorted(revs) and revs[0] > int(rv)
    # Initial state + bookmark marking its end, as the WatchList protocol asks.
    events = _watch_lines(http, "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true"
                          "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&labelSelector=", 1000, timeout=5,
                          until=lambda ev: ev["type"] == "BOOKMARK")
    kinds = [e["type"] for e in events]
    assert "BOOKMARK" in kinds
    b = events[kinds.index("BOOKMARK")]
    assert b["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"


def test_watch_from_compacted_revision_is_410():
    tmp = Path(tempfile.mkdtemp(prefix="kubepy-test-"))
    srv = start_apiserver(tmp, extra=["--etcd-compaction-interval", "1s"])
    try:
        http = HTTP(srv)
        first = http("GET", "/api/v1/namespaces/default/configmaps")[1]["metadata"]["resourceVersion"]
        for i in range(30):
            http("POST", "/api/v1/namespaces/default/configmaps", cm(f"c-{i}"))
        time.sleep(3)  # two compaction rounds pass
        events = _watch_lines(http, "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1", 1)
        assert events and events[0]["type"] == "ERROR", events
        assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
        code, body = http("GET", f"/api/v1/namespaces/default/configmaps?resourceVersion={first}&resourceVersionMatch=Exact")
        assert code == 410
    finally:
        stop_apiserver(srv)
        shutil.rmtree(tmp, ignore_errors=True)


def test_kill_9_loses_nothing_committed():
    """Every create the server answered 201 is there after kill -9 and restart."""
    tmp = Path(tempfile.mkdtemp(prefix="kubepy-test-"))
    srv = start_apiserver(tmp)
    acked: list[str] = []
    try:
        http = HTTP(srv)
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set():
                try:
                    code, _ = http("POST", "/api/v1/namespaces/default/configmaps", cm(f"k9-{i}", n=str(i)))
                except Exception:
                    return
                if code == 201:
                    acked.append(f"k9-{i}")
                i += 1

        threads = [threading.Thread(target=writer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        srv.kill9()
        stop.set()
        for t in threads:
            t.join(10)
        assert len(acked) > 20
        srv = start_apiserver(tmp, port=srv.port)
        http = HTTP(srv)
        code, body = http("GET", "/api/v1/namespaces/default/configmaps?labelSelector=")
        present = {i["metadata"]["name"] for i in body["items"]}
        missing = [n for n in acked if n not in present]
        assert not missing, f"{len(missing)} acknowledged writes lost: {missing[:5]}"
    finally:
        stop_apiserver(srv)
        shutil.rmtree(tmp, ignore_errors=True)


_POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"},
        "spec": {"containers": [{"name": "c", "image": "x"}]}}
_C = _POD["spec"]["containers"][0]
MALFORMED = {
    "metadata is a list": {**_POD, "metadata": []},
    "spec is a string": {**_POD, "spec": "x"},
    "containers is a map": {**_POD, "spec": {"containers": {"name": "c"}}},
    "label value is a number": {**_POD, "metadata": {"name": "bad", "labels": {"a": 1}}},
    "name is a number": {**_POD, "metadata": {"name": 5}},
    "container is a string": {**_POD, "spec": {"containers": ["x"]}},
    "resources is a list": {**_POD, "spec": {"containers": [{**_C, "resources": [1]}]}},
    "quantity is junk": {**_POD, "spec": {"containers": [{**_C, "resources": {"limits": {"cpu": "lots"}}}]}},
    "ports is a string": {**_POD, "spec": {"containers": [{**_C, "ports": "80"}]}},
    "env entry is null": {**_POD, "spec": {"containers": [{**_C, "env": [None]}]}},
    "finalizers is a string": {**_POD, "metadata": {"name": "bad", "finalizers": "x"}},
    "grace period is a string": {**_POD, "spec": {"containers": [_C], "terminationGracePeriodSeconds": "x"}},
    "the body is a list": [1, 2],
    "the body is null": None,
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_objects_are_4xx_and_stored_nowhere(apiserver, case):
    http = HTTP(apiserver)
    code, body = http("POST", "/api/v1/namespaces/default/pods", MALFORMED[case])
    assert code in (400, 422), body
    assert body["kind"] == "Status" and body["code"] == code
    assert http("GET", "/api/v1/namespaces/default/pods/bad")[0] == 404


def test_deeply_nested_body_is_400(apiserver):
    code, body = HTTP(apiserver)("POST", "/api/v1/namespaces/default/pods",
                                 raw=b'{"a":' * 20000 + b"1" + b"}" * 20000)
    assert code == 400 and body["reason"] == "BadRequest"
