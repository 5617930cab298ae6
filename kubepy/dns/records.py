"""``ClusterRecords``: the cluster's DNS names, from Services and EndpointSlices.

Pure: no sockets, no API. The semantics are CoreDNS's ``kubernetes`` plugin
(with ``pods insecure`` and ``fallthrough in-addr.arpa ip6.arpa``)::

    <svc>.<ns>.svc.<zone>                  A/AAAA  ClusterIP(s); headless: every ready endpoint IP
                                           CNAME   ExternalName services
                                           SRV     every port, target the service (headless: each endpoint)
    <host>.<svc>.<ns>.svc.<zone>           A/AAAA  a headless endpoint; <host> is its hostname or dashed IP
    _<port>._<proto>.<svc>.<ns>.svc.<zone> SRV     one named port
    <rev>.in-addr.arpa / ip6.arpa          PTR     ClusterIPs and headless endpoint IPs
    a-b-c-d.<ns>.pod.<zone>                A       a.b.c.d, for any well-formed address

A name under the zone that does not exist is NXDOMAIN, an existing name
(or an empty non-terminal such as ``<ns>.svc.<zone>``) asked for another
type is NOERROR with no answer; both carry the zone's SOA in authority.
``lookup`` returns None for names that are not ours - outside the zone, or
a reverse name of an IP we do not know - and the server forwards those.

Updates are incremental: ``set_*``/``delete_*`` re-render the records of
one Service (its own object plus its EndpointSlices, found by their
``kubernetes.io/service-name`` label) and swap them into the
index, so a lookup is a dict hit. Record names are kept as lowercase
absolute text ("web.default.svc.cluster.local.").
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from typing import Any, NamedTuple

import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.SOA
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.reversename
import dns.rrset

TTL = 5  # CoreDNS's default for the kubernetes plugin; also the negative TTL (SOA minimum)
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 7200, 1800, 86400
REVERSE_SUFFIXES = (".in-addr.arpa.", ".ip6.arpa.")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

IN = dns.rdataclass.IN
A, AAAA, CNAME, NS, PTR, SOA, SRV, ANY = (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME,
                                          dns.rdatatype.NS, dns.rdatatype.PTR, dns.rdatatype.SOA,
                                          dns.rdatatype.SRV, dns.rdatatype.ANY)

# The records one Service puts under one name, by type.
Entry = dict[dns.rdatatype.RdataType, list[dns.rdata.Rdata]]


class Lookup(NamedTuple):
    rcode: dns.rcode.Rcode
    answers: list[dns.rrset.RRset]
    authority: list[dns.rrset.RRset]


# -- rendering one Service (pure) ---------------------------------------------
def service_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta['name']}"


def slice_service_key(endpoint_slice: dict[str, Any]) -> str | None:
    """"namespace/service" of an EndpointSlice, from its ``kubernetes.io/service-name`` label."""
    meta = endpoint_slice.get("metadata") or {}
    service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return f"{meta.get('namespace') or 'default'}/{service}" if service else None


def is_headless(service: dict[str, Any]) -> bool:
    return (service.get("spec") or {}).get("clusterIP") == "None"


def dashed(ip: str) -> str:
    """The DNS label CoreDNS makes of an IP: 10.244.1.5 -> 10-244-1-5, fd00::1 -> fd00--1."""
    return ip.replace(".", "-").replace(":", "-")


def reverse_name(ip: str) -> str:
    return dns.reversename.from_address(ip).to_text().lower()


def render_service(service: dict[str, Any], slices: Iterable[dict[str, Any]], *, zone: str) -> dict[str, Entry]:
    """Every record ``service`` (with its EndpointSlices) puts in the zone,
    reverse records included: name -> type -> rdatas."""
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    base = f"{meta['name']}.{meta.get('namespace') or 'default'}.svc.{_absolute(zone)}".lower()
    out: dict[str, Entry] = {base: {}}  # the name exists even with nothing to answer

    if spec.get("type") == "ExternalName":
        target = (spec.get("externalName") or "").strip()
        if target:
            _add(out, base, dns.rdtypes.ANY.CNAME.CNAME(IN, CNAME, dns.name.from_text(target)))
        return out

    srv: dict[tuple[str, str], list[tuple[int, str]]] = {}  # (port name, protocol) -> [(port, target)]
    if is_headless(service):
        seen: set[tuple[str, str]] = set()  # an endpoint moving between slices is listed twice for a moment
        for s in slices:
            ports = s.get("ports") or []
            for endpoint in s.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready") is False:
                    continue  # ready nil means ready (discovery/v1)
                for text in endpoint.get("addresses") or []:
                    ip = _ip(text)
                    if ip is None:
                        continue
                    host = f"{(endpoint.get('hostname') or dashed(str(ip))).lower()}.{base}"
                    if (str(ip), host) in seen:
                        continue
                    seen.add((str(ip), host))
                    _add(out, base, _address(ip))
                    _add(out, host, _address(ip))
                    _add(out, reverse_name(str(ip)), _ptr(host))
                    for port in ports:
                        if port.get("port") is not None:
                            srv.setdefault((port.get("name") or "", port.get("protocol") or "TCP"), []).append(
                                (int(port["port"]), host))
    else:
        for text in spec.get("clusterIPs") or [spec.get("clusterIP")]:
            ip = _ip(text)
            if ip is not None:
                _add(out, base, _address(ip))
                _add(out, reverse_name(str(ip)), _ptr(base))
        for port in spec.get("ports") or []:
            srv.setdefault((port.get("name") or "", port.get("protocol") or "TCP"), []).append(
                (int(port["port"]), base))

    for (port_name, protocol), targets in sorted(srv.items()):
        weight = max(1, 100 // len(targets))  # spread evenly, as CoreDNS does
        records = [dns.rdtypes.IN.SRV.SRV(IN, SRV, 0, weight, port, dns.name.from_text(target))
                   for port, target in targets]
        for record in records:
            _add(out, base, record)
            if port_name:
                _add(out, f"_{port_name}._{protocol}.{base}".lower(), record)
    return out


def _add(out: dict[str, Entry], name: str, rdata: dns.rdata.Rdata) -> None:
    out.setdefault(name, {}).setdefault(rdata.rdtype, []).append(rdata)


def _ip(text: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text) if text and text != "None" else None
    except ValueError:
        return None


def _address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> dns.rdata.Rdata:
    if ip.version == 4:
        return dns.rdtypes.IN.A.A(IN, A, str(ip))
    return dns.rdtypes.IN.AAAA.AAAA(IN, AAAA, str(ip))


def _ptr(target: str) -> dns.rdata.Rdata:
    return dns.rdtypes.ANY.PTR.PTR(IN, PTR, dns.name.from_text(target))


def _absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."


# -- the index ----------------------------------------------------------------
class ClusterRecords:
    """The index every DNS answer comes from. One event loop owns it (no lock):
    informer handlers call ``set_*``/``delete_*``, the server calls ``lookup``."""

    def __init__(self, *, domain: str = "cluster.local") -> None:
        self.zone = _absolute(domain.lower())
        self.ready = False  # set by whoever feeds it, once its informers have listed
        self.serial = 1  # bumps on every change: the SOA serial
        self._services: dict[str, dict[str, Any]] = {}
        self._slices: dict[str, dict[str, dict[str, Any]]] = {}  # service key -> slice name -> slice
        self._by_service: dict[str, dict[str, Entry]] = {}
        self._contributions: dict[str, dict[str, Entry]] = {}  # name -> service key -> its records there
        self._rrsets: dict[str, dict[dns.rdatatype.RdataType, dns.rrset.RRset]] = {}
        self._ancestors: Counter[str] = Counter()  # empty non-terminals inside the zone
        self._zone_name = dns.name.from_text(self.zone)
        self._soa_cache: tuple[int, dns.rrset.RRset] | None = None
        self._ns = _rrset(self.zone, [dns.rdtypes.ANY.NS.NS(IN, NS, dns.name.from_text("ns.dns." + self.zone))])

    # -- updates ----------------------------------------------------------------
    def set_service(self, service: dict[str, Any]) -> None:
        key = service_key(service)
        self._services[key] = service
        self._rerender(key)

    def delete_service(self, service: dict[str, Any]) -> None:
        key = service_key(service)
        self._services.pop(key, None)
        self._rerender(key)

    def set_endpoint_slice(self, endpoint_slice: dict[str, Any]) -> None:
        key = slice_service_key(endpoint_slice)
        if key is None:
            return
        self._slices.setdefault(key, {})[endpoint_slice["metadata"]["name"]] = endpoint_slice
        self._rerender(key)

    def delete_endpoint_slice(self, endpoint_slice: dict[str, Any]) -> None:
        key = slice_service_key(endpoint_slice)
        if key is None:
            return
        own = self._slices.get(key, {})
        own.pop(endpoint_slice["metadata"]["name"], None)
        if not own:
            self._slices.pop(key, None)
        self._rerender(key)

    @property
    def service_count(self) -> int:
        return len(self._services)

    def _rerender(self, key: str) -> None:
        service = self._services.get(key)
        new = render_service(service, self._slices.get(key, {}).values(), zone=self.zone) if service else {}
        old = self._by_service.pop(key, {})
        if new == old:
            if new:
                self._by_service[key] = new
            return
        if new:
            self._by_service[key] = new
        for name, entry in old.items():
            if new.get(name) != entry:
                contributions = self._contributions[name]
                del contributions[key]
                if not contributions:
                    del self._contributions[name]
                    self._count_ancestors(name, -1)
        for name, entry in new.items():
            if old.get(name) != entry:
                contributions = self._contributions.setdefault(name, {})
                if not contributions:
                    self._count_ancestors(name, +1)
                contributions[key] = entry
        for name in old.keys() | new.keys():
            self._compile(name)
        self.serial += 1

    def _compile(self, name: str) -> None:
        contributions = self._contributions.get(name)
        if not contributions:
            self._rrsets.pop(name, None)
            return
        merged: dict[dns.rdatatype.RdataType, list[dns.rdata.Rdata]] = {}
        for key in sorted(contributions):
            for rdtype, rdatas in contributions[key].items():
                merged.setdefault(rdtype, []).extend(rdatas)
        self._rrsets[name] = {rdtype: _rrset(name, rdatas) for rdtype, rdatas in merged.items()}

    def _count_ancestors(self, name: str, delta: int) -> None:
        if not name.endswith("." + self.zone):
            return  # reverse names: never empty non-terminals of ours
        labels = name[: -len(self.zone) - 1].split(".")
        for i in range(1, len(labels)):
            ancestor = ".".join(labels[i:]) + "." + self.zone
            self._ancestors[ancestor] += delta
            if self._ancestors[ancestor] <= 0:
                del self._ancestors[ancestor]

    # -- answers ----------------------------------------------------------------
    def is_in_zone(self, qname: dns.name.Name | str) -> bool:
        name = _normalize(qname)
        return name == self.zone or name.endswith("." + self.zone)

    def lookup(self, qname: dns.name.Name | str, qtype: int) -> Lookup | None:
        """The answer for ``qname``/``qtype``, or None when the name is not ours."""
        name = _normalize(qname)
        qtype = dns.rdatatype.RdataType.make(qtype)
        rrsets = self._rrsets.get(name)
        if rrsets is not None:
            return self._existing(rrsets, qtype)
        if not (name == self.zone or name.endswith("." + self.zone)):
            return None  # elsewhere, or a reverse name we do not know: fall through
        if name == self.zone:
            if qtype in (SOA, ANY):
                return Lookup(dns.rcode.NOERROR, [self.soa()], [])
            if qtype == NS:
                return Lookup(dns.rcode.NOERROR, [self._ns], [])
            return self._nodata()
        labels = name[: -len(self.zone) - 1].split(".")
        if labels[-1] == "pod":
            return self._pod(name, labels[:-1], qtype)
        if labels == ["svc"] or name in self._ancestors:
            return self._nodata()
        return Lookup(dns.rcode.NXDOMAIN, [], [self.soa()])

    def additional(self, answers: list[dns.rrset.RRset]) -> list[dns.rrset.RRset]:
        """Address records for the in-zone targets of SRV answers."""
        out: list[dns.rrset.RRset] = []
        seen: set[str] = set()
        for rrset in answers:
            if rrset.rdtype != SRV:
                continue
            for rdata in rrset:
                target = rdata.target.to_text().lower()
                if target in seen:
                    continue
                seen.add(target)
                found = self._rrsets.get(target) or {}
                out.extend(found[t] for t in (A, AAAA) if t in found)
        return out

    def soa(self) -> dns.rrset.RRset:
        if self._soa_cache is None or self._soa_cache[0] != self.serial:
            rdata = dns.rdtypes.ANY.SOA.SOA(IN, SOA, dns.name.from_text("ns.dns." + self.zone),
                                            dns.name.from_text("hostmaster." + self.zone), self.serial,
                                            SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, TTL)
            self._soa_cache = (self.serial, _rrset(self.zone, [rdata]))
        return self._soa_cache[1]

    def _existing(self, rrsets: dict[dns.rdatatype.RdataType, dns.rrset.RRset],
                  qtype: dns.rdatatype.RdataType) -> Lookup:
        found = rrsets.get(qtype)
        if found is not None:
            return Lookup(dns.rcode.NOERROR, [found], [])
        if qtype == ANY and rrsets:
            return Lookup(dns.rcode.NOERROR, list(rrsets.values()), [])
        cname = rrsets.get(CNAME)
        if cname is not None:
            answers = [cname]
            target = cname[0].target.to_text().lower()
            chased = self._rrsets.get(target) or {}
            if qtype in chased:  # an in-zone target: answer it too, the client need not ask again
                answers.append(chased[qtype])
            return Lookup(dns.rcode.NOERROR, answers, [])
        return self._nodata()

    def _pod(self, name: str, labels: list[str], qtype: dns.rdatatype.RdataType) -> Lookup:
        if len(labels) < 2:
            return self._nodata()  # pod.<zone> and <ns>.pod.<zone>: empty non-terminals
        if len(labels) > 2:
            return Lookup(dns.rcode.NXDOMAIN, [], [self.soa()])
        ip = _ip(labels[0].replace("-", ".")) or _ip(labels[0].replace("-", ":"))
        if ip is None:
            return Lookup(dns.rcode.NXDOMAIN, [], [self.soa()])
        record = _address(ip)
        if qtype in (record.rdtype, ANY):
            return Lookup(dns.rcode.NOERROR, [_rrset(name, [record])], [])
        return self._nodata()

    def _nodata(self) -> Lookup:
        return Lookup(dns.rcode.NOERROR, [], [self.soa()])


def _normalize(qname: dns.name.Name | str) -> str:
    if isinstance(qname, dns.name.Name):
        return qname.to_text().lower()
    return _absolute(qname.lower())


def _rrset(name: str, rdatas: list[dns.rdata.Rdata]) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(dns.name.from_text(name), TTL, rdatas)
