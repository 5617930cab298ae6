"""The kubelet's HTTPS endpoint (port 10250): container logs, exec, attach, health.

The API server reaches it when it serves ``pods/log``, ``pods/exec`` and ``pods/attach``;
nothing else talks to it. It knows nothing about pods itself: a
``PodLocator`` (the kubelet core) maps namespace/pod/container to a container
id and its CRI log file, and the locator's ``Runtime`` starts exec'd
processes. Every request is authenticated and authorized by a ``RequestAuth``
(``kubepy.kubelet.auth``: client certificates signed by the cluster CA, bearer
tokens by TokenReview, then a SubjectAccessReview on ``nodes/proxy``,
``nodes/log``, ``nodes/stats``, ...); the API server calls with its own client
certificate (``kube-apiserver-kubelet-client``, bound to ``system:kubelet-api-admin``).
The serving certificate is signed by the cluster CA when the kubelet could have
it signed (``serving_cert``), so the API server can verify it; else self-signed.

Routes::

    GET /healthz
    GET /metrics       → the kubelet's series in the Prometheus text format (``kubepy.kubelet.metrics``)
    GET /containerLogs/{namespace}/{pod}/{container}?follow&tailLines&timestamps
        &previous&sinceSeconds&sinceTime&limitBytes&stream  → text/plain
    GET /exec/{namespace}/{pod}/{container}?command=..&stdin&stdout&stderr&tty
        → WebSocket, subprotocol v5.channel.k8s.io or v4.channel.k8s.io
    GET /attach/{namespace}/{pod}/{container}?stdin&stdout&stderr&tty
        → WebSocket, the same subprotocols and channels as exec (``kubepy.kubelet.attach``)
    GET /portForward/{namespace}/{pod}
        → WebSocket, subprotocol SPDY/3.1+portforward.k8s.io (``kubepy.kubelet.portforward``)
    GET /portForward/{namespace}/{pod}?port=P[,P]...
        → WebSocket, subprotocol v4.channel.k8s.io or none (``kubepy.kubelet.wsportforward``)
    *   /proxy/{scheme}/{namespace}/{pod}/{port}/{path}
        → the same request to the pod at scheme://<pod IP>:port/path (pods/proxy, services/proxy)
    GET /stats/summary      → the Summary API JSON (CPU and memory; ``kubepy.kubelet.stats``), nodes/stats
    GET /metrics/resource   → Prometheus text: node/pod/container CPU and working set, nodes/metrics

Logs are read from the CRI files the log shim writes (``path.N`` … ``path.1``,
``path``, oldest first); ``P`` pieces are joined into one line with the first
piece's timestamp. Follow polls the file, notices rotation by inode, and ends
when the client goes away or the container stops (or is replaced) and its
last lines are out.

Exec frames are Kubernetes' remotecommand WebSocket protocol: each binary
message starts with its channel (0 stdin, 1 stdout, 2 stderr, 3 error, 4
resize); v5 adds 255 = "close channel <next byte>" (kubectl sends it at
stdin EOF). The last message is a ``metav1.Status`` on channel 3: Success, or
Failure/NonZeroExitCode with an ``ExitCode`` cause - kubectl's exit code.
Errors that happen after the upgrade (no such container, runtime failure) are
reported the same way, as a Failure Status on channel 3.

Locator errors: ``LookupError`` (KeyError, …) → 404, ``ValueError`` → 400,
both with ``str(error)`` as the message.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import datetime as dt
import fcntl
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import struct
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import WSMsgType, web

from kubepy.kubelet import attach as attach_pumps
from kubepy.kubelet.auth import RequestAuth
from kubepy.metrics import CollectorRegistry, exposition
from kubepy.kubelet.portforward import TUNNEL_PROTOCOL, PortForwardSession
from kubepy.kubelet.runtime import Runtime, RuntimeError_
from kubepy.kubelet.spdy import SpdyError
from kubepy.kubelet.wsportforward import CHANNEL_PROTOCOL, ChannelPortForward, parse_ports
from kubepy.privatefiles import narrow_file, private_dir, write_private
from kubepy.tlsclientauth import request_client_certificates

log = logging.getLogger(__name__)

__all__ = [
    "EXEC_PROTOCOLS",
    "KubeletServer",
    "LogOptions",
    "LogRenderer",
    "PodLocator",
    "ensure_kubelet_cert",
    "exit_status",
    "parse_cri_line",
    "parse_log_options",
]

EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
FOLLOW_POLL = 0.1            # seconds between looks at a followed file
STATE_CHECK = 1.0            # seconds between "is the container still running?" while idle
READ_CHUNK = 64 * 1024
CLONE_NEWNET = 0x40000000
_TRUE = {"1", "true", "True", "TRUE", "yes"}


class PodLocator(Protocol):
    """What the kubelet core gives this server (see the module docstring for errors)."""

    runtime: Runtime

    def locate(self, namespace: str, pod: str, container: str | None, *,
               previous: bool = False) -> tuple[str | None, Path | None]:
        """(container id, CRI log path) of the current - or previous - instance.

        ``container`` None means the pod's only container; a pod with more
        raises ValueError naming them. (None, None): no such pod or container.
        """
        ...

    def pod_netns(self, namespace: str, pod: str) -> tuple[str | None, str] | None:
        """(network namespace path - None for host network -, uid) of a running pod; None if unknown."""
        ...

    def pod_ip(self, namespace: str, pod: str) -> str | None:
        """The address of a pod running on this node; None if unknown."""
        ...


# -- log options and CRI lines (pure) --------------------------------------

@dataclass
class LogOptions:
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since_ns: int | None = None          # records older than this are skipped
    stream: str = "All"                  # All, Stdout, Stderr


def parse_log_options(query: Any, *, now_ns: int | None = None) -> LogOptions:
    """Kubernetes' PodLogOptions from a query; ValueError with its validation message."""
    def integer(name: str, minimum: int) -> int | None:
        raw = query.get(name)
        if raw in (None, ""):
            return None
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{name}: Invalid value: {raw!r}: must be an integer") from None
        if value < minimum:
            raise ValueError(f"{name}: Invalid value: {value}: must be greater than or equal to {minimum}")
        return value

    opts = LogOptions(follow=query.get("follow", "") in _TRUE, previous=query.get("previous", "") in _TRUE,
                      timestamps=query.get("timestamps", "") in _TRUE)
    opts.tail_lines = integer("tailLines", 0)
    opts.limit_bytes = integer("limitBytes", 1)
    since_seconds = integer("sinceSeconds", 1)
    since_time = query.get("sinceTime") or None
    if since_seconds is not None and since_time is not None:
        raise ValueError("at most one of sinceTime or sinceSeconds may be specified")
    if since_seconds is not None:
        opts.since_ns = (time.time_ns() if now_ns is None else now_ns) - since_seconds * 1_000_000_000
    elif since_time is not None:
        try:
            opts.since_ns = rfc3339_ns(since_time)
        except ValueError:
            raise ValueError(f"sinceTime: Invalid value: {since_time!r}: must be RFC 3339") from None
    stream = query.get("stream") or "All"
    if stream not in ("All", "Stdout", "Stderr"):
        raise ValueError(f'stream: Unsupported value: "{stream}": supported values: "All", "Stdout", "Stderr"')
    if stream != "All" and opts.tail_lines is not None:
        raise ValueError("tailLines: Forbidden: tailLines is not supported when a stream is selected")
    opts.stream = stream
    return opts


def rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch for an RFC 3339 time with up to 9 fraction digits."""
    main, frac, zone = text, "", ""
    if text.endswith(("Z", "z")):
        main, zone = text[:-1], "+00:00"
    elif len(text) > 6 and text[-6] in "+-" and text[-3] == ":":
        main, zone = text[:-6], text[-6:]
    if "." in main:
        main, frac = main.split(".", 1)
    if not zone or not frac.isdigit() and frac:
        raise ValueError(text)
    stamp = dt.datetime.fromisoformat(main + zone)
    return int(stamp.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9])


def parse_cri_line(line: bytes) -> tuple[bytes, str, bool, bytes] | None:
    """(timestamp, stream, is_partial, message) of one CRI line without its newline."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"F", b"P"):
        return None
    return parts[0], parts[1].decode(), parts[2] == b"P", parts[3] if len(parts) == 4 else b""


class LogRenderer:
    """Turns CRI lines into what ``kubectl logs`` prints.

    ``feed`` returns complete records (bytes, newline included) ready to
    write; ``P`` pieces wait for their ``F``. The byte budget of
    ``limitBytes`` is kept by ``take``.
    """

    def __init__(self, opts: LogOptions) -> None:
        self.opts = opts
        self._pending: dict[str, tuple[bytes, list[bytes]]] = {}
        self.remaining = opts.limit_bytes

    def feed(self, line: bytes) -> bytes | None:
        parsed = parse_cri_line(line)
        if parsed is None:
            return None
        stamp, stream, partial, message = parsed
        if self.opts.stream != "All" and stream != self.opts.stream.lower():
            return None
        first, pieces = self._pending.pop(stream, (stamp, []))
        pieces.append(message)
        if partial:
            self._pending[stream] = (first, pieces)
            return None
        return self._record(first, b"".join(pieces) + b"\n")

    def flush(self) -> list[bytes]:
        """Pieces whose ``F`` never came (the file ended), as they are."""
        out = [self._record(first, b"".join(pieces)) for first, pieces in self._pending.values()]
        self._pending.clear()
        return [r for r in out if r is not None]

    def _record(self, stamp: bytes, text: bytes) -> bytes | None:
        if self.opts.since_ns is not None:
            try:
                if rfc3339_ns(stamp.decode()) < self.opts.since_ns:
                    return None
            except ValueError:
                pass
        return stamp + b" " + text if self.opts.timestamps else text

    def take(self, data: bytes) -> bytes:
        """``data`` cut to what is left of limitBytes."""
        if self.remaining is None:
            return data
        data = data[:self.remaining]
        self.remaining -= len(data)
        return data

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


