"""Joining waits for the API server: unreachable, timed out, 5xx and 429 are tried again with
back-off, one log line per failed attempt; a refusal (4xx) ends the kubelet at once; a stop
ends the wait. A small aiohttp server on 127.0.0.1 plays the API server's join endpoint."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from kubepy.kubelet import kubelet as kk
from kubepy.kubelet.config import KubeletConfig
from kubepy.privatefiles import write_private

BOOTSTRAP = "abcdef.0123456789abcdef"


class JoinServer:
    """Answers ``POST /kubepy/v1/join`` with the next of ``plan``: "hang", or a status (200: a token)."""

    def __init__(self, plan: list[str | int]) -> None:
        self.plan = plan
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.headers.get("Authorization", ""), await request.json()))
        step = self.plan.pop(0) if self.plan else 200
        if step == "hang":
            await asyncio.sleep(5)
            step = 503
        if step == 200:
            return web.json_response({"token": "node-token-1"})
        return web.json_response({"kind": "Status", "status": "Failure", "message": f"planned {step}",
                                  "code": step}, status=int(step))


@pytest.fixture
async def join_server() -> AsyncIterator[JoinServer]:
    srv = JoinServer([])
    app = web.Application()
    app.router.add_post("/kubepy/v1/join", srv.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    srv.url = f"http://127.0.0.1:{port}"
    try:
        yield srv
    finally:
        await runner.cleanup()


def closed_port() -> str:
    """A loopback URL nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def config(tmp_path: Path, server: str) -> KubeletConfig:
    token_file = tmp_path / "bootstrap-token"
    write_private(token_file, BOOTSTRAP + "\n")
    return KubeletConfig(node_name="kptest-join-retry", server=server, root_dir=tmp_path / "kubelet",
                         bootstrap_token_file=token_file)


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(kk, "JOIN_ATTEMPT_TIMEOUT", aiohttp.ClientTimeout(total=0.3), raising=False)
    monkeypatch.setattr(kk, "JOIN_FIRST_DELAY", 0.1, raising=False)


async def test_join_retries_timeouts_refused_connections_and_5xx(join_server, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="kubepy.kubelet.kubelet")
    down = closed_port()
    join_server.plan = ["hang", 503, 429, 200]
    async with asyncio.timeout(10):
        token = await kk.join(config(tmp_path, f"{down},{join_server.url}"), None)
    assert token == "node-token-1"
    assert join_server.seen == [(f"Bearer {BOOTSTRAP}", {"nodeName": "kptest-join-retry"})] * 4
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("join failed")]
    # each round: the down server (next: the live one), then the live one (retry_in, doubling);
    # in round 4 the live one answers
    assert len(lines) == 7, lines
    for n, first in enumerate(lines[::2], start=1):
        assert first.startswith(f"join failed node=kptest-join-retry server={down} attempt={n} "
                                f"next={join_server.url} err="), first
    for n, second in enumerate(lines[1::2], start=1):
        assert f"server={join_server.url} attempt={n} retry_in={0.1 * 2 ** (n - 1):.1f}s" in second, second
    assert "TimeoutError" in lines[1] and "status 503: planned 503" in lines[3] and "status 429" in lines[5]


async def test_join_refused_is_not_retried(join_server, tmp_path):
    join_server.plan = [401]
    with pytest.raises(SystemExit) as e:
        async with asyncio.timeout(10):
            await kk.join(config(tmp_path, join_server.url), None)
    assert str(e.value) == "kubelet: join as 'kptest-join-retry' refused (401): planned 401"
    assert len(join_server.seen) == 1


async def test_a_stop_ends_the_wait_for_the_api_server(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="kubepy.kubelet.kubelet")
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    t0 = time.monotonic()
    async with asyncio.timeout(10):
        assert await kk._connect_until(stop, config(tmp_path, closed_port())) is None
    assert time.monotonic() - t0 < 2.0
    assert sum(r.getMessage().startswith("join failed") for r in caplog.records) >= 2
    assert not (tmp_path / "kubelet" / "kubelet.token").exists()
