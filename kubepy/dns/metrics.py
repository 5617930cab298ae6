"""Cluster DNS metrics, with CoreDNS' names and labels (plugin/metrics), as its ``prometheus :9153``:

- ``coredns_dns_requests_total{server,zone,view,proto,family,type}``
- ``coredns_dns_responses_total{server,zone,view,rcode,plugin}``
- ``coredns_dns_request_duration_seconds{server,zone,view,type}``

``server`` is the listening address (``dns://10.96.0.10:53``), ``zone`` the cluster domain
(``cluster.local.``) for names in it and ``.`` for the rest (what is forwarded), ``family`` 1 for
IPv4 and 2 for IPv6, ``type`` the query type (``A``, ``AAAA``, ``SRV``, …; ``other`` beyond
CoreDNS' list), ``plugin`` ``kubernetes`` or ``forward`` as CoreDNS' plugins would say. ``view``
is always empty (kubepy has no views).

Recording reads the query type and name from the wire (no parsing into a message: the answer
cache exists to skip that) and the rcode from the reply's header.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

from kubepy.metrics import CollectorRegistry

__all__ = ["DNSMetrics"]

# CoreDNS: ExponentialBuckets(0.00025, 2, 16).
DURATION_BUCKETS = tuple(0.00025 * 2 ** i for i in range(16))
_TYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
          35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 64: "SVCB",
          65: "HTTPS", 252: "AXFR", 255: "ANY", 257: "CAA", 251: "IXFR"}
_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
           7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"}


def _wire_name(domain: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode().lower() for label in domain.strip(".").split(".") if label)


def question(wire: bytes) -> tuple[bytes, int] | None:
    """The query's name (wire form, lower case, no root label) and type; None if it has none."""
    i = 12
    try:
        while (n := wire[i]) != 0:
            if n >= 0xC0:   # a compression pointer: no query uses one
                return None
            i += n + 1
        return wire[12:i].lower(), int.from_bytes(wire[i + 1:i + 3], "big")
    except IndexError:
        return None


class DNSMetrics:
    def __init__(self, registry: CollectorRegistry, *, domain: str = "cluster.local") -> None:
        self.zone = domain.strip(".") + "."
        self._suffix = _wire_name(domain)
        self.requests = Counter("coredns_dns_requests", "Counter of DNS requests made per zone, protocol and "
                                "family.", ["server", "zone", "view", "proto", "family", "type"], registry=registry)
        self.responses = Counter("coredns_dns_responses", "Counter of response status codes.",
                                 ["server", "zone", "view", "rcode", "plugin"], registry=registry)
        self.durations = Histogram("coredns_dns_request_duration_seconds", "Histogram of the time (in seconds) "
                                   "each request took per zone.", ["server", "zone", "view", "type"],
                                   buckets=DURATION_BUCKETS, registry=registry)
        self._children: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}

    def observe(self, server: str, proto: str, family: str, query: bytes, reply: bytes | None,
                seconds: float) -> None:
        """One answered (or dropped: ``reply`` None) query."""
        q = question(query)
        if q is None:
            zone, qtype = ".", "other"
        else:
            name, code = q
            zone = self.zone if name.endswith(self._suffix) else "."
            qtype = _TYPES.get(code, "other")
        rcode = _RCODES.get(reply[3] & 0x0F, str(reply[3] & 0x0F)) if reply is not None and len(reply) > 3 else ""
        key = (server, zone, proto, family, qtype, rcode)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(server, zone, "", proto, family, qtype),
                self.responses.labels(server, zone, "", rcode, "kubernetes" if zone != "." else "forward")
                if rcode else None,
                self.durations.labels(server, zone, "", qtype))
        children[0].inc()
        if children[1] is not None:
            children[1].inc()
        children[2].observe(seconds)
