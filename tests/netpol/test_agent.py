"""The agent against the in-memory FakeAPI and a fake iptables: syncs follow changes within
min_sync_period, bursts become one sync, unchanged inputs cost nothing, a failed restore is
retried as a full sync, and a jump pushed down by someone else is moved back first."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from kubepy.netpol.agent import Agent, IPTablesError, cleanup
from kubepy.netpol.rules import BUILTIN_JUMPS
from kubepy.testing.fakeapi import FakeAPI

FIRST = {b: f"-A {b} {spec} -j {t}" for b, spec, t in BUILTIN_JUMPS}


class FakeIPTables:
    """Records payloads; keeps the first rule of each built-in chain as the agent's payloads leave it."""

    def __init__(self) -> None:
        self.restores: list[str] = []
        self.saves = 0
        self.fail_next = 0
        self.heads: dict[str, str] = {}
        self.chains: set[str] = set()

    async def restore(self, payload: str) -> None:
        self.restores.append(payload)
        if self.fail_next:
            self.fail_next -= 1
            raise IPTablesError(["iptables-restore"], 1, "fake failure")
        for line in payload.splitlines():
            if line.startswith("-I "):
                builtin = line.split()[1]
                self.heads[builtin] = FIRST[builtin]
            elif line.startswith(":"):
                self.chains.add(line[1:].split()[0])
            elif line.startswith("-X "):
                self.chains.discard(line.split()[1])

    async def save(self) -> str:
        self.saves += 1
        lines = ["*filter", *(f":{c} - [0:0]" for c in sorted(self.chains))]
        lines += [h for h in self.heads.values()]
        return "\n".join([*lines, "COMMIT", ""])

    async def first_rule(self, chain: str) -> str:
        return self.heads.get(chain, "")

    @property
    def last(self) -> str:
        return self.restores[-1]


def pod(name: str, ip: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "x", "name": name, "uid": f"uid-{name}", "labels": labels or {"pod": name}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"podIP": ip, "phase": "Running"}}


def netpol(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("podSelector", {})
    return {"metadata": {"namespace": "x", "name": name, "uid": f"uid-{name}"}, "spec": spec}


async def wait_until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class Harness:
    def __init__(self) -> None:
        self.client = FakeAPI()
        self.iptables = FakeIPTables()
        self.agent = Agent(self.client, node_name="n1", pod_cidr="10.244.0.0/24", iptables=self.iptables,
                           min_sync_period=0.2, head_check_period=0.1)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.agent.run())
        await wait_until(lambda: self.agent.syncs >= 1)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    h.client.seed("namespaces", {"metadata": {"name": "x", "uid": "uid-x"}})
    h.client.seed("pods", pod("a", "10.244.0.2"))
    yield h
    await h.stop()


async def test_first_sync_is_full_and_policies_follow_within_min_sync_period(harness: Harness) -> None:
    await harness.start()
    assert harness.iptables.saves == 1 and "-I FORWARD 1 " in harness.iptables.last
    assert "KUBE-POD-IN-" not in harness.iptables.last
    start = time.monotonic()
    await harness.client.create("networkpolicies", netpol("deny"), namespace="x")
    await wait_until(lambda: "x/a ingress: policy x/deny" in harness.iptables.last)
    assert time.monotonic() - start < 1.0
    assert "-I FORWARD" not in harness.iptables.last  # a partial sync does not read the kernel


async def test_a_burst_is_one_sync_and_unchanged_inputs_none(harness: Harness) -> None:
    await harness.start()
    await asyncio.sleep(0.25)
    for i in range(10):
        await harness.client.create("networkpolicies", netpol(f"p{i}"), namespace="x")
        await asyncio.sleep(0.01)
    await wait_until(lambda: "policy x/p9" in harness.iptables.last)
    await asyncio.sleep(0.4)
    # The first change goes at once; the nine that come within min_sync_period make one more sync.
    assert len(harness.iptables.restores) == 3
    # A change no rule depends on (a pod's conditions) makes no restore.
    same = pod("a", "10.244.0.2")
    same["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    await harness.client.update("pods", same)
    await asyncio.sleep(0.4)
    assert len(harness.iptables.restores) == 3 and harness.agent.syncs == 3


async def test_a_failed_restore_is_retried_as_a_full_sync(harness: Harness) -> None:
    await harness.start()
    harness.iptables.fail_next = 1
    await harness.client.create("networkpolicies", netpol("deny"), namespace="x")
    await wait_until(lambda: harness.agent.failures == 1 and harness.agent.syncs >= 2)
    assert harness.iptables.saves == 2 and "x/a ingress: policy x/deny" in harness.iptables.last


async def test_a_jump_pushed_down_is_moved_back_first(harness: Harness) -> None:
    await harness.start()
    harness.iptables.heads["FORWARD"] = '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD'
    await wait_until(lambda: harness.iptables.saves >= 2)
    await wait_until(lambda: harness.iptables.heads["FORWARD"] == FIRST["FORWARD"])
    assert "-I FORWARD 1 " in harness.iptables.last


async def test_cleanup_removes_chains_and_jumps() -> None:
    ipt = FakeIPTables()
    ipt.chains = {"KUBE-NWPLCY-FORWARD", "KUBE-POD-IN-AAAA"}
    ipt.heads = dict(FIRST)
    assert await cleanup(ipt) == 2
    assert "-X KUBE-POD-IN-AAAA" in ipt.last and "-D FORWARD " in ipt.last
