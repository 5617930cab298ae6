"""The dashboard's HTTPS server: the static views, the forwarding of API requests, one YAML helper.

Talks to: the API server only, and only with the user's token (``kubepy.dashboard.proxy``).

    GET  /                        index.html (the views; a strict Content-Security-Policy: only our own
                                  scripts, styles and connections; no inline code)
    GET  /static/...              the ES modules, CSS and SVG, each with its content type
    *    /api/..., /apis/..., /version   forwarded with the caller's Authorization
    POST /dashboard/manifest      a pasted YAML (or JSON) manifest as a JSON list of objects, so the
                                  browser can apply each with server-side apply (no cluster access here)
    GET  /dashboard/watch?w=…     several watches in one stream, each as the user (kubepy.dashboard.watchmux)
    GET  /healthz                 "ok" (no authentication; the supervisor probes the plain-HTTP port)

The views keep the token in ``sessionStorage`` and send it as a header, never
as a cookie, so another site cannot make the browser act for the user.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from kubepy.dashboard.proxy import FORWARDED_PREFIXES, forward, status_response
from kubepy.dashboard.watchmux import multiplexed_watch

log = logging.getLogger(__name__)

__all__ = ["CONTENT_SECURITY_POLICY", "DashboardConfig", "ManifestError", "make_app", "parse_manifest",
           "run_dashboard"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                 ".ico": "image/x-icon", ".json": "application/json"}
# No inline scripts or styles anywhere: a name or a log line shown in a view can never become code.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}
MAX_BODY = 3 * 1024 * 1024    # a manifest or an object; the API server refuses more than etcd keeps anyway
MAX_MANIFEST_DOCS = 200


@dataclass
class DashboardConfig:
    server: str                       # the API server's URL
    ca_pem: bytes | None = None       # its CA (None: the system's trust store)
    bind_address: str = "0.0.0.0"
    port: int = 8443
    tls_cert_file: Path | None = None
    tls_private_key_file: Path | None = None


CONFIG = web.AppKey("config", DashboardConfig)
STATIC = web.AppKey("static_dir", Path)
UPSTREAM_SSL = web.AppKey("upstream_ssl", object)
SESSION = web.AppKey("session", aiohttp.ClientSession)


class ManifestError(ValueError):
    """A pasted manifest that is not a list of Kubernetes objects; ``str()`` says which document and why."""


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a few lines of aliases can expand to gigabytes of JSON."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases are not accepted in a manifest",
                                              event.start_mark)
        return super().compose_node(parent, index)


def parse_manifest(text: str) -> list[dict[str, Any]]:
    """The objects of a multi-document YAML (or JSON) manifest; a ``List`` is unpacked; empty documents skipped."""
    try:
        docs = list(yaml.load_all(text, Loader=_NoAliasLoader))   # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ManifestError(f"not valid YAML: {e}") from None
    out: list[dict[str, Any]] = []
    for i, doc in enumerate(docs, 1):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"document {i} is a {type(doc).__name__}, not an object")
        items = doc.get("items") if str(doc.get("kind", "")).endswith("List") else [doc]
        for obj in items or []:
            if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind"):
                raise ManifestError(f"document {i}: every object needs apiVersion and kind")
            if not isinstance(obj.get("metadata"), dict) or not obj["metadata"].get("name"):
                raise ManifestError(f"document {i} ({obj.get('kind')}): metadata.name is required")
            out.append(obj)
    if len(out) > MAX_MANIFEST_DOCS:
        raise ManifestError(f"{len(out)} objects: at most {MAX_MANIFEST_DOCS} at once")
    if not out:
        raise ManifestError("the manifest holds no object")
    return out


def _upstream_ssl(config: DashboardConfig) -> ssl.SSLContext | None:
    if not config.server.startswith("https:"):
        return None
    return ssl.create_default_context(cadata=config.ca_pem.decode() if config.ca_pem else None)


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("path") or "index.html"
    root = request.app[STATIC]
    path = (root / name).resolve()
    if root not in path.parents or not path.is_file():
        return web.Response(status=404, text="not found", headers=PAGE_HEADERS)
    ctype = CONTENT_TYPES.get(path.suffix)
    if ctype is None:
        return web.Response(status=404, text="not found", headers=PAGE_HEADERS)
    return web.Response(body=path.read_bytes(), headers={**PAGE_HEADERS, "Content-Type": ctype})


async def _index(request: web.Request) -> web.StreamResponse:
    return await _static(request)


async def _manifest(request: web.Request) -> web.Response:
    text = await request.text()
    try:
        objects = parse_manifest(text)
    except ManifestError as e:
        return status_response(400, "BadRequest", str(e))
    return web.json_response(objects, headers={"Cache-Control": "no-store"})


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _watch(request: web.Request) -> web.StreamResponse:
    return await multiplexed_watch(request, session=request.app[SESSION], server=request.app[CONFIG].server,
                                   ssl=request.app[UPSTREAM_SSL])


async def _forward(request: web.Request) -> web.StreamResponse:
    return await forward(request, session=request.app[SESSION], server=request.app[CONFIG].server,
                         ssl=request.app[UPSTREAM_SSL])


def make_app(config: DashboardConfig, *, static_dir: Path = STATIC_DIR) -> web.Application:
    """The dashboard as an aiohttp app (its client session lives and dies with it)."""
    app = web.Application(client_max_size=MAX_BODY)
    app[CONFIG] = config
    app[STATIC] = static_dir.resolve()
    app[UPSTREAM_SSL] = _upstream_ssl(config)

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        # No total timeout: watches and followed logs last as long as the browser keeps them.
        app[SESSION] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                                               auto_decompress=True)
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    r = app.router
    r.add_get("/", _index)
    r.add_get("/static/{path:.+}", _static)
    r.add_get("/healthz", _healthz)
    r.add_post("/dashboard/manifest", _manifest)
    r.add_get("/dashboard/watch", _watch)
    for prefix in FORWARDED_PREFIXES:
        r.add_route("*", prefix, _forward)
        r.add_route("*", prefix + "/{tail:.*}", _forward)
    return app


def serving_tls(config: DashboardConfig) -> ssl.SSLContext:
    if config.tls_cert_file is None or config.tls_private_key_file is None:
        raise ValueError("--tls-cert-file and --tls-private-key-file are required: the dashboard serves HTTPS only "
                         "(a token must never cross the network in clear)")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.tls_cert_file, config.tls_private_key_file)
    return ctx


async def run_dashboard(config: DashboardConfig, *, started: asyncio.Event | None = None) -> None:
    tls = serving_tls(config)
    # A browser that goes away cancels its handler, which closes the watch it was forwarding.
    runner = web.AppRunner(make_app(config), access_log=None, handler_cancellation=True, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.bind_address, config.port, ssl_context=tls, reuse_address=True)
    await site.start()
    host = f"[{config.bind_address}]" if ":" in config.bind_address else config.bind_address
    log.info("dashboard serving url=https://%s:%d/ apiserver=%s", host, config.port, config.server)
    if started is not None:
        started.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
