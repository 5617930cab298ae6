"""The dashboard's one way to the cluster: the user's own request, forwarded with the user's token.

    browser ──HTTPS, Authorization: Bearer <user's token>──► dashboard /api/..., /apis/..., /version
            ──HTTPS (cluster CA verified), the same Authorization──► API server

The dashboard has no credentials here: a request without a bearer token is
answered 401 by the dashboard itself and never reaches the API server, and
no client certificate is presented upstream, so the API server authenticates
the user's token and RBAC decides. Its Status answers (403 with upstream's
message, 404, 409, 422) come back unchanged for the views to show.

Responses are streamed, so ``?watch=1`` (newline-delimited watch events) and
``pods/NAME/log?follow=true`` reach the browser as they happen; a browser
that goes away cancels the handler (the server runs with
``handler_cancellation``), which closes the upstream stream.

Refused here (``refusal``), because the browser would run what they return
with the dashboard's origin, where the user's token lives: the ``proxy``
subresources (a pod's or Service's own HTML) and the streaming-protocol
subresources ``exec``, ``attach`` and ``portforward`` (no view uses them).
Every forwarded answer also carries ``Content-Security-Policy: sandbox`` and
``nosniff``, so no answer is ever run as a page.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)

__all__ = ["FORWARDED_PREFIXES", "bearer_token", "forward", "refusal", "status_response", "subresource",
           "unauthorized"]

FORWARDED_PREFIXES = ("/api", "/apis", "/version")
REFUSED_SUBRESOURCES = frozenset({"proxy", "exec", "attach", "portforward"})
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
# Only what describes the user's request; never cookies, never impersonation headers.
REQUEST_HEADERS = ("Authorization", "Accept", "Content-Type")
RESPONSE_HEADERS = ("Content-Type", "Warning", "Audit-Id")
FORWARD_SECURITY_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
# The namespace subresources (upstream's RequestInfoFactory: /namespaces/NS/status is not a resource list).
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


def status_response(code: int, reason: str, message: str) -> web.Response:
    """A Kubernetes ``Status``, as the API server would answer, so the views read one shape."""
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": message, "reason": reason, "code": code},
                             status=code, headers=FORWARD_SECURITY_HEADERS)


def bearer_token(header: str | None) -> str | None:
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def subresource(path: str) -> str | None:
    """The subresource a resource path names (``/api/v1/namespaces/ns/pods/p/log`` → ``log``), else None."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        rest = parts[3:]
    else:
        return None
    if rest[:1] == ["proxy"]:                    # the old /api/v1/proxy/... form
        return "proxy"
    if rest[:1] == ["namespaces"] and len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
        rest = rest[2:]
    return rest[2] if len(rest) > 2 else None


def unauthorized(request: web.Request) -> web.Response | None:
    """The 401 for a request without the user's bearer token (the dashboard holds none of its own)."""
    if bearer_token(request.headers.get("Authorization")) is not None:
        return None
    return status_response(401, "Unauthorized",
                           "log in: the dashboard sends your bearer token to the API server and holds none "
                           "of its own (Authorization: Bearer <token> is missing)")


def refusal(method: str, path: str) -> str | None:
    """Why the dashboard will not forward this request, or None to forward it."""
    if method not in METHODS:
        return f"the dashboard does not forward {method} requests"
    if not any(path == p or path.startswith(p + "/") for p in FORWARDED_PREFIXES):
        return f"the dashboard forwards only {', '.join(FORWARDED_PREFIXES)} to the API server, not {path}"
    sub = subresource(path)
    if sub in REFUSED_SUBRESOURCES:
        return (f"the dashboard does not forward the {sub} subresource: what it returns would run with the "
                f"dashboard's origin; use kubectl {'port-forward' if sub in ('proxy', 'portforward') else sub}")
    return None


async def forward(request: web.Request, *, session: aiohttp.ClientSession, server: str,
                  ssl: Any = None) -> web.StreamResponse:
    """Forward ``request`` to the API server at ``server`` with the user's own Authorization."""
    if (missing := unauthorized(request)) is not None:
        return missing
    why = refusal(request.method, request.path)
    if why is not None:
        return status_response(403 if request.path.startswith(("/api/", "/apis/")) else 404,
                               "Forbidden" if request.path.startswith(("/api/", "/apis/")) else "NotFound", why)
    headers = {h: request.headers[h] for h in REQUEST_HEADERS if h in request.headers}
    headers["User-Agent"] = "kubepy-dashboard"
    body = await request.read() if request.body_exists else None
    url = server.rstrip("/") + request.rel_url.path_qs
    try:
        async with session.request(request.method, url, headers=headers, data=body, ssl=ssl,
                                   allow_redirects=False, auto_decompress=True) as upstream:
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for h in RESPONSE_HEADERS:
                if h in upstream.headers:
                    resp.headers[h] = upstream.headers[h]
            resp.headers.update(FORWARD_SECURITY_HEADERS)
            await resp.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
            except ConnectionResetError:
                log.debug("browser went away method=%s path=%s", request.method, request.path)
            except aiohttp.ClientError as e:   # the API server ended the stream mid-way: the browser's ends too
                log.info("upstream stream ended method=%s path=%s err=%s", request.method, request.path,
                         e or type(e).__name__)
            return resp
    except (aiohttp.ClientConnectionError, TimeoutError) as e:
        log.warning("API server unreachable server=%s method=%s path=%s err=%s", server, request.method,
                    request.path, e or type(e).__name__)
        return status_response(502, "ServiceUnavailable",
                               f"the dashboard cannot reach the API server at {server}: {e or type(e).__name__}")
