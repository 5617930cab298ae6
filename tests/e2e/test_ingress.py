"""Ingress on a 2-node lab cluster: ``kubepy ingress`` and its nginx on every node's ports 80/443,
reached from the host at the nodes' addresses and at the address of the LoadBalancer Service in front of
them (kube-system/kubepy-ingress), which is what the Ingresses' status says.

Two backends (busybox httpd, each answering every test path with its own name) behind one
Ingress by host and by path (Prefix by path element, Exact beating Prefix, the longest Prefix
winning), TLS terminated with a certificate from a kubernetes.io/tls Secret chosen by SNI, a
default backend for unknown hosts, an Ingress change taking effect (timed), a backend's rolling
update with a request every 50 ms losing none, the status address written (``kubectl get
ingress``), and a missing Service reported as an Event without disturbing the other Ingresses. Gateway API on the
same nginx: a Gateway of class ``kubepy`` and an HTTPRoute with two paths to the two Services, reached at
the LoadBalancer's address, with their Accepted / Programmed / ResolvedRefs statuses.

Traffic stays on the lab's bridge and inside its node namespaces.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import threading
import time

import pytest

from tests.e2e.test_lab import Lab, wait_for
from tests.ingress.cases import self_signed

pytestmark = pytest.mark.slow

NODES = 2
FILES = "index.html apix api/index.html api/v1 api/exact"


def backend(name: str, port_name: str, port: int) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  strategy: {{rollingUpdate: {{maxUnavailable: 0, maxSurge: 1}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: httpd
        image: busybox:1.36
        command: [sh, -c, 'mkdir -p /w/api && for f in {FILES}; do echo {name} > /w/$f; done &&
                          exec httpd -f -p 8080 -h /w']
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: {port_name}, port: {port}, targetPort: http}}]
"""


APPS = backend("blue", "http", 80) + "---" + backend("green", "web", 8080)


def site(api_backend: str = "green") -> dict:
    svc = {"blue": {"name": "blue", "port": {"number": 80}}, "green": {"name": "green", "port": {"name": "web"}}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "site"}, "spec": {
        "tls": [{"hosts": ["secure.kptest.local"], "secretName": "secure-tls"}],
        "rules": [
            {"host": "a.kptest.local", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": svc["blue"]}},
                {"path": "/api", "pathType": "Prefix", "backend": {"service": svc[api_backend]}},
                {"path": "/api/exact", "pathType": "Exact", "backend": {"service": svc["blue"]}}]}},
            {"host": "b.kptest.local", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": svc["green"]}}]}},
            {"host": "secure.kptest.local", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": svc["green"]}}]}}]}}


FALLBACK = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "fallback"},
            "spec": {"defaultBackend": {"service": {"name": "green", "port": {"name": "web"}}}}}
BROKEN = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "broken"}, "spec": {
    "rules": [{"host": "broken.kptest.local", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "nowhere", "port": {"number": 80}}}}]}}]}}


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        lab.up_with_busybox(NODES)
        lab.kubectl("apply", "-f", "-", input=APPS)
        cert, key = self_signed("secure.kptest.local")
        (lab.root / "tls.crt").write_bytes(cert)
        (lab.root / "tls.key").write_bytes(key)
        lab.kubectl("create", "secret", "tls", "secure-tls", "--cert", str(lab.root / "tls.crt"),
                    "--key", str(lab.root / "tls.key"))
        lab.kubectl("apply", "-f", "-", input=json.dumps(site()))
        lab.kubectl("apply", "-f", "-", input=json.dumps(FALLBACK))
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


def node_ip(lab: Lab, i: int) -> str:
    return lab.in_node(i, "ip", "-4", "-o", "addr", "show", "eth0").stdout.split()[3].split("/")[0]


