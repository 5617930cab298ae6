"""LoadBalancer Services on a 3-node lab cluster: an address from the pool on the lab bridge,
answering HTTP from the host; externalTrafficPolicy Local keeping the client's address; exactly
one node holding the address, and another taking over within seconds when that node's link
goes down; loadBalancerSourceRanges keeping the host out until they admit it. On the same
cluster: spec.externalIPs, internalTrafficPolicy Local, a type ExternalName Service answered
by cluster DNS as a CNAME, and publishNotReadyAddresses.

Traffic stays on the lab's bridge and inside its node namespaces.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.e2e.test_lab import Lab, wait_for

pytestmark = pytest.mark.slow

APP = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: who}
spec:
  selector: {matchLabels: {app: who}}
  template:
    metadata: {labels: {app: who}}
    spec:
      containers:
      - name: httpd
        image: busybox:1.36
        command:
        - sh
        - -c
        - |
          mkdir -p /w/cgi-bin
          hostname > /w/index.html
          echo '#!/bin/sh' > /w/cgi-bin/who
          echo 'echo Content-Type: text/plain' >> /w/cgi-bin/who
          echo 'echo' >> /w/cgi-bin/who
          echo 'echo $(hostname) $REMOTE_ADDR' >> /w/cgi-bin/who
          chmod +x /w/cgi-bin/who
          exec httpd -f -p 8080 -h /w
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: who-cluster}
spec:
  type: LoadBalancer
  selector: {app: who}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: who-local}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  allocateLoadBalancerNodePorts: false
  selector: {app: who}
  ports: [{name: http, port: 80, targetPort: http}]
"""


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        lab.up_with_busybox(3)
        lab.kubectl("apply", "-f", "-", input=APP)
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


def address(lab: Lab, name: str) -> str | None:
    ingress = (lab.json("get", "svc", name).get("status") or {}).get("loadBalancer", {}).get("ingress") or []
    return ingress[0]["ip"] if ingress else None


def who(ip: str, timeout: float = 2) -> tuple[str, str]:
    """(pod name, client address the pod saw) from the CGI behind ``ip``."""
    with urllib.request.urlopen(f"http://{ip}/cgi-bin/who", timeout=timeout) as r:
        pod, client = r.read().decode().split()
    return pod, client.strip("[]").removeprefix("::ffff:")  # busybox httpd listens on IPv6: v4-mapped


def holders(lab: Lab, ip: str) -> list[int]:
    """The nodes (1..3) whose interface holds ``ip``."""
    return [i for i in (1, 2, 3) if f" {ip}/32 " in lab.in_node(i, "ip", "-4", "-o", "addr").stdout]


def ready(lab: Lab) -> dict[str, str]:
    pods = lab.json("get", "pods", "-l", "app=who")["items"]
    return {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))}


def test_addresses_from_the_pool_answer_from_the_host(lab: Lab):
    pods = wait_for(lambda: (lambda r: r if len(r) == 3 else None)(ready(lab)), 90, "a ready pod per node")
    cluster = wait_for(lambda: address(lab, "who-cluster"), 30, "an address for who-cluster")
    local = wait_for(lambda: address(lab, "who-local"), 30, "an address for who-local")
    gateway = lab.in_node(1, "ip", "-4", "route", "show", "default").stdout.split()[2]
    subnet = ipaddress.ip_network(f"{gateway}/24", strict=False)
    assert ipaddress.ip_address(cluster) in subnet and ipaddress.ip_address(local) in subnet and cluster != local
    svc = lab.json("get", "svc", "who-local")
    assert svc["spec"]["healthCheckNodePort"] and "nodePort" not in svc["spec"]["ports"][0]
    out = lab.kubectl("get", "svc", "who-cluster").stdout
    assert cluster in out, out

    # Exactly one node holds each address.
    for ip in (cluster, local):
        wait_for(lambda: len(holders(lab, ip)) == 1, 20, f"one node holding {ip}")
    # Cluster: masqueraded, any pod. Local: the host's own address, the announcing node's pod.
    pod, client = wait_for(lambda: _try(who, cluster), 20, "who-cluster answering")
    assert pod in pods and client != gateway
    [node] = holders(lab, local)

    def assigned() -> list[str]:
        items = lab.json("get", "events", "--field-selector", "involvedObject.name=who-local")["items"]
        return [e["message"] for e in items if e["reason"] == "nodeAssigned"]

    assert f'announcing from node "{lab.node_netns(node)}" with protocol "layer2"' in \
        wait_for(assigned, 20, "the nodeAssigned event")
    # The host's neighbour cache follows the announcing node within a second or two even when the
    # address moved while pods became ready (the announcer repeats its gratuitous ARP past the locktime).
    pod, client = wait_for(lambda: (lambda r: r if r and pods.get(r[0]) == lab.node_netns(node) else None)(
        _try(who, local)), 20, "who-local answering from the announcing node's pod")
    assert client == gateway, f"externalTrafficPolicy Local must keep the client's address, pod saw {client}"
    # The health check node port says which nodes have local endpoints.
    node_ip = lab.in_node(node, "ip", "-4", "-o", "addr", "show", "eth0").stdout.split()[3].split("/")[0]
    with urllib.request.urlopen(f"http://{node_ip}:{svc['spec']['healthCheckNodePort']}/", timeout=5) as r:
        assert r.status == 200 and b'"localEndpoints": 1' in r.read()


