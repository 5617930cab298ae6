"""rules: Services + Endpoints → iptables-restore text, compared as golden text (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from kubepy.proxy.rules import (
    BUILTIN_JUMPS,
    Endpoint,
    KernelState,
    NodeConfig,
    ServicePort,
    port_proto_hash,
    probability,
    render_full,
    render_partial,
    service_ports,
)

CONFIG = NodeConfig(cluster_cidr="10.244.0.0/16")
# A kernel that already has every jump: the payload then holds no -I lines.
JUMPED = KernelState(jumps=frozenset((t, c, target) for t, c, _, target in BUILTIN_JUMPS))


def svc(name: str, ports: list[dict[str, Any]], *, type_: str = "ClusterIP", ip: str = "10.96.0.20",
        affinity: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": type_, "clusterIP": ip, "ports": ports}
    if affinity:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": affinity}}
    return {"metadata": {"namespace": "ns", "name": name}, "spec": spec}


def eps(name: str, ips: list[str], ports: list[dict[str, Any]], not_ready: list[str] = (),
        terminating: list[str] = ()) -> dict[str, Any]:
    """One EndpointSlice of Service ``name``: ``terminating`` ones still serving."""
    endpoints = ([{"addresses": [i], "conditions": {"ready": True, "serving": True, "terminating": False}} for i in ips]
                 + [{"addresses": [i], "conditions": {"ready": False, "serving": False}} for i in not_ready]
                 + [{"addresses": [i], "conditions": {"ready": False, "serving": True, "terminating": True}}
                    for i in terminating])
    return {"metadata": {"namespace": "ns", "name": f"{name}-x7k2p", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints}


STATIC = set(render_full({}, CONFIG, kernel=JUMPED).text.splitlines())


def specific(text: str) -> list[str]:
    """The lines a case adds to an empty node's payload, in order."""
    return [line for line in text.splitlines() if line not in STATIC]


# -- one whole payload, literally ---------------------------------------------
FULL_CLUSTER_IP = """\
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-I OUTPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I FORWARD 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-I FORWARD 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I FORWARD 1 -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-I INPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-I OUTPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-I FORWARD 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-I INPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-HMALVVKA6APKJPPY - [0:0]
:KUBE-SEP-QR6MYR7CYITOXECY - [0:0]
-I POSTROUTING 1 -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-I OUTPUT 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 --dport 80 -j KUBE-SVC-HMALVVKA6APKJPPY
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SVC-HMALVVKA6APKJPPY -m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SVC-HMALVVKA6APKJPPY -m comment --comment "ns/web:http -> 10.244.1.5:8080" -j KUBE-SEP-QR6MYR7CYITOXECY
-A KUBE-SEP-QR6MYR7CYITOXECY -m comment --comment ns/web:http -s 10.244.1.5/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-QR6MYR7CYITOXECY -m comment --comment ns/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080
COMMIT
"""


def test_full_payload_of_one_cluster_ip_service() -> None:
    ports = service_ports([svc("web", [{"name": "http", "port": 80, "targetPort": 8080}])],
                          [eps("web", ["10.244.1.5"], [{"name": "http", "port": 8080}])])
    assert render_full(ports, CONFIG).text == FULL_CLUSTER_IP


