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
