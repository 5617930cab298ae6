"""A whole lab cluster (`kubepy up --nodes 3`): real pods on containerd in three node
namespaces, Services through kube-proxy's iptables rules (one node switched to its nftables
layout for a while), cluster DNS, and `kubepy down` leaving nothing behind.

Traffic stays inside the namespaces the cluster made (and the bridge between them).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.e2e.conftest import KUBECTL

pytestmark = pytest.mark.slow

NODES = 3


def host_state() -> dict[str, set[str]]:
    """What a cluster could leave behind, read with the standard tools."""
    def lines(*cmd: str) -> set[str]:
        return set(subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines())

    links = {line.split(":")[1].split("@")[0].strip() for line in lines("ip", "-o", "link")}
    iptables = {r for r in lines("iptables-save") if "KUBE" in r}
    mounts = {m.split()[1] for m in Path("/proc/mounts").read_text().splitlines()}
    cgroups = {str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepy/**") if p.is_dir()}
    procs = {line for line in lines("ps", "-eo", "args") if "kubepy" in line and "pytest" not in line
             or line.startswith("containerd")}
    return {"netns": lines("ip", "netns", "list"), "links": links, "iptables": iptables, "mounts": mounts,
            "cgroups": cgroups, "procs": procs}


class Lab:
    def __init__(self) -> None:
        self.name = f"kptest-{secrets.token_hex(3)}"
        self.root = Path(tempfile.mkdtemp(prefix="kplab-", dir="/tmp"))
        self.before = host_state()
        self.base = [sys.executable, "-m", "kubepy"]

    def kubepy(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        cp = subprocess.run([*self.base, *args, "--name", self.name, "--state-dir", str(self.root)]
                            if args[0] in ("up", "down", "status") else [*self.base, *args],
                            capture_output=True, text=True, timeout=timeout)
        if check and cp.returncode:
            raise AssertionError(f"kubepy {' '.join(args)} failed:\n{cp.stdout}\n{cp.stderr}")
        return cp

    @property
    def kubeconfig(self) -> Path:
        return self.root / self.name / "controlplane" / "admin.kubeconfig"

    def kubectl(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60):
        cp = subprocess.run([KUBECTL, "--kubeconfig", str(self.kubeconfig), *args], capture_output=True,
                            text=True, input=input, timeout=timeout)
        if check and cp.returncode:
            raise AssertionError(f"kubectl {' '.join(args)}: {cp.stdout}\n{cp.stderr}")
        return cp

    def json(self, *args: str):
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def node_netns(self, i: int) -> str:
        return f"{self.name}-node{i}"

    def up_with_busybox(self, nodes: int) -> subprocess.CompletedProcess:
        """`kubepy up --nodes N`, then busybox:1.36 (built locally) loaded into every node."""
        up = self.kubepy("up", "--nodes", str(nodes))
        from kubepy.images import busybox_image

        archive = self.root / "busybox.tar"
        busybox_image("docker.io/library/busybox:1.36", archive)
        self.kubepy("image", "load", str(archive), "--name", self.name, "--state-dir", str(self.root))
        return up

    def in_node(self, i: int, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.node_netns(i), *cmd], capture_output=True, text=True,
                              timeout=timeout)


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        up = lab.up_with_busybox(NODES)
        assert "ready in" in up.stdout, up.stdout
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


def wait_for(cond, timeout: float = 60, what: str = "", *, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}: last={last!r}")


WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 6
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: httpd
        image: busybox:1.36
        command: ["sh", "-c", "hostname > /tmp/index.html; touch /tmp/ready; exec httpd -f -p 8080 -h /tmp"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          exec: {command: ["test", "-f", "/tmp/ready"]}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  type: NodePort
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: http}]
"""


