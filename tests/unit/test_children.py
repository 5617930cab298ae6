"""Daemons wait for their child processes with a pidfd, not a thread per child."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from kubepy.children import use_pidfd_child_watcher


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ picks the pidfd watcher itself")
def test_children_are_awaited_without_a_thread_each() -> None:
    async def main() -> tuple[int, int]:
        use_pidfd_child_watcher(asyncio.get_running_loop())
        before = threading.active_count()
        procs = [await asyncio.create_subprocess_exec("sleep", "0.2") for _ in range(10)]
        during = threading.active_count()
        codes = await asyncio.gather(*(p.wait() for p in procs))
        assert codes == [0] * 10
        return before, during

    import warnings

    try:
        before, during = asyncio.run(main())
    finally:
        with warnings.catch_warnings():   # the next test's loops get the default watcher again
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_child_watcher(None)
    assert during == before    # ThreadedChildWatcher would have started 10 threads


def test_a_helper_started_with_die_with_parent_goes_when_its_parent_is_killed() -> None:
    import signal
    import subprocess
    import sys
    import time

    code = ("import subprocess, sys, time\n"
            "from kubepy.children import die_with_parent\n"
            "p = subprocess.Popen(['sleep', '300'], preexec_fn=die_with_parent)\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(300)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{child}/stat") as f:
                    if f.read().split(") ", 1)[1].startswith("Z"):
                        break   # dead, waiting for init to reap it
            except FileNotFoundError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"sleep {child} outlived its killed parent")
    finally:
        parent.kill()
        parent.wait()
