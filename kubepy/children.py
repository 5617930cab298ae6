"""Child processes of asyncio daemons."""

from __future__ import annotations

import asyncio
import os
import sys
import warnings


def use_pidfd_child_watcher(loop: asyncio.AbstractEventLoop) -> None:
    """Python 3.11 waits for each asyncio child process on a thread of its own
    (ThreadedChildWatcher): a daemon that runs many short commands (the kubelet's
    `ctr`, the proxy's iptables-restore) spent more time starting threads than
    commands. A pidfd (Linux >= 5.3) needs none; 3.12 picks it by itself."""
    if sys.version_info >= (3, 12) or not hasattr(asyncio, "PidfdChildWatcher"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return   # an older kernel: keep the threaded watcher
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        watcher = asyncio.PidfdChildWatcher()
        asyncio.set_child_watcher(watcher)
        watcher.attach_loop(loop)
