"""The dashboard's backend in process: it forwards the user's own token (and no credential of its
own) to a real API server, so RBAC decides; it answers 401 itself without a token; watches and
followed logs stream through it; it serves its views with their content types under a strict
Content-Security-Policy; and it splits pasted manifests without touching the cluster.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from kubepy.api import certs
from kubepy.api.server import APIServer, ServerConfig
from kubepy.dashboard.proxy import refusal, subresource
from kubepy.dashboard.server import STATIC_DIR, DashboardConfig, ManifestError, make_app, parse_manifest
from kubepy.store.base import open_store

USERS = {"admin": "system:masters", "viewer": ""}
RBAC = "/apis/rbac.authorization.k8s.io/v1"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


def _auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer tok-{who}"}


@dataclass
class Cluster:
    api: TestClient          # straight to the API server (the test's own admin requests)
    dash: TestClient         # through the dashboard

    async def admin(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        resp = await self.api.request(method, path, json=body, headers=_auth("admin"))
        out = await resp.json()
        assert resp.status in (200, 201), f"{method} {path}: {resp.status} {out}"
        return out


async def _dashboard(server: str) -> TestClient:
    client = TestClient(TestServer(make_app(DashboardConfig(server=server)), handler_cancellation=True))
    await client.start_server()
    return client


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    with (tmp_path / "tokens.csv").open("w") as f:
        for who, groups in USERS.items():
            csv.writer(f).writerow([f"tok-{who}", who, who, groups])
    certs.ensure_ca(tmp_path)
    store = open_store("sqlite", data_dir=str(tmp_path))
    server = APIServer(store, ServerConfig(data_dir=tmp_path))
    await server.start()
    api = TestClient(TestServer(server.app()))
    await api.start_server()
    dash = await _dashboard(str(api.make_url("")).rstrip("/"))
    c = Cluster(api, dash)
    try:
        # viewer may read Deployments in default, nothing more (as a ServiceAccount bound to `view` may not scale).
        await c.admin("POST", f"{RBAC}/namespaces/default/roles", {
            "metadata": {"name": "read-deployments", "namespace": "default"},
            "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]}]})
        await c.admin("POST", f"{RBAC}/namespaces/default/rolebindings", {
            "metadata": {"name": "viewer", "namespace": "default"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-deployments"},
            "subjects": [{"kind": "User", "name": "viewer", "apiGroup": "rbac.authorization.k8s.io"}]})
        await c.admin("POST", DEPLOYMENTS, {
            "metadata": {"name": "web"}, "spec": {
                "replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}})
        yield c
    finally:
        await dash.close()
        await api.close()
        await server.stop()
        await store.close()


# -- forwarding, with the user's rights --------------------------------------------------------------

async def test_the_users_token_decides_what_the_dashboard_may_do(cluster: Cluster) -> None:
    resp = await cluster.dash.get(DEPLOYMENTS, headers=_auth("viewer"))
    assert resp.status == 200, await resp.text()
    assert [d["metadata"]["name"] for d in (await resp.json())["items"]] == ["web"]
    # viewer may not scale: the API server's own 403 Status reaches the browser unchanged.
    resp = await cluster.dash.patch(f"{DEPLOYMENTS}/web/scale", data=json.dumps({"spec": {"replicas": 3}}),
                                    headers={**_auth("viewer"), "Content-Type": "application/merge-patch+json"})
    body = await resp.json()
    assert resp.status == 403, body
    assert body["kind"] == "Status" and body["reason"] == "Forbidden"
    assert 'User "viewer" cannot patch resource "deployments/scale"' in body["message"], body["message"]
    # The admin's token may, through the same dashboard.
    resp = await cluster.dash.patch(f"{DEPLOYMENTS}/web/scale", data=json.dumps({"spec": {"replicas": 3}}),
                                    headers={**_auth("admin"), "Content-Type": "application/merge-patch+json"})
    assert resp.status == 200, await resp.text()
    assert (await cluster.admin("GET", f"{DEPLOYMENTS}/web"))["spec"]["replicas"] == 3


async def test_no_token_is_401_from_the_dashboard_itself_and_never_reaches_the_api_server() -> None:
    seen: list[dict[str, str]] = []

    async def upstream(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"kind": "NamespaceList", "items": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream)
    fake = TestClient(TestServer(app))
    await fake.start_server()
    dash = await _dashboard(str(fake.make_url("")).rstrip("/"))
    try:
        for headers in ({}, {"Authorization": "Basic YWRtaW46YWRtaW4="}, {"Authorization": "Bearer "}):
            resp = await dash.get("/api/v1/namespaces", headers=headers)
            body = await resp.json()
            assert resp.status == 401, body
            assert body["kind"] == "Status" and "log in" in body["message"]
        assert seen == []
        # With a token: exactly the user's Authorization goes upstream; cookies and impersonation do not.
        resp = await dash.get("/api/v1/namespaces", headers={
            "Authorization": "Bearer user-token", "Cookie": "session=x", "Impersonate-User": "admin",
            "Accept": "application/json"})
        assert resp.status == 200
        [sent] = seen
        assert sent["Authorization"] == "Bearer user-token"
        assert not {"Cookie", "Impersonate-User"} & set(sent), sent
        assert sent["User-Agent"] == "kubepy-dashboard"
    finally:
        await dash.close()
        await fake.close()


async def test_what_would_run_with_the_dashboards_origin_is_refused_unforwarded(cluster: Cluster) -> None:
    for path in ("/api/v1/namespaces/default/pods/p/proxy/", "/api/v1/namespaces/default/services/s:80/proxy/x",
                 "/api/v1/nodes/n1/proxy/metrics", "/api/v1/namespaces/default/pods/p/exec",
                 "/api/v1/namespaces/default/pods/p/portforward", "/api/v1/proxy/namespaces/default/pods/p"):
        resp = await cluster.dash.get(path, headers=_auth("admin"))
        body = await resp.json()
        assert resp.status == 403, (path, body)
        assert "does not forward" in body["message"], body
    # Only the API's paths are forwarded.
    resp = await cluster.dash.get("/apisx/whatever", headers=_auth("admin"))
    assert resp.status == 404


@pytest.mark.parametrize(("path", "sub"), [
    ("/api/v1/namespaces/default/pods/p/log", "log"),
    ("/api/v1/namespaces/default/pods/p", None),
    ("/api/v1/namespaces/proxy/pods", None),             # a namespace named "proxy" is no subresource
    ("/api/v1/namespaces/default/status", "status"),     # the namespace's own subresource
    ("/api/v1/namespaces/default", None),
    ("/apis/apps/v1/namespaces/default/deployments/web/scale", "scale"),
    ("/api/v1/nodes/n1/proxy/metrics", "proxy"),
    ("/api/v1/proxy/nodes/n1", "proxy"),
    ("/version", None),
])
def test_subresource(path: str, sub: str | None) -> None:
    assert subresource(path) == sub


def test_refusal() -> None:
    assert refusal("GET", "/api/v1/pods") is None
    assert refusal("CONNECT", "/api/v1/pods")
    assert refusal("GET", "/metrics")
    assert "attach" in (refusal("POST", "/api/v1/namespaces/a/pods/p/attach") or "")


async def test_a_watch_streams_through_the_dashboard(cluster: Cluster) -> None:
    listed = await (await cluster.dash.get("/api/v1/namespaces/default/configmaps", headers=_auth("admin"))).json()
    rv = listed["metadata"]["resourceVersion"]
    resp = await cluster.dash.get(f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}",
                                  headers=_auth("admin"))
    assert resp.status == 200
    assert resp.headers["Content-Security-Policy"].startswith("sandbox")
    for name in ("one", "two"):
        await cluster.admin("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": name}})
        async with asyncio.timeout(10):   # each event arrives while the stream stays open
            line = await resp.content.readline()
        event = json.loads(line)
        assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", name)
    resp.close()


async def test_several_watches_share_one_stream_each_with_the_users_rights(cluster: Cluster) -> None:
    from urllib.parse import urlencode

    rv = (await cluster.admin("GET", "/api/v1/namespaces/default/configmaps"))["metadata"]["resourceVersion"]
    targets = [f"{DEPLOYMENTS}?resourceVersion={rv}", f"/api/v1/namespaces/default/pods?resourceVersion={rv}"]
    resp = await cluster.dash.get("/dashboard/watch?" + urlencode([("w", t) for t in targets]),
                                  headers=_auth("viewer"))
    assert resp.status == 200
    # viewer may watch Deployments but not Pods: the pods watch is refused with the API server's 403 ...
    async with asyncio.timeout(10):
        refused = json.loads(await resp.content.readline())
    assert (refused["i"], refused["code"]) == (1, 403), refused
    assert 'cannot watch resource "pods"' in refused["error"]["message"], refused
    # ... and the Deployments watch goes on delivering in the same stream.
    web_ = await cluster.admin("GET", f"{DEPLOYMENTS}/web")
    web_["metadata"]["labels"] = {"touched": "yes"}
    await cluster.admin("PUT", f"{DEPLOYMENTS}/web", web_)
    async with asyncio.timeout(10):
        event = json.loads(await resp.content.readline())
    assert event["i"] == 0 and event["event"]["type"] == "MODIFIED", event
    assert event["event"]["object"]["metadata"]["labels"] == {"touched": "yes"}
    resp.close()
    # A watch that ends says so (here its timeoutSeconds).
    resp = await cluster.dash.get("/dashboard/watch?" + urlencode([("w", f"{DEPLOYMENTS}?resourceVersion={rv}&"
                                                                          "timeoutSeconds=1")]), headers=_auth("admin"))
    async with asyncio.timeout(10):
        lines = [json.loads(line) for line in (await resp.read()).splitlines()]
    assert lines[-1] == {"i": 0, "end": True}, lines


async def test_the_watch_stream_refuses_what_the_proxy_refuses(cluster: Cluster) -> None:
    assert (await cluster.dash.get("/dashboard/watch?w=/api/v1/pods")).status == 401
    for w in ("", "https://evil.example/api/v1/pods", "/api/v1/namespaces/a/pods/p/proxy/", "/metrics"):
        resp = await cluster.dash.get("/dashboard/watch" + (f"?w={w}" if w else ""), headers=_auth("admin"))
        assert resp.status == 400, (w, await resp.text())


async def test_a_watch_refused_by_rbac_is_the_api_servers_403(cluster: Cluster) -> None:
    resp = await cluster.dash.get("/api/v1/namespaces/default/pods?watch=1", headers=_auth("viewer"))
    body = await resp.json()
    assert resp.status == 403 and body["reason"] == "Forbidden", body
    assert 'cannot watch resource "pods"' in body["message"], body


async def test_an_unreachable_api_server_is_a_502_status_naming_it() -> None:
    dash = await _dashboard("http://127.0.0.1:9")
    try:
        resp = await dash.get("/api/v1/pods", headers={"Authorization": "Bearer t"})
        body = await resp.json()
        assert resp.status == 502 and "http://127.0.0.1:9" in body["message"], body
    finally:
        await dash.close()


# -- the views ----------------------------------------------------------------------------------------

async def test_static_files_with_their_content_types_and_a_strict_csp(cluster: Cluster) -> None:
    resp = await cluster.dash.get("/")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    html = await resp.text()
    # CSP-friendly: every script is a file of ours, no inline code or style, nothing from elsewhere.
    assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="/static/js/main.js">']
    assert not re.search(r"\sstyle=|\son[a-z]+=|<style|https?://", html)
    for path, ctype in (("/static/js/main.js", "text/javascript"), ("/static/app.css", "text/css"),
                        ("/static/icon.svg", "image/svg+xml")):
        resp = await cluster.dash.get(path)
        assert resp.status == 200, path
        assert resp.headers["Content-Type"].startswith(ctype), (path, resp.headers["Content-Type"])
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/nope.js", "/static/js"):
        assert (await cluster.dash.get(path)).status == 404, path


def test_every_module_the_views_import_is_there_and_none_is_fetched_from_elsewhere() -> None:
    js = STATIC_DIR / "js"
    exports: dict[str, set[str]] = {}
    for f in js.glob("*.js"):
        text = f.read_text()
        exports[f.name] = set(re.findall(r"export (?:async )?(?:function\*?|class|const|let) (\w+)", text))
    for f in js.glob("*.js"):
        text = f.read_text()
        assert "innerHTML" not in text and "eval(" not in text and "document.write" not in text, f.name
        for names, target in re.findall(r'import \{([^}]*)\} from "([^"]+)"', text):
            assert target.startswith("./"), (f.name, target)
            assert (js / target).is_file(), (f.name, target)
            for name in (n.strip() for n in names.split(",") if n.strip()):
                assert name in exports[target[2:]], f"{f.name} imports {name} that {target} does not export"
        for target in re.findall(r'import \* as \w+ from "([^"]+)"', text):
            assert (js / target).is_file(), (f.name, target)


async def test_manifest_endpoint_splits_yaml_into_objects(cluster: Cluster) -> None:
    text = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n"
            "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n")
    resp = await cluster.dash.post("/dashboard/manifest", data=text)
    assert resp.status == 200
    assert [(o["kind"], o["metadata"]["name"]) for o in await resp.json()] == [("ConfigMap", "a"), ("Secret", "b")]
    resp = await cluster.dash.post("/dashboard/manifest", data="kind: ConfigMap\nmetadata: {name: a}\n")
    body = await resp.json()
    assert resp.status == 400 and "apiVersion and kind" in body["message"], body


@pytest.mark.parametrize(("text", "why"), [
    ("a: [1, 2", "not valid YAML"),
    ("- 1\n- 2\n", "not an object"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "metadata.name is required"),
    ("", "holds no object"),
    ("x: &a [1]\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: *a}\n", "aliases are not accepted"),
])
def test_parse_manifest_refuses(text: str, why: str) -> None:
    with pytest.raises(ManifestError, match=why):
        parse_manifest(text)


# -- how the control plane runs it ------------------------------------------------------------------

def test_controlplane_runs_the_dashboard_with_no_credentials_of_its_own(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from kubepy import cli, controlplane

    seen: dict[str, Any] = {}

    def fake_run(api: list[str], sched: list[str], cm: list[str], *, data_dir: Path, port: int, **rest: Any) -> int:
        seen.update(rest)
        return 0

    monkeypatch.setattr(controlplane, "run_controlplane", fake_run)
    args = cli.build_parser().parse_args(["controlplane", "--data-dir", str(tmp_path), "--port", "7443",
                                          "--advertise-address", "10.0.0.1"])
    assert args.func(args) == 0
    argv = seen["dashboard_argv"]
    d = cli.build_parser().parse_args([str(a) for a in argv[argv.index("dashboard"):]])
    assert (d.server, d.ca, d.bind_address, d.port) == ("https://127.0.0.1:7443", tmp_path / "ca.crt", "10.0.0.1", 8443)
    assert (d.tls_cert_file, d.tls_private_key_file) == (tmp_path / "dashboard-serving.crt",
                                                         tmp_path / "dashboard-serving.key")
    assert d.kubeconfig is None and not any("kubeconfig" in str(a) or "token" in str(a) for a in argv), argv
    for extra in (["--dashboard-port", "0"], []):   # no port, or no advertised address: no dashboard
        args = cli.build_parser().parse_args(["controlplane", "--data-dir", str(tmp_path), *extra,
                                              *(["--advertise-address", "10.0.0.1"] if extra else [])])
        assert args.func(args) == 0 and seen["dashboard_argv"] is None


def test_kubeconfig_gives_the_dashboard_only_the_server_and_its_ca(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from kubepy import cli

    ca = certs.ensure_ca(tmp_path)[0]
    from cryptography.hazmat.primitives import serialization

    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    certs.write_kubeconfig(tmp_path / "admin.kubeconfig", certs.kubeconfig(server="https://10.0.0.1:6443",
                                                                           ca_pem=ca_pem, token="secret-admin-token"))
    crt, key = certs.ensure_serving_cert(tmp_path, ["10.0.0.1"], name="dashboard-serving")
    got: dict[str, Any] = {}

    async def fake_run(config: DashboardConfig) -> None:
        got["config"] = config

    monkeypatch.setattr("kubepy.dashboard.server.run_dashboard", fake_run)
    monkeypatch.setattr(cli, "_with_health", lambda coro, args: coro)
    args = cli.build_parser().parse_args(["dashboard", "--kubeconfig", str(tmp_path / "admin.kubeconfig"),
                                          "--tls-cert", str(crt), "--tls-key", str(key), "--port", "0"])
    assert args.func(args) == 0
    config = got["config"]
    assert (config.server, config.ca_pem) == ("https://10.0.0.1:6443", ca_pem)
    assert "secret-admin-token" not in repr(vars(config))