def ready_pods(lab: Lab, app: str) -> list[dict]:
    return [p for p in lab.json("get", "pods", "-l", f"app={app}")["items"]
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


def test_nodes_ready_with_routes_between_them(lab: Lab):
    nodes = lab.json("get", "nodes")["items"]
    assert len(nodes) == NODES
    assert all(any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]) for n in nodes)
    cidrs = {n["metadata"]["name"]: n["spec"]["podCIDR"] for n in nodes}
    routes = lab.in_node(1, "ip", "route").stdout
    for name, cidr in cidrs.items():
        if name != lab.node_netns(1):
            assert cidr in routes, f"node1 has no route to {name}'s pods ({cidr}):\n{routes}"


def test_service_across_nodes_by_ip_and_dns(lab: Lab):
    lab.kubectl("apply", "-f", "-", input=WEB)
    pods = wait_for(lambda: (lambda ps: ps if len(ps) == 6 else None)(ready_pods(lab, "echo")), 90, "6 ready")
    by_node = {p["spec"]["nodeName"] for p in pods}
    assert len(by_node) == NODES, f"pods should spread over all nodes: {by_node}"
    client = next(p for p in pods if p["spec"]["nodeName"] == lab.node_netns(1))["metadata"]["name"]
    svc = lab.json("get", "svc", "echo")
    ip = svc["spec"]["clusterIP"]
    seen = set()
    for target in [ip] * 15 + ["echo"] * 10 + ["echo.default.svc.cluster.local"] * 5:
        out = lab.kubectl("exec", client, "--", "wget", "-qO-", f"http://{target}/").stdout.strip()
        seen.add(out)
    names = {p["metadata"]["name"] for p in pods}
    assert seen <= names and len(seen) >= 5, f"requests should reach (nearly) every backend, got {seen}"
    node_of = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods}
    reached = {node_of[n] for n in seen}
    assert {lab.node_netns(2), lab.node_netns(3)} <= reached, \
        f"a pod on node 1 must reach backends on nodes 2 and 3, reached {reached}"
    own = lab.kubectl("exec", client, "--", "sh", "-c",
                      f"for i in $(seq 40); do wget -qO- http://{ip}/; done").stdout.split()
    assert client in own, "a pod must reach itself through its own Service (hairpin + masquerade)"


def test_node_port_on_every_node_from_outside(lab: Lab):
    wait_for(lambda: len(ready_pods(lab, "echo")) == 6, 60, "echo ready")
    port = lab.json("get", "svc", "echo")["spec"]["ports"][0]["nodePort"]
    nodes = lab.json("get", "nodes")["items"]
    for n in nodes:
        addr = next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
        with socket.create_connection((addr, port), timeout=5) as s:  # from the host: outside every node
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            body = b""
            while chunk := s.recv(4096):
                body += chunk
        assert b"200 OK" in body and b"echo-" in body, (addr, body[:200])


def switch_proxy_mode(lab: Lab, i: int, mode: str) -> None:
    """Node ``i``'s kube-proxy restarted in ``mode``, as an operator would edit its unit: the supervisor's
    declared argv changed, the running proxy stopped, the supervisor starts it again with the new argv."""
    from kubepy.lab.supervisor import load_desired, load_state, save_desired

    cluster = lab.root / lab.name
    name = f"{lab.node_netns(i)}/proxy"
    desired = load_desired(cluster)
    daemon = desired.get(name)
    assert daemon is not None, [d.name for d in desired.daemons]
    argv = [a for a in daemon.argv if a not in ("--proxy-mode", "iptables", "nftables")] + ["--proxy-mode", mode]
    desired.daemons = [replace(d, argv=argv) if d.name == name else d for d in desired.daemons]
    save_desired(cluster, desired)
    pid = load_state(cluster).daemons[name].pid
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: load_state(cluster).daemons[name].pid not in (0, pid), 30, f"{name} restarted")


