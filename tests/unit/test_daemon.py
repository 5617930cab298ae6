"""kubepy.daemon.run: a daemon's loop always ends, and says what kept it from ending cleanly.

Each case runs in its own interpreter: the stuck cases end with os._exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PRELUDE = """
import asyncio, logging, sys, time
sys.path.insert(0, {repo!r})
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
from kubepy.daemon import run
"""


def _run(body: str, timeout: float = 30) -> tuple[int, str, str, float]:
    code = PRELUDE.format(repo=str(REPO)) + textwrap.dedent(body)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def test_a_clean_stop_returns_the_result_and_cancels_the_rest():
    code, out, err, _ = _run("""
        async def tick():
            while True:
                await asyncio.sleep(0.01)
        async def main():
            asyncio.get_running_loop().create_task(tick(), name="ticker")
            await asyncio.sleep(0.05)
            return 42
        print(run(main(), name="t", grace=5))
    """)
    assert (code, out.strip()) == (0, "42"), err
    assert "did not stop" not in err and "without a clean stop" not in err


def test_a_task_that_outlives_its_cancel_is_named_and_the_process_exits():
    code, out, err, took = _run("""
        async def stubborn():
            while True:
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    pass   # the bug this guards against: a cancel that is swallowed
        async def main():
            asyncio.get_running_loop().create_task(stubborn(), name="stubborn")
            await asyncio.sleep(0.05)
            raise RuntimeError("registration failed")
        run(main(), name="t", grace=0.5)
        print("not reached")
    """)
    assert code == 1 and "not reached" not in out, (code, out, err)
    assert took < 20
    assert "task did not stop daemon=t task=stubborn grace=0s at=" in err and ":stubborn" in err, err
    # The error that ended the loop is printed before the hard exit, not lost with it.
    assert "RuntimeError: registration failed" in err
    assert "exiting without a clean stop daemon=t" in err


def test_an_executor_thread_that_never_returns_does_not_hold_the_exit():
    code, out, err, took = _run("""
        async def main():
            asyncio.get_running_loop().run_in_executor(None, time.sleep, 3600)
            await asyncio.sleep(0.05)
        run(main(), name="t", grace=0.5)
        print("not reached")
    """)
    assert code == 1 and "not reached" not in out, (code, out, err)
    assert took < 20
    assert "executor threads did not stop daemon=t" in err, err