def _try(fn, *args):
    try:
        return fn(*args)
    except OSError:
        return None


EXTRAS = """
apiVersion: v1
kind: Service
metadata: {name: who-ext}
spec:
  selector: {app: who}
  externalIPs: [EXTERNAL_IP]
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: who-itp}
spec:
  selector: {app: who}
  internalTrafficPolicy: Local
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: alias}
spec:
  type: ExternalName
  externalName: who-cluster.default.svc.cluster.local
---
apiVersion: v1
kind: Pod
metadata: {name: never-ready, labels: {app: never-ready}}
spec:
  containers:
  - name: c
    image: busybox:1.36
    command: ["sleep", "3600"]
    readinessProbe:
      exec: {command: ["false"]}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: published}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: never-ready}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: unpublished}
spec:
  clusterIP: None
  selector: {app: never-ready}
  ports: [{port: 80}]
"""

ASK = """
import sys, dns.resolver
r = dns.resolver.Resolver(configure=False); r.nameservers = [sys.argv[1]]; r.lifetime = 3
try:
    print(" ".join(sorted(rd.to_text() for rd in r.resolve(sys.argv[2], sys.argv[3]))))
except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
    print("-")
"""


def test_external_ips_internal_policy_external_name_and_not_ready_addresses(lab: Lab):
    import sys

    node_ip = {i: lab.in_node(i, "ip", "-4", "-o", "addr", "show", "eth0").stdout.split()[3].split("/")[0]
               for i in (1, 2)}
    external_ip = str(ipaddress.ip_network(f"{node_ip[1]}/24", strict=False).network_address + 250)
    lab.kubectl("apply", "-f", "-", input=EXTRAS.replace("EXTERNAL_IP", external_ip))
    pods = wait_for(lambda: (lambda r: r if len(r) == 3 else None)(ready(lab)), 60, "a ready pod per node")

    def fetch(node: int, url: str) -> str:
        code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=3).read().decode())"
        return lab.in_node(node, sys.executable, "-c", code).stdout.strip()

    # spec.externalIPs: kube-proxy takes the address (here from node 2 itself).
    assert wait_for(lambda: fetch(2, f"http://{external_ip}/") in pods, 20, "the external IP answering")
    # internalTrafficPolicy Local: node 1's own pod, every time.
    itp = lab.json("get", "svc", "who-itp")["spec"]["clusterIP"]
    first = wait_for(lambda: fetch(1, f"http://{itp}/"), 20, "node 1's kube-proxy programming the new Service")
    seen = {first} | {fetch(1, f"http://{itp}/") for _ in range(6)}
    assert seen == {p for p, n in pods.items() if n == lab.node_netns(1)}, seen

    def ask(name: str, qtype: str) -> str:
        return lab.in_node(1, sys.executable, "-c", ASK, node_ip[1], name, qtype).stdout.strip()

    # type ExternalName: a CNAME from cluster DNS.
    assert wait_for(lambda: ask("alias.default.svc.cluster.local", "CNAME"), 20, "the CNAME") == \
        "who-cluster.default.svc.cluster.local."
    # publishNotReadyAddresses: a pod that never gets ready is published by one headless Service only.
    pod_ip = wait_for(lambda: lab.json("get", "pod", "never-ready")["status"].get("podIP"), 60, "its IP")
    assert wait_for(lambda: ask("published.default.svc.cluster.local", "A") == pod_ip, 20, "published")
    assert ask("unpublished.default.svc.cluster.local", "A") == "-"