def test_nftables_mode_on_one_node(lab: Lab):
    """Node 3's proxy switched to nftables mode beside two iptables-mode nodes: ClusterIP to backends on
    every node, hairpin, NodePort from outside and ClientIP affinity; switched back at the end."""
    wait_for(lambda: len(ready_pods(lab, "echo")) == 6, 60, "echo ready")
    svc = lab.json("get", "svc", "echo")
    ip, port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
    node3 = lab.node_netns(3)
    try:
        switch_proxy_mode(lab, 3, "nftables")
        wait_for(lambda: f"{ip} . tcp . 80 : goto service-" in lab.in_node(3, "nft", "list", "map", "ip",
                                                                             "kube-proxy", "service-ips").stdout,
                 30, "echo in node 3's service-ips map")
        # Switching removed iptables mode's proxy chains (and only those).
        saved = lab.in_node(3, "iptables-save", "-t", "nat").stdout
        assert "KUBE-SVC-" not in saved and "KUBE-SERVICES" not in saved, saved
        pods = ready_pods(lab, "echo")
        client = next(p for p in pods if p["spec"]["nodeName"] == node3)["metadata"]["name"]
        out = lab.kubectl("exec", client, "--", "sh", "-c",
                          f"for i in $(seq 40); do wget -qO- http://{ip}/; done").stdout.split()
        node_of = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods}
        assert set(out) <= set(node_of) and {node_of[n] for n in out} == {lab.node_netns(j) for j in (1, 2, 3)}, out
        assert client in out, "a pod must reach itself through its own Service (hairpin + masquerade)"
        addr = next(a["address"] for n in lab.json("get", "nodes")["items"] if n["metadata"]["name"] == node3
                    for a in n["status"]["addresses"] if a["type"] == "InternalIP")
        with socket.create_connection((addr, port), timeout=5) as s:  # from the host: outside every node
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            body = b""
            while chunk := s.recv(4096):
                body += chunk
        assert b"200 OK" in body and b"echo-" in body, body[:200]
        lab.kubectl("patch", "svc", "echo", "-p", '{"spec":{"sessionAffinity":"ClientIP"}}')
        wait_for(lambda: "update @affinity-" in lab.in_node(3, "nft", "list", "table", "ip", "kube-proxy").stdout,
                 30, "affinity in node 3's rules")
        sticky = lab.kubectl("exec", client, "--", "sh", "-c",
                             f"for i in $(seq 12); do wget -qO- http://{ip}/; done").stdout.split()
        assert len(sticky) == 12 and len(set(sticky)) == 1, sticky
    finally:
        lab.kubectl("patch", "svc", "echo", "-p", '{"spec":{"sessionAffinity":"None"}}', check=False)
        switch_proxy_mode(lab, 3, "iptables")
    # Back in iptables mode: the nftables table is gone and the Service is in KUBE-SERVICES again.
    wait_for(lambda: "KUBE-SVC-" in lab.in_node(3, "iptables-save", "-t", "nat").stdout, 30, "iptables rules back")
    assert "kube-proxy" not in lab.in_node(3, "nft", "list", "tables").stdout


def test_not_ready_pods_stop_getting_traffic(lab: Lab):
    pods = wait_for(lambda: (lambda ps: ps if len(ps) == 6 else None)(ready_pods(lab, "echo")), 60, "echo ready")
    client = pods[0]["metadata"]["name"]
    for p in pods:
        lab.kubectl("exec", p["metadata"]["name"], "--", "rm", "-f", "/tmp/ready")
    t0 = time.monotonic()
    wait_for(lambda: not lab.json("get", "endpoints", "echo")["subsets"][0].get("addresses")
             if lab.json("get", "endpoints", "echo").get("subsets") else True, 30, "endpoints emptied")
    ip = lab.json("get", "svc", "echo")["spec"]["clusterIP"]

    def refused() -> bool:
        # Not `wget -T`: Debian 12's static busybox wget segfaults with -T once connected, which
        # would pass for a refusal. A Service without ready endpoints REJECTs: "Connection refused".
        cp = lab.kubectl("exec", client, "--", "timeout", "5", "wget", "-qO-", f"http://{ip}/", check=False)
        return cp.returncode != 0 and "refused" in cp.stderr
    wait_for(refused, 20, "traffic to stop")
    assert time.monotonic() - t0 < 20
    for p in pods:
        lab.kubectl("exec", p["metadata"]["name"], "--", "touch", "/tmp/ready")
    wait_for(lambda: len(ready_pods(lab, "echo")) == 6, 30, "ready again")


