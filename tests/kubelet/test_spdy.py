"""SPDY/3.1 framing and the port-forward session, with frames a client codec builds."""

from __future__ import annotations

import asyncio
import struct
import zlib

import pytest

from kubepy.kubelet.portforward import PortForwardSession
from kubepy.kubelet.spdy import (
    DATA,
    DICTIONARY,
    PING,
    RST_STREAM,
    SYN_REPLY,
    SYN_STREAM,
    SpdyCodec,
    SpdyError,
)


def test_dictionary_is_the_specifications():
    # SPDY/3 draft 3, 2.6.10.1: 1423 bytes; zlib names a preset dictionary by its Adler-32.
    assert len(DICTIONARY) == 1423
    assert DICTIONARY.startswith(b"\0\0\0\x07options\0\0\0\x04head") and DICTIONARY.endswith(b",*,enq=0.")
    assert zlib.adler32(DICTIONARY) == 0xE3C6A7C2


def test_round_trip_frames_split_anywhere():
    client, server = SpdyCodec(), SpdyCodec()
    wire = (client.syn_stream(1, {"streamType": "error", "port": "80", "requestID": "0"})
            + client.syn_stream(3, {"streamType": "data", "port": "80", "requestID": "0"})
            + SpdyCodec.data(3, b"hello") + SpdyCodec.data(3, b"", fin=True) + client.ping(7)
            + client.rst_stream(3))
    frames = []
    for i in range(0, len(wire), 5):  # a byte stream, not messages: frames cross every boundary
        frames += server.feed(wire[i:i + 5])
    assert [f.type for f in frames] == [SYN_STREAM, SYN_STREAM, DATA, DATA, PING, RST_STREAM]
    assert frames[0].headers == {"streamtype": "error", "port": "80", "requestid": "0"}
    assert frames[1].stream_id == 3 and frames[2].data == b"hello" and frames[3].fin
    assert frames[4].ping_id == 7 and frames[5].stream_id == 3
    reply = client.feed(server.syn_reply(3))
    assert reply[0].type == SYN_REPLY and reply[0].stream_id == 3 and reply[0].headers == {}


@pytest.mark.parametrize("bad,message", [
    (struct.pack(">II", 0x80020001, 10) + b"\0" * 10, "version"),
    (struct.pack(">II", 0x80030001, 1 << 21), "larger"),
    (struct.pack(">II", 0x80030001, 14) + b"\0\0\0\1\0\0\0\0\0\0" + b"junk", "decompress"),
])
def test_protocol_errors(bad: bytes, message: str):
    with pytest.raises(SpdyError, match=message):
        SpdyCodec().feed(bad)


async def test_session_forwards_both_ways_and_reports_a_refused_port():
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()          # until the forwarded side half-closes
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = SpdyCodec()
    out = bytearray()

    async def send(data: bytes) -> None:
        out.extend(data)

    async def dial(p: int):
        return await asyncio.open_connection("127.0.0.1", p)

    session = PortForwardSession(send=send, dial=dial, pod="web", uid="u1")
    await session.feed(client.syn_stream(1, {"streamType": "error", "port": str(port), "requestID": "0"})
                       + client.syn_stream(3, {"streamType": "data", "port": str(port), "requestID": "0"})
                       + SpdyCodec.data(3, b"ping") + SpdyCodec.data(3, b"", fin=True))
    # A port nobody listens on: the error stream says so, in Kubernetes' words.
    await session.feed(client.syn_stream(5, {"streamType": "error", "port": "1", "requestID": "1"})
                       + client.syn_stream(7, {"streamType": "data", "port": "1", "requestID": "1"}))
    for _ in range(250):  # DATA payloads are not compressed: the raw bytes tell when both have arrived
        if b"PING" in out and b"error forwarding port 1" in out:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)  # the FINs that follow
    frames = client.feed(bytes(out))
    data = {f.stream_id: b"" for f in frames if f.type == DATA}
    fins = set()
    for f in frames:
        if f.type == DATA:
            data[f.stream_id] += f.data
            if f.fin:
                fins.add(f.stream_id)
    assert [f.stream_id for f in frames if f.type == SYN_REPLY] == [1, 3, 5, 7]
    assert data[3] == b"PING" and data[1] == b""
    assert data[5].startswith(b"error forwarding port 1 to pod web, uid u1: failed to connect")
    assert fins == {1, 3, 5, 7}
    await session.close()
    server.close()
