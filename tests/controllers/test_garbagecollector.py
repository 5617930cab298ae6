"""Garbage collector: the dependent decision (pure) and background/foreground/orphan deletion live."""

from __future__ import annotations

import asyncio

import pytest

from kubepy.controllers.garbagecollector import (
    Decision,
    GarbageCollector,
    OwnerState,
    blocking_dependents,
    decide_dependent,
    resource_of_ref,
    without_owner_refs,
)
from tests.controllers.conftest import controller_env, crd_established, get_or_none

A, D, F, U = OwnerState.ALIVE, OwnerState.ABSENT, OwnerState.DELETING_FOREGROUND, OwnerState.UNKNOWN


@pytest.mark.parametrize("states, has_dependents, want", [
    ({}, False, Decision("keep")),
    ({"o1": A}, False, Decision("keep")),
    ({"o1": U}, False, Decision("keep")),
    ({"o1": D}, False, Decision("delete", policy="Background")),
    ({"o1": D, "o2": D}, True, Decision("delete", policy="Background")),
    ({"o1": A, "o2": D}, False, Decision("remove-refs", ("o2",))),
    ({"o1": A, "o2": F}, False, Decision("remove-refs", ("o2",))),
    ({"o1": F}, True, Decision("delete", policy="Foreground")),
    ({"o1": F}, False, Decision("delete", policy="Background")),
])
def test_decide_dependent(states, has_dependents, want):
    assert decide_dependent(states, has_dependents=has_dependents) == want


def test_blocking_and_ref_helpers():
    deps = [{"metadata": {"name": "a", "ownerReferences": [{"uid": "o", "blockOwnerDeletion": True}]}},
            {"metadata": {"name": "b", "ownerReferences": [{"uid": "o"}]}},
            {"metadata": {"name": "c", "ownerReferences": [{"uid": "x", "blockOwnerDeletion": True}]}}]
    assert [d["metadata"]["name"] for d in blocking_dependents("o", deps)] == ["a"]
    assert without_owner_refs({"metadata": {"ownerReferences": [{"uid": "o"}, {"uid": "p"}]}}, {"o"}) == [{"uid": "p"}]
    assert resource_of_ref({"apiVersion": "apps/v1", "kind": "ReplicaSet"}).plural == "replicasets"
    assert resource_of_ref({"apiVersion": "v1", "kind": "Pod"}).plural == "pods"
    assert resource_of_ref({"apiVersion": "example.com/v1", "kind": "Widget"}) is None


