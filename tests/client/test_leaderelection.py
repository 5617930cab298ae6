"""Leader election on a Lease (client-go's semantics), on the in-memory API:
one leader at a time, a standby takes over when the leader releases or stops
renewing, and a leader that cannot renew stops leading at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from kubepy.client.leaderelection import LeaderElectionConfig, LeaderElector, LeadershipLost
from kubepy.testing.fakeapi import FakeAPI

FAST = {"lease_duration": 1.0, "renew_deadline": 0.6, "retry_period": 0.1}


def cfg(identity: str) -> LeaderElectionConfig:
    return LeaderElectionConfig("kube-scheduler", identity=identity, **FAST)


class Leading:
    """A lead() that records while it runs."""

    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.stopped = asyncio.Event()

    async def __call__(self) -> None:
        self.running.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.stopped.set()


async def test_one_leader_a_standby_and_a_clean_handover() -> None:
    api = FakeAPI()
    a, b = LeaderElector(api, cfg("a")), LeaderElector(api, cfg("b"))
    lead_a, lead_b = Leading(), Leading()
    ta = asyncio.create_task(a.run(lead_a))
    await asyncio.wait_for(lead_a.running.wait(), 2)
    tb = asyncio.create_task(b.run(lead_b))
    await asyncio.sleep(0.5)
    assert not lead_b.running.is_set() and a.is_leader and not b.is_leader
    (lease,) = api.objects("leases", "kube-system")
    assert lease["spec"]["holderIdentity"] == "a" and lease["spec"]["leaseDurationSeconds"] == 1
    assert lease["spec"]["leaseTransitions"] == 0
    # a stops cleanly: it releases, b takes over well before the lease would have expired
    t0 = time.monotonic()
    ta.cancel()
    await asyncio.gather(ta, return_exceptions=True)
    assert lead_a.stopped.is_set()
    await asyncio.wait_for(lead_b.running.wait(), 2)
    assert time.monotonic() - t0 < 0.9
    (lease,) = api.objects("leases", "kube-system")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    tb.cancel()
    await asyncio.gather(tb, return_exceptions=True)
    await api.close()


async def test_a_leader_that_cannot_renew_stops_and_a_standby_takes_over_after_expiry() -> None:
    api = FakeAPI()
    a, b = LeaderElector(api, cfg("a")), LeaderElector(api, cfg("b"))
    lead_a, lead_b = Leading(), Leading()
    ta = asyncio.create_task(a.run(lead_a))
    await asyncio.wait_for(lead_a.running.wait(), 2)
    tb = asyncio.create_task(b.run(lead_b))
    await asyncio.sleep(0.3)
    # a is cut off from the API: its renewals fail (b still reaches it)
    real_update = api.update

    async def cut_off(resource, obj, **kw):
        if obj.get("spec", {}).get("holderIdentity") == "a":
            raise OSError("connection refused")
        return await real_update(resource, obj, **kw)

    api.update = cut_off  # type: ignore[method-assign]
    t0 = time.monotonic()
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(ta, 3)
    assert lead_a.stopped.is_set() and not a.is_leader
    assert time.monotonic() - t0 <= FAST["renew_deadline"] + 2 * FAST["retry_period"] + 0.3
    await asyncio.wait_for(lead_b.running.wait(), 3)
    (lease,) = api.objects("leases", "kube-system")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    tb.cancel()
    await asyncio.gather(tb, return_exceptions=True)
    await api.close()


def test_upstream_validation_of_the_durations() -> None:
    with pytest.raises(ValueError, match="leaseDuration must be greater than renewDeadline"):
        LeaderElectionConfig("x", lease_duration=5, renew_deadline=5)
    with pytest.raises(ValueError, match="renewDeadline must be greater than retryPeriod"):
        LeaderElectionConfig("x", lease_duration=15, renew_deadline=2, retry_period=2)
