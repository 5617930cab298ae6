"""A StatefulSet's pods by name in cluster DNS, in process: the pods the statefulset
controller makes (hostname = pod name, subdomain = serviceName), the EndpointSlice the
endpointslice controller builds for their headless Service (endpoints carry the hostname
only when the subdomain names that Service), and the records and answers of cluster
DNS: ``web-0.nginx.default.svc.cluster.local`` A, and SRV for each named port whose
targets are those names."""

from __future__ import annotations

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype

from kubepy.controllers.endpointslice import desired_endpoints
from kubepy.controllers.endpointslices import port_list
from kubepy.controllers.statefulset import new_pod
from kubepy.dns.records import ClusterRecords
from kubepy.dns.server import DNSServer
from kubepy.kinds.validation import default_object

LOOP = "127.0.0.1"
ZONE = "nginx.default.svc.cluster.local."


def statefulset(service: str = "nginx") -> dict:
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "web", "namespace": "default", "uid": "uid-web"},
           "spec": {"replicas": 2, "serviceName": service, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                        {"name": "c", "image": "busybox:1.36",
                         "ports": [{"name": "web", "containerPort": 8080}, {"name": "peer", "containerPort": 7000}]}]}}}}
    default_object("statefulsets", sts)
    return sts


def running(pod: dict, ip: str, *, ready: bool = True) -> dict:
    pod["metadata"]["uid"] = f"uid-{pod['metadata']['name']}"
    pod["spec"]["nodeName"] = "n1"
    pod["status"] = {"phase": "Running", "podIP": ip,
                     "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return pod


def headless(name: str = "nginx") -> dict:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"},
                     "ports": [{"name": "web", "port": 80, "targetPort": "web", "protocol": "TCP"},
                               {"name": "peer", "port": 7000, "targetPort": "peer", "protocol": "TCP"}]}}


def cluster_records(pods: list[dict], service: dict) -> ClusterRecords:
    records = ClusterRecords(domain="cluster.local")
    records.set_service(service)
    for i, (ports, eps) in enumerate(desired_endpoints(service, pods).items()):
        records.set_endpoint_slice({"metadata": {"name": f"s{i}", "namespace": "default",
                                                 "labels": {"kubernetes.io/service-name": service["metadata"]["name"]}},
                                    "addressType": "IPv4", "ports": port_list(ports), "endpoints": eps})
    records.ready = True
    return records


def texts(records: ClusterRecords, qname: str, qtype: str) -> tuple[str, list[str]]:
    result = records.lookup(qname, dns.rdatatype.from_text(qtype))
    assert result is not None
    return dns.rcode.to_text(result.rcode), sorted(rd.to_text() for rrset in result.answers for rd in rrset)


def test_endpoint_addresses_carry_the_pods_hostnames():
    sts = statefulset()
    pods = [running(new_pod(sts, sts["spec"]["template"], i, "web-1"), f"10.244.1.{10 + i}") for i in range(2)]
    [eps] = desired_endpoints(headless(), pods).values()
    assert [(e["addresses"][0], e["hostname"]) for e in eps] == [("10.244.1.10", "web-0"), ("10.244.1.11", "web-1")]
    # the same pods seen by a Service they are not the subdomain of: no hostname
    [other] = desired_endpoints(headless("other"), pods).values()
    assert all("hostname" not in e for e in other)


def test_each_pod_has_its_own_name_and_srv_records_point_at_them():
    sts = statefulset()
    pods = [running(new_pod(sts, sts["spec"]["template"], 0, "r"), "10.244.1.10"),
            running(new_pod(sts, sts["spec"]["template"], 1, "r"), "10.244.2.11"),
            running(new_pod(sts, sts["spec"]["template"], 2, "r"), "10.244.2.12", ready=False)]
    records = cluster_records(pods, headless())
    assert texts(records, f"web-0.{ZONE}", "A") == ("NOERROR", ["10.244.1.10"])
    assert texts(records, f"web-1.{ZONE}", "A") == ("NOERROR", ["10.244.2.11"])
    assert texts(records, f"web-2.{ZONE}", "A")[0] == "NXDOMAIN"   # not ready: not published
    assert texts(records, ZONE, "A") == ("NOERROR", ["10.244.1.10", "10.244.2.11"])
    assert texts(records, f"_web._tcp.{ZONE}", "SRV") == (
        "NOERROR", [f"0 50 8080 web-0.{ZONE}", f"0 50 8080 web-1.{ZONE}"])  # a headless SRV names the endpoint port
    assert texts(records, f"_peer._tcp.{ZONE}", "SRV") == (
        "NOERROR", [f"0 50 7000 web-0.{ZONE}", f"0 50 7000 web-1.{ZONE}"])
    assert texts(records, "11.2.244.10.in-addr.arpa.", "PTR") == ("NOERROR", [f"web-1.{ZONE}"])


async def test_the_dns_server_answers_a_pod_name_and_srv_with_addresses():
    sts = statefulset()
    pods = [running(new_pod(sts, sts["spec"]["template"], i, "r"), f"10.244.1.{10 + i}") for i in range(2)]
    async with DNSServer(cluster_records(pods, headless()), listen=[(LOOP, 0)], upstreams=[]) as srv:
        host, port = srv.addresses[0]
        reply = await dns.asyncquery.udp(dns.message.make_query(f"web-1.{ZONE}", "A"), host, port=port, timeout=3)
        assert [rd.to_text() for rrset in reply.answer for rd in rrset] == ["10.244.1.11"]
        reply = await dns.asyncquery.udp(dns.message.make_query(f"_web._tcp.{ZONE}", "SRV"), host, port=port,
                                         timeout=3)
        assert sorted(rd.target.to_text() for rrset in reply.answer for rd in rrset) == [f"web-0.{ZONE}",
                                                                                        f"web-1.{ZONE}"]
        assert sorted(rd.to_text() for rrset in reply.additional for rd in rrset) == ["10.244.1.10", "10.244.1.11"]
