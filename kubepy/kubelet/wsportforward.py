"""Kubernetes' port-forward protocol over WebSocket channels: the kubelet's side.

The older of the two port-forward wire formats, still what the official
Python client speaks (``kubernetes.stream.portforward``); kubectl uses the
SPDY one (``kubepy.kubelet.portforward``). As in Kubernetes'
``pkg/kubelet/cri/streaming/portforward/websocket.go``:

- the ports are the request's ``port`` query values (each may be a comma
  list), fixed for the whole connection;
- port *i* owns two channels: data ``2i`` (both ways) and error ``2i+1``
  (kubelet to client only). A binary message is one channel byte, then
  payload (``v4.channel.k8s.io``; no subprotocol means the same);
- on open, every channel first carries its port number (2 bytes, little
  endian);
- each port is connected to ``localhost:<port>`` in the pod's network
  namespace at once; a failed connect is reported as text on the port's
  error channel (Kubernetes' message), nothing else ever is;
- a port whose pod connection ends is done; when every port is done the
  kubelet closes the WebSocket. The client closing it ends every port.
  There is no half-close: the protocol has no way to say "EOF" per port.

Talks to: the WebSocket (``send``, one message per call) and ``dial`` (opens
the TCP connection in the pod); nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

__all__ = ["CHANNEL_PROTOCOL", "ChannelPortForward", "parse_ports"]

CHANNEL_PROTOCOL = "v4.channel.k8s.io"
CHUNK = 32 * 1024

Dial = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def parse_ports(values: list[str]) -> list[int]:
    """The ``port`` query values (repeated, or comma lists) as ports; ValueError with Kubernetes' words."""
    if not values:
        raise ValueError('query parameter "port" is required')
    ports: list[int] = []
    for value in values:
        if not value:
            raise ValueError('query parameter "port" cannot be empty')
        for p in value.split(","):
            if not p.isdigit() or int(p) > 65535:
                raise ValueError(f'unable to parse "{value}" as a port')
            if int(p) < 1:
                raise ValueError(f'port "{value}" must be > 0')
            ports.append(int(p))
    return ports


@dataclass
class _Port:
    index: int
    port: int
    writer: asyncio.StreamWriter | None = None
    pending: list[bytes] = field(default_factory=list)   # client data before the connection is up
    task: asyncio.Task[None] | None = None

    @property
    def data_channel(self) -> int:
        return 2 * self.index

    @property
    def error_channel(self) -> int:
        return 2 * self.index + 1


class ChannelPortForward:
    """One WebSocket's forwarded ports: ``start()``, then ``feed()`` each client message;
    ``done()`` completes when every port has finished."""

    def __init__(self, *, ports: list[int], send: Callable[[bytes], Awaitable[None]], dial: Dial,
                 pod: str, uid: str = "") -> None:
        self._ports = [_Port(i, p) for i, p in enumerate(ports)]
        self._send = send
        self._dial = dial
        self.pod, self.uid = pod, uid
        self._lock = asyncio.Lock()
        self.closed = False

    async def send(self, channel: int, data: bytes) -> None:
        async with self._lock:
            await self._send(bytes([channel]) + data)

    async def start(self) -> None:
        for p in self._ports:
            number = p.port.to_bytes(2, "little")
            await self.send(p.data_channel, number)
            await self.send(p.error_channel, number)
        for p in self._ports:
            p.task = asyncio.create_task(self._forward(p), name=f"portforward-ws-{p.port}")

    async def done(self) -> None:
        await asyncio.gather(*(p.task for p in self._ports if p.task is not None), return_exceptions=True)

    async def feed(self, message: bytes) -> None:
        if not message:
            return
        channel, data = message[0], message[1:]
        if channel % 2 or channel // 2 >= len(self._ports) or not data:
            return   # error channels are the kubelet's to write; unknown channels carry nothing
        p = self._ports[channel // 2]
        if p.task is not None and p.task.done():
            return
        if p.writer is None:
            p.pending.append(data)
            return
        try:
            p.writer.write(data)
            await p.writer.drain()
        except (ConnectionError, OSError) as e:
            log.info("port-forward write failed pod=%s port=%d err=%s", self.pod, p.port, e)

    async def close(self) -> None:
        self.closed = True
        for p in self._ports:
            if p.task is not None:
                p.task.cancel()
            if p.writer is not None:
                p.writer.close()
        await self.done()

    async def _forward(self, p: _Port) -> None:
        try:
            reader, writer = await self._dial(p.port)
        except OSError as e:
            msg = (f"error forwarding port {p.port} to pod {self.pod}, uid {self.uid}: "
                   f"failed to connect to localhost:{p.port} inside namespace of pod {self.pod}: {e}")
            log.info("port-forward connect failed pod=%s port=%d err=%s", self.pod, p.port, e)
            if not self.closed:
                try:
                    await self.send(p.error_channel, msg.encode())
                except (ConnectionError, RuntimeError):
                    pass   # the client went away first
            return
        p.writer = writer
        log.info("port-forward connected pod=%s port=%d", self.pod, p.port)
        try:
            for chunk in p.pending:
                writer.write(chunk)
            p.pending.clear()
            await writer.drain()
            while chunk := await reader.read(CHUNK):
                await self.send(p.data_channel, chunk)
        except (ConnectionError, OSError, RuntimeError) as e:   # RuntimeError: aiohttp, the socket is closing
            log.info("port-forward connection ended pod=%s port=%d err=%s", self.pod, p.port, e)
        finally:
            writer.close()
