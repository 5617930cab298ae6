"""The API server's listening socket: TLS, with deadlines on connections that
send nothing, so idle or slow clients cannot hold file descriptors forever.

aiohttp's ``TCPSite`` keeps a connection that never finishes its TLS
handshake for asyncio's default minute, and one that never finishes a
request's headers for its keep-alive timeout (an hour). Kubernetes' Go
server bounds both (``ReadHeaderTimeout`` 32 s, ``IdleTimeout`` 90 s). Here:

* ``tls_handshake``: the handshake must end this long after the TCP accept
  (``loop.create_server(ssl_handshake_timeout=...)``);
* ``request_header``: the first request's headers must be complete this long
  after the handshake (a timer on the connection, :class:`_TimedRequestHandler`);
* ``idle``: a keep-alive connection between requests is closed after this
  long, which also bounds the headers of every later request (aiohttp's
  keep-alive timer, armed when a response ends).

Deadlines stop once a request's headers are in: a watch, ``logs -f`` or an
exec session may stream for as long as it likes, since the connection is
then busy with a handler, never idle.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["ConnectionTimeouts", "TimedTCPSite"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionTimeouts:
    tls_handshake: float = 10.0
    request_header: float = 30.0
    idle: float = 90.0

    def __post_init__(self) -> None:
        for name in ("tls_handshake", "request_header", "idle"):
            if not getattr(self, name) > 0:
                raise ValueError(f"the {name.replace('_', ' ')} timeout must be positive, got {getattr(self, name)}")


class _TimedRequestHandler(web.RequestHandler):
    """aiohttp's connection protocol, closed if no request's headers arrive
    within ``header_timeout`` of the connection being made."""

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._header_timer = asyncio.get_running_loop().call_later(self._header_timeout, self._header_deadline)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _header_deadline(self) -> None:
        self._header_timer = None
        # _request_count counts requests whose headers the parser completed.
        if self.transport is None or self._request_count > 0:
            return
        log.info("closed connection peer=%s reason=RequestHeaderTimeout timeout=%gs",
                 _peer(self.transport), self._header_timeout)
        self.force_close()


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


class TimedTCPSite(web.TCPSite):
    """``web.TCPSite`` whose connections get :class:`ConnectionTimeouts`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, ssl_context: ssl.SSLContext,
                 timeouts: ConnectionTimeouts, backlog: int = 128, reuse_address: bool | None = None) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, backlog=backlog, reuse_address=reuse_address)
        self._timeouts = timeouts

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        t = self._timeouts

        def connection() -> _TimedRequestHandler:
            # The handler web.Server itself would make (AppRunner's access_log=None), plus the header deadline.
            return _TimedRequestHandler(server, loop=loop, keepalive_timeout=t.idle, access_log=None,
                                        header_timeout=t.request_header)

        self._server = await loop.create_server(
            connection, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, ssl_handshake_timeout=t.tls_handshake)
