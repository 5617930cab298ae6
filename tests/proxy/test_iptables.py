"""Both proxy modes' adapters and rendered rules on a real kernel, with real traffic (slow).

Topology, all made by the fixture and all named ``kptest-<rand>-*``::

    kptest-R-out  eth0 192.168.77.2 ──veth── vout 192.168.77.1  kptest-R-node
    kptest-R-a    eth0 10.244.1.10  ──veth── vpa ┐
    kptest-R-b    eth0 10.244.1.11  ──veth── vpb ├─ cni0 10.244.1.1/24 (ip_forward on)
    kptest-R-c    eth0 10.244.1.12  ──veth── vpc ┘

Each "pod" runs a small Python server (TCP and UDP on 8080) via ``ip netns
exec`` that answers "<pod name> <peer ip>", so a test sees both which
backend answered and whether the source was masqueraded. The rules are
applied with ``RealIPTables(netns=<node>)`` or, in nftables mode,
``RealNFTables(netns=<node>)``: only that namespace's rules are touched. The
traffic tests run against both modes (one topology per mode); tests of one
mode's own output name it. Every namespace and server is removed even when
a test fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kubepy.proxy.iptables import RealIPTables, parse_state
from kubepy.proxy.netlink import NodeNetlink
from kubepy.proxy.nftables import RealNFTables, chain_base, render_nft_full, render_nft_partial, service_chains
from kubepy.proxy.proxier import stale_udp_flows
from kubepy.proxy.rules import (
    Endpoint,
    NodeConfig,
    ServicePort,
    render_full,
    render_partial,
)

pytestmark = pytest.mark.slow

CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/12"
GATEWAY = "10.244.1.1"
NODE_IP = "192.168.77.1"
LB_IP = "192.168.77.100"
POD_IPS = {"a": "10.244.1.10", "b": "10.244.1.11", "c": "10.244.1.12"}
PORT = 8080
CONFIG = NodeConfig(cluster_cidr=CLUSTER_CIDR)
NFT_CONFIG = NodeConfig(cluster_cidr=CLUSTER_CIDR, node_ips=(NODE_IP,))
BOTH = pytest.mark.parametrize("topo", ["iptables", "nftables"], indirect=True)
IPTABLES = pytest.mark.parametrize("topo", ["iptables"], indirect=True)
NFTABLES = pytest.mark.parametrize("topo", ["nftables"], indirect=True)

SERVER = textwrap.dedent("""
    import socket, sys, threading
    name = sys.argv[1]
    tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", 8080)); tcp.listen(128)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("0.0.0.0", 8080))
    def serve_udp():
        while True:
            data, peer = udp.recvfrom(2048)
            udp.sendto(f"{name} {peer[0]}".encode(), peer)
    threading.Thread(target=serve_udp, daemon=True).start()
    print("ready", flush=True)
    while True:
        conn, peer = tcp.accept()
        conn.sendall(f"{name} {peer[0]}".encode()); conn.close()
""")

CLIENT = textwrap.dedent("""
    import json, socket, sys, time
    mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        try:
            if mode == "tcp":
                s = socket.create_connection((host, port), timeout=3)
                out.append(["ok", s.recv(100).decode(), time.monotonic() - t0]); s.close()
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", int(sys.argv[5]))); s.settimeout(2)
                s.sendto(b"hi", (host, port))
                out.append(["ok", s.recvfrom(100)[0].decode(), time.monotonic() - t0]); s.close()
        except OSError as e:
            out.append([type(e).__name__, str(e), time.monotonic() - t0])
    print(json.dumps(out))
