"""The attach IO process: one per container started with ``stdin`` or ``tty``.

containerd's binary log driver (``logshim``) gives a container no stdin and
no terminal, so a container whose spec asks for them is started by this
small process instead, like CRI's conmon. It:

1. runs ``ctr run -d --fifo-dir DIR/fifo [--tty] ...`` with its own pipes (or,
   for a terminal, a pseudo-terminal in raw mode) as ctr's stdio, so the
   little output ctr copies before it detaches still reaches us; the shim
   keeps the task's FIFOs - and a writer on its stdin FIFO - after ctr exits;
2. reports ``ok`` (or ``error <message>``) on its stdout, which the kubelet
   reads, then leaves the kubelet's pipe;
3. opens the FIFOs ctr left in ``DIR/fifo/<random>/<id>-std{in,out,err}``
   and from then on owns the container's IO: output goes to the CRI log
   file (``logshim.CRILogWriter``: ``kubectl logs`` works, terminal output
   included) and to every attached client; attached clients' input goes to
   the stdin FIFO;
4. serves attachers on ``DIR/attach.sock`` (the kubelet connects there), and
   exits when the container's output ends (the container is gone).

It is a child of the kubelet but in its own session, so it outlives a
kubelet restart; the restarted kubelet finds the socket by the container
id (``socket_path``). ``Runtime.remove`` kills it and removes DIR.

``stdinOnce`` (as CRI does it, terminals excepted): when the first client
that attached with stdin ends its input or goes away, the container's stdin
is closed (our writer, then the shim's via ``shimrpc.close_stdin``) and
later clients get no stdin. Resizes go to the shim (``shimrpc.resize_pty``).

Socket protocol (one connection per attacher). Every frame is ``channel u8,
length u32 (big-endian), payload``. The client's first frame is on channel
255 with JSON ``{"stdin": bool, "stdout": bool, "stderr": bool}``; then it
sends 0 (stdin data; an empty payload means end of input) and 4 (resize
JSON ``{"Width": w, "Height": h}``); this process sends 1 (stdout), 2
(stderr) and, when the container's output has ended, closes the connection.

Stdlib only, run with ``python -S`` (a few MiB per attachable container).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from kubepy.kubelet import shimrpc
from kubepy.kubelet.unixpath import short_path
from kubepy.kubelet.logshim import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, CRILogWriter

__all__ = ["AttachMux", "encode_frame", "io_dir", "main", "socket_path", "FrameReader"]

STDIN, STDOUT, STDERR, RESIZE, HELLO = 0, 1, 2, 4, 255
SOCKET_NAME = "attach.sock"
MAX_CLIENT_BACKLOG = 4 * 1024 * 1024     # bytes queued for a client before it is dropped
READY_TIMEOUT = 60.0                     # seconds for the FIFOs to show up after ctr returns


def io_dir(state_dir: Path, container_id: str) -> Path:
    """Per-container directory; hashed so the socket path stays under 108 bytes."""
    return Path(state_dir) / "io" / hashlib.sha256(container_id.encode()).hexdigest()[:16]


def socket_path(state_dir: Path, container_id: str) -> Path:
    return io_dir(state_dir, container_id) / SOCKET_NAME


def encode_frame(channel: int, payload: bytes) -> bytes:
    return struct.pack(">BI", channel, len(payload)) + payload


class FrameReader:
    """Splits a byte stream into (channel, payload) frames."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out = []
        while len(self._buf) >= 5:
            channel, length = struct.unpack(">BI", self._buf[:5])
            if len(self._buf) < 5 + length:
                break
            out.append((channel, self._buf[5:5 + length]))
            self._buf = self._buf[5 + length:]
        return out


class _Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = FrameReader()
        self.hello: dict[str, bool] | None = None
        self.stdin = False             # this client's input goes to the container
        self.out = bytearray()


