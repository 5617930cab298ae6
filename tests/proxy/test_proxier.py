"""Proxier against the in-memory fake API, a fake iptables and a fake netlink.

Also the adapters' pure parts: reading iptables-save, the cleanup payload,
and which UDP conntrack entries a change makes stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from kubepy.proxy.iptables import FakeIPTables, cleanup_payload, parse_state
from kubepy.proxy.netlink import UDPFlow
from kubepy.proxy.proxier import Proxier, changed_ports, stale_udp_flows
from kubepy.proxy.rules import Endpoint, ServicePort
from kubepy.testing.fakeapi import FakeAPI


class FakeNetlink:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.flows: list[list[UDPFlow]] = []

    def ensure_service_route(self) -> bool:
        self.calls.append("route")
        return True

    def ensure_hairpin(self) -> int:
        self.calls.append("hairpin")
        return 0

    def ensure_no_redirects(self) -> None:
        self.calls.append("redirects")

    def delete_udp_flows(self, flows: list[UDPFlow]) -> int:
        self.flows.append(list(flows))
        return len(flows)


class FakeRoutes:
    def __init__(self) -> None:
        self.synced: list[dict[str, str]] = []

    def sync(self, wanted: dict[str, str]) -> tuple[int, int]:
        self.synced.append(dict(wanted))
        return len(wanted), 0


def service(name: str, ip: str, *, protocol: str = "TCP", port: int = 80) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "uid": name},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "ports": [{"port": port, "protocol": protocol}]}}


def endpoints(name: str, *ips: str, protocol: str = "TCP", port: int = 80) -> dict[str, Any]:
    """The one EndpointSlice of Service ``name``, all endpoints ready."""
    return {"metadata": {"namespace": "ns", "name": name + "-abcde", "uid": name + "-ep",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "", "port": port, "protocol": protocol}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips]}


async def wait_until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class Harness:
    def __init__(self, *, min_sync_period: float = 0.3, sync_period: float = 30.0) -> None:
        self.client = FakeAPI()
        self.iptables = FakeIPTables()
        self.netlink = FakeNetlink()
        self.routes = FakeRoutes()
        self.proxier = Proxier(self.client, node_name="n1", node_ips=["192.168.77.1"], cluster_cidr="10.244.0.0/16",
                               service_cidr="10.96.0.0/12", bridge="cni0", min_sync_period=min_sync_period,
                               sync_period=sync_period, iptables=self.iptables, netlink=self.netlink,
                               routes=self.routes)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.proxier.run())
        await wait_until(lambda: self.proxier.syncs >= 1)

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    for i in range(3):
        h.client.seed("services", service(f"s{i}", f"10.96.0.{10 + i}"))
        h.client.seed("endpointslices", endpoints(f"s{i}", f"10.244.1.{10 + i}"))
    yield h
    await h.stop()


def declared(payload: str) -> list[str]:
    return [line[1:].split()[0] for line in payload.split("*nat")[1].splitlines() if line.startswith(":")]


async def test_first_sync_is_full(harness: Harness) -> None:
    await harness.start()
    assert harness.iptables.saves == 1 and len(harness.iptables.restores) == 1
    text = harness.iptables.last
    assert text.count(":KUBE-SVC-") == 3 and "-I PREROUTING 1 " in text
    assert harness.netlink.calls == ["route", "hairpin", "redirects"]


async def test_burst_of_changes_is_one_sync(harness: Harness) -> None:
    await harness.start()
    await asyncio.sleep(0.05)
    start = time.monotonic()
    for i in range(10):  # 10 changes in 100 ms
        await harness.client.update("endpointslices", endpoints("s0", f"10.244.1.{100 + i}"))
        await asyncio.sleep(0.01)
    assert time.monotonic() - start < 0.3
    await wait_until(lambda: harness.proxier.syncs >= 2)
    await asyncio.sleep(0.5)  # longer than min_sync_period: nothing else may come
    assert harness.proxier.syncs == 2 and len(harness.iptables.restores) == 2
    assert "10.244.1.109:80" in harness.iptables.last and "10.244.1.100:80" not in harness.iptables.last


async def test_change_of_one_service_is_a_partial_sync(harness: Harness) -> None:
    await harness.start()
    await harness.client.update("endpointslices", endpoints("s1", "10.244.1.50"))
    await wait_until(lambda: harness.proxier.syncs >= 2)
    payload = harness.iptables.last
    s1 = harness.proxier._applied["ns/s1|tcp"]  # type: ignore[index]
    old_sep = s1.sep_chain(Endpoint("10.244.1.11", 80))
    assert declared(payload) == ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ",
                                 s1.svc_chain, s1.sep_chain(Endpoint("10.244.1.50", 80)), old_sep]
    assert f"-X {old_sep}" in payload
    assert payload.count("-j KUBE-SVC-") == 3  # every service still dispatched
    assert harness.iptables.saves == 1  # a partial sync does not read the kernel
    assert "-I " not in payload


async def test_failed_apply_forces_a_full_resync(harness: Harness) -> None:
    await harness.start()
    harness.iptables.fail_next = 1
    await harness.client.update("endpointslices", endpoints("s2", "10.244.1.60"))
    await wait_until(lambda: harness.proxier.failures == 1)
    await wait_until(lambda: harness.proxier.syncs >= 2)  # retried after min_sync_period
    assert harness.iptables.saves == 2  # the retry read the kernel again: full
    assert harness.iptables.last.count(":KUBE-SVC-") == 3
    assert "10.244.1.60:80" in harness.iptables.last


async def test_periodic_full_resync() -> None:
    h = Harness(min_sync_period=0.05, sync_period=0.3)
    h.client.seed("services", service("s0", "10.96.0.10"))
    try:
        await h.start()
        await wait_until(lambda: h.proxier.syncs >= 3)
        assert h.iptables.saves >= 3 and h.netlink.calls.count("route") >= 3
    finally:
        await h.stop()


async def test_no_change_no_restore(harness: Harness) -> None:
    await harness.start()
    await harness.client.patch("services", "s0", {"metadata": {"annotations": {"touched": "yes"}}},
                               namespace="ns")  # new resourceVersion, same rules
    await asyncio.sleep(0.5)
    assert len(harness.iptables.restores) == 1


async def test_udp_endpoint_change_deletes_conntrack_entries() -> None:
    h = Harness(min_sync_period=0.05)
    h.client.seed("services", service("dns", "10.96.0.10", protocol="UDP", port=53))
    h.client.seed("endpointslices", endpoints("dns", "10.244.1.5", protocol="UDP", port=53))
    try:
        await h.start()
        await h.client.update("endpointslices", endpoints("dns", "10.244.1.6", protocol="UDP", port=53))
        await wait_until(lambda: h.proxier.syncs >= 2)
        await wait_until(lambda: len(h.netlink.flows) >= 2)
        # the first sync saw the service gain endpoints; the second, 10.244.1.5 leave
        assert h.netlink.flows[-1] == [UDPFlow(dport=53, orig_dst="10.96.0.10", reply_src="10.244.1.5")]
    finally:
        await h.stop()


async def test_deleted_service_chains_are_removed(harness: Harness) -> None:
    await harness.start()
    gone = harness.proxier._applied["ns/s2|tcp"]  # type: ignore[index]
    await harness.client.delete("services", "s2", namespace="ns")
    await wait_until(lambda: harness.proxier.syncs >= 2)
    for chain in gone.chains():
        assert f"-X {chain}" in harness.iptables.last
    assert not {("nat", c) for c in gone.chains()} & harness.iptables.chains


async def test_source_ranges_patched_take_effect_in_a_partial_sync() -> None:
    h = Harness(min_sync_period=0.05)
    svc = service("web", "10.96.0.30")
    svc["spec"]["type"] = "LoadBalancer"
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "172.30.0.200"}]}}
    h.client.seed("services", svc)
    h.client.seed("endpointslices", endpoints("web", "10.244.1.5"))
    try:
        await h.start()
        web = h.proxier._applied["ns/web|tcp"]  # type: ignore[index]
        assert f":{web.fw_chain}" not in h.iptables.last and "-A KUBE-PROXY-FIREWALL" not in h.iptables.last
        await h.client.patch("services", "web", {"spec": {"loadBalancerSourceRanges": ["203.0.113.0/24"]}},
                             namespace="ns")
        await wait_until(lambda: h.proxier.syncs >= 2)
        payload = h.iptables.last
        assert h.iptables.saves == 1  # partial: the kernel was not read again
        assert declared(payload)[4:] == [web.svc_chain, web.ext_chain, web.fw_chain, web.sep_chain(web.endpoints[0])]
        assert f"-s 203.0.113.0/24 -j {web.ext_chain}" in payload
        assert (f'-A KUBE-PROXY-FIREWALL -m comment --comment "ns/web traffic not accepted by {web.fw_chain}" '
                "-m tcp -p tcp -d 172.30.0.200 --dport 80 -j DROP") in payload
        # The node's own IP (192.168.77.1) in a range admits the LB address as a source.
        await h.client.patch("services", "web", {"spec": {"loadBalancerSourceRanges": ["192.168.77.0/24"]}},
                             namespace="ns")
        await wait_until(lambda: h.proxier.syncs >= 3)
        assert f"-s 172.30.0.200/32 -j {web.ext_chain}" in h.iptables.last
        # Ranges gone: the chain is deleted and the firewall emptied.
        await h.client.patch("services", "web", {"spec": {"loadBalancerSourceRanges": None}}, namespace="ns")
        await wait_until(lambda: h.proxier.syncs >= 4)
        assert f"-X {web.fw_chain}" in h.iptables.last and "-A KUBE-PROXY-FIREWALL" not in h.iptables.last
        assert ("nat", web.fw_chain) not in h.iptables.chains
    finally:
        await h.stop()


# -- pure parts ----------------------------------------------------------------
def sp(*ips: str, protocol: str = "udp", node_port: int | None = None, ip: str = "10.96.0.10") -> ServicePort:
    return ServicePort(namespace="ns", name="dns", port_name="dns", protocol=protocol, cluster_ip=ip, port=53,
                       node_port=node_port, endpoints=tuple(Endpoint(i, 5353) for i in ips))


@pytest.mark.parametrize(("old", "new", "flows"), [
    (sp("10.0.0.1", "10.0.0.2"), sp("10.0.0.2"), {UDPFlow(53, "10.96.0.10", "10.0.0.1")}),
    (sp("10.0.0.1", node_port=30053), sp("10.0.0.2", node_port=30053),
     {UDPFlow(53, "10.96.0.10", "10.0.0.1"), UDPFlow(30053, None, "10.0.0.1")}),
    (sp(), sp("10.0.0.1"), {UDPFlow(53, "10.96.0.10", None)}),
    (sp("10.0.0.1"), None, {UDPFlow(53, "10.96.0.10", "10.0.0.1")}),
    (sp("10.0.0.1", protocol="tcp"), sp("10.0.0.2", protocol="tcp"), set()),
    (sp("10.0.0.1"), sp("10.0.0.1"), set()),
])
def test_stale_udp_flows(old: ServicePort, new: ServicePort | None, flows: set[UDPFlow]) -> None:
    assert stale_udp_flows({"k": old}, {"k": new} if new else {}) == flows


def test_changed_ports() -> None:
    assert changed_ports({"a": sp("1.1.1.1"), "b": sp()}, {"a": sp("1.1.1.1"), "c": sp()}) == {"b", "c"}


SAVED = """\
# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]
:KUBEPY-EGRESS - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -j DOCKER
-A POSTROUTING -m comment --comment "kubepy pod egress" -j KUBEPY-EGRESS
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-AAAAAAAAAAAAAAAA
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A FORWARD -j ACCEPT
-A KUBE-PROXY-FIREWALL -d 172.30.0.200/32 -p tcp -m tcp --dport 80 -j DROP
COMMIT
"""


def test_parse_state_sees_only_our_chains_and_jumps() -> None:
    state = parse_state(SAVED)
    assert state.chains == {("nat", "KUBE-SERVICES"), ("nat", "KUBE-SVC-AAAAAAAAAAAAAAAA"), ("nat", "KUBEPY-EGRESS"),
                            ("filter", "KUBE-PROXY-FIREWALL")}
    assert state.jumps == {("nat", "PREROUTING", "KUBE-SERVICES"), ("nat", "POSTROUTING", "KUBEPY-EGRESS"),
                           ("filter", "INPUT", "KUBE-PROXY-FIREWALL")}


def test_cleanup_payload_touches_only_our_prefixes() -> None:
    assert cleanup_payload(SAVED) == """\
