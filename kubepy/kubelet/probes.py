"""Container probes: liveness, readiness and startup, each a small asyncio loop.

One ``ProbeWorker`` per (container instance, probe kind). It waits
``initialDelaySeconds`` after the container started, then probes every
``periodSeconds`` with ``timeoutSeconds``; ``ProbeState`` turns single
results into a verdict with ``successThreshold`` / ``failureThreshold``
consecutive results (pure: the unit tests drive it). A startup probe gates
the others: liveness and readiness do not run until it has succeeded.
Verdict changes call ``on_change`` (the pod worker marks its pod dirty);
failures call ``on_failure`` with the probe's output (the kubelet records
an ``Unhealthy`` Event).

Handlers: ``exec`` (``Runtime.exec`` in the container, exit 0 is success),
``httpGet`` (HTTP/1.1 GET from the kubelet's network namespace - the
node's, which reaches pod IPs through the bridge - status 200-399 is
success), ``tcpSocket`` (a connect). A timeout is a failure.

Stopping (``stop``) never waits without bound: a pod's termination and a
container's restart wait for it. The loop is cancelled and also told to
end by a flag it checks at every step (so a cancellation lost on the way -
3.11's ``wait_for`` drops one that arrives as the awaited call finishes -
still ends it); the exec probe's ``ctr`` is killed at once, and if the task
has not ended within ``STOP_TIMEOUT`` the worker says so in the log and
kills whatever probe process is still left. Timeouts here use
``asyncio.timeout``, never ``wait_for``, for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubepy.kubelet.runtime import kill_exec

log = logging.getLogger(__name__)

__all__ = ["LIVENESS", "READINESS", "STARTUP", "ProbeResult", "ProbeState", "ProbeWorker", "run_probe"]

LIVENESS, READINESS, STARTUP = "Liveness", "Readiness", "Startup"
MAX_OUTPUT = 1024
STOP_TIMEOUT = 2.0   # seconds ProbeWorker.stop waits for its loop to end


@dataclass
class ProbeResult:
    ok: bool
    output: str = ""


@dataclass
class ProbeState:
    """Consecutive results → verdict. ``verdict`` None: not decided yet."""

    success_threshold: int = 1
    failure_threshold: int = 3
    verdict: bool | None = None
    successes: int = 0
    failures: int = 0

    @classmethod
    def from_spec(cls, probe: dict[str, Any], *, initial: bool | None) -> ProbeState:
        return cls(int(probe.get("successThreshold") or 1), int(probe.get("failureThreshold") or 3), initial)

    def observe(self, ok: bool) -> bool:
        """Record one result; True when the verdict changed."""
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.verdict is not True and self.successes >= self.success_threshold:
                self.verdict = True
                return True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.verdict is not False and self.failures >= self.failure_threshold:
                self.verdict = False
                return True
        return False


def probe_delays(probe: dict[str, Any], started_monotonic: float, now: float) -> float:
    """Seconds to wait before the first probe of a container started at ``started_monotonic``."""
    return max(0.0, started_monotonic + float(probe.get("initialDelaySeconds") or 0) - now)


def _port(value: Any, ports: dict[str, int]) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if value in ports:
        return ports[value]
    raise ValueError(f"unknown port {value!r}")


async def _http_get(host: str, port: int, path: str, headers: list[dict[str, str]], timeout: float) -> ProbeResult:
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
    try:
        lines = [f"GET {path or '/'} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: kube-probe/1.30",
                 "Accept: */*", "Connection: close"]
        lines += [f"{h['name']}: {h['value']}" for h in headers if h.get("name")]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        async with asyncio.timeout(timeout):
            head = await reader.readline()
        parts = head.decode(errors="replace").split(" ", 2)
        code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        body = b""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(0.2):
                body = await reader.read(MAX_OUTPUT)
        if 200 <= code < 400:
            return ProbeResult(True, f"HTTP probe succeeded with statuscode: {code}")
        return ProbeResult(False, f"HTTP probe failed with statuscode: {code}"
                           + (f" {body.decode(errors='replace').strip()[:200]}" if code == 0 else ""))
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _dial_error(host: str, port: int, e: OSError) -> str:
    """Go's net.Dial error text: ``dial tcp 10.0.0.5:80: connect: connection refused``.

    (asyncio's own text, "Connect call failed ('10.0.0.5', 80)", drops the reason.)"""
    reason = os.strerror(e.errno) if e.errno else (e.strerror or str(e))
    op = "read" if isinstance(e, ConnectionResetError) else "connect"
    return f"dial tcp {host}:{port}: {op}: {reason[:1].lower()}{reason[1:]}"


async def run_probe(probe: dict[str, Any], *, runtime: Any, container_id: str, pod_ip: str,
                    ports: dict[str, int], processes: set[Any] | None = None) -> ProbeResult:
    """Run ``probe``'s handler once.

    An exec probe's process is in ``processes`` while it runs; however the
    probe ends (done, timed out, cancelled) it is killed if still running."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "exec" in probe:
            argv = list((probe["exec"] or {}).get("command") or [])
            proc = await runtime.exec(container_id, "probe-" + secrets.token_hex(4), argv)
            if processes is not None:
                processes.add(proc)
            try:
                async with asyncio.timeout(timeout):
                    out, err = await proc.communicate()
            except TimeoutError:
                return ProbeResult(False, f"command {argv!r} timed out")
            finally:
                await kill_exec(proc)
                if processes is not None:
                    processes.discard(proc)
            output = (out + err).decode(errors="replace")[:MAX_OUTPUT]
            return ProbeResult(proc.returncode == 0, output)
        if "httpGet" in probe:
            h = probe["httpGet"]
            host = h.get("host") or pod_ip
            port = _port(h.get("port"), ports)
            try:
                return await _http_get(host, port, h.get("path") or "/", h.get("httpHeaders") or [], timeout)
            except TimeoutError:
                return ProbeResult(False, f'Get "http://{host}:{port}{h.get("path") or "/"}": context deadline '
                                          "exceeded (Client.Timeout exceeded while awaiting headers)")
            except OSError as e:
                return ProbeResult(False, f'Get "http://{host}:{port}{h.get("path") or "/"}": '
                                          f"{_dial_error(host, port, e)}")
        if "tcpSocket" in probe:
            t = probe["tcpSocket"]
            host = t.get("host") or pod_ip
            port = _port(t.get("port"), ports)
            try:
                async with asyncio.timeout(timeout):
                    _r, w = await asyncio.open_connection(host, port)
            except TimeoutError:
                return ProbeResult(False, f"dial tcp {host}:{port}: i/o timeout")
            except OSError as e:
                return ProbeResult(False, _dial_error(host, port, e))
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
            return ProbeResult(True)
    except OSError as e:
        return ProbeResult(False, f"{e.strerror or e}")
    except Exception as e:  # noqa: BLE001 - a probe error is a failed probe
        return ProbeResult(False, f"{type(e).__name__}: {e}")
    return ProbeResult(False, "probe has no handler")


class ProbeWorker:
    """Probes one container instance for one probe kind until stopped."""

    def __init__(self, kind: str, probe: dict[str, Any], *, runtime: Any, container_id: str, pod_ip: str,
                 ports: dict[str, int], started_monotonic: float, gate: Callable[[], bool],
                 on_change: Callable[[], None], on_failure: Callable[[str, str], None]) -> None:
        self.kind, self.probe = kind, probe
        self.runtime, self.container_id, self.pod_ip, self.ports = runtime, container_id, pod_ip, ports
        self.started = started_monotonic
        self.gate = gate
        self.on_change, self.on_failure = on_change, on_failure
        # Kubernetes' initial results: liveness succeeds, readiness and startup fail until probed.
        self.state = ProbeState.from_spec(probe, initial=kind == LIVENESS)
        self.state.verdict = True if kind == LIVENESS else None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._processes: set[Any] = set()   # the exec probe's process while one runs

    @property
    def ok(self) -> bool:
        return self.state.verdict is True

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"probe:{self.kind}:{self.container_id}")

    def cancel(self) -> None:
        """Tell the loop to end and kill its running probe process; returns at once."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
        self._kill_processes()

    async def stop(self, timeout: float | None = None) -> bool:
        """``cancel``, then wait at most ``timeout`` (``STOP_TIMEOUT``) for the loop to end; False if it did not."""
        timeout = STOP_TIMEOUT if timeout is None else timeout
        self.cancel()
        task = self._task
        if task is None:
            return True
        if not task.done():
            await asyncio.wait([task], timeout=timeout)   # a cancel of the caller still propagates
        if task.done():
            if not task.cancelled():
                task.exception()   # retrieved: a probe error was already a failed probe
            return True
        killed = self._kill_processes()
        log.warning("probe did not stop container=%s probe=%s waited=%.1fs killed_processes=%d",
                    self.container_id, self.kind, timeout, killed)
        return False

    def _kill_processes(self) -> int:
        killed = 0
        for proc in list(self._processes):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                    killed += 1
        return killed

    async def _loop(self) -> None:
        await asyncio.sleep(probe_delays(self.probe, self.started, time.monotonic()))
        period = max(1.0, float(self.probe.get("periodSeconds") or 10))
        while not self._stopping:
            if self.gate():
                if self.kind == STARTUP and self.state.verdict is True:
                    return   # a startup probe stops once it has succeeded
                result = await run_probe(self.probe, runtime=self.runtime, container_id=self.container_id,
                                         pod_ip=self.pod_ip, ports=self.ports, processes=self._processes)
                if self._stopping:
                    return   # stopped while probing: the result belongs to nobody
                if not result.ok:
                    self.on_failure(self.kind, result.output.strip())
                if self.state.observe(result.ok):
                    log.info("probe verdict changed container=%s probe=%s ok=%s", self.container_id,
                             self.kind, result.ok)
                    self.on_change()
            await asyncio.sleep(period)
