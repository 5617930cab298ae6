"""The attach IO process's decisions (``AttachMux``), its framing, and the shim ttrpc calls, in process."""

from __future__ import annotations

import json
import socket
import struct
import threading
from pathlib import Path

import pytest

from kubepy.kubelet import shimrpc
from kubepy.kubelet.attachio import (HELLO, RESIZE, STDIN, STDOUT, AttachMux, FrameReader, encode_frame,
                                     socket_path)
from kubepy.kubelet.logshim import CRILogWriter


class Effects:
    def __init__(self) -> None:
        self.stdin: list[bytes] = []
        self.closed = 0
        self.sizes: list[tuple[int, int]] = []

    def mux(self, tmp_path: Path, **kw: bool) -> AttachMux:
        return AttachMux(log=CRILogWriter(tmp_path / "c.log"), write_stdin=self.stdin.append,
                         close_stdin=self._close, resize=lambda w, h: self.sizes.append((w, h)), **kw)

    def _close(self) -> None:
        self.closed += 1


def hello(**streams: bool) -> bytes:
    return encode_frame(HELLO, json.dumps(streams).encode())


def client(mux: AttachMux) -> tuple[object, socket.socket]:
    ours, theirs = socket.socketpair()
    return mux.add(ours), theirs


def test_frames_split_across_reads_and_joined():
    data = encode_frame(STDIN, b"abc") + encode_frame(RESIZE, b"{}") + encode_frame(STDOUT, b"")
    r = FrameReader()
    got = []
    for i in range(len(data)):
        got += r.feed(data[i:i + 1])
    assert got == [(STDIN, b"abc"), (RESIZE, b"{}"), (STDOUT, b"")]


def test_socket_path_is_short_whatever_the_container_id():
    long_id = "a-namespace-name-xx_a-pod-name-xxxxxxxx_a-container-name-x_0123abcd"
    p = socket_path(Path("/var/lib/kubepy/containerd/kubepy-runtime/kubepy"), long_id)
    assert len(str(p)) < 108 and p == socket_path(Path("/var/lib/kubepy/containerd/kubepy-runtime/kubepy"), long_id)


