"""Service load-balancer controller: pool parsing and choice (pure), and addresses held
race-free through Leases against a real API server, with two controllers competing."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from kubepy.controllers.garbagecollector import GarbageCollector
from kubepy.controllers.servicelb import ServiceLBController, lease_name, parse_pool, pick_address
from tests.controllers.conftest import controller_env, get_or_none


def test_parse_pool():
    assert parse_pool("10.0.0.1-10.0.0.3") == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert parse_pool("10.0.0.0/30, 10.0.0.9-10.0.0.9") == ["10.0.0.1", "10.0.0.2", "10.0.0.9"]
    assert parse_pool("10.0.0.7/32") == ["10.0.0.7"]
    for bad in ("10.0.0.3-10.0.0.1", "x-y", "10.0.0.0/33", "10.0.0.0/8"):
        with pytest.raises(ValueError):
            parse_pool(bad)


@pytest.mark.parametrize("taken, requested, held, expected", [
    (set(), None, None, ("10.0.0.1", "")),
    ({"10.0.0.1"}, None, None, ("10.0.0.2", "")),
    ({"10.0.0.1", "10.0.0.2"}, None, "10.0.0.2", ("10.0.0.2", "")),
    ({"10.0.0.1", "10.0.0.2"}, None, None, (None, "no available IPs")),
    (set(), "10.0.0.2", None, ("10.0.0.2", "")),
    ({"10.0.0.2"}, "10.0.0.2", None, (None, "requested IP '10.0.0.2' is already assigned to another service")),
    (set(), "192.0.2.1", None, (None, "requested IP '192.0.2.1' is not in the pool")),
])
def test_pick_address(taken, requested, held, expected):
    assert pick_address(["10.0.0.1", "10.0.0.2"], taken, requested=requested, held=held) == expected


def lb(name, **spec):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "selector": {"app": name}, **spec}}


def ips_of(svc):
    return [i["ip"] for i in ((svc or {}).get("status") or {}).get("loadBalancer", {}).get("ingress") or []]


async def events_of(c, ns, name):
    items = (await c.list("events", namespace=ns, field_selector=f"involvedObject.name={name}"))["items"]
    return [(e["reason"], e["message"]) for e in items]


@pytest.mark.slow
async def test_addresses_from_the_pool_race_free_and_released(apiserver, namespace):
    ns = namespace
    pool = "192.0.2.10-192.0.2.12"
    async with contextlib.AsyncExitStack() as stack:
        # Two controller managers (as with several API servers behind them): no address twice.
        # The garbage collector runs too: it must leave the address Leases alone.
        envs = [await stack.enter_async_context(controller_env(apiserver, ServiceLBController, *extra,
                                                               load_balancer_ip_range=pool))
                for extra in ((GarbageCollector,), ())]
        c = envs[0].client
        await asyncio.gather(*(c.create("services", lb(f"s{i}"), namespace=ns) for i in range(3)))

        async def all_assigned():
            got = [ips_of(await c.get("services", f"s{i}", namespace=ns)) for i in range(3)]
            return got if all(got) else None

        got = await envs[0].wait_for(all_assigned)
        assert sorted(ip for ips in got for ip in ips) == ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
        lease = await c.get("leases", lease_name(got[0][0]), namespace="kube-system")
        assert lease["spec"]["holderIdentity"] == f"{ns}/s0"
        await asyncio.sleep(1.0)  # time for a garbage collector to (wrongly) take it
        assert [ips_of(await c.get("services", f"s{i}", namespace=ns)) for i in range(3)] == got
        assert await get_or_none(c, "leases", lease_name(got[0][0]), "kube-system") is not None

        # The pool is empty now: a fourth waits, with MetalLB's event.
        await c.create("services", lb("s3"), namespace=ns)
        await envs[0].wait_for(lambda: _has_event(c, ns, "s3", "AllocationFailed", "no available IPs"))
        assert ips_of(await c.get("services", "s3", namespace=ns)) == []
        # Another implementation's class is left alone.
        await c.create("services", lb("other", loadBalancerClass="example.com/lb"), namespace=ns)
        # Deleting one frees its address for the one waiting.
        freed = got[1][0]
        await c.delete("services", "s1", namespace=ns)
        await envs[0].wait_for(lambda: _ips_are(c, ns, "s3", [freed]))
        assert any(r == "IPAllocated" and freed in m for r, m in await events_of(c, ns, "s3"))

        # A Service that stops being a LoadBalancer gives its address back and loses its status.
        s0 = await c.get("services", "s0", namespace=ns)
        await c.patch("services", "s0", {"spec": {"type": "ClusterIP", "externalTrafficPolicy": None,
                                                  "allocateLoadBalancerNodePorts": None,
                                                  "ports": [{"port": 80, "protocol": "TCP"}]}}, namespace=ns)
        await envs[0].wait_for(lambda: _ips_are(c, ns, "s0", []))
        await envs[0].wait_for(lambda: _is_none(get_or_none(c, "leases", lease_name(ips_of(s0)[0]), "kube-system")))
        # spec.loadBalancerIP: that address, or a warning when it is outside the pool.
        await c.create("services", lb("fixed", loadBalancerIP=ips_of(s0)[0]), namespace=ns)
        await envs[0].wait_for(lambda: _ips_are(c, ns, "fixed", ips_of(s0)))
        await c.create("services", lb("outside", loadBalancerIP="198.51.100.1"), namespace=ns)
        await envs[0].wait_for(lambda: _has_event(c, ns, "outside", "AllocationFailed", "not in the pool"))
        assert ips_of(await c.get("services", "other", namespace=ns)) == []
        # Source ranges are kube-proxy's to enforce (KUBE-FW chains): the address stays.
        await c.patch("services", "fixed", {"spec": {"loadBalancerSourceRanges": ["203.0.113.0/24"]}},
                      namespace=ns)
        freed = ips_of(await c.get("services", "s2", namespace=ns))
        await c.delete("services", "s2", namespace=ns)
        await c.create("services", lb("ranged", loadBalancerSourceRanges=["203.0.113.0/24"]), namespace=ns)
        await envs[0].wait_for(lambda: _ips_are(c, ns, "ranged", freed))
        assert ips_of(await c.get("services", "fixed", namespace=ns)) == ips_of(s0)


async def _has_event(c, ns, name, reason, text):
    return any(r == reason and text in m for r, m in await events_of(c, ns, name))


async def _ips_are(c, ns, name, wanted):
    return ips_of(await c.get("services", name, namespace=ns)) == wanted


async def _is_none(aw):
    return (await aw) is None
