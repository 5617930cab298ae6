"""Namespace deletion, the default ServiceAccount and pod GC, against a real API server."""

from __future__ import annotations

import asyncio
import functools
import time

import pytest

from kubepy.controllers.namespace import NAMESPACED_RESOURCES, NamespaceController
from kubepy.controllers.podgc import PodGCController
from kubepy.controllers.serviceaccount import ServiceAccountController
from tests.controllers.conftest import controller_env, crd_established, get_or_none


def test_every_namespaced_kind_is_emptied():
    assert {"pods", "services", "endpoints", "configmaps", "secrets", "events", "serviceaccounts", "deployments",
            "replicasets", "leases"} <= set(NAMESPACED_RESOURCES)
    assert "namespaces" not in NAMESPACED_RESOURCES and "nodes" not in NAMESPACED_RESOURCES


async def bound_running_pod(client, ns, name, node):
    await client.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                                 "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}},
                        namespace=ns)
    live = await client.get("pods", name, namespace=ns)
    live["status"] = {"phase": "Running"}
    await client.update("pods", live, subresource="status")


@pytest.mark.slow
async def test_namespace_deletion_empties_then_removes_it(apiserver, namespace):
    ns = namespace
    controllers = (functools.partial(NamespaceController, force_pod_delete_after=2), ServiceAccountController)
    async with controller_env(apiserver, *controllers) as env:
        c = env.client
        await env.wait_for(lambda: get_or_none(c, "serviceaccounts", "default", ns), message="default SA")
        await c.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "ns-node"}})
        try:
            await c.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"},
                                          "data": {"a": "b"}}, namespace=ns)
            await c.create("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}, namespace=ns)
            await c.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
                                        "spec": {"ports": [{"port": 80}]}}, namespace=ns)
            await c.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                          "metadata": {"name": "held", "finalizers": ["example.com/hold"]}},
                           namespace=ns)
            await bound_running_pod(c, ns, "on-missing-node", "no-such-node")
            await bound_running_pod(c, ns, "on-silent-node", "ns-node")  # no kubelet will finish it

            start = time.monotonic()
            kubectl = asyncio.create_task(asyncio.to_thread(apiserver.kubectl, "delete", "namespace", ns,
                                                            "--timeout=30s", timeout=40))
            try:
                async def held_alone():
                    cms = (await c.list("configmaps", namespace=ns))["items"]
                    pods = (await c.list("pods", namespace=ns))["items"]
                    return [m["metadata"]["name"] for m in cms] == ["held"] and not pods
                await env.wait_for(held_alone, timeout=15)
                live = await c.get("namespaces", ns)
                assert live["status"]["phase"] == "Terminating"
                assert live["spec"]["finalizers"] == ["kubernetes"]
                assert not kubectl.done()
                # The default SA is not brought back into a terminating namespace.
                assert await get_or_none(c, "serviceaccounts", "default", ns) is None
                await c.patch("configmaps", "held", {"metadata": {"finalizers": None}}, namespace=ns)
            finally:
                cp = await kubectl
            assert cp.returncode == 0, cp.stderr
            assert await get_or_none(c, "namespaces", ns) is None
            assert time.monotonic() - start < 30
        finally:
            await c.delete("nodes", "ns-node")


@pytest.mark.slow
async def test_default_service_account_is_recreated(apiserver, namespace):
    ns = namespace
    async with controller_env(apiserver, ServiceAccountController) as env:
        c = env.client
        await env.wait_for(lambda: get_or_none(c, "serviceaccounts", "default", ns))
        await c.delete("serviceaccounts", "default", namespace=ns)
        await env.wait_for(lambda: get_or_none(c, "serviceaccounts", "default", ns))
        apiserver.kubectl("create", "namespace", f"{ns}-new")
        try:
            await env.wait_for(lambda: get_or_none(c, "serviceaccounts", "default", f"{ns}-new"))
        finally:
            apiserver.kubectl("delete", "namespace", f"{ns}-new", "--wait=false")


@pytest.mark.slow
async def test_podgc_force_deletes_pods_of_missing_nodes(apiserver, namespace):
    ns = namespace
    async with controller_env(apiserver, functools.partial(PodGCController, orphan_grace=1, gc_period=0.5)) as env:
        c = env.client
        await c.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gc-node"}})
        try:
            await bound_running_pod(c, ns, "orphan", "gc-gone")
            await bound_running_pod(c, ns, "homed", "gc-node")
            start = time.monotonic()
            await env.wait_for(lambda: _is_none(get_or_none(c, "pods", "orphan", ns)))
            assert time.monotonic() - start >= 0.9  # quarantined first
            await asyncio.sleep(1.5)
            assert await get_or_none(c, "pods", "homed", ns) is not None
        finally:
            await c.delete("nodes", "gc-node")
        await env.wait_for(lambda: _is_none(get_or_none(c, "pods", "homed", ns)))


async def _is_none(aw):
    return (await aw) is None


@pytest.mark.slow
async def test_namespace_deletion_deletes_custom_resources(apiserver, namespace):
    from kubepy.kinds.apiextensions.customresource import kinds_for
    from tests.api.test_crd import crd, widget

    ns = namespace
    definition = crd(name="nswidgets", kind="NsWidget")
    definition["spec"]["names"].pop("shortNames")
    async with controller_env(apiserver, NamespaceController) as env:
        c = env.client
        await c.create("customresourcedefinitions", definition)
        try:
            await env.wait_for(lambda: crd_established(c, definition["metadata"]["name"]), message="CRD established")
            kind = kinds_for(await c.get("customresourcedefinitions", definition["metadata"]["name"]))[0]
            await c.create(kind, {**widget("w"), "kind": "NsWidget"}, namespace=ns)
            await asyncio.to_thread(apiserver.kubectl, "delete", "namespace", ns, "--timeout=30s", timeout=40)
            assert (await c.list(kind))["items"] == []
        finally:
            await c.delete("customresourcedefinitions", definition["metadata"]["name"])
