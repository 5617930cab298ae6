"""Cluster DNS: ``DNSServer`` answers cluster names and forwards the rest.

UDP and TCP listeners on asyncio. A query for a name ``ClusterRecords``
knows is answered from memory, in the datagram callback itself (no task,
no await); anything else - a name outside the zone, a reverse name of an
IP we do not know, the target of an ExternalName CNAME - is forwarded to
the upstream resolvers in turn (UDP, retried over TCP when truncated, 2 s
each) and answered SERVFAIL when none does. Malformed packets get FORMERR
when their header can be read and are dropped otherwise; responses never
get an answer (no loops).

DNS is high-volume, so nothing is logged per query: errors (rate-limited)
and one summary line per interval with the counters.

``run_dns(DNSConfig)`` is the process: services and endpointslices informers
(through ``kubepy.client``) feed a ``ClusterRecords``; cluster names are
answered SERVFAIL, not NXDOMAIN, until both have listed, so no client
caches a wrong negative answer at startup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple, Protocol, Self

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from kubepy.dns.records import ClusterRecords, Lookup
from kubepy.dns.metrics import DNSMetrics

log = logging.getLogger(__name__)

CLUSTER_DNS_ADDRESS = "10.96.0.10"
DEFAULT_LISTEN = [(CLUSTER_DNS_ADDRESS, 53)]
RESOLV_CONF = Path("/etc/resolv.conf")
UPSTREAM_TIMEOUT = 2.0  # seconds per upstream and transport
TCP_IDLE_TIMEOUT = 10.0  # RFC 7766 suggests seconds, not minutes
ANSWER_CACHE_SIZE = 4096  # distinct query byte strings; cleared whole when full
MAX_FORWARDS = 1024  # queries in flight upstream; beyond that, SERVFAIL at once
SUMMARY_INTERVAL = 60.0
ERRORS_PER_INTERVAL = 10  # logged in full; the rest only counted in the summary
UDP_RCVBUF = 1 << 20
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux: bind before the address is configured

_MALFORMED = (dns.exception.DNSException, ValueError, UnicodeError, struct.error, IndexError)


class RecordSource(Protocol):
    """What the server asks; ``ClusterRecords`` is the real one."""

    ready: bool
    serial: int  # changes whenever any answer may have

    def is_in_zone(self, qname: dns.name.Name) -> bool: ...

    def lookup(self, qname: dns.name.Name, qtype: int) -> Lookup | None: ...

    def additional(self, answers: list[dns.rrset.RRset]) -> list[dns.rrset.RRset]: ...


@dataclass
class Stats:
    queries: int = 0
    nxdomain: int = 0
    forwarded: int = 0
    servfail: int = 0
    formerr: int = 0
    dropped: int = 0
    errors: int = 0

    def snapshot(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# -- addresses ------------------------------------------------------------------
def parse_address(text: str, *, default_port: int = 53) -> tuple[str, int]:
    """"1.2.3.4", "1.2.3.4:5353", "::1", "[::1]:5353" -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest.removeprefix(":") or default_port)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, default_port


def parse_resolv_conf(text: str, *, exclude: Iterable[str] = ()) -> list[str]:
    """The nameservers of a resolv.conf, minus ``exclude`` (ourselves: forwarding
    to the cluster DNS address would loop)."""
    excluded = set(exclude)
    out: list[str] = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver" and parts[1] not in excluded and parts[1] not in out:
            out.append(parts[1])
    return out


def default_upstreams(listen: Iterable[tuple[str, int]], *, path: Path = RESOLV_CONF) -> list[str]:
    exclude = {host for host, _ in listen} | {CLUSTER_DNS_ADDRESS}
    try:
        return parse_resolv_conf(path.read_text(), exclude=exclude)
    except OSError as e:
        log.warning("no upstream resolvers path=%s err=%s", path, e)
        return []


def formerr_for(wire: bytes) -> bytes | None:
    """A header-only FORMERR for a packet we could not parse, or None to drop it
    (too short to have an ID, or itself a response)."""
    if len(wire) < 12:
        return None
    qid, flags = struct.unpack("!HH", wire[:4])
    if flags & dns.flags.QR:
        return None
    flags = dns.flags.QR | (flags & 0x7800) | (flags & dns.flags.RD) | dns.rcode.FORMERR  # keep opcode and RD
    return struct.pack("!HHHHHH", qid, flags, 0, 0, 0, 0)


@dataclass
class Pending:
    """An answer only the upstreams can finish: a query to forward, or a local
    response whose ExternalName CNAME points outside the zone."""

    message: dns.message.Message
    max_size: int

    @property
    def is_chase(self) -> bool:
        return bool(self.message.flags & dns.flags.QR)


