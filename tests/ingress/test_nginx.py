"""nginx: rendered configurations pass ``nginx -t``, and a real nginx (the distribution's) on loopback
routes requests as Kubernetes defines, terminates TLS per SNI, reloads without losing the requests in
flight and keeps serving the last good configuration when a new one is refused.

Backends are small HTTP servers on 127.0.0.1 that answer with their name and the path they saw;
nginx listens on free loopback ports; everything is stopped even when a test fails."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.server
import json
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from kubepy.ingress.model import ProxyConfig, build
from kubepy.ingress.nginx import FAKE_CERT_CN, Nginx, NginxError, render
from tests.ingress.cases import (KUBEPY_CLASS, backend, endpoint_slice, ingress, path, rule, self_signed, service,
                                 tls_secret)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/slow"):
            time.sleep(1.0)
        body = f"{self.server.name} {self.path}".encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Seen", json.dumps({k.lower(): v for k, v in self.headers.items()}))  # what came
        self.send_header("X-Backend", "original")
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def backends() -> Iterator[dict[str, int]]:
    """Three named HTTP servers on loopback: name → port."""
    servers = {}
    for name in ("web", "api", "docs"):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        srv.name = name  # type: ignore[attr-defined]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers[name] = srv
    try:
        yield {n: int(s.server_address[1]) for n, s in servers.items()}
    finally:
        for s in servers.values():
            s.shutdown()
            s.server_close()


def _config(ports: dict[str, int], *ingresses: dict[str, Any], secrets: list[dict[str, Any]] = ()) -> ProxyConfig:
    services = [service(n, ("http", 80)) for n in ports]
    slices = [endpoint_slice(n, "http", p, "127.0.0.1") for n, p in ports.items()]
    return build(ingresses, classes=[KUBEPY_CLASS], services=services, slices=slices, secrets=list(secrets))


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[tuple[Nginx, int, int]]:
    nginx = Nginx(tmp_path / "ingress")
    nginx.prepare()
    http_port, https_port = _free_port(), _free_port()
    try:
        yield nginx, http_port, https_port
    finally:
        await nginx.stop()


async def _apply(nginx: Nginx, cfg: ProxyConfig, http_port: int, https_port: int) -> str:
    names = nginx.write_certificates(cfg.certificates)
    text = render(cfg, state_dir=nginx.dir, cert_files=names, http_port=f"127.0.0.1:{http_port}",
                  https_port=f"127.0.0.1:{https_port}")
    return await nginx.apply(text)


def _get(port: int, host: str, uri: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, uri, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def _get_tls(port: int, host: str, uri: str, cadata: str | None) -> tuple[int, str, str]:
    """(status, body, the certificate's subject CN) over TLS with SNI ``host``."""
    ctx = ssl.create_default_context(cadata=cadata) if cadata else ssl._create_unverified_context()
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    conn._tunnel_host = None
    try:
        conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname=host)
        peer = conn.sock.getpeercert(binary_form=True)
        from cryptography import x509
        cn = x509.load_der_x509_certificate(peer).subject.rfc4514_string()
        conn.request("GET", uri, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace"), cn
    finally:
        conn.close()


async def test_rendered_configurations_pass_nginx_t(tmp_path: Path) -> None:
    cert, key = self_signed("a.example.com")
    cfg = build([ingress("site", rule("a.example.com", path("/", "web"), path("/we ird\"path", "web", "Exact")),
                         rule("*.example.com", path("/x", "web", "ImplementationSpecific")),
                         rule(None, path("/", "web")), default=backend("web"),
                         tls=[{"hosts": ["a.example.com"], "secretName": "a-tls"}])],
                classes=[KUBEPY_CLASS], services=[service("web", ("http", 80))],
                slices=[endpoint_slice("web", "http", 8080, "10.244.0.2")],
                secrets=[tls_secret("a-tls", cert, key)])
    nginx = Nginx(tmp_path / "ingress")
    nginx.prepare()
    names = nginx.write_certificates(cfg.certificates)
    text = render(cfg, state_dir=nginx.dir, cert_files=names, node="kptest-node1")
    await nginx.check(text)
    assert "server_name ~^[^.]+\\.example\\.com$;" in text
    assert 'location = "/we ird\\"path"' in text
    assert "server 10.244.0.2:8080 max_fails=0;" in text
    with pytest.raises(NginxError, match="unknown directive"):
        await nginx.check(text.replace("server_tokens off;", "server_tokens off; no_such_directive on;"))


async def test_real_nginx_routes_by_host_and_path(backends: dict[str, int], proxy: tuple[Nginx, int, int]) -> None:
    nginx, http_port, https_port = proxy
    cfg = _config(backends,
                  ingress("site", rule("a.example.com", path("/", "web"), path("/api", "api"),
                                       path("/api/exact", "docs", "Exact")),
                          rule("*.wild.example.com", path("/", "docs")), default=backend("docs")),
                  ingress("b", rule("b.example.com", path("/only", "api"))))
    assert await _apply(nginx, cfg, http_port, https_port) == "started"
    cases = [
        ("a.example.com", "/", 200, "web /"),
        ("a.example.com", "/api", 200, "api /api"),
        ("a.example.com", "/api/v1", 200, "api /api/v1"),
        ("a.example.com", "/apix", 200, "web /apix"),          # Prefix is by path element
        ("a.example.com", "/api/exact", 200, "docs /api/exact"),  # Exact beats Prefix
        ("a.example.com", "/api/exact/x", 200, "api /api/exact/x"),
        ("x.wild.example.com", "/p", 200, "docs /p"),
        ("x.y.wild.example.com", "/p", 200, "docs /p"),       # no rule's host: site's defaultBackend
        ("b.example.com", "/only/1", 200, "api /only/1"),
        ("b.example.com", "/other", 404, ""),                 # b has no defaultBackend
    ]
    got = [(h, u, *(await asyncio.to_thread(_get, http_port, h, u))) for h, u, _, _ in cases]
    assert [(h, u, s, b if s == 200 else "") for h, u, s, b in got] == cases


async def test_real_nginx_terminates_tls_per_sni(backends: dict[str, int], proxy: tuple[Nginx, int, int]) -> None:
    nginx, http_port, https_port = proxy
    cert, key = self_signed("secure.example.com")
    cfg = _config(backends, ingress("tls", rule("secure.example.com", path("/", "api")),
                                    rule("plain.example.com", path("/", "web")),
                                    tls=[{"hosts": ["secure.example.com"], "secretName": "tls"}]),
                  secrets=[tls_secret("tls", cert, key)])
    await _apply(nginx, cfg, http_port, https_port)
    status, body, cn = await asyncio.to_thread(_get_tls, https_port, "secure.example.com", "/s", cert.decode())
    assert (status, body, cn) == (200, "api /s", "CN=secure.example.com")
    status, body, cn = await asyncio.to_thread(_get_tls, https_port, "plain.example.com", "/p", None)
    assert (status, body) == (200, "web /p") and FAKE_CERT_CN in cn


async def test_reload_keeps_requests_and_a_refused_configuration_leaves_the_last_good_one(
        backends: dict[str, int], proxy: tuple[Nginx, int, int]) -> None:
    nginx, http_port, https_port = proxy
    first = _config(backends, ingress("site", rule("a.example.com", path("/", "web"))))
    second = _config(backends, ingress("site", rule("a.example.com", path("/", "api"))))
    assert await _apply(nginx, first, http_port, https_port) == "started"
    pid = nginx.pid()
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                status, _ = _get(http_port, "a.example.com", "/")
                if status != 200:
                    failures.append(str(status))
            except OSError as e:
                failures.append(repr(e))
            time.sleep(0.005)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for cfg in (second, first, second):
            assert await _apply(nginx, cfg, http_port, https_port) == "reloaded"
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert nginx.pid() == pid
    # A request in flight across a reload is answered by the old worker, not cut.
    slow = asyncio.create_task(asyncio.to_thread(_get, http_port, "a.example.com", "/slow"))
    await asyncio.sleep(0.3)
    assert await _apply(nginx, first, http_port, https_port) == "reloaded"
    assert await slow == (200, "api /slow")
    old_workers = set(psutil.Process(nginx.pid() or 0).children())
    await _apply(nginx, second, http_port, https_port)
    deadline = time.monotonic() + 5
    while (await asyncio.to_thread(_get, http_port, "a.example.com", "/"))[1] != "api /":
        assert time.monotonic() < deadline, "the reloaded configuration never answered"
        await asyncio.sleep(0.05)
    # Until the previous workers have seen the master's QUIT they may still accept a connection (the
    # listening socket is shared), so "the last good configuration" is judged once they are gone.
    _gone, alive = await asyncio.to_thread(psutil.wait_procs, old_workers, 10)
    assert alive == [], "the previous workers outlived the reload"
    good = nginx.conf.read_text()
    with pytest.raises(NginxError):
        await nginx.apply(good.replace("server_tokens off;", "server_tokens maybe;"))
    assert nginx.conf.read_text() == good
    assert await asyncio.to_thread(_get, http_port, "a.example.com", "/x") == (200, "api /x")
    with contextlib.suppress(FileNotFoundError):
        assert "maybe" not in (nginx.dir / "nginx.conf").read_text()


async def test_a_killed_nginx_is_started_again_and_a_running_one_adopted(
        backends: dict[str, int], proxy: tuple[Nginx, int, int]) -> None:
    nginx, http_port, https_port = proxy
    cfg = _config(backends, ingress("site", rule("a.example.com", path("/", "web"))))
    assert await _apply(nginx, cfg, http_port, https_port) == "started"
    os.kill(nginx.pid() or 0, signal.SIGKILL)  # its worker lives on, holding the ports
    deadline = time.monotonic() + 5
    while nginx.pid() is not None:
        assert time.monotonic() < deadline, "nginx still counted as running after SIGKILL"
        await asyncio.sleep(0.05)
    assert nginx.orphans(), "the killed master's worker"
    assert await _apply(nginx, cfg, http_port, https_port) == "started"
    assert nginx.orphans() == []
    assert await asyncio.to_thread(_get, http_port, "a.example.com", "/") == (200, "web /")
    # A new adapter (the controller restarted) finds the running master through its pid file.
    again = Nginx(nginx.dir)
    assert again.pid() == nginx.pid()
    assert await again.apply(nginx.conf.read_text()) == "unchanged"


async def test_real_nginx_serves_an_httproute_with_weighted_backends(backends: dict[str, int],
                                                                     proxy: tuple[Nginx, int, int]) -> None:
    """Gateway API on the same nginx: a Gateway + HTTPRoute (kubepy.ingress.gateway), beside an Ingress; the
    route's two backendRefs weighted 1:3 get a quarter and three quarters of the requests."""
    from kubepy.ingress.gateway import build as build_all
    nginx, http_port, https_port = proxy
    services = [service(n, ("http", 80)) for n in backends]
    slices = [endpoint_slice(n, "http", p, "127.0.0.1") for n, p in backends.items()]
    gw = {"metadata": {"name": "gw", "namespace": "default"}, "spec": {
        "gatewayClassName": "kubepy", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}}
    route = {"metadata": {"name": "r", "namespace": "default"}, "spec": {
        "parentRefs": [{"name": "gw"}], "hostnames": ["gw.example.com"], "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/split"}}],
             "backendRefs": [{"name": "web", "port": 80, "weight": 1}, {"name": "api", "port": 80, "weight": 3}]},
            {"matches": [{"path": {"type": "Exact", "value": "/docs"}}], "backendRefs": [{"name": "docs", "port": 80}]}]}}
    cfg, _ = build_all([ingress("site", rule("a.example.com", path("/", "web")))], classes=[KUBEPY_CLASS],
                       services=services, slices=slices, secrets=[],
                       gateway_classes=[{"metadata": {"name": "kubepy"},
                                         "spec": {"controllerName": "kubepy.io/gateway"}}],
                       gateways=[gw], routes=[route], addresses=[{"ip": "192.0.2.1"}])
    assert await _apply(nginx, cfg, http_port, https_port) == "started"
    got = [await asyncio.to_thread(_get, http_port, "gw.example.com", "/split/x") for _ in range(40)]
    assert sorted({b for _, b in got}) == ["api /split/x", "web /split/x"]
    assert sum(b.startswith("api") for _, b in got) == 30 and {s for s, _ in got} == {200}
    assert await asyncio.to_thread(_get, http_port, "gw.example.com", "/docs") == (200, "docs /docs")
    assert (await asyncio.to_thread(_get, http_port, "gw.example.com", "/docs/x"))[0] == 404
    assert await asyncio.to_thread(_get, http_port, "a.example.com", "/split") == (200, "web /split")


