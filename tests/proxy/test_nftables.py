"""nftables mode: ServicePort models → one ``nft -f`` script, compared as text (pure), and the
proxier driving it through a fake ``nft``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kubepy.proxy.nftables import (
    FakeNFTables,
    NftState,
    chain_base,
    endpoint_chain_base,
    parse_nft_state,
    render_nft_full,
    render_nft_partial,
    service_chains,
)
from kubepy.proxy.proxier import Proxier
from kubepy.proxy.rules import Endpoint, NodeConfig, ServicePort
from kubepy.testing.fakeapi import FakeAPI
from tests.proxy.test_proxier import Harness, endpoints, service, wait_until

CONFIG = NodeConfig(cluster_cidr="10.244.0.0/16", node_ips=("192.168.77.1",))
T = "ip kube-proxy"


def sp(name: str, *ips: str, cluster_ip: str = "10.96.0.20", node_port: int | None = None,
       affinity: int | None = None, port_name: str = "http", protocol: str = "tcp",
       lb: tuple[str, ...] = (), external: tuple[str, ...] = (),
       ranges: tuple[str, ...] | None = None) -> ServicePort:
    return ServicePort(namespace="ns", name=name, port_name=port_name, protocol=protocol, cluster_ip=cluster_ip,
                       port=80, node_port=node_port, affinity_timeout=affinity,
                       endpoints=tuple(Endpoint(ip, 8080) for ip in ips), load_balancer_ips=lb,
                       external_ips=external, source_ranges=ranges)


def keyed(*ports: ServicePort) -> dict[str, ServicePort]:
    return {f"{p.key}|{p.protocol}": p for p in ports}


def lines(text: str, *prefixes: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefixes)]


def test_chain_names_as_upstream() -> None:
    # Upstream's own example (pkg/proxy/nftables): ns1/svc1 port p80, endpoint 10.180.0.1:80.
    upstream = ServicePort(namespace="ns1", name="svc1", port_name="p80", protocol="tcp", cluster_ip="172.30.0.41",
                           port=80)
    assert chain_base(upstream) == "ULMVA6XW-ns1/svc1/tcp/p80"
    assert endpoint_chain_base(upstream, Endpoint("10.180.0.1", 80)) == "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    unnamed = sp("web", "10.244.1.10", port_name="")
    assert chain_base(unnamed).endswith("-ns/web/tcp/")


def test_full_sync_cluster_ip_service() -> None:
    web = sp("web", "10.244.1.10", "10.244.1.11")
    text = render_nft_full(keyed(web), CONFIG).text
    base = chain_base(web)
    ep1, ep2 = (endpoint_chain_base(web, Endpoint(ip, 8080)) for ip in ("10.244.1.10", "10.244.1.11"))
    assert lines(text, f"add rule {T} service-{base}", f"add rule {T} endpoint-") == [
        f"add rule {T} service-{base} ip daddr 10.96.0.20 tcp dport 80 ip saddr != 10.244.0.0/16 "
        "jump mark-for-masquerade",
        f"add rule {T} service-{base} numgen random mod 2 0 goto endpoint-{ep1}",
        f"add rule {T} service-{base} goto endpoint-{ep2}",
        f"add rule {T} endpoint-{ep1} ip saddr 10.244.1.10 jump mark-for-masquerade",
        f"add rule {T} endpoint-{ep1} meta l4proto tcp dnat to 10.244.1.10:8080",
        f"add rule {T} endpoint-{ep2} ip saddr 10.244.1.11 jump mark-for-masquerade",
        f"add rule {T} endpoint-{ep2} meta l4proto tcp dnat to 10.244.1.11:8080",
    ]
    assert lines(text, "add element") == [
        f"add element {T} nodeport-ips {{ 192.168.77.1 }}",
        f"add element {T} service-ips {{ 10.96.0.20 . tcp . 80 : goto service-{base} }}",
        f"add element {T} cluster-ips {{ 10.96.0.20 }}",
    ]
    # The dispatch and the masquerade, as upstream.
    assert f"add rule {T} services ip daddr . meta l4proto . th dport vmap @service-ips" in text
    assert f"add rule {T} services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports" in text
    assert lines(text, f"add rule {T} masquerading") == [
        f"add rule {T} masquerading mark and 0x4000 == 0 return",
        f"add rule {T} masquerading mark set mark xor 0x4000",
        f"add rule {T} masquerading masquerade fully-random",
    ]
    assert f"add chain {T} nat-prerouting {{ type nat hook prerouting priority -100 ; }}" in text
    assert f"add chain {T} filter-input {{ type filter hook input priority -110 ; }}" in text
    # Maps are flushed and refilled in the same transaction; elements come after every chain they name.
    body = text.splitlines()
    assert body.index(f"flush map {T} service-ips") < body.index(f"add chain {T} service-{base}")
    assert body.index(f"add rule {T} endpoint-{ep2} meta l4proto tcp dnat to 10.244.1.11:8080") < \
        body.index(f"add element {T} service-ips {{ 10.96.0.20 . tcp . 80 : goto service-{base} }}")


def test_node_port_and_no_endpoints() -> None:
    web = sp("web", "10.244.1.10", node_port=30080)
    empty = sp("empty", cluster_ip="10.96.0.21", node_port=30081, protocol="udp")
    rs = render_nft_full(keyed(web, empty), CONFIG)
    base = chain_base(web)
    assert lines(rs.text, f"add rule {T} external-") == [
        f'add rule {T} external-{base} jump mark-for-masquerade comment "masquerade traffic for ns/web:http '
        f'external destinations"',
        f"add rule {T} external-{base} goto service-{base}",
    ]
    elements = lines(rs.text, "add element")
    assert f"add element {T} service-nodeports {{ tcp . 30080 : goto external-{base} }}" in elements
    assert f"add element {T} no-endpoint-services {{ 10.96.0.21 . udp . 80 : goto reject-chain }}" in elements
    assert f"add element {T} no-endpoint-nodeports {{ udp . 30081 : goto reject-chain }}" in elements
    assert f"add element {T} cluster-ips {{ 10.96.0.20, 10.96.0.21 }}" in elements
    assert not service_chains(empty) and not any(chain_base(empty) in line for line in lines(rs.text, "add chain"))


def test_nodeports_on_every_local_address_without_node_ips() -> None:
    text = render_nft_full(keyed(sp("web", "10.244.1.10", node_port=30080)),
                           NodeConfig(cluster_cidr="10.244.0.0/16")).text
    assert (f"add rule {T} services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport "
            "vmap @service-nodeports") in text
    assert "nodeport-ips {" not in "".join(lines(text, "add element"))


def test_session_affinity_sets() -> None:
    web = sp("web", "10.244.1.10", "10.244.1.11", affinity=600)
    text = render_nft_full(keyed(web), CONFIG).text
    e1 = endpoint_chain_base(web, Endpoint("10.244.1.10", 8080))
    assert f"add set {T} affinity-{e1} {{ type ipv4_addr ; flags dynamic,timeout ; timeout 600s ; }}" in text
    assert f"add rule {T} service-{chain_base(web)} ip saddr @affinity-{e1} goto endpoint-{e1}" in text
    assert lines(text, f"add rule {T} endpoint-{e1}") == [
        f"add rule {T} endpoint-{e1} ip saddr 10.244.1.10 jump mark-for-masquerade",
        f"add rule {T} endpoint-{e1} update @affinity-{e1} {{ ip saddr }}",
        f"add rule {T} endpoint-{e1} meta l4proto tcp dnat to 10.244.1.10:8080",
    ]
    assert "flush set" not in "".join(lines(text, f"flush set {T} affinity-"))  # members survive resyncs


def test_full_sync_deletes_what_the_kernel_holds_but_no_one_wants() -> None:
    gone = sp("gone", "10.244.1.12", cluster_ip="10.96.0.30", affinity=60)
    web = sp("web", "10.244.1.10")
    kernel = NftState(exists=True, chains=frozenset({*service_chains(gone), *service_chains(web), "services",
                                                     "service-endpoints-check"}),
                      sets=frozenset({f"affinity-{endpoint_chain_base(gone, gone.endpoints[0])}", "cluster-ips"}))
    rs = render_nft_full(keyed(web), CONFIG, kernel=kernel, first=True)
    assert set(rs.deleted) == set(service_chains(gone))
    tail = rs.text.splitlines()[-3:]
    assert sorted(tail) == sorted([*(f"delete chain {T} {c}" for c in service_chains(gone)),
                                   f"delete set {T} affinity-{endpoint_chain_base(gone, gone.endpoints[0])}"])
    assert f"delete chain {T} service-endpoints-check" not in rs.text
    # A table made by an earlier process: its base chains are deleted and made again (their priority may differ).
    assert f"delete chain {T} nat-output" in rs.text
    assert f"delete chain {T} nat-output" not in render_nft_full(keyed(web), CONFIG, kernel=kernel).text  # later syncs
    assert f"delete table {T}" not in rs.text
    assert f"delete table {T}" in render_nft_full(keyed(web), CONFIG, kernel=kernel, recreate=True).text


def test_partial_sync_rewrites_only_the_changed_service() -> None:
    one = sp("one", "10.244.1.10", cluster_ip="10.96.0.31")
    two = sp("two", "10.244.1.11", cluster_ip="10.96.0.32", node_port=30082)
    before = keyed(one, two)
    moved = sp("two", "10.244.1.12", cluster_ip="10.96.0.32", node_port=30082)
    after = keyed(one, moved)
    full = render_nft_full(before, CONFIG)
    rs = render_nft_partial(after, CONFIG, {"ns/two:http|tcp"}, previous=before, previous_chains=full.nat_chains)
    assert chain_base(one) not in rs.text  # the unchanged Service is not touched
    assert "flush map" not in rs.text and "flush set" not in rs.text
    old_ep = endpoint_chain_base(two, two.endpoints[0])
    new_ep = endpoint_chain_base(moved, moved.endpoints[0])
    base = chain_base(two)
    body = rs.text.splitlines()
    assert f"flush chain {T} service-{base}" in body and f"add rule {T} service-{base} goto endpoint-{new_ep}" in body
    # Same dispatch target: the map elements stay as they are.
    assert not lines(rs.text, "add element", "delete element")
    assert body[-1] == f"delete chain {T} endpoint-{old_ep}"
    assert body.index(f"flush chain {T} endpoint-{old_ep}") < body.index(f"add rule {T} service-{base} goto "
                                                                         f"endpoint-{new_ep}")
    assert rs.deleted == (f"endpoint-{old_ep}",)
    assert rs.nat_chains == frozenset(service_chains(one)) | frozenset(service_chains(moved))
    assert rs.rendered == 1


def test_partial_sync_of_removed_and_emptied_services() -> None:
    one = sp("one", "10.244.1.10", cluster_ip="10.96.0.31", node_port=30081)
    two = sp("two", "10.244.1.11", cluster_ip="10.96.0.32")
    before = keyed(one, two)
    emptied = sp("one", cluster_ip="10.96.0.31", node_port=30081)
    after = keyed(emptied)
    rs = render_nft_partial(after, CONFIG, {"ns/one:http|tcp", "ns/two:http|tcp"}, previous=before)
    b1 = chain_base(one)
    assert lines(rs.text, "delete element", "add element") == [
        f"delete element {T} service-ips {{ 10.96.0.31 . tcp . 80, 10.96.0.32 . tcp . 80 }}",
        f"delete element {T} service-nodeports {{ tcp . 30081 }}",
        f"delete element {T} cluster-ips {{ 10.96.0.32 }}",
        f"add element {T} no-endpoint-nodeports {{ tcp . 30081 : goto reject-chain }}",
        f"add element {T} no-endpoint-services {{ 10.96.0.31 . tcp . 80 : goto reject-chain }}",
    ]
    deleted = [line for line in rs.text.splitlines() if line.startswith("delete chain")]
    assert sorted(deleted) == sorted(f"delete chain {T} {c}" for c in [*service_chains(one), *service_chains(two)])
    assert f"delete chain {T} external-{b1}" in deleted
    assert rs.nat_chains == frozenset()


def test_partial_sync_affinity_timeout_change_updates_the_set() -> None:
    a = sp("web", "10.244.1.10", affinity=60)
    b = sp("web", "10.244.1.10", affinity=120)
    rs = render_nft_partial(keyed(b), CONFIG, {"ns/web:http|tcp"}, previous=keyed(a))
    e = endpoint_chain_base(a, a.endpoints[0])
    assert f"add set {T} affinity-{e} {{ type ipv4_addr ; flags dynamic,timeout ; timeout 120s ; }}" in rs.text
    off = render_nft_partial(keyed(sp("web", "10.244.1.10")), CONFIG, {"ns/web:http|tcp"}, previous=keyed(b))
    assert off.text.splitlines()[-1] == f"delete set {T} affinity-{e}"


def test_source_ranges_firewall_the_load_balancer_ips_only() -> None:
    web = sp("web", "10.244.1.10", node_port=30080, lb=("172.30.0.200", "172.30.0.201"), external=("198.51.100.7",),
             ranges=("203.0.113.0/24", "192.168.77.0/24"))
    # The node's IP is in the second range: the LB addresses (the node's own source when it dials them) too.
    config = NodeConfig(cluster_cidr="10.244.0.0/16", node_ip="192.168.77.1", node_ips=("192.168.77.1",))
    rs = render_nft_full(keyed(web), config)
    base = chain_base(web)
    assert service_chains(web) == (f"service-{base}", f"external-{base}", f"firewall-{base}",
                                   f"endpoint-{endpoint_chain_base(web, web.endpoints[0])}")
    assert f"add chain {T} firewall-{base}" in rs.text and f"flush chain {T} firewall-{base}" in rs.text
    assert lines(rs.text, f"add rule {T} firewall-{base}") == [
        f"add rule {T} firewall-{base} ip saddr != {{ 203.0.113.0/24, 192.168.77.0/24, 172.30.0.200, 172.30.0.201 }} "
        "drop",
    ]
    # Only the load-balancer IP:port goes through it; external IP, cluster IP and NodePort don't (as upstream).
    assert f"add element {T} firewall-ips {{ 172.30.0.200 . tcp . 80 : goto firewall-{base}, " \
           f"172.30.0.201 . tcp . 80 : goto firewall-{base} }}" in lines(rs.text, "add element")
    assert "198.51.100.7 . tcp . 80 : goto external-" in rs.text and "30080 : goto firewall" not in rs.text
    # Admitted traffic still dispatches to external-…; the check runs pre-DNAT from prerouting and output.
    assert f"172.30.0.200 . tcp . 80 : goto external-{base}" in rs.text
    assert lines(rs.text, f"add rule {T} filter-prerouting", f"add rule {T} filter-output ",
                 f"add rule {T} firewall-check") == [
        f"add rule {T} filter-output ct state new jump service-endpoints-check",
        f"add rule {T} filter-prerouting ct state new jump firewall-check",
        f"add rule {T} filter-output ct state new jump firewall-check",
        f"add rule {T} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips",
    ]
    assert rs.nat_chains >= {f"firewall-{base}"}
    # Without the node IP in a range (or with no node IP known) the LB addresses are not admitted.
    for cfg in (CONFIG, NodeConfig(cluster_cidr="10.244.0.0/16", node_ip="10.0.0.1")):
        text = render_nft_full(keyed(web), cfg).text
        assert lines(text, f"add rule {T} firewall-{base}") == [
            f"add rule {T} firewall-{base} ip saddr != {{ 203.0.113.0/24, 192.168.77.0/24 }} drop"]


def test_source_ranges_without_ipv4_admit_nobody() -> None:
    # As iptables mode: ranges given but none of them IPv4 (source_ranges == ()) → every IPv4 client dropped.
    web = sp("web", "10.244.1.10", lb=("172.30.0.200",), ranges=())
    text = render_nft_full(keyed(web), CONFIG).text
    base = chain_base(web)
    assert lines(text, f"add rule {T} firewall-{base}") == [
        f'add rule {T} firewall-{base} drop comment "no IPv4 source range: nobody admitted"']
    assert f"add element {T} firewall-ips {{ 172.30.0.200 . tcp . 80 : goto firewall-{base} }}" in text


def test_no_firewall_without_ranges_lb_ips_or_endpoints() -> None:
    cases = {
        "no ranges": sp("web", "10.244.1.10", lb=("172.30.0.200",)),
        "no LB IP": sp("web", "10.244.1.10", node_port=30080, ranges=("203.0.113.0/24",)),
        "no endpoints": sp("web", lb=("172.30.0.200",), ranges=("203.0.113.0/24",)),
    }
    for what, port in cases.items():
        text = render_nft_full(keyed(port), CONFIG).text
        fw = f"firewall-{chain_base(port)}"
        assert "firewall-ips {" not in "".join(lines(text, "add element")), what
        assert not lines(text, f"add chain {T} {fw}", f"add rule {T} {fw}") and fw not in service_chains(port), what
        assert f"add rule {T} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips" in text
    # Without endpoints the LB address is refused at once anyway.
    assert (f"add element {T} no-endpoint-services {{ 10.96.0.20 . tcp . 80 : goto reject-chain, "
            f"172.30.0.200 . tcp . 80 : goto reject-chain }}") in render_nft_full(keyed(cases["no endpoints"]),
                                                                                CONFIG).text


def test_partial_sync_adds_changes_and_removes_the_firewall() -> None:
    key = "ns/web:http|tcp"
    open_ = sp("web", "10.244.1.10", lb=("172.30.0.200",))
    closed = sp("web", "10.244.1.10", lb=("172.30.0.200",), ranges=("203.0.113.0/24",))
    wider = sp("web", "10.244.1.10", lb=("172.30.0.200",), ranges=("203.0.113.0/24", "198.51.100.0/24"))
    other = sp("other", "10.244.1.11", cluster_ip="10.96.0.21", lb=("172.30.0.201",), ranges=("10.0.0.0/8",))
    fw = f"firewall-{chain_base(closed)}"
    rs = render_nft_partial(keyed(closed, other), CONFIG, {key}, previous=keyed(open_, other))
    assert lines(rs.text, "add element", "delete element") == [
        f"add element {T} firewall-ips {{ 172.30.0.200 . tcp . 80 : goto {fw} }}"]
    assert f"add chain {T} {fw}" in rs.text
    assert f"add rule {T} {fw} ip saddr != {{ 203.0.113.0/24 }} drop" in rs.text
    assert chain_base(other) not in rs.text  # the other firewalled Service is not touched
    assert fw in rs.nat_chains and f"firewall-{chain_base(other)}" in rs.nat_chains
    # Ranges changed: the chain rewritten, the map element kept as it is.
    rs = render_nft_partial(keyed(wider, other), CONFIG, {key}, previous=keyed(closed, other))
    assert not lines(rs.text, "add element", "delete element")
    assert lines(rs.text, f"flush chain {T} {fw}", f"add rule {T} {fw}") == [
        f"flush chain {T} {fw}", f"add rule {T} {fw} ip saddr != {{ 203.0.113.0/24, 198.51.100.0/24 }} drop"]
    # Ranges gone: element and chain deleted in the same transaction.
    rs = render_nft_partial(keyed(open_, other), CONFIG, {key}, previous=keyed(wider, other))
    assert lines(rs.text, "add element", "delete element") == [
        f"delete element {T} firewall-ips {{ 172.30.0.200 . tcp . 80 }}"]
    body = rs.text.splitlines()
    assert body[-1] == f"delete chain {T} {fw}" and rs.deleted == (fw,) and fw not in rs.nat_chains
    # Endpoints gone: the firewall goes with the chains (the LB address is rejected instead).
    rs = render_nft_partial(keyed(sp("web", lb=("172.30.0.200",), ranges=("203.0.113.0/24",)), other), CONFIG,
                            {key}, previous=keyed(closed, other))
    assert f"delete element {T} firewall-ips {{ 172.30.0.200 . tcp . 80 }}" in rs.text
    assert f"delete chain {T} {fw}" in rs.text


def test_full_sync_deletes_a_stale_firewall_chain() -> None:
    was = sp("web", "10.244.1.10", lb=("172.30.0.200",), ranges=("203.0.113.0/24",))
    now = sp("web", "10.244.1.10", lb=("172.30.0.200",))
    fw = f"firewall-{chain_base(was)}"
    kernel = NftState(exists=True, chains=frozenset({*service_chains(was), "firewall-check"}))
    rs = render_nft_full(keyed(now), CONFIG, kernel=kernel)
    assert rs.deleted == (fw,) and rs.text.splitlines()[-1] == f"delete chain {T} {fw}"
    assert f"flush map {T} firewall-ips" in rs.text and "firewall-ips {" not in "".join(lines(rs.text, "add element"))
    assert f"delete chain {T} firewall-check" not in rs.text


def test_pod_egress_masquerade() -> None:
    cfg = NodeConfig(cluster_cidr="10.244.0.0/16", pod_egress_cidr="10.244.0.0/16")
    text = render_nft_full({}, cfg).text
    assert f"add rule {T} nat-postrouting jump kubepy-egress" in text
    assert (f"add rule {T} kubepy-egress ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random "
            'comment "pod to outside the cluster"') in text


def test_parse_nft_state_reads_only_our_table() -> None:
    chains = """table ip nat {
\tchain KUBE-SERVICES {
\t}
}
table ip kube-proxy {
\tchain nat-output {
\t\ttype nat hook output priority -100; policy accept;
\t}
\tchain service-ULMVA6XW-ns1/svc1/tcp/p80 {
\t}
}
"""
    sets = """table ip kube-proxy {
\tset affinity-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 {
\t\ttype ipv4_addr
\t\tflags dynamic,timeout
\t\ttimeout 3h
\t}
}
"""
    state = parse_nft_state(chains, sets)
    assert state == NftState(exists=True, chains=frozenset({"nat-output", "service-ULMVA6XW-ns1/svc1/tcp/p80"}),
                             sets=frozenset({"affinity-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"}))
    assert parse_nft_state("table ip nat {\n}\n") == NftState()


async def test_fake_nft_models_chains_and_cleanup() -> None:
    nft = FakeNFTables()
    web = sp("web", "10.244.1.10")
    await nft.apply(render_nft_full(keyed(web), CONFIG).text)
    state = await nft.state()
    assert state.exists and set(service_chains(web)) <= state.chains
    assert await nft.cleanup() is True and await nft.cleanup() is False
    nft.fail_next = 1
    with pytest.raises(Exception, match="fake failure"):
        await nft.apply("add table ip kube-proxy")


# -- the proxier in nftables mode ---------------------------------------------------
class NftHarness(Harness):
    def __init__(self, *, min_sync_period: float = 0.3) -> None:
        super().__init__(min_sync_period=min_sync_period)
        self.nft = FakeNFTables()
        # iptables mode left chains of its own and the policy agent has one: only the proxy's go.
        self.iptables.chains |= {("nat", "KUBE-SERVICES"), ("nat", "KUBE-SVC-AAAAAAAAAAAAAAAA"),
                                 ("filter", "KUBE-NWPLCY-FORWARD")}
        self.iptables.jumps |= {("nat", "PREROUTING", "KUBE-SERVICES"), ("filter", "FORWARD", "KUBE-NWPLCY-FORWARD")}
        self.proxier = Proxier(self.client, node_name="n1", node_ips=["192.168.77.1"], cluster_cidr="10.244.0.0/16",
                               service_cidr="10.96.0.0/12", bridge="cni0", min_sync_period=min_sync_period,
                               iptables=self.iptables, netlink=self.netlink, routes=self.routes,
                               proxy_mode="nftables", nftables=self.nft)


@pytest.fixture
async def nft_harness() -> AsyncIterator[NftHarness]:
    h = NftHarness()
    for i in range(3):
        h.client.seed("services", service(f"s{i}", f"10.96.0.{10 + i}"))
        h.client.seed("endpointslices", endpoints(f"s{i}", f"10.244.1.{10 + i}"))
    yield h
    await h.stop()


async def test_proxier_nftables_full_then_partial(nft_harness: NftHarness) -> None:
    h = nft_harness
    await h.start()
    assert len(h.nft.scripts) == 1
    first = h.nft.last
    assert first.count(f"add element {T} service-ips") == 1 and "flush map" in first
    assert f"add element {T} nodeport-ips {{ 192.168.77.1 }}" in first
    # Nothing was written with iptables-restore but the removal of iptables mode's proxy chains.
    assert h.iptables.chains == {("filter", "KUBE-NWPLCY-FORWARD")}
    assert h.iptables.jumps == {("filter", "FORWARD", "KUBE-NWPLCY-FORWARD")}
    s1 = h.proxier._applied["ns/s1|tcp"]  # type: ignore[index]
    await h.client.update("endpointslices", endpoints("s1", "10.244.1.50"))
    await wait_until(lambda: h.proxier.syncs >= 2)
    partial = h.nft.last
    assert "flush map" not in partial
    assert chain_base(h.proxier._applied["ns/s0|tcp"]) not in partial  # type: ignore[index]
    assert f"delete chain {T} endpoint-{endpoint_chain_base(s1, Endpoint('10.244.1.11', 80))}" in partial
    assert "dnat to 10.244.1.50:80" in partial
    assert h.nft.chains >= set(service_chains(h.proxier._applied["ns/s1|tcp"]))  # type: ignore[index]


async def test_proxier_nftables_failure_recreates_the_table(nft_harness: NftHarness) -> None:
    h = nft_harness
    await h.start()
    h.nft.fail_next = 1
    await h.client.update("endpointslices", endpoints("s2", "10.244.1.60"))
    await wait_until(lambda: h.proxier.failures == 1)
    await wait_until(lambda: h.proxier.syncs >= 2)
    retry = h.nft.last
    assert retry.splitlines()[1] == f"delete table {T}" and "dnat to 10.244.1.60:80" in retry
    assert retry.count(f"add element {T} service-ips") == 1 and retry.count("10.96.0.1") >= 3


async def test_proxier_nftables_source_ranges_patched_in_partial_syncs() -> None:
    h = NftHarness(min_sync_period=0.05)
    svc = service("web", "10.96.0.30")
    svc["spec"]["type"] = "LoadBalancer"
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "172.30.0.200"}]}}
    h.client.seed("services", svc)
    h.client.seed("endpointslices", endpoints("web", "10.244.1.5"))
    try:
        await h.start()
        web = h.proxier._applied["ns/web|tcp"]  # type: ignore[index]
        fw = f"firewall-{chain_base(web)}"
        assert fw not in h.nft.last and "firewall-ips {" not in "".join(lines(h.nft.last, "add element"))
        await h.client.patch("services", "web", {"spec": {"loadBalancerSourceRanges": ["203.0.113.0/24"]}},
                             namespace="ns")
        await wait_until(lambda: h.proxier.syncs >= 2)
        partial = h.nft.last
        assert "flush map" not in partial
        assert f"add element {T} firewall-ips {{ 172.30.0.200 . tcp . 80 : goto {fw} }}" in partial
        assert f"add rule {T} {fw} ip saddr != {{ 203.0.113.0/24 }} drop" in partial
        assert fw in h.nft.chains
        # The node's own IP (192.168.77.1) in a range admits the LB address as a source.
        await h.client.patch("services", "web", {"spec": {"loadBalancerSourceRanges": ["192.168.77.0/24"]}},
                             namespace="ns")
        await wait_until(lambda: h.proxier.syncs >= 3)
        assert f"add rule {T} {fw} ip saddr != {{ 192.168.77.0/24, 172.30.0.200 }} drop" in h.nft.last
        await h.client.patch("services", "web", {"spec": {"loadBalancerSourceRanges": None}}, namespace="ns")
        await wait_until(lambda: h.proxier.syncs >= 4)
        assert f"delete element {T} firewall-ips {{ 172.30.0.200 . tcp . 80 }}" in h.nft.last
        assert f"delete chain {T} {fw}" in h.nft.last and fw not in h.nft.chains
    finally:
        await h.stop()


def test_unknown_proxy_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown proxy mode 'ipvs'"):
        Proxier(FakeAPI(), node_name="n1", node_ips=[], cluster_cidr="10.244.0.0/16", service_cidr="10.96.0.0/12",
                bridge="cni0", proxy_mode="ipvs")