class _Local(NamedTuple):
    """A complete answer from the records: cacheable."""

    rcode: int
    wire: bytes


# -- the server -------------------------------------------------------------------
class DNSServer:
    def __init__(self, records: RecordSource, *, listen: list[tuple[str, int]] | None = None,
                 upstreams: list[str] | None = None, domain: str = "cluster.local",
                 timeout: float = UPSTREAM_TIMEOUT, summary_interval: float = SUMMARY_INTERVAL,
                 metrics: DNSMetrics | None = None) -> None:
        self.records = records
        self.metrics = metrics
        self.listen = list(listen if listen is not None else DEFAULT_LISTEN)
        self.upstreams = [parse_address(u) for u in
                          (upstreams if upstreams is not None else default_upstreams(self.listen))]
        self.domain = domain
        self.timeout = timeout
        self.summary_interval = summary_interval
        self.stats = Stats()
        self.addresses: list[tuple[str, int]] = []  # bound, with real ports (listen may say 0)
        self._transports: list[asyncio.DatagramTransport] = []
        self._tcp_servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._errors_logged = 0
        self._cache: dict[tuple[bool, bytes], tuple[int, bytes]] = {}  # see answer_local
        self._cache_serial = -1

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for host, port in self.listen:
                udp, tcp = _bind_pair(host, port)
                transport, _ = await loop.create_datagram_endpoint(lambda: _UDPProtocol(self), sock=udp)
                self._transports.append(transport)  # type: ignore[arg-type]
                self._tcp_servers.append(await asyncio.start_server(self._serve_tcp, sock=tcp))
                self.addresses.append((host, udp.getsockname()[1]))
        except BaseException:
            await self.stop()
            raise
        log.info("dns listening addresses=%s upstreams=%s domain=%s",
                 ",".join(f"{h}:{p}" for h, p in self.addresses),
                 ",".join(f"{h}:{p}" for h, p in self.upstreams) or "-", self.domain)

    async def stop(self) -> None:
        for transport in self._transports:
            transport.close()
        for server in self._tcp_servers:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for server in self._tcp_servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._transports.clear()
        self._tcp_servers.clear()
        self.addresses.clear()

    async def serve_forever(self) -> None:
        """Start, log a summary every interval, stop when cancelled."""
        await self.start()
        try:
            last = self.stats.snapshot()
            while True:
                await asyncio.sleep(self.summary_interval)
                now = self.stats.snapshot()
                if now != last:
                    log.info("dns summary interval=%.0fs %s", self.summary_interval,
                             " ".join(f"{k}={now[k] - last[k]}" for k in now))
                last, self._errors_logged = now, 0
        finally:
            await self.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- answering ------------------------------------------------------------------
    def answer_local(self, wire: bytes, *, tcp: bool) -> bytes | Pending | None:
        """Bytes to send back, None to send nothing, or a ``Pending`` answer that
        needs the upstreams (``answer_upstream``). Never raises for bad input.

        Rendered answers are cached by the query's bytes after its ID: with
        the records unchanged (same serial) the same bytes get the same
        answer, and most cluster queries are repeats. This skips parsing and
        rendering, which are nearly all of the cost."""
        self.stats.queries += 1
        if self._cache_serial != self.records.serial:
            self._cache.clear()
            self._cache_serial = self.records.serial
        key = (tcp, wire[2:])
        cached = self._cache.get(key)
        if cached is not None:
            rcode, body = cached
            if rcode == dns.rcode.NXDOMAIN:
                self.stats.nxdomain += 1
            return wire[:2] + body
        reply = self._answer_local(wire, tcp=tcp)
        if isinstance(reply, _Local):
            if len(self._cache) >= ANSWER_CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = (reply.rcode, reply.wire[2:])
            return reply.wire
        return reply

    def _answer_local(self, wire: bytes, *, tcp: bool) -> bytes | _Local | Pending | None:
        max_size = 65535
        try:
            query = dns.message.from_wire(wire)
        except _MALFORMED:
            reply = formerr_for(wire)
            if reply is None:
                self.stats.dropped += 1
            else:
                self.stats.formerr += 1
            return reply
        if query.flags & dns.flags.QR:
            self.stats.dropped += 1
            return None
        if not tcp:
            max_size = max(512, query.payload) if query.edns >= 0 else 512
        if query.opcode() != dns.opcode.QUERY:
            return self._render(self._error(query, dns.rcode.NOTIMP), max_size)
        if len(query.question) != 1:
            self.stats.formerr += 1
            return self._render(self._error(query, dns.rcode.FORMERR), max_size)
        question = query.question[0]
        in_zone = self.records.is_in_zone(question.name)
        if question.rdclass != dns.rdataclass.IN:
            if not in_zone:
                return Pending(query, max_size)
            return self._render(self._error(query, dns.rcode.REFUSED), max_size)
        if in_zone and not self.records.ready:
            return self._render(self._error(query, dns.rcode.SERVFAIL), max_size)
        if question.rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            return self._render(self._error(query, dns.rcode.REFUSED if in_zone else dns.rcode.NOTIMP), max_size)
        result = self.records.lookup(question.name, question.rdtype)
        if result is None:
            return Pending(query, max_size)
        response = dns.message.make_response(query, recursion_available=True)
        response.flags |= dns.flags.AA
        response.set_rcode(result.rcode)
        response.answer = list(result.answers)
        response.authority = list(result.authority)
        if any(rrset.rdtype == dns.rdatatype.SRV for rrset in result.answers):
            response.additional = self.records.additional(result.answers)
        if result.rcode == dns.rcode.NXDOMAIN:
            self.stats.nxdomain += 1
        if self._needs_chase(result, question.rdtype):
            return Pending(response, max_size)  # an ExternalName: finished by answer_upstream
        if not self.records.ready:
            return self._render(response, max_size)  # e.g. a reverse name: fine to answer, not to cache
        return _Local(result.rcode, self._render(response, max_size))

    async def answer_upstream(self, pending: Pending) -> bytes:
        """Forward a query, or chase an out-of-zone CNAME of a local response."""
        message, max_size = pending.message, pending.max_size
        if pending.is_chase:
            cname = message.answer[-1]
            query = dns.message.make_query(cname[0].target, message.question[0].rdtype)
            upstream = await self._forward(query)
            if upstream is not None:
                message.answer.extend(upstream.answer)
                if upstream.rcode() != dns.rcode.NOERROR:
                    message.set_rcode(upstream.rcode())
            return self._render(message, max_size)
        response = await self._forward(message)
        if response is None:
            response = self._error(message, dns.rcode.SERVFAIL)
        return self._render(response, max_size)

    async def _forward(self, query: dns.message.Message) -> dns.message.Message | None:
        self.stats.forwarded += 1
        failures = []
        for host, port in self.upstreams:
            try:
                response, _ = await dns.asyncquery.udp_with_fallback(query, host, timeout=self.timeout, port=port)
                return response
            except (dns.exception.DNSException, OSError, EOFError) as e:
                failures.append(f"{host}:{port}:{type(e).__name__}")
        self._error_log("forward failed qname=%s qtype=%s upstreams=%s", query.question[0].name,
                        dns.rdatatype.to_text(query.question[0].rdtype), ",".join(failures) or "none")
        return None

    def _needs_chase(self, result: Lookup, qtype: int) -> bool:
        if qtype in (dns.rdatatype.CNAME, dns.rdatatype.ANY) or not result.answers:
            return False
        last = result.answers[-1]
        return last.rdtype == dns.rdatatype.CNAME and not self.records.is_in_zone(last[0].target)

    def _error(self, query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
        if rcode == dns.rcode.SERVFAIL:
            self.stats.servfail += 1
        response = dns.message.make_response(query, recursion_available=True)
        response.set_rcode(rcode)
        return response

    def _render(self, response: dns.message.Message, max_size: int) -> bytes:
        return response.to_wire(max_size=max_size, prefer_truncation=True)

    def _error_log(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self.stats.errors += 1
        if self._errors_logged < ERRORS_PER_INTERVAL:
            self._errors_logged += 1
            log.warning(msg, *args, exc_info=exc_info)

    # -- transports -------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _observe(self, server: str, proto: str, addr: Any, wire: bytes, reply: bytes | None, started: float) -> None:
        if self.metrics is not None:
            family = "2" if addr and ":" in str(addr[0]) else "1"
            self.metrics.observe(server, proto, family, wire, reply, time.monotonic() - started)

    def _udp_query(self, transport: asyncio.DatagramTransport, wire: bytes, addr: Any, server: str = "") -> None:
        started = time.monotonic()
        try:
            reply = self.answer_local(wire, tcp=False)
            if isinstance(reply, bytes):
                transport.sendto(reply, addr)
                self._observe(server, "udp", addr, wire, reply, started)
            elif reply is not None:
                if len(self._tasks) >= MAX_FORWARDS:
                    self._error_log("too many queries upstream in_flight=%d", len(self._tasks))
                    if not reply.is_chase:
                        transport.sendto(self._render(self._error(reply.message, dns.rcode.SERVFAIL),
                                                      reply.max_size), addr)
                else:
                    self._spawn(self._udp_upstream(transport, reply, addr, server, wire, started))
        except Exception:  # noqa: BLE001 - a bug in one query must not stop the listener
            self._error_log("udp query failed client=%s", addr, exc_info=True)

    async def _udp_upstream(self, transport: asyncio.DatagramTransport, pending: Pending, addr: Any,
                            server: str = "", wire: bytes = b"", started: float = 0.0) -> None:
        try:
            reply = await self.answer_upstream(pending)
            transport.sendto(reply, addr)
            self._observe(server, "udp", addr, wire, reply, started)
        except Exception:  # noqa: BLE001 - logged; the client retries
            self._error_log("udp forward failed client=%s", addr, exc_info=True)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # so stop() ends open connections too
        peer = writer.get_extra_info("peername")
        sockname = writer.get_extra_info("sockname")
        server = _server_label(sockname) if self.metrics is not None else ""
        try:
            while True:
                try:
                    (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2),
                                                                         TCP_IDLE_TIMEOUT))
                    wire = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                started = time.monotonic()
                reply = self.answer_local(wire, tcp=True)
                if isinstance(reply, Pending):
                    reply = await self.answer_upstream(reply)
                if reply is None:
                    return  # a response or garbage without a header: not a DNS client
                writer.write(struct.pack("!H", len(reply)) + reply)
                self._observe(server, "tcp", peer, wire, reply, started)
                await writer.drain()
        except ConnectionError:
            pass
        except asyncio.CancelledError:
            # stop() ends open connections by cancelling them. This task is the top
            # of its own stack, and Python 3.11's streams log a cancelled handler
            # task as an error, so end it normally.
            pass
        except Exception:  # noqa: BLE001 - ends this connection only
            self._error_log("tcp connection failed client=%s", peer, exc_info=True)
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.server_label = ""   # the metrics' server label: dns://ADDR:PORT

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server_label = _server_label(transport.get_extra_info("sockname"))
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        self.server._udp_query(self.transport, data, addr, self.server_label)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable from a client that went away: nothing to do


