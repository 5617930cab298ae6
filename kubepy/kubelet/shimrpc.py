"""The two task calls ``ctr`` has no command for: close a task's stdin, resize its terminal.

Attaching to a container (``attachio``) needs ``CloseIO`` (``stdinOnce``:
the container sees end of input after the first attacher leaves) and
``ResizePty`` (``kubectl attach -t`` resizes the terminal). ``ctr`` makes
these calls only from inside its own ``run``/``task start`` while it stays
attached, and deletes the task when that ends, so they go straight to the
task's shim (``containerd-shim-runc-v2``) over its ttrpc socket instead.
The socket's address is the ``address`` file in the shim's bundle
directory, which is the shim's working directory; the shim is the parent
of the task's init process. Everything else still goes through ``ctr``.

ttrpc framing: a 10-byte header (length u32, stream id u32, type u8,
flags u8, big-endian), then a protobuf ``Request`` {service, method,
payload, timeout_nano, metadata} or ``Response`` {status, payload}. Only
the few fields used here are encoded, by hand; stdlib only, because the
attach IO process runs with ``python -S``. Errors::

    ShimRPCError   the shim could not be found, reached, or refused the call
"""

from __future__ import annotations

import socket
import struct

__all__ = ["ShimRPCError", "close_stdin", "resize_pty", "shim_address"]

SERVICE = "containerd.task.v2.Task"
_REQUEST, _RESPONSE = 1, 2
NAMESPACE_KEY = "containerd-namespace-ttrpc"


class ShimRPCError(Exception):
    pass


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(no: int, value: bytes | str | int | bool) -> bytes:
    if isinstance(value, (bool, int)):
        return _varint(no << 3) + _varint(int(value))
    data = value.encode() if isinstance(value, str) else value
    return _varint(no << 3 | 2) + _varint(len(data)) + data


def _fields(buf: bytes) -> dict[int, bytes | int]:
    """Top-level fields of a protobuf message (varints and length-delimited only)."""
    out: dict[int, bytes | int] = {}
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = val = 0
        while True:
            b = buf[pos]
            pos += 1
            val |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return val

    while pos < len(buf):
        key = varint()
        no, wire = key >> 3, key & 7
        if wire == 0:
            out[no] = varint()
        elif wire == 2:
            n = varint()
            out[no] = buf[pos:pos + n]
            pos += n
        else:
            raise ShimRPCError(f"unexpected wire type {wire} in a ttrpc response")
    return out


def encode_request(method: str, payload: bytes, *, namespace: str) -> bytes:
    kv = _field(1, NAMESPACE_KEY) + _field(2, namespace)
    return _field(1, SERVICE) + _field(2, method) + _field(3, payload) + _field(5, kv)


def call(address: str, method: str, payload: bytes, *, namespace: str, timeout: float = 10.0) -> bytes:
    """One unary ttrpc call; returns the response payload."""
    path = address.removeprefix("unix://")
    body = encode_request(method, payload, namespace=namespace)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(struct.pack(">IIBB", len(body), 1, _REQUEST, 0) + body)
            header = _recv_exact(s, 10)
            length, _stream, mtype, _flags = struct.unpack(">IIBB", header)
            resp = _recv_exact(s, length)
    except OSError as e:
        raise ShimRPCError(f"ttrpc {method} at {path}: {e}") from e
    if mtype != _RESPONSE:
        raise ShimRPCError(f"ttrpc {method}: unexpected message type {mtype}")
    fields = _fields(resp)
    status = fields.get(1)
    if isinstance(status, bytes) and status:
        st = _fields(status)
        code, msg = st.get(1, 0), st.get(2, b"")
        if code:
            raise ShimRPCError(f"ttrpc {method}: code {code}: "
                               f"{msg.decode(errors='replace') if isinstance(msg, bytes) else msg}")
    payload_out = fields.get(2, b"")
    return payload_out if isinstance(payload_out, bytes) else b""


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed by the shim")
        buf += chunk
    return buf


def shim_address(task_pid: int) -> str:
    """The ttrpc address of the shim that runs the task whose init process is ``task_pid``."""
    try:
        with open(f"/proc/{task_pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{ppid}/cwd/address") as f:
            return f.read().strip()
    except (OSError, ValueError, IndexError) as e:
        raise ShimRPCError(f"no shim address for task pid {task_pid}: {e}") from e


def close_stdin(address: str, container_id: str, *, namespace: str, exec_id: str = "") -> None:
    """``CloseIO(stdin=true)``: the shim closes its end, the process reads end of file."""
    call(address, "CloseIO", _field(1, container_id) + (_field(2, exec_id) if exec_id else b"") + _field(3, True),
         namespace=namespace)


def resize_pty(address: str, container_id: str, width: int, height: int, *, namespace: str,
               exec_id: str = "") -> None:
    call(address, "ResizePty", _field(1, container_id) + (_field(2, exec_id) if exec_id else b"")
         + _field(3, width) + _field(4, height), namespace=namespace)

