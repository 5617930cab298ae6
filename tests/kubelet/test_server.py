"""The kubelet's HTTPS endpoint with a fake pod locator: CRI logs and exec over WebSockets;
then the API server's proxy (kubepy.api.proxy) in front of it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web

from kubepy.api import certs
from kubepy.api import errors as api_errors
from kubepy.api.proxy import choose_container, kubelet_base_url, kubelet_tls, proxy_pod_subresource
from kubepy.tlsclientauth import CertificateRefused, verify_client_certificate
from kubepy.kubelet.logshim import format_cri_line
from kubepy.kubelet.runtime import _exec_with_pty
from kubepy.kubelet.server import (
    KubeletServer,
    LogOptions,
    LogRenderer,
    exit_status,
    parse_log_options,
    rfc3339_ns,
)

TOKEN = "node-token-abc"


class StaticAuth:
    """A kubelet RequestAuth for these tests (kubepy.kubelet.auth's real one asks the API server:
    tests/api/test_kubelet_auth.py): the bearer TOKEN, or a client certificate the test CA signed
    for the API server's kubelet client."""

    def __init__(self, ca_pem: bytes) -> None:
        from cryptography import x509
        self.ca = x509.load_pem_x509_certificate(ca_pem)

    async def check(self, request: web.Request) -> tuple[int, str, str] | None:
        der = request.transport.get_extra_info("ssl_object").getpeercert(True) if request.transport else None
        if der:
            try:
                if verify_client_certificate(der, self.ca)[0] == certs.KUBELET_CLIENT_USER:
                    return None
            except CertificateRefused:
                pass
        if request.headers.get("Authorization") == f"Bearer {TOKEN}":
            return None
        return 401, "Unauthorized", "Unauthorized"
T0 = 1_795_258_800_000_000_000          # 2026-11-21T11:00:00Z


def cri(stream: str, text: str, *, seconds: int, partial: bool = False) -> bytes:
    return format_cri_line(stream, text.encode(), partial=partial, now_ns=T0 + seconds * 1_000_000_000)