""")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


@dataclass
class Topology:
    prefix: str
    tmp: Path
    mode: str = "iptables"
    servers: list[subprocess.Popen[str]] = field(default_factory=list)

    def ns(self, short: str) -> str:
        return f"{self.prefix}-{short}"

    @property
    def node(self) -> str:
        return self.ns("node")

    @property
    def iptables(self) -> RealIPTables:
        return RealIPTables(netns=self.node)

    @property
    def netlink(self) -> NodeNetlink:
        return NodeNetlink(bridge="cni0", service_cidr=SERVICE_CIDR, netns=self.node)

    def client(self, where: str, mode: str, host: str, port: int, n: int = 1, sport: int = 0) -> list[list]:
        argv = ["ip", "netns", "exec", self.ns(where), sys.executable, str(self.tmp / "client.py"),
                mode, host, str(port), str(n)] + ([str(sport)] if mode == "udp" else [])
        return json.loads(sh(*argv).stdout)

    @property
    def nftables(self) -> RealNFTables:
        return RealNFTables(netns=self.node)

    async def apply(self, ports: dict[str, ServicePort], config: NodeConfig = CONFIG) -> None:
        """A full sync in this topology's mode."""
        if self.mode == "nftables":
            await self.nftables.apply(render_nft_full(ports, nft_config(config),
                                                      kernel=await self.nftables.state()).text)
            return
        state = parse_state(await self.iptables.save())
        await self.iptables.restore(render_full(ports, config, kernel=state).text)

    async def apply_partial(self, before: dict[str, ServicePort], after: dict[str, ServicePort],
                            config: NodeConfig = CONFIG) -> None:
        """A partial sync from ``before`` (in the kernel) to ``after``, of the keys that differ."""
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        if self.mode == "nftables":
            await self.nftables.apply(render_nft_partial(after, nft_config(config), changed, previous=before).text)
            return
        previous = {c for p in before.values() for c in p.chains()}
        await self.iptables.restore(render_partial(after, config, changed, previous_chains=previous).text)

    def nft(self, *argv: str) -> str:
        return sh("ip", "netns", "exec", self.node, "nft", *argv).stdout


def nft_config(config: NodeConfig) -> NodeConfig:
    """``config`` with the node address NodePorts answer on, as the proxier gives nftables mode."""
    return dataclasses.replace(config, node_ips=NFT_CONFIG.node_ips)