class AttachMux:
    """The decisions of the IO process, free of FIFOs and ctr: who gets what.

    ``write_stdin(data)``, ``close_stdin()`` and ``resize(w, h)`` are the
    effects on the container; ``output()`` feeds the log and the clients.
    """

    def __init__(self, *, log: CRILogWriter | None, stdin: bool, stdin_once: bool, tty: bool,
                 write_stdin: object = None, close_stdin: object = None, resize: object = None,
                 forget: object = None) -> None:
        self.log = log
        self.stdin_open = stdin
        self.stdin_once = stdin_once
        self.tty = tty
        self._write_stdin = write_stdin
        self._close_stdin = close_stdin
        self._resize = resize
        self._forget = forget          # unregisters and closes a dropped client's socket
        self.clients: dict[int, _Client] = {}

    def add(self, sock: socket.socket) -> _Client:
        c = _Client(sock)
        self.clients[sock.fileno()] = c
        return c

    def output(self, stream: str, data: bytes) -> None:
        if self.log is not None:
            self.log.feed(stream, data)
        channel = STDOUT if stream == "stdout" else STDERR
        for c in list(self.clients.values()):
            if c.hello is None or not c.hello.get("stdout" if channel == STDOUT else "stderr"):
                continue
            if self.tty and channel == STDERR:
                continue
            c.out += encode_frame(channel, data)
            if len(c.out) > MAX_CLIENT_BACKLOG:
                self.drop(c, reason="slow client")

    def received(self, c: _Client, data: bytes) -> None:
        for channel, payload in c.frames.feed(data):
            if c.hello is None:
                if channel != HELLO:
                    self.drop(c, reason="no hello")
                    return
                try:
                    c.hello = {k: bool(v) for k, v in json.loads(payload or b"{}").items()}
                except (ValueError, AttributeError):
                    self.drop(c, reason="bad hello")
                    return
                c.stdin = bool(c.hello.get("stdin")) and self.stdin_open
                _log("attach", clients=len(self.clients), stdin=c.stdin)
            elif channel == STDIN:
                if not c.stdin:
                    continue
                if payload:
                    if self._write_stdin is not None:
                        self._write_stdin(payload)   # type: ignore[operator]
                else:
                    self._input_ended(c)
            elif channel == RESIZE and self.tty and self._resize is not None:
                try:
                    size = json.loads(payload)
                    w, h = int(size.get("Width", 0)), int(size.get("Height", 0))
                except (ValueError, AttributeError, TypeError):
                    continue
                if w > 0 and h > 0:
                    self._resize(w, h)   # type: ignore[operator]

    def _input_ended(self, c: _Client) -> None:
        if not c.stdin:
            return
        c.stdin = False
        # CRI: stdinOnce closes the container's stdin after the first attach; a terminal stays open.
        if self.stdin_once and not self.tty and self.stdin_open:
            self.stdin_open = False
            for other in self.clients.values():
                other.stdin = False
            _log("stdin closed", reason="stdinOnce")
            if self._close_stdin is not None:
                self._close_stdin()   # type: ignore[operator]

    def drop(self, c: _Client, *, reason: str) -> None:
        if self.clients.pop(c.sock.fileno(), None) is None:
            return
        self._input_ended(c)
        _log("detach", reason=reason, clients=len(self.clients))
        if self._forget is not None:
            self._forget(c.sock)   # type: ignore[operator]
        else:
            c.sock.close()


def _log(event: str, **kv: object) -> None:
    """One line per decision on stderr (the IO process's own log file)."""
    fields = " ".join(f"{k}={v}" for k, v in kv.items())
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} attachio {event} {fields}".rstrip(), file=sys.stderr, flush=True)


# -- the process -------------------------------------------------------------

def _parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    opts: dict[str, str] = {}
    rest: list[str] = []
    it = iter(argv)
    for a in it:
        if a == "--":
            rest = list(it)
            break
        key = a.lstrip("-")
        if key in ("stdin", "stdin-once", "tty"):
            opts[key] = "1"
        else:
            opts[key] = next(it, "")
    return opts, rest


def _find_fifos(fifo_root: Path, cid: str, tty: bool) -> dict[str, Path]:
    names = ("stdin", "stdout") if tty else ("stdin", "stdout", "stderr")
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        for d in fifo_root.iterdir() if fifo_root.is_dir() else []:
            found = {n: d / f"{cid}-{n}" for n in names}
            if all(p.exists() for p in found.values()):
                return found
        if time.monotonic() > deadline:
            raise OSError(f"no FIFOs for {cid} under {fifo_root}")
        time.sleep(0.05)


