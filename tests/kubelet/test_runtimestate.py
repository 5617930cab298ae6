"""The node's Ready from the container runtime's health (pure), and RuntimeHealth with a fake probe and clock."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from kubepy.kubelet.node import NodeAgent, node_conditions
from kubepy.kubelet.runtimestate import (
    RUNTIME_DOWN,
    RUNTIME_NOT_CHECKED,
    RuntimeHealth,
    aggregate,
    ready_state,
    runtime_errors,
)
from kubepy.testing.fakeapi import FakeAPI


@pytest.mark.parametrize("last_ok, now, want", [
    (None, 100.0, [RUNTIME_NOT_CHECKED]),      # never answered yet
    (100.0, 100.0, []),                        # just answered
    (100.0, 129.9, []),                        # silent, but under the threshold (30 s)
    (100.0, 130.0, [RUNTIME_DOWN]),            # silent for the threshold: down
    (100.0, 500.0, [RUNTIME_DOWN]),
])
def test_runtime_errors(last_ok, now, want):
    assert runtime_errors(last_ok, now, 30.0) == want


@pytest.mark.parametrize("started, errors, want", [
    (True, [], (True, "")),
    (False, [], (False, "container runtime not ready")),
    (True, [RUNTIME_DOWN], (False, "container runtime is down")),
    (False, [RUNTIME_DOWN], (False, "container runtime is down")),   # the runtime's reason wins
    (True, [RUNTIME_NOT_CHECKED], (False, "container runtime status check may not have completed yet")),
    (True, ["a", "b"], (False, "[a, b]")),    # Go's utilerrors aggregate
])
def test_ready_state(started, errors, want):
    assert ready_state(started=started, errors=errors) == want


def test_aggregate_one_is_itself():
    assert aggregate(["x"]) == "x"


def test_ready_condition_reason_and_message_follow_runtime():
    ready, msg = ready_state(started=True, errors=[RUNTIME_DOWN])
    down = {c["type"]: c for c in node_conditions({}, ready, None, "t1", not_ready_message=msg)}["Ready"]
    assert (down["status"], down["reason"], down["message"]) == ("False", "KubeletNotReady",
                                                                 "container runtime is down")
    ready, msg = ready_state(started=True, errors=[])
    back = {c["type"]: c for c in node_conditions({}, ready, [down], "t2", not_ready_message=msg)}["Ready"]
    assert (back["status"], back["reason"], back["message"]) == ("True", "KubeletReady",
                                                                 "kubelet is posting ready status")
    assert back["lastTransitionTime"] == "t2"


async def test_node_agent_ready_from_runtime_errors(tmp_path, caplog):
    errors: list[str] = []
    client = FakeAPI()
    client.seed("nodes", {"metadata": {"name": "n1"}})
    agent = NodeAgent(client, SimpleNamespace(node_name="n1", root_dir=tmp_path), runtime_version="x",
                      runtime_errors=lambda: list(errors))
    agent.is_ready = True
    caplog.set_level(logging.INFO, logger="kubepy.kubelet.node")

    def ready() -> dict:
        return next(c for c in client.calls("patch", "nodes")[-1].body["status"]["conditions"] if c["type"] == "Ready")

    await agent.update_status()
    assert ready()["status"] == "True"
    errors.append(RUNTIME_DOWN)
    await agent.update_status()
    assert (ready()["status"], ready()["reason"], ready()["message"]) == ("False", "KubeletNotReady", RUNTIME_DOWN)
    await agent.update_status()   # no transition: no new log line
    errors.clear()
    await agent.update_status()
    assert ready()["status"] == "True"
    lines = [r.getMessage() for r in caplog.records if "node ready condition" in r.getMessage()]
    assert [("status=True" in x, "status=False" in x) for x in lines] == [(True, False), (False, True), (True, False)]
    assert "reason=KubeletNotReady" in lines[1] and "'container runtime is down'" in lines[1]


async def test_runtime_health_transitions(caplog):
    now = [1000.0]
    answering = [True]
    changes: list[list[str]] = []
    recovered: list[float] = []

    async def probe() -> None:
        if not answering[0]:
            raise RuntimeError('ctr: failed to dial "/x/containerd.sock": connection refused')

    async def on_recovered() -> None:
        recovered.append(now[0])

    health = RuntimeHealth(probe, interval=1.0, threshold=30.0, clock=lambda: now[0],
                           on_change=lambda: changes.append(health.errors()), on_recovered=on_recovered)
    caplog.set_level(logging.INFO, logger="kubepy.kubelet.runtimestate")
    assert health.errors() == [RUNTIME_NOT_CHECKED] and not health.up
    assert await health.check() and health.up and health.errors() == []
    assert recovered == [1000.0]          # first answer after not being up
    answering[0] = False
    now[0] += 5
    assert not await health.check() and not health.up
    assert health.errors() == []          # silent 5 s: not down yet
    now[0] += 30
    await health.check()
    assert health.errors() == [RUNTIME_DOWN]
    answering[0] = True
    now[0] += 1
    await health.check()
    assert health.errors() == [] and health.up
    assert changes == [[], [RUNTIME_DOWN], []]
    assert recovered == [1000.0, 1036.0]
    # A poke after the event stream broke: a healthy probe still runs the recovery (shim cleanup).
    health.poke(restarted=True)
    await health.check()
    assert recovered == [1000.0, 1036.0, 1036.0]
    await health.check()
    assert len(recovered) == 3            # not again without a reason
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("container runtime check failed" in m for m in msgs) == 1
    assert sum(m == "container runtime up" for m in msgs) == 2


async def test_runtime_health_wait_up_and_poke():
    answering = [False]

    async def probe() -> None:
        if not answering[0]:
            raise RuntimeError("down")

    health = RuntimeHealth(probe, interval=3600.0, threshold=30.0)
    runner = asyncio.create_task(health.run())
    try:
        await asyncio.sleep(0.05)
        waiter = asyncio.create_task(health.wait_up())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        answering[0] = True
        health.poke()               # without the poke the next probe is an hour away
        await asyncio.wait_for(waiter, 2)
        assert health.up
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_node_agent_reports_images_when_they_change(tmp_path, monkeypatch):
    from kubepy.kubelet import node as node_mod

    now = [100.0]
    monkeypatch.setattr(node_mod.time, "monotonic", lambda: now[0])
    images = [[{"names": ["docker.io/library/busybox:1.36"], "sizeBytes": 1000}]]
    reads = []

    async def list_images():
        reads.append(now[0])
        return images[0]

    client = FakeAPI()
    client.seed("nodes", {"metadata": {"name": "n1"}})
    agent = NodeAgent(client, SimpleNamespace(node_name="n1", root_dir=tmp_path), runtime_version="x",
                      images=list_images)

    def patched() -> dict:
        return client.calls("patch", "nodes")[-1].body["status"]

    await agent.update_status()
    assert patched()["images"] == images[0]
    now[0] += 5
    await agent.update_status()                     # not read again before IMAGES_REFRESH
    assert "images" not in patched() and len(reads) == 1
    now[0] += node_mod.IMAGES_REFRESH
    await agent.update_status()                     # read again, unchanged: not written
    assert "images" not in patched() and len(reads) == 2
    images[0] = [*images[0], {"names": ["kubepy.local/app:1"], "sizeBytes": 5}]
    now[0] += node_mod.IMAGES_REFRESH
    await agent.update_status()
    assert patched()["images"] == images[0]


async def test_registration_outlives_an_api_server_that_is_away(tmp_path, monkeypatch, caplog):
    """Upstream's registerWithAPIServer: connection failures and 5xx are tried again (backing off),
    a refusal is not. A kubelet that gave up here exited and, on a loaded VM, never came back."""
    from kubepy.client import ForbiddenError, ServerError, TransportError
    from kubepy.kubelet import node as node_mod

    monkeypatch.setattr(node_mod, "REGISTER_FIRST_DELAY", 0.01)
    monkeypatch.setattr(node_mod, "REGISTER_MAX_DELAY", 0.02)
    client = FakeAPI()
    failures = [TransportError("POST /api/v1/nodes: connection refused"),
                ServerError(503, "ServiceUnavailable", "etcd is away"),
                TransportError("POST /api/v1/nodes: reset")]

    def flaky(_action):
        if failures:
            raise failures.pop(0)
    client.react("create", "nodes", flaky)
    config = SimpleNamespace(node_name="n1", root_dir=tmp_path, node_ip="10.0.0.1", port=10250, max_pods=110,
                             node_labels={})
    agent = NodeAgent(client, config, runtime_version="x")
    caplog.set_level(logging.WARNING, logger="kubepy.kubelet.node")
    node = await asyncio.wait_for(agent.register(), 5)
    assert node["metadata"]["name"] == "n1" and [o["metadata"]["name"] for o in client.objects("nodes")] == ["n1"]
    assert len(client.calls("create", "nodes")) == 4
    assert caplog.text.count("node registration failed node=n1 retry_in=") == 3

    def refuse(_action):
        raise ForbiddenError(403, "Forbidden", "nodes is forbidden")
    refused = FakeAPI()
    refused.react("create", "nodes", refuse)
    with pytest.raises(ForbiddenError):
        await asyncio.wait_for(NodeAgent(refused, config, runtime_version="x").register(), 5)


async def test_waiting_for_the_pod_cidr_outlives_an_api_server_that_is_away(tmp_path, monkeypatch, caplog):
    """Run 5 of the three-control-plane VM test: a joining control plane's kubelet got a 503
    (its etcd member still catching up) while waiting for spec.podCIDR, exited, and systemd's
    restarts kept its node NotReady for 20 minutes. The wait asks again instead, backing off."""
    from kubepy.client import ServerError, TransportError
    from kubepy.kubelet import node as node_mod

    monkeypatch.setattr(node_mod, "REGISTER_FIRST_DELAY", 0.01)
    monkeypatch.setattr(node_mod, "REGISTER_MAX_DELAY", 0.02)
    client = FakeAPI()
    config = SimpleNamespace(node_name="n1", root_dir=tmp_path, node_ip="10.0.0.1", port=10250, max_pods=110,
                             node_labels={})
    agent = NodeAgent(client, config, runtime_version="x")
    await agent.register()
    failures = [ServerError(503, "ServiceUnavailable", "storage is unavailable: etcd unreachable"),
                TransportError("GET /api/v1/nodes/n1: connection reset")]

    def flaky(_action):
        if failures:
            raise failures.pop(0)
        return {**client.objects("nodes")[0], "spec": {"podCIDR": "10.244.3.0/24"}}   # IPAM has set it
    client.react("get", "nodes", flaky)
    caplog.set_level(logging.WARNING, logger="kubepy.kubelet.node")
    assert await asyncio.wait_for(agent.wait_pod_cidr(poll=0.01), 5) == "10.244.3.0/24"
    assert caplog.text.count("node pod cidr read failed node=n1 retry_in=") == 2