def test_node_addons_run_on_their_own_identities(lab: Lab):
    """Every node's kube-proxy, DNS and policy agent run on their own kubeconfig (0600, a certificate of their
    own user, no group), never the kubelet's or the admin's; and the API server refused them nothing while
    the tests above used Services and DNS."""
    import base64
    import os
    import stat

    import yaml
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    users = {"proxy": "system:kube-proxy", "dns": "system:kubepy-dns", "netpol": "system:kubepy-netpol"}
    argv = [open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0") for pid in os.listdir("/proc") if pid.isdigit()
            and os.path.exists(f"/proc/{pid}/cmdline")]
    ours = str(lab.root / lab.name).encode()   # other clusters may run beside this one
    running = [[a.decode(errors="replace") for a in args] for args in argv if ours in b" ".join(args)]
    for i in range(1, NODES + 1):
        addons = lab.root / lab.name / "nodes" / lab.node_netns(i) / "addons"
        assert stat.S_IMODE(addons.stat().st_mode) == 0o700
        for stem, user in users.items():
            path = addons / f"{stem}.kubeconfig"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            creds = yaml.safe_load(path.read_text())["users"][0]["user"]
            cert = x509.load_pem_x509_certificate(base64.b64decode(creds["client-certificate-data"]))
            assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [user]
            assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) == []
            assert "token" not in creds
            assert [a for a in running if stem in a and str(path) in a], (stem, i)   # kubepy <stem> --kubeconfig PATH
    assert not [a for a in running if any(x.endswith(("kubelet.kubeconfig", "admin.kubeconfig")) for x in a)
                and any(stem in a for stem in users)]
    log = (lab.root / lab.name / "logs" / "controlplane.log").read_text()
    refused = [line for line in log.splitlines() if "forbidden user=" in line
               and any(f"user={u} " in line for u in users.values())]
    assert not refused, "\n".join(refused[:5])


PROMETHEUS_RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: prometheus, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: prometheus}
rules:
- apiGroups: [""]
  resources: [nodes, nodes/metrics, services, endpoints, pods]
  verbs: [get, list, watch]
- nonResourceURLs: [/metrics]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: prometheus}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: prometheus}
subjects: [{kind: ServiceAccount, name: prometheus, namespace: kube-system}]
"""


def has_kubernetes_sd(prometheus: str, tmp_path: Path) -> bool:
    """Whether this Prometheus build knows kubernetes_sd_configs: Debian's 2.42 leaves the
    client-go based discoverers out (its promtool refuses the field)."""
    probe = tmp_path / "probe.yml"
    probe.write_text(json.dumps({"scrape_configs": [{"job_name": "x", "kubernetes_sd_configs": [{"role": "node"}]}]}))
    promtool = Path(prometheus).with_name("promtool")
    return subprocess.run([str(promtool), "check", "config", str(probe)], capture_output=True).returncode == 0


def prometheus_config(server: str, token: Path, ca: Path, *, sd_dir: Path | None) -> str:
    """Prometheus' own Kubernetes service discovery, as its example configuration has it: the API
    servers through the default/kubernetes Endpoints, the kubelets through the Nodes. With
    ``sd_dir`` (a build without it), the same targets from files the test writes from the API."""
    auth = {"authorization": {"credentials_file": str(token)}, "tls_config": {"ca_file": str(ca)}}
    if sd_dir is None:
        sd = {"api_server": server, **auth}
        apiservers = {"kubernetes_sd_configs": [{"role": "endpoints", **sd}],
                      "relabel_configs": [{"source_labels": ["__meta_kubernetes_namespace",
                                                             "__meta_kubernetes_service_name",
                                                             "__meta_kubernetes_endpoint_port_name"],
                                           "action": "keep", "regex": "default;kubernetes;https"}]}
        nodes = {"kubernetes_sd_configs": [{"role": "node", **sd}],
                 "relabel_configs": [{"action": "labelmap", "regex": "__meta_kubernetes_node_label_(.+)"}]}
    else:
        apiservers = {"file_sd_configs": [{"files": [str(sd_dir / "apiservers.json")], "refresh_interval": "1s"}]}
        nodes = {"file_sd_configs": [{"files": [str(sd_dir / "nodes.json")], "refresh_interval": "1s"}]}
    return json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "kubernetes-apiservers", "scheme": "https", **auth, **apiservers},
                           {"job_name": "kubernetes-nodes", "scheme": "https", **auth, **nodes}]})


def discover(lab: Lab, sd_dir: Path) -> None:
    """What Prometheus' role: endpoints and role: node find, as file_sd target groups: the addresses
    of default/kubernetes's https port, and each Node's InternalIP with its kubelet's port, labelled
    with the Node's labels as the labelmap relabeling above makes them."""
    ep = lab.json("get", "endpoints", "kubernetes", "-n", "default")
    apiservers = [f"{a['ip']}:{p['port']}" for sub in ep["subsets"] for a in sub["addresses"]
                  for p in sub["ports"] if p.get("name") == "https"]
    (sd_dir / "apiservers.json").write_text(json.dumps([{"targets": apiservers}]))
    groups = []
    for n in lab.json("get", "nodes")["items"]:
        ip = next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
        port = n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        labels = {k.replace(".", "_").replace("/", "_").replace("-", "_"): v
                  for k, v in n["metadata"].get("labels", {}).items()}
        groups.append({"targets": [f"{ip}:{port}"], "labels": labels})
    (sd_dir / "nodes.json").write_text(json.dumps(groups))


