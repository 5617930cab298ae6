"""Several watches in one response, so a view keeps one connection however much it watches.

A browser opens at most six HTTP/1.1 connections to one server, and a watch holds one for
minutes: a view watching seven kinds would wait on its seventh, and an action (a scale, a
delete) would find no connection left. So a view lists each kind with an ordinary request,
then asks for all its watches at once:

    GET /dashboard/watch?w=<path?query>&w=<path?query>…      Authorization: Bearer <user's token>

Each ``w`` is an API path with its watch query (``watch=1`` is added when missing). The
dashboard opens every one upstream with the caller's own Authorization (the same rules as
``kubepy.dashboard.proxy``: no token is 401, refused paths are refused) and writes one line per
upstream line, tagged with the index of its watch:

    {"i": 0, "event": {"type": "ADDED", "object": {…}}}     a watch event, as the API server sent it
    {"i": 1, "error": {…Status…}, "code": 403}              that watch was refused (it is not retried)
    {"i": 2, "end": true}                                    that watch ended (its timeoutSeconds, or the server)

The views close the stream at the first ``end`` or ``error`` and open it again from the
resourceVersions they have (listing again after a 410), so every watch restarts together.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
from aiohttp import web

from kubepy.dashboard.proxy import REQUEST_HEADERS, refusal, status_response, unauthorized

log = logging.getLogger(__name__)

__all__ = ["MAX_WATCHES", "multiplexed_watch", "watch_targets"]

MAX_WATCHES = 16
MAX_LINE = 32 * 1024 * 1024    # one watch event; the API server's objects are far smaller


def watch_targets(values: list[str]) -> list[str]:
    """The upstream path?query of each ``w``, with ``watch=1``; a ValueError says which one is refused."""
    if not values:
        raise ValueError("no watch asked for: give w=<API path?query> once per watch")
    if len(values) > MAX_WATCHES:
        raise ValueError(f"{len(values)} watches: at most {MAX_WATCHES} in one stream")
    out = []
    for value in values:
        parts = urlsplit(value)
        if parts.scheme or parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"{value!r}: a watch is an API path, not a URL")
        why = refusal("GET", parts.path)
        if why is not None:
            raise ValueError(why)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "watch"]
        out.append(f"{parts.path}?{urlencode([('watch', '1'), *query])}")
    return out


async def multiplexed_watch(request: web.Request, *, session: aiohttp.ClientSession, server: str,
                            ssl: Any = None) -> web.StreamResponse:
    if (missing := unauthorized(request)) is not None:
        return missing
    try:
        targets = watch_targets(request.query.getall("w", []))
    except ValueError as e:
        return status_response(400, "BadRequest", str(e))
    headers = {h: request.headers[h] for h in REQUEST_HEADERS if h in request.headers and h != "Content-Type"}
    headers["User-Agent"] = "kubepy-dashboard"
    resp = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-store",
                                       "X-Content-Type-Options": "nosniff"})
    await resp.prepare(request)
    lock = asyncio.Lock()

    async def send(message: bytes) -> None:
        async with lock:
            await resp.write(message)

    async def one(i: int, target: str) -> None:
        prefix = b'{"i":%d,' % i
        try:
            async with session.get(server.rstrip("/") + target, headers=headers, ssl=ssl) as upstream:
                if upstream.status != 200:
                    text = await upstream.text()
                    try:
                        status = json.loads(text)
                    except ValueError:
                        status = {"kind": "Status", "code": upstream.status, "message": text.strip()[:500]}
                    await send(prefix + b'"code":%d,"error":' % upstream.status + json.dumps(status).encode() + b"}\n")
                    return
                buf = b""
                async for chunk in upstream.content.iter_any():
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    if len(buf) > MAX_LINE:
                        raise aiohttp.ClientPayloadError(f"a watch event longer than {MAX_LINE} bytes")
                    for line in lines:
                        if line.strip():
                            await send(prefix + b'"event":' + line + b"}\n")
        except aiohttp.ClientError as e:
            log.info("watch ended early target=%s err=%s", target, e or type(e).__name__)
            message = f"the dashboard lost the watch {target}: {e or type(e).__name__}"
            await send(prefix + b'"code":502,"error":' + json.dumps(
                {"kind": "Status", "code": 502, "reason": "ServiceUnavailable", "message": message}).encode() + b"}\n")
            return
        await send(prefix + b'"end":true}\n')

    try:
        async with asyncio.TaskGroup() as group:
            for i, target in enumerate(targets):
                group.create_task(one(i, target))
        await resp.write_eof()
    except* ConnectionResetError:
        log.debug("browser went away watches=%d", len(targets))
    return resp