def log_files(path: Path) -> list[Path]:
    """The rotated files and the current one, oldest first."""
    rotated = []
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1:]
        if suffix.isdigit():
            rotated.append((int(suffix), p))
    return [p for _, p in sorted(rotated, reverse=True)] + ([path] if path.exists() else [])


class LogTail:
    """Reads a CRI log (rotated files, then the current one) line by line,
    and on from where it stopped when the file grows or is rotated."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None
        self._buf = b""

    def read_existing(self) -> Iterator[bytes]:
        files = log_files(self.path)
        for p in files:
            try:
                f = open(p, "rb")  # noqa: SIM115 - the current file stays open for follow
            except FileNotFoundError:
                continue      # rotated away between listing and opening
            if p == self.path:
                self._file = f
                yield from self._lines()
            else:
                with f:
                    while chunk := f.read(READ_CHUNK):
                        yield from self._split(chunk)
                    if self._buf:
                        yield self._buf       # rotated files end with whole lines
                        self._buf = b""

    def read_new(self) -> list[bytes]:
        """Lines appended since the last read, following one rotation."""
        if self._file is None:
            if not self.path.exists():
                return []
            self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        lines = list(self._lines())
        try:
            rotated = os.stat(self.path).st_ino != os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            rotated = False                  # between rename and re-creation; look again later
        if rotated:
            lines += self._lines()           # what was written before the rename
            if self._buf:
                lines.append(self._buf)
                self._buf = b""
            self._file.close()
            self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
            lines += self._lines()
        return lines

    def _lines(self) -> Iterator[bytes]:
        while chunk := self._file.read(READ_CHUNK):
            yield from self._split(chunk)

    def _split(self, chunk: bytes) -> Iterator[bytes]:
        data = self._buf + chunk
        *complete, self._buf = data.split(b"\n")
        yield from complete

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# -- exec status (pure) ----------------------------------------------------

def exit_status(code: int | None, *, message: str | None = None, reason: str = "InternalError") -> dict[str, Any]:
    """The Status kubectl reads on channel 3: exit code 0 → Success."""
    status: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}}
    if message is not None:
        return {**status, "status": "Failure", "message": message, "reason": reason, "code": 500}
    if code == 0:
        return {**status, "status": "Success"}
    return {**status, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: exit status {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


KUBELET_ERROR_HEADER = "X-Kubepy-Kubelet-Error"  # the kubelet's own refusal, not a proxied pod's answer


def _status_response(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": message, "reason": reason, "code": code}, status=code,
                             headers={KUBELET_ERROR_HEADER: "1"})


# -- TLS -------------------------------------------------------------------

def ensure_kubelet_cert(cert_dir: Path, *, node_name: str, address: str) -> tuple[Path, Path]:
    """A self-signed serving certificate (kubelet.crt/.key), made once and reused
    while it names the node and its address."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private_dir(cert_dir)
    crt, key = cert_dir / "kubelet.crt", cert_dir / "kubelet.key"
    narrow_file(key)
    names: set[str] = {"localhost", node_name}
    ips: set[str] = {"127.0.0.1"}
    try:
        if not ipaddress.ip_address(address).is_unspecified:
            ips.add(address)
    except ValueError:
        names.add(address)
    wanted: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(names)]
    wanted += [x509.IPAddress(ipaddress.ip_address(i)) for i in sorted(ips)]
    if crt.exists() and key.exists():
        have = x509.load_pem_x509_certificate(crt.read_bytes()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        if all(n in have for n in wanted):
            return crt, key
    pkey = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{node_name}@{int(time.time())}")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(pkey.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(wanted), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(pkey, hashes.SHA256()))
    write_private(key, pkey.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    write_private(crt, cert.public_bytes(serialization.Encoding.PEM))
    return crt, key


# -- the server ------------------------------------------------------------

class KubeletServer:
    def __init__(self, locator: PodLocator, *, node_name: str, auth: RequestAuth, cert_dir: Path,
                 address: str, port: int = 10250, client_ca: bytes | None = None,
                 serving_cert: tuple[Path, Path] | None = None, registry: CollectorRegistry | None = None,
                 stats: Any = None, memory_capacity: int | None = None) -> None:
        self.locator = locator
        self.registry = registry            # what /metrics serves (kubepy.kubelet.metrics); None: 404
        self.stats = stats                  # a kubepy.kubelet.stats.StatsCollector; None: no stats routes
        self.memory_capacity = memory_capacity
        self.node_name = node_name
        self.auth = auth
        self.client_ca = client_ca          # PEM: whose client certificates are asked for
        self.serving_cert = serving_cert    # (crt, key) signed by the cluster CA, if the kubelet has one
        self.cert_dir = Path(cert_dir)
        self.address = address
        self.port = port
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._stopping = False      # followed logs end (cleanly) when set

    async def start(self) -> None:
        self._stopping = False
        crt, key = self.serving_cert or ensure_kubelet_cert(self.cert_dir, node_name=self.node_name,
                                                            address=self.address)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(crt, key)
        if self.client_ca:
            # Asked for, any taken; kubepy.kubelet.auth verifies them against the CA.
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.load_verify_locations(cadata=self.client_ca.decode())
            request_client_certificates(ctx)
        app = web.Application(middlewares=[self._auth_mw])
        app.router.add_get("/healthz", self.healthz)
        if self.registry is not None:
            app.router.add_get("/metrics", self.serve_metrics)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        app.router.add_route("*", "/exec/{namespace}/{pod}/{container}", self.exec)
        app.router.add_route("*", "/attach/{namespace}/{pod}/{container}", self.attach)
        app.router.add_route("*", "/portForward/{namespace}/{pod}", self.port_forward)
        app.router.add_route("*", "/proxy/{scheme}/{namespace}/{pod}/{port}/{path:.*}", self.proxy)
        if self.stats is not None:
            app.router.add_get("/stats/summary", self.stats_summary)
            app.router.add_get("/metrics/resource", self.resource_metrics)
        app.on_shutdown.append(self._on_shutdown)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address, self.port, ssl_context=ctx)
        await site.start()
        server = getattr(site, "_server", None)
        if self.port == 0 and server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        log.info("kubelet server listening address=%s port=%d node=%s", self.address, self.port, self.node_name)

    async def stop(self) -> None:
        if self._runner is not None:
            self._stopping = True
            await self._runner.cleanup()
            self._runner = None

    async def _on_shutdown(self, app: web.Application) -> None:
        # Followed logs and open execs may never end by themselves: end them, don't wait them out.
        self._stopping = True
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"kubelet shutting down")

    @web.middleware
    async def _auth_mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        refusal = await self.auth.check(request)
        if refusal is not None:
            return _status_response(*refusal)
        result: web.StreamResponse = await handler(request)
        return result

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def serve_metrics(self, request: web.Request) -> web.Response:
        assert self.registry is not None
        body, content_type = exposition(self.registry, request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def stats_summary(self, request: web.Request) -> web.Response:
        from kubepy.kubelet import stats as stats_mod  # noqa: PLC0415

        if request.query.get("only_cpu_and_memory") not in (None, "true", "1"):
            raise web.HTTPBadRequest(text="only_cpu_and_memory=false is not supported: kubepy reports CPU and memory")
        snapshot = await asyncio.to_thread(self.stats.collect)
        return web.json_response(stats_mod.summary(snapshot, memory_capacity=self.memory_capacity))

    async def resource_metrics(self, request: web.Request) -> web.Response:
        from kubepy.kubelet import stats as stats_mod  # noqa: PLC0415

        snapshot = await asyncio.to_thread(self.stats.collect)
        return web.Response(body=stats_mod.resource_metrics_text(snapshot),
                            headers={"Content-Type": stats_mod.RESOURCE_METRICS_CONTENT_TYPE})

    def _locate(self, request: web.Request, *, previous: bool = False) -> tuple[str | None, Path | None]:
        m = request.match_info
        cid, path = self.locator.locate(m["namespace"], m["pod"], m["container"] or None, previous=previous)
        return cid, Path(path) if path is not None else None     # a str path is accepted too

    # -- logs --------------------------------------------------------------
    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        try:
            opts = parse_log_options(request.query)
            cid, path = self._locate(request, previous=opts.previous)
        except ValueError as e:
            return _status_response(400, "BadRequest", str(e))
        except LookupError as e:
            return _status_response(404, "NotFound", str(e).strip("'\""))
        if cid is None and path is None:
            which = "previous terminated" if opts.previous else "running"
            return _status_response(400 if opts.previous else 404, "BadRequest" if opts.previous else "NotFound",
                                    f'{which} container "{m["container"]}" in pod "{m["pod"]}" not found')
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        renderer = LogRenderer(opts)
        tail = LogTail(path) if path is not None else None
        try:
            if tail is not None:
                await self._write_existing(resp, tail, renderer)
            if opts.follow and not opts.previous and cid is not None and tail is not None \
                    and not renderer.exhausted:
                await self._follow(request, resp, tail, renderer, cid)
            for record in renderer.flush():
                await resp.write(renderer.take(record))
            await resp.write_eof()
        except ConnectionResetError:
            pass      # the client went away
        finally:
            if tail is not None:
                tail.close()
        return resp

    async def _write_existing(self, resp: web.StreamResponse, tail: LogTail, renderer: LogRenderer) -> None:
        n = renderer.opts.tail_lines
        kept: collections.deque[bytes] | None = collections.deque(maxlen=n) if n is not None else None
        out: list[bytes] = []
        size = 0
        for i, line in enumerate(tail.read_existing()):
            record = renderer.feed(line)
            if record is None:
                continue
            if kept is not None:
                kept.append(record)
                continue
            out.append(record)
            size += len(record)
            if size >= READ_CHUNK:
                await resp.write(renderer.take(b"".join(out)))
                out, size = [], 0
                if renderer.exhausted:
                    return
            elif i % 4096 == 0:
                await asyncio.sleep(0)       # reading a large file must not starve the loop
        if kept is not None:
            out = list(kept)
        if out:
            await resp.write(renderer.take(b"".join(out)))

    async def _follow(self, request: web.Request, resp: web.StreamResponse, tail: LogTail,
                      renderer: LogRenderer, cid: str) -> None:
        m = request.match_info
        next_check = time.monotonic() + STATE_CHECK
        stopping = False
        while not renderer.exhausted:
            records = [r for r in map(renderer.feed, tail.read_new()) if r is not None]
            if records:
                await resp.write(renderer.take(b"".join(records)))
                continue
            if stopping:
                return                       # the container is gone and its last lines are out
            if self._stopping or request.transport is None or request.transport.is_closing():
                return
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + STATE_CHECK
                try:
                    current, _ = self.locator.locate(m["namespace"], m["pod"], m["container"] or None)
                    running = current == cid and await self.locator.runtime.task_pid(cid) is not None
                except (LookupError, ValueError, RuntimeError_, OSError) as e:   # pod or container gone
                    log.debug("follow ends container=%s err=%s", cid, e)
                    running = False
                if not running:
                    stopping = True          # one more read for what it wrote last
                    await asyncio.sleep(FOLLOW_POLL)
                    continue
            await asyncio.sleep(FOLLOW_POLL)

    # -- exec and attach ---------------------------------------------------
    async def exec(self, request: web.Request) -> web.StreamResponse:
        return await self._remotecommand(request, "exec", self._run_exec)

    async def attach(self, request: web.Request) -> web.StreamResponse:
        return await self._remotecommand(request, "attach", self._run_attach)

    async def _remotecommand(self, request: web.Request, what: str, run: Any) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, max_msg_size=16 * 1024 * 1024)
        if not ws.can_prepare(request).ok:
            return _status_response(400, "BadRequest", f"{what} needs a WebSocket upgrade with subprotocol "
                                    + " or ".join(EXEC_PROTOCOLS))
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if not any(p in EXEC_PROTOCOLS for p in offered):
            return _status_response(400, "BadRequest", f"unsupported {what} subprotocol(s) {offered}: "
                                    f"this kubelet speaks {', '.join(EXEC_PROTOCOLS)}")
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            await run(request, ws)
        finally:
            self._sockets.discard(ws)
            if not ws.closed:
                await ws.close()
        return ws

    async def _run_attach(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        q = request.query
        flags = {name: q.get(name, "") in _TRUE for name in ("stdin", "stdout", "stderr", "tty")}

        async def fail(message: str, reason: str = "InternalError") -> None:
            await ws.send_bytes(bytes([ERROR]) + json.dumps(exit_status(None, message=message, reason=reason)).encode())

        if not (flags["stdin"] or flags["stdout"] or flags["stderr"]):
            return await fail("you must specify at least one of stdin, stdout, stderr", "BadRequest")
        try:
            cid, path = self._locate(request)
        except (ValueError, LookupError) as e:
            return await fail(str(e).strip("'\""), "BadRequest")
        m = request.match_info
        rt = self.locator.runtime
        running = cid is not None and await rt.task_pid(cid) is not None
        if cid is None or not running:
            return await fail(f'container "{m["container"]}" in pod "{m["pod"]}" is not running', "BadRequest")
        v5 = ws.ws_protocol == EXEC_PROTOCOLS[0]
        sock = rt.attach_socket(cid)
        # A terminal has no separate stderr (kubectl asks for none with -t either).
        stderr = flags["stderr"] and not flags["tty"]
        log.info("attach container=%s stdin=%s tty=%s via=%s", cid, flags["stdin"], flags["tty"],
                 "io-process" if sock.exists() else "log")
        if sock.exists():
            try:
                await attach_pumps.pump_io_socket(ws, sock, stdin=flags["stdin"], stdout=flags["stdout"],
                                            stderr=stderr, v5=v5)
            except OSError as e:         # the IO process ended between the check and the connect
                log.info("attach failed container=%s err=%s", cid, e)
                await fail(f"failed to attach to container: {e}")
            return
        if path is None:
            return await fail(f'container "{m["container"]}" in pod "{m["pod"]}" has no log to attach to')

        async def is_running() -> bool:
            try:
                current, _ = self.locator.locate(m["namespace"], m["pod"], m["container"] or None)
                return current == cid and await rt.task_pid(cid) is not None
            except (LookupError, ValueError, RuntimeError_, OSError):
                return False

        await attach_pumps.pump_log_follow(ws, path, stdout=flags["stdout"], stderr=stderr,
                                     is_running=is_running, parse_line=parse_cri_line)

    async def _run_exec(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        q = request.query
        argv = q.getall("command", [])
        flags = {name: q.get(name, q.get(legacy, "")) in _TRUE
                 for name, legacy in (("stdin", "input"), ("stdout", "output"), ("stderr", "error"), ("tty", "tty"))}

        async def fail(message: str, reason: str = "InternalError") -> None:
            await ws.send_bytes(bytes([ERROR]) + json.dumps(exit_status(None, message=message, reason=reason)).encode())

        if not argv:
            return await fail("you must specify at least 1 command", "BadRequest")
        if not (flags["stdin"] or flags["stdout"] or flags["stderr"]):
            return await fail("you must specify at least one of stdin, stdout, stderr", "BadRequest")
        try:
            cid, _ = self._locate(request)
        except (ValueError, LookupError) as e:
            return await fail(str(e).strip("'\""), "BadRequest")
        m = request.match_info
        if cid is None:
            return await fail(f'container "{m["container"]}" in pod "{m["pod"]}" is not running', "BadRequest")
        exec_id = "exec-" + secrets.token_hex(8)
        try:
            proc = await self.locator.runtime.exec(cid, exec_id, list(argv), tty=flags["tty"],
                                                     stdin=flags["stdin"])
        except (RuntimeError_, OSError) as e:
            log.warning("exec failed container=%s err=%s", cid, e)
            return await fail(f"failed to exec in container: {e}")
        log.info("exec container=%s exec_id=%s argv=%s tty=%s", cid, exec_id, argv, flags["tty"])
        await _pump_exec(ws, proc, stdin=flags["stdin"], stdout=flags["stdout"], stderr=flags["stderr"],
                         tty=flags["tty"], v5=ws.ws_protocol == EXEC_PROTOCOLS[0])


    # -- HTTP to a pod -------------------------------------------------------
    async def proxy(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        if m["scheme"] not in ("http", "https") or not m["port"].isdigit():
            return _status_response(400, "BadRequest", f"invalid proxy target {m['scheme']}:{m['port']}")
        ip = self.locator.pod_ip(m["namespace"], m["pod"])
        if not ip:
            return _status_response(404, "NotFound", f'pod "{m["pod"]}" is not running on this node')
        host = f"[{ip}]" if ":" in ip else ip
        url = f"{m['scheme']}://{host}:{m['port']}/{m['path']}"
        if request.query_string:
            url += "?" + request.query_string
        hop = {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "host",
               "authorization", "content-length"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop}
        body = await request.read() if request.body_exists else None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(ssl=False)) as session:
            try:
                upstream = await session.request(request.method, url, headers=headers, data=body,
                                                 allow_redirects=False, auto_decompress=False)
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                log.info("proxy to pod failed pod=%s/%s url=%s err=%s", m["namespace"], m["pod"], url, e)
                return _status_response(503, "ServiceUnavailable", f"error trying to reach pod {m['pod']} "
                                        f"at {url}: {e or type(e).__name__}")
            async with upstream:
                resp = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers={
                    k: v for k, v in upstream.headers.items() if k.lower() not in hop})
                await resp.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp

    # -- port-forward ------------------------------------------------------
    async def port_forward(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        # kubectl tunnels SPDY through the WebSocket; other clients (the Python client) speak the
        # channel protocol, which Kubernetes also assumes when no subprotocol is offered.
        protocols = (TUNNEL_PROTOCOL, CHANNEL_PROTOCOL)
        ws = web.WebSocketResponse(protocols=protocols, max_msg_size=4 * 1024 * 1024)
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        chosen = next((p for p in offered if p in protocols), None if offered else CHANNEL_PROTOCOL)
        if not ws.can_prepare(request).ok or chosen is None:
            return _status_response(400, "BadRequest", "port-forward needs a WebSocket upgrade with subprotocol "
                                    + " or ".join(protocols))
        ports: list[int] = []
        if chosen == CHANNEL_PROTOCOL:
            try:
                ports = parse_ports(request.query.getall("port", []))
            except ValueError as e:
                return _status_response(400, "BadRequest", str(e))
        found = self.locator.pod_netns(m["namespace"], m["pod"])
        if found is None:
            return _status_response(404, "NotFound", f'pod "{m["pod"]}" is not running on this node')
        netns, uid = found
        await ws.prepare(request)
        self._sockets.add(ws)

        async def send(data: bytes) -> None:
            await ws.send_bytes(data)

        async def dial(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            sock = await asyncio.to_thread(socket_in_netns, netns)
            try:
                sock.setblocking(False)
                await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), 10)
            except BaseException:
                sock.close()
                raise
            return await asyncio.open_connection(sock=sock)

        log.info("port-forward session pod=%s/%s protocol=%s", m["namespace"], m["pod"], chosen)
        try:
            if chosen == TUNNEL_PROTOCOL:
                await self._spdy_port_forward(ws, PortForwardSession(send=send, dial=dial, pod=m["pod"], uid=uid))
            else:
                await self._channel_port_forward(ws, ChannelPortForward(ports=ports, send=send, dial=dial,
                                                                        pod=m["pod"], uid=uid))
        finally:
            self._sockets.discard(ws)
            if not ws.closed:
                await ws.close()
        return ws

    @staticmethod
    async def _spdy_port_forward(ws: web.WebSocketResponse, session: PortForwardSession) -> None:
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await session.feed(msg.data)
                if session.closed:
                    break
        except SpdyError:
            pass
        finally:
            await session.close()

    @staticmethod
    async def _channel_port_forward(ws: web.WebSocketResponse, forward: ChannelPortForward) -> None:
        """Until the client closes the socket or every port is done (then the kubelet closes it)."""
        async def read() -> None:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await forward.feed(msg.data)

        await forward.start()
        reader, finished = asyncio.create_task(read()), asyncio.create_task(forward.done())
        try:
            await asyncio.wait({reader, finished}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            await forward.close()
            await asyncio.gather(reader, finished, return_exceptions=True)


_libc = None


def socket_in_netns(netns: str | None) -> socket.socket:
    """A TCP socket created in the network namespace at ``netns`` (None: this one).

    setns moves only the calling thread; run this in a worker thread, which is
    moved back before it returns (or the process exits: a pool thread left in
    a pod's namespace would be far worse than a crash)."""
    global _libc
    if netns is None:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(netns, os.O_RDONLY)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            try:
                return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            finally:
                if _libc.setns(own, CLONE_NEWNET) != 0:
                    os._exit(70)
        finally:
            os.close(target)
    finally:
        os.close(own)


async def _pump_exec(ws: web.WebSocketResponse, proc: asyncio.subprocess.Process, *, stdin: bool,
                     stdout: bool, stderr: bool, tty: bool, v5: bool) -> None:
    """Moves bytes between the WebSocket and the process until it exits; sends its Status."""
    if proc.stdin is not None and not stdin and not tty:
        proc.stdin.close()              # a terminal stays open: resizes go through it
    # As the kubelet does: an empty frame on the lowest output channel says "connected".
    if stdout or stderr:
        await ws.send_bytes(bytes([STDOUT if stdout else STDERR]))

    async def copy_out(reader: asyncio.StreamReader | None, channel: int, wanted: bool) -> None:
        if reader is None:
            return
        while True:
            try:
                chunk = await reader.read(32 * 1024)
            except OSError:                  # EIO: the pty's other side is closed
                return
            if not chunk:
                return
            if wanted and not ws.closed:
                await ws.send_bytes(bytes([channel]) + chunk)

    async def copy_in() -> None:
        async for msg in ws:
            # Text frames count too: the official Python client sends str stdin as chr(channel) + text.
            raw = msg.data.encode() if msg.type == WSMsgType.TEXT else msg.data
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT) or not raw:
                continue
            channel, data = raw[0], raw[1:]
            if channel == STDIN and stdin and proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.write(data)
                await proc.stdin.drain()
            elif channel == RESIZE and tty:
                _resize(proc, data)
            elif channel == CLOSE and v5 and data[:1] == bytes([STDIN]) and proc.stdin is not None:
                if tty:
                    proc.stdin.write(b"\x04")      # a terminal has no EOF of its own: send ^D
                else:
                    proc.stdin.close()

    reader = asyncio.create_task(copy_in())
    outputs = asyncio.gather(copy_out(proc.stdout, STDOUT, stdout), copy_out(proc.stderr, STDERR, stderr))
    try:
        done, _ = await asyncio.wait({reader, outputs}, return_when=asyncio.FIRST_COMPLETED)
        if reader in done and outputs not in done:
            # The client hung up first: stop the exec'd process (ctr; see the module doc).
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            outputs.cancel()
            return
        code = await proc.wait()
        if code < 0:
            code = 128 - code                # killed by a signal, as a shell reports it
        if not ws.closed:
            await ws.send_bytes(bytes([ERROR]) + json.dumps(exit_status(code)).encode())
    finally:
        reader.cancel()
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        await asyncio.gather(reader, outputs, return_exceptions=True)


def _resize(proc: asyncio.subprocess.Process, data: bytes) -> None:
    """Apply {"Width": w, "Height": h} to the exec's terminal and tell its process."""
    try:
        size = json.loads(data)
        width, height = int(size.get("Width", 0)), int(size.get("Height", 0))
        pipe = proc.stdin.transport.get_extra_info("pipe") if proc.stdin is not None else None
        if pipe is None or width <= 0 or height <= 0:
            return
        fcntl.ioctl(pipe.fileno(), termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        # ctr is no session's foreground job, so the kernel sends it no SIGWINCH: do it.
        os.kill(proc.pid, signal.SIGWINCH)
    except (ValueError, OSError, AttributeError, TypeError) as e:
        log.debug("resize ignored err=%s", e)