def _server_label(sockname: Any) -> str:
    """CoreDNS' ``server`` label for a listening socket: dns://10.96.0.10:53."""
    if not sockname:
        return "dns://"
    host, port = sockname[0], sockname[1]
    return f"dns://[{host}]:{port}" if ":" in host else f"dns://{host}:{port}"


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same address and port (port 0: the same
    free one for both). IP_FREEBIND lets the cluster address be bound before
    it is configured on the node."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(20):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            for sock in (udp, tcp):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6 if family == socket.AF_INET6 else socket.SOL_IP,
                                    IP_FREEBIND, 1)
            with contextlib.suppress(OSError):
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
            udp.bind((host, port))
            tcp.bind((host, udp.getsockname()[1]))
            tcp.listen(128)
            udp.setblocking(False)
            tcp.setblocking(False)
            return udp, tcp
        except OSError:
            udp.close()
            tcp.close()
            if port != 0:
                raise
    raise OSError(f"no free port for both UDP and TCP on {host}")


# -- the process ---------------------------------------------------------------------
@dataclass
class DNSConfig:
    kubeconfig: str
    listen: list[tuple[str, int]] = field(default_factory=lambda: list(DEFAULT_LISTEN))
    upstreams: list[str] | None = None  # None: /etc/resolv.conf's, minus our own addresses
    domain: str = "cluster.local"
    summary_interval: float = SUMMARY_INTERVAL
    metrics: DNSMetrics | None = None