def exchange(ip: str, host: str, uri: str, timeout: float = 3,
             headers: dict[str, str] | None = None) -> tuple[int, str, http.client.HTTPMessage]:
    """One GET on port 80: the status, the body, and the response's headers."""
    conn = http.client.HTTPConnection(ip, 80, timeout=timeout)
    try:
        conn.request("GET", uri, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace").strip(), resp.headers
    finally:
        conn.close()


def get(ip: str, host: str, uri: str, timeout: float = 3, headers: dict[str, str] | None = None) -> tuple[int, str]:
    status, body, _ = exchange(ip, host, uri, timeout, headers)
    return status, body


def try_get(ip: str, host: str, uri: str) -> tuple[int, str] | None:
    try:
        return get(ip, host, uri)
    except OSError:
        return None


def get_tls(ip: str, host: str, uri: str, ca: str) -> tuple[int, str]:
    ctx = ssl.create_default_context(cadata=ca)
    with socket.create_connection((ip, 443), timeout=3) as raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(f"GET {uri} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return int(head.split()[1]), body.strip()


def ready_pods(lab: Lab, app: str) -> int:
    pods = lab.json("get", "pods", "-l", f"app={app}")["items"]
    return sum(1 for p in pods if not p["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])))


def test_routes_by_host_and_path_on_every_node(lab: Lab):
    for app in ("blue", "green"):
        wait_for(lambda: ready_pods(lab, app) == 2, 90, f"two ready {app} pods")
    ips = [node_ip(lab, i) for i in range(1, NODES + 1)]
    wait_for(lambda: try_get(ips[0], "a.kptest.local", "/api/v1") == (200, "green"), 30, "the Ingress served")
    cases = [
        ("a.kptest.local", "/", (200, "blue")),
        ("a.kptest.local", "/api/v1", (200, "green")),       # Prefix /api: below the element
        ("a.kptest.local", "/api/", (200, "green")),
        ("a.kptest.local", "/apix", (200, "blue")),          # not /api: Prefix is by path element
        ("a.kptest.local", "/api/exact", (200, "blue")),     # Exact beats Prefix
        ("b.kptest.local", "/api/v1", (200, "green")),       # by host
        ("unknown.kptest.local", "/apix", (200, "green")),   # the fallback Ingress's defaultBackend
    ]
    # Each node's controller writes its own nginx.conf: a node may be a moment behind the first one.
    want = [(h, u, w) for h, u, w in cases]
    for ip in ips:
        wait_for(lambda: [(h, u, try_get(ip, h, u)) for h, u, _ in cases] == want, 30, f"every route on {ip}")


def test_longest_prefix_wins_and_a_change_takes_effect(lab: Lab):
    ip = node_ip(lab, 1)
    wait_for(lambda: try_get(ip, "a.kptest.local", "/api/v1") == (200, "green"), 30, "the Ingress served")
    longer = site()
    longer["spec"]["rules"][0]["http"]["paths"].append(
        {"path": "/api/v1", "pathType": "Prefix", "backend": {"service": {"name": "blue", "port": {"number": 80}}}})
    start = time.monotonic()
    lab.kubectl("apply", "-f", "-", input=json.dumps(longer))
    wait_for(lambda: try_get(ip, "a.kptest.local", "/api/v1") == (200, "blue"), 20, "/api/v1 on blue")
    elapsed = time.monotonic() - start
    print(f"\ningress change → effect (kubectl apply to the new route answering): {elapsed * 1000:.0f} ms")
    assert get(ip, "a.kptest.local", "/api/") == (200, "green")  # the shorter prefix still holds the rest
    lab.kubectl("apply", "-f", "-", input=json.dumps(site()))
    wait_for(lambda: try_get(ip, "a.kptest.local", "/api/v1") == (200, "green"), 20, "/api/v1 back on green")
    log = (lab.root / lab.name / "logs" / f"{lab.node_netns(1)}-ingress.log").read_text()
    assert "ingress sync node=" in log and "nginx=reloaded" in log, log[-2000:]


def test_tls_with_the_secrets_certificate_by_sni(lab: Lab):
    ca = (lab.root / "tls.crt").read_text()
    ip = node_ip(lab, 2)
    got = wait_for(lambda: (lambda r: r if r and r[0] == 200 else None)(_try_tls(ip, "secure.kptest.local", ca)),
                   30, "HTTPS for secure.kptest.local")
    assert got == (200, "green")
    # Another name on the same address gets the controller's default certificate, not the Secret's.
    with pytest.raises(ssl.SSLCertVerificationError):
        get_tls(ip, "a.kptest.local", "/", ca)


def _try_tls(ip: str, host: str, ca: str) -> tuple[int, str] | None:
    try:
        return get_tls(ip, host, "/api/v1", ca)
    except (OSError, ssl.SSLError):
        return None


def test_status_is_the_load_balancer_address_which_serves_too(lab: Lab):
    """kube-system/kubepy-ingress, a LoadBalancer whose endpoints are the nodes' nginx: its address from
    the pool is what the Ingresses' status says, and it answers HTTP and HTTPS from the host."""

    def lb_ip() -> str | None:
        svc = lab.json("get", "svc", "-n", "kube-system", "kubepy-ingress")
        return next((i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []),
                    None)

    def address() -> list[str] | None:
        lb = (lab.json("get", "ingress", "site").get("status") or {}).get("loadBalancer") or {}
        return [i.get("ip") for i in lb.get("ingress") or []] or None

    lb = wait_for(lb_ip, 30, "an address for kube-system/kubepy-ingress")
    assert wait_for(lambda: address() == [lb], 30, f"status.loadBalancer of site to be {lb}")
    out = lab.kubectl("get", "ing").stdout
    row = next(line for line in out.splitlines() if line.startswith("site "))
    assert row.split()[1:5] == ["kubepy", "a.kptest.local,b.kptest.local,secure.kptest.local", lb, "80,"], out
    assert wait_for(lambda: try_get(lb, "a.kptest.local", "/api/v1"), 20, f"HTTP at {lb}") == (200, "green")
    assert get(lb, "a.kptest.local", "/apix") == (200, "blue")
    assert wait_for(lambda: _try_tls(lb, "secure.kptest.local", (lab.root / "tls.crt").read_text()), 20,
                    f"HTTPS at {lb}") == (200, "green")
    classes = lab.kubectl("get", "ingressclass").stdout
    assert "kubepy" in classes and "kubepy.io/ingress" in classes, classes
    assert lab.json("get", "ingress", "site")["spec"]["ingressClassName"] == "kubepy"  # defaulted at admission


GATEWAY = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "kptest-gw"},
           "spec": {"gatewayClassName": "kubepy", "listeners": [
               {"name": "http", "protocol": "HTTP", "port": 80, "hostname": "gw.kptest.local"}]}}
ROUTE = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "kptest-route"},
         "spec": {"parentRefs": [{"name": "kptest-gw"}], "rules": [
             {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
              "backendRefs": [{"name": "green", "port": 8080}]},
             {"matches": [{"path": {"type": "Exact", "value": "/apix"}}],
              "backendRefs": [{"name": "blue", "port": 80}]},
             {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "headers": [{"name": "x-color",
                                                                                        "value": "blue"}]}],
              "backendRefs": [{"name": "blue", "port": 80}]},
             {"matches": [{"path": {"type": "PathPrefix", "value": "/moved"}}],
              "filters": [{"type": "RequestRedirect", "requestRedirect": {
                  "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/api"}, "statusCode": 301}}]}]}}
