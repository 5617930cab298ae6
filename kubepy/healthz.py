"""``/healthz`` for a daemon whose work runs on one asyncio event loop.

A daemon like the controller manager is alive only while its event loop
turns: a reconcile that never yields stops every controller at once while
the process looks fine to ``ps``. ``LoopHeartbeat`` is a task that wakes every
``interval`` and records when it did; ``HealthServer`` answers plain HTTP on
its own thread, so it still answers (500, naming the lag) when the loop is
stuck. The supervisor (``kubepy.controlplane``) polls it and restarts a
process whose health fails. The same port serves the daemon's ``/metrics``
(``kubepy.metrics``) when it is given a registry, as upstream's scheduler and
controller manager serve both on one port.

    GET /healthz, /livez, /readyz   200 "ok" | 500 "event loop lag 12.3s exceeds 5.0s"
    GET /metrics                    the registry in the Prometheus text format (404 without one)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from kubepy.metrics import CollectorRegistry, exposition

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_LAG = 5.0


class LoopHeartbeat:
    """When the event loop last got round to us; read from any thread."""

    def __init__(self, *, interval: float = 0.25, max_lag: float = DEFAULT_MAX_LAG) -> None:
        self.interval = interval
        self.max_lag = max_lag
        self._last = time.monotonic()
        self._worst = 0.0  # the largest overshoot of a sleep, since start

    async def run(self) -> None:
        warned = False
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval)
            self._last = now = time.monotonic()
            lag = now - before - self.interval
            self._worst = max(self._worst, lag)
            if lag > self.max_lag / 2 and not warned:
                log.warning("event loop lag lag=%.1fs interval=%.2fs", lag, self.interval)
            warned = lag > self.max_lag / 2

    def lag(self, now: float | None = None) -> float:
        """How late the loop is right now: 0 while it keeps its beat."""
        now = time.monotonic() if now is None else now
        return max(0.0, now - self._last - self.interval)

    def check(self) -> tuple[bool, str]:
        lag = self.lag()
        if lag > self.max_lag:
            return False, f"event loop lag {lag:.1f}s exceeds {self.max_lag:.1f}s"
        return True, "ok"


class HealthServer:
    """Plain HTTP on a thread of its own (the loop it reports on may be stuck)."""

    def __init__(self, heartbeat: LoopHeartbeat, bind: str, *, registry: CollectorRegistry | None = None) -> None:
        host, _, port = bind.rpartition(":")
        self.heartbeat = heartbeat
        beat = heartbeat

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?")[0]
                if path == "/metrics" and registry is not None:
                    body, content_type = exposition(registry, self.headers.get("Accept"))
                    self._send(200, body, content_type)
                    return
                if path not in ("/healthz", "/livez", "/readyz"):
                    self._send(404, "not found\n")
                    return
                ok, message = beat.check()
                self._send(200 if ok else 500, message + "\n")

            def _send(self, code: int, body: str | bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                data = body.encode() if isinstance(body, str) else body
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a probe every few seconds is not news

        self._server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="healthz", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()
        log.info("serving health addr=%s:%d", *self._server.server_address[:2])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


async def with_loop_health(coro: Awaitable[T], *, bind: str | None, max_lag: float = DEFAULT_MAX_LAG,
                           registry: CollectorRegistry | None = None, required: bool = True) -> T:
    """Run ``coro`` with a heartbeat on this loop and, when ``bind`` is set, /healthz (and
    /metrics from ``registry``) served on it. When not ``required`` (a node agent's metrics port),
    an address that cannot be bound is an error in the log, not a daemon that fails to start."""
    beat = LoopHeartbeat(max_lag=max_lag)
    server = None
    if bind:
        try:
            server = HealthServer(beat, bind, registry=registry)
        except OSError as e:
            if required:
                raise
            log.error("health and metrics not served addr=%s err=%s", bind, e)
    task = asyncio.create_task(beat.run(), name="loop-heartbeat")
    if server is not None:
        server.start()
    try:
        return await coro
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if server is not None:
            server.stop()
