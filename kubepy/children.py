"""Child processes of asyncio daemons."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import warnings

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl   # looked up now: after fork only the call is made


def die_with_parent() -> None:
    """A ``preexec_fn``: the child gets SIGKILL when the thread that started it ends (the daemon's
    main thread: when the daemon does, even by SIGKILL). For a long-lived helper of a daemon whose
    unit uses KillMode=process, which systemd leaves running when the daemon dies."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


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