ROUTE_NOWHERE = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                 "metadata": {"name": "kptest-nowhere"}, "spec": {
                     "parentRefs": [{"name": "kptest-gw"}], "rules": [
                         {"matches": [{"path": {"type": "Exact", "value": "/nowhere"}}],
                          "backendRefs": [{"name": "nowhere", "port": 80}]}]}}


def _conditions(obj: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in obj.get("conditions") or []}


def test_gateway_api_httproute_on_the_same_nginx(lab: Lab):
    """A Gateway of class kubepy (installed by kubepy up with its CRDs) and an HTTPRoute with two paths to
    two Services: served by the Ingresses' nginx at the LoadBalancer's address, with upstream's statuses."""
    for app in ("blue", "green"):
        wait_for(lambda: ready_pods(lab, app) == 2, 90, f"two ready {app} pods")
    start = time.monotonic()
    try:
        for obj in (GATEWAY, ROUTE, ROUTE_NOWHERE):
            lab.kubectl("apply", "-f", "-", input=json.dumps(obj))

        def address() -> str | None:
            status = lab.json("get", "gateway", "kptest-gw").get("status") or {}
            ok = _conditions(status).get("Programmed") == ("True", "Programmed")
            return next((a["value"] for a in status.get("addresses") or []), None) if ok else None

        ip = wait_for(address, 30, "the Gateway Programmed with an address")
        lb = lab.json("get", "svc", "-n", "kube-system", "kubepy-ingress")["status"]["loadBalancer"]["ingress"][0]["ip"]
        assert ip == lb
        wait_for(lambda: try_get(ip, "gw.kptest.local", "/api/v1") == (200, "green"), 20, "the route served")
        assert get(ip, "gw.kptest.local", "/apix") == (200, "blue")           # Exact, to the other Service
        assert get(ip, "gw.kptest.local", "/apix/more")[0] == 404             # Exact is exact
        assert get(ip, "gw.kptest.local", "/api/") == (200, "green")           # PathPrefix by element
        assert get(ip, "gw.kptest.local", "/index.html")[0] == 404            # no rule of the route matches
        assert get(ip, "a.kptest.local", "/apix") == (200, "blue")            # the Ingress beside it, one nginx
        assert get(ip, "gw.kptest.local", "/api/v1", headers={"X-Color": "blue"}) == (200, "blue")  # a header match
        conn = http.client.HTTPConnection(ip, 80, timeout=3)
        try:
            conn.request("GET", "/moved/v1?x=1", headers={"Host": "gw.kptest.local"})
            resp = conn.getresponse()
            assert (resp.status, resp.headers["Location"]) == (301, "http://gw.kptest.local/api/v1?x=1")
        finally:
            conn.close()
        wait_for(lambda: (try_get(ip, "gw.kptest.local", "/nowhere") or (0,))[0] == 500, 20,
                 "500 for a rule whose backend does not resolve")
        elapsed = time.monotonic() - start
        gc = lab.json("get", "gatewayclass", "kubepy")
        assert gc["spec"]["controllerName"] == "kubepy.io/gateway"
        assert _conditions(gc["status"])["Accepted"] == ("True", "Accepted")
        gw = lab.json("get", "gateway", "kptest-gw")["status"]
        assert _conditions(gw)["Accepted"] == ("True", "Accepted")
        listener = gw["listeners"][0]
        assert (listener["name"], listener["attachedRoutes"], listener["supportedKinds"]) == \
            ("http", 2, [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}])
        assert _conditions(listener)["Programmed"] == ("True", "Programmed")
        parents = lab.json("get", "httproute", "kptest-route")["status"]["parents"]
        assert [(p["controllerName"], _conditions(p)) for p in parents] == [("kubepy.io/gateway", {
            "Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")})]
        parents = lab.json("get", "httproute", "kptest-nowhere")["status"]["parents"]
        assert _conditions(parents[0]) == {"Accepted": ("True", "Accepted"),
                                           "ResolvedRefs": ("False", "BackendNotFound")}
        out = lab.kubectl("get", "gateway", "kptest-gw").stdout
        assert "kubepy" in out and ip in out and "True" in out, out
        print(f"\nGateway + HTTPRoute applied → served and statuses written: {elapsed * 1000:.0f} ms")
    finally:
        for kind, name in (("httproute", "kptest-nowhere"), ("httproute", "kptest-route"), ("gateway", "kptest-gw")):
            lab.kubectl("delete", kind, name, "--ignore-not-found", check=False)


