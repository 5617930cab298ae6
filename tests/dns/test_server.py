"""DNSServer over real sockets on loopback: cluster answers, forwarding to a fake
upstream, bad packets; and run_dns against a real kubepy API server (slow)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from kubepy.dns.records import ClusterRecords
from kubepy.dns.server import DNSConfig, DNSServer, formerr_for, parse_address, parse_resolv_conf, run_dns
from tests.dns.test_records import endpoints, service

LOOP = "127.0.0.1"
UPSTREAM = "127.0.0.2"  # the fake upstream resolver: another loopback address
DEAD = "127.0.0.3"  # nothing listens there


class FakeUpstream:
    """A tiny authoritative server for example.com.: big.example.com. has too
    many records for 512 bytes, so a UDP answer to it is truncated."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []  # (transport, qname)
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    def respond(self, wire: bytes, transport: str, max_size: int) -> bytes:
        query = dns.message.from_wire(wire)
        q = query.question[0]
        self.seen.append((transport, q.name.to_text()))
        response = dns.message.make_response(query)
        name = q.name.to_text().lower()
        if name == "www.example.com." and q.rdtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text(q.name, 300, "IN", "A", "192.0.2.1"))
        elif name == "big.example.com." and q.rdtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text_list(q.name, 300, "IN", "A",
                                                            [f"192.0.2.{i}" for i in range(1, 101)]))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire(max_size=max_size, prefer_truncation=True)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        upstream = self

        class Proto(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                self.transport.sendto(upstream.respond(data, "udp", 512), addr)

        self._udp, _ = await loop.create_datagram_endpoint(Proto, local_addr=(UPSTREAM, 0))
        self.port = self._udp.get_extra_info("sockname")[1]

        async def tcp(reader, writer):
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    (n,) = struct.unpack("!H", await reader.readexactly(2))
                    reply = self.respond(await reader.readexactly(n), "tcp", 65535)
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
            writer.close()

        self._tcp = await asyncio.start_server(tcp, UPSTREAM, self.port)

    async def stop(self) -> None:
        self._udp.close()
        self._tcp.close()
        await self._tcp.wait_closed()


def cluster_records() -> ClusterRecords:
    r = ClusterRecords()
    r.set_service(service("web", ports=(("http", 80, "TCP"),)))
    r.set_service(service("db", cluster_ip="None", ports=(("pg", 5432, "TCP"),)))
    r.set_endpoint_slice(endpoints("db", ready=[("10.244.1.7", "db-0")], ports=(("pg", 5432, "TCP"),)))
    r.set_service(service("many", cluster_ip="None"))
    r.set_endpoint_slice(endpoints("many", ready=[f"10.244.9.{i}" for i in range(1, 101)]))
    r.set_service(service("ext", type_="ExternalName", cluster_ip="", external_name="www.example.com"))
    r.ready = True
    return r


@pytest.fixture
async def upstream():
    fake = FakeUpstream()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def server(upstream):
    srv = DNSServer(cluster_records(), listen=[(LOOP, 0)], upstreams=[f"{UPSTREAM}:{upstream.port}"],
                    timeout=0.5)
    async with srv:
        yield srv


async def udp(srv: DNSServer, qname: str, qtype: str, **kw) -> dns.message.Message:
    host, port = srv.addresses[0]
    return await dns.asyncquery.udp(dns.message.make_query(qname, qtype, **kw), host, port=port, timeout=3)


async def tcp(srv: DNSServer, qname: str, qtype: str) -> dns.message.Message:
    host, port = srv.addresses[0]
    return await dns.asyncquery.tcp(dns.message.make_query(qname, qtype), host, port=port, timeout=3)


def texts(section) -> list[str]:
    return sorted(f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd}" for rrset in section for rd in rrset)


@pytest.mark.parametrize("query", [udp, tcp], ids=["udp", "tcp"])
async def test_cluster_a(server, query):
    r = await query(server, "web.default.svc.cluster.local", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AA and r.flags & dns.flags.RA
    assert texts(r.answer) == ["web.default.svc.cluster.local. A 10.96.0.20"]


@pytest.mark.parametrize("query", [udp, tcp], ids=["udp", "tcp"])
async def test_srv_with_additional(server, query):
    r = await query(server, "_pg._tcp.db.default.svc.cluster.local", "SRV")
    assert texts(r.answer) == \
        ["_pg._tcp.db.default.svc.cluster.local. SRV 0 100 5432 db-0.db.default.svc.cluster.local."]
    assert texts(r.additional) == ["db-0.db.default.svc.cluster.local. A 10.244.1.7"]


async def test_ptr(server):
    r = await udp(server, "20.0.96.10.in-addr.arpa", "PTR")
    assert texts(r.answer) == ["20.0.96.10.in-addr.arpa. PTR web.default.svc.cluster.local."]
    r = await udp(server, "7.1.244.10.in-addr.arpa", "PTR")
    assert texts(r.answer) == ["7.1.244.10.in-addr.arpa. PTR db-0.db.default.svc.cluster.local."]


@pytest.mark.parametrize("query", [udp, tcp], ids=["udp", "tcp"])
async def test_nxdomain_has_soa(server, query):
    r = await query(server, "nope.default.svc.cluster.local", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert [dns.rdatatype.to_text(a.rdtype) for a in r.authority] == ["SOA"]
    assert server.stats.nxdomain == 1


async def test_big_cluster_answer_truncates_over_udp_not_tcp(server):
    r = await udp(server, "many.default.svc.cluster.local", "A")
    assert r.flags & dns.flags.TC
    r = await udp(server, "many.default.svc.cluster.local", "A", use_edns=0, payload=4096)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 100
    r = await tcp(server, "many.default.svc.cluster.local", "A")
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 100


@pytest.mark.parametrize("query", [udp, tcp], ids=["udp", "tcp"])
async def test_forwards_other_names(server, upstream, query):
    r = await query(server, "www.example.com", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert texts(r.answer) == ["www.example.com. A 192.0.2.1"]
    assert not r.flags & dns.flags.AA
    r = await query(server, "nope.example.com", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert [q for _, q in upstream.seen] == ["www.example.com.", "nope.example.com."]
    assert server.stats.forwarded == 2


async def test_forward_retries_truncated_over_tcp(server, upstream):
    r = await tcp(server, "big.example.com", "A")
    assert len(r.answer[0]) == 100
    assert upstream.seen == [("udp", "big.example.com."), ("tcp", "big.example.com.")]


async def test_unknown_reverse_name_is_forwarded(server, upstream):
    r = await udp(server, "9.9.9.10.in-addr.arpa", "PTR")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert upstream.seen == [("udp", "9.9.9.10.in-addr.arpa.")]


async def test_external_name_is_chased_upstream(server, upstream):
    r = await udp(server, "ext.default.svc.cluster.local", "A")
    assert texts(r.answer) == ["ext.default.svc.cluster.local. CNAME www.example.com.",
                               "www.example.com. A 192.0.2.1"]


async def test_servfail_when_no_upstream_answers(upstream):
    # One upstream refuses (nothing listens), one blackholes (a UDP socket that never answers).
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((UPSTREAM, 0))
    try:
        srv = DNSServer(cluster_records(), listen=[(LOOP, 0)], timeout=0.3,
                        upstreams=[f"{DEAD}:{upstream.port}", f"{UPSTREAM}:{silent.getsockname()[1]}"])
        async with srv:
            started = time.monotonic()
            r = await udp(srv, "www.example.com", "A")
            assert r.rcode() == dns.rcode.SERVFAIL
            assert time.monotonic() - started < 2
            # cluster names still answered
            assert (await udp(srv, "web.default.svc.cluster.local", "A")).rcode() == dns.rcode.NOERROR
            assert srv.stats.servfail == 1 and srv.stats.errors == 1
    finally:
        silent.close()


async def test_cluster_names_servfail_until_synced(upstream):
    records = cluster_records()
    records.ready = False
    async with DNSServer(records, listen=[(LOOP, 0)], upstreams=[f"{UPSTREAM}:{upstream.port}"]) as srv:
        assert (await udp(srv, "web.default.svc.cluster.local", "A")).rcode() == dns.rcode.SERVFAIL
        assert (await udp(srv, "www.example.com", "A")).rcode() == dns.rcode.NOERROR  # forwarding works
        records.ready = True
        assert (await udp(srv, "web.default.svc.cluster.local", "A")).rcode() == dns.rcode.NOERROR


async def test_malformed_packets_do_not_kill_the_server(server):
    host, port = server.addresses[0]
    query = dns.message.make_query("web.default.svc.cluster.local", "A")
    header = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)  # claims a question it does not carry
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)  # the server runs on this loop: never block it

    async def send(data: bytes) -> None:
        await loop.sock_sendto(sock, data, (host, port))

    async def recv() -> bytes:
        return await asyncio.wait_for(loop.sock_recv(sock, 512), 2)

    try:
        await send(b"\x01\x02\x03")  # no header: dropped
        await send(header + b"\xff\xff\xff")  # FORMERR
        reply = await recv()
        assert struct.unpack("!HH", reply[:4]) == (0x1234, 0x8000 | 0x0100 | dns.rcode.FORMERR)
        await send(dns.message.make_response(query).to_wire())  # a response, not a query: dropped
        two = dns.message.make_query("a.cluster.local", "A")
        two.question.append(two.question[0])
        await send(two.to_wire())  # two questions: FORMERR
        assert dns.message.from_wire(await recv()).rcode() == dns.rcode.FORMERR
    finally:
        sock.close()
    # TCP: garbage after a length prefix, then a length with no body
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(struct.pack("!H", 15) + header + b"\x00\x00\x00")
    n = struct.unpack("!H", await reader.readexactly(2))[0]
    assert dns.message.from_wire(await reader.readexactly(n)).rcode() == dns.rcode.FORMERR
    writer.write(b"\x00\x40abc")
    writer.close()
    await writer.wait_closed()
    assert (await udp(server, "web.default.svc.cluster.local", "A")).rcode() == dns.rcode.NOERROR
    assert (await tcp(server, "web.default.svc.cluster.local", "A")).rcode() == dns.rcode.NOERROR
    assert server.stats.formerr == 3 and server.stats.dropped == 2


async def test_stop_closes_tcp_connections(upstream):
    srv = DNSServer(cluster_records(), listen=[(LOOP, 0)], upstreams=[])
    await srv.start()
    reader, writer = await asyncio.open_connection(*srv.addresses[0])
    await srv.stop()
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()


def test_formerr_for():
    assert formerr_for(b"short") is None
    assert formerr_for(struct.pack("!HHHHHH", 7, 0x8000, 0, 0, 0, 0)) is None  # a response
    assert formerr_for(struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0)) == struct.pack("!HHHHHH", 7, 0x8101, 0, 0, 0, 0)


def test_parse_resolv_conf_and_addresses():
    text = "# comment\nsearch x\nnameserver 10.96.0.10\nnameserver 192.0.2.53 # main\nnameserver ::1\n"
    assert parse_resolv_conf(text, exclude=["10.96.0.10"]) == ["192.0.2.53", "::1"]
    assert parse_address("10.96.0.10:53") == ("10.96.0.10", 53)
    assert parse_address("127.0.0.2") == ("127.0.0.2", 53)
    assert parse_address("[::1]:5353") == ("::1", 5353)
    assert parse_address("fd00::10") == ("fd00::10", 53)


@pytest.mark.slow
async def test_udp_queries_per_second(server):
    """One client, one query at a time: the latency-bound rate (client and
    server share this event loop, so the real server rate is higher)."""
    host, port = server.addresses[0]
    wire = dns.message.make_query("web.default.svc.cluster.local", "A").to_wire()
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect((host, port))
    n, started = 0, time.monotonic()
    try:
        while n < 3000 and time.monotonic() - started < 5:
            await loop.sock_sendall(sock, wire)
            await asyncio.wait_for(loop.sock_recv(sock, 512), 2)
            n += 1
    finally:
        sock.close()
    rate = n / (time.monotonic() - started)
    print(f"udp cluster-name queries/s (same loop): {rate:.0f}")
    assert rate > 300


# -- against a real API server --------------------------------------------------
@pytest.fixture
def apiserver():
    from tests.e2e.conftest import running_apiserver

    with running_apiserver("kubepy-dns-") as srv:
        yield srv


def free_udp_tcp_port() -> int:
    for _ in range(20):
        with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            t.bind((LOOP, 0))
            try:
                u.bind((LOOP, t.getsockname()[1]))
            except OSError:
                continue
            return t.getsockname()[1]
    raise OSError("no free port")


async def until(predicate, timeout: float):
    """Poll an async predicate; the seconds it took to become true."""
    started = time.monotonic()
    while True:
        if await predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_run_dns_follows_the_api(apiserver, upstream):
    from kubepy.client import Client

    port = free_udp_tcp_port()
    # As the nodes run it: on its own client certificate (system:kubepy-dns, the API server's dns.kubeconfig),
    # with only its default role; a refused list or watch would leave the names below unanswered.
    config = DNSConfig(kubeconfig=str(apiserver.data_dir / "dns.kubeconfig"), listen=[(LOOP, port)],
                       upstreams=[f"{UPSTREAM}:{upstream.port}"], summary_interval=0.2)
    task = asyncio.create_task(run_dns(config))

    async def ask(qname, qtype="A"):
        return await dns.asyncquery.udp(dns.message.make_query(qname, qtype), LOOP, port=port, timeout=2)

    async def answers(qname, expected_rcode, expected):
        with contextlib.suppress(dns.exception.Timeout, ConnectionRefusedError):
            r = await ask(qname)
            return r.rcode() == expected_rcode and sorted(rd.to_text() for a in r.answer for rd in a) == expected
        return False

    try:
        async with Client.from_kubeconfig(str(apiserver.kubeconfig)) as client:
            await until(lambda: answers("nope.default.svc.cluster.local", dns.rcode.NXDOMAIN, []), 10)

            svc = await client.create("services", {"apiVersion": "v1", "kind": "Service",
                                                   "metadata": {"name": "web"},
                                                   "spec": {"ports": [{"name": "http", "port": 80}]}},
                                      namespace="default")
            ip = svc["spec"]["clusterIP"]
            took = await until(lambda: answers("web.default.svc.cluster.local", dns.rcode.NOERROR, [ip]), 1)
            print(f"service visible in DNS after {took * 1000:.0f} ms")

            await client.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
                                             "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}},
                                namespace="default")
            ep = await client.create("endpointslices", {
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "db-x1", "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.1.7"]}],
                "ports": [{"name": "pg", "port": 5432}]}, namespace="default")
            await until(lambda: answers("db.default.svc.cluster.local", dns.rcode.NOERROR, ["10.244.1.7"]), 1)
            ep["endpoints"].append({"addresses": ["10.244.2.8"], "conditions": {"ready": True}})
            await client.update("endpointslices", ep)
            took = await until(lambda: answers("db.default.svc.cluster.local", dns.rcode.NOERROR,
                                               ["10.244.1.7", "10.244.2.8"]), 1)
            print(f"endpoint change visible in DNS after {took * 1000:.0f} ms")

            await client.delete("services", "web", namespace="default")
            took = await until(lambda: answers("web.default.svc.cluster.local", dns.rcode.NXDOMAIN, []), 1)
            print(f"deletion visible in DNS after {took * 1000:.0f} ms")
            # forwarding from the real process too
            assert await answers("www.example.com", dns.rcode.NOERROR, ["192.0.2.1"])
            await asyncio.sleep(0.3)  # let one summary line out
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_answer_cache_follows_record_changes(upstream):
    records = cluster_records()
    async with DNSServer(records, listen=[(LOOP, 0)], upstreams=[]) as srv:
        for _ in range(2):  # the second is a cache hit
            r = await udp(srv, "gone.default.svc.cluster.local", "A")
            assert r.rcode() == dns.rcode.NXDOMAIN
            assert texts((await udp(srv, "web.default.svc.cluster.local", "A")).answer) == \
                ["web.default.svc.cluster.local. A 10.96.0.20"]
        assert srv.stats.nxdomain == 2
        records.set_service(service("web", cluster_ip="10.96.0.21"))
        records.set_service(service("gone", cluster_ip="10.96.0.22"))
        assert texts((await udp(srv, "web.default.svc.cluster.local", "A")).answer) == \
            ["web.default.svc.cluster.local. A 10.96.0.21"]
        assert texts((await udp(srv, "gone.default.svc.cluster.local", "A")).answer) == \
            ["gone.default.svc.cluster.local. A 10.96.0.22"]
        r = await udp(srv, "web.default.svc.cluster.local", "A")
        assert r.id != 0 and r.question[0].name.to_text() == "web.default.svc.cluster.local."
