"""The control-plane supervisor's periodic job (the metrics server's re-registration): run on its own
thread when due, never two at once, never before its first period."""

from __future__ import annotations

import threading
import time

from kubepy.controlplane import Supervisor


def test_a_periodic_job_runs_when_due_and_never_overlaps(tmp_path):
    release, started = threading.Event(), []
    sup = Supervisor([], data_dir=tmp_path, port=1)
    sup.periodic = (0.05, lambda: (started.append(time.monotonic()), release.wait(5)))
    sup._periodic_due = time.monotonic() + 0.05
    sup._run_periodic()
    assert started == []  # not yet due
    time.sleep(0.06)
    sup._run_periodic()
    deadline = time.monotonic() + 2
    while not started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(started) == 1
    time.sleep(0.1)  # due again, but the first run still holds
    sup._run_periodic()
    time.sleep(0.05)
    assert len(started) == 1
    release.set()
    sup._periodic_thread.join(2)
    sup._run_periodic()
    deadline = time.monotonic() + 2
    while len(started) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(started) == 2
    sup._periodic_thread.join(2)