def test_a_reference_grant_lets_a_route_reach_a_service_in_another_namespace(lab: Lab):
    """An HTTPRoute's backendRef to a Service of another namespace answers 500 (ResolvedRefs=False,
    RefNotPermitted) until a ReferenceGrant there allows it, and again once the grant is gone. The Service
    there has no selector: its EndpointSlice (written here) names the green pods."""
    wait_for(lambda: ready_pods(lab, "green") == 2, 90, "two ready green pods")
    ips = sorted(p["status"]["podIP"] for p in lab.json("get", "pods", "-l", "app=green")["items"])
    ns = "kptest-shop"
    other = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
             {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop", "namespace": ns},
              "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
             {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
              "metadata": {"name": "shop-1", "namespace": ns, "labels": {"kubernetes.io/service-name": "shop"}},
              "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
              "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips]}]
    gw = {**GATEWAY, "metadata": {"name": "kptest-gw-x"}, "spec": {**GATEWAY["spec"], "listeners": [
        {"name": "http", "protocol": "HTTP", "port": 80, "hostname": "shop.kptest.local"}]}}
    route_ = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "kptest-x"},
              "spec": {"parentRefs": [{"name": "kptest-gw-x"}], "rules": [
                  {"backendRefs": [{"name": "shop", "namespace": ns, "port": 80}],
                   "filters": [{"type": "ResponseHeaderModifier",
                                "responseHeaderModifier": {"set": [{"name": "X-Kptest-Route", "value": "x"}]}}]}]}}
    grant = {"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
             "metadata": {"name": "kptest-routes", "namespace": ns},
             "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "default"}],
                      "to": [{"group": "", "kind": "Service", "name": "shop"}]}}

    def resolved() -> tuple[str, str] | None:
        parents = (lab.json("get", "httproute", "kptest-x").get("status") or {}).get("parents") or []
        return _conditions(parents[0]).get("ResolvedRefs") if parents else None

    def answer() -> tuple[int, str, str | None] | None:
        # Until the node behind the address has the new server, the host falls to the fallback Ingress (200
        # green): the route's own answers carry its response header, and only the route answers 500 here.
        try:
            status, body, headers = exchange(ip, "shop.kptest.local", "/api/v1")
        except OSError:
            return None
        return status, body, headers.get("X-Kptest-Route")

    try:
        for obj in (*other, gw, route_):
            lab.kubectl("apply", "-f", "-", input=json.dumps(obj))
        ip = lab.json("get", "svc", "-n", "kube-system", "kubepy-ingress")["status"]["loadBalancer"]["ingress"][0]["ip"]
        wait_for(lambda: resolved() == ("False", "RefNotPermitted"), 30, "RefNotPermitted without a grant")
        # The status is written by one controller; the node behind the address may reload a moment later.
        wait_for(lambda: (answer() or (0,))[0] == 500, 20, "500 from the route without a grant")
        lab.kubectl("apply", "-f", "-", input=json.dumps(grant))
        wait_for(lambda: answer() == (200, "green", "x"), 20, "served by the route once granted")
        wait_for(lambda: resolved() == ("True", "ResolvedRefs"), 20, "ResolvedRefs once granted")
        lab.kubectl("delete", "referencegrant", "-n", ns, "kptest-routes")
        wait_for(lambda: (answer() or (0,))[0] == 500, 20, "500 once revoked")
        wait_for(lambda: resolved() == ("False", "RefNotPermitted"), 20, "RefNotPermitted once revoked")
    finally:
        lab.kubectl("delete", "httproute", "kptest-x", "--ignore-not-found", check=False)
        lab.kubectl("delete", "gateway", "kptest-gw-x", "--ignore-not-found", check=False)
        lab.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)


