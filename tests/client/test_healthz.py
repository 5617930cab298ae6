"""/healthz of a one-loop daemon: it fails, from another thread, while the loop is stuck."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

from kubepy.controlplane import (APISERVER_FAILURE_THRESHOLD, FAILURE_THRESHOLD, STARTUP_GRACE, Child,
                                 health_verdict)
from kubepy.healthz import HealthServer, LoopHeartbeat


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def test_healthz_fails_while_the_loop_is_blocked_and_recovers():
    beat = LoopHeartbeat(interval=0.05, max_lag=0.3)
    server = HealthServer(beat, "127.0.0.1:0")
    server.start()
    task = asyncio.create_task(beat.run())
    url = f"http://127.0.0.1:{server.port}/healthz"
    try:
        await asyncio.sleep(0.2)
        assert await asyncio.to_thread(_get, url) == (200, "ok\n")
        # A reconcile that never awaits: the loop is stuck, the server's thread still answers.
        probe = asyncio.get_running_loop().run_in_executor(None, lambda: (time.sleep(0.6), _get(url))[1])
        time.sleep(1.0)
        code, body = await probe
        assert code == 500 and body.startswith("event loop lag "), (code, body)
        await asyncio.sleep(0.2)
        assert await asyncio.to_thread(_get, url) == (200, "ok\n")
        assert (await asyncio.to_thread(_get, f"http://127.0.0.1:{server.port}/nope"))[0] == 404
    finally:
        task.cancel()
        server.stop()


def test_health_verdicts():
    c = Child("controller-manager", [])
    c.started = 100.0
    assert health_verdict(c, True, 101.0) == "healthy"
    assert health_verdict(c, False, 101.0) == "starting"  # not yet healthy once: grace
    assert health_verdict(c, False, 100.0 + STARTUP_GRACE + 1) == "kill"
    # kubepy controlplane --startup-grace: a longer start-up (an emulated VM) before the kill.
    assert health_verdict(c, False, 100.0 + STARTUP_GRACE + 1, grace=600.0) == "starting"
    assert health_verdict(c, False, 100.0 + 601, grace=600.0) == "kill"
    c.healthy_once = True
    for failures in range(FAILURE_THRESHOLD - 1):
        c.failures = failures
        assert health_verdict(c, False, 500.0) == "failing"
    c.failures = FAILURE_THRESHOLD - 1
    assert health_verdict(c, False, 500.0) == "kill"


def test_adopt_only_the_recorded_process(tmp_path):
    import json
    import os

    from kubepy.controlplane import proc_start_ticks

    me = os.getpid()
    (tmp_path / "scheduler.json").write_text(json.dumps({"pid": me, "start_ticks": proc_start_ticks(me),
                                                         "health_url": "http://127.0.0.1:1/healthz", "restarts": 2}))
    c = Child("scheduler", [])
    assert c.adopt(tmp_path) and c.pid == me and c.alive() and c.restarts == 2
    # The same pid with another start time is a reused pid: never adopted.
    (tmp_path / "scheduler.json").write_text(json.dumps({"pid": me, "start_ticks": proc_start_ticks(me) - 1}))
    assert not Child("scheduler", []).adopt(tmp_path)
    (tmp_path / "scheduler.json").write_text("garbage")
    assert not Child("scheduler", []).adopt(tmp_path)


def test_the_api_server_is_given_kubeadms_liveness_allowance() -> None:
    api, other = Child("apiserver", []), Child("scheduler", [])
    for c in (api, other):
        c.healthy_once, c.started = True, 0.0
        c.failures = FAILURE_THRESHOLD - 1
    assert health_verdict(other, False, 100.0) == "kill"
    assert health_verdict(api, False, 100.0) == "failing"
    api.failures = APISERVER_FAILURE_THRESHOLD - 1
    assert health_verdict(api, False, 100.0) == "kill"