def test_output_goes_to_the_log_and_to_clients_that_asked(tmp_path: Path):
    fx = Effects()
    mux = fx.mux(tmp_path, stdin=True, stdin_once=False, tty=False)
    a, _ = client(mux)
    b, _ = client(mux)
    mux.received(a, hello(stdin=True, stdout=True, stderr=False))
    mux.received(b, hello(stdin=False, stdout=False, stderr=True))
    mux.output("stdout", b"out\n")
    mux.output("stderr", b"err\n")
    assert bytes(a.out) == encode_frame(1, b"out\n")
    assert bytes(b.out) == encode_frame(2, b"err\n")
    mux.log.close()
    lines = (tmp_path / "c.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["stdout F out", "stderr F err"]


def test_stdin_reaches_the_container_only_from_clients_that_asked_for_it(tmp_path: Path):
    fx = Effects()
    mux = fx.mux(tmp_path, stdin=True, stdin_once=False, tty=False)
    a, _ = client(mux)
    b, _ = client(mux)
    mux.received(a, hello(stdin=True, stdout=True) + encode_frame(STDIN, b"ls\n"))
    mux.received(b, hello(stdin=False, stdout=True) + encode_frame(STDIN, b"ignored\n"))
    assert fx.stdin == [b"ls\n"]
    # Without stdinOnce the end of one client's input or its leaving closes nothing.
    mux.received(a, encode_frame(STDIN, b""))
    mux.drop(b, reason="test")
    assert fx.closed == 0 and mux.stdin_open


def test_stdin_once_closes_after_the_first_attacher_with_stdin(tmp_path: Path):
    fx = Effects()
    mux = fx.mux(tmp_path, stdin=True, stdin_once=True, tty=False)
    watcher, _ = client(mux)
    mux.received(watcher, hello(stdin=False, stdout=True))
    mux.drop(watcher, reason="test")
    assert fx.closed == 0            # a client without stdin does not count
    a, _ = client(mux)
    mux.received(a, hello(stdin=True, stdout=True) + encode_frame(STDIN, b"x\n"))
    mux.drop(a, reason="client closed")
    assert fx.closed == 1 and not mux.stdin_open
    late, _ = client(mux)
    mux.received(late, hello(stdin=True, stdout=True) + encode_frame(STDIN, b"too late\n"))
    assert fx.stdin == [b"x\n"] and fx.closed == 1


def test_a_terminal_keeps_stdin_open_and_resizes(tmp_path: Path):
    fx = Effects()
    mux = fx.mux(tmp_path, stdin=True, stdin_once=True, tty=True)
    a, _ = client(mux)
    mux.received(a, hello(stdin=True, stdout=True, stderr=True)
                 + encode_frame(RESIZE, b'{"Width": 120, "Height": 40}')
                 + encode_frame(RESIZE, b'{"Width": 0, "Height": 40}') + encode_frame(RESIZE, b"junk")
                 + encode_frame(STDIN, b""))
    assert fx.sizes == [(120, 40)]
    assert fx.closed == 0 and mux.stdin_open    # CRI: stdinOnce does not close a terminal
    mux.output("stderr", b"nothing: a terminal has one stream\n")
    assert not a.out


def test_a_client_must_say_hello_first_and_slow_clients_are_dropped(tmp_path: Path):
    fx = Effects()
    mux = fx.mux(tmp_path, stdin=True, stdin_once=False, tty=False)
    rude, _ = client(mux)
    mux.received(rude, encode_frame(STDIN, b"x"))
    assert not mux.clients and fx.stdin == []
    slow, _ = client(mux)
    mux.received(slow, hello(stdout=True))
    for _ in range(70):
        mux.output("stdout", b"x" * 65536)
    assert not mux.clients


# -- shimrpc against a fake ttrpc server ------------------------------------------

def _fake_shim(path: Path, status: bytes = b"") -> tuple[threading.Thread, list[dict[int, object]]]:
    seen: list[dict[int, object]] = []
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn, srv:
            length, stream, mtype, _flags = struct.unpack(">IIBB", conn.recv(10))
            body = b""
            while len(body) < length:
                body += conn.recv(length - len(body))
            req = shimrpc._fields(body)
            req[3] = shimrpc._fields(req[3])   # type: ignore[arg-type]
            seen.append({**req, "stream": stream, "type": mtype})
            resp = (shimrpc._field(1, status) if status else b"") + shimrpc._field(2, b"")
            conn.sendall(struct.pack(">IIBB", len(resp), stream, 2, 0) + resp)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t, seen


def test_close_stdin_and_resize_are_ttrpc_requests_to_the_task_service(tmp_path: Path):
    sock = tmp_path / "shim.sock"
    t, seen = _fake_shim(sock)
    shimrpc.close_stdin(f"unix://{sock}", "c1", namespace="kubepy")
    t.join(5)
    req = seen[0]
    assert req["type"] == 1 and req["stream"] == 1
    assert req[1] == b"containerd.task.v2.Task" and req[2] == b"CloseIO"
    assert req[3] == {1: b"c1", 3: 1}
    sock.unlink()
    t, seen = _fake_shim(sock)
    shimrpc.resize_pty(f"unix://{sock}", "c1", 100, 30, namespace="kubepy")
    t.join(5)
    assert seen[0][2] == b"ResizePty" and seen[0][3] == {1: b"c1", 3: 100, 4: 30}


def test_a_shim_error_status_is_raised(tmp_path: Path):
    sock = tmp_path / "shim.sock"
    t, _ = _fake_shim(sock, status=shimrpc._field(1, 5) + shimrpc._field(2, "process does not exist c1"))
    with pytest.raises(shimrpc.ShimRPCError, match="code 5: process does not exist"):
        shimrpc.close_stdin(f"unix://{sock}", "c1", namespace="kubepy")
    t.join(5)
    with pytest.raises(shimrpc.ShimRPCError):
        shimrpc.close_stdin(f"unix://{tmp_path / 'nobody.sock'}", "c1", namespace="kubepy")
