"""Person-friendly progress: one ✓/✗ line per step with its time.

A spinner is drawn only on a terminal; in CI and logs each step is one
plain line.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator


class StepFailed(Exception):
    def __init__(self, step: str, reason: str, detail: str = "") -> None:
        super().__init__(f"{step}: {reason}")
        self.step, self.reason, self.detail = step, reason, detail


@contextmanager
def step(title: str, *, out=sys.stdout) -> Iterator[None]:
    tty = out.isatty()
    stop = threading.Event()
    spinner: threading.Thread | None = None
    if tty:
        def spin() -> None:
            for ch in itertools.cycle("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"):
                if stop.wait(0.1):
                    return
                out.write(f"\r {ch} {title}")
                out.flush()
        spinner = threading.Thread(target=spin, daemon=True)
        spinner.start()
    started = time.monotonic()
    try:
        yield
    except BaseException:
        stop.set()
        if spinner:
            spinner.join()
        _finish(out, tty, "✗", title, started)
        raise
    stop.set()
    if spinner:
        spinner.join()
    _finish(out, tty, "✓", title, started)


def _finish(out, tty: bool, mark: str, title: str, started: float) -> None:
    prefix = "\r" if tty else ""
    out.write(f"{prefix} {mark} {title} ({time.monotonic() - started:.1f}s)\n")
    out.flush()