# -- against a real API server -------------------------------------------------------
def replicaset(name):
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"rs": name}},
                     "template": {"metadata": {"labels": {"rs": name}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def owned_pod(name, owner, *, kind="ReplicaSet", api_version="apps/v1", block=True):
    ref = {"apiVersion": api_version, "kind": kind, "name": owner["metadata"]["name"],
           "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": block}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "ownerReferences": [ref]},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


async def _pods(client, ns):
    return sorted(p["metadata"]["name"] for p in (await client.list("pods", namespace=ns))["items"])


@pytest.mark.slow
async def test_background_deletion_removes_dependents(apiserver, namespace):
    ns = namespace
    async with controller_env(apiserver, GarbageCollector) as env:
        c = env.client
        rs = await c.create("replicasets", replicaset("bg"), namespace=ns)
        other = await c.create("replicasets", replicaset("keep"), namespace=ns)
        for i in range(3):
            await c.create("pods", owned_pod(f"bg-{i}", rs), namespace=ns)
        await c.create("pods", owned_pod("kept", other), namespace=ns)
        # Two owners: when one goes, the pod stays and loses that reference.
        shared = owned_pod("shared", rs)
        shared["metadata"]["ownerReferences"].append({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "keep",
                                                      "uid": other["metadata"]["uid"]})
        await c.create("pods", shared, namespace=ns)
        # An owner that never existed: the dependent is collected too.
        ghost = owned_pod("ghost", {"metadata": {"name": "nope", "uid": "00000000-0000-0000-0000-000000000000"}})
        await c.create("pods", ghost, namespace=ns)

        await c.delete("replicasets", "bg", namespace=ns)

        async def only_kept():
            return await _pods(c, ns) == ["kept", "shared"]
        await env.wait_for(only_kept)
        refs = (await c.get("pods", "shared", namespace=ns))["metadata"]["ownerReferences"]
        assert [r["name"] for r in refs] == ["keep"]

        # A Deployment's ReplicaSets, and through them their pods.
        dep = await c.create("deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "d"}},
                     "template": {"metadata": {"labels": {"app": "d"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}, namespace=ns)
        drs = replicaset("d-rs")
        drs["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d",
                                               "uid": dep["metadata"]["uid"], "controller": True,
                                               "blockOwnerDeletion": True}]
        drs = await c.create("replicasets", drs, namespace=ns)
        await c.create("pods", owned_pod("d-pod", drs), namespace=ns)
        await c.delete("deployments", "d", namespace=ns)

        async def deployment_gone():
            return await get_or_none(c, "replicasets", "d-rs", ns) is None and "d-pod" not in await _pods(c, ns)
        await env.wait_for(deployment_gone)
        assert await get_or_none(c, "replicasets", "keep", ns) is not None


@pytest.mark.slow
async def test_foreground_deletion_waits_for_dependents(apiserver, namespace):
    ns = namespace
    async with controller_env(apiserver, GarbageCollector) as env:
        c = env.client
        dep = await c.create("deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fg"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "fg"}},
                     "template": {"metadata": {"labels": {"app": "fg"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}, namespace=ns)
        rs = replicaset("fg-rs")
        rs["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "fg",
                                              "uid": dep["metadata"]["uid"], "controller": True,
                                              "blockOwnerDeletion": True}]
        rs = await c.create("replicasets", rs, namespace=ns)
        # A pod with a finalizer of its own holds the whole chain.
        held = owned_pod("fg-held", rs)
        held["metadata"]["finalizers"] = ["example.com/hold"]
        await c.create("pods", held, namespace=ns)
        await c.create("pods", owned_pod("fg-pod", rs), namespace=ns)

        await c.delete("deployments", "fg", namespace=ns, propagation_policy="Foreground")

        async def rs_deleting():
            got = await get_or_none(c, "replicasets", "fg-rs", ns)
            return got and got["metadata"].get("deletionTimestamp") and "fg-pod" not in await _pods(c, ns)
        await env.wait_for(rs_deleting)
        live = await c.get("deployments", "fg", namespace=ns)
        assert live["metadata"]["finalizers"] == ["foregroundDeletion"]
        assert (await c.get("pods", "fg-held", namespace=ns))["metadata"].get("deletionTimestamp")

        await c.patch("pods", "fg-held", {"metadata": {"finalizers": None}}, namespace=ns)

        async def all_gone():
            return (await get_or_none(c, "deployments", "fg", ns) is None
                    and await get_or_none(c, "replicasets", "fg-rs", ns) is None)
        await env.wait_for(all_gone)


@pytest.mark.slow
async def test_orphan_deletion_keeps_dependents(apiserver, namespace):
    ns = namespace
    async with controller_env(apiserver, GarbageCollector) as env:
        c = env.client
        rs = await c.create("replicasets", replicaset("orph"), namespace=ns)
        for i in range(2):
            await c.create("pods", owned_pod(f"orph-{i}", rs), namespace=ns)
        await c.delete("replicasets", "orph", namespace=ns, propagation_policy="Orphan")

        async def rs_gone():
            return await get_or_none(c, "replicasets", "orph", ns) is None
        await env.wait_for(rs_gone)
        for i in range(2):
            pod = await c.get("pods", f"orph-{i}", namespace=ns)
            assert not pod["metadata"].get("ownerReferences")
            assert not pod["metadata"].get("deletionTimestamp")


GC_GROUP = "kptest-gc.example.com"
GC_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"gcowners.{GC_GROUP}"},
    "spec": {"group": GC_GROUP, "scope": "Namespaced",
             "names": {"plural": "gcowners", "singular": "gcowner", "kind": "GcOwner", "listKind": "GcOwnerList"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]}}


def configmap(name, owner=None, *, kind="GcOwner", api_version=f"{GC_GROUP}/v1"):
    meta = {"name": name}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": api_version, "kind": kind, "name": owner["metadata"]["name"],
                                    "uid": owner["metadata"]["uid"], "blockOwnerDeletion": True}]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}