FIREWALLED = """
apiVersion: v1
kind: Service
metadata: {name: who-fw}
spec:
  type: LoadBalancer
  loadBalancerSourceRanges: [203.0.113.0/24]
  selector: {app: who}
  ports: [{name: http, port: 80, targetPort: http}]
"""


def firewall(lab: Lab, node: int) -> str:
    return lab.in_node(node, "iptables", "-t", "filter", "-S", "KUBE-PROXY-FIREWALL").stdout


def test_source_ranges_keep_the_host_out_until_they_admit_it(lab: Lab):
    wait_for(lambda: len(ready(lab)) == 3, 60, "a ready pod per node")
    gateway = lab.in_node(1, "ip", "-4", "route", "show", "default").stdout.split()[2]  # the host, on the bridge
    lab.kubectl("apply", "-f", "-", input=FIREWALLED)
    try:
        # Not refused an address any more: kube-proxy enforces the ranges.
        ip = wait_for(lambda: address(lab, "who-fw"), 30, "an address for who-fw")
        [node] = wait_for(lambda: (lambda h: h if len(h) == 1 else None)(holders(lab, ip)), 20, "one holder")
        rule = next(line for line in firewall(lab, node).splitlines() if f"-d {ip}/32" in line)
        assert re.search(r'--comment "default/who-fw:http traffic not accepted by KUBE-FW-[A-Z2-7]{16}"', rule), rule
        assert rule.endswith("-j DROP") and "--dport 80" in rule, rule
        fw_chain = re.search(r"KUBE-FW-[A-Z2-7]{16}", rule).group(0)
        # The host is outside 203.0.113.0/24: its SYN is dropped, so the connect times out.
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            socket.create_connection((ip, 80), timeout=1.5).close()
        assert time.monotonic() - start >= 1.4
        # Admit the host's address on the lab bridge: answered after the next sync.
        lab.kubectl("patch", "svc", "who-fw", "-p",
                    json.dumps({"spec": {"loadBalancerSourceRanges": [f"{gateway}/32"]}}))
        pod, _ = wait_for(lambda: _try(lambda a: who(a, timeout=1), ip), 20, "who-fw answering the host")
        assert pod in ready(lab)
        nat = lab.in_node(node, "iptables", "-t", "nat", "-S", fw_chain).stdout
        assert f"-s {gateway}/32" in nat and "-j KUBE-EXT-" in nat, nat
    finally:
        lab.kubectl("delete", "svc", "who-fw", "--ignore-not-found", check=False)
    # Its rules go with it, on every node.
    wait_for(lambda: not any("who-fw" in firewall(lab, i) or fw_chain in lab.in_node(i, "iptables-save", "-t", "nat")
                             .stdout for i in (1, 2, 3)), 20, "who-fw's firewall rules removed")


# Last: it leaves one node's routes to be rebuilt by its next full sync.
def test_another_node_takes_over_when_the_announcing_node_goes_down(lab: Lab):
    local = address(lab, "who-local")
    [node] = wait_for(lambda: (lambda h: h if len(h) == 1 else None)(holders(lab, local)), 20, "one holder")
    dead = lab.node_netns(node)
    pods = ready(lab)
    subprocess.run(["ip", "-n", dead, "link", "set", "eth0", "down"], check=True)
    try:
        start = time.monotonic()
        pod, _ = wait_for(lambda: _try(lambda ip: who(ip, timeout=0.5), local), 30, "another node answering")
        took = time.monotonic() - start
        print(f"load-balancer failover: {took:.2f}s")
        assert pods[pod] != dead
        assert took < 10, f"failover took {took:.1f}s"
        # The dead node still has it on its (downed) link; exactly one live node took it.
        assert len([i for i in holders(lab, local) if i != node]) == 1
    finally:
        subprocess.run(["ip", "-n", dead, "link", "set", "eth0", "up"], check=False)
        subprocess.run(["ip", "-n", dead, "route", "replace", "default", "via",
                        lab.in_node(1 if node != 1 else 2, "ip", "-4", "route", "show", "default").stdout.split()[2]],
                       check=False)