class FakeRuntime:
    """Runs exec'd commands on the host: argv as given, in a pty when asked."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.execs: list[tuple[str, list[str], bool]] = []

    async def exec(self, cid: str, exec_id: str, argv: list[str], *, tty: bool = False, stdin: bool = True,
                   cwd: str | None = None, user: str | None = None) -> asyncio.subprocess.Process:
        self.execs.append((cid, argv, tty))
        if tty:
            return await _exec_with_pty(argv, dict(os.environ))
        return await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    async def task_pid(self, cid: str) -> int | None:
        return 1 if cid in self.running else None


@dataclass
class FakeLocator:
    """namespace/pod → {container: (current id, current log, previous log)}."""

    runtime: Any
    pods: dict[tuple[str, str], dict[str, tuple[str | None, Path | None, Path | None]]] = field(default_factory=dict)

    def locate(self, namespace: str, pod: str, container: str | None, *,
               previous: bool = False) -> tuple[str | None, Path | None]:
        containers = self.pods.get((namespace, pod))
        if containers is None:
            raise LookupError(f'pod "{pod}" not found')
        if container is None:
            if len(containers) != 1:
                raise ValueError(f"a container name must be specified for pod {pod}, "
                                 f"choose one of: [{' '.join(containers)}]")
            container = next(iter(containers))
        if container not in containers:
            raise ValueError(f"container {container} is not valid for pod {pod}")
        cid, current, prev = containers[container]
        return (None, prev) if previous else (cid, current)


@pytest.fixture
def logs(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "logs"
    d.mkdir()
    current, rotated, prev = d / "0.log", d / "0.log.1", d / "prev.log"
    rotated.write_bytes(cri("stdout", "old one", seconds=1) + cri("stdout", "old two", seconds=2))
    current.write_bytes(cri("stdout", "hello", seconds=10)
                        + cri("stderr", "warn", seconds=11)
                        + cri("stdout", "long ", seconds=12, partial=True)
                        + cri("stdout", "line", seconds=13)
                        + cri("stdout", "last", seconds=14))
    prev.write_bytes(cri("stdout", "before restart", seconds=0))
    return {"current": current, "rotated": rotated, "previous": prev}


@pytest.fixture
async def kubelet(tmp_path: Path, logs: dict[str, Path]):
    runtime = FakeRuntime()
    runtime.running.add("cid-1")
    locator = FakeLocator(runtime, {
        ("default", "web"): {"app": ("cid-1", logs["current"], logs["previous"])},
        ("default", "two"): {"a": ("cid-a", None, None), "b": ("cid-b", None, None)},
    })
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    certs.ensure_ca(ca_dir)
    ca_pem = (ca_dir / "ca.crt").read_bytes()
    srv = KubeletServer(locator, node_name="node-1", auth=StaticAuth(ca_pem), cert_dir=tmp_path / "pki",
                        address="127.0.0.1", port=0, client_ca=ca_pem, serving_cert=_signed_serving_cert(ca_dir))
    srv.ca_dir = ca_dir  # type: ignore[attr-defined]
    await srv.start()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False),
                                    headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        yield srv, session, runtime
    finally:
        await session.close()
        await srv.stop()


def _signed_serving_cert(ca_dir: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("node-1"),
                                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
           .sign(key, hashes.SHA256()))
    crt = certs.sign_kubelet_serving_cert(ca_dir, csr.public_bytes(serialization.Encoding.PEM), node_name="node-1")
    (ca_dir / "kubelet-server.crt").write_bytes(crt)
    (ca_dir / "kubelet-server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return ca_dir / "kubelet-server.crt", ca_dir / "kubelet-server.key"


def free_port_local() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def url(srv: KubeletServer, path: str) -> str:
    return f"https://127.0.0.1:{srv.port}{path}"


async def get_text(session: aiohttp.ClientSession, srv: KubeletServer, path: str) -> tuple[int, str]:
    async with session.get(url(srv, path)) as r:
        return r.status, await r.text()


# -- pure parts --------------------------------------------------------------

def test_rfc3339_ns():
    assert rfc3339_ns("2026-11-21T11:00:00Z") == T0
    assert rfc3339_ns("2026-11-21T11:00:00.5Z") == T0 + 500_000_000
    assert rfc3339_ns("2026-11-21T12:00:00.000000001+01:00") == T0 + 1
    with pytest.raises(ValueError):
        rfc3339_ns("yesterday")


@pytest.mark.parametrize("query, error", [
    ({"tailLines": "-1"}, "tailLines"),
    ({"limitBytes": "0"}, "limitBytes"),
    ({"sinceSeconds": "5", "sinceTime": "2026-11-21T11:00:00Z"}, "at most one"),
    ({"sinceTime": "soon"}, "sinceTime"),
    ({"stream": "Both"}, "stream"),
])
def test_parse_log_options_rejects(query, error):
    with pytest.raises(ValueError, match=error):
        parse_log_options(query)


def test_parse_log_options():
    o = parse_log_options({"follow": "true", "tailLines": "2", "sinceSeconds": "3"}, now_ns=T0)
    assert (o.follow, o.tail_lines, o.since_ns, o.timestamps) == (True, 2, T0 - 3_000_000_000, False)


def test_renderer_joins_partials_per_stream():
    r = LogRenderer(LogOptions(timestamps=True))
    assert r.feed(cri("stdout", "ab", seconds=1, partial=True).rstrip(b"\n")) is None
    assert r.feed(cri("stderr", "err", seconds=2).rstrip(b"\n")) == b"2026-11-21T11:00:02.000000000Z err\n"
    assert r.feed(cri("stdout", "cd", seconds=3).rstrip(b"\n")) == b"2026-11-21T11:00:01.000000000Z abcd\n"
    assert r.feed(b"garbage") is None


def test_exit_status():
    assert exit_status(0)["status"] == "Success"
    s = exit_status(3)
    assert (s["status"], s["reason"], s["details"]["causes"]) == \
        ("Failure", "NonZeroExitCode", [{"reason": "ExitCode", "message": "3"}])


# -- logs over HTTPS -----------------------------------------------------------

async def test_auth_required(kubelet):
    srv, _, _ = kubelet
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as anon:
        async with anon.get(url(srv, "/healthz")) as r:
            assert r.status == 401
        async with anon.get(url(srv, "/healthz"), headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
            assert (await r.json())["reason"] == "Unauthorized"


async def test_healthz_and_cert_reused(kubelet, tmp_path: Path):
    srv, session, _ = kubelet
    assert await get_text(session, srv, "/healthz") == (200, "ok")
    # the serving certificate it was given (signed by the CA for its name), not a self-signed one
    import ssl
    ctx = ssl.create_default_context(cafile=str(srv.ca_dir / "ca.crt"))
    async with aiohttp.ClientSession() as s, s.get(url(srv, "/healthz"), ssl=ctx, server_hostname="node-1",
                                                   headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200
    assert not (tmp_path / "pki" / "kubelet.crt").exists()
    # without one it makes a self-signed certificate once and reuses it
    from kubepy.kubelet.server import ensure_kubelet_cert
    ensure_kubelet_cert(tmp_path / "pki", node_name="node-1", address="127.0.0.1")
    crt = (tmp_path / "pki" / "kubelet.crt").read_bytes()
    ensure_kubelet_cert(tmp_path / "pki", node_name="node-1", address="127.0.0.1")
    assert (tmp_path / "pki" / "kubelet.crt").read_bytes() == crt


async def test_logs_all_files_in_order(kubelet):
    srv, session, _ = kubelet
    status, text = await get_text(session, srv, "/containerLogs/default/web/app")
    assert status == 200
    assert text == "old one\nold two\nhello\nwarn\nlong line\nlast\n"


async def test_logs_tail_timestamps_limit_since_stream(kubelet):
    srv, session, _ = kubelet
    base = "/containerLogs/default/web/app"
    assert (await get_text(session, srv, base + "?tailLines=2"))[1] == "long line\nlast\n"
    assert (await get_text(session, srv, base + "?tailLines=0"))[1] == ""
    assert (await get_text(session, srv, base + "?tailLines=1&timestamps=true"))[1] == \
        "2026-11-21T11:00:14.000000000Z last\n"
    assert (await get_text(session, srv, base + "?limitBytes=10"))[1] == "old one\nol"
    assert (await get_text(session, srv, base + "?sinceTime=2026-11-21T11:00:11Z"))[1] == "warn\nlong line\nlast\n"
    assert (await get_text(session, srv, base + "?stream=Stderr"))[1] == "warn\n"


async def test_logs_previous_and_errors(kubelet):
    srv, session, _ = kubelet
    assert (await get_text(session, srv, "/containerLogs/default/web/app?previous=true"))[1] == "before restart\n"
    status, body = await get_text(session, srv, "/containerLogs/default/web/nope")
    assert status == 400 and "not valid" in json.loads(body)["message"]
    status, body = await get_text(session, srv, "/containerLogs/default/ghost/app")
    assert status == 404 and json.loads(body)["message"] == 'pod "ghost" not found'
    status, body = await get_text(session, srv, "/containerLogs/default/web/app?tailLines=x")
    assert status == 400 and "tailLines" in json.loads(body)["message"]


async def test_logs_follow_sees_new_lines_and_rotation_then_ends(kubelet, logs):
    srv, session, runtime = kubelet
    async with session.get(url(srv, "/containerLogs/default/web/app?follow=true&tailLines=1")) as r:
        assert r.status == 200
        assert await asyncio.wait_for(r.content.readline(), 5) == b"last\n"
        with open(logs["current"], "ab") as f:
            f.write(cri("stdout", "fresh", seconds=20))
        assert await asyncio.wait_for(r.content.readline(), 5) == b"fresh\n"
        # Rotate as the shim does: current → .1, a new current.
        os.replace(logs["rotated"], logs["current"].with_name("0.log.2"))
        os.replace(logs["current"], logs["rotated"])
        logs["current"].write_bytes(cri("stderr", "after rotation", seconds=21))
        assert await asyncio.wait_for(r.content.readline(), 5) == b"after rotation\n"
        # The container stops: its last line still comes, then the stream ends.
        with open(logs["current"], "ab") as f:
            f.write(cri("stdout", "bye", seconds=22))
        runtime.running.discard("cid-1")
        rest = await asyncio.wait_for(r.content.read(), 10)
        assert rest == b"bye\n"


async def test_logs_follow_client_going_away_ends_handler(kubelet):
    srv, session, _ = kubelet
    async with session.get(url(srv, "/containerLogs/default/web/app?follow=1")) as r:
        await asyncio.wait_for(r.content.readline(), 5)
    # The server must notice; stop() below would wait on a stuck handler otherwise.
    await asyncio.sleep(0.3)


# -- exec over WebSockets -----------------------------------------------------

async def run_exec(session, srv, query: str, *, stdin: bytes | str | None = None, resize: dict | None = None,
                   protocol: str = "v5.channel.k8s.io") -> tuple[dict[int, bytes], dict, str | None]:
    out: dict[int, bytes] = {}
    status: dict = {}
    async with session.ws_connect(url(srv, "/exec/default/web/app?" + query), protocols=(protocol,)) as ws:
        if resize is not None:
            await ws.send_bytes(b"\x04" + json.dumps(resize).encode())
        if isinstance(stdin, str):  # as the official Python client sends str: a text frame, chr(channel) first
            await ws.send_str("\x00" + stdin)
            await ws.send_bytes(b"\xff\x00")
        elif stdin is not None:
            await ws.send_bytes(b"\x00" + stdin)
            await ws.send_bytes(b"\xff\x00")
        async for msg in ws:
            assert msg.type == aiohttp.WSMsgType.BINARY
            ch, data = msg.data[0], msg.data[1:]
            if ch == 3:
                status = json.loads(data)
            else:
                out[ch] = out.get(ch, b"") + data
        return out, status, ws.protocol


async def test_exec_exit_code_and_streams(kubelet):
    srv, session, runtime = kubelet
    out, status, proto = await run_exec(
        session, srv, urlencode([("command", "sh"), ("command", "-c"), ("command", "echo hi; echo oops >&2; exit 3"),
                                 ("stdout", "1"), ("stderr", "1")]))
    assert proto == "v5.channel.k8s.io"
    assert out == {1: b"hi\n", 2: b"oops\n"}
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert runtime.execs[-1] == ("cid-1", ["sh", "-c", "echo hi; echo oops >&2; exit 3"], False)


async def test_exec_stdin_forwarded_and_closed(kubelet):
    srv, session, _ = kubelet
    out, status, _ = await run_exec(session, srv, "command=cat&stdin=true&stdout=true&stderr=true",
                                    stdin=b"from stdin\n")
    assert out[1] == b"from stdin\n"
    assert status["status"] == "Success"


async def test_exec_stdin_in_text_frames(kubelet):
    srv, session, _ = kubelet
    out, status, _ = await run_exec(session, srv, "command=cat&stdin=true&stdout=true", stdin="x\nünï\n")
    assert out[1] == "x\nünï\n".encode()
    assert status["status"] == "Success"


async def test_exec_v4(kubelet):
    srv, session, _ = kubelet
    out, status, proto = await run_exec(session, srv, "command=echo&command=v4&stdout=1",
                                        protocol="v4.channel.k8s.io")
    assert (proto, out, status["status"]) == ("v4.channel.k8s.io", {1: b"v4\n"}, "Success")


async def test_exec_tty_resize(kubelet):
    srv, session, _ = kubelet
    out, status, _ = await run_exec(session, srv, urlencode([("command", "sh"), ("command", "-c"), ("command", "sleep 0.5; stty size"),
                                                            ("stdout", "1"), ("tty", "1")]),
                                    resize={"Width": 123, "Height": 45})
    assert b"45 123" in out[1]
    assert status["status"] == "Success"


async def test_exec_errors_arrive_as_status(kubelet):
    srv, session, _ = kubelet
    async with session.ws_connect(url(srv, "/exec/default/two/zz?command=ls&stdout=1"),
                                  protocols=("v5.channel.k8s.io",)) as ws:
        msg = await ws.receive()
        assert msg.data[0] == 3
        assert "not valid" in json.loads(msg.data[1:])["message"]
    async with session.get(url(srv, "/exec/default/web/app?command=ls")) as r:
        assert r.status == 400     # not a WebSocket


async def test_exec_client_hangup_kills_process(kubelet):
    srv, session, _ = kubelet
    async with session.ws_connect(url(srv, "/exec/default/web/app?command=sleep&command=30&stdout=1"),
                                  protocols=("v5.channel.k8s.io",)) as ws:
        await ws.receive()         # the empty "connected" frame
    await asyncio.sleep(0.3)


# -- the API server's side: kubepy.api.proxy in front of this kubelet ------------

def pod(name: str = "web", *containers: str, node: str | None = "node-1") -> dict:
    spec: dict = {"containers": [{"name": c} for c in containers or ("app",)]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec}


def node(port: int, *addresses: tuple[str, str]) -> dict:
    return {"metadata": {"name": "node-1"},
            "status": {"addresses": [{"type": t, "address": a} for t, a in addresses or (("InternalIP", "127.0.0.1"),)],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}


def test_choose_container_and_kubelet_url():
    assert choose_container(pod("p", "app"), None) == "app"
    with pytest.raises(api_errors.BadRequest, match=r"must be specified for pod p, choose one of: \[a b\]"):
        choose_container(pod("p", "a", "b"), None)
    with pytest.raises(api_errors.BadRequest, match="container c is not valid for pod p"):
        choose_container(pod("p", "a", "b"), "c")
    assert kubelet_base_url(node(10250, ("Hostname", "n1"), ("InternalIP", "10.0.0.5"))) == "https://10.0.0.5:10250"
    assert kubelet_base_url(node(1, ("InternalIP", "fd00::1"))) == "https://[fd00::1]:1"
    with pytest.raises(api_errors.ServiceUnavailable):
        kubelet_base_url({"metadata": {"name": "n"}, "status": {}})


@pytest.fixture
async def apiserver(kubelet):
    """A stand-in API server: one route that calls the proxy as server.py's subresource() does."""
    srv, _, _ = kubelet
    ca_dir = srv.ca_dir
    client = certs.issue_client_cert(ca_dir, user=certs.KUBELET_CLIENT_USER, groups=())
    state = {"pod": pod(), "node": node(srv.port),
             "kubelet": kubelet_tls(ca_pem=(ca_dir / "ca.crt").read_bytes(), client_cert=client)}

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await proxy_pod_subresource(request, sub=request.match_info["sub"], pod=state["pod"],
                                               node=state["node"], kubelet=state["kubelet"])
        except api_errors.APIError as e:
            return web.json_response(e.status(), status=e.code)

    app = web.Application()
    app.router.add_route("*", "/api/v1/namespaces/default/pods/web/{sub}", handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]   # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session:
        yield f"http://127.0.0.1:{port}/api/v1/namespaces/default/pods/web", session, state
    await runner.cleanup()


