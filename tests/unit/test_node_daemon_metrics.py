"""/metrics of the node daemons other than the kubelet - kube-proxy, cluster DNS and the
network-policy agent - in process, served the way their commands serve them
(``kubepy.healthz.with_loop_health`` on the metrics address: plain HTTP beside /healthz,
/livez and /readyz), each on a registry of its own, parsed as Prometheus parses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable

import dns.asyncquery
import dns.message
import dns.rcode
from prometheus_client.parser import text_string_to_metric_families

from kubepy.dns.metrics import DNSMetrics, question
from kubepy.dns.server import DNSServer
from kubepy.healthz import with_loop_health
from kubepy.metrics import new_registry
from kubepy.netpol.agent import Agent

from kubepy.netpol.metrics import AgentMetrics
from kubepy.proxy.iptables import FakeIPTables
from kubepy.proxy.metrics import ProxyMetrics
from kubepy.proxy.proxier import Proxier
from kubepy.testing.fakeapi import FakeAPI
from tests.dns.test_server import cluster_records
from tests.netpol.test_agent import FakeIPTables as NetpolIPTables
from tests.proxy.test_proxier import FakeNetlink, FakeRoutes, endpoints, service

Samples = dict[tuple[str, tuple], float]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.headers["Content-Type"], r.read().decode()


async def _scrape(port: int) -> Samples:
    code, content_type, text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    assert code == 200 and content_type.startswith("text/plain; version=0.0.4"), (code, content_type)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


async def _until(check: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _served(run, registry, body) -> None:
    """``run()`` as its command runs it, with /metrics on a free port, while ``body(port)`` looks."""
    port = _free_port()
    task = asyncio.create_task(with_loop_health(run(), bind=f"127.0.0.1:{port}", registry=registry, required=False))
    try:
        await _until(lambda: _connectable(port))
        for path in ("/healthz", "/livez", "/readyz"):
            assert (await asyncio.to_thread(_get, f"http://127.0.0.1:{port}{path}"))[0] == 200
        await body(port)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _connectable(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_kube_proxy_sync_metrics() -> None:
    api = FakeAPI()
    for i in range(2):
        api.seed("services", service(f"s{i}", f"10.96.0.{10 + i}"))
        api.seed("endpointslices", endpoints(f"s{i}", f"10.244.1.{10 + i}"))
    registry = new_registry()
    iptables = FakeIPTables()
    proxier = Proxier(api, node_name="n1", node_ips=["192.168.77.1"], cluster_cidr="10.244.0.0/16",
                      service_cidr="10.96.0.0/12", bridge="cni0", min_sync_period=0.05, iptables=iptables,
                      netlink=FakeNetlink(), routes=FakeRoutes(), metrics=ProxyMetrics(registry))

    async def look(port: int) -> None:
        await _until(lambda: proxier.syncs >= 1)
        first = await _scrape(port)
        assert first[("kubeproxy_sync_proxy_rules_duration_seconds_count", ())] >= 1
        assert first[("kubeproxy_sync_proxy_rules_last_timestamp_seconds", ())] > 1.7e9
        await api.update("endpointslices", endpoints("s0", "10.244.1.99"))
        await _until(lambda: proxier.syncs >= 2)
        later = await _scrape(port)
        assert later[("kubeproxy_sync_proxy_rules_duration_seconds_count", ())] > \
            first[("kubeproxy_sync_proxy_rules_duration_seconds_count", ())]
        assert later[("kubeproxy_sync_proxy_rules_last_timestamp_seconds", ())] >= \
            first[("kubeproxy_sync_proxy_rules_last_timestamp_seconds", ())]
        assert ("process_resident_memory_bytes", ()) in later

    await _served(proxier.run, registry, look)


async def test_network_policy_agent_sync_metrics() -> None:
    api = FakeAPI()
    api.seed("namespaces", {"metadata": {"name": "x", "uid": "uid-x"}})
    registry = new_registry()
    agent = Agent(api, node_name="n1", pod_cidr="10.244.0.0/24", iptables=NetpolIPTables(), min_sync_period=0.05,
                  head_check_period=0.1, metrics=AgentMetrics(registry))

    async def look(port: int) -> None:
        await _until(lambda: agent.syncs >= 1)
        got = await _scrape(port)
        assert got[("kubepy_netpol_sync_rules_duration_seconds_count", ())] >= 1
        assert got[("kubepy_netpol_sync_rules_last_timestamp_seconds", ())] > 1.7e9

    await _served(agent.run, registry, look)


def test_question_is_read_from_the_wire() -> None:
    wire = dns.message.make_query("Web.NS.svc.Cluster.Local.", "SRV").to_wire()
    assert question(wire) == (b"\x03web\x02ns\x03svc\x07cluster\x05local", 33)
    assert question(b"\x00" * 5) is None


async def test_dns_requests_responses_and_durations_by_coredns_labels() -> None:
    registry = new_registry()
    server = DNSServer(cluster_records(), listen=[("127.0.0.1", 0)], upstreams=["127.0.0.3:53"], timeout=0.3,
                       metrics=DNSMetrics(registry))

    async def look(port: int) -> None:
        await _until(lambda: server.addresses)
        host, dns_port = server.addresses[0]
        for name, rdtype in (("web.default.svc.cluster.local.", "A"), ("web.default.svc.cluster.local.", "A"),
                             ("nope.default.svc.cluster.local.", "A"), ("_pg._tcp.db.default.svc.cluster.local.", "SRV")):
            await dns.asyncquery.udp(dns.message.make_query(name, rdtype), host, port=dns_port, timeout=2)
        reply = await dns.asyncquery.tcp(dns.message.make_query("web.default.svc.cluster.local.", "AAAA"), host,
                                         port=dns_port, timeout=2)
        assert reply.rcode() == dns.rcode.NOERROR
        got = await _scrape(port)
        server_label = ("server", f"dns://{host}:{dns_port}")
        zone = ("zone", "cluster.local.")

        def req(proto: str, qtype: str) -> float:
            labels = tuple(sorted([("family", "1"), ("proto", proto), server_label, ("type", qtype), ("view", ""), zone]))
            return got.get(("coredns_dns_requests_total", labels), 0.0)

        assert req("udp", "A") == 3 and req("udp", "SRV") == 1 and req("tcp", "AAAA") == 1
        resp = {dict(labels)["rcode"]: v for (n, labels), v in got.items() if n == "coredns_dns_responses_total"}
        assert resp == {"NOERROR": 4, "NXDOMAIN": 1}
        assert all(dict(labels)["plugin"] == "kubernetes" for (n, labels), _ in got.items()
                   if n == "coredns_dns_responses_total")
        assert got[("coredns_dns_request_duration_seconds_count",
                    tuple(sorted([server_label, ("type", "A"), ("view", ""), zone])))] == 3

    async def run() -> None:
        async with server:
            await asyncio.Event().wait()

    await _served(run, registry, look)


def test_a_bad_metrics_address_is_refused_with_the_flag_named() -> None:
    cp = subprocess.run([sys.executable, "-m", "kubepy", "proxy", "--kubeconfig", "/nonexistent",
                         "--metrics-bind-address", "localhost"], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 2
    assert "--metrics-bind-address 'localhost': want HOST:PORT" in cp.stderr, cp.stderr
