"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's
leaderelection package does it for kube-scheduler and kube-controller-manager.

Several replicas run ``LeaderElector.run(lead)``; one holds the Lease and runs
``lead()``, the others retry every ``retry_period``. The record lives in the
Lease's spec (``holderIdentity``, ``leaseDurationSeconds``, ``acquireTime``,
``renewTime``, ``leaseTransitions``), so ``kubectl get lease -n kube-system``
shows the holder. Every write is a compare-and-swap on the Lease's
resourceVersion, so two candidates can never both believe they won.

A lease held by someone else counts as expired ``leaseDurationSeconds`` after
this candidate last *saw the record change*, measured on its own monotonic
clock (not by comparing the record's renewTime with the local clock: the
machines' clocks need not agree). The leader renews every ``retry_period``;
if it cannot renew for ``renew_deadline`` it stops leading at once:
``lead()`` is cancelled and ``LeadershipLost`` raised (the daemon exits and
its supervisor restarts it as a candidate, as upstream's components do). On
a clean stop the leader releases the Lease (upstream's ReleaseOnCancel), so a
standby takes over without waiting for it to expire.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubepy.client.errors import AlreadyExistsError, ConflictError, NotFoundError

log = logging.getLogger(__name__)


class LeadershipLost(RuntimeError):
    """The leader could not renew its Lease within the renew deadline."""


def default_identity() -> str:
    """Upstream's form: the host name and a unique suffix, so a restarted process is a new candidate."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


@dataclass
class LeaderElectionConfig:
    name: str                       # the Lease: kube-scheduler, kube-controller-manager
    namespace: str = "kube-system"
    identity: str = field(default_factory=default_identity)
    lease_duration: float = 15.0    # upstream's defaults (--leader-elect-lease-duration ...)
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    release_on_cancel: bool = True

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline:
            raise ValueError("leaseDuration must be greater than renewDeadline")
        if not self.renew_deadline > self.retry_period * 1.2:   # upstream's JitterFactor
            raise ValueError("renewDeadline must be greater than retryPeriod*JitterFactor")
        if self.retry_period <= 0:
            raise ValueError("retryPeriod must be greater than zero")


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, client: Any, config: LeaderElectionConfig, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.config = config
        self.clock = clock
        self.is_leader = False
        self._observed: tuple[Any, ...] | None = None   # the record as last seen ...
        self._observed_at = 0.0                          # ... and when it last changed (our clock)

    @property
    def lease(self) -> str:
        return f"{self.config.namespace}/{self.config.name}"

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Become the leader, then run ``lead()`` for as long as the Lease is ours."""
        c = self.config
        waiting_logged = False
        while not await self.try_acquire_or_renew():
            if not waiting_logged:
                holder = (self._observed or ("",))[0]
                log.info("leader election waiting lease=%s identity=%s holder=%s", self.lease, c.identity, holder)
                waiting_logged = True
            await asyncio.sleep(c.retry_period)
        self.is_leader = True
        log.info("leader elected lease=%s identity=%s", self.lease, c.identity)
        leading = asyncio.create_task(lead(), name=f"leading:{c.name}")
        renewing = asyncio.create_task(self._renew(), name=f"renewing:{c.name}")
        try:
            done, _ = await asyncio.wait({leading, renewing}, return_when=asyncio.FIRST_COMPLETED)
            if renewing in done:
                leading.cancel()
                await asyncio.gather(leading, return_exceptions=True)
                renewing.result()   # LeadershipLost
            await leading           # lead() ended (or failed) by itself
        finally:
            for t in (leading, renewing):
                t.cancel()
            await asyncio.gather(leading, renewing, return_exceptions=True)
            if self.is_leader and c.release_on_cancel:
                await asyncio.shield(self.release())
            self.is_leader = False

    async def _renew(self) -> None:
        c = self.config
        last_ok = self.clock()
        while True:
            await asyncio.sleep(c.retry_period)
            try:
                ok = await asyncio.wait_for(self.try_acquire_or_renew(), max(0.1, c.renew_deadline - (self.clock() - last_ok)))
            except (TimeoutError, OSError) as e:
                log.warning("lease renew failed lease=%s identity=%s err=%s", self.lease, c.identity, e or "timeout")
                ok = False
            except Exception as e:  # noqa: BLE001 - any failure to renew counts against the deadline
                log.warning("lease renew failed lease=%s identity=%s err=%s", self.lease, c.identity, e)
                ok = False
            if ok:
                last_ok = self.clock()
            elif self.clock() - last_ok >= c.renew_deadline:
                self.is_leader = False
                log.warning("leader lost lease=%s identity=%s reason=RenewDeadlineExceeded", self.lease, c.identity)
                raise LeadershipLost(f"failed to renew lease {self.lease} within {c.renew_deadline:g}s")

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: create the Lease, renew ours, or take an expired one. False: someone else holds it."""
        c = self.config
        now = _micro_now()
        try:
            lease = await self.client.get("leases", c.name, namespace=c.namespace)
        except NotFoundError:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": c.name, "namespace": c.namespace},
                    "spec": {"holderIdentity": c.identity, "leaseDurationSeconds": int(c.lease_duration),
                             "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}
            try:
                await self.client.create("leases", body, namespace=c.namespace)
            except AlreadyExistsError:
                return False
            self._note(body["spec"])
            return True
        spec = lease.get("spec") or {}
        self._note(spec)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or c.lease_duration)
        if holder and holder != c.identity and self.clock() < self._observed_at + duration:
            return False
        ours = holder == c.identity
        new_spec = {**spec, "holderIdentity": c.identity, "leaseDurationSeconds": int(c.lease_duration),
                    "renewTime": now, "acquireTime": spec.get("acquireTime") if ours else now,
                    "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)}
        try:
            await self.client.update("leases", {**lease, "spec": new_spec})
        except (ConflictError, NotFoundError):
            return False
        if not ours:
            log.info("lease taken lease=%s identity=%s previous=%s", self.lease, c.identity, holder or "(none)")
        self._note(new_spec)
        return True

    def _note(self, spec: dict[str, Any]) -> None:
        record = (spec.get("holderIdentity") or "", spec.get("renewTime"), spec.get("acquireTime"),
                  spec.get("leaseTransitions"), spec.get("leaseDurationSeconds"))
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()

    async def release(self) -> None:
        """Give the Lease up (holder cleared, 1 s duration) so a standby need not wait for it to expire."""
        c = self.config
        try:
            lease = await self.client.get("leases", c.name, namespace=c.namespace)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != c.identity:
                return
            await self.client.update("leases", {**lease, "spec": {
                **spec, "holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": _micro_now()}})
            log.info("lease released lease=%s identity=%s", self.lease, c.identity)
        except Exception as e:  # noqa: BLE001 - best effort: the lease expires anyway
            log.warning("lease release failed lease=%s identity=%s err=%s", self.lease, c.identity, e)


async def run_leader_elected(client: Any, config: LeaderElectionConfig | None,
                             lead: Callable[[], Awaitable[None]]) -> None:
    """``lead()`` directly when *config* is None (leader election off), else once elected."""
    if config is None:
        await lead()
        return
    await LeaderElector(client, config).run(lead)


__all__ = ["LeaderElectionConfig", "LeaderElector", "LeadershipLost", "default_identity", "run_leader_elected"]
