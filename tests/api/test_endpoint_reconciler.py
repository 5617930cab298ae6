"""The kubernetes Service's endpoints follow the API servers' leases (kubepy.api.endpointreconciler)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from kubepy.api.endpointreconciler import EndpointReconciler, live_addresses, subsets
from kubepy.api.storage import Storage
from kubepy.kinds import by_plural
from kubepy.store.sqlite import SQLiteStore


@pytest.fixture
async def storage(tmp_path):
    store = SQLiteStore(str(tmp_path / "state.db"))
    s = Storage(store)
    for ns in ("default", "kube-system"):
        await s.create(by_plural("namespaces"), None, {"metadata": {"name": ns}})
    try:
        yield s
    finally:
        await store.close()


def lease(addr: str, renewed: str, seconds: int = 15) -> dict:
    return {"metadata": {"annotations": {"kubepy.io/advertise-address": addr}},
            "spec": {"renewTime": renewed, "leaseDurationSeconds": seconds}}


def test_only_current_leases_count_and_ports_group_addresses():
    now = dt.datetime(2026, 1, 1, 0, 0, 30, tzinfo=dt.timezone.utc)
    leases = [lease("10.0.0.2:6443", "2026-01-01T00:00:20.000000Z"),
              lease("10.0.0.1:6443", "2026-01-01T00:00:16.000000Z"),
              lease("10.0.0.3:6443", "2026-01-01T00:00:14.999999Z"),  # ran out at 00:00:29.999999
              lease("10.0.0.4:7443", "2026-01-01T00:00:29.000000Z"), {"metadata": {}, "spec": {}}]
    live = live_addresses(leases, now)
    assert live == [("10.0.0.1", 6443), ("10.0.0.2", 6443), ("10.0.0.4", 7443)]
    assert subsets(live) == [
        {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]},
        {"addresses": [{"ip": "10.0.0.4"}], "ports": [{"name": "https", "port": 7443, "protocol": "TCP"}]}]


async def endpoints(storage) -> list:
    ep = await storage.get(by_plural("endpoints"), "default", "kubernetes")
    return sorted((a["ip"], p["port"]) for s in ep["subsets"] for a in s["addresses"] for p in s["ports"])


async def test_a_server_that_dies_drops_out_when_its_lease_runs_out_one_that_stops_at_once(storage):
    a = EndpointReconciler(storage, "10.0.0.1", 6443, duration=1)
    b = EndpointReconciler(storage, "10.0.0.2", 6443, duration=1)
    c = EndpointReconciler(storage, "10.0.0.3", 6443, duration=30)
    for r in (a, b, c):
        await r.reconcile()
    await a.reconcile()
    assert await endpoints(storage) == [("10.0.0.1", 6443), ("10.0.0.2", 6443), ("10.0.0.3", 6443)]
    await c.remove()  # a clean stop
    assert await endpoints(storage) == [("10.0.0.1", 6443), ("10.0.0.2", 6443)]
    await asyncio.sleep(1.2)  # b is "killed": it renews no more
    assert await a.reconcile() == [("10.0.0.1", 6443)]
    assert await endpoints(storage) == [("10.0.0.1", 6443)]
    leases, _, _ = await storage.list(by_plural("leases"), "kube-system")
    assert {x["metadata"]["name"] for x in leases} == {a.name, b.name}  # c deleted its own
    await b.reconcile()  # back: it renews and adds itself
    assert await endpoints(storage) == [("10.0.0.1", 6443), ("10.0.0.2", 6443)]
