"""The kubelet's side of ``kubectl attach``: a WebSocket joined to a running container's IO.

``KubeletServer`` upgrades ``/attach/{ns}/{pod}/{container}`` (the same
remotecommand channels as exec: 0 stdin, 1 stdout, 2 stderr, 3 error, 4
resize, v5's 255 close) and calls one of two pumps:

- ``pump_io_socket``: the container was started with stdin or tty, so its IO
  process (``attachio``) serves attachers on a Unix socket; frames are
  translated both ways (stdin, end of stdin, resize in; stdout, stderr out);
- ``pump_log_follow``: any other container has no stdin to give, so an
  attacher gets what it writes from now on, read from its CRI log file.

Either ends when the container's output ends (a ``Success`` Status on
channel 3, as the kubelet's remotecommand server sends) or the client goes
away (detach: the container keeps running).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from kubepy.kubelet import attachio
from kubepy.kubelet.unixpath import short_path

log = logging.getLogger(__name__)

__all__ = ["pump_io_socket", "pump_log_follow", "success_status"]

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
FOLLOW_POLL = 0.1
STATE_CHECK = 1.0


def success_status() -> bytes:
    return bytes([ERROR]) + json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                        "status": "Success"}).encode()


async def _connected(ws: web.WebSocketResponse, stdout: bool, stderr: bool) -> None:
    # As the kubelet does: an empty frame on the lowest output channel says "connected".
    if stdout or stderr:
        await ws.send_bytes(bytes([STDOUT if stdout else STDERR]))


async def pump_io_socket(ws: web.WebSocketResponse, socket_path: Path, *, stdin: bool, stdout: bool,
                         stderr: bool, v5: bool) -> None:
    """Join ``ws`` to the container's IO process until either side ends."""
    with short_path(socket_path) as addr:
        reader, writer = await asyncio.open_unix_connection(addr)
    hello = {"stdin": stdin, "stdout": stdout, "stderr": stderr}
    writer.write(attachio.encode_frame(attachio.HELLO, json.dumps(hello).encode()))
    await writer.drain()
    await _connected(ws, stdout, stderr)

    async def copy_in() -> None:
        async for msg in ws:
            # Text frames count too: the official Python client sends str stdin as chr(channel) + text.
            raw = msg.data.encode() if msg.type == WSMsgType.TEXT else msg.data
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT) or not raw:
                continue
            channel, data = raw[0], raw[1:]
            if channel == STDIN and stdin and data:
                writer.write(attachio.encode_frame(attachio.STDIN, data))
            elif channel == RESIZE:
                writer.write(attachio.encode_frame(attachio.RESIZE, data))
            elif channel == CLOSE and v5 and data[:1] == bytes([STDIN]) and stdin:
                writer.write(attachio.encode_frame(attachio.STDIN, b""))     # end of input
            else:
                continue
            await writer.drain()

    async def copy_out() -> None:
        frames = attachio.FrameReader()
        while chunk := await reader.read(64 * 1024):
            for channel, payload in frames.feed(chunk):
                if channel in (STDOUT, STDERR) and not ws.closed:
                    await ws.send_bytes(bytes([channel]) + payload)

    inbound, outbound = asyncio.create_task(copy_in()), asyncio.create_task(copy_out())
    try:
        done, _ = await asyncio.wait({inbound, outbound}, return_when=asyncio.FIRST_COMPLETED)
        if outbound in done and not ws.closed:
            await ws.send_bytes(success_status())        # the container's output ended: it exited
    finally:
        for t in (inbound, outbound):
            t.cancel()
        writer.close()
        await asyncio.gather(inbound, outbound, writer.wait_closed(), return_exceptions=True)


async def pump_log_follow(ws: web.WebSocketResponse, log_path: Path, *, stdout: bool, stderr: bool,
                          is_running: Callable[[], Awaitable[bool]],
                          parse_line: Callable[[bytes], Any]) -> None:
    """What the container writes from now on, from its CRI log file, until it stops or the client leaves."""
    await _connected(ws, stdout, stderr)
    wanted = {"stdout": STDOUT if stdout else None, "stderr": STDERR if stderr else None}
    f = None
    buf = b""

    async def drain() -> bool:
        """Send new complete lines; True if there were any."""
        nonlocal f, buf
        if f is None:
            try:
                f = open(log_path, "rb")   # noqa: SIM115 - closed in finally
            except FileNotFoundError:
                return False
            f.seek(0, os.SEEK_END)
            return False
        try:
            if os.stat(log_path).st_ino != os.fstat(f.fileno()).st_ino:   # rotated: finish, reopen
                rest = f.read()
                f.close()
                f = open(log_path, "rb")   # noqa: SIM115
                data = rest + f.read()
            else:
                data = f.read()
        except FileNotFoundError:
            data = f.read()
        if not data:
            return False
        *lines, buf = (buf + data).split(b"\n")
        for line in lines:
            parsed = parse_line(line)
            if parsed is None:
                continue
            _stamp, stream, partial, text = parsed
            channel = wanted.get(stream)
            if channel is not None and not ws.closed:
                await ws.send_bytes(bytes([channel]) + text + (b"" if partial else b"\n"))
        return True

    async def until_client_leaves() -> None:
        async for _msg in ws:        # stdin and resizes have nowhere to go
            pass

    client = asyncio.create_task(until_client_leaves())
    try:
        await drain()
        loop = asyncio.get_running_loop()
        next_check = loop.time() + STATE_CHECK
        while not client.done() and not ws.closed:
            if await drain():
                continue
            if loop.time() >= next_check:
                next_check = loop.time() + STATE_CHECK
                if not await is_running():
                    await asyncio.sleep(FOLLOW_POLL)
                    await drain()                  # its last lines
                    if not ws.closed:
                        await ws.send_bytes(success_status())
                    return
            await asyncio.wait({client}, timeout=FOLLOW_POLL)
    finally:
        client.cancel()
        await asyncio.gather(client, return_exceptions=True)
        if f is not None:
            f.close()
