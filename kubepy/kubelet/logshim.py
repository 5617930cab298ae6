"""Container log shim: stdout/stderr to a file in the Kubernetes CRI log format.

containerd's "binary" logging driver runs this for every container
(``ctr run --log-uri binary:///path/to/wrapper?path=...&max-bytes=...``). The
shim (containerd-shim-runc-v2, not containerd) starts it with the
container's stdout on fd 3, its stderr on fd 4 and fd 5 to close once ready,
and ``CONTAINER_ID``/``CONTAINER_NAMESPACE`` in its environment; the query
becomes the arguments as ``key value`` pairs in any order. Because the shim is
its parent, logging survives containerd restarts.

Each line is written as the kubelet's CRI logs are::

    2026-11-21T11:00:00.123456789Z stdout F message
    2026-11-21T11:00:00.123456789Z stderr P first 16 KiB of a longer line

``P`` marks a partial line (longer than ``max-line`` bytes); the last piece
is ``F``; a final unterminated line is written as ``F`` at end of stream.
The file is rotated by size like the kubelet does: ``path`` → ``path.1`` →
… keeping ``max-files`` files in all (current one included).

Limitations: a container logging through this driver has no stdin and no
TTY (ctr only connects the log URI to stdout/stderr); a container that asks
for them is run by ``attachio`` instead, which writes the same log format. The shim is a plain
stdlib program (``python -S``) so that it costs a few MiB per container.
"""

from __future__ import annotations

import os
import selectors
import signal
import sys
import time
import urllib.parse
from pathlib import Path

__all__ = ["CRILogWriter", "ensure_shim_executable", "format_cri_line", "log_uri", "main"]

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_FILES = 5
DEFAULT_MAX_LINE = 16 * 1024   # containerd CRI's max_container_log_line_size
SHIM_NAME = "kubepy-logshim"


def format_cri_line(stream: str, data: bytes, *, partial: bool = False,
                    now_ns: int | None = None) -> bytes:
    """One CRI log line (with its newline) for ``data`` (without one)."""
    ns = time.time_ns() if now_ns is None else now_ns
    secs, frac = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
    tag = b"P" if partial else b"F"
    return b"%s %s %s %s\n" % (stamp.encode(), stream.encode(), tag, data)


class CRILogWriter:
    """Splits chunks of each stream into CRI lines, appends, rotates by size."""

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_files: int = DEFAULT_MAX_FILES, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_files = max(1, max_files)
        self.max_line = max_line
        self._pending: dict[str, bytes] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab", buffering=0)
        self._size = self._file.tell()

    def feed(self, stream: str, chunk: bytes) -> None:
        buf = self._pending.pop(stream, b"") + chunk
        out: list[bytes] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            end = len(buf) if nl < 0 else nl
            while end - start > self.max_line:        # an over-long line: P pieces
                out.append(format_cri_line(stream, buf[start:start + self.max_line], partial=True))
                start += self.max_line
            if nl < 0:
                break
            out.append(format_cri_line(stream, buf[start:nl]))
            start = nl + 1
        if start < len(buf):
            self._pending[stream] = buf[start:]
        for line in out:
            self._write(line)

    def close_stream(self, stream: str) -> None:
        """End of a stream: its unterminated tail becomes a full line."""
        tail = self._pending.pop(stream, b"")
        if tail:
            self._write(format_cri_line(stream, tail))

    def close(self) -> None:
        for stream in list(self._pending):
            self.close_stream(stream)
        self._file.close()

    def _write(self, line: bytes) -> None:
        if self._size and self._size + len(line) > self.max_bytes:
            self._rotate()
        self._file.write(line)
        self._size += len(line)

    def _rotate(self) -> None:
        self._file.close()
        if self.max_files > 1:
            for i in range(self.max_files - 1, 0, -1):
                src = self.path if i == 1 else self.path.with_name(f"{self.path.name}.{i - 1}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i}"))
            self._file = open(self.path, "ab", buffering=0)
        else:
            self._file = open(self.path, "wb", buffering=0)
        self._size = 0


def _parse_args(argv: list[str]) -> dict[str, str]:
    """``key value`` pairs (containerd passes the URI query so); ``--key`` also works."""
    opts: dict[str, str] = {}
    it = iter(argv)
    for key in it:
        opts[key.lstrip("-")] = next(it, "")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = _parse_args(sys.argv[1:] if argv is None else argv)
    if "path" not in opts:
        print("usage: logshim path FILE [max-bytes N] [max-files N] [max-line N]", file=sys.stderr)
        return 2
    streams = {fd: name for fd, name in ((3, "stdout"), (4, "stderr")) if _is_open(fd)}
    has_ready_fd = _is_open(5)   # look before opening the log file, which may take fd 5
    writer = CRILogWriter(Path(opts["path"]),
                          max_bytes=int(opts.get("max-bytes", DEFAULT_MAX_BYTES)),
                          max_files=int(opts.get("max-files", DEFAULT_MAX_FILES)),
                          max_line=int(opts.get("max-line", DEFAULT_MAX_LINE)))
    if has_ready_fd:
        os.close(5)          # tell the shim we are ready
    stopping = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True       # drain what is readable, then exit

    signal.signal(signal.SIGTERM, on_term)
    sel = selectors.DefaultSelector()
    for fd in streams:
        sel.register(fd, selectors.EVENT_READ)
    while streams:
        events = sel.select(timeout=0 if stopping else 1.0)
        if not events and stopping:
            break
        for key, _ in events:
            fd = key.fd
            chunk = os.read(fd, 65536)
            if chunk:
                writer.feed(streams[fd], chunk)
            else:
                writer.close_stream(streams.pop(fd))
                sel.unregister(fd)
                os.close(fd)
    writer.close()
    return 0


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def ensure_shim_executable(directory: Path) -> Path:
    """Write (if missing or stale) the wrapper that containerd can exec; return its path.

    The shim starts it with an empty environment, so the wrapper names the
    interpreter and kubepy's location itself.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / SHIM_NAME
    src_root = Path(__file__).resolve().parents[2]
    text = ("#!/bin/sh\n"
            f"PYTHONPATH='{src_root}' exec '{sys.executable}' -S -m kubepy.kubelet.logshim \"$@\"\n")
    if not exe.exists() or exe.read_text() != text:
        tmp = exe.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, exe)
    return exe


def log_uri(shim: Path, log_path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
            max_files: int = DEFAULT_MAX_FILES) -> str:
    """The ``binary://`` URI that makes containerd run ``shim`` for ``log_path``."""
    query = urllib.parse.urlencode({"path": str(log_path), "max-bytes": str(max_bytes),
                                    "max-files": str(max_files)})
    return f"binary://{urllib.parse.quote(str(shim))}?{query}"


if __name__ == "__main__":
    sys.exit(main())