async def test_proxy_logs(apiserver):
    base, session, _ = apiserver
    async with session.get(base + "/log?tailLines=2&timestamps=false") as r:
        assert (r.status, await r.text()) == (200, "long line\nlast\n")
    async with session.get(base + "/log?container=app&limitBytes=3") as r:
        assert await r.text() == "old"


async def test_proxy_logs_follow_streams(apiserver, logs):
    base, session, _ = apiserver
    async with session.get(base + "/log?follow=true&tailLines=0") as r:
        assert r.status == 200
        with open(logs["current"], "ab") as f:
            f.write(cri("stdout", "through the proxy", seconds=30))
        assert await asyncio.wait_for(r.content.readline(), 5) == b"through the proxy\n"


async def test_proxy_errors(apiserver, kubelet, tmp_path_factory: pytest.TempPathFactory):
    base, session, state = apiserver
    srv, _, _ = kubelet
    state["pod"] = pod(node=None)
    async with session.get(base + "/log") as r:
        assert r.status == 400 and (await r.json())["message"] == "pod web does not have a host assigned"
    state["pod"] = pod()
    good = state["kubelet"]
    stranger = tmp_path_factory.mktemp("other-ca")
    state["kubelet"] = kubelet_tls(ca_pem=(srv.ca_dir / "ca.crt").read_bytes(),
                                   client_cert=certs.issue_client_cert(stranger, user=certs.KUBELET_CLIENT_USER,
                                                                       groups=()))
    async with session.get(base + "/log") as r:
        body = await r.json()
        assert r.status == 503 and "refused the API server's credentials (401)" in body["message"]
    # The kubelet's serving certificate must be the node's: one for another name is not trusted.
    state["kubelet"] = good
    state["node"] = {**node(srv.port), "metadata": {"name": "node-2"}}
    state["pod"] = pod(node="node-2")
    async with session.get(base + "/log") as r:
        body = await r.json()
        assert r.status == 503 and "error dialing the kubelet" in body["message"], body
        assert "certificate" in body["message"].lower(), body
    state["pod"] = pod()
    state["node"] = node(free_port_local())
    async with session.get(base + "/log") as r:
        body = await r.json()
        assert r.status == 503 and "error dialing the kubelet" in body["message"]
    async with session.post(base + "/exec?command=ls", headers={"Upgrade": "SPDY/3.1"}) as r:
        assert r.status == 400 and "WebSockets only" in (await r.json())["message"]