@pytest.mark.slow
async def test_custom_resources_own_and_are_owned(apiserver, namespace):
    """As upstream's collector, which finds every resource by discovery: a CRD's kind joins the graph
    once Established, in both roles, for background and foreground deletion; deleting the CRD
    collects what its objects owned."""
    from kubepy.kinds import Kind

    ns = namespace
    gc_kind = Kind(group=GC_GROUP, version="v1", kind="GcOwner", plural="gcowners", namespaced=True)
    async with controller_env(apiserver, GarbageCollector) as env:
        c = env.client
        await c.create("customresourcedefinitions", GC_CRD)
        try:
            await env.wait_for(lambda: crd_established(c, GC_CRD["metadata"]["name"]))

            def owner(name):
                return {"apiVersion": f"{GC_GROUP}/v1", "kind": "GcOwner", "metadata": {"name": name}}

            o1 = await c.create(gc_kind, owner("o1"), namespace=ns)
            o2 = await c.create(gc_kind, owner("o2"), namespace=ns)
            o3 = await c.create(gc_kind, owner("o3"), namespace=ns)
            await c.create("configmaps", configmap("of-o1", o1), namespace=ns)
            await c.create("configmaps", configmap("of-o2", o2), namespace=ns)
            await c.create("configmaps", configmap("of-o3", o3), namespace=ns)
            cm_owner = await c.create("configmaps", configmap("cm-owner"), namespace=ns)
            child = owner("child")
            child["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cm-owner",
                                                     "uid": cm_owner["metadata"]["uid"]}]
            await c.create(gc_kind, child, namespace=ns)

            # A custom resource as the owner (background), and as the dependent.
            await c.delete(gc_kind, "o1", namespace=ns)
            await c.delete("configmaps", "cm-owner", namespace=ns)

            async def background_done():
                return (await get_or_none(c, "configmaps", "of-o1", ns) is None
                        and await get_or_none(c, gc_kind, "child", ns) is None)
            await env.wait_for(background_done)

            # Foreground: the owner's finalizer is taken off once its dependent is gone.
            await c.delete(gc_kind, "o2", namespace=ns, propagation_policy="Foreground")

            async def foreground_done():
                return (await get_or_none(c, "configmaps", "of-o2", ns) is None
                        and await get_or_none(c, gc_kind, "o2", ns) is None)
            await env.wait_for(foreground_done)
            assert await get_or_none(c, "configmaps", "of-o3", ns) is not None
        finally:
            await c.delete("customresourcedefinitions", GC_CRD["metadata"]["name"])

        # The CRD goes with its objects: what they owned is collected.
        async def crd_objects_collected():
            return await get_or_none(c, "configmaps", "of-o3", ns) is None
        await env.wait_for(crd_objects_collected)


@pytest.mark.slow
async def test_a_custom_resource_owner_deleted_takes_its_dependents(apiserver, namespace):
    # An operator's objects are owned by its custom resource: when the resource goes, so do they
    # (the collector watches a kind once its CRD is Established, as upstream's monitors do).
    from kubepy.kinds.apiextensions.customresource import kinds_for
    from tests.api.test_crd import crd, widget

    ns = namespace
    definition = crd(name="gcwidgets", kind="GcWidget")
    definition["spec"]["names"].pop("shortNames")
    async with controller_env(apiserver, GarbageCollector) as env:
        c = env.client
        await c.create("customresourcedefinitions", definition)
        try:
            await env.wait_for(lambda: crd_established(c, definition["metadata"]["name"]), message="CRD established")
            kind = kinds_for(await c.get("customresourcedefinitions", definition["metadata"]["name"]))[0]
            owner = await c.create(kind, {**widget("w"), "kind": "GcWidget"}, namespace=ns)
            ref = {"apiVersion": owner["apiVersion"], "kind": "GcWidget", "name": "w",
                   "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
            await c.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                          "metadata": {"name": "owned", "ownerReferences": [ref]}}, namespace=ns)
            await c.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "free"}},
                           namespace=ns)
            await c.delete(kind, "w", namespace=ns)
            await env.wait_for(lambda: _is_none(get_or_none(c, "configmaps", "owned", ns)),
                               message="the custom resource's ConfigMap collected")
            assert await get_or_none(c, "configmaps", "free", ns) is not None
            # A reference to a kind no CRD serves is never acted on.
            stray = {**ref, "apiVersion": "nowhere.example.com/v1", "kind": "Ghost"}
            await c.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                          "metadata": {"name": "stray", "ownerReferences": [stray]}}, namespace=ns)
            await asyncio.sleep(1.0)
            assert await get_or_none(c, "configmaps", "stray", ns) is not None
        finally:
            await c.delete("customresourcedefinitions", definition["metadata"]["name"])


async def _is_none(aw):
    return (await aw) is None