def test_prometheus_scrapes_the_cluster_through_kubernetes_service_discovery(lab: Lab, tmp_path: Path):
    """Debian's prometheus scrapes the API server and every kubelet /metrics with a ServiceAccount
    token (nodes/metrics, nonResourceURL /metrics) and the cluster CA; it finds them by itself with
    kubernetes_sd_configs where its build has them, else through file_sd from the same API objects."""
    import urllib.parse
    import urllib.request

    import yaml

    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is not installed: .ci/install installs Debian's package"
    lab.kubectl("apply", "-f", "-", input=PROMETHEUS_RBAC)
    token = tmp_path / "token"
    token.write_text(lab.kubectl("create", "token", "prometheus", "-n", "kube-system", "--duration", "1h").stdout.strip())
    kubeconfig = yaml.safe_load(lab.kubeconfig.read_text())
    server = kubeconfig["clusters"][0]["cluster"]["server"]
    ca = lab.kubeconfig.parent / "ca.crt"
    sd_dir = None if has_kubernetes_sd(prometheus, tmp_path) else tmp_path
    if sd_dir is not None:
        discover(lab, sd_dir)
    (tmp_path / "prometheus.yml").write_text(prometheus_config(server, token, ca, sd_dir=sd_dir))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)

    def api(path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{port}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())

    def query(q: str) -> list[dict]:
        try:
            return api("query", query=q)["data"]["result"]
        except OSError:
            return []   # not listening yet

    def targets() -> str:
        try:
            return json.dumps([(t["labels"].get("job"), t["scrapeUrl"], t["health"], t["lastError"])
                               for t in api("targets")["data"]["activeTargets"]], indent=1)
        except OSError as e:
            return str(e)

    try:
        try:
            wait_for(lambda: len([r for r in query("up == 1")]) == NODES + 1, 60, "every target up")
        except AssertionError as e:
            log.flush()
            raise AssertionError(f"{e}\ntargets: {targets()}\nprometheus log:\n"
                                 f"{(tmp_path / 'prometheus.log').read_text()[-3000:]}") from None
        up = {(r["metric"]["job"], r["metric"]["instance"]) for r in query("up")}
        nodes = lab.json("get", "nodes")["items"]
        ips = {a["address"] for n in nodes for a in n["status"]["addresses"] if a["type"] == "InternalIP"}
        assert {i for job, i in up if job == "kubernetes-nodes"} == {f"{ip}:10250" for ip in ips}
        assert len([1 for job, _ in up if job == "kubernetes-apiservers"]) == 1
        # The requests the controllers and kubelets make, by Kubernetes' labels.
        lists = wait_for(lambda: query('sum by (resource) (apiserver_request_total{verb="LIST",code="200"})'),
                         20, "apiserver_request_total")
        assert {"pods", "nodes"} <= {r["metric"].get("resource") for r in lists}, lists
        running = wait_for(lambda: len(r := query("kubelet_running_pods")) == NODES and r, 20, "kubelet_running_pods")
        assert {r["metric"]["kubernetes_io_hostname"] for r in running} == {n["metadata"]["name"] for n in nodes}

        def same_count() -> tuple[int, int] | None:   # the kubelets' sandboxes vs the API's Running pods
            pods = [p for p in lab.json("get", "pods", "-A")["items"] if p["status"].get("phase") == "Running"]
            scraped = int(sum(float(r["value"][1]) for r in query("kubelet_running_pods")))
            return (scraped, len(pods)) if scraped == len(pods) else None
        wait_for(same_count, 20, "kubelet_running_pods to sum to the Running pods")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