*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]
:KUBEPY-EGRESS - [0:0]
-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-D POSTROUTING -m comment --comment "kubepy pod egress" -j KUBEPY-EGRESS
-X KUBE-SERVICES
-X KUBE-SVC-AAAAAAAAAAAAAAAA
-X KUBEPY-EGRESS
COMMIT
*filter
:KUBE-PROXY-FIREWALL - [0:0]
-D INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-X KUBE-PROXY-FIREWALL
COMMIT
"""
    assert cleanup_payload("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n") == ""


async def test_fake_iptables_cleanup_models_the_kernel(harness: Harness) -> None:
    await harness.start()
    assert await harness.iptables.cleanup() > 0
    assert harness.iptables.chains == set() and harness.iptables.jumps == set()


async def test_node_changes_sync_host_gw_routes(harness: Harness) -> None:
    await harness.start()
    assert harness.routes.synced == [{}]
    other = {"metadata": {"name": "n2", "uid": "n2"}, "spec": {"podCIDR": "10.244.2.0/24"},
             "status": {"addresses": [{"type": "InternalIP", "address": "192.168.77.2"}]}}
    await harness.client.create("nodes", other)
    await wait_until(lambda: len(harness.routes.synced) >= 2)
    assert harness.routes.synced[-1] == {"10.244.2.0/24": "192.168.77.2"}
    assert len(harness.iptables.restores) == 1  # no service changed: no iptables work


# -- load-balancer announcement through the proxier ------------------------------
class FakeAddresses:
    """Records what the proxier asked the node to hold; ``fail`` makes the next call raise."""

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.calls: list[tuple[set[str], bool]] = []
        self.announced: list[list[str]] = []  # the repeated gratuitous ARPs
        self.fail = False

    def sync(self, wanted: set[str], *, reannounce: bool = False) -> tuple[list[str], list[str]]:
        self.calls.append((set(wanted), reannounce))
        added, removed = sorted(wanted - self.held), sorted(self.held - wanted)
        self.held = set(wanted)  # the kernel changed even if what follows fails
        if self.fail:
            self.fail = False
            raise OSError(100, "Network is down")
        return added, removed

    def announce(self, ips: set[str]) -> list[str]:
        held = sorted(ips & self.held)
        self.announced.append(held)
        return held


class FakeRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    def event(self, obj: dict[str, Any], type: str, reason: str, message: str) -> None:
        self.events.append((f"{obj['kind']}/{obj['metadata']['name']}", type, reason, message))


class FakeProbe:
    def __init__(self) -> None:
        self.rounds, self.peers, self.live = 1, {}, set()
        self.wanted = False

    def want(self, wanted: bool) -> None:
        self.wanted = wanted

    def set_peers(self, peers: dict[str, str]) -> None:
        self.peers = dict(peers)

    def answering(self) -> set[str]:
        return set(self.live)

    async def run(self, on_change: Callable[[], None]) -> None:
        await asyncio.Event().wait()


def lb_node(name: str, ip: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": name}, "spec": {},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                       "conditions": [{"type": "Ready", "status": "True"}]}}


async def test_the_announcing_node_holds_the_address_and_gives_it_up_when_a_peer_comes_back() -> None:
    from kubepy.proxy.announce import announcing_node

    h = Harness(min_sync_period=0.05)
    h.proxier.addresses, h.proxier.probe, h.proxier.recorder = FakeAddresses(), FakeProbe(), FakeRecorder()
    ip = "172.30.0.200"
    # Make n1 (this node) the second choice: it announces only while the first is gone.
    other = next(n for n in (f"n{i}" for i in range(2, 50)) if announcing_node(ip, {"n1", n}) == n)
    for name, addr in (("n1", "192.168.77.1"), (other, "192.168.77.2")):
        h.client.seed("nodes", lb_node(name, addr))
    svc = service("web", "10.96.0.30")
    svc["spec"]["type"] = "LoadBalancer"
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": ip}]}}
    h.client.seed("services", svc)
    slice_ = endpoints("web", "10.244.1.5", "10.244.2.5")
    slice_["endpoints"][0]["nodeName"], slice_["endpoints"][1]["nodeName"] = "n1", other
    h.client.seed("endpointslices", slice_)
    addresses, probe = h.proxier.addresses, h.proxier.probe
    probe.live = {other}
    try:
        await h.start()
        assert probe.peers == {other: "192.168.77.2"} and addresses.held == set()
        assert probe.wanted   # a Service has a load-balancer address: the peers are probed
        # The peer stops answering: n1 takes the address, but the call fails after the kernel took it
        # (a link that is down: the address is added, the gratuitous ARP is not sent).
        addresses.fail = True
        probe.live = set()
        h.proxier._dirty.set()
        await wait_until(lambda: addresses.held == {ip} and not addresses.fail)
        # The peer is back before any retry succeeded: n1 must still give the address up.
        probe.live = {other}
        h.proxier._dirty.set()
        await wait_until(lambda: addresses.held == set())
        assert h.proxier.announced == set()
        # The peer goes again: n1 takes over, and announces.
        probe.live = set()
        h.proxier._dirty.set()
        await wait_until(lambda: addresses.held == {ip})
        assert addresses.calls[-1] == ({ip}, True)
        assert h.proxier.recorder.events[-1] == ("Service/web", "Normal", "nodeAssigned",
                                                 'announcing from node "n1" with protocol "layer2"')
        # Announced again every REANNOUNCE_INTERVAL while the address stays ours (a neighbour ignores an
        # update within its locktime of the one before, when the address moved twice in a second).
        await wait_until(lambda: len(addresses.announced) >= 2, timeout=5)
        assert addresses.announced[:2] == [[ip], [ip]]
        # Given up: the repeats stop.
        probe.live = {other}
        h.proxier._dirty.set()
        await wait_until(lambda: addresses.held == set())
        count = len(addresses.announced)
        await asyncio.sleep(1.3)
        assert len(addresses.announced) == count
        # No load-balancer address left: the probing stops.
        await h.client.patch("services", "web", {"status": {"loadBalancer": {"ingress": None}}},
                             namespace=svc["metadata"].get("namespace"), subresource="status")
        await wait_until(lambda: not probe.wanted)
    finally:
        await h.stop()
