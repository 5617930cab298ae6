"""The container runtime's health as the kubelet sees it, and what it means for the node's Ready.

Kubernetes' kubelet (``runtime_state.go``) probes its runtime every few
seconds and remembers when the last probe succeeded; the runtime counts as
*down* once that success is older than a threshold (upstream: 2 minutes,
here ``runtime_down_threshold``, 30 s by default: a containerd that is
restarted by its supervisor within seconds must not flip the node, a
stopped one must not keep it Ready for minutes). Until a first probe has
succeeded the status check "may not have completed yet". Either error
turns the node's ``Ready`` condition ``False`` with reason
``KubeletNotReady`` and the errors as the message (aggregated as Go's
``utilerrors.NewAggregate`` prints them).

Pure: ``runtime_errors``, ``aggregate``, ``ready_state``.
Effect: ``RuntimeHealth`` runs the probe (``ctr version`` through
``Runtime.status``) every ``interval`` or at once when poked (the kubelet
pokes it when its ``ctr events`` subscription ends, which is how a
containerd crash shows first), logs one line per up/down transition of the
probe, calls ``on_change`` whenever ``errors()`` changes (the node agent
then writes the node status at once) and ``on_recovered`` after every
probe that succeeded following a failure or a poke (the kubelet then looks
for shims the old containerd leaked). Pod workers wait in ``wait_up`` while
the last probe failed, as upstream skips pod syncs while the runtime is
down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

__all__ = [
    "RUNTIME_DOWN",
    "RUNTIME_NOT_CHECKED",
    "RuntimeHealth",
    "aggregate",
    "ready_state",
    "runtime_errors",
]

RUNTIME_DOWN = "container runtime is down"
RUNTIME_NOT_CHECKED = "container runtime status check may not have completed yet"
NOT_STARTED = "container runtime not ready"   # the kubelet has not finished starting (kubepy's own)


def runtime_errors(last_ok: float | None, now: float, threshold: float) -> list[str]:
    """Upstream's runtimeState.runtimeErrors: why the runtime can't be trusted, or nothing."""
    if last_ok is None:
        return [RUNTIME_NOT_CHECKED]
    if now - last_ok >= threshold:
        return [RUNTIME_DOWN]
    return []


def aggregate(errors: list[str]) -> str:
    """Go's utilerrors.NewAggregate(errs).Error(): one error as itself, several as ``[a, b]``."""
    if len(errors) == 1:
        return errors[0]
    return "[" + ", ".join(errors) + "]"


def ready_state(*, started: bool, errors: list[str]) -> tuple[bool, str]:
    """(Ready?, message when not) for the node's Ready condition."""
    if errors:
        return False, aggregate(errors)
    if not started:
        return False, NOT_STARTED
    return True, ""


class RuntimeHealth:
    """Probes the runtime periodically; see the module docstring."""

    def __init__(self, probe: Callable[[], Awaitable[object]], *, interval: float, threshold: float,
                 on_change: Callable[[], None] | None = None,
                 on_recovered: Callable[[], Awaitable[None]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.probe = probe
        self.interval = interval
        self.threshold = threshold
        self.on_change = on_change
        self.on_recovered = on_recovered
        self.clock = clock
        self.last_ok: float | None = None
        self.up = False
        self._up_event = asyncio.Event()
        self._poke = asyncio.Event()
        self._suspect = False          # poked: the runtime may have restarted behind our back
        self._last_errors: list[str] | None = None

    def errors(self) -> list[str]:
        return runtime_errors(self.last_ok, self.clock(), self.threshold)

    def poke(self, *, restarted: bool = False) -> None:
        """Probe now (e.g. the event stream ended); ``restarted``: it may have been restarted."""
        self._suspect = self._suspect or restarted
        self._poke.set()

    def mark_ok(self) -> None:
        """A probe elsewhere (the kubelet's start-up wait) succeeded."""
        self.last_ok = self.clock()
        self.up = True
        self._up_event.set()

    async def wait_up(self) -> None:
        await self._up_event.wait()

    async def check(self) -> bool:
        """One probe; True if the runtime answered."""
        try:
            await self.probe()
            ok, err = True, ""
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of the probe is the runtime's ill health
            ok, err = False, str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        was_up, suspect = self.up, self._suspect
        if ok:
            self.mark_ok()
            self._suspect = False
            if not was_up:
                log.info("container runtime up")
        else:
            self.up = False
            self._up_event.clear()
            if was_up:
                log.warning("container runtime check failed err=%s", err)
        errors = self.errors()
        if errors != self._last_errors:
            self._last_errors = errors
            if self.on_change is not None:
                self.on_change()
        if ok and (not was_up or suspect) and self.on_recovered is not None:
            try:
                await self.on_recovered()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the next recovery or start tries again
                log.warning("runtime recovery step failed err=%s", e)
        return ok

    async def run(self) -> None:
        while True:
            self._poke.clear()   # before the probe: a poke during it means "probe again"
            await self.check()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that arrives as
            # the poke does, and a task that outlives its cancel hangs the daemon's exit.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._poke.wait()
