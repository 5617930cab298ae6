"""Exec output without ctr in the middle: the shim's output pipes, handed to the kubelet.

Why: ``ctr tasks exec`` (containerd 1.6's client) copies the exec's output
from FIFOs to its own stdout in goroutines, and when the exit status arrives
it deletes the process, which first *cancels* its IO (closing its FIFO read
ends) and only then waits for the copies. A process that exits right after
it starts (``hostname``, ``wget -qO- URL``) can have its whole output still
in the FIFO at that moment: it is thrown away and ctr exits 0 with nothing
printed. Under CPU load this hit a few percent of such execs (the same bug as
concourse/concourse#6775, fixed there by waiting for the IO before Delete,
which ctr cannot be told to do).

So an exec that needs no stdin and no terminal is run with ``ctr tasks exec
--log-uri binary://<this program>?sock=PATH``: the shim starts this program
with the exec's stdout on fd 3, its stderr on fd 4 and fd 5 to close once
ready (as for ``logshim``). It connects to the Unix socket PATH, where the
kubelet waits, passes fds 3 and 4 over it (SCM_RIGHTS), signals ready and
sleeps until the shim's SIGTERM (the shim stops it when the exec is
deleted). The kubelet then reads the pipes themselves: the kernel keeps every
byte until the kubelet has read it, and the pipes end (EOF) once the process
has exited and the shim has closed its copies - before ctr exits.

Stdlib only, run with ``python -S``.
"""

from __future__ import annotations

import array
import os
import signal
import socket
import sys
import urllib.parse
from pathlib import Path

from kubepy.kubelet.unixpath import short_path

__all__ = ["ensure_executable", "exec_uri", "main", "receive_fds"]

EXE_NAME = "kubepy-execio"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    opts = dict(zip(args[::2], args[1::2], strict=False))
    if "sock" not in opts:
        print("usage: execio sock PATH", file=sys.stderr)
        return 2
    fds = [fd for fd in (3, 4) if _is_open(fd)]
    stopping = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        with short_path(opts["sock"]) as addr:
            s.connect(addr)
        names = b",".join(str(fd).encode() for fd in fds)
        s.sendmsg([names or b"-"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    for fd in fds:
        os.close(fd)        # the kubelet holds the read ends now
    if _is_open(5):
        os.close(5)         # ready: the shim starts the process
    while not stopping:
        signal.pause()
    return 0


def receive_fds(conn: socket.socket) -> dict[int, int]:
    """The handed-over pipes, by the shim's fd number (3 stdout, 4 stderr); blocks unless ``conn`` is readable."""
    fds = array.array("i")
    msg, ancdata, _flags, _addr = conn.recvmsg(64, socket.CMSG_SPACE(2 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    names = [int(n) for n in msg.split(b",") if n.strip().isdigit()]
    if len(names) != len(fds):
        for fd in fds:
            os.close(fd)
        raise OSError(f"exec IO handoff: got {len(fds)} descriptors for {msg!r}")
    return dict(zip(names, fds, strict=True))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def ensure_executable(directory: Path) -> Path:
    """Write (if missing or stale) the wrapper the shim can exec; return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / EXE_NAME
    src_root = Path(__file__).resolve().parents[2]
    text = ("#!/bin/sh\n"
            f"PYTHONPATH='{src_root}' exec '{sys.executable}' -S -m kubepy.kubelet.execio \"$@\"\n")
    if not exe.exists() or exe.read_text() != text:
        tmp = exe.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, exe)
    return exe


def exec_uri(exe: Path, sock: Path) -> str:
    return f"binary://{urllib.parse.quote(str(exe))}?{urllib.parse.urlencode({'sock': str(sock)})}"


if __name__ == "__main__":
    sys.exit(main())
