"""Unix socket paths longer than the kernel's 108 bytes.

A kubelet's state directory can be deep (a lab node's is under its cluster's
directory), and ``sockaddr_un`` holds at most 107 bytes of path.  Binding or
connecting through ``/proc/self/fd/N/<name>``, with N an ``O_PATH`` descriptor
of the socket's directory, reaches the same file with a short path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["short_path"]

_MAX = 100  # comfortably under sizeof(sun_path) - 1


@contextmanager
def short_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """A path to bind or connect to that names ``path``, valid inside the ``with``."""
    p = os.fspath(path)
    if len(os.fsencode(p)) < _MAX:
        yield p
        return
    directory, name = os.path.split(p)
    fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)