def test_a_missing_service_is_an_event_and_the_others_keep_working(lab: Lab):
    ip = node_ip(lab, 1)
    lab.kubectl("apply", "-f", "-", input=json.dumps(BROKEN))

    def warned() -> list[str]:
        items = lab.json("get", "events", "--field-selector", "involvedObject.name=broken")["items"]
        return [e["message"] for e in items if e["reason"] == "ServiceNotFound"]

    # Each node's controller reports what it cannot serve (as each ingress-nginx replica does).
    assert set(wait_for(warned, 30, "a ServiceNotFound event")) == {'Service "default/nowhere" not found'}
    wait_for(lambda: (try_get(ip, "broken.kptest.local", "/") or (0,))[0] == 503, 20, "503 for broken's host")
    assert get(ip, "a.kptest.local", "/api/v1") == (200, "green")
    described = lab.kubectl("describe", "ingress", "broken").stdout
    assert "ServiceNotFound" in described, described


def test_rolling_update_of_a_backend_loses_no_request(lab: Lab):
    ip = node_ip(lab, 1)
    wait_for(lambda: try_get(ip, "b.kptest.local", "/index.html") == (200, "green"), 30, "green served")
    failures: list[str] = []
    done = threading.Event()
    count = 0

    def probe() -> None:
        nonlocal count
        while not done.is_set():
            try:
                status, body = get(ip, "b.kptest.local", "/index.html")
                if (status, body) != (200, "green"):
                    failures.append(f"{status} {body[:80]}")
            except OSError as e:
                failures.append(repr(e))
            count += 1
            time.sleep(0.05)

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        lab.kubectl("rollout", "restart", "deployment/green")
        lab.kubectl("rollout", "status", "deployment/green", "--timeout=90s", timeout=100)
        time.sleep(3)  # the old pods' termination
    finally:
        done.set()
        thread.join()
    print(f"\nrolling update behind the Ingress: {count} requests, {len(failures)} failed")
    assert count > 20 and failures == []


def test_requests_per_second_through_the_ingress_vs_straight_to_the_pod(lab: Lab):
    """The issue's benchmark: sequential requests (a new connection each) through nginx, and straight
    to a pod's IP from the host (the lab routes pod CIDRs for packets from its gateway address)."""
    ip = node_ip(lab, 1)
    gateway = lab.in_node(1, "ip", "-4", "route", "show", "default").stdout.split()[2]
    pod_ip = next(p["status"]["podIP"] for p in lab.json("get", "pods", "-l", "app=green")["items"]
                  if not p["metadata"].get("deletionTimestamp") and p["status"].get("podIP"))
    wait_for(lambda: try_get(ip, "b.kptest.local", "/index.html") == (200, "green"), 30, "green served")

    def rate(fetch) -> float:
        n, start = 200, time.monotonic()
        for _ in range(n):
            assert fetch() == (200, "green")
        return n / (time.monotonic() - start)

    def direct() -> tuple[int, str]:
        conn = http.client.HTTPConnection(pod_ip, 8080, timeout=3, source_address=(gateway, 0))
        try:
            conn.request("GET", "/index.html")
            resp = conn.getresponse()
            return resp.status, resp.read().decode().strip()
        finally:
            conn.close()

    through = rate(lambda: get(ip, "b.kptest.local", "/index.html"))
    straight = rate(direct)
    print(f"\nrequests/s, one connection each: through the Ingress {through:.0f}, straight to the pod "
          f"{straight:.0f}, ratio {through / straight:.2f}")