def build(t: Topology) -> None:
    (t.tmp / "server.py").write_text(SERVER)
    (t.tmp / "client.py").write_text(CLIENT)
    node = t.node
    for short in ("node", "out", *POD_IPS):
        sh("ip", "netns", "add", t.ns(short))
        sh("ip", "-n", t.ns(short), "link", "set", "lo", "up")
    sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", check=False)
    sh("ip", "-n", node, "link", "add", "cni0", "type", "bridge")
    sh("ip", "-n", node, "addr", "add", f"{GATEWAY}/24", "dev", "cni0")
    sh("ip", "-n", node, "link", "set", "cni0", "up")
    for short, ip in POD_IPS.items():
        pod = t.ns(short)
        sh("ip", "-n", node, "link", "add", f"vp{short}", "type", "veth", "peer", "name", "eth0", "netns", pod)
        sh("ip", "-n", node, "link", "set", f"vp{short}", "master", "cni0", "up")
        sh("ip", "-n", pod, "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "-n", pod, "link", "set", "eth0", "up")
        sh("ip", "-n", pod, "route", "add", "default", "via", GATEWAY)
    sh("ip", "-n", node, "link", "add", "vout", "type", "veth", "peer", "name", "eth0", "netns", t.ns("out"))
    sh("ip", "-n", node, "addr", "add", f"{NODE_IP}/24", "dev", "vout")
    sh("ip", "-n", node, "link", "set", "vout", "up")
    sh("ip", "-n", t.ns("out"), "addr", "add", "192.168.77.2/24", "dev", "eth0")
    sh("ip", "-n", t.ns("out"), "link", "set", "eth0", "up")
    for short in POD_IPS:
        proc = subprocess.Popen(["ip", "netns", "exec", t.ns(short), sys.executable, str(t.tmp / "server.py"), short],
                                stdout=subprocess.PIPE, text=True)
        t.servers.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"


def teardown(t: Topology) -> None:
    for proc in t.servers:
        proc.kill()
        proc.wait(timeout=10)
    for short in ("node", "out", *POD_IPS):
        sh("ip", "netns", "del", t.ns(short), check=False)


@pytest.fixture(scope="module")
def topo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    t = Topology(prefix=f"kptest-{secrets.token_hex(3)}", tmp=tmp_path_factory.mktemp("proxy"), mode=request.param)
    try:
        build(t)
        # What the proxier does on a full sync: hairpin on every bridge port, service route, no redirects.
        assert t.netlink.ensure_hairpin() == 3
        assert t.netlink.ensure_service_route() is True
        assert t.netlink.ensure_service_route() is False
        t.netlink.ensure_no_redirects()
        assert sh("ip", "netns", "exec", t.node, "sysctl", "-n", "net.ipv4.conf.cni0.send_redirects").stdout.strip() == "0"
        yield t
    finally:
        teardown(t)


def sp(name: str, *backends: str, protocol: str = "tcp", cluster_ip: str = "10.96.0.20", port: int = 80,
       node_port: int | None = None, port_name: str = "http", load_balancer_ips: tuple[str, ...] = (),
       source_ranges: tuple[str, ...] | None = None, affinity: int | None = None) -> ServicePort:
    eps = tuple(sorted(Endpoint(POD_IPS[b], PORT) for b in backends))
    return ServicePort(namespace="kptest", name=name, port_name=port_name, protocol=protocol, cluster_ip=cluster_ip,
                       port=port, node_port=node_port, endpoints=eps, load_balancer_ips=load_balancer_ips,
                       source_ranges=source_ranges, affinity_timeout=affinity)


def keyed(*ports: ServicePort) -> dict[str, ServicePort]:
    return {f"{p.key}|{p.protocol}": p for p in ports}


@IPTABLES
async def test_applied_rules_read_back(topo: Topology) -> None:
    web = sp("web", "a", "b", "c")
    await topo.apply(keyed(web))
    saved = await topo.iptables.save()
    state = parse_state(saved)
    nat = {c for t, c in state.chains if t == "nat"}
    assert set(web.chains()) <= nat
    assert {"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-MARK-MASQ", "KUBE-POSTROUTING"} <= nat
    assert ("nat", "PREROUTING", "KUBE-SERVICES") in state.jumps
    assert ("nat", "POSTROUTING", "KUBE-POSTROUTING") in state.jumps
    assert "--probability 0.33333333349" in saved  # how the kernel keeps kube-proxy's 0.3333333333
    # A second full sync adds no second jump.
    await topo.apply(keyed(web))
    assert (await topo.iptables.save()).count("-j KUBE-POSTROUTING") == 1


@IPTABLES
async def test_sctp_service_rules_load_into_the_kernel(topo: Topology) -> None:
    """SCTP Services get the same chains with ``-p sctp`` matches, and the kernel takes them (its SCTP
    netfilter match and conntrack are built in here). No SCTP traffic: this kernel has no SCTP sockets
    (CONFIG_IP_SCTP is not set), which is also why the lab's policy matrix probes only TCP and UDP."""
    web = sp("sctp", "a", "b", protocol="sctp", cluster_ip="10.96.0.21", port=132, node_port=30132)
    await topo.apply(keyed(web))
    saved = await topo.iptables.save()
    svc_rules = [r for r in saved.splitlines() if r.startswith("-A KUBE-SERVICES") and "10.96.0.21/32" in r]
    assert svc_rules and all("-p sctp" in r and "--dport 132" in r for r in svc_rules), svc_rules
    nodeport = [r for r in saved.splitlines() if r.startswith("-A KUBE-NODEPORTS") and "--dport 30132" in r]
    assert nodeport and all("-p sctp" in r for r in nodeport), nodeport
    dnat = [r for r in saved.splitlines() if "-j DNAT" in r and "-p sctp" in r]
    assert sorted(r.rsplit("--to-destination ", 1)[1] for r in dnat) == \
        [f"{POD_IPS['a']}:{PORT}", f"{POD_IPS['b']}:{PORT}"], dnat


@BOTH
async def test_cluster_ip_reaches_both_backends(topo: Topology) -> None:
    await topo.apply(keyed(sp("web", "a", "b")))
    results = topo.client("c", "tcp", "10.96.0.20", 80, n=40)
    assert all(r[0] == "ok" for r in results), results
    answered = {r[1].split()[0] for r in results}
    assert answered == {"a", "b"}
    assert {r[1].split()[1] for r in results} == {POD_IPS["c"]}  # in-cluster source kept


@BOTH
async def test_node_itself_reaches_cluster_ip(topo: Topology) -> None:
    await topo.apply(keyed(sp("web", "a")))
    (result,) = topo.client("node", "tcp", "10.96.0.20", 80)
    assert result[0] == "ok" and result[1].startswith("a "), result


@BOTH
async def test_pod_reaches_itself_through_its_service(topo: Topology) -> None:
    await topo.apply(keyed(sp("web", "a")))
    results = topo.client("a", "tcp", "10.96.0.20", 80, n=3)
    assert all(r[0] == "ok" for r in results), results
    # hairpinned back out of vpa and masqueraded to the bridge address
    assert {r[1] for r in results} == {f"a {GATEWAY}"}


@BOTH
async def test_node_port_answers_from_outside(topo: Topology) -> None:
    await topo.apply(keyed(sp("web", "b", node_port=30080)))
    (result,) = topo.client("out", "tcp", NODE_IP, 30080)
    assert result[0] == "ok", result
    assert result[1] == f"b {GATEWAY}"  # external traffic is masqueraded


@BOTH
async def test_service_without_endpoints_is_refused_at_once(topo: Topology) -> None:
    await topo.apply(keyed(sp("web", "a"), sp("empty", cluster_ip="10.96.0.21", node_port=30081)))
    (inside,) = topo.client("c", "tcp", "10.96.0.21", 80)
    assert inside[0] == "ConnectionRefusedError" and inside[2] < 0.5, inside
    (outside,) = topo.client("out", "tcp", NODE_IP, 30081)
    assert outside[0] == "ConnectionRefusedError" and outside[2] < 0.5, outside
    (node,) = topo.client("node", "tcp", "10.96.0.21", 80)
    assert node[0] == "ConnectionRefusedError" and node[2] < 0.5, node


@BOTH
async def test_udp_endpoint_swap_keeps_client_answered(topo: Topology) -> None:
    before = keyed(sp("dns", "a", protocol="udp", cluster_ip="10.96.0.10", port=53, port_name="dns"))
    after = keyed(sp("dns", "b", protocol="udp", cluster_ip="10.96.0.10", port=53, port_name="dns"))
    await topo.apply(before)
    (r1,) = topo.client("c", "udp", "10.96.0.10", 53, sport=40053)
    assert r1[0] == "ok" and r1[1].startswith("a "), r1
    # Rules alone: the conntrack entry still DNATs this 5-tuple to a.
    await topo.apply_partial(before, after)
    (r2,) = topo.client("c", "udp", "10.96.0.10", 53, sport=40053)
    assert r2[0] == "ok" and r2[1].startswith("a "), r2
    # What the proxier does after the apply: delete entries answered by a.
    flows = sorted(stale_udp_flows(before, after))
    deleted = await asyncio.to_thread(topo.netlink.delete_udp_flows, flows)
    assert deleted >= 1
    (r3,) = topo.client("c", "udp", "10.96.0.10", 53, sport=40053)
    assert r3[0] == "ok" and r3[1].startswith("b "), r3


@IPTABLES
async def test_partial_sync_leaves_other_services_alone(topo: Topology) -> None:
    one, two = sp("one", "a", cluster_ip="10.96.0.31"), sp("two", "b", cluster_ip="10.96.0.32")
    await topo.apply(keyed(one, two))
    moved = sp("two", "c", cluster_ip="10.96.0.32")
    before = keyed(one, two)
    after = keyed(one, moved)
    rs = render_partial(after, CONFIG, {"kptest/two:http|tcp"}, previous_chains=set(one.chains()) | set(two.chains()))
    assert one.svc_chain not in rs.text.split("*nat")[1].split("-A")[0]  # one's chains not declared
    await topo.iptables.restore(rs.text)
    nat = {c for t, c in parse_state(await topo.iptables.save()).chains if t == "nat"}
    assert set(one.chains()) | set(moved.chains()) <= nat
    assert set(two.chains()) - set(moved.chains()) & nat == set()  # stale SEP deleted
    assert before != after
    assert topo.client("c", "tcp", "10.96.0.31", 80)[0][1].startswith("a ")
    assert topo.client("a", "tcp", "10.96.0.32", 80)[0][1].startswith("c ")


@BOTH
async def test_source_ranges_admit_only_their_clients(topo: Topology) -> None:
    # The LB address held by the node, as the announcer holds it (a /32 on the node's link).
    sh("ip", "-n", topo.node, "addr", "add", f"{LB_IP}/32", "dev", "vout")
    try:
        outsider = sp("web", "a", port=80, load_balancer_ips=(LB_IP,), source_ranges=("203.0.113.0/24",))
        await topo.apply(keyed(outsider))
        (dropped,) = topo.client("out", "tcp", LB_IP, 80)
        assert dropped[0] == "TimeoutError", dropped  # dropped, not refused: nothing answers
        fw = f"firewall-{chain_base(outsider)}"
        if topo.mode == "iptables":
            rules = sh("ip", "netns", "exec", topo.node, "iptables", "-t", "filter", "-S", "KUBE-PROXY-FIREWALL").stdout
            assert (f'-A KUBE-PROXY-FIREWALL -d {LB_IP}/32 -p tcp -m comment --comment '
                    f'"kptest/web:http traffic not accepted by {outsider.fw_chain}" -m tcp --dport 80 -j DROP') in rules
        else:
            assert f"{LB_IP} . tcp . 80 : goto {fw}" in topo.nft("list", "map", "ip", "kube-proxy", "firewall-ips")
            assert "ip saddr != 203.0.113.0/24 drop" in topo.nft("list", "chain", "ip", "kube-proxy", fw)
        # The client's /32 admitted; the node too, its IP being in the other range (it talks from the LB IP).
        # A partial sync, as the proxier's when the Service is patched.
        admitted = sp("web", "a", port=80, load_balancer_ips=(LB_IP,),
                      source_ranges=("192.168.77.2/32", "192.168.77.0/30"))
        node_config = NodeConfig(cluster_cidr=CLUSTER_CIDR, node_ip=NODE_IP)
        await topo.apply_partial(keyed(outsider), keyed(admitted), node_config)
        if topo.mode == "nftables":  # the /32 merged into the /30 that holds it
            assert (f"ip saddr != {{ 192.168.77.0/30, {LB_IP} }} drop"
                    in topo.nft("list", "chain", "ip", "kube-proxy", fw))
        (ok,) = topo.client("out", "tcp", LB_IP, 80)
        assert ok[0] == "ok" and ok[1] == f"a {GATEWAY}", ok  # through the external chain: masqueraded
        (node,) = topo.client("node", "tcp", LB_IP, 80)
        assert node[0] == "ok" and node[1].startswith("a "), node
        # The cluster IP is not subject to the ranges.
        assert topo.client("c", "tcp", "10.96.0.20", 80)[0][0] == "ok"
        # A range list with no IPv4 CIDR admits nobody, the node included.
        nobody = sp("web", "a", port=80, load_balancer_ips=(LB_IP,), source_ranges=())
        await topo.apply_partial(keyed(admitted), keyed(nobody), node_config)
        assert topo.client("out", "tcp", LB_IP, 80)[0][0] == "TimeoutError"
        assert topo.client("node", "tcp", LB_IP, 80)[0][0] == "TimeoutError"
        # Ranges gone: open to everyone, and (nftables) the element and the chain deleted.
        everyone = sp("web", "a", port=80, load_balancer_ips=(LB_IP,))
        await topo.apply_partial(keyed(nobody), keyed(everyone), node_config)
        (ok,) = topo.client("out", "tcp", LB_IP, 80)
        assert ok[0] == "ok" and ok[1] == f"a {GATEWAY}", ok
        if topo.mode == "nftables":
            assert LB_IP not in topo.nft("list", "map", "ip", "kube-proxy", "firewall-ips")
            assert fw not in (await topo.nftables.state()).chains
        else:
            saved = await topo.iptables.save()
            assert outsider.fw_chain not in saved and "-A KUBE-PROXY-FIREWALL" not in saved
    finally:
        sh("ip", "-n", topo.node, "addr", "del", f"{LB_IP}/32", "dev", "vout", check=False)


@IPTABLES
async def test_cleanup_leaves_no_chains_of_ours(topo: Topology) -> None:
    await topo.apply(keyed(sp("web", "a", node_port=30080, load_balancer_ips=(LB_IP,), source_ranges=()),
                           sp("empty", cluster_ip="10.96.0.21")))
    before = parse_state(await topo.iptables.save())
    assert ("filter", "KUBE-PROXY-FIREWALL") in before.chains
    assert ("filter", "INPUT", "KUBE-PROXY-FIREWALL") in before.jumps
    assert any(c.startswith("KUBE-FW-") for _, c in before.chains)
    assert await topo.iptables.cleanup() > 0
    saved = await topo.iptables.save()
    assert "KUBE-" not in saved and "KUBEPY-" not in saved, saved
    assert await topo.iptables.cleanup() == 0  # idempotent


@BOTH
async def test_client_ip_affinity_keeps_a_client_on_one_backend(topo: Topology) -> None:
    await topo.apply(keyed(sp("sticky", "a", "b", cluster_ip="10.96.0.40", affinity=300)))
    for client in ("c", "node"):
        results = topo.client(client, "tcp", "10.96.0.40", 80, n=12)
        assert all(r[0] == "ok" for r in results), results
        assert len({r[1].split()[0] for r in results}) == 1, results
    # Without affinity the same client is spread (both backends in 40 tries: 1 - 2^-39).
    await topo.apply(keyed(sp("sticky", "a", "b", cluster_ip="10.96.0.40")))
    assert {r[1].split()[0] for r in topo.client("c", "tcp", "10.96.0.40", 80, n=40)} == {"a", "b"}


@NFTABLES
async def test_nft_ruleset_loads_and_reads_back(topo: Topology) -> None:
    web = sp("web", "a", "b", node_port=30080, affinity=60)
    empty = sp("empty", cluster_ip="10.96.0.21", node_port=30081)
    await topo.apply(keyed(web, empty))
    listing = await topo.nftables.list_table()
    for name in ("map service-ips", "map service-nodeports", "map no-endpoint-services", "map no-endpoint-nodeports",
                 "set nodeport-ips", "set cluster-ips", "chain services", "chain mark-for-masquerade",
                 "chain masquerading", *(f"chain {c} " for c in service_chains(web))):
        assert name in listing, name
    assert "type ipv4_addr . inet_proto . inet_service : verdict" in listing
    assert f"10.96.0.20 . tcp . 80 : goto service-" in listing
    assert "tcp . 30081 : goto reject-chain" in listing
    assert "update @affinity-" in listing and "timeout 1m" in listing
    state = await topo.nftables.state()
    assert state.exists and set(service_chains(web)) <= state.chains
    # A second full sync over a populated table, then a partial that moves web to c: one transaction each.
    await topo.apply(keyed(web, empty))
    moved = sp("web", "c", node_port=30080, affinity=60)
    await topo.apply_partial(keyed(web, empty), keyed(moved, empty))
    state = await topo.nftables.state()
    assert set(service_chains(moved)) <= state.chains
    assert not (set(service_chains(web)) - set(service_chains(moved))) & state.chains
    assert topo.client("a", "tcp", "10.96.0.20", 80)[0][1].startswith("c ")
    assert topo.client("out", "tcp", NODE_IP, 30080)[0][1] == f"c {GATEWAY}"


@NFTABLES
async def test_nft_cleanup_removes_the_table(topo: Topology) -> None:
    await topo.apply(keyed(sp("web", "a")))
    assert await topo.nftables.cleanup() is True
    assert "kube-proxy" not in sh("ip", "netns", "exec", topo.node, "nft", "list", "tables").stdout
    assert await topo.nftables.cleanup() is False  # idempotent
