"""Load-balancer announcement (which node answers ARP for an address) and kube-proxy's health answers."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import threading
import urllib.error
import urllib.request

import pytest

from kubepy.proxy.announce import (
    NodeAddresses,
    PeerProbe,
    _arp_frame,
    announcing_node,
    desired_addresses,
    endpoint_nodes,
    live_nodes,
)
from kubepy.proxy.healthcheck import HealthServer, local_endpoint_counts, service_health
from kubepy.proxy.rules import Endpoint, ServicePort


def lb_port(name: str, ip: str, *, local: tuple[Endpoint, ...] = (), hc: int | None = None) -> ServicePort:
    return ServicePort(namespace="ns", name=name, port_name="", protocol="tcp", cluster_ip="10.96.0.5", port=80,
                       load_balancer_ips=(ip,), external_local=hc is not None, local_endpoints=local,
                       health_check_node_port=hc, endpoints=local)


def test_the_announcer_is_the_same_everywhere_and_the_next_one_takes_over():
    nodes = {"n1", "n2", "n3"}
    first = announcing_node("172.30.0.200", nodes)
    assert first == announcing_node("172.30.0.200", sorted(nodes, reverse=True))
    second = announcing_node("172.30.0.200", nodes - {first})
    assert second != first and second in nodes
    assert announcing_node("172.30.0.200", nodes - {second}) == first  # order, not position, decides
    assert announcing_node("172.30.0.200", []) is None
    # Different addresses spread over the nodes.
    assert len({announcing_node(f"172.30.0.{i}", nodes) for i in range(200, 220)}) == 3


def test_only_live_nodes_with_a_ready_endpoint_announce():
    ports = {"a": lb_port("web", "172.30.0.200"), "b": lb_port("idle", "172.30.0.201")}
    slices = [{"metadata": {"namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}}, "endpoints": [
        {"addresses": ["10.244.1.2"], "nodeName": "n1", "conditions": {"ready": True}},
        {"addresses": ["10.244.2.2"], "nodeName": "n2", "conditions": {"ready": False, "serving": False}},
        {"addresses": ["10.244.3.2"], "nodeName": "n3"}]}]
    eps = endpoint_nodes(slices)
    assert eps == {"ns/web": {"n1", "n3"}}
    owners = desired_addresses(ports, eps, {"n1", "n2", "n3"})
    assert set(owners) == {"172.30.0.200"} and owners["172.30.0.200"] in {"n1", "n3"}
    assert desired_addresses(ports, eps, {"n2"}) == {}
    gone = owners["172.30.0.200"]
    assert desired_addresses(ports, eps, {"n1", "n2", "n3"} - {gone})["172.30.0.200"] == ({"n1", "n3"} - {gone}).pop()


def test_live_nodes():
    def node(name, ready):
        return {"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": ready}]}}
    nodes = [node("n1", "True"), node("n2", "True"), node("n3", "False"), node("n4", "Unknown")]
    assert live_nodes(nodes, {"n2", "n3", "n4"}, "n1") == {"n1", "n2", "n4"}


def test_gratuitous_arp_frame():
    frame = _arp_frame(bytes.fromhex("020000000001"), "172.30.0.200")
    assert len(frame) == 42 and frame[:6] == b"\xff" * 6 and frame[12:14] == b"\x08\x06"
    assert frame[20:22] == b"\x00\x01"  # request
    assert frame[28:32] == frame[38:42] == socket.inet_aton("172.30.0.200")


def test_service_health_answers_like_upstream():
    status, headers, body = service_health("ns", "web", 2, proxy_healthy=True)
    assert status == 200 and headers["X-Load-Balancing-Endpoint-Weight"] == "2"
    assert json.loads(body) == {"service": {"namespace": "ns", "name": "web"}, "localEndpoints": 2,
                                "serviceProxyHealthy": True}
    assert service_health("ns", "web", 0, proxy_healthy=True)[0] == 503
    assert service_health("ns", "web", 1, proxy_healthy=False)[0] == 503
    ports = {"a": lb_port("web", "172.30.0.200", local=(Endpoint("10.244.1.2", 80),), hc=31000),
             "b": lb_port("web", "172.30.0.200", local=(Endpoint("10.244.1.2", 81),), hc=31000),
             "c": lb_port("far", "172.30.0.201", hc=31001), "d": lb_port("cluster", "172.30.0.202")}
    assert local_endpoint_counts(ports) == {31000: ("ns", "web", 1), 31001: ("ns", "far", 0)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str = "/") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def test_health_server_opens_and_closes_service_ports():
    import asyncio

    hz, hc = _free_port(), _free_port()
    srv = HealthServer(bind="127.0.0.1", healthz_port=hz)
    await srv.start()
    try:
        status, body = await asyncio.to_thread(_get, hz, "/healthz")
        assert status == 503 and json.loads(body)["nodeEligible"] is True  # never synced yet
        srv.last_synced = srv.clock()
        assert (await asyncio.to_thread(_get, hz, "/healthz"))[0] == 200
        await srv.sync_services({hc: ("ns", "web", 1)})
        status, body = await asyncio.to_thread(_get, hc)
        assert status == 200 and json.loads(body)["localEndpoints"] == 1
        await srv.sync_services({hc: ("ns", "web", 0)})
        assert (await asyncio.to_thread(_get, hc))[0] == 503
        await srv.sync_services({})
        with pytest.raises(OSError):
            await asyncio.to_thread(_get, hc)
    finally:
        await srv.stop()


@pytest.fixture
def netns():
    name = f"kptest-lb-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"], check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", "192.0.2.11/24", "dev", "eth0"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "eth0", "up"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "eth1", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _in_netns(name, fn):
    """Run ``fn`` in a thread that entered netns ``name``."""
    from pyroute2 import netns as pnetns

    out: dict = {}

    def body():
        pnetns.pushns(name)
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            out["error"] = e
        finally:
            pnetns.popns()

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.mark.slow
def test_node_addresses_hold_exactly_the_wanted_32s(netns):
    addrs = NodeAddresses("192.0.2.11")
    assert _in_netns(netns, lambda: addrs.sync({"192.0.2.200", "192.0.2.201"})) == (["192.0.2.200", "192.0.2.201"], [])
    shown = subprocess.run(["ip", "-n", netns, "-4", "-o", "addr", "show", "dev", "eth0"], capture_output=True,
                           text=True, check=True).stdout
    assert "192.0.2.200/32" in shown and "eth0:klb" in shown
    assert _in_netns(netns, lambda: addrs.sync({"192.0.2.201"})) == ([], ["192.0.2.200"])
    assert _in_netns(netns, lambda: addrs.sync(set())) == ([], ["192.0.2.201"])
    shown = subprocess.run(["ip", "-n", netns, "-4", "-o", "addr", "show", "dev", "eth0"], capture_output=True,
                           text=True, check=True).stdout
    assert "192.0.2.11/24" in shown and "/32" not in shown  # the node's own address is never touched


async def test_a_taken_healthz_port_is_logged_not_fatal(caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        srv = HealthServer(bind="127.0.0.1", healthz_port=taken.getsockname()[1])
        await srv.start()
        try:
            assert "healthz not served" in caplog.text
            hc = _free_port()
            await srv.sync_services({hc: ("ns", "web", 1)})  # the health-check ports still work
            srv.last_synced = srv.clock()
            import asyncio
            assert (await asyncio.to_thread(_get, hc))[0] == 200
        finally:
            await srv.stop()


async def test_peers_are_probed_only_while_a_load_balancer_address_exists():
    import asyncio

    from aiohttp import web

    hits: list[float] = []

    async def healthz(_req: web.Request) -> web.Response:
        hits.append(asyncio.get_running_loop().time())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    probe = PeerProbe(interval=0.05, port=port)
    changes: list[int] = []
    task = asyncio.create_task(probe.run(lambda: changes.append(probe.rounds)))
    try:
        probe.set_peers({"peer": "127.0.0.1"})
        await asyncio.sleep(0.3)
        assert hits == [] and probe.rounds == 0 and probe.answering() == set()
        probe.want(True)
        for _ in range(100):
            if probe.rounds >= 2:
                break
            await asyncio.sleep(0.02)
        assert probe.answering() == {"peer"} and changes[0] == 1   # the first round is reported
        probe.want(False)
        await asyncio.sleep(0.1)   # a round under way finishes
        idle_from = len(hits)
        await asyncio.sleep(0.3)
        assert len(hits) == idle_from
        probe.want(True)   # starting again: nobody counts as known until a new round is done
        assert probe.rounds == 0
        for _ in range(100):
            if probe.rounds >= 1:
                break
            await asyncio.sleep(0.02)
        assert len(hits) > idle_from and probe.answering() == {"peer"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()
