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

In the same lab, Helm 4 (``.venv/bin/helm4``, as users run it: server-side apply,
``--wait`` by kstatus) and an operator:

- the chart ``helm create`` writes (ServiceAccount, Service, Deployment, HPA,
  test hook) goes through install/test/upgrade/rollback/list/status/uninstall with its
  pods running (``kubepy.local/hello:1``: busybox httpd on the chart's port 80);
- a chart the test writes ships a CRD in crds/, RBAC and a validating webhook
  (a Deployment of the webhook server above behind a Service, caBundle from a value):
  the webhook refuses a bad custom resource, a good one is created, uninstall removes
  what Helm installed and keeps the CRD, as Helm documents;
- a Kopf operator (``kubepy.local/kopf:1``) runs as a pod with its ServiceAccount's
  in-cluster credentials, reconciles a custom resource into a Deployment and reports
  the Deployment's ready replicas in the resource's status subresource.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from kubepy import images
from kubepy.lab.network import LabNetwork, default_subnet
from tests.api.test_webhooks import make_ca_and_cert
from tests.e2e.test_incluster import cached_image_archive, cached_pyclient_archive
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
    if path == "/widget":
        size = (req["object"].get("spec") or {}).get("size", 0)
        if size > 10:
            return {"allowed": False, "status": {"code": 403, "reason": "Forbidden",
                                                 "message": f"spec.size {size} is over 10"}}
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
        for archive in (cached_pyclient_archive(), cached_image_archive(images.HELLO_REF, images.hello_image),
                        cached_image_archive(images.KOPF_REF, images.kopf_image)):
            lab.kubepy("image", "load", str(archive), "--name", lab.name, "--state-dir", str(lab.root))
        ca, cert, key = make_ca_and_cert(dns=[f"hook.{HOOK_NS}.svc"], ips=[])
        lab.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests(cert, key)))
        bundle = base64.b64encode(ca).decode()
        lab.ca_bundle = bundle  # type: ignore[attr-defined]
        # (The endpoints controller makes the Endpoints a moment after the Service: not found is "not yet".)
        wait_for(lambda: any(s.get("addresses") for s in json.loads(
            lab.kubectl("get", "endpoints", "hook", "-n", HOOK_NS, "-o", "json", check=False).stdout or "{}")
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


# -- Helm 4 ---------------------------------------------------------------------------------

HELM4 = shutil.which("helm4", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
HELM_NS, CHART_NS, OP_NS = "kptest-helm4", "kptest-chart", "kptest-op"


@pytest.fixture(scope="module")
def helm4(lab: Lab):
    """Runs Helm 4 against the lab with a home of its own: ``helm4("install", ...)``."""
    assert HELM4, "helm4 not found: .ci/install puts Helm 4 in .venv/bin"
    home = Path(tempfile.mkdtemp(prefix="kptest-helm4-"))
    env = {**os.environ, "KUBECONFIG": str(lab.kubeconfig), "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"),
           "XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_HOME": str(home / "data")}

    def run(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        cp = subprocess.run([HELM4, *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and cp.returncode:
            raise AssertionError(f"helm {' '.join(args)}:\n{cp.stdout}\n{cp.stderr}")
        return cp

    run.home = home  # type: ignore[attr-defined]
    try:
        assert run("version", "--short").stdout.startswith("v4."), "not Helm 4"
        yield run
    finally:
        shutil.rmtree(home, ignore_errors=True)


def ready_pods(lab: Lab, namespace: str, selector: str) -> list[str]:
    pods = lab.json("get", "pods", "-n", namespace, "-l", selector)["items"]
    return sorted(p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or []))


def test_helm4_runs_the_chart_helm_create_writes(lab: Lab, helm4):
    chart = helm4.home / "demo"
    helm4("create", str(chart))
    # The chart's test hook names plain `busybox` (:latest, so pulled Always); the lab has no
    # registry to pull from, so it names the busybox the lab has. The rest is set by values.
    test_hook = chart / "templates" / "tests" / "test-connection.yaml"
    text = test_hook.read_text()
    assert "image: busybox\n" in text, text  # else it would be pulled: no traffic leaves the lab
    test_hook.write_text(text.replace("image: busybox\n", "image: busybox:1.36\n"))
    values = ["--set", "image.repository=kubepy.local/hello,image.tag=1,autoscaling.enabled=true,"
                       "autoscaling.maxReplicas=3,resources.requests.cpu=10m"]
    sel = "app.kubernetes.io/instance=web"
    try:
        started = time.monotonic()
        helm4("install", "web", str(chart), "-n", HELM_NS, "--create-namespace", *values, "--wait", "--timeout=120s")
        assert len(ready_pods(lab, HELM_NS, sel)) == 1  # --wait waited for the Deployment (kstatus)
        for kind in ("serviceaccount", "service", "deployment", "horizontalpodautoscaler"):
            obj = lab.json("get", kind, "web-demo", "-n", HELM_NS, "--show-managed-fields")
            assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm", (kind, obj["metadata"])
            assert obj["metadata"]["annotations"]["meta.helm.sh/release-name"] == "web"
            # Helm 4 installs with server-side apply: its field manager applied every object.
            assert [(m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]
                    if m["operation"] == "Apply"] == [("helm", "Apply")], (kind, obj["metadata"]["managedFields"])
        dep = lab.json("get", "deployment", "web-demo", "-n", HELM_NS)
        assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "web-demo"
        hpa = lab.json("get", "hpa", "web-demo", "-n", HELM_NS)
        assert hpa["spec"]["scaleTargetRef"]["name"] == "web-demo" and hpa["spec"]["maxReplicas"] == 3

        test = helm4("test", "web", "-n", HELM_NS, "--logs", "--timeout=120s")
        assert re.search(r"^Phase:\s+Succeeded$", test.stdout, re.M), test.stdout
        assert "web-demo-test-connection" in test.stdout and "index.html" in test.stdout, test.stdout
        assert lab.json("get", "pod", "web-demo-test-connection", "-n", HELM_NS)["status"]["phase"] == "Succeeded"

        helm4("upgrade", "web", str(chart), "-n", HELM_NS, *values, "--set", "autoscaling.minReplicas=2",
              "--wait", "--timeout=120s")
        assert lab.json("get", "hpa", "web-demo", "-n", HELM_NS)["spec"]["minReplicas"] == 2
        # The HPA brings the Deployment up to its new minimum; both pods serve.
        wait_for(lambda: len(ready_pods(lab, HELM_NS, sel)) == 2, 90, "the HPA's two ready pods")
        assert lab.json("get", "deployment", "web-demo", "-n", HELM_NS)["spec"]["replicas"] == 2

        helm4("rollback", "web", "1", "-n", HELM_NS, "--wait", "--timeout=120s")
        assert lab.json("get", "hpa", "web-demo", "-n", HELM_NS)["spec"]["minReplicas"] == 1
        history = json.loads(helm4("history", "web", "-n", HELM_NS, "-o", "json").stdout)
        assert [(h["revision"], h["status"]) for h in history] == [
            (1, "superseded"), (2, "superseded"), (3, "deployed")], history
        assert history[-1]["description"] == "Rollback to 1", history
        [listed] = json.loads(helm4("list", "-n", HELM_NS, "-o", "json").stdout)
        assert (listed["name"], listed["revision"], listed["status"]) == ("web", "3", "deployed"), listed
        status = json.loads(helm4("status", "web", "-n", HELM_NS, "-o", "json").stdout)
        assert status["info"]["status"] == "deployed" and status["version"] == 3, status["info"]
        # Helm keeps each revision as a Secret of its own, as upstream.
        secrets = lab.json("get", "secrets", "-n", HELM_NS, "-l", "owner=helm,name=web")["items"]
        assert sorted(s["metadata"]["name"] for s in secrets) == [f"sh.helm.release.v1.web.v{i}" for i in (1, 2, 3)]

        helm4("uninstall", "web", "-n", HELM_NS, "--wait", "--timeout=120s")
        assert json.loads(helm4("list", "-n", HELM_NS, "-o", "json").stdout) == []
        for kind in ("serviceaccount", "service", "deployment", "horizontalpodautoscaler"):
            gone = lab.kubectl("get", kind, "web-demo", "-n", HELM_NS, check=False)
            assert gone.returncode != 0 and "NotFound" in gone.stderr, (kind, gone.stdout)
        assert lab.json("get", "secrets", "-n", HELM_NS, "-l", "owner=helm")["items"] == []
        # The Deployment's pods go; the test hook's pod stays, as Helm documents for hooks without a
        # hook-delete-policy (they are not part of the release).
        def pods_left():
            return sorted(p["metadata"]["name"] for p in lab.json("get", "pods", "-n", HELM_NS, "-l", sel)["items"])
        wait_for(lambda: pods_left() == ["web-demo-test-connection"], 60, "the Deployment's pods gone")
        print(f"helm 4 create-chart flow: {time.monotonic() - started:.1f}s")
    finally:
        helm4("uninstall", "web", "-n", HELM_NS, check=False)
        lab.kubectl("delete", "namespace", HELM_NS, "--wait=false", check=False)


WIDGET_GROUP = "kptest.kubepy.test"


def crd(plural: str, kind: str, spec_properties: dict) -> dict:
    """A namespaced v1 CRD with a status subresource whose status keeps whatever its writers put there."""
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{WIDGET_GROUP}"},
            "spec": {"group": WIDGET_GROUP, "scope": "Namespaced",
                     "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List"},
                     "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                                   "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                       "spec": {"type": "object", "properties": spec_properties},
                                       "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]}}


CHART_TEMPLATES = {
    "rbac.yaml": """\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .Release.Name }}-hook
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: kptest-{{ .Release.Name }}-widget-reader
rules:
  - apiGroups: [kptest.kubepy.test]
    resources: [widgets]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kptest-{{ .Release.Name }}-widget-reader
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kptest-{{ .Release.Name }}-widget-reader}
subjects:
  - {kind: ServiceAccount, name: {{ .Release.Name }}-hook, namespace: {{ .Release.Namespace }}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ .Release.Name }}-config-reader
rules:
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ .Release.Name }}-config-reader
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: {{ .Release.Name }}-config-reader}
subjects:
  - {kind: ServiceAccount, name: {{ .Release.Name }}-hook, namespace: {{ .Release.Namespace }}}
""",
    "webhook.yaml": """\
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata:
  name: {{ .Release.Name }}-tls
data:
  tls.crt: {{ .Values.tls.crt }}
  tls.key: {{ .Values.tls.key }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-server
data:
  server.py: |
{{ .Files.Get "files/server.py" | indent 4 }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-hook
spec:
  replicas: 1
  selector:
    matchLabels: {app: {{ .Release.Name }}-hook}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}-hook}
    spec:
      serviceAccountName: {{ .Release.Name }}-hook
      terminationGracePeriodSeconds: 1
      containers:
        - name: server
          image: {{ .Values.image }}
          imagePullPolicy: IfNotPresent
          command: [python3, /app/server.py]
          ports: [{name: https, containerPort: 8443}]
          readinessProbe: {tcpSocket: {port: 8443}, periodSeconds: 1}
          volumeMounts:
            - {name: tls, mountPath: /tls, readOnly: true}
            - {name: app, mountPath: /app, readOnly: true}
      volumes:
        - {name: tls, secret: {secretName: {{ .Release.Name }}-tls}}
        - {name: app, configMap: {name: {{ .Release.Name }}-server}}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}-hook
spec:
  selector: {app: {{ .Release.Name }}-hook}
  ports: [{name: https, port: 443, targetPort: https}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: kptest-{{ .Release.Name }}-widgets
webhooks:
  - name: widgets.kptest.kubepy.test
    admissionReviewVersions: [v1]
    sideEffects: None
    failurePolicy: Fail
    clientConfig:
      caBundle: {{ .Values.tls.ca }}
      service: {namespace: {{ .Release.Namespace }}, name: {{ .Release.Name }}-hook, path: /widget}
    rules:
      - {operations: [CREATE, UPDATE], apiGroups: [kptest.kubepy.test], apiVersions: [v1], resources: [widgets]}
""",
}


def widget(name: str, size: int) -> str:
    return json.dumps({"apiVersion": f"{WIDGET_GROUP}/v1", "kind": "Widget",
                       "metadata": {"name": name, "namespace": CHART_NS}, "spec": {"size": size}})


def test_helm4_chart_with_a_crd_rbac_and_a_webhook(lab: Lab, helm4):
    chart = helm4.home / "widgets"
    (chart / "crds").mkdir(parents=True)
    (chart / "templates").mkdir()
    (chart / "files").mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: widgets\nversion: 0.1.0\nappVersion: '1'\n")
    widgets = crd("widgets", "Widget", {"size": {"type": "integer"}})
    (chart / "crds" / "widgets.yaml").write_text(yaml.safe_dump(widgets))
    for name, text in CHART_TEMPLATES.items():
        (chart / "templates" / name).write_text(text)
    (chart / "files" / "server.py").write_text(SERVER_PY)
    ca, cert, key = make_ca_and_cert(dns=[f"wid-hook.{CHART_NS}.svc"], ips=[])
    b64 = {k: base64.b64encode(v).decode() for k, v in (("ca", ca), ("crt", cert), ("key", key))}
    (chart / "values.yaml").write_text(yaml.safe_dump({"image": images.PYCLIENT_REF, "tls": b64}))
    crd_name = f"widgets.{WIDGET_GROUP}"
    try:
        started = time.monotonic()
        helm4("install", "wid", str(chart), "-n", CHART_NS, "--create-namespace", "--wait", "--timeout=120s")
        assert lab.json("get", "crd", crd_name)["status"]["conditions"]
        assert ready_pods(lab, CHART_NS, "app=wid-hook"), "the webhook's pod ready (helm --wait)"
        sa = f"system:serviceaccount:{CHART_NS}:wid-hook"
        for verb, resource, ns, want in (("list", "widgets", "default", "yes"),
                                         ("delete", "widgets", CHART_NS, "no"),
                                         ("get", "configmaps", CHART_NS, "yes"),
                                         ("get", "configmaps", "default", "no")):
            got = lab.kubectl("auth", "can-i", verb, f"{resource}", "-n", ns, f"--as={sa}", check=False).stdout.strip()
            assert got == want, (verb, resource, ns, got)
        # The API server's copy of the webhook configurations follows its watch.
        def refused():
            cp = lab.kubectl("create", "-f", "-", input=widget("big", 11), check=False)
            return cp if cp.returncode != 0 else lab.kubectl("delete", "widget", "big", "-n", CHART_NS) and None
        cp = wait_for(refused, 30, "the chart's webhook in force")
        assert 'admission webhook "widgets.kptest.kubepy.test" denied the request: spec.size 11 is over 10' \
            in cp.stderr, cp.stderr
        lab.kubectl("create", "-f", "-", input=widget("small", 3))
        assert lab.json("get", "widget", "small", "-n", CHART_NS)["spec"] == {"size": 3}
        assert "answered /widget" in lab.kubectl("logs", "deploy/wid-hook", "-n", CHART_NS).stdout
        assert json.loads(helm4("status", "wid", "-n", CHART_NS, "-o", "json").stdout)["info"]["status"] == "deployed"

        helm4("uninstall", "wid", "-n", CHART_NS, "--wait", "--timeout=120s")
        for kind, name, ns in (("validatingwebhookconfiguration", "kptest-wid-widgets", None),
                               ("clusterrole", "kptest-wid-widget-reader", None),
                               ("clusterrolebinding", "kptest-wid-widget-reader", None),
                               ("serviceaccount", "wid-hook", CHART_NS), ("role", "wid-config-reader", CHART_NS),
                               ("rolebinding", "wid-config-reader", CHART_NS), ("deployment", "wid-hook", CHART_NS),
                               ("service", "wid-hook", CHART_NS), ("secret", "wid-tls", CHART_NS),
                               ("configmap", "wid-server", CHART_NS)):
            gone = lab.kubectl("get", kind, name, *(["-n", ns] if ns else []), check=False)
            assert gone.returncode != 0 and "NotFound" in gone.stderr, (kind, name, gone.stdout)
        # Helm never deletes the CRDs of crds/ (nor so the resources of them): upstream's documented policy.
        assert lab.json("get", "widget", "small", "-n", CHART_NS)["spec"] == {"size": 3}
        # With the webhook gone, nothing refuses a big widget any more.
        wait_for(lambda: lab.kubectl("create", "-f", "-", input=widget("big", 11), check=False).returncode == 0, 30,
                 "the webhook's configuration gone from the API server")
        print(f"helm 4 CRD/RBAC/webhook chart: {time.monotonic() - started:.1f}s")
    finally:
        helm4("uninstall", "wid", "-n", CHART_NS, check=False)
        lab.kubectl("delete", "crd", crd_name, "--ignore-not-found", timeout=90, check=False)
        lab.kubectl("delete", "namespace", CHART_NS, "--wait=false", check=False)
    gone = lab.kubectl("get", "widgets", "-A", check=False)
    assert gone.returncode != 0, gone.stdout  # deleting the CRD took its kind (and objects) away


# -- a Kopf operator --------------------------------------------------------------------------

OPERATOR_PY = r'''
"""Reconciles an Echo (kptest.kubepy.test/v1) into a Deployment of the hello image; reports readiness."""
import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

ECHOES = ("kptest.kubepy.test", "v1", "echoes")


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, **_):
    config.load_incluster_config()
    settings.posting.level = 20  # INFO: kopf's k8s Events too
    settings.watching.server_timeout = 60


@kopf.on.create(*ECHOES)
@kopf.on.update(*ECHOES)
@kopf.on.resume(*ECHOES)
def reconcile(spec, name, namespace, body, logger, **_):
    replicas = int(spec.get("replicas", 1))
    labels = {"app": f"echo-{name}"}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"echo-{name}", "labels": labels},
           "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "web", "image": "kubepy.local/hello:1",
                                        "imagePullPolicy": "IfNotPresent"}]}}}}
    kopf.adopt(dep, owner=body)
    apps = client.AppsV1Api()
    try:
        apps.create_namespaced_deployment(namespace, dep)
        logger.info(f"created deployment echo-{name} replicas={replicas}")
    except ApiException as e:
        if e.status != 409:
            raise
        apps.patch_namespaced_deployment(f"echo-{name}", namespace, {"spec": {"replicas": replicas}})
        logger.info(f"patched deployment echo-{name} replicas={replicas}")
    return {"deployment": f"echo-{name}", "replicas": replicas}


@kopf.timer(*ECHOES, interval=1)
def observe(name, namespace, status, patch, **_):
    try:
        dep = client.AppsV1Api().read_namespaced_deployment(f"echo-{name}", namespace)
    except ApiException as e:
        if e.status == 404:
            return
        raise
    ready = dep.status.ready_replicas or 0
    if status.get("readyReplicas") != ready:
        patch.status["readyReplicas"] = ready
'''


def operator_manifests() -> list[dict]:
    meta = {"name": "kptest-operator", "namespace": OP_NS}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OP_NS}},
        crd("echoes", "Echo", {"replicas": {"type": "integer", "minimum": 0}}),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": [
            {"apiGroups": [WIDGET_GROUP], "resources": ["echoes"], "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": [WIDGET_GROUP], "resources": ["echoes/status"], "verbs": ["get", "patch"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create", "patch"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kptest-operator"},
         "subjects": [{"kind": "ServiceAccount", "name": "kptest-operator", "namespace": OP_NS}]},
        # Kopf's own needs (its documented RBAC): it follows CRDs and namespaces cluster-wide.
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "kptest-operator"},
         "rules": [{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                    "verbs": ["list", "watch"]},
                   {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "kptest-operator"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kptest-operator"},
         "subjects": [{"kind": "ServiceAccount", "name": "kptest-operator", "namespace": OP_NS}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "operator", "namespace": OP_NS},
         "data": {"operator.py": OPERATOR_PY}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {**meta, "labels": {"app": "kptest-operator"}},
         "spec": {"serviceAccountName": "kptest-operator", "terminationGracePeriodSeconds": 1, "containers": [{
             "name": "operator", "image": images.KOPF_REF, "imagePullPolicy": "IfNotPresent",
             "args": ["--standalone", f"--namespace={OP_NS}", "/app/operator.py"],
             "volumeMounts": [{"name": "app", "mountPath": "/app", "readOnly": True}]}],
             "volumes": [{"name": "app", "configMap": {"name": "operator"}}]}},
    ]


def echo(name: str, replicas: int) -> str:
    return json.dumps({"apiVersion": f"{WIDGET_GROUP}/v1", "kind": "Echo",
                       "metadata": {"name": name, "namespace": OP_NS}, "spec": {"replicas": replicas}})


def test_a_kopf_operator_in_a_pod_reconciles_a_custom_resource_into_a_deployment(lab: Lab):
    crd_name = f"echoes.{WIDGET_GROUP}"
    started = time.monotonic()
    try:
        lab.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(operator_manifests()))
        lab.kubectl("wait", "pod/kptest-operator", "-n", OP_NS, "--for=condition=Ready", "--timeout=60s", timeout=70)
        lab.kubectl("create", "-f", "-", input=echo("hi", 2))

        def status():
            return lab.json("get", "echo", "hi", "-n", OP_NS).get("status") or {}
        wait_for(lambda: status().get("readyReplicas") == 2, 90, "status.readyReplicas 2")
        # kopf's handler result, stored by kopf in the status subresource
        assert status()["reconcile"] == {"deployment": "echo-hi", "replicas": 2}, status()
        dep = lab.json("get", "deployment", "echo-hi", "-n", OP_NS)
        owner = dep["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner.get("controller")) == ("Echo", "hi", True), owner
        assert len(ready_pods(lab, OP_NS, "app=echo-hi")) == 2

        lab.kubectl("patch", "echo", "hi", "-n", OP_NS, "--type=merge", "-p", '{"spec": {"replicas": 1}}')
        wait_for(lambda: status().get("readyReplicas") == 1, 90, "status.readyReplicas 1")
        assert lab.json("get", "deployment", "echo-hi", "-n", OP_NS)["spec"]["replicas"] == 1
        logs = lab.kubectl("logs", "kptest-operator", "-n", OP_NS).stdout
        assert "created deployment echo-hi replicas=2" in logs and "patched deployment echo-hi replicas=1" in logs, logs
        assert "Forbidden" not in logs, logs  # its RBAC is enough: no APIForbiddenError
        # kopf's finalizer on the Echo: deleting it waits for the operator, which lets it go; the
        # Deployment is the Echo's, so the garbage collector takes it (and its pods) then.
        lab.kubectl("delete", "echo", "hi", "-n", OP_NS, "--timeout=60s", timeout=70)
        wait_for(lambda: lab.kubectl("get", "deployment", "echo-hi", "-n", OP_NS, check=False).returncode != 0, 60,
                 "the Echo's Deployment collected")
        print(f"kopf operator: {time.monotonic() - started:.1f}s")
    finally:
        # An Echo left with kopf's finalizer would keep its namespace: drop finalizers once the operator is gone.
        for name in lab.kubectl("get", "echoes", "-n", OP_NS, "-o", "name", check=False).stdout.split():
            lab.kubectl("patch", name, "-n", OP_NS, "--type=merge", "-p", '{"metadata": {"finalizers": null}}',
                        check=False)
        lab.kubectl("delete", "crd", crd_name, "--ignore-not-found", timeout=90, check=False)
        lab.kubectl("delete", "clusterrolebinding,clusterrole", "kptest-operator", "--ignore-not-found", check=False)
        lab.kubectl("delete", "namespace", OP_NS, "--wait=false", check=False)
