"""SPDY/3.1 framing, the server side, as much as Kubernetes' port-forward needs.

kubectl's port-forward speaks SPDY/3.1: over a WebSocket whose messages
carry the raw SPDY bytes (subprotocol ``SPDY/3.1+portforward.k8s.io``,
kubectl 1.31+), or, in older clients, over an upgraded HTTP connection. Each
forwarded connection is a pair of client-initiated streams with the headers
``streamType: error|data``, ``port`` and ``requestID``. No maintained Python
SPDY library exists (the PyPI ones are single releases from years ago), so
this module is the framing only: pure, no I/O, tested against frames built
by hand and end to end by stock kubectl.

Frames (all integers big-endian)::

    control: 1 | version(15)=3 | type(16) | flags(8) | length(24) | payload
    data:    0 | stream-id(31) | flags(8) | length(24) | data      (flag 0x01 = FIN)

Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are ``count(32)`` then
``len(32) name len(32) value`` pairs, compressed with zlib and the
dictionary of the SPDY/3 specification, one compression context per
direction for the whole session (each block ends with a sync flush).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

__all__ = ["DICTIONARY", "Frame", "SpdyCodec", "SpdyError",
           "DATA", "SYN_STREAM", "SYN_REPLY", "RST_STREAM", "SETTINGS", "PING", "GOAWAY", "HEADERS",
           "WINDOW_UPDATE", "FLAG_FIN"]

VERSION = 3
DATA, SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 0, 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR, RST_INVALID_STREAM, RST_REFUSED_STREAM, RST_CANCEL = 1, 2, 3, 5

MAX_FRAME = 1 << 20          # larger frames end the session: kubectl sends 32 KiB at most
MAX_HEADER_BLOCK = 64 << 10  # decompressed; a header bomb ends the session

# The zlib dictionary of SPDY/3 (draft 3, section 2.6.10.1): 4-byte length-prefixed
# words, then a run of common values.
_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges "
    "age allow authorization cache-control connection content-base content-encoding content-language "
    "content-length content-location content-md5 content-range content-type date etag expect expires from "
    "host if-match if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after server te trailer "
    "transfer-encoding upgrade user-agent vary via warning www-authenticate method get status"
).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


class SpdyError(Exception):
    """The peer broke the protocol: the session ends (GOAWAY)."""


@dataclass
class Frame:
    type: int
    flags: int = 0
    stream_id: int = 0
    headers: dict[str, str] = field(default_factory=dict)   # names lower-cased
    data: bytes = b""
    status: int = 0            # RST_STREAM, GOAWAY
    ping_id: int = 0
    delta: int = 0             # WINDOW_UPDATE

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


class SpdyCodec:
    """Bytes in, frames out; frames to bytes. One per session (the zlib contexts are per session)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zdict=DICTIONARY)

    # -- decoding ------------------------------------------------------------------
    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        while len(self._buf) >= 8:
            w1, w2 = struct.unpack_from(">II", self._buf)
            length = w2 & 0xFFFFFF
            if length > MAX_FRAME:
                raise SpdyError(f"frame of {length} bytes is larger than {MAX_FRAME}")
            if len(self._buf) < 8 + length:
                break
            payload = bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            flags = w2 >> 24
            if w1 & 0x80000000:
                version, ftype = (w1 >> 16) & 0x7FFF, w1 & 0xFFFF
                if version != VERSION:
                    raise SpdyError(f"unsupported SPDY version {version}")
                frame = self._control(ftype, flags, payload)
                if frame is not None:
                    frames.append(frame)
            else:
                frames.append(Frame(DATA, flags, w1 & 0x7FFFFFFF, data=payload))
        return frames

    def _control(self, ftype: int, flags: int, p: bytes) -> Frame | None:
        try:
            if ftype == SYN_STREAM:
                sid = struct.unpack_from(">I", p)[0] & 0x7FFFFFFF
                return Frame(ftype, flags, sid, headers=self._headers(p[10:]))
            if ftype in (SYN_REPLY, HEADERS):
                sid = struct.unpack_from(">I", p)[0] & 0x7FFFFFFF
                return Frame(ftype, flags, sid, headers=self._headers(p[4:]))
            if ftype == RST_STREAM:
                sid, status = struct.unpack_from(">II", p)
                return Frame(ftype, flags, sid & 0x7FFFFFFF, status=status)
            if ftype == PING:
                return Frame(ftype, flags, ping_id=struct.unpack_from(">I", p)[0])
            if ftype == GOAWAY:
                last, status = struct.unpack_from(">II", p) if len(p) >= 8 else (*struct.unpack_from(">I", p), 0)
                return Frame(ftype, flags, last & 0x7FFFFFFF, status=status)
            if ftype == WINDOW_UPDATE:
                sid, delta = struct.unpack_from(">II", p)
                return Frame(ftype, flags, sid & 0x7FFFFFFF, delta=delta & 0x7FFFFFFF)
            if ftype == SETTINGS:
                return Frame(ftype, flags)
        except struct.error as e:
            raise SpdyError(f"short control frame type {ftype}: {e}") from None
        return None  # unknown control frames are ignored, as the specification says

    def _headers(self, block: bytes) -> dict[str, str]:
        try:
            raw = self._inflate.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as e:
            raise SpdyError(f"header block does not decompress: {e}") from None
        if self._inflate.unconsumed_tail:
            raise SpdyError(f"header block larger than {MAX_HEADER_BLOCK} bytes")
        try:
            (count,), pos, out = struct.unpack_from(">I", raw), 4, {}
            for _ in range(count):
                (n,) = struct.unpack_from(">I", raw, pos)
                name = raw[pos + 4:pos + 4 + n].decode()
                pos += 4 + n
                (n,) = struct.unpack_from(">I", raw, pos)
                value = raw[pos + 4:pos + 4 + n].decode()
                pos += 4 + n
                out[name.lower()] = value.split("\0")[0]
        except (struct.error, UnicodeDecodeError) as e:
            raise SpdyError(f"malformed header block: {e}") from None
        return out

    # -- encoding ------------------------------------------------------------------
    def _block(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers)) + b"".join(
            struct.pack(">I", len(k)) + k.lower().encode() + struct.pack(">I", len(v.encode())) + v.encode()
            for k, v in headers.items())
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def _control_frame(ftype: int, flags: int, payload: bytes) -> bytes:
        return struct.pack(">II", 0x80000000 | VERSION << 16 | ftype, flags << 24 | len(payload)) + payload

    def syn_reply(self, stream_id: int, headers: dict[str, str] | None = None, *, fin: bool = False) -> bytes:
        return self._control_frame(SYN_REPLY, FLAG_FIN if fin else 0,
                                   struct.pack(">I", stream_id) + self._block(headers or {}))

    def syn_stream(self, stream_id: int, headers: dict[str, str], *, fin: bool = False) -> bytes:
        """(For tests: what a client sends.)"""
        return self._control_frame(SYN_STREAM, FLAG_FIN if fin else 0,
                                   struct.pack(">IIH", stream_id, 0, 0) + self._block(headers))

    @staticmethod
    def data(stream_id: int, data: bytes, *, fin: bool = False) -> bytes:
        return struct.pack(">II", stream_id & 0x7FFFFFFF, (FLAG_FIN if fin else 0) << 24 | len(data)) + data

    def rst_stream(self, stream_id: int, status: int = RST_CANCEL) -> bytes:
        return self._control_frame(RST_STREAM, 0, struct.pack(">II", stream_id, status))

    def ping(self, ping_id: int) -> bytes:
        return self._control_frame(PING, 0, struct.pack(">I", ping_id))

    def goaway(self, last_stream_id: int, status: int = 0) -> bytes:
        return self._control_frame(GOAWAY, 0, struct.pack(">II", last_stream_id, status))
