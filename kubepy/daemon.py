"""Running a daemon's event loop so that it always exits.

``asyncio.run`` cancels what is left when the main coroutine ends, then waits
for it without limit: one task that outlives its cancellation (a cancel
swallowed by 3.11's ``wait_for``, a loop that catches ``CancelledError``) or
one executor thread blocked in a system call, and the process sits there with
its ports closed, neither serving nor exiting, so systemd or the lab's
supervisor never starts it again. That happened to a kubelet whose API server
went away during registration (seen on the Vagrant control-plane VM).

:func:`run` is ``asyncio.run`` with a bound: what does not stop within
``grace`` seconds is logged (task name and where it is suspended) and the
process exits with status 1 at once, the reason already in its log.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import traceback
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

STOP_GRACE = 15.0   # seconds for the remaining tasks, then again for the executor's threads


def run(main: Coroutine[Any, Any, T], *, name: str, grace: float = STOP_GRACE) -> T:
    """Run ``main`` to completion on a new loop; then stop the rest within ``grace`` or exit hard."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    error: BaseException | None = None
    try:
        return loop.run_until_complete(main)
    except BaseException as e:
        error = e
        raise
    finally:
        if not _close(loop, name, grace):
            if error is not None and not isinstance(error, SystemExit):
                traceback.print_exception(error)
            log.error("exiting without a clean stop daemon=%s", name)
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)


def where(task: asyncio.Task[Any]) -> str:
    """Where a task is suspended, outermost first: ``file:line:function > ...``."""
    frames = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}:{frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(frames) or "?"


def _close(loop: asyncio.AbstractEventLoop, name: str, grace: float) -> bool:
    """Cancel and await what is left; False when something would not stop in time."""
    clean = True
    try:
        tasks = asyncio.all_tasks(loop)
        if tasks:
            for task in tasks:
                task.cancel()
            done, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=grace))
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    loop.call_exception_handler({"message": "unhandled exception during shutdown",
                                                 "exception": task.exception(), "task": task})
            for task in pending:
                log.error("task did not stop daemon=%s task=%s grace=%.0fs at=%s", name, task.get_name(), grace,
                          where(task))
            clean = not pending
        if clean:
            loop.run_until_complete(loop.shutdown_asyncgens())
            _, pending_executor = loop.run_until_complete(
                asyncio.wait([loop.create_task(loop.shutdown_default_executor())], timeout=grace))
            if pending_executor:
                log.error("executor threads did not stop daemon=%s grace=%.0fs", name, grace)
                clean = False
    finally:
        if clean:
            asyncio.set_event_loop(None)
            loop.close()
    return clean
