"""The aggregation layer in process: an APIService sends /apis/<group>/<version> to a test backend on loopback.

The backend is HTTPS with a certificate for ``kptest-metrics.default.svc`` from a CA made here, and
authenticates the proxy as metrics-server does (``RequestHeaderAuth`` from the API server's
``extension-apiserver-authentication`` ConfigMap). Covers: the Available condition's reasons
(ServiceNotFound, MissingEndpoints, FailedDiscoveryCheck, Passed), merged discovery, the proxied
request's identity headers (and the caller's own credentials never passed on), 503 when unavailable,
insecureSkipTLSVerify, and APIService validation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from kubepy import tlsclientauth
from kubepy.api import auth
from kubepy.api.server import APIServer, ServerConfig
from kubepy.kinds import by_plural
from kubepy.metricsserver.server import RequestHeaderAuth
from kubepy.store.base import open_store
from tests.api.test_semantics import call
from tests.api.test_webhooks import make_ca_and_cert

APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"
SERVICES = "/api/v1/namespaces/default/services"
SERVICE = {"metadata": {"name": "kptest-metrics"},
           "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}], "clusterIP": "None"}}


@dataclass
class Backend:
    port: int = 0
    ca_bundle: str = ""
    auth: RequestHeaderAuth | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        caller = self.auth.from_proxy(der, request.headers) if der and self.auth else None
        self.seen.append({"path": request.path_qs, "caller": caller, "headers": dict(request.headers)})
        if caller is None:
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        if request.path == "/apis/kptest.example.com/v1":
            return web.json_response({"kind": "APIResourceList", "apiVersion": "v1",
                                      "groupVersion": "kptest.example.com/v1", "resources": [
                                          {"name": "widgets", "singularName": "", "namespaced": True,
                                           "kind": "Widget", "verbs": ["get", "list"]}]})
        return web.json_response({"kind": "WidgetList", "apiVersion": "kptest.example.com/v1",
                                  "metadata": {}, "items": [], "asked": request.path_qs})


@dataclass
class Env:
    api: TestClient
    server: APIServer
    backend: Backend

    async def available(self, name: str, reason: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until the APIService's Available condition has ``reason``."""
        cond: dict[str, Any] = {}
        for _ in range(int(timeout / 0.05)):
            obj = await call(self.api, "GET", f"{APISERVICES}/{name}")
            cond = next((c for c in (obj.get("status") or {}).get("conditions") or []
                         if c["type"] == "Available"), {})
            if cond.get("reason") == reason:
                return cond
            self.server.aggregator._changed.set()  # type: ignore[union-attr]  # check again now
            await asyncio.sleep(0.05)
        raise AssertionError(f"{name}: Available is {cond}, never reason {reason}")

    async def endpoints(self, *ports: int) -> None:
        # Endpoints may not hold loopback addresses; the backend lives on loopback, so they are written
        # to the store directly (the aggregator reads them from there, as it would any other).
        key = by_plural("endpoints").key("default", "kptest-metrics")
        body = json.dumps({"apiVersion": "v1", "kind": "Endpoints",
                           "metadata": {"name": "kptest-metrics", "namespace": "default", "uid": "e1"},
                           "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                                        "ports": [{"name": "https", "port": port}]} for port in ports]}).encode()
        kv = await self.server.store.get(key)
        if kv is None:
            await self.server.store.create(key, body)
        else:
            await self.server.store.update(key, body, revision=kv.mod_revision)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    data = tmp_path / "api"
    data.mkdir()
    store = open_store("sqlite", data_dir=str(data))
    server = APIServer(store, ServerConfig(data_dir=data))
    await server.start()
    token = auth.token_for(auth.load_or_create_static_tokens(data), group=auth.MASTERS)
    client = TestClient(TestServer(server.app()), headers={"Authorization": f"Bearer {token}"})
    await client.start_server()
    cm = await call(client, "GET", "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication")
    ca, cert, key = make_ca_and_cert(dns=["kptest-metrics.default.svc"], ips=["127.0.0.1"])
    (tmp_path / "b.crt").write_bytes(cert)
    (tmp_path / "b.key").write_bytes(key)
    backend = Backend(ca_bundle=base64.b64encode(ca).decode(), auth=RequestHeaderAuth(cm["data"]))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "b.crt", tmp_path / "b.key")
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cadata=backend.auth.pem())  # type: ignore[union-attr]
    tlsclientauth.request_client_certificates(ctx)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", backend.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    backend.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Env(client, server, backend)
    finally:
        await client.close()
        await server.stop()
        await store.close()
        await runner.cleanup()


