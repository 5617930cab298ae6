"""EndpointSlice and mirroring controllers: slice planning (pure) and slices kept live against a real API server."""

from __future__ import annotations

import asyncio

import pytest

from kubepy.controllers.endpointslice import EndpointSliceController, desired_endpoints, pod_endpoint
from kubepy.controllers.endpointslicemirroring import EndpointSliceMirroringController, mirrored_endpoints
from kubepy.controllers.endpointslices import endpoint_key, plan_slices, port_list, port_set
from tests.controllers.conftest import controller_env
from tests.controllers.test_endpoints import make_pod, pod, set_pod_status, svc

OWNER = {"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "u1", "controller": True,
         "blockOwnerDeletion": True}
LABELS = {"kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": "x"}
PORTS = port_set([{"name": "http", "port": 8080, "protocol": "TCP"}])


def ep(i):
    return {"addresses": [f"10.244.{i // 250}.{i % 250 + 1}"], "conditions": {"ready": True},
            "targetRef": {"kind": "Pod", "name": f"p{i}", "uid": f"u{i}"}}


def existing(name, eps, ports=PORTS):
    return {"metadata": {"name": name, "labels": dict(LABELS), "ownerReferences": [OWNER]},
            "ports": port_list(ports), "endpoints": eps}


def test_250_endpoints_make_three_slices_of_at_most_100():
    plan = plan_slices([], {PORTS: [ep(i) for i in range(250)]}, labels=LABELS, owner=OWNER)
    assert sorted(len(eps) for _, eps in plan.create) == [50, 100, 100]
    assert not plan.update and not plan.delete
    assert len({endpoint_key(e) for _, eps in plan.create for e in eps}) == 250


def test_one_pod_change_rewrites_only_its_slice():
    eps = [ep(i) for i in range(250)]
    slices = [existing("a", eps[:100]), existing("b", eps[100:200]), existing("c", eps[200:])]
    changed = [dict(e) for e in eps]
    changed[150] = {**changed[150], "conditions": {"ready": False}}
    plan = plan_slices(slices, {PORTS: changed}, labels=LABELS, owner=OWNER)
    assert [s["metadata"]["name"] for s, _, _ in plan.update] == ["b"] and not plan.create and not plan.delete
    # Nothing changed: nothing to write.
    assert not plan_slices(slices, {PORTS: eps}, labels=LABELS, owner=OWNER)


def test_new_endpoints_fill_slices_with_room_before_new_slices():
    slices = [existing("a", [ep(i) for i in range(100)]), existing("b", [ep(i) for i in range(100, 130)])]
    plan = plan_slices(slices, {PORTS: [ep(i) for i in range(200)]}, labels=LABELS, owner=OWNER)
    assert [(s["metadata"]["name"], len(eps)) for s, _, eps in plan.update] == [("b", 100)]
    assert plan.create == [] and not plan.delete


def test_empty_slices_and_wrong_ports_are_deleted_and_placeholder_kept():
    other = port_set([{"name": "http", "port": 9090, "protocol": "TCP"}])
    slices = [existing("a", [ep(1)]), existing("b", [ep(2)], ports=other)]
    plan = plan_slices(slices, {PORTS: [ep(1)]}, labels=LABELS, owner=OWNER)
    assert [s["metadata"]["name"] for s in plan.delete] == ["b"] and not plan.create and not plan.update
    # No endpoints at all: one empty placeholder (the controller's), none when mirroring.
    plan = plan_slices(slices, {}, labels=LABELS, owner=OWNER)
    assert plan.create == [((), [])] and len(plan.delete) == 2
    assert not plan_slices([existing("p", [], ports=())], {}, labels=LABELS, owner=OWNER)
    plan = plan_slices(slices, {}, labels=LABELS, owner=OWNER, placeholder=False)
    assert not plan.create and len(plan.delete) == 2


def test_labels_or_owner_changes_rewrite_slices():
    slices = [existing("a", [ep(1)])]
    plan = plan_slices(slices, {PORTS: [ep(1)]}, labels={**LABELS, "team": "x"}, owner=OWNER)
    assert [s["metadata"]["name"] for s, _, _ in plan.update] == ["a"]


def test_pod_endpoint_conditions_follow_upstream():
    s = svc([{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "appProtocol": "http"}])
    ready = pod_endpoint(s, pod("a", "10.0.0.1"))
    assert ready == {"addresses": ["10.0.0.1"], "conditions": {"ready": True, "serving": True, "terminating": False},
                     "targetRef": {"kind": "Pod", "namespace": "ns", "name": "a", "uid": "uid-a"}, "nodeName": "n1"}
    terminating = pod_endpoint(s, pod("b", "10.0.0.2", deleting=True))
    assert terminating["conditions"] == {"ready": False, "serving": True, "terminating": True}
    not_ready = pod_endpoint(s, pod("c", "10.0.0.3", ready=False))
    assert not_ready["conditions"] == {"ready": False, "serving": False, "terminating": False}
    published = pod_endpoint(svc([{"port": 80}], publish=True), pod("c", "10.0.0.3", ready=False))
    assert published["conditions"]["ready"] is True
    desired = desired_endpoints(s, [pod("a", "10.0.0.1"), pod("b", "10.0.0.2", deleting=True),
                                    pod("x", "10.0.0.9", phase="Succeeded"), pod("y", None)])
    assert list(desired) == [(("http", 8080, "TCP", "http"),)]
    assert [e["addresses"][0] for e in desired[(("http", 8080, "TCP", "http"),)]] == ["10.0.0.1", "10.0.0.2"]