NODE_DAEMON_METRICS = {   # port in each node's network namespace: a series it must carry
    10248: None,                                              # the kubelet's plain /healthz only
    10249: "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
    9153: "coredns_dns_requests_total",
    10262: "kubepy_netpol_sync_rules_last_timestamp_seconds",
}


def test_every_node_daemon_serves_health_and_metrics(lab: Lab):
    """The real daemons of node 1, each on its own loopback port inside the node's namespace."""
    from prometheus_client.parser import text_string_to_metric_families

    # One DNS query first, so CoreDNS' request counter has a sample.
    node = next(n for n in lab.json("get", "nodes")["items"] if n["metadata"]["name"].endswith("node1"))
    ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    cp = lab.in_node(1, sys.executable, "-c", "import sys, dns.message, dns.query; print(dns.query.udp("
                     "dns.message.make_query('kubernetes.default.svc.cluster.local.', 'A'), sys.argv[1], timeout=5))",
                     ip)
    assert cp.returncode == 0 and "kubernetes.default.svc.cluster.local. " in cp.stdout, (cp.stdout, cp.stderr)
    script = ("import sys, urllib.request\n"
              "for path in sys.argv[2:]:\n"
              "    with urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}{path}', timeout=5) as r:\n"
              "        print(f'=== {path} {r.status}'); print(r.read().decode())\n")
    for port, series in NODE_DAEMON_METRICS.items():
        paths = ["/healthz", "/livez", "/readyz"] + (["/metrics"] if series else [])
        cp = lab.in_node(1, sys.executable, "-c", script, str(port), *paths)
        assert cp.returncode == 0, (port, cp.stdout, cp.stderr)
        for path in paths:
            assert f"=== {path} 200" in cp.stdout, (port, path, cp.stdout[:500])
        if series:
            text = cp.stdout.split("=== /metrics 200\n", 1)[1]
            names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
            assert series in names and "process_cpu_seconds_total" in names, (port, sorted(names)[:40])


def test_down_leaves_nothing(lab: Lab):
    from kubepy.kubelet.network import pod_netns_name
    from kubepy.lab.network import LabNetwork, default_subnet

    net = LabNetwork(lab.name, default_subnet(lab.name))
    pods = lab.json("get", "pods", "-A")["items"]
    assert pods, "the check needs pods whose network namespaces down must remove"
    pod_netns = {pod_netns_name(p["metadata"]["namespace"], p["metadata"]["name"], p["metadata"]["uid"])
                 for p in pods}
    ours = (lab.name, str(lab.root), net.bridge, net.host_veth(0)[:-1], net.chain, *pod_netns)
    lab.kubepy("down")
    after = host_state()
    for key, before in lab.before.items():
        # Everything a cluster makes carries its name, its state dir or a name derived from it
        # (pods: their netns names); other tests may run beside this one, so only those count.
        extra = {item for item in after[key] - before if any(mark in item for mark in ours)}
        assert not extra, f"kubepy down left {key}: {sorted(extra)[:10]}"
    assert not (lab.root / lab.name).exists()