def apiservice(ca_bundle: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1.kptest.example.com"},
            "spec": {"group": "kptest.example.com", "version": "v1", "caBundle": ca_bundle,
                     "service": {"namespace": "default", "name": "kptest-metrics", "port": 443},
                     "groupPriorityMinimum": 100, "versionPriority": 100, **spec}}


async def test_an_apiservice_is_available_proxied_and_in_discovery(env: Env) -> None:
    await call(env.api, "POST", APISERVICES, apiservice(env.backend.ca_bundle), status=201)
    cond = await env.available("v1.kptest.example.com", "ServiceNotFound")
    assert (cond["status"], cond["message"]) == ("False", 'service/kptest-metrics in "default" is not present')
    # Not available: the API server answers for it, the backend never sees the request.
    body = await call(env.api, "GET", "/apis/kptest.example.com/v1/widgets", status=503)
    assert body["message"] == "service unavailable" and env.backend.seen == []
    await call(env.api, "POST", SERVICES, SERVICE, status=201)
    cond = await env.available("v1.kptest.example.com", "EndpointsNotFound")
    assert cond["message"] == 'cannot find endpoints for service/kptest-metrics in "default"'
    await env.endpoints(env.backend.port)
    cond = await env.available("v1.kptest.example.com", "Passed")
    assert (cond["status"], cond["message"]) == ("True", "all checks passed")
    # Discovery: /apis lists the group, /apis/<group> is answered here, the version's resources by the backend.
    groups = await call(env.api, "GET", "/apis")
    assert {"name": "kptest.example.com", "versions": [{"groupVersion": "kptest.example.com/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "kptest.example.com/v1", "version": "v1"}} in groups["groups"]
    group = await call(env.api, "GET", "/apis/kptest.example.com")
    assert group["kind"] == "APIGroup" and group["preferredVersion"]["version"] == "v1"
    resources = await call(env.api, "GET", "/apis/kptest.example.com/v1")
    assert [r["name"] for r in resources["resources"]] == ["widgets"]
    # A request goes through with who asked in the front-proxy headers, never the caller's own token.
    env.backend.seen.clear()
    got = await call(env.api, "GET", "/apis/kptest.example.com/v1/namespaces/ns1/widgets",
                     labelSelector="app=web")
    assert got["asked"] == "/apis/kptest.example.com/v1/namespaces/ns1/widgets?labelSelector=app%3Dweb"
    [seen] = env.backend.seen
    assert seen["caller"].name == "admin"
    assert auth.MASTERS in seen["caller"].groups and "system:authenticated" in seen["caller"].groups
    assert "Authorization" not in seen["headers"]


async def test_impersonated_callers_reach_the_backend_as_themselves(env: Env) -> None:
    await call(env.api, "POST", SERVICES, SERVICE, status=201)
    await env.endpoints(env.backend.port)
    await call(env.api, "POST", APISERVICES, apiservice(env.backend.ca_bundle), status=201)
    await env.available("v1.kptest.example.com", "Passed")
    env.backend.seen.clear()
    resp = await env.api.get("/apis/kptest.example.com/v1/widgets",
                             headers={"Impersonate-User": "jane", "Impersonate-Group": "kptest-viewers"})
    # jane has no RBAC for the group: the API server refuses before proxying, in upstream's words.
    assert resp.status == 403
    body = await resp.json()
    assert body["message"] == ('widgets.kptest.example.com is forbidden: User "jane" cannot list resource '
                               '"widgets" in API group "kptest.example.com" at the cluster scope')
    assert env.backend.seen == []
    await call(env.api, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", {
        "metadata": {"name": "kptest-widgets"},
        "rules": [{"apiGroups": ["kptest.example.com"], "resources": ["widgets"], "verbs": ["list"]}]}, status=201)
    await call(env.api, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
        "metadata": {"name": "kptest-widgets"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kptest-widgets"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "jane"}]}, status=201)
    for _ in range(100):
        resp = await env.api.get("/apis/kptest.example.com/v1/widgets",
                                 headers={"Impersonate-User": "jane", "Impersonate-Group": "kptest-viewers"})
        if resp.status == 200:
            break
        await asyncio.sleep(0.05)
    assert resp.status == 200
    [seen] = env.backend.seen
    assert seen["caller"].name == "jane" and "kptest-viewers" in seen["caller"].groups
    assert not any(h.lower().startswith("impersonate-") for h in seen["headers"])



async def test_a_callers_extra_reaches_the_backend_whatever_its_keys(env: Env) -> None:
    """A service account's token carries ``authentication.kubernetes.io/credential-id``: "/" may not
    stand in a header name, so the key travels percent-encoded (an aiohttp backend refused the
    whole request with 400 "Invalid header token" before: the HPA controller's PodMetrics)."""
    await call(env.api, "POST", SERVICES, SERVICE, status=201)
    await env.endpoints(env.backend.port)
    await call(env.api, "POST", APISERVICES, apiservice(env.backend.ca_bundle), status=201)
    await env.available("v1.kptest.example.com", "Passed")
    env.backend.seen.clear()
    resp = await env.api.get("/apis/kptest.example.com/v1/widgets", headers=[
        ("Impersonate-User", "system:serviceaccount:kube-system:kptest"), ("Impersonate-Group", auth.MASTERS),
        ("Impersonate-Extra-authentication.kubernetes.io%2Fcredential-id", "JTI=kptest-1"),
        ("Impersonate-Extra-scopes", "a"), ("Impersonate-Extra-scopes", "b")])
    assert resp.status == 200, await resp.text()
    [seen] = env.backend.seen
    assert dict(seen["caller"].extra) == {"authentication.kubernetes.io/credential-id": ("JTI=kptest-1",),
                                          "scopes": ("a", "b")}
    assert "X-Remote-Extra-authentication.kubernetes.io%2Fcredential-id" in seen["headers"]

async def test_a_backend_that_fails_is_unavailable_and_answers_503(env: Env) -> None:
    await call(env.api, "POST", SERVICES, SERVICE, status=201)
    await env.endpoints(env.backend.port)
    # A CA that did not sign the backend's certificate: the discovery check fails on TLS.
    other_ca, _, _ = make_ca_and_cert(dns=["x"], ips=[])
    await call(env.api, "POST", APISERVICES, apiservice(base64.b64encode(other_ca).decode()), status=201)
    cond = await env.available("v1.kptest.example.com", "FailedDiscoveryCheck")
    assert cond["status"] == "False"
    assert cond["message"].startswith(f"failing or missing response from https://127.0.0.1:{env.backend.port}"
                                      "/apis/kptest.example.com/v1")
    assert "certificate verify failed" in cond["message"]
    await call(env.api, "GET", "/apis/kptest.example.com/v1/widgets", status=503)
    # insecureSkipTLSVerify (and no caBundle) trusts it.
    await call(env.api, "PATCH", f"{APISERVICES}/v1.kptest.example.com",
               {"spec": {"caBundle": None, "insecureSkipTLSVerify": True}},
               content_type="application/merge-patch+json")
    await env.available("v1.kptest.example.com", "Passed")
    await call(env.api, "GET", "/apis/kptest.example.com/v1/widgets")
    # Endpoints without the Service's port name.
    key = by_plural("endpoints").key("default", "kptest-metrics")
    kv = await env.server.store.get(key)
    assert kv is not None
    obj = json.loads(kv.value)
    obj["subsets"][0]["ports"][0]["name"] = "other"
    await env.server.store.update(key, json.dumps(obj).encode(), revision=kv.mod_revision)
    cond = await env.available("v1.kptest.example.com", "MissingEndpoints")
    assert cond["message"] == ('endpoints for service/kptest-metrics in "default" have no addresses with port '
                               'name "https"')


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_one_endpoint_gone_does_not_make_the_group_unavailable(env: Env) -> None:
    """As upstream's availability controller: several discovery calls at once, and one answer is enough."""
    await call(env.api, "POST", SERVICES, SERVICE, status=201)
    dead = closed_port()
    await env.endpoints(dead, env.backend.port)
    await call(env.api, "POST", APISERVICES, apiservice(env.backend.ca_bundle), status=201)
    await env.available("v1.kptest.example.com", "Passed")
    aggregator = env.server.aggregator
    assert aggregator is not None
    obj = aggregator.apiservices["v1.kptest.example.com"]
    verdicts = [await aggregator.check(obj) for _ in range(12)]   # one dead endpoint in two, every time
    assert all(v[:2] == ("True", "Passed") for v in verdicts), verdicts
    # Only the dead one left: unavailable, saying where it failed.
    await env.endpoints(dead)
    status, reason, message = await aggregator.check(obj)
    assert (status, reason) == ("False", "FailedDiscoveryCheck")
    assert message.startswith(f"failing or missing response from https://127.0.0.1:{dead}/apis/"), message


async def test_a_change_of_the_endpoints_is_checked_at_once(env: Env) -> None:
    """The condition follows the Service's endpoints at once, not at the next periodic check."""
    await call(env.api, "POST", SERVICES, SERVICE, status=201)
    await env.endpoints(env.backend.port)
    await call(env.api, "POST", APISERVICES, apiservice(env.backend.ca_bundle), status=201)
    await env.available("v1.kptest.example.com", "Passed")
    await asyncio.sleep(1.5)   # past the quick re-check while the aggregator's copy said not yet Available
    await env.endpoints(closed_port())
    # Nothing nudges the aggregator here (Env.available does), and the periodic check of an available
    # APIService is CHECK_PERIOD away: only the Endpoints watch can see this within the time.
    for _ in range(60):
        obj = await call(env.api, "GET", f"{APISERVICES}/v1.kptest.example.com")
        cond = next(c for c in obj["status"]["conditions"] if c["type"] == "Available")
        if cond["reason"] == "FailedDiscoveryCheck":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"still {cond} 3 s after the endpoints changed")
    await call(env.api, "GET", "/apis/kptest.example.com/v1/widgets", status=503)


async def test_apiservice_validation(env: Env) -> None:
    bad = apiservice("", insecureSkipTLSVerify=True)
    bad["metadata"]["name"] = "wrong"
    bad["spec"]["caBundle"] = base64.b64encode(b"x").decode()
    bad["spec"]["groupPriorityMinimum"] = 0
    bad["spec"]["service"]["port"] = 70000
    body = await call(env.api, "POST", APISERVICES, bad, status=422)
    causes = {c["field"]: c["message"] for c in body["details"]["causes"]}
    assert causes["metadata.name"].endswith('must be `spec.version+"."+spec.group`: "v1.kptest.example.com"')
    assert "spec.insecureSkipTLSVerify" in causes and "spec.groupPriorityMinimum" in causes
    assert "spec.service.port" in causes
    local = apiservice("")
    del local["spec"]["service"], local["spec"]["caBundle"]
    body = await call(env.api, "POST", APISERVICES, local, status=422)
    assert "does not serve kptest.example.com/v1 itself" in body["message"]
    # The control plane's own trust for extension servers is published as upstream's ConfigMap.
    cm = await call(env.api, "GET", "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication")
    assert json.loads(cm["data"]["requestheader-allowed-names"]) == ["front-proxy-client"]
    assert json.loads(cm["data"]["requestheader-username-headers"]) == ["X-Remote-User"]
    assert cm["data"]["requestheader-client-ca-file"].startswith("-----BEGIN CERTIFICATE-----")


async def test_groups_served_here_are_never_handed_elsewhere(env: Env) -> None:
    hijack = apiservice(env.backend.ca_bundle, group="apps")
    hijack["metadata"]["name"] = "v1.apps"
    body = await call(env.api, "POST", APISERVICES, hijack, status=422)
    assert body["details"]["causes"][0]["message"] == ('Invalid value: "default/kptest-metrics": apps/v1 is served '
                                                       "by the API server itself")
    assert (await call(env.api, "GET", "/apis/apps/v1"))["groupVersion"] == "apps/v1"