def test_mirrored_endpoints_keep_readiness_and_ports():
    endpoints = {"metadata": {"name": "ext", "namespace": "ns"}, "subsets": [
        {"addresses": [{"ip": "192.0.2.1"}], "notReadyAddresses": [{"ip": "192.0.2.2", "hostname": "b"}],
         "ports": [{"name": "db", "port": 5432, "protocol": "TCP"}]}]}
    assert mirrored_endpoints(endpoints) == {(("db", 5432, "TCP", None),): [
        {"addresses": ["192.0.2.1"], "conditions": {"ready": True}},
        {"addresses": ["192.0.2.2"], "conditions": {"ready": False}, "hostname": "b"}]}


# -- against a real API server -------------------------------------------------------
def _slices(items, managed_by):
    return [s for s in items if s["metadata"]["labels"].get("endpointslice.kubernetes.io/managed-by") == managed_by]


@pytest.mark.slow
async def test_slices_follow_pods_and_mirror_selectorless_services(apiserver, namespace):
    ns = namespace
    async with controller_env(apiserver, EndpointSliceController, EndpointSliceMirroringController) as env:
        c = env.client
        web = await c.create("services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"team": "a"}},
            "spec": {"selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "appProtocol": "http"}]}},
            namespace=ns)
        # No pods yet: one placeholder slice.
        await env.wait_for(lambda: _get_slices(c, ns, "web", "endpointslice-controller.k8s.io", count=1))
        for name in ("a", "b"):
            await c.create("pods", make_pod(name, labels={"app": "web"}), namespace=ns)
        await set_pod_status(c, ns, "a", ip="10.244.1.2", ready=True)
        await set_pod_status(c, ns, "b", ip="10.244.1.3", ready=False)

        async def endpoints_are(wanted):
            got = await _get_slices(c, ns, "web", "endpointslice-controller.k8s.io", count=1)
            if got and sorted((e["addresses"][0], e["conditions"]["ready"]) for e in got[0]["endpoints"]) == wanted:
                return got[0]
            return None

        s = await env.wait_for(lambda: endpoints_are([("10.244.1.2", True), ("10.244.1.3", False)]))
        assert s["addressType"] == "IPv4"
        assert s["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]
        assert s["metadata"]["labels"] == {"team": "a", "kubernetes.io/service-name": "web",
                                           "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
        assert s["metadata"]["ownerReferences"][0]["uid"] == web["metadata"]["uid"]
        assert s["metadata"]["name"].startswith("web-")

        # A slice edited by someone else is put back.
        s["endpoints"] = []
        await c.update("endpointslices", s)
        await env.wait_for(lambda: endpoints_are([("10.244.1.2", True), ("10.244.1.3", False)]))

        # Selector-less Service + hand-written Endpoints: mirrored.
        await c.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
                                    "spec": {"ports": [{"name": "db", "port": 5432}]}}, namespace=ns)
        await c.create("endpoints", {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ext"},
                                     "subsets": [{"addresses": [{"ip": f"192.0.2.{i + 1}"} for i in range(250)],
                                                  "ports": [{"name": "db", "port": 5432}]}]}, namespace=ns)
        mirrored = await env.wait_for(lambda: _get_slices(c, ns, "ext", "endpointslicemirroring-controller.k8s.io",
                                                          count=3))
        assert sorted(len(m["endpoints"]) for m in mirrored) == [50, 100, 100]
        assert all(m["metadata"]["ownerReferences"][0]["kind"] == "Endpoints" for m in mirrored)
        await c.delete("services", "ext", namespace=ns)
        await env.wait_for(lambda: _get_slices(c, ns, "ext", "endpointslicemirroring-controller.k8s.io", count=0))

        # ExternalName (even with a selector): no endpoints.
        await c.patch("services", "web", {"spec": {"type": "ExternalName", "externalName": "example.org",
                                                   "clusterIP": None, "clusterIPs": None, "ports": None}},
                      namespace=ns)
        await env.wait_for(lambda: _get_slices(c, ns, "web", "endpointslice-controller.k8s.io", count=0))
        await c.delete("services", "web", namespace=ns)


async def _get_slices(c, ns, service, managed_by, *, count):
    items = (await c.list("endpointslices", namespace=ns,
                          label_selector=f"kubernetes.io/service-name={service}"))["items"]
    mine = _slices(items, managed_by)
    return (mine or True) if len(mine) == count else None


@pytest.mark.slow
async def test_a_service_with_250_pods_has_three_slices(apiserver, namespace):
    ns = namespace
    async with controller_env(apiserver, EndpointSliceController) as env:
        c = env.client
        await c.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "big"},
                                    "spec": {"selector": {"app": "big"}, "ports": [{"port": 80}]}}, namespace=ns)

        async def one(i):
            p = make_pod(f"p{i}", labels={"app": "big"})
            await c.create("pods", p, namespace=ns)
            await set_pod_status(c, ns, f"p{i}", ip=f"10.244.{i // 200 + 1}.{i % 200 + 2}", ready=True)

        for start in range(0, 250, 25):
            await asyncio.gather(*(one(i) for i in range(start, start + 25)))

        async def full():
            slices = await _get_slices(c, ns, "big", "endpointslice-controller.k8s.io", count=3)
            if slices and sum(len(s["endpoints"]) for s in slices) == 250:
                return slices
            return None

        slices = await env.wait_for(full, timeout=30)
        assert all(len(s["endpoints"]) <= 100 for s in slices)
        assert len({e["addresses"][0] for s in slices for e in s["endpoints"]}) == 250
