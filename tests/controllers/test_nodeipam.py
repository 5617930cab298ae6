"""Node IPAM: CIDR allocation (pure) and distinct CIDRs for live nodes."""

from __future__ import annotations

import contextlib

import pytest

from kubepy.client import NotFoundError
from kubepy.controllers.nodeipam import CIDRRangeExhausted, NodeIpamController, next_free_cidr, node_cidrs
from tests.controllers.conftest import controller_env


def test_lowest_free_block():
    assert next_free_cidr("10.244.0.0/16", 24, []) == "10.244.0.0/24"
    assert next_free_cidr("10.244.0.0/16", 24, ["10.244.0.0/24", "10.244.2.0/24"]) == "10.244.1.0/24"
    # Foreign or malformed CIDRs take nothing from the range.
    assert next_free_cidr("10.244.0.0/16", 24, ["192.168.0.0/24", "junk"]) == "10.244.0.0/24"
    # A larger block in use covers every /24 inside it.
    assert next_free_cidr("10.244.0.0/16", 24, ["10.244.0.0/23"]) == "10.244.2.0/24"


def test_exhausted_and_bad_mask():
    with pytest.raises(CIDRRangeExhausted):
        next_free_cidr("10.0.0.0/30", 31, ["10.0.0.0/31", "10.0.0.2/31"])
    with pytest.raises(ValueError):
        next_free_cidr("10.0.0.0/24", 16, [])


def test_node_cidrs_reads_both_fields():
    assert node_cidrs({"spec": {"podCIDR": "10.0.1.0/24"}}) == ["10.0.1.0/24"]
    assert node_cidrs({"spec": {"podCIDR": "10.0.1.0/24", "podCIDRs": ["10.0.1.0/24"]}}) == ["10.0.1.0/24"]
    assert node_cidrs({}) == []


@pytest.mark.slow
async def test_distinct_cidrs_for_five_nodes_and_reuse_after_delete(apiserver):
    names = [f"ipam-{i}" for i in range(5)]
    async with controller_env(apiserver, NodeIpamController, cluster_cidr="10.200.0.0/16",
                              node_cidr_mask_size=24) as env:
        c = env.client
        try:
            for name in names:
                await c.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})

            async def assigned():
                nodes = [await c.get("nodes", n) for n in names]
                cidrs = {n["metadata"]["name"]: (n.get("spec") or {}).get("podCIDR") for n in nodes}
                return cidrs if all(cidrs.values()) else None

            cidrs = await env.wait_for(assigned)
            assert len(set(cidrs.values())) == 5
            assert all(v.startswith("10.200.") and v.endswith("/24") for v in cidrs.values())
            for name in names:
                node = await c.get("nodes", name)
                assert node["spec"]["podCIDRs"] == [cidrs[name]]

            # A freed block goes to the next node; nobody else's block changes.
            await c.delete("nodes", names[0])
            await c.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "ipam-new"}})

            async def new_cidr():
                return ((await c.get("nodes", "ipam-new")).get("spec") or {}).get("podCIDR")

            got = await env.wait_for(new_cidr)
            assert got not in {cidrs[n] for n in names[1:]}
            for name in names[1:]:
                assert (await c.get("nodes", name))["spec"]["podCIDR"] == cidrs[name]
        finally:
            for name in [*names, "ipam-new"]:
                with contextlib.suppress(NotFoundError):
                    await c.delete("nodes", name)