async def test_proxy_exec(apiserver):
    base, session, state = apiserver
    query = urlencode([("command", "sh"), ("command", "-c"), ("command", "cat; exit 7"),
                       ("stdin", "true"), ("stdout", "true"), ("stderr", "true")])
    out, status = b"", {}
    async with session.ws_connect(base + "/exec?" + query, protocols=("v5.channel.k8s.io",)) as ws:
        assert ws.protocol == "v5.channel.k8s.io"
        await ws.send_bytes(b"\x00piped\n")
        await ws.send_bytes(b"\xff\x00")
        async for msg in ws:
            if msg.data[0] == 1:
                out += msg.data[1:]
            elif msg.data[0] == 3:
                status = json.loads(msg.data[1:])
    assert out == b"piped\n"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]
    state["node"] = node(free_port_local())      # kubelet gone: the error comes on channel 3
    async with session.ws_connect(base + "/exec?command=true&stdout=1", protocols=("v5.channel.k8s.io",)) as ws:
        msg = await ws.receive()
        assert msg.data[0] == 3 and "error dialing the kubelet" in json.loads(msg.data[1:])["message"]


async def test_stop_ends_followed_logs_promptly(kubelet):
    srv, session, _ = kubelet
    async with session.get(url(srv, "/containerLogs/default/web/app?follow=1&tailLines=0")) as r:
        assert r.status == 200
        started = asyncio.get_running_loop().time()
        await srv.stop()
        assert asyncio.get_running_loop().time() - started < 1.5
        assert await asyncio.wait_for(r.content.read(), 5) == b""
