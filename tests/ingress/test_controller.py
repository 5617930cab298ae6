"""The controller against the in-memory FakeAPI and a recording proxy: it creates its default
IngressClass, loads a configuration for its Ingresses only, writes their status, reports a bad
reference once as a Warning Event of that Ingress (the others served all along), reports a
configuration nginx refused and keeps the last good one, and follows changes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from kubepy.ingress.controller import Controller
from kubepy.ingress.nginx import NginxError
from kubepy.testing.fakeapi import FakeAPI
from tests.ingress.cases import OTHER_CLASS, endpoint_slice, ingress, path, rule, service


class FakeProxy:
    def __init__(self) -> None:
        self.applied: list[str] = []
        self.refuse: Callable[[str], bool] = lambda text: False
        self.running = False
        self.starts_failing = False
        self.attempts = 0

    def prepare(self) -> None:
        return None

    def write_certificates(self, certs: dict[str, str]) -> dict[str, str]:
        return {k: k.replace("/", "_") + ".pem" for k in certs}

    def prune_certificates(self, keep: set[str]) -> None:
        return None

    def pid(self) -> int | None:
        return 1 if self.running else None

    async def apply(self, text: str) -> str:
        self.attempts += 1
        if not self.running and self.starts_failing:
            raise NginxError("nginx did not start (exit 1)", "bind() to 0.0.0.0:80 failed (98: Address already in use)")
        if self.refuse(text):
            raise NginxError("nginx -t refused the configuration", "nginx: [emerg] made up")
        self.applied.append(text)
        was, self.running = self.running, True
        return "reloaded" if was else "started"

    async def stop(self) -> None:
        self.running = False


async def until(cond: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
    return got


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[FakeAPI, FakeProxy, Controller]]:
    api = FakeAPI()
    api.seed("ingressclasses", OTHER_CLASS)
    api.seed("services", service("web", ("http", 80)))
    api.seed("endpointslices", endpoint_slice("web", "http", 8080, "10.244.0.2"))
    proxy = FakeProxy()
    controller = Controller(api, state_dir=tmp_path, publish=["172.30.0.11", "172.30.0.12"], node="kptest-node1",
                            nginx=proxy, min_sync_period=0.01, ingress_class="kubepy")
    task = asyncio.create_task(controller.run())
    try:
        yield api, proxy, controller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def events(api: FakeAPI, reason: str) -> list[dict[str, Any]]:
    return [e for e in api.objects("events") if e.get("reason") == reason]


async def test_serves_its_ingresses_writes_status_and_reports_bad_references(running) -> None:
    api, proxy, _ = running
    [cls] = await until(lambda: [c for c in api.objects("ingressclasses") if c["metadata"]["name"] == "kubepy"])
    assert cls["spec"]["controller"] == "kubepy.io/ingress"
    assert cls["metadata"]["annotations"] == {"ingressclass.kubernetes.io/is-default-class": "true"}
    await api.create("ingresses", ingress("good", rule("good.example.com", path("/", "web"))))
    await api.create("ingresses", ingress("theirs", rule("theirs.example.com", path("/", "web")), cls="other"))
    await api.create("ingresses", ingress("bad", rule("bad.example.com", path("/", "gone")), created=5))
    await until(lambda: proxy.applied and "bad.example.com" in proxy.applied[-1])
    text = proxy.applied[-1]
    assert "server_name good.example.com;" in text and "proxy_pass http://default_web_80;" in text
    assert "theirs.example.com" not in text

    def statuses() -> dict[str, Any]:
        return {i["metadata"]["name"]: i["status"]["loadBalancer"] for i in api.objects("ingresses")}

    await until(lambda: statuses()["good"].get("ingress") and statuses()["bad"].get("ingress"))
    assert statuses() == {"good": {"ingress": [{"ip": "172.30.0.11"}, {"ip": "172.30.0.12"}]},
                          "bad": {"ingress": [{"ip": "172.30.0.11"}, {"ip": "172.30.0.12"}]}, "theirs": {}}
    [warning] = await until(lambda: events(api, "ServiceNotFound"))
    assert (warning["type"], warning["involvedObject"]["name"], warning["message"]) == (
        "Warning", "bad", 'Service "default/gone" not found')
    assert {e["involvedObject"]["name"] for e in await until(lambda: events(api, "Sync"))} >= {"good"}
    # Another change: the problem is not reported again while it lasts.
    await api.create("services", service("other", ("http", 80)))
    await asyncio.sleep(0.2)
    assert [e.get("count", 1) for e in events(api, "ServiceNotFound")] == [1]
    # The Service appears: bad's host is proxied, with no new warning.
    await api.create("services", service("gone", ("http", 80)))
    await api.create("endpointslices", endpoint_slice("gone", "http", 9000, "10.244.1.5"))
    await until(lambda: "server 10.244.1.5:9000 max_fails=0;" in proxy.applied[-1])
    assert len(events(api, "ServiceNotFound")) == 1
    # good moves to another controller's class: our addresses are taken off it.
    good = next(i for i in api.objects("ingresses") if i["metadata"]["name"] == "good")
    good["spec"]["ingressClassName"] = "other"
    await api.update("ingresses", good)
    await until(lambda: statuses()["good"].get("ingress") == [])
    assert "good.example.com" not in proxy.applied[-1]


async def test_a_dead_proxy_is_started_again(running) -> None:
    api, proxy, _ = running
    await api.create("ingresses", ingress("good", rule("good.example.com", path("/", "web"))))
    await until(lambda: proxy.applied and "good.example.com" in proxy.applied[-1])
    applied = len(proxy.applied)
    proxy.running = False  # nginx died
    await until(lambda: proxy.running, timeout=3)
    assert len(proxy.applied) == applied + 1 and proxy.applied[-1] == proxy.applied[-2]


async def test_a_sync_that_crashes_does_not_end_the_loop(running, monkeypatch) -> None:
    api, proxy, controller = running
    await until(lambda: proxy.applied)
    real = controller.decide
    monkeypatch.setattr(controller, "decide", lambda: (_ for _ in ()).throw(RuntimeError("kptest: a bug")))
    await api.create("ingresses", ingress("first", rule("first.example.com", path("/", "web"))))
    await until(lambda: controller.failures >= 1)
    monkeypatch.setattr(controller, "decide", real)
    await api.create("ingresses", ingress("second", rule("second.example.com", path("/", "web"))))
    await until(lambda: "second.example.com" in proxy.applied[-1])


async def test_a_refused_configuration_is_reported_and_the_next_change_applies(running) -> None:
    api, proxy, _ = running
    await api.create("ingresses", ingress("good", rule("good.example.com", path("/", "web"))))
    await until(lambda: proxy.applied and "good.example.com" in proxy.applied[-1])
    proxy.refuse = lambda text: "poison.example.com" in text
    await api.create("ingresses", ingress("poison", rule("poison.example.com", path("/", "web"))))
    reloads = await until(lambda: len(events(api, "RELOAD")) == 2 and events(api, "RELOAD"))
    assert {e["involvedObject"]["name"] for e in reloads} == {"good", "poison"}  # every Ingress it serves
    assert all(e["type"] == "Warning" and "made up" in e["message"] for e in reloads)
    applied = len(proxy.applied)
    assert "poison.example.com" not in proxy.applied[-1]
    await asyncio.sleep(0.2)
    assert len(proxy.applied) == applied, "a refused configuration is not retried until something changes"
    await api.delete("ingresses", "poison", namespace="default")
    await api.create("ingresses", ingress("next", rule("next.example.com", path("/", "web"))))
    await until(lambda: "next.example.com" in proxy.applied[-1])


async def test_an_nginx_that_will_not_start_is_retried_with_backoff(running) -> None:
    api, proxy, _ = running
    await api.create("ingresses", ingress("good", rule("good.example.com", path("/", "web"))))
    await until(lambda: proxy.applied)
    proxy.starts_failing, proxy.running = True, False
    await asyncio.sleep(3.5)
    assert 2 <= proxy.attempts - 1 <= 3, "tries after 0, 1 and 2 s, not every second"
    proxy.starts_failing = False
    await until(lambda: proxy.running, timeout=6)


async def test_the_published_services_address_is_the_status_once_it_has_one(tmp_path: Path) -> None:
    api = FakeAPI()
    api.seed("services", service("web", ("http", 80)))
    api.seed("endpointslices", endpoint_slice("web", "http", 8080, "10.244.0.2"))
    lb = api.seed("services", service("kubepy-ingress", ("http", 80), namespace="kube-system",
                                      type_="LoadBalancer"))
    controller = Controller(api, state_dir=tmp_path, publish=["172.30.0.11"], nginx=FakeProxy(),
                            min_sync_period=0.01, ingress_class="kubepy", publish_service="kube-system/kubepy-ingress")
    task = asyncio.create_task(controller.run())
    try:
        await api.create("ingresses", ingress("good", rule("good.example.com", path("/", "web"))))

        def status() -> Any:
            return api.objects("ingresses")[0]["status"]["loadBalancer"].get("ingress")

        assert await until(status) == [{"ip": "172.30.0.11"}]  # no address yet: the fallback
        lb["status"] = {"loadBalancer": {"ingress": [{"ip": "172.30.0.200", "ipMode": "VIP"}]}}
        await api.update("services", lb, subresource="status")
        await until(lambda: status() == [{"ip": "172.30.0.200"}])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_gateway_api_objects_are_served_on_the_same_nginx_with_their_statuses(running) -> None:
    """A GatewayClass of ours, a Gateway and an HTTPRoute created after the controller started (as when the
    CRDs arrive late): the route lands in the same nginx.conf and each object gets its status; a status
    that already says the same is not written again."""
    from kubepy.ingress.controller import GATEWAY_CLASSES, GATEWAYS, HTTP_ROUTES
    api, proxy, controller = running
    await until(lambda: proxy.applied)
    await api.create(GATEWAY_CLASSES, {"metadata": {"name": "kubepy"}, "spec": {"controllerName": "kubepy.io/gateway"}})
    await api.create(GATEWAYS, {"metadata": {"name": "gw", "namespace": "default"}, "spec": {
        "gatewayClassName": "kubepy", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}})
    theirs = {"parentRef": {"name": "elsewhere"}, "controllerName": "example.com/gateway", "conditions": []}
    await api.create(HTTP_ROUTES, {"metadata": {"name": "r", "namespace": "default"}, "spec": {
        "parentRefs": [{"name": "gw"}], "hostnames": ["gw.example.com"],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                   "backendRefs": [{"name": "web", "port": 80}]}]}, "status": {"parents": [theirs]}})
    await until(lambda: "gw.example.com" in proxy.applied[-1])
    assert '# gw.example.com; certificate: default' in proxy.applied[-1]
    assert "1 HTTPRoutes (default/r)" in proxy.applied[-1]

    def conds(obj: dict[str, Any]) -> dict[str, str]:
        return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}

    await until(lambda: conds(api.objects(GATEWAYS)[0]).get("Programmed") == "True")
    gw = api.objects(GATEWAYS)[0]["status"]
    assert gw["addresses"] == [{"type": "IPAddress", "value": "172.30.0.11"},
                               {"type": "IPAddress", "value": "172.30.0.12"}]
    assert gw["listeners"][0]["attachedRoutes"] == 1
    assert all(c["lastTransitionTime"] for c in gw["conditions"] + gw["listeners"][0]["conditions"])
    assert conds(api.objects(GATEWAY_CLASSES)[0]) == {"Accepted": "True"}
    parents = await until(lambda: len(api.objects(HTTP_ROUTES)[0]["status"]["parents"]) == 2
                          and api.objects(HTTP_ROUTES)[0]["status"]["parents"])
    assert parents[0] == theirs                                   # another controller's entry stays
    assert (parents[1]["controllerName"], conds({"status": parents[1]})) == ("kubepy.io/gateway",
                                                                                  {"Accepted": "True", "ResolvedRefs": "True"})
    writes = len(api.calls("patch", subresource="status"))
    await api.create("services", service("unrelated", ("http", 80)))   # a sync that changes no status
    await asyncio.sleep(0.3)
    assert len(api.calls("patch", subresource="status")) == writes
