"""Kubernetes' port-forward protocol over SPDY: the kubelet's side.

kubectl opens, per forwarded connection, two SPDY streams sharing a
``requestID``: an ``error`` stream (it only reads it) and a ``data`` stream
(bytes both ways). The kubelet connects to ``localhost:<port>`` inside the
pod's network namespace (so a server bound to 127.0.0.1 in the pod is
reachable, as on Kubernetes) and pumps bytes between the data stream and
that connection. A failed connect is reported on the error stream with
Kubernetes' message, which kubectl prints. When the pod side closes, the
data stream gets FIN; when kubectl half-closes the data stream, the pod side
gets EOF; RST_STREAM or the end of the session closes the connection.

Talks to: the session's transport (``send``, bytes out) and ``dial`` (opens
the TCP connection in the pod); nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kubepy.kubelet.spdy import (
    DATA,
    GOAWAY,
    PING,
    RST_STREAM,
    SYN_STREAM,
    Frame,
    SpdyCodec,
    SpdyError,
)

log = logging.getLogger(__name__)

__all__ = ["PortForwardSession", "PORTFORWARD_PROTOCOL", "TUNNEL_PROTOCOL"]

PORTFORWARD_PROTOCOL = "portforward.k8s.io"
TUNNEL_PROTOCOL = "SPDY/3.1+" + PORTFORWARD_PROTOCOL   # SPDY carried in WebSocket binary messages
CHUNK = 32 * 1024

Dial = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@dataclass
class _Pair:
    port: int
    error_id: int | None = None
    data_id: int | None = None
    writer: asyncio.StreamWriter | None = None
    task: asyncio.Task[None] | None = None
    pending: list[bytes] = field(default_factory=list)   # client data before the connection is up
    client_done: bool = False


class PortForwardSession:
    """One SPDY session: feed it the client's bytes; it sends frames through ``send``."""

    def __init__(self, *, send: Callable[[bytes], Awaitable[None]], dial: Dial, pod: str, uid: str = "") -> None:
        self.codec = SpdyCodec()
        self._send = send
        self._dial = dial
        self.pod, self.uid = pod, uid
        self._pairs: dict[str, _Pair] = {}
        self._stream_pair: dict[int, str] = {}
        self._last_stream = 0
        self._lock = asyncio.Lock()  # frames of different streams must not interleave mid-frame
        self.closed = False

    async def send(self, data: bytes) -> None:
        async with self._lock:
            await self._send(data)

    async def feed(self, data: bytes) -> None:
        """Handle the client's bytes; SpdyError ends the session (after GOAWAY)."""
        try:
            frames = self.codec.feed(data)
        except SpdyError as e:
            log.warning("port-forward protocol error pod=%s err=%s", self.pod, e)
            await self.send(self.codec.goaway(self._last_stream, 1))
            raise
        for frame in frames:
            await self._handle(frame)

    async def close(self) -> None:
        self.closed = True
        for pair in self._pairs.values():
            if pair.task is not None:
                pair.task.cancel()
            if pair.writer is not None:
                pair.writer.close()
        tasks = [p.task for p in self._pairs.values() if p.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, f: Frame) -> None:
        if f.type == SYN_STREAM:
            await self._syn_stream(f)
        elif f.type == DATA:
            await self._data(f)
        elif f.type == RST_STREAM:
            pair = self._pairs.get(self._stream_pair.get(f.stream_id, ""))
            if pair is not None and f.stream_id == pair.data_id and pair.writer is not None:
                pair.writer.close()
        elif f.type == PING:
            await self.send(self.codec.ping(f.ping_id))
        elif f.type == GOAWAY:
            self.closed = True
        # SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do (kubectl's peer does no flow control)

    async def _syn_stream(self, f: Frame) -> None:
        self._last_stream = max(self._last_stream, f.stream_id)
        h = f.headers
        kind, req = h.get("streamtype", ""), h.get("requestid", "")
        try:
            port = int(h.get("port", ""))
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            await self.send(self.codec.rst_stream(f.stream_id, 1))
            log.warning("port-forward bad stream pod=%s headers=%s", self.pod, h)
            return
        if kind not in ("error", "data"):
            await self.send(self.codec.rst_stream(f.stream_id, 1))
            return
        pair = self._pairs.setdefault(req, _Pair(port))
        self._stream_pair[f.stream_id] = req
        await self.send(self.codec.syn_reply(f.stream_id))
        if kind == "error":
            pair.error_id = f.stream_id
        else:
            pair.data_id = f.stream_id
            pair.task = asyncio.create_task(self._forward(req, pair), name=f"portforward-{port}-{req}")

    async def _data(self, f: Frame) -> None:
        pair = self._pairs.get(self._stream_pair.get(f.stream_id, ""))
        if pair is None or f.stream_id != pair.data_id:
            return  # the error stream carries nothing from the client (it only half-closes it)
        if f.data:
            if pair.writer is None:
                pair.pending.append(f.data)
            else:
                pair.writer.write(f.data)
                await pair.writer.drain()
        if f.fin:
            pair.client_done = True
            if pair.writer is not None and pair.writer.can_write_eof():
                pair.writer.write_eof()

    async def _forward(self, req: str, pair: _Pair) -> None:
        assert pair.data_id is not None
        try:
            reader, writer = await self._dial(pair.port)
        except OSError as e:
            msg = (f"error forwarding port {pair.port} to pod {self.pod}, uid {self.uid}: "
                   f"failed to connect to localhost:{pair.port} inside namespace of pod {self.pod}: {e}")
            log.info("port-forward connect failed pod=%s port=%d err=%s", self.pod, pair.port, e)
            await self._finish(pair, error=msg)
            return
        pair.writer = writer
        log.info("port-forward connected pod=%s port=%d request=%s", self.pod, pair.port, req)
        try:
            for chunk in pair.pending:
                writer.write(chunk)
            pair.pending.clear()
            if pair.client_done and writer.can_write_eof():
                writer.write_eof()
            await writer.drain()
            while True:
                chunk = await reader.read(CHUNK)
                if not chunk:
                    break
                await self.send(self.codec.data(pair.data_id, chunk))
        except (ConnectionError, OSError) as e:
            log.info("port-forward connection ended pod=%s port=%d err=%s", self.pod, pair.port, e)
        finally:
            writer.close()
        if not self.closed:
            await self._finish(pair)

    async def _finish(self, pair: _Pair, *, error: str | None = None) -> None:
        if self.closed:
            return
        try:
            if pair.error_id is not None:
                await self.send(self.codec.data(pair.error_id, error.encode() if error else b"", fin=True))
            if pair.data_id is not None:
                await self.send(self.codec.data(pair.data_id, b"", fin=True))
        except (ConnectionError, RuntimeError):
            pass  # the client went away first
