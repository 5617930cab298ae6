"""ClusterRecords: tables of (name, type) -> (rcode, answers), and updates."""

from __future__ import annotations

import dns.rcode
import dns.rdatatype
import pytest

from kubepy.dns.records import ClusterRecords, dashed, render_service

Z = "cluster.local."


def service(name, ns="default", *, cluster_ip="10.96.0.20", ports=(("http", 80, "TCP"),), type_=None,
            external_name=None):
    spec = {"clusterIP": cluster_ip, "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]}
    if cluster_ip != "None":
        spec["clusterIPs"] = [cluster_ip]
    if type_:
        spec["type"] = type_
    if external_name:
        spec["externalName"] = external_name
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def endpoints(name, ns="default", *, ready=(), not_ready=(), ports=(("http", 8080, "TCP"),), slice_name=None):
    """The EndpointSlice of Service ``name``; ready/not_ready: IPs or (ip, hostname) pairs."""
    def endpoint(a, is_ready):
        ep = {"addresses": [a[0] if isinstance(a, tuple) else a], "conditions": {"ready": is_ready}}
        if isinstance(a, tuple):
            ep["hostname"] = a[1]
        return ep
    return {"metadata": {"name": slice_name or f"{name}-abcde", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": [endpoint(a, True) for a in ready] + [endpoint(a, False) for a in not_ready],
            "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]}


def answer(records, qname, qtype):
    """(rcode text, sorted answer rdata texts, authority types) or None."""
    result = records.lookup(qname, dns.rdatatype.from_text(qtype))
    if result is None:
        return None
    rdatas = sorted(f"{dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}"
                    for rrset in result.answers for rd in rrset)
    return dns.rcode.to_text(result.rcode), rdatas, [dns.rdatatype.to_text(r.rdtype) for r in result.authority]


@pytest.fixture
def records():
    r = ClusterRecords(domain="cluster.local")
    r.set_service(service("web"))
    r.set_endpoint_slice(endpoints("web", ready=["10.244.1.5"]))
    r.set_service(service("dnsy", "kube-system", cluster_ip="10.96.0.10",
                          ports=(("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"))))
    r.set_service(service("db", cluster_ip="None", ports=(("pg", 5432, "TCP"),)))
    r.set_endpoint_slice(endpoints("db", ready=[("10.244.1.7", "db-0"), "10.244.2.8"], not_ready=["10.244.3.9"],
                              ports=(("pg", 5432, "TCP"),)))
    r.set_service(service("ext", type_="ExternalName", cluster_ip="", external_name="example.org"))
    r.set_service(service("alias", type_="ExternalName", cluster_ip="", external_name=f"web.default.svc.{Z}"))
    return r


CASES = [
    # ClusterIP service
    ("web.default.svc.cluster.local", "A", ("NOERROR", ["A 10.96.0.20"], [])),
    ("WEB.Default.svc.cluster.local.", "A", ("NOERROR", ["A 10.96.0.20"], [])),
    ("web.default.svc.cluster.local", "AAAA", ("NOERROR", [], ["SOA"])),
    ("web.default.svc.cluster.local", "TXT", ("NOERROR", [], ["SOA"])),
    ("_http._tcp.web.default.svc.cluster.local", "SRV",
     ("NOERROR", ["SRV 0 100 80 web.default.svc.cluster.local."], [])),
    ("web.default.svc.cluster.local", "SRV", ("NOERROR", ["SRV 0 100 80 web.default.svc.cluster.local."], [])),
    ("_http._udp.web.default.svc.cluster.local", "SRV", ("NXDOMAIN", [], ["SOA"])),
    ("_dns._udp.dnsy.kube-system.svc.cluster.local", "SRV",
     ("NOERROR", ["SRV 0 100 53 dnsy.kube-system.svc.cluster.local."], [])),
    ("_dns-tcp._tcp.dnsy.kube-system.svc.cluster.local", "SRV",
     ("NOERROR", ["SRV 0 100 53 dnsy.kube-system.svc.cluster.local."], [])),
    # endpoints of a ClusterIP service get no names of their own
    ("10-244-1-5.web.default.svc.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    # headless: ready endpoints only
    ("db.default.svc.cluster.local", "A", ("NOERROR", ["A 10.244.1.7", "A 10.244.2.8"], [])),
    ("db-0.db.default.svc.cluster.local", "A", ("NOERROR", ["A 10.244.1.7"], [])),
    ("10-244-2-8.db.default.svc.cluster.local", "A", ("NOERROR", ["A 10.244.2.8"], [])),
    ("10-244-3-9.db.default.svc.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("_pg._tcp.db.default.svc.cluster.local", "SRV",
     ("NOERROR", ["SRV 0 50 5432 10-244-2-8.db.default.svc.cluster.local.",
                  "SRV 0 50 5432 db-0.db.default.svc.cluster.local."], [])),
    # ExternalName
    ("ext.default.svc.cluster.local", "A", ("NOERROR", ["CNAME example.org."], [])),
    ("ext.default.svc.cluster.local", "CNAME", ("NOERROR", ["CNAME example.org."], [])),
    ("alias.default.svc.cluster.local", "A",
     ("NOERROR", ["A 10.96.0.20", "CNAME web.default.svc.cluster.local."], [])),
    # PTR: ClusterIPs and headless endpoints; unknown IPs are not ours
    ("20.0.96.10.in-addr.arpa", "PTR", ("NOERROR", ["PTR web.default.svc.cluster.local."], [])),
    ("7.1.244.10.in-addr.arpa", "PTR", ("NOERROR", ["PTR db-0.db.default.svc.cluster.local."], [])),
    ("5.1.244.10.in-addr.arpa", "PTR", None),
    ("1.0.0.127.in-addr.arpa", "PTR", None),
    # pods insecure
    ("10-244-1-5.default.pod.cluster.local", "A", ("NOERROR", ["A 10.244.1.5"], [])),
    ("10-244-1-5.anything.pod.cluster.local", "A", ("NOERROR", ["A 10.244.1.5"], [])),
    ("10-244-1-5.default.pod.cluster.local", "AAAA", ("NOERROR", [], ["SOA"])),
    ("fd00--5.default.pod.cluster.local", "AAAA", ("NOERROR", ["AAAA fd00::5"], [])),
    ("10-244-1.default.pod.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("not-an-ip.default.pod.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("default.pod.cluster.local", "A", ("NOERROR", [], ["SOA"])),
    # missing names and empty non-terminals
    ("nope.default.svc.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("web.nope.svc.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("nope.svc.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("nope.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("google.com.default.svc.cluster.local", "A", ("NXDOMAIN", [], ["SOA"])),
    ("default.svc.cluster.local", "A", ("NOERROR", [], ["SOA"])),
    ("svc.cluster.local", "A", ("NOERROR", [], ["SOA"])),
    ("_tcp.web.default.svc.cluster.local", "A", ("NOERROR", [], ["SOA"])),
    ("cluster.local", "A", ("NOERROR", [], ["SOA"])),
    ("cluster.local", "NS", ("NOERROR", ["NS ns.dns.cluster.local."], [])),
    # not ours: the server forwards
    ("example.com", "A", None),
    ("local", "SOA", None),
    ("xcluster.local", "A", None),
]


@pytest.mark.parametrize("qname,qtype,expected", CASES, ids=[f"{q}/{t}" for q, t, _ in CASES])
def test_lookup(records, qname, qtype, expected):
    assert answer(records, qname, qtype) == expected


def test_soa_at_apex_and_serial_bumps(records):
    before = records.lookup("cluster.local", dns.rdatatype.SOA).answers[0][0]
    assert (before.mname.to_text(), before.rname.to_text(), before.minimum) == \
        ("ns.dns.cluster.local.", "hostmaster.cluster.local.", 5)
    records.set_service(service("new", cluster_ip="10.96.0.99"))
    after = records.lookup("cluster.local", dns.rdatatype.SOA).answers[0][0]
    assert after.serial > before.serial
    serial = after.serial
    records.set_service(service("new", cluster_ip="10.96.0.99"))  # no change, no bump
    assert records.lookup("cluster.local", dns.rdatatype.SOA).answers[0][0].serial == serial


def test_ttl_is_5(records):
    assert records.lookup("web.default.svc.cluster.local", dns.rdatatype.A).answers[0].ttl == 5


def test_srv_additional_addresses(records):
    result = records.lookup("_pg._tcp.db.default.svc.cluster.local", dns.rdatatype.SRV)
    extra = sorted(rrset.to_text() for rrset in records.additional(result.answers))
    assert extra == ["10-244-2-8.db.default.svc.cluster.local. 5 IN A 10.244.2.8",
                     "db-0.db.default.svc.cluster.local. 5 IN A 10.244.1.7"]
    result = records.lookup("_http._tcp.web.default.svc.cluster.local", dns.rdatatype.SRV)
    assert [r.to_text() for r in records.additional(result.answers)] == \
        ["web.default.svc.cluster.local. 5 IN A 10.96.0.20"]


def test_endpoint_changes_update_headless_answers(records):
    records.set_endpoint_slice(endpoints("db", ready=["10.244.2.8", "10.244.3.9"], ports=(("pg", 5432, "TCP"),)))
    assert answer(records, "db.default.svc.cluster.local", "A") == \
        ("NOERROR", ["A 10.244.2.8", "A 10.244.3.9"], [])
    assert answer(records, "db-0.db.default.svc.cluster.local", "A")[0] == "NXDOMAIN"
    assert answer(records, "7.1.244.10.in-addr.arpa", "PTR") is None
    assert answer(records, "9.3.244.10.in-addr.arpa", "PTR") == \
        ("NOERROR", ["PTR 10-244-3-9.db.default.svc.cluster.local."], [])
    records.delete_endpoint_slice(endpoints("db"))
    # The service still exists: its name does, with nothing to answer.
    assert answer(records, "db.default.svc.cluster.local", "A") == ("NOERROR", [], ["SOA"])
    assert answer(records, "9.3.244.10.in-addr.arpa", "PTR") is None


def test_service_changes(records):
    records.set_service(service("web", cluster_ip="10.96.0.21", ports=(("https", 443, "TCP"),)))
    assert answer(records, "web.default.svc.cluster.local", "A") == ("NOERROR", ["A 10.96.0.21"], [])
    assert answer(records, "20.0.96.10.in-addr.arpa", "PTR") is None
    assert answer(records, "_http._tcp.web.default.svc.cluster.local", "SRV")[0] == "NXDOMAIN"
    assert answer(records, "_https._tcp.web.default.svc.cluster.local", "SRV")[0] == "NOERROR"
    records.delete_service(service("web"))
    assert answer(records, "web.default.svc.cluster.local", "A") == ("NXDOMAIN", [], ["SOA"])
    assert answer(records, "21.0.96.10.in-addr.arpa", "PTR") is None
    # default still holds db, ext, alias: still an empty non-terminal
    assert answer(records, "default.svc.cluster.local", "A") == ("NOERROR", [], ["SOA"])


def test_namespace_empties_out():
    r = ClusterRecords()
    r.set_service(service("only", "lonely"))
    assert answer(r, "lonely.svc.cluster.local", "A") == ("NOERROR", [], ["SOA"])
    r.delete_service(service("only", "lonely"))
    assert answer(r, "lonely.svc.cluster.local", "A") == ("NXDOMAIN", [], ["SOA"])
    assert answer(r, "_http._tcp.only.lonely.svc.cluster.local", "SRV")[0] == "NXDOMAIN"


def test_endpoints_before_service():
    r = ClusterRecords()
    r.set_endpoint_slice(endpoints("late", ready=["10.244.1.1"]))
    assert answer(r, "late.default.svc.cluster.local", "A")[0] == "NXDOMAIN"
    r.set_service(service("late", cluster_ip="None"))
    assert answer(r, "late.default.svc.cluster.local", "A") == ("NOERROR", ["A 10.244.1.1"], [])


def test_shared_endpoint_ip_gets_a_ptr_per_service():
    r = ClusterRecords()
    for name in ("a", "b"):
        r.set_service(service(name, cluster_ip="None"))
        r.set_endpoint_slice(endpoints(name, ready=["10.244.1.1"]))
    assert answer(r, "1.1.244.10.in-addr.arpa", "PTR") == \
        ("NOERROR", ["PTR 10-244-1-1.a.default.svc.cluster.local.",
                     "PTR 10-244-1-1.b.default.svc.cluster.local."], [])
    r.delete_service(service("a"))
    assert answer(r, "1.1.244.10.in-addr.arpa", "PTR") == \
        ("NOERROR", ["PTR 10-244-1-1.b.default.svc.cluster.local."], [])


def test_other_domain():
    r = ClusterRecords(domain="kube.example")
    r.set_service(service("web"))
    assert answer(r, "web.default.svc.kube.example", "A") == ("NOERROR", ["A 10.96.0.20"], [])
    assert answer(r, "web.default.svc.cluster.local", "A") is None


def test_service_without_cluster_ip_yet():
    assert render_service(service("x", cluster_ip=""), [], zone=Z)["x.default.svc.cluster.local."].get(
        dns.rdatatype.A) is None


def test_dashed():
    assert dashed("10.244.1.5") == "10-244-1-5"
    assert dashed("fd00::1") == "fd00--1"


def test_headless_names_come_from_every_slice_of_the_service():
    r = ClusterRecords()
    r.set_service(service("db", cluster_ip="None"))
    r.set_endpoint_slice(endpoints("db", ready=[("10.244.1.7", "db-0")]))
    r.set_endpoint_slice(endpoints("db", ready=[("10.244.2.8", "db-1"), ("10.244.1.7", "db-0")], slice_name="db-2"))
    bare = endpoints("db", slice_name="db-3")
    bare["endpoints"] = [{"addresses": ["10.244.3.9"]}]  # conditions unset: ready
    r.set_endpoint_slice(bare)
    r.set_endpoint_slice({**endpoints("other", ready=["10.244.4.4"]), "metadata": {"name": "x", "namespace": "default"}})
    assert answer(r, "db.default.svc.cluster.local", "A") == \
        ("NOERROR", ["A 10.244.1.7", "A 10.244.2.8", "A 10.244.3.9"], [])
    r.delete_endpoint_slice(endpoints("db", slice_name="db-2"))
    assert answer(r, "db.default.svc.cluster.local", "A") == ("NOERROR", ["A 10.244.1.7", "A 10.244.3.9"], [])
    assert answer(r, "db-1.db.default.svc.cluster.local", "A")[0] == "NXDOMAIN"
