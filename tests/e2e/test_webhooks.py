"""Admission webhooks on a one-node lab cluster: the webhook is a pod the API server calls (issue 16).

A small Python HTTPS server (stdlib only, in the locally built
``kubepy.local/pyclient:1`` image) runs as a pod behind a Service; its
certificate is signed by a CA made here, given to the API server as
``caBundle`` and verified for ``hook.<ns>.svc``. The API server (on the
host) reaches the pod's IP through the lab's pod routes (kubepy.lab.network).

- a MutatingWebhookConfiguration adds a label to every new pod in
  namespaces labelled ``webhooks: enabled`` (and to no other);
- a ValidatingWebhookConfiguration refuses ConfigMaps with a ``forbidden`` key,
  and kubectl shows upstream's words;
- failurePolicy Ignore: a webhook whose port refuses connections, and one
  that hangs, let writes through — the hanging one after its timeoutSeconds;
  with Fail the hanging one refuses the write after its timeout.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time

import pytest
import yaml

from kubepy import images
from kubepy.lab.network import LabNetwork, default_subnet
from tests.api.test_webhooks import make_ca_and_cert
from tests.e2e.test_incluster import cached_pyclient_archive
from tests.e2e.test_lab import Lab, wait_for

pytestmark = pytest.mark.slow

HOOK_NS, APP_NS, PLAIN_NS = "kptest-hooks", "kptest-app", "kptest-plain"
LABEL = "webhook.kubepy.test/stamped"

SERVER_PY = r'''
import base64, json, ssl, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def answer(path, req):
    if path == "/mutate":
        labels = (req["object"].get("metadata") or {}).get("labels")
        ops = [{"op": "add", "path": "/metadata/labels", "value": {}}] if labels is None else []
        ops.append({"op": "add", "path": "/metadata/labels/webhook.kubepy.test~1stamped", "value": "yes"})
        return {"allowed": True, "patchType": "JSONPatch", "patch": base64.b64encode(json.dumps(ops).encode()).decode()}
    if path == "/validate":
        if "forbidden" in (req["object"].get("data") or {}):
            return {"allowed": False, "status": {"code": 403, "reason": "Forbidden", "message": "forbidden key"}}
        return {"allowed": True}
    if path == "/hang":
        time.sleep(60)
    return {"allowed": True}

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        response = answer(self.path.split("?")[0], review["request"])
        response["uid"] = review["request"]["uid"]
        body = json.dumps({"apiVersion": review["apiVersion"], "kind": "AdmissionReview", "response": response})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())
        print("answered", self.path, review["request"]["operation"], review["request"]["name"], flush=True)

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("/tls/tls.crt", "/tls/tls.key")
server = ThreadingHTTPServer(("0.0.0.0", 8443), Handler)
server.daemon_threads = True
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("serving", flush=True)
server.serve_forever()
'''


def manifests(cert: bytes, key: bytes) -> list[dict]:
    def ns(name: str, labels: dict | None = None) -> dict:
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
    return [
        ns(HOOK_NS), ns(APP_NS, {"webhooks": "enabled"}), ns(PLAIN_NS),
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
         "metadata": {"name": "hook-tls", "namespace": HOOK_NS},
         "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hook-server", "namespace": HOOK_NS},
         "data": {"server.py": SERVER_PY}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hook", "namespace": HOOK_NS, "labels": {"app": "hook"}},
         "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
             "name": "server", "image": images.PYCLIENT_REF, "imagePullPolicy": "IfNotPresent",
             "command": ["python3", "/app/server.py"], "ports": [{"name": "https", "containerPort": 8443}],
             "readinessProbe": {"tcpSocket": {"port": 8443}, "periodSeconds": 1},
             "volumeMounts": [{"name": "tls", "mountPath": "/tls", "readOnly": True},
                              {"name": "app", "mountPath": "/app", "readOnly": True}]}],
             "volumes": [{"name": "tls", "secret": {"secretName": "hook-tls"}},
                         {"name": "app", "configMap": {"name": "hook-server"}}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hook", "namespace": HOOK_NS},
         "spec": {"selector": {"app": "hook"}, "ports": [
             {"name": "https", "port": 443, "targetPort": "https"},
             # the same pod, at a port nobody listens on: a webhook that is down
             {"name": "down", "port": 8444, "targetPort": 9999}]}},
    ]


def webhook(name: str, path: str, resources: str, *, ca: str, port: int = 443, **fields) -> dict:
    return {"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"service": {"namespace": HOOK_NS, "name": "hook", "path": path, "port": port},
                             "caBundle": ca},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": [resources]}],
            "namespaceSelector": {"matchLabels": {"webhooks": "enabled"}}, **fields}


def configuration(kind: str, name: str, *hooks: dict) -> dict:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name},
            "webhooks": list(hooks)}


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        up = lab.up_with_busybox(1)
        assert "ready in" in up.stdout, up.stdout
        lab.kubepy("image", "load", str(cached_pyclient_archive()), "--name", lab.name, "--state-dir", str(lab.root))
        ca, cert, key = make_ca_and_cert(dns=[f"hook.{HOOK_NS}.svc"], ips=[])
        lab.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests(cert, key)))
        bundle = base64.b64encode(ca).decode()
        lab.ca_bundle = bundle  # type: ignore[attr-defined]
        wait_for(lambda: any(s.get("addresses") for s in lab.json("get", "endpoints", "hook", "-n", HOOK_NS)
                             .get("subsets") or []), 60, "the webhook pod ready behind its Service")
        lab.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
            configuration("MutatingWebhookConfiguration", "kptest-stamp",
                          webhook("stamp.kptest.kubepy.test", "/mutate", "pods", ca=bundle)),
            configuration("ValidatingWebhookConfiguration", "kptest-deny",
                          webhook("deny.kptest.kubepy.test", "/validate", "configmaps", ca=bundle)),
        ]))
        # The API server's copy of the configurations follows its watch: wait until both are in force
        # (server-side dry runs, which these side-effect-free webhooks accept).
        wait_for(lambda: LABEL in (json.loads(lab.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-", input=bare_pod("probe", APP_NS)).stdout)
            ["metadata"].get("labels") or {}), 30, "the mutating webhook in force")
        wait_for(lambda: lab.kubectl("create", "configmap", "probe", "-n", APP_NS, "--from-literal=forbidden=1",
                                     "--dry-run=server", check=False).returncode != 0, 30,
                 "the validating webhook in force")
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)
    rules = subprocess.run(["ip", "rule"], capture_output=True, text=True).stdout
    assert f"lookup {lab_network(lab).route_table}" not in rules, rules


def lab_network(lab: Lab) -> LabNetwork:
    return LabNetwork(lab.name, default_subnet(lab.name))


def test_the_host_routes_to_pods_only_for_packets_from_the_lab_gateway(lab: Lab):
    net = lab_network(lab)
    rules = subprocess.run(["ip", "rule"], capture_output=True, text=True).stdout
    assert f"from {net.gateway} lookup {net.route_table}" in rules, rules
    node = lab.json("get", "node", lab.node_netns(1))
    routes = subprocess.run(["ip", "route", "show", "table", str(net.route_table)], capture_output=True,
                            text=True).stdout.splitlines()
    want = f"{node['spec']['podCIDR']} via {net.node_ip(1)} dev {net.bridge}"
    assert [r for r in routes if r.startswith(want)], routes


def bare_pod(name: str, namespace: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
                       "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                           {"name": "main", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
                            "command": ["sleep", "3600"]}]}})


def test_a_webhook_pod_labels_every_new_pod_in_a_labelled_namespace(lab: Lab):
    created = json.loads(lab.kubectl("create", "-o", "json", "-f", "-", input=bare_pod("stamped", APP_NS)).stdout)
    assert created["metadata"]["labels"] == {LABEL: "yes"}
    assert lab.json("get", "pod", "stamped", "-n", APP_NS)["metadata"]["labels"] == {LABEL: "yes"}
    plain = json.loads(lab.kubectl("create", "-o", "json", "-f", "-", input=bare_pod("plain", PLAIN_NS)).stdout)
    assert LABEL not in (plain["metadata"].get("labels") or {})
    # The pod it labelled runs like any other.
    lab.kubectl("wait", "pod/stamped", "-n", APP_NS, "--for=condition=Ready", "--timeout=60s", timeout=70)
    logs = lab.kubectl("logs", "hook", "-n", HOOK_NS).stdout
    assert "answered /mutate?timeout=10s CREATE stamped" in logs, logs  # upstream adds ?timeout


def test_a_validating_webhook_pod_refuses_a_bad_object(lab: Lab):
    cp = lab.kubectl("create", "configmap", "bad", "-n", APP_NS, "--from-literal=forbidden=1", check=False)
    assert cp.returncode != 0
    assert cp.stderr.strip() == ('error: failed to create configmap: admission webhook "deny.kptest.kubepy.test" '
                                 'denied the request: forbidden key'), cp.stderr
    lab.kubectl("create", "configmap", "good", "-n", APP_NS, "--from-literal=fine=1")
    lab.kubectl("create", "configmap", "elsewhere", "-n", PLAIN_NS, "--from-literal=forbidden=1")
    table = lab.kubectl("get", "validatingwebhookconfigurations").stdout.splitlines()
    assert table[0].split() == ["NAME", "WEBHOOKS", "AGE"] and table[1].split()[:2] == ["kptest-deny", "1"], table


def test_down_or_hanging_webhooks_with_ignore_let_writes_through_within_their_timeout(lab: Lab):
    bundle = lab.ca_bundle  # type: ignore[attr-defined]
    lab.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([configuration(
        "ValidatingWebhookConfiguration", "kptest-broken",
        webhook("refused.kptest.kubepy.test", "/", "secrets", ca=bundle, port=8444, failurePolicy="Ignore"),
        webhook("hangs.kptest.kubepy.test", "/hang", "secrets", ca=bundle, failurePolicy="Ignore",
                timeoutSeconds=2))]))
    # The API server's copy of the configurations follows its watch: a write that was quick came too early.
    for i in range(10):
        cp, took = timed(lab, "create", "secret", "generic", f"through-{i}", "-n", APP_NS, "--from-literal=a=b")
        assert cp.returncode == 0, cp.stderr
        if took >= 1.9:
            break
        time.sleep(0.2)
    assert 1.9 < took < 6, took  # the 2 s timeout, plus kubectl's own start on a busy machine; the hang is 60 s
    # With Fail, the hanging webhook refuses the write once its timeout has passed.
    lab.kubectl("patch", "validatingwebhookconfiguration", "kptest-broken", "--type=json", "-p",
                json.dumps([{"op": "replace", "path": "/webhooks/1/failurePolicy", "value": "Fail"}]))
    for i in range(5):
        cp, took = timed(lab, "create", "secret", "generic", f"stopped-{i}", "-n", APP_NS, "--from-literal=a=b")
        if cp.returncode != 0:
            break
    assert cp.returncode != 0 and 1.9 < took < 6, (took, cp.stderr)
    assert 'failed calling webhook "hangs.kptest.kubepy.test"' in cp.stderr, cp.stderr
    assert "context deadline exceeded" in cp.stderr, cp.stderr


def timed(lab: Lab, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    cp = lab.kubectl(*args, check=False)
    return cp, time.monotonic() - started