def feed_records(records: ClusterRecords, *, services: Any, slices: Any) -> None:
    """Wire the services and endpointslices informers' handlers to ``records``."""
    services.add_handler(records.set_service, lambda old, new: records.set_service(new), records.delete_service)
    slices.add_handler(records.set_endpoint_slice, lambda old, new: records.set_endpoint_slice(new),
                       records.delete_endpoint_slice)


async def run_dns(config: DNSConfig) -> None:
    """Serve cluster DNS until cancelled."""
    from kubepy.client import Client, Informer  # the process needs the API; records and server do not

    records = ClusterRecords(domain=config.domain)
    server = DNSServer(records, listen=config.listen, upstreams=config.upstreams, domain=config.domain,
                       summary_interval=config.summary_interval, metrics=config.metrics)
    async with Client.from_kubeconfig(config.kubeconfig, user_agent="kubepy-dns") as client:
        services, slices = Informer(client, "services"), Informer(client, "endpointslices")
        feed_records(records, services=services, slices=slices)
        tasks = [asyncio.create_task(services.run()), asyncio.create_task(slices.run()),
                 asyncio.create_task(server.serve_forever())]
        tasks.append(asyncio.create_task(_mark_ready(records, services, slices)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


async def _mark_ready(records: ClusterRecords, services: Any, slices: Any) -> None:
    started = time.monotonic()
    await services.wait_synced()
    await slices.wait_synced()
    records.ready = True
    log.info("dns records synced services=%d took=%.2fs", records.service_count, time.monotonic() - started)