async def test_real_nginx_follows_header_query_and_method_matches(backends: dict[str, int],
                                                                  proxy: tuple[Nginx, int, int]) -> None:
    """The precedence cases of test_gateway, asked of a real nginx: the rendered conditions route as the
    pure model says."""
    from kubepy.ingress.gateway import build as build_all
    from tests.ingress.test_gateway import CLASS, MATCH_CASES, gateway, listener, matching_route
    nginx, http_port, https_port = proxy
    cfg, _ = build_all([], classes=[KUBEPY_CLASS], services=[service(n, ("http", 80)) for n in backends],
                       slices=[endpoint_slice(n, "http", p, "127.0.0.1") for n, p in backends.items()], secrets=[],
                       gateway_classes=[CLASS], gateways=[gateway(listener())], routes=[matching_route(docs_port=80)],
                       addresses=[{"ip": "192.0.2.1"}])
    assert await _apply(nginx, cfg, http_port, https_port) == "started"
    got = []
    for method, uri, headers, _want in MATCH_CASES:
        status, body = await asyncio.to_thread(_get, http_port, "m.example.com", uri, method, headers)
        got.append((method, uri, headers, body.split()[0] if status == 200 else str(status)))
    assert got == MATCH_CASES


def _ask(port: int, host: str, uri: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    """(status, body, response headers) of a GET, redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", uri, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace"), resp.headers
    finally:
        conn.close()


async def test_real_nginx_applies_httproute_filters(backends: dict[str, int], proxy: tuple[Nginx, int, int]) -> None:
    """RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect and URLRewrite as Gateway API defines them,
    and a filtered rule beside a header match on the same path."""
    from kubepy.ingress.gateway import build as build_all
    from tests.ingress.test_gateway import CLASS, gateway, http_route, listener, match, ref, rule_
    nginx, http_port, https_port = proxy

    def redirect(**body: Any) -> dict[str, Any]:
        return {"type": "RequestRedirect", "requestRedirect": body}

    def rewrite(**body: Any) -> dict[str, Any]:
        return {"type": "URLRewrite", "urlRewrite": body}

    headers = [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
                   "set": [{"name": "X-Set", "value": "a"}, {"name": "X-Forwarded-Proto", "value": "gopher"}],
                   "add": [{"name": "X-Add", "value": "b"}], "remove": ["X-Gone"]}},
               {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                   "set": [{"name": "X-Resp", "value": "r"}], "add": [{"name": "X-More", "value": "m"}],
                   "remove": ["X-Backend"]}}]
    route = http_route(
        "f",
        rule_(match("/hdr"), backends=[ref("web")], filters=headers),
        rule_(match("/hdr", headers=[{"name": "x-alt", "value": "1"}]), backends=[ref("api")]),
        rule_(match("/old"), filters=[redirect(path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"},
                                               statusCode=301)]),
        rule_(match("/full"), filters=[redirect(scheme="https", hostname="other.example.com",
                                                path={"type": "ReplaceFullPath", "replaceFullPath": "/landing"})]),
        rule_(match("/port"), filters=[redirect(port=8443)]),
        rule_(match("/p443"), filters=[redirect(port=443), {"type": "ResponseHeaderModifier",
                                                            "responseHeaderModifier": {"set": [{"name": "X-Resp",
                                                                                                "value": "moved"}]}}]),
        rule_(match("/strip"), backends=[ref("docs")], filters=[rewrite(
            path={"type": "ReplacePrefixMatch", "replacePrefixMatch": ""})]),
        rule_(match("/half"), backends=[ref("web"), ref("nowhere")]),
        rule_(match("/half", headers=[{"name": "x-alt", "value": "1"}]), backends=[ref("api")]),
        rule_(match("/rw"), backends=[ref("docs")], filters=[rewrite(
            hostname="rewritten.example.com", path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"})]),
        rule_(match("/rwfull"), backends=[ref("docs")], filters=[rewrite(
            path={"type": "ReplaceFullPath", "replaceFullPath": "/exact"})]),
        hostnames=["f.example.com"])
    cfg, st = build_all([], classes=[KUBEPY_CLASS], services=[service(n, ("http", 80)) for n in backends],
                        slices=[endpoint_slice(n, "http", p, "127.0.0.1") for n, p in backends.items()], secrets=[],
                        gateway_classes=[CLASS], gateways=[gateway(listener())], routes=[route],
                        addresses=[{"ip": "192.0.2.1"}])
    assert [c["reason"] for c in st.routes["default/f"][0]["conditions"]] == ["Accepted", "BackendNotFound"]
    assert await _apply(nginx, cfg, http_port, https_port) == "started"

    def ask(uri: str, **headers: str) -> tuple[int, str, Any]:
        return _ask(http_port, "f.example.com", uri, {k.replace("_", "-"): v for k, v in headers.items()})

    status, body, got = await asyncio.to_thread(ask, "/hdr/x", X_Add="z", X_Gone="1")
    seen = json.loads(got["X-Seen"])
    assert (status, body) == (200, "web /hdr/x")
    assert (seen["x-set"], seen["x-add"], "x-gone" in seen) == ("a", "z,b", False)
    assert seen["x-forwarded-proto"] == "gopher" and seen["x-real-ip"] == "127.0.0.1"   # the others still go
    assert (got["X-Resp"], got["X-More"], got["X-Backend"]) == ("r", "m", None)
    _, _, got = await asyncio.to_thread(ask, "/hdr")
    assert json.loads(got["X-Seen"])["x-add"] == "b"                     # added to nothing: just the value
    status, body, got = await asyncio.to_thread(ask, "/hdr/x", X_Alt="1")
    assert (status, body, got["X-Resp"]) == (200, "api /hdr/x", None)     # the header match: no filters
    status, _, got = await asyncio.to_thread(ask, "/old/a/b?q=1")
    assert (status, got["Location"]) == (301, "http://f.example.com/new/a/b?q=1")
    status, _, got = await asyncio.to_thread(ask, "/old")
    assert (status, got["Location"]) == (301, "http://f.example.com/new")
    status, _, got = await asyncio.to_thread(ask, "/full/x?q=1")
    assert (status, got["Location"]) == (302, "https://other.example.com/landing?q=1")
    status, _, got = await asyncio.to_thread(ask, "/port/x")
    assert (status, got["Location"]) == (302, "http://f.example.com:8443/port/x")
    status, _, got = await asyncio.to_thread(ask, "/p443/x")   # no scheme: the request's (http), so :443 stays
    assert (status, got["Location"], got["X-Resp"]) == (302, "http://f.example.com:443/p443/x", "moved")
    status, body, _ = await asyncio.to_thread(ask, "/strip/a/b")
    assert (status, body) == (200, "docs /a/b")                               # "" takes the prefix away
    status, body, _ = await asyncio.to_thread(ask, "/strip")
    assert (status, body) == (200, "docs /")
    status, _, got = await asyncio.to_thread(ask, "/old/a%0Ab/c")            # a newline in the decoded path
    assert (status, got["Location"]) == (301, "http://f.example.com/new/a%0Ab/c")
    halves = [(await asyncio.to_thread(ask, "/half"))[0] for _ in range(40)]
    assert sorted(set(halves)) == [200, 500] and 5 <= halves.count(500) <= 35   # the unresolved ref's half
    alts = [await asyncio.to_thread(ask, "/half", X_Alt="1") for _ in range(10)]   # a header match beside it
    assert {(status, body) for status, body, _ in alts} == {(200, "api /half")}
    status, body, got = await asyncio.to_thread(ask, "/rw/deep/er?q=1")
    assert (status, body, json.loads(got["X-Seen"])["host"]) == (200, "docs /deep/er?q=1", "rewritten.example.com")
    status, body, _ = await asyncio.to_thread(ask, "/rw")
    assert (status, body) == (200, "docs /")
    status, body, got = await asyncio.to_thread(ask, "/rwfull/any?q=2")
    assert (status, body, json.loads(got["X-Seen"])["host"]) == (200, "docs /exact?q=2", "f.example.com")