# -- table of cases: the lines each adds ---------------------------------------
CASES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]] = {
    "node_port_two_endpoints": (
        [svc("web", [{"name": "http", "port": 80, "nodePort": 30080}], type_="NodePort")],
        [eps("web", ["10.244.2.7", "10.244.1.5"], [{"name": "http", "port": 8080}])],
        [
            ":KUBE-SVC-HMALVVKA6APKJPPY - [0:0]",
            ":KUBE-EXT-HMALVVKA6APKJPPY - [0:0]",
            ":KUBE-SEP-QR6MYR7CYITOXECY - [0:0]",
            ":KUBE-SEP-KBFL3OGIZJKX6G6O - [0:0]",
            '-A KUBE-SERVICES -m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 --dport 80 -j KUBE-SVC-HMALVVKA6APKJPPY',
            "-A KUBE-NODEPORTS -m comment --comment ns/web:http -m tcp -p tcp --dport 30080 -j KUBE-EXT-HMALVVKA6APKJPPY",
            '-A KUBE-SVC-HMALVVKA6APKJPPY -m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ',
            '-A KUBE-EXT-HMALVVKA6APKJPPY -m comment --comment "masquerade traffic for ns/web:http external destinations" -j KUBE-MARK-MASQ',
            "-A KUBE-EXT-HMALVVKA6APKJPPY -j KUBE-SVC-HMALVVKA6APKJPPY",
            '-A KUBE-SVC-HMALVVKA6APKJPPY -m comment --comment "ns/web:http -> 10.244.1.5:8080" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-QR6MYR7CYITOXECY',
            '-A KUBE-SVC-HMALVVKA6APKJPPY -m comment --comment "ns/web:http -> 10.244.2.7:8080" -j KUBE-SEP-KBFL3OGIZJKX6G6O',
            "-A KUBE-SEP-QR6MYR7CYITOXECY -m comment --comment ns/web:http -s 10.244.1.5/32 -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-QR6MYR7CYITOXECY -m comment --comment ns/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080",
            "-A KUBE-SEP-KBFL3OGIZJKX6G6O -m comment --comment ns/web:http -s 10.244.2.7/32 -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-KBFL3OGIZJKX6G6O -m comment --comment ns/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.2.7:8080",
        ],
    ),
    "no_ready_endpoints_reject": (
        [svc("web", [{"port": 80, "nodePort": 30080}], type_="NodePort")],
        [eps("web", [], [{"port": 8080}], not_ready=["10.244.1.5"])],
        [
            '-A KUBE-SERVICES -m comment --comment "ns/web has no endpoints" -m tcp -p tcp -d 10.96.0.20 --dport 80 -j REJECT --reject-with icmp-port-unreachable',
            '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns/web has no endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30080 -j REJECT --reject-with icmp-port-unreachable',
        ],
    ),
    "session_affinity": (
        [svc("web", [{"name": "http", "port": 80}], affinity=600)],
        [eps("web", ["10.244.1.5", "10.244.1.6"], [{"name": "http", "port": 8080}])],
        [
            ":KUBE-SVC-HMALVVKA6APKJPPY - [0:0]",
            ":KUBE-SEP-QR6MYR7CYITOXECY - [0:0]",
            ":KUBE-SEP-EWVHOWCW45GIPIG3 - [0:0]",
            '-A KUBE-SERVICES -m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 --dport 80 -j KUBE-SVC-HMALVVKA6APKJPPY',
            '-A KUBE-SVC-HMALVVKA6APKJPPY -m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ',
            '-A KUBE-SVC-HMALVVKA6APKJPPY -m comment --comment "ns/web:http -> 10.244.1.5:8080" -m recent --name KUBE-SEP-QR6MYR7CYITOXECY --rcheck --seconds 600 --reap -j KUBE-SEP-QR6MYR7CYITOXECY',
            '-A KUBE-SVC-HMALVVKA6APKJPPY -m comment --comment "ns/web:http -> 10.244.1.6:8080" -m recent --name KUBE-SEP-EWVHOWCW45GIPIG3 --rcheck --seconds 600 --reap -j KUBE-SEP-EWVHOWCW45GIPIG3',
            '-A KUBE-SVC-HMALVVKA6APKJPPY -m comment --comment "ns/web:http -> 10.244.1.5:8080" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-QR6MYR7CYITOXECY',
            '-A KUBE-SVC-HMALVVKA6APKJPPY -m comment --comment "ns/web:http -> 10.244.1.6:8080" -j KUBE-SEP-EWVHOWCW45GIPIG3',
            "-A KUBE-SEP-QR6MYR7CYITOXECY -m comment --comment ns/web:http -s 10.244.1.5/32 -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-QR6MYR7CYITOXECY -m comment --comment ns/web:http -m recent --name KUBE-SEP-QR6MYR7CYITOXECY --set -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080",
            "-A KUBE-SEP-EWVHOWCW45GIPIG3 -m comment --comment ns/web:http -s 10.244.1.6/32 -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-EWVHOWCW45GIPIG3 -m comment --comment ns/web:http -m recent --name KUBE-SEP-EWVHOWCW45GIPIG3 --set -m tcp -p tcp -j DNAT --to-destination 10.244.1.6:8080",
        ],
    ),
    "udp": (
        [svc("dns", [{"name": "dns", "port": 53, "protocol": "UDP"}], ip="10.96.0.10")],
        [eps("dns", ["10.244.1.9"], [{"name": "dns", "port": 5353, "protocol": "UDP"}])],
        [
            ":KUBE-SVC-NEXYWIMJL2KQZCDE - [0:0]",
            ":KUBE-SEP-NZGCTO2RFRBNOIKL - [0:0]",
            '-A KUBE-SERVICES -m comment --comment "ns/dns:dns cluster IP" -m udp -p udp -d 10.96.0.10 --dport 53 -j KUBE-SVC-NEXYWIMJL2KQZCDE',
            '-A KUBE-SVC-NEXYWIMJL2KQZCDE -m comment --comment "ns/dns:dns cluster IP" -m udp -p udp -d 10.96.0.10 --dport 53 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ',
            '-A KUBE-SVC-NEXYWIMJL2KQZCDE -m comment --comment "ns/dns:dns -> 10.244.1.9:5353" -j KUBE-SEP-NZGCTO2RFRBNOIKL',
            "-A KUBE-SEP-NZGCTO2RFRBNOIKL -m comment --comment ns/dns:dns -s 10.244.1.9/32 -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-NZGCTO2RFRBNOIKL -m comment --comment ns/dns:dns -m udp -p udp -j DNAT --to-destination 10.244.1.9:5353",
        ],
    ),
    "two_ports_named_target_port": (
        [svc("web", [{"name": "http", "port": 80, "targetPort": "web"}, {"name": "metrics", "port": 9090}])],
        [eps("web", ["10.244.1.5"], [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}])],
        [
            ":KUBE-SVC-HMALVVKA6APKJPPY - [0:0]",
            ":KUBE-SEP-QR6MYR7CYITOXECY - [0:0]",
            ":KUBE-SVC-XY7N3XDSV6RIHR5J - [0:0]",
            ":KUBE-SEP-ADBCIE6FV57D3APQ - [0:0]",
            '-A KUBE-SERVICES -m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 --dport 80 -j KUBE-SVC-HMALVVKA6APKJPPY',
            '-A KUBE-SERVICES -m comment --comment "ns/web:metrics cluster IP" -m tcp -p tcp -d 10.96.0.20 --dport 9090 -j KUBE-SVC-XY7N3XDSV6RIHR5J',
            '-A KUBE-SVC-HMALVVKA6APKJPPY -m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ',
            '-A KUBE-SVC-HMALVVKA6APKJPPY -m comment --comment "ns/web:http -> 10.244.1.5:8080" -j KUBE-SEP-QR6MYR7CYITOXECY',
            "-A KUBE-SEP-QR6MYR7CYITOXECY -m comment --comment ns/web:http -s 10.244.1.5/32 -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-QR6MYR7CYITOXECY -m comment --comment ns/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080",
            '-A KUBE-SVC-XY7N3XDSV6RIHR5J -m comment --comment "ns/web:metrics cluster IP" -m tcp -p tcp -d 10.96.0.20 --dport 9090 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ',
            '-A KUBE-SVC-XY7N3XDSV6RIHR5J -m comment --comment "ns/web:metrics -> 10.244.1.5:9090" -j KUBE-SEP-ADBCIE6FV57D3APQ',
            "-A KUBE-SEP-ADBCIE6FV57D3APQ -m comment --comment ns/web:metrics -s 10.244.1.5/32 -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-ADBCIE6FV57D3APQ -m comment --comment ns/web:metrics -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:9090",
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_lines(case: str) -> None:
    services, endpoints, expected = CASES[case]
    text = render_full(service_ports(services, endpoints), CONFIG, kernel=JUMPED).text
    assert specific(text) == expected
    assert render_full(service_ports(services, endpoints), CONFIG, kernel=JUMPED).text == text  # deterministic


def test_nodeports_jump_is_the_last_rule_of_kube_services() -> None:
    ports = service_ports([svc("a", [{"port": 80, "nodePort": 30001}], type_="NodePort", ip="10.96.0.2"),
                           svc("b", [{"port": 80}], ip="10.96.0.3")],
                          [eps("a", ["10.244.1.2"], [{"port": 80}]), eps("b", ["10.244.1.3"], [{"port": 80}])])
    nat = render_full(ports, CONFIG).text.split("*nat")[1]
    rules = [line for line in nat.splitlines() if line.startswith("-A KUBE-SERVICES ")]
    assert len(rules) == 3 and rules[-1].endswith("--dst-type LOCAL -j KUBE-NODEPORTS")


# -- names and numbers ---------------------------------------------------------
def test_chain_names_match_kube_proxy() -> None:
    # Names seen on real clusters for the kubernetes and kube-dns services.
    assert "KUBE-SVC-" + port_proto_hash("default/kubernetes:https" + "tcp") == "KUBE-SVC-NPX46M4PTMTKRN6Y"
    assert "KUBE-SVC-" + port_proto_hash("kube-system/kube-dns:dns" + "udp") == "KUBE-SVC-TCOU7JCQXEZGVUNU"
    dns = ServicePort(namespace="kube-system", name="kube-dns", port_name="dns-tcp", protocol="tcp",
                      cluster_ip="10.96.0.10", port=53)
    assert dns.svc_chain == "KUBE-SVC-ERIFXISQEP7F7OF4"


def test_probability_is_printed_like_kube_proxy() -> None:
    assert [probability(n) for n in (4, 3, 2)] == ["0.2500000000", "0.3333333333", "0.5000000000"]


def test_three_endpoints_use_one_over_n_minus_i() -> None:
    ports = service_ports([svc("web", [{"port": 80}])],
                          [eps("web", ["10.244.1.10", "10.244.1.9", "10.244.1.8"], [{"port": 80}])])
    lines = [line for line in render_full(ports, CONFIG).text.splitlines() if " -> " in line]
    assert ["10.244.1.8" in lines[0], "10.244.1.9" in lines[1], "10.244.1.10" in lines[2]] == [True] * 3
    assert "--probability 0.3333333333" in lines[0] and "--probability 0.5000000000" in lines[1]
    assert "statistic" not in lines[2]


# -- which services are proxied ----------------------------------------------
def test_headless_external_name_and_unmatched_ports_are_skipped() -> None:
    services = [
        svc("headless", [{"port": 80}], ip="None"),
        {"metadata": {"namespace": "ns", "name": "ext"}, "spec": {"type": "ExternalName", "externalName": "x.org"}},
        svc("web", [{"name": "http", "port": 80}]),
    ]
    endpoints = [eps("web", ["10.244.1.5"], [{"name": "other", "port": 8080}]),
                 eps("headless", ["10.244.1.6"], [{"port": 80}])]
    ports = service_ports(services, endpoints)
    assert list(ports) == ["ns/web:http|tcp"]
    assert ports["ns/web:http|tcp"].endpoints == ()  # no endpoint port named "http": REJECT


def test_cluster_ip_only_service_ignores_node_port_field() -> None:
    ports = service_ports([svc("web", [{"port": 80, "nodePort": 30080}])], [])
    assert ports["ns/web|tcp"].node_port is None


def test_masquerade_all_and_pod_egress() -> None:
    ports = service_ports([svc("web", [{"port": 80}])], [eps("web", ["10.244.1.5"], [{"port": 80}])])
    text = render_full(ports, NodeConfig(cluster_cidr="10.244.0.0/16", masquerade_all=True,
                                         pod_egress_cidr="10.244.0.0/16")).text
    chain = ports["ns/web|tcp"].svc_chain
    assert (f'-A {chain} -m comment --comment "ns/web cluster IP" -m tcp -p tcp -d 10.96.0.20 '
            "--dport 80 -j KUBE-MARK-MASQ") in text
    assert '-I POSTROUTING 1 -m comment --comment "kubepy pod egress" -j KUBEPY-EGRESS' in text
    assert ('-A KUBEPY-EGRESS -m comment --comment "pod to pod: keep source" -s 10.244.0.0/16 -d 10.244.0.0/16 '
            "-j RETURN") in text


# -- full sync against the kernel's state ------------------------------------
def test_full_render_deletes_only_stale_service_chains_and_adds_only_missing_jumps() -> None:
    ports = service_ports([svc("web", [{"port": 80}])], [eps("web", ["10.244.1.5"], [{"port": 80}])])
    kernel = KernelState(
        chains=frozenset({("nat", "KUBE-SVC-OLDOLDOLDOLDOLD1"), ("nat", "KUBE-SEP-OLDOLDOLDOLDOLD2"),
                          ("nat", "KUBE-SERVICES"), ("nat", "KUBE-MARK-DROP")}),
        jumps=JUMPED.jumps - {("nat", "POSTROUTING", "KUBE-POSTROUTING")})
    rs = render_full(ports, CONFIG, kernel=kernel)
    lines = rs.text.splitlines()
    assert rs.deleted == ("KUBE-SEP-OLDOLDOLDOLDOLD2", "KUBE-SVC-OLDOLDOLDOLDOLD1")
    assert lines[-3:] == ["-X KUBE-SEP-OLDOLDOLDOLDOLD2", "-X KUBE-SVC-OLDOLDOLDOLDOLD1", "COMMIT"]
    assert ":KUBE-SVC-OLDOLDOLDOLDOLD1 - [0:0]" in lines  # flushed before it is deleted
    assert "-X KUBE-MARK-DROP" not in lines  # not a per-service chain of ours: left alone
    assert [line for line in lines if line.startswith("-I ")] == [
        '-I POSTROUTING 1 -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING']


# -- partial render ----------------------------------------------------------------
def test_partial_render_rewrites_only_the_changed_service() -> None:
    services = [svc("one", [{"port": 80}], ip="10.96.0.31"), svc("two", [{"port": 80}], ip="10.96.0.32")]
    before = service_ports(services, [eps("one", ["10.244.1.2"], [{"port": 80}]),
                                      eps("two", ["10.244.1.3"], [{"port": 80}])])
    after = service_ports(services, [eps("one", ["10.244.1.2"], [{"port": 80}]),
                                     eps("two", ["10.244.1.4"], [{"port": 80}])])
    previous = render_full(before, CONFIG).nat_chains
    rs = render_partial(after, CONFIG, {"ns/two|tcp"}, previous_chains=previous)
    one, two_old, two_new = before["ns/one|tcp"], before["ns/two|tcp"], after["ns/two|tcp"]
    declared = [line[1:].split()[0] for line in rs.text.split("*nat")[1].splitlines() if line.startswith(":")]
    assert declared == ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ",
                        two_new.svc_chain, two_new.sep_chain(two_new.endpoints[0]),
                        two_old.sep_chain(two_old.endpoints[0])]  # the last one only to be deleted
    assert rs.text.splitlines()[-2] == f"-X {two_old.sep_chain(two_old.endpoints[0])}"
    # one's chains are neither declared nor written, but KUBE-SERVICES still leads to them
    assert not any(line.startswith(f"-A {c} ") for line in rs.text.splitlines() for c in one.chains())
    assert f"-j {one.svc_chain}" in rs.text
    assert rs.rendered == 1 and rs.nat_chains == frozenset(one.chains()) | frozenset(two_new.chains())
    assert "-I " not in rs.text


def test_partial_render_of_a_deleted_service_deletes_its_chains() -> None:
    before = service_ports([svc("gone", [{"port": 80}])], [eps("gone", ["10.244.1.2"], [{"port": 80}])])
    rs = render_partial({}, CONFIG, {"ns/gone|tcp"}, previous_chains=render_full(before, CONFIG).nat_chains)
    gone = before["ns/gone|tcp"]
    assert sorted(rs.deleted) == sorted(gone.chains())
    assert rs.nat_chains == frozenset()


def test_endpoint_str_and_order() -> None:
    assert str(Endpoint("10.0.0.1", 80)) == "10.0.0.1:80"


def test_terminating_endpoints_are_used_only_when_none_is_ready() -> None:
    service = [svc("web", [{"port": 80}])]
    both = service_ports(service, [eps("web", ["10.244.1.5"], [{"port": 80}], terminating=["10.244.1.6"])])
    assert both["ns/web|tcp"].endpoints == (Endpoint("10.244.1.5", 80),)
    draining = service_ports(service, [eps("web", [], [{"port": 80}], not_ready=["10.244.1.7"],
                                           terminating=["10.244.1.6"])])
    assert draining["ns/web|tcp"].endpoints == (Endpoint("10.244.1.6", 80),)
    not_serving = eps("web", [], [{"port": 80}], not_ready=["10.244.1.7"])
    assert service_ports(service, [not_serving])["ns/web|tcp"].endpoints == ()


def test_endpoints_come_from_every_slice_of_the_service_only() -> None:
    a = eps("web", ["10.244.1.5"], [{"port": 8080}])
    b = eps("web", ["10.244.2.5", "10.244.1.5"], [{"port": 8080}])  # listed twice while it moves: counted once
    b["metadata"]["name"] = "web-other"
    other = eps("db", ["10.244.3.5"], [{"port": 8080}])
    v6 = {**eps("web", ["fd00::5"], [{"port": 8080}]), "addressType": "IPv6"}
    bare = eps("web", [], [{"port": 8080}])
    bare["endpoints"] = [{"addresses": ["10.244.4.5"]}]  # conditions unset: ready
    ports = service_ports([svc("web", [{"port": 80}])], [a, b, other, v6, bare])
    assert ports["ns/web|tcp"].endpoints == (Endpoint("10.244.1.5", 8080), Endpoint("10.244.2.5", 8080),
                                             Endpoint("10.244.4.5", 8080))


# -- LoadBalancer addresses and externalTrafficPolicy ---------------------------
def lb_svc(policy: str) -> dict[str, Any]:
    s = svc("web", [{"name": "http", "port": 80, "nodePort": 30080}], type_="LoadBalancer")
    s["spec"].update(externalTrafficPolicy=policy, healthCheckNodePort=31999, externalIPs=["192.0.2.9"])
    s["status"] = {"loadBalancer": {"ingress": [{"ip": "172.30.0.200"}]}}
    return s


def two_node_slice() -> dict[str, Any]:
    s = eps("web", ["10.244.1.5", "10.244.2.5"], [{"name": "http", "port": 8080}])
    s["endpoints"][0]["nodeName"], s["endpoints"][1]["nodeName"] = "n1", "n2"
    return s


def test_load_balancer_ip_cluster_policy_masquerades_and_uses_every_endpoint() -> None:
    ports = service_ports([lb_svc("Cluster")], [two_node_slice()], node_name="n1")
    sp = ports["ns/web:http|tcp"]
    assert sp.load_balancer_ips == ("172.30.0.200",) and sp.external_ips == ("192.0.2.9",)
    assert not sp.external_local and sp.health_check_node_port is None
    lines = specific(render_full(ports, CONFIG, kernel=JUMPED).text)
    ext, svc_chain = sp.ext_chain, sp.svc_chain
    assert (f'-A KUBE-SERVICES -m comment --comment "ns/web:http loadbalancer IP" -m tcp -p tcp -d 172.30.0.200 '
            f'--dport 80 -j {ext}') in lines
    assert (f'-A KUBE-SERVICES -m comment --comment "ns/web:http external IP" -m tcp -p tcp -d 192.0.2.9 '
            f'--dport 80 -j {ext}') in lines
    assert [line for line in lines if line.startswith(f"-A {ext} ")] == [
        f'-A {ext} -m comment --comment "masquerade traffic for ns/web:http external destinations" -j KUBE-MARK-MASQ',
        f"-A {ext} -j {svc_chain}"]


def test_local_policy_keeps_the_source_and_sends_outside_traffic_to_local_endpoints_only() -> None:
    ports = service_ports([lb_svc("Local")], [two_node_slice()], node_name="n1")
    sp = ports["ns/web:http|tcp"]
    assert sp.external_local and sp.health_check_node_port == 31999
    assert sp.local_endpoints == (Endpoint("10.244.1.5", 8080),) and len(sp.endpoints) == 2
    assert sp.svl_chain.startswith("KUBE-SVL-") and sp.svl_chain in sp.chains()
    lines = specific(render_full(ports, CONFIG, kernel=JUMPED).text)
    ext, svl, svc_chain = sp.ext_chain, sp.svl_chain, sp.svc_chain
    assert [line for line in lines if line.startswith(f"-A {ext} ")] == [
        f'-A {ext} -m comment --comment "pod traffic for ns/web:http external destinations" -s 10.244.0.0/16 '
        f'-j {svc_chain}',
        f'-A {ext} -m comment --comment "masquerade LOCAL traffic for ns/web:http external destinations" '
        f'-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
        f'-A {ext} -m comment --comment "route LOCAL traffic for ns/web:http external destinations" '
        f'-m addrtype --src-type LOCAL -j {svc_chain}',
        f"-A {ext} -j {svl}"]
    assert [line for line in lines if line.startswith(f"-A {svl} ")] == [
        f'-A {svl} -m comment --comment "ns/web:http -> 10.244.1.5:8080" -j {sp.sep_chain(Endpoint("10.244.1.5", 8080))}']
    assert not any("DROP" in line for line in lines)
    # A node without local endpoints drops external traffic (the health check says 503 there).
    far = service_ports([lb_svc("Local")], [two_node_slice()], node_name="n3")
    lines = specific(render_full(far, CONFIG, kernel=JUMPED).text)
    assert ('-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns/web:http has no local endpoints" -m tcp -p tcp '
            '-d 172.30.0.200 --dport 80 -j DROP') in lines
    assert ('-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns/web:http has no local endpoints" -m addrtype '
            '--dst-type LOCAL -m tcp -p tcp --dport 30080 -j DROP') in lines


def test_load_balancer_without_endpoints_rejects_its_address() -> None:
    ports = service_ports([lb_svc("Cluster")], [])
    lines = specific(render_full(ports, CONFIG, kernel=JUMPED).text)
    assert ('-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns/web:http has no endpoints" -m tcp -p tcp '
            '-d 172.30.0.200 --dport 80 -j REJECT --reject-with icmp-port-unreachable') in lines


def test_internal_traffic_policy_local_sends_cluster_ip_traffic_to_local_endpoints_only() -> None:
    s = svc("web", [{"name": "http", "port": 80}])
    s["spec"]["internalTrafficPolicy"] = "Local"
    near = service_ports([s], [two_node_slice()], node_name="n1")["ns/web:http|tcp"]
    assert near.internal_local and near.internal_endpoints == (Endpoint("10.244.1.5", 8080),)
    lines = specific(render_full({"k": near}, CONFIG, kernel=JUMPED).text)
    assert (f'-A KUBE-SERVICES -m comment --comment "ns/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 '
            f'--dport 80 -j {near.svl_chain}') in lines
    assert [line for line in lines if line.startswith(f"-A {near.svl_chain} ")] == [
        f'-A {near.svl_chain} -m comment --comment "ns/web:http -> 10.244.1.5:8080" '
        f'-j {near.sep_chain(Endpoint("10.244.1.5", 8080))}']
    far = service_ports([s], [two_node_slice()], node_name="n3")["ns/web:http|tcp"]
    lines = specific(render_full({"k": far}, CONFIG, kernel=JUMPED).text)
    assert ('-A KUBE-SERVICES -m comment --comment "ns/web:http has no local endpoints" -m tcp -p tcp '
            '-d 10.96.0.20 --dport 80 -j DROP') in lines
    assert not any(line.startswith("-A KUBE-SERVICES") and "KUBE-SVC-" in line for line in lines)


# -- loadBalancerSourceRanges: KUBE-FW chains and KUBE-PROXY-FIREWALL ---------------
NODE = NodeConfig(cluster_cidr="10.244.0.0/16", node_ip="172.30.0.11")


def ranged(policy: str = "Cluster", ranges: list[str] | None = None, annotation: str | None = None) -> dict[str, Any]:
    s = lb_svc(policy)
    if ranges is not None:
        s["spec"]["loadBalancerSourceRanges"] = ranges
    if annotation is not None:
        s["metadata"]["annotations"] = {"service.beta.kubernetes.io/load-balancer-source-ranges": annotation}
    return s


FW = "KUBE-FW-HMALVVKA6APKJPPY"
EXT = "KUBE-EXT-HMALVVKA6APKJPPY"


def test_source_ranges_send_load_balancer_traffic_through_a_firewall_chain() -> None:
    # 172.30.0.0/24 holds the node's own IP: the LB address is admitted as a source too (allowFromNode).
    ports = service_ports([ranged(ranges=["192.168.0.0/16", " 172.30.0.9/24 ", "2001:db8::/64"])],
                          [two_node_slice()], node_name="n1")
    sp = ports["ns/web:http|tcp"]
    assert sp.source_ranges == ("192.168.0.0/16", "172.30.0.0/24") and sp.fw_chain == FW
    assert sp.chains()[:3] == [sp.svc_chain, EXT, FW]
    lines = specific(render_full(ports, NODE, kernel=JUMPED).text)
    assert [line for line in lines if FW in line] == [
        '-A KUBE-PROXY-FIREWALL -m comment --comment "ns/web:http traffic not accepted by KUBE-FW-HMALVVKA6APKJPPY" '
        '-m tcp -p tcp -d 172.30.0.200 --dport 80 -j DROP',
        f":{FW} - [0:0]",
        '-A KUBE-SERVICES -m comment --comment "ns/web:http loadbalancer IP" -m tcp -p tcp -d 172.30.0.200 '
        f'--dport 80 -j {FW}',
        f'-A {FW} -m comment --comment "ns/web:http loadbalancer IP" -s 192.168.0.0/16 -j {EXT}',
        f'-A {FW} -m comment --comment "ns/web:http loadbalancer IP" -s 172.30.0.0/24 -j {EXT}',
        f'-A {FW} -m comment --comment "ns/web:http loadbalancer IP" -s 172.30.0.200/32 -j {EXT}',
        f'-A {FW} -m comment --comment "other traffic to ns/web:http will be dropped by KUBE-PROXY-FIREWALL"',
    ]
    # External IPs and node ports are not subject to the ranges (as upstream).
    assert (f'-A KUBE-SERVICES -m comment --comment "ns/web:http external IP" -m tcp -p tcp -d 192.0.2.9 '
            f'--dport 80 -j {EXT}') in lines
    assert f"-A KUBE-NODEPORTS -m comment --comment ns/web:http -m tcp -p tcp --dport 30080 -j {EXT}" in lines


def test_ranges_without_the_node_do_not_admit_the_load_balancer_address() -> None:
    ports = service_ports([ranged(ranges=["203.0.113.0/24"])], [two_node_slice()], node_name="n1")
    fw_rules = [line for line in specific(render_full(ports, NODE, kernel=JUMPED).text)
                if line.startswith(f"-A {FW} ")]
    assert fw_rules == [
        f'-A {FW} -m comment --comment "ns/web:http loadbalancer IP" -s 203.0.113.0/24 -j {EXT}',
        f'-A {FW} -m comment --comment "other traffic to ns/web:http will be dropped by KUBE-PROXY-FIREWALL"']


@pytest.mark.parametrize(("ranges", "annotation", "expected"), [
    (None, "10.1.0.0/16, 10.2.0.0/16", ("10.1.0.0/16", "10.2.0.0/16")),  # the annotation when the field is empty
    ([], " 10.1.0.0/16 ", ("10.1.0.0/16",)),
    (["10.3.0.0/16"], "10.1.0.0/16", ("10.3.0.0/16",)),  # the field wins
    (None, "  ", None),  # an empty annotation restricts nothing (upstream: 0.0.0.0/0)
    (None, None, None),
    (["2001:db8::/64"], None, ()),  # ranges given, none IPv4: no IPv4 client admitted, never all
    (["not-a-cidr", "10.0.0.1"], None, ()),  # an object older than validation: closed, not open
    (["10.1.0.0/16", "10.1.2.3/16"], None, ("10.1.0.0/16",)),  # host bits cleared, duplicates once
])
def test_which_ranges_restrict_a_load_balancer(ranges: list[str] | None, annotation: str | None,
                                               expected: tuple[str, ...] | None) -> None:
    sp = service_ports([ranged(ranges=ranges, annotation=annotation)], [two_node_slice()], node_name="n1")
    assert sp["ns/web:http|tcp"].source_ranges == expected
    assert sp["ns/web:http|tcp"].uses_fw_chain is (expected is not None)


def test_ranges_given_but_none_ipv4_drop_every_client() -> None:
    ports = service_ports([ranged(ranges=["2001:db8::/64"])], [two_node_slice()], node_name="n1")
    lines = specific(render_full(ports, NODE, kernel=JUMPED).text)
    assert [line for line in lines if line.startswith(f"-A {FW} ")] == [
        f'-A {FW} -m comment --comment "other traffic to ns/web:http will be dropped by KUBE-PROXY-FIREWALL"']
    assert any(line.startswith("-A KUBE-PROXY-FIREWALL ") and line.endswith("-j DROP") for line in lines)


def test_ranges_are_ignored_without_an_address_and_without_endpoints() -> None:
    pending = ranged(ranges=["203.0.113.0/24"])
    pending["status"] = {}
    sp = service_ports([pending], [two_node_slice()], node_name="n1")["ns/web:http|tcp"]
    assert sp.source_ranges is None and not sp.uses_fw_chain
    # No endpoints: the address is REJECTed for everyone, no firewall chain (as upstream).
    ports = service_ports([ranged(ranges=["203.0.113.0/24"])], [], node_name="n1")
    lines = specific(render_full(ports, NODE, kernel=JUMPED).text)
    assert not any("KUBE-FW-" in line for line in lines)
    assert ('-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns/web:http has no endpoints" -m tcp -p tcp '
            '-d 172.30.0.200 --dport 80 -j REJECT --reject-with icmp-port-unreachable') in lines


def test_local_policy_with_ranges_goes_firewall_then_ext_then_local_endpoints() -> None:
    ports = service_ports([ranged("Local", ranges=["203.0.113.0/24"])], [two_node_slice()], node_name="n1")
    sp = ports["ns/web:http|tcp"]
    assert sp.chains()[:4] == [sp.svc_chain, EXT, FW, sp.svl_chain]
    lines = specific(render_full(ports, NODE, kernel=JUMPED).text)
    assert f'-A {FW} -m comment --comment "ns/web:http loadbalancer IP" -s 203.0.113.0/24 -j {EXT}' in lines
    assert f"-A {EXT} -j {sp.svl_chain}" in lines


def test_changed_ranges_are_a_partial_sync_and_removed_ranges_delete_the_chain() -> None:
    before = service_ports([ranged(ranges=["203.0.113.0/24"])], [two_node_slice()], node_name="n1")
    wider = service_ports([ranged(ranges=["203.0.113.0/24", "198.51.100.7/32"])], [two_node_slice()],
                          node_name="n1")
    previous = render_full(before, NODE).nat_chains
    assert FW in previous and before != wider
    rs = render_partial(wider, NODE, {"ns/web:http|tcp"}, previous_chains=previous)
    assert f":{FW} - [0:0]" in rs.text and rs.deleted == ()
    assert f'-A {FW} -m comment --comment "ns/web:http loadbalancer IP" -s 198.51.100.7/32 -j {EXT}' in rs.text
    # KUBE-PROXY-FIREWALL is a dispatch chain: declared, so rewritten whole, on every sync.
    assert rs.text.split("*nat")[0].count(":KUBE-PROXY-FIREWALL - [0:0]") == 1
    opened = service_ports([ranged()], [two_node_slice()], node_name="n1")
    rs = render_partial(opened, NODE, {"ns/web:http|tcp"}, previous_chains=previous)
    assert rs.deleted == (FW,) and rs.text.splitlines()[-2] == f"-X {FW}"
    assert "-A KUBE-PROXY-FIREWALL" not in rs.text and f"-j {FW}" not in rs.text
    assert f'"ns/web:http loadbalancer IP" -m tcp -p tcp -d 172.30.0.200 --dport 80 -j {EXT}' in rs.text


def test_full_render_deletes_a_stale_firewall_chain() -> None:
    kernel = KernelState(chains=frozenset({("nat", "KUBE-FW-OLDOLDOLDOLDOLD1")}), jumps=JUMPED.jumps)
    rs = render_full({}, CONFIG, kernel=kernel)
    assert rs.deleted == ("KUBE-FW-OLDOLDOLDOLDOLD1",)


def test_firewall_is_jumped_to_from_input_forward_and_output_for_new_connections() -> None:
    text = render_full({}, CONFIG).text
    for chain in ("INPUT", "FORWARD", "OUTPUT"):
        assert (f'-I {chain} 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" '
                "-j KUBE-PROXY-FIREWALL") in text
