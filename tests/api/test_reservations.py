"""ClusterIP and node-port reservations in the store: two ``Storage`` objects on one store stand for
two API servers whose allocator views have not seen each other's writes (kubepy.api.reservations)."""

from __future__ import annotations

import asyncio
import json

import pytest

from kubepy.api import errors
from kubepy.api.reservations import IP_PREFIX, LEAK_GRACE, PORT_PREFIX, Reservations, Taken
from kubepy.api.storage import Storage
from kubepy.kinds import by_plural
from kubepy.store.sqlite import SQLiteStore

SERVICES = by_plural("services")


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStore(str(tmp_path / "state.db"))
    try:
        yield s
    finally:
        await s.close()


async def two_servers(store) -> tuple[Storage, Storage]:
    a = Storage(store, service_cidr="10.0.0.0/26", node_port_range=(30000, 30040))
    b = Storage(store, service_cidr="10.0.0.0/26", node_port_range=(30000, 30040))
    ns = by_plural("namespaces")
    await a.create(ns, None, {"metadata": {"name": "default"}})
    return a, b


def svc(name: str, **spec) -> dict:
    return {"metadata": {"name": name}, "spec": {"ports": [{"port": 80}], "selector": {"app": name}, **spec}}


async def test_blind_servers_never_hand_out_one_address_or_port_twice(store):
    a, b = await two_servers(store)
    # Neither server watches the other: only the store can keep them apart.
    made = await asyncio.gather(*[(a if i % 2 else b).create(SERVICES, "default", svc(f"s{i}", type="NodePort"))
                                  for i in range(36)])
    ips = [s["spec"]["clusterIP"] for s in made]
    ports = [s["spec"]["ports"][0]["nodePort"] for s in made]
    assert len(set(ips)) == 36 and len(set(ports)) == 36
    reserved = {kv.key for kv in (await store.range(IP_PREFIX)).kvs} | \
        {kv.key for kv in (await store.range(PORT_PREFIX)).kvs}
    assert reserved == {IP_PREFIX + ip for ip in ips} | {f"{PORT_PREFIX}TCP/{p}" for p in ports}


async def test_blind_servers_fill_the_whole_node_port_range(store):
    """All 41 node ports for 41 Services: a server whose pick was taken learns every other server's
    picks from the store at once, so the last Services find the last free ports within the retries."""
    a, b = await two_servers(store)
    made = await asyncio.gather(*[(a if i % 2 else b).create(SERVICES, "default", svc(f"f{i}", type="NodePort"))
                                  for i in range(41)])
    assert sorted(s["spec"]["ports"][0]["nodePort"] for s in made) == list(range(30000, 30041))


async def test_an_address_asked_for_on_both_servers_goes_to_one(store):
    a, b = await two_servers(store)
    results = await asyncio.gather(a.create(SERVICES, "default", svc("x", clusterIP="10.0.0.9")),
                                   b.create(SERVICES, "default", svc("y", clusterIP="10.0.0.9")),
                                   return_exceptions=True)
    ok = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, errors.Invalid)]
    assert len(ok) == 1 and len(refused) == 1, results
    assert refused[0].status()["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "message": "10.0.0.9: provided IP is already allocated",
         "field": "spec.clusterIPs"}]
    # The same for a node port, refused on the field that asked for it.
    results = await asyncio.gather(
        a.create(SERVICES, "default", svc("p", type="NodePort", ports=[{"port": 80, "nodePort": 30007}])),
        b.create(SERVICES, "default", svc("q", type="NodePort", ports=[{"port": 80, "nodePort": 30007}])),
        return_exceptions=True)
    refused = [r for r in results if isinstance(r, errors.Invalid)]
    assert len(refused) == 1, results
    assert refused[0].status()["details"]["causes"][0]["field"] == "spec.ports[0].nodePort"


async def test_deleting_or_dropping_node_ports_releases_them_for_the_other_server(store):
    a, b = await two_servers(store)
    s = await a.create(SERVICES, "default", svc("x", type="NodePort", clusterIP="10.0.0.9",
                                                  ports=[{"port": 80, "nodePort": 30007}]))
    assert s["spec"]["clusterIP"] == "10.0.0.9"

    def to_cluster_ip(o):
        o["spec"]["type"] = "ClusterIP"
        o["spec"]["ports"][0].pop("nodePort")
        o["spec"].pop("externalTrafficPolicy", None)
        return o

    await a.update(SERVICES, "default", "x", to_cluster_ip)
    assert await store.get(f"{PORT_PREFIX}TCP/30007") is None
    await b.create(SERVICES, "default", svc("y", type="NodePort", ports=[{"port": 80, "nodePort": 30007}]))
    from kubepy.api.storage import DeleteOptions

    await a.delete(SERVICES, "default", "x", DeleteOptions())
    assert await store.get(IP_PREFIX + "10.0.0.9") is None
    await b.create(SERVICES, "default", svc("z", clusterIP="10.0.0.9"))


async def test_a_failed_write_leaves_no_reservation(store):
    a, _ = await two_servers(store)
    first = await a.create(SERVICES, "default", svc("x"))
    other = "10.0.0.21" if first["spec"]["clusterIP"] == "10.0.0.20" else "10.0.0.20"   # not the one x got
    before = len((await store.range(IP_PREFIX)).kvs)
    with pytest.raises(errors.AlreadyExists):
        await a.create(SERVICES, "default", svc("x", clusterIP=other))
    assert len((await store.range(IP_PREFIX)).kvs) == before
    assert await store.get(IP_PREFIX + other) is None


async def test_repair_adds_missing_reservations_and_drops_old_leaked_ones(store):
    clock = [1000.0]
    r = Reservations(store, clock=lambda: clock[0])
    # A Service stored before reservations existed, and a reservation whose write never happened.
    await store.create(SERVICES.key("default", "old"), json.dumps(
        svc("old", type="NodePort", clusterIP="10.0.0.5", ports=[{"port": 80, "nodePort": 30001}])).encode())
    assert await r.reserve("/registry/services/default/ghost", ["10.0.0.6"]) == ["10.0.0.6"]
    assert await r.repair(SERVICES.prefix) == (2, 0)  # the ghost is too young to drop
    clock[0] += LEAK_GRACE + 1
    assert await r.repair(SERVICES.prefix) == (0, 1)
    assert {kv.key for kv in (await store.range("/registry/ranges/")).kvs} == {
        IP_PREFIX + "10.0.0.5", PORT_PREFIX + "TCP/30001"}
    with pytest.raises(Taken) as e:
        await r.reserve("/registry/services/default/other", ["10.0.0.7", "10.0.0.5"])
    assert e.value.holder == SERVICES.key("default", "old")
    assert await store.get(IP_PREFIX + "10.0.0.7") is None  # what the refused call made is released
