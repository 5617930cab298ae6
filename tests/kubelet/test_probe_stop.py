"""Stopping probes is prompt and bounded, and a pod's termination never waits on them.

In-process, with a fake runtime whose exec hands back fake ``ctr tasks exec``
processes: one that exits as the probe is cancelled (3.11's ``wait_for``
dropped that cancel and the probe loop ran on forever), one that hangs until
killed, and one that ignores both cancellation and SIGKILL (a ctr stuck in
the kernel). A pod worker holding such a probe must still log "pod
terminating" and send SIGTERM at once, and leave no probe process running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kubepy.kubelet import probes
from kubepy.kubelet.pods import (
    LABEL_CONTAINER_NAME,
    LABEL_CREATED_AT,
    LABEL_KIND,
    LABEL_POD_UID,
    LABEL_RESTART_COUNT,
    PodWorker,
)
from kubepy.kubelet.probes import LIVENESS, ProbeWorker
from kubepy.kubelet.runtime import RUNNING, STOPPED, ContainerInfo
from kubepy.kubelet.status import now_rfc3339

EXEC_PROBE = {"exec": {"command": ["test", "-f", "/tmp/started"]}, "periodSeconds": 1, "timeoutSeconds": 30}


class FakeExec:
    """A ``ctr tasks exec`` process: exits when told (``finish``) or killed, unless it ignores that."""

    def __init__(self, *, ignore_cancel: bool = False, ignore_kill: bool = False) -> None:
        self.returncode: int | None = None
        self.killed = False
        self.ignore_cancel, self.ignore_kill = ignore_cancel, ignore_kill
        self._exited = asyncio.Event()

    def finish(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        self._exited.set()

    def kill(self) -> None:
        if self.returncode is not None:
            raise ProcessLookupError
        self.killed = True
        if not self.ignore_kill:
            self.finish(-9)

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    async def communicate(self, input: bytes | None = None) -> tuple[bytes, bytes]:
        while True:
            try:
                await self._exited.wait()
                return b"", b""
            except asyncio.CancelledError:
                if not self.ignore_cancel:
                    raise


class FakeRuntime:
    """Execs hand out ``FakeExec``s; one app container ``main`` of pod ``uid`` that SIGTERM stops."""

    def __init__(self, uid: str = "", **exec_kw: Any) -> None:
        self.exec_kw = exec_kw
        self.execs: list[FakeExec] = []
        self.exec_started = asyncio.Event()
        self.kills: list[tuple[float, str]] = []
        self.uid = uid
        self.status = RUNNING

    async def exec(self, cid: str, exec_id: str, argv: list[str], **_: Any) -> FakeExec:
        proc = FakeExec(**self.exec_kw)
        self.execs.append(proc)
        self.exec_started.set()
        return proc

    async def list_containers(self, *, reap: bool = True) -> list[ContainerInfo]:
        labels = {LABEL_POD_UID: self.uid, LABEL_CONTAINER_NAME: "main", LABEL_KIND: "app",
                  LABEL_RESTART_COUNT: "0", LABEL_CREATED_AT: now_rfc3339()}
        return [ContainerInfo(id="main-0", image="busybox", labels=labels, status=self.status,
                              exit_status=None if self.status == RUNNING else 0)]

    async def exit_status(self, cid: str) -> int | None:
        return None if self.status == RUNNING else 0

    async def kill(self, cid: str, sig: str, *, all_processes: bool = False) -> None:
        self.kills.append((time.monotonic(), sig))
        self.status = STOPPED


def worker(rt: FakeRuntime, probe: dict[str, Any] = EXEC_PROBE) -> ProbeWorker:
    return ProbeWorker(LIVENESS, probe, runtime=rt, container_id="main-0", pod_ip="", ports={},
                       started_monotonic=time.monotonic(), gate=lambda: True, on_change=lambda: None,
                       on_failure=lambda kind, out: None)


async def release(rt: FakeRuntime, w: ProbeWorker) -> bool:
    """Let every fake process go, so no task outlives the test; True if the probe loop then ended by itself."""
    rt.exec_kw = {}
    for p in rt.execs:
        p.ignore_cancel, p.ignore_kill = False, False
        p.finish(0)
    task = w._task
    if task is None:
        return True
    await asyncio.wait([task], timeout=2)
    if task.done():
        return True
    task.cancel()   # a loop that outlived its stop (the bug): end it anyway
    await asyncio.wait([task], timeout=2)
    return False


async def test_stop_ends_a_probe_whose_process_exits_as_it_is_cancelled():
    """The exec's ctr exits in the same loop turn as the cancel: 3.11's wait_for returned its
    result and dropped the cancel, the loop probed on forever and stop() never returned."""
    rt = FakeRuntime()
    w = worker(rt)
    w.start()
    try:
        await asyncio.wait_for(rt.exec_started.wait(), 2)
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        rt.execs[0].finish(0)          # ctr exits...
        async with asyncio.timeout(5):
            stopped = await w.stop()   # ...as the pod is deleted
        assert stopped is True and time.monotonic() - t0 < 1.0
        await asyncio.sleep(1.3)       # longer than periodSeconds: a loop that outlived stop() probes again
        assert len(rt.execs) == 1
    finally:
        await release(rt, w)


async def test_stop_kills_the_probe_process_it_cancels():
    """A probe waiting on its ctr (hung, or a slow command) is cancelled: the ctr must not be left running."""
    rt = FakeRuntime()
    w = worker(rt)
    w.start()
    try:
        await asyncio.wait_for(rt.exec_started.wait(), 2)
        t0 = time.monotonic()
        await w.stop()
        assert time.monotonic() - t0 < 1.0
        assert rt.execs[0].killed and rt.execs[0].returncode == -9
        assert w._task is not None and w._task.done()
    finally:
        await release(rt, w)


async def test_stop_is_bounded_when_the_probe_ignores_cancel_and_kill(caplog):
    caplog.set_level(logging.WARNING, logger="kubepy.kubelet.probes")
    rt = FakeRuntime(ignore_cancel=True, ignore_kill=True)
    w = worker(rt)
    w.start()
    try:
        await asyncio.wait_for(rt.exec_started.wait(), 2)
        t0 = time.monotonic()
        assert await w.stop(timeout=0.3) is False
        assert time.monotonic() - t0 < 1.0
        assert rt.execs[0].killed
        lines = [r.getMessage() for r in caplog.records if "probe did not stop" in r.getMessage()]
        assert lines == ["probe did not stop container=main-0 probe=Liveness waited=0.3s killed_processes=1"]
    finally:
        ended = await release(rt, w)
    assert ended and len(rt.execs) == 1   # the loop, once free, ended without probing again


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


def fake_kubelet(tmp_path: Path, rt: FakeRuntime) -> Any:
    deleted: list[str] = []

    async def delete(resource: str, name: str, **_: Any) -> None:
        deleted.append(name)

    async def wait_exit(cid: str, timeout: float) -> bool:
        return await rt.exit_status(cid) is not None

    async def cleanup_pod(uid: str, *, log_dir: Path | None = None) -> None:
        return None

    return SimpleNamespace(
        runtime=rt, container_pod={}, recorder=Recorder(), deleted=deleted,
        config=SimpleNamespace(pods_dir=str(tmp_path / "pods"), log_dir=str(tmp_path / "logs")),
        client=SimpleNamespace(delete=delete), wait_exit=wait_exit, cleanup_pod=cleanup_pod,
        oom_ids=lambda uid: set(), cgroup_oom=lambda uid, cid: False, mark_oom=lambda uid, cid: None,
        status=SimpleNamespace(forget=lambda uid: None), backoff=SimpleNamespace(forget_prefix=lambda p: None))


async def test_terminate_does_not_wait_for_a_stuck_probe(tmp_path, caplog, monkeypatch):
    """The flake: a pod with exec probes, deleted while a probe's ctr hangs, was never terminated."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(probes, "STOP_TIMEOUT", 1.0, raising=False)
    uid = "0d6c0a3e-probe-stop"
    rt = FakeRuntime(uid, ignore_cancel=True, ignore_kill=True)
    k = fake_kubelet(tmp_path, rt)
    pod = {"metadata": {"name": "slowstart", "namespace": "kubepy-probe-stop", "uid": uid},
           "spec": {"containers": [{"name": "main", "image": "busybox", "livenessProbe": EXEC_PROBE}],
                    "terminationGracePeriodSeconds": 5}}
    w = PodWorker(k, uid, pod)
    await w.snapshot()
    await w._sync_probes()
    [probe] = w.probes["main-0"]
    try:
        await asyncio.wait_for(rt.exec_started.wait(), 2)
        w.set_pod({**pod, "metadata": {**pod["metadata"], "deletionTimestamp": now_rfc3339(),
                                       "deletionGracePeriodSeconds": 5}})
        t0 = time.monotonic()
        terminating = asyncio.create_task(w.terminate())
        await asyncio.wait([terminating], timeout=8)
        took = time.monotonic() - t0
        if not terminating.done():
            await release(rt, probe)
            await asyncio.wait([terminating], timeout=5)
            pytest.fail(f"terminate() still waiting on its probe after {took:.0f}s; kills={rt.kills}")
        assert terminating.result() is True
        assert rt.kills and rt.kills[0][1] == "SIGTERM"
        assert rt.kills[0][0] - t0 < 0.5, "SIGTERM waited for the probe"
        assert took < 3.0, took           # the probe's stop bound (1s), not forever
        assert k.deleted == ["slowstart"] and w.probes == {}
        assert rt.execs[0].killed
        messages = [r.getMessage() for r in caplog.records]
        assert any(m.startswith("pod terminating pod=kubepy-probe-stop/slowstart") for m in messages), messages
        assert any(m.startswith("probe did not stop container=main-0 probe=Liveness") for m in messages), messages
        assert ("Normal", "Killing", "Stopping container main") in k.recorder.events
    finally:
        await release(rt, probe)
