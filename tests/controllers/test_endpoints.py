"""Endpoints controller: subset building (pure) and pods' readiness followed live."""

from __future__ import annotations

import pytest

from kubepy.controllers.endpoints import EndpointsController, build_subsets, normalize_subsets
from tests.controllers.conftest import controller_env, get_or_none


def svc(ports, *, name="web", selector=None, headless=False, publish=False):
    spec = {"selector": selector or {"app": "web"}, "ports": ports}
    if headless:
        spec["clusterIP"] = "None"
    if publish:
        spec["publishNotReadyAddresses"] = True
    return {"metadata": {"name": name, "namespace": "ns"}, "spec": spec}


def pod(name, ip, *, ready=True, container_ports=(), node="n1", deleting=False, phase="Running"):
    meta = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "labels": {"app": "web"}}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    status = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [
                {"name": n, "containerPort": p} for n, p in container_ports]}]},
            "status": status}


def addr(name, ip, node="n1"):
    return {"ip": ip, "nodeName": node, "targetRef": {"kind": "Pod", "namespace": "ns", "name": name,
                                                       "uid": f"uid-{name}"}}


def test_ready_and_not_ready_share_a_subset():
    s = svc([{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}])
    subsets = build_subsets(s, [pod("a", "10.0.0.2"), pod("b", "10.0.0.1", ready=False), pod("c", None)])
    assert subsets == [{"addresses": [addr("a", "10.0.0.2")], "notReadyAddresses": [addr("b", "10.0.0.1")],
                        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]


def test_named_target_port_groups_pods_by_port_set():
    s = svc([{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}])
    pods = [pod("a", "10.0.0.1", container_ports=[("web", 8080)]),
            pod("b", "10.0.0.2", container_ports=[("web", 9090)]),
            pod("c", "10.0.0.3", container_ports=[("web", 8080)]),
            pod("d", "10.0.0.4", container_ports=[("other", 1)])]  # serves no port of the service
    subsets = build_subsets(s, pods)
    by_port = {sub["ports"][0]["port"]: [a["ip"] for a in sub["addresses"]] for sub in subsets}
    assert by_port == {8080: ["10.0.0.1", "10.0.0.3"], 9090: ["10.0.0.2"]}


def test_terminating_and_finished_pods_are_left_out_unless_published():
    s = svc([{"port": 80, "protocol": "TCP"}])
    pods = [pod("a", "10.0.0.1", deleting=True), pod("b", "10.0.0.2", phase="Succeeded"),
            pod("c", "10.0.0.3", ready=False)]
    assert build_subsets(s, pods) == [{"notReadyAddresses": [addr("c", "10.0.0.3")],
                                       "ports": [{"port": 80, "protocol": "TCP"}]}]
    published = build_subsets(svc([{"port": 80, "protocol": "TCP"}], publish=True), pods)
    assert [a["ip"] for a in published[0]["addresses"]] == ["10.0.0.1", "10.0.0.3"]
    assert "notReadyAddresses" not in published[0]


def test_headless_without_ports_lists_addresses():
    s = svc([], headless=True)
    assert build_subsets(s, [pod("a", "10.0.0.1")]) == [{"addresses": [addr("a", "10.0.0.1")]}]
    assert build_subsets(svc([]), [pod("a", "10.0.0.1")]) == []


def test_normalize_ignores_order_and_resource_version():
    a = [{"addresses": [{"ip": "2"}, {"ip": "1", "targetRef": {"kind": "Pod", "name": "x", "resourceVersion": "5"}}],
          "ports": [{"port": 2, "protocol": "TCP"}, {"port": 1}]}]
    b = [{"addresses": [{"ip": "1", "targetRef": {"kind": "Pod", "name": "x"}}, {"ip": "2"}],
          "ports": [{"port": 1, "protocol": "TCP"}, {"port": 2, "protocol": "TCP"}]}]
    assert normalize_subsets(a) == normalize_subsets(b)


# -- against a real API server -------------------------------------------------------
async def set_pod_status(client, ns, name, *, ip, ready):
    live = await client.get("pods", name, namespace=ns)
    live["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                      "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    await client.update("pods", live, subresource="status")


def make_pod(name, *, labels):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "ports": [{"name": "http", "containerPort": 8080}]}]}}


@pytest.mark.slow
async def test_endpoints_follow_pod_readiness(apiserver, namespace):
    ns = namespace
    async with controller_env(apiserver, EndpointsController) as env:
        c = env.client
        await c.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                    "spec": {"selector": {"app": "web"},
                                             "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
                       namespace=ns)
        await c.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "manual"},
                                    "spec": {"ports": [{"port": 80}]}}, namespace=ns)
        for name in ("a", "b"):
            await c.create("pods", make_pod(name, labels={"app": "web"}), namespace=ns)
        await c.create("pods", make_pod("other", labels={"app": "db"}), namespace=ns)
        await set_pod_status(c, ns, "a", ip="10.244.1.2", ready=True)
        await set_pod_status(c, ns, "b", ip="10.244.1.3", ready=False)
        await set_pod_status(c, ns, "other", ip="10.244.1.9", ready=True)

        def ips(ep, field):
            return sorted(a["ip"] for s in (ep or {}).get("subsets") or [] for a in s.get(field) or [])

        async def endpoints():
            return await get_or_none(c, "endpoints", "web", ns)

        async def state(ready, not_ready):
            ep = await endpoints()
            return ep if ips(ep, "addresses") == ready and ips(ep, "notReadyAddresses") == not_ready else None

        ep = await env.wait_for(lambda: state(["10.244.1.2"], ["10.244.1.3"]))
        assert ep["subsets"][0]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
        assert ep["subsets"][0]["addresses"][0]["targetRef"]["name"] == "a"

        await set_pod_status(c, ns, "b", ip="10.244.1.3", ready=True)
        await env.wait_for(lambda: state(["10.244.1.2", "10.244.1.3"], []))
        rv = (await endpoints())["metadata"]["resourceVersion"]

        # A pod change that does not change the endpoints writes nothing.
        live = await c.get("pods", "a", namespace=ns)
        live["metadata"].setdefault("annotations", {})["touched"] = "yes"
        await c.update("pods", live)
        await c.delete("pods", "b", namespace=ns)
        await env.wait_for(lambda: state(["10.244.1.2"], []))
        assert (await endpoints())["metadata"]["resourceVersion"] != rv

        # Labels moving a pod out of the selector remove it.
        await c.patch("pods", "a", {"metadata": {"labels": {"app": "gone"}}}, namespace=ns)
        await env.wait_for(lambda: state([], []))

        assert await get_or_none(c, "endpoints", "manual", ns) is None
        await c.delete("services", "web", namespace=ns)
        await env.wait_for(lambda: _is_none(endpoints()))


async def _is_none(aw):
    return (await aw) is None