def _run_ctr(cmd: list[str], tty: bool) -> tuple[int, bytes, bytes]:
    """ctr run -d with our own stdio; returns (code, what it wrote to stdout, to stderr)."""
    if tty:
        import pty
        import tty as ttymod
        master, slave = pty.openpty()
        ttymod.setraw(slave)
        proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        out = bytearray()
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:          # EIO: ctr, the pty's only user, is gone
                break
            if not chunk:
                break
            out += chunk
        code = proc.wait()
        os.close(master)
        return code, bytes(out), b""
    # stdin: a pipe we never write to nor close while ctr lives (closing it would make ctr close
    # the task's stdin).
    rfd, wfd = os.pipe()
    proc = subprocess.Popen(cmd, stdin=rfd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(rfd)
    out, err = proc.communicate()
    os.close(wfd)
    return proc.returncode, out, err


def main(argv: list[str] | None = None) -> int:
    opts, run_args = _parse(sys.argv[1:] if argv is None else argv)
    cid, directory = opts["id"], Path(opts["dir"])
    tty, stdin, stdin_once = "tty" in opts, "stdin" in opts, "stdin-once" in opts
    namespace = opts.get("namespace", "kubepy")
    ctr_base = [opts.get("ctr", "ctr"), "--address", opts["address"], "--namespace", namespace]
    report = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    err_log = os.open(directory / "attachio.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(err_log, 2)
    os.close(err_log)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def fail(message: str) -> int:
        _log("start failed", container=cid, err=message.replace("\n", " "))
        try:
            report.write("error " + message.replace("\n", " ") + "\n")
            report.close()
        except OSError:
            pass
        return 1

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock_file = directory / SOCKET_NAME
    sock_file.unlink(missing_ok=True)
    with short_path(sock_file) as addr:
        listener.bind(addr)
    os.chmod(sock_file, 0o600)
    listener.listen(16)
    (directory / "pid").write_text(f"{os.getpid()}\n")

    writer = CRILogWriter(Path(opts["log"]), max_bytes=int(opts.get("max-bytes", DEFAULT_MAX_BYTES)),
                          max_files=int(opts.get("max-files", DEFAULT_MAX_FILES))) if opts.get("log") else None
    fifo_root = directory / "fifo"
    fifo_root.mkdir(parents=True, exist_ok=True)
    cmd = [*ctr_base, "run", "-d", "--fifo-dir", str(fifo_root), *(["--tty"] if tty else []), *run_args]
    try:
        code, early_out, early_err = _run_ctr(cmd, tty)
    except OSError as e:
        return fail(str(e))
    if code != 0:
        text = early_err.decode(errors="replace") or early_out.decode(errors="replace")
        return fail(f"ctr run exited with {code}: {text.strip()}")
    try:
        fifos = _find_fifos(fifo_root, cid, tty)
        # O_RDWR: opening never blocks, and a write never meets "no reader" (the shim's may go first).
        stdin_fd = os.open(fifos["stdin"], os.O_RDWR | os.O_NONBLOCK)
        outs = {os.open(fifos[n], os.O_RDONLY | os.O_NONBLOCK): n
                for n in ("stdout", "stderr") if n in fifos}
    except OSError as e:
        return fail(str(e))
    _log("started", container=cid, tty=tty, stdin=stdin, stdin_once=stdin_once)
    report.write("ok\n")
    report.close()

    sel = selectors.DefaultSelector()
    pending_in = bytearray()
    shim: dict[str, str] = {}

    def address() -> str:
        if "address" not in shim:
            out = subprocess.run([*ctr_base, "tasks", "ls"], capture_output=True, text=True).stdout
            pid = next((int(p[1]) for p in (line.split() for line in out.splitlines()[1:])
                        if len(p) >= 2 and p[0] == cid), 0)
            shim["address"] = shimrpc.shim_address(pid)
        return shim["address"]

    def write_stdin(data: bytes) -> None:
        if stdin_fd < 0:
            return
        pending_in.extend(data)
        flush_stdin()

    def flush_stdin() -> None:
        while pending_in and stdin_fd >= 0:
            try:
                n = os.write(stdin_fd, pending_in)
            except BlockingIOError:
                break
            except OSError:
                pending_in.clear()
                break
            del pending_in[:n]
        want = selectors.EVENT_WRITE if pending_in else 0
        _set(sel, stdin_fd, want, "stdin")

    def close_stdin() -> None:
        nonlocal stdin_fd
        if stdin_fd >= 0:
            _set(sel, stdin_fd, 0, "stdin")
            os.close(stdin_fd)
            stdin_fd = -1
        try:
            shimrpc.close_stdin(address(), cid, namespace=namespace)
        except shimrpc.ShimRPCError as e:
            _log("close stdin failed", container=cid, err=e)

    def resize(w: int, h: int) -> None:
        try:
            shimrpc.resize_pty(address(), cid, w, h, namespace=namespace)
        except shimrpc.ShimRPCError as e:
            _log("resize failed", container=cid, err=e)

    def forget(sock: socket.socket) -> None:
        _set(sel, sock, 0, "client")
        sock.close()

    mux = AttachMux(log=writer, stdin=stdin, stdin_once=stdin_once, tty=tty,
                    write_stdin=write_stdin, close_stdin=close_stdin, resize=resize, forget=forget)
    if early_out:
        mux.output("stdout", early_out)
    if early_err:
        mux.output("stderr", early_err)
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, "listen")
    for fd in outs:
        sel.register(fd, selectors.EVENT_READ, "out")
    stopping = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    while outs and not stopping:
        for key, events in sel.select(timeout=1.0):
            tag = key.data
            if tag == "listen":
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                conn.setblocking(False)
                mux.add(conn)
                sel.register(conn, selectors.EVENT_READ, "client")
            elif tag == "out":
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    mux.output(outs[key.fd], chunk)
                else:
                    if writer is not None:
                        writer.close_stream(outs[key.fd])
                    sel.unregister(key.fd)
                    os.close(key.fd)
                    del outs[key.fd]
            elif tag == "stdin":
                flush_stdin()
            elif tag == "client":
                c = mux.clients.get(key.fd)
                if c is None:
                    continue
                if events & selectors.EVENT_READ:
                    try:
                        data = c.sock.recv(65536)
                    except BlockingIOError:
                        data = None
                    except OSError:
                        data = b""
                    if data == b"":
                        mux.drop(c, reason="client closed")
                        continue
                    if data:
                        mux.received(c, data)
                        if key.fd not in mux.clients:
                            continue
                if events & selectors.EVENT_WRITE and c.out:
                    try:
                        n = c.sock.send(c.out)
                        del c.out[:n]
                    except BlockingIOError:
                        pass
                    except OSError:
                        mux.drop(c, reason="client gone")
                        continue
        for c in mux.clients.values():
            _set(sel, c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0), "client")
    # The container's output ended (it exited) or we were told to stop: flush what clients have.
    deadline = time.monotonic() + 5.0
    for c in list(mux.clients.values()):
        c.sock.setblocking(True)
        c.sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            if c.out:
                c.sock.sendall(c.out)
            c.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        mux.drop(c, reason="container exited")
    if writer is not None:
        writer.close()
    listener.close()
    sock_file.unlink(missing_ok=True)
    _log("exit", container=cid)
    return 0


def _set(sel: selectors.BaseSelector, fileobj: object, events: int, tag: str) -> None:
    """Register, modify or unregister ``fileobj`` so that it waits for exactly ``events``."""
    try:
        key = sel.get_key(fileobj)   # type: ignore[arg-type]
    except (KeyError, ValueError):
        key = None
    try:
        if key is None:
            if events:
                sel.register(fileobj, events, tag)   # type: ignore[arg-type]
        elif not events:
            sel.unregister(fileobj)   # type: ignore[arg-type]
        elif key.events != events:
            sel.modify(fileobj, events, tag)   # type: ignore[arg-type]
    except (KeyError, ValueError, OSError) as e:
        if getattr(e, "errno", None) not in (None, errno.EBADF):
            raise


if __name__ == "__main__":
    sys.exit(main())
