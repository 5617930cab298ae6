"""The real kubectl against a real kubepy API server."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.e2e.conftest import KUBECTL

pytestmark = pytest.mark.slow

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
          name: http
        resources:
          requests:
            cpu: 100m
            memory: 64Mi
          limits:
            memory: 128Mi
        readinessProbe:
          httpGet:
            path: /
            port: http
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: http
"""


def test_version_and_api_resources(apiserver):
    out = apiserver.kubectl("version", "-o", "json").stdout
    v = json.loads(out)
    assert v["serverVersion"]["gitVersion"].startswith("v1.")
    res = apiserver.kubectl("api-resources").stdout
    for name in ("pods", "deployments", "replicasets", "services", "endpoints", "leases", "namespaces", "nodes"):
        assert f"\n{name} " in "\n" + res or f"\n{name}  " in res, res
    assert "deploy" in res and "apps/v1" in res and "coordination.k8s.io/v1" in res


def test_apply_get_describe_delete(apiserver):
    k = apiserver.kubectl
    k("create", "namespace", "e2e-apply")
    out = k("apply", "-n", "e2e-apply", "-f", "-", input=MANIFEST).stdout
    assert "deployment.apps/web created" in out and "service/web created" in out, out
    # Re-apply with a change goes through the strategic merge patch path.
    out = k("apply", "-n", "e2e-apply", "-f", "-", input=MANIFEST.replace("replicas: 2", "replicas: 3")).stdout
    assert "deployment.apps/web configured" in out and "service/web unchanged" in out, out
    dep = json.loads(k("get", "-n", "e2e-apply", "deployment", "web", "-o", "json").stdout)
    assert dep["spec"]["replicas"] == 3
    assert dep["metadata"]["generation"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == "25%"
    svc = json.loads(k("get", "-n", "e2e-apply", "svc", "web", "-o", "json").stdout)
    assert svc["spec"]["clusterIP"].startswith("10.")
    assert 30000 <= svc["spec"]["ports"][0]["nodePort"] <= 32767
    table = k("get", "-n", "e2e-apply", "deploy,svc").stdout
    assert "READY" in table and "UP-TO-DATE" in table and "0/3" in table, table
    assert "NodePort" in table and f"80:{svc['spec']['ports'][0]['nodePort']}/TCP" in table, table
    desc = k("describe", "-n", "e2e-apply", "deployment", "web").stdout
    assert "RollingUpdate" in desc and "nginx:1.25" in desc, desc
    out = k("delete", "-n", "e2e-apply", "-f", "-", input=MANIFEST).stdout
    assert 'deployment.apps "web" deleted' in out, out
    cp = k("get", "-n", "e2e-apply", "deployment", "web", check=False)
    assert cp.returncode != 0 and "NotFound" in cp.stderr, cp.stderr


def test_apply_rejects_unknown_field(apiserver):
    bad = MANIFEST.split("---")[0].replace("containerPort: 80", "containerPort: 80\n          contanerPort: 81")
    cp = apiserver.kubectl("apply", "-f", "-", input=bad, check=False)
    assert cp.returncode != 0
    assert "contanerPort" in cp.stderr, cp.stderr


def test_invalid_object_is_422_with_field(apiserver):
    bad = MANIFEST.split("---")[1].replace("port: 80", "port: 70000")
    cp = apiserver.kubectl("apply", "-f", "-", input=bad, check=False)
    assert cp.returncode != 0
    assert "spec.ports[0].port" in cp.stderr, cp.stderr


def test_label_annotate_patch_scale(apiserver):
    k = apiserver.kubectl
    k("apply", "-f", "-", input=MANIFEST.split("---")[0])
    k("label", "deployment", "web", "tier=frontend")
    k("annotate", "deployment", "web", "owner=team-a")
    k("scale", "deployment", "web", "--replicas=5")
    k("patch", "deployment", "web", "-p", '{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.26"}]}}}}')
    k("patch", "deployment", "web", "--type=json", "-p", '[{"op":"add","path":"/metadata/labels/extra","value":"yes"}]')
    k("patch", "deployment", "web", "--type=merge", "-p", '{"metadata":{"annotations":{"merged":"true"}}}')
    dep = json.loads(k("get", "deployment", "web", "-o", "json").stdout)
    assert dep["metadata"]["labels"]["tier"] == "frontend"
    assert dep["metadata"]["labels"]["extra"] == "yes"
    assert dep["metadata"]["annotations"]["owner"] == "team-a"
    assert dep["metadata"]["annotations"]["merged"] == "true"
    assert dep["spec"]["replicas"] == 5
    c = dep["spec"]["template"]["spec"]["containers"]
    assert len(c) == 1 and c[0]["image"] == "nginx:1.26" and c[0]["ports"][0]["containerPort"] == 80
    sel = k("get", "deployments", "-l", "tier=frontend", "-o", "name").stdout.split()
    assert sel == ["deployment.apps/web"]
    assert k("get", "deployments", "-l", "tier in (backend)", "-o", "name").stdout.strip() == ""
    k("delete", "deployment", "web")


def test_get_pods_watch_sees_change(apiserver):
    k = apiserver.kubectl
    k("run", "watched", "--image=busybox", "--restart=Never", "--", "sleep", "1000")
    proc = subprocess.Popen([KUBECTL,
                             "--kubeconfig", str(apiserver.kubeconfig), "get", "pods", "--watch",
                             "--output-watch-events"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        k("label", "pod", "watched", "seen=yes")
        k("delete", "pod", "watched", "--wait=false")
        deadline = time.monotonic() + 15
        lines: list[str] = []
        while time.monotonic() < deadline and not any("DELETED" in l for l in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        text = "".join(lines)
        assert "watched" in text and "MODIFIED" in text and "DELETED" in text, text
    finally:
        proc.kill()
        proc.wait()


def test_explain(apiserver):
    out = apiserver.kubectl("explain", "pod.spec").stdout
    assert "containers" in out and "restartPolicy" in out, out
    out = apiserver.kubectl("explain", "deployment.spec.strategy").stdout
    assert "rollingUpdate" in out, out


def test_explain_from_the_protobuf_openapi_v2(apiserver):
    out = apiserver.kubectl("explain", "--output", "plaintext-openapiv2", "deployment.spec.strategy").stdout
    assert "KIND:" in out and "Deployment" in out and "rollingUpdate" in out, out


def test_an_unserved_kind_says_no_matches_for_kind(apiserver):
    widget = "apiVersion: example.kubepy.test/v1\nkind: Widget\nmetadata: {name: w}\nspec: {size: 1}\n"
    cp = apiserver.kubectl("apply", "-f", "-", input=widget, check=False)
    assert cp.returncode != 0
    assert 'no matches for kind "Widget" in version "example.kubepy.test/v1"' in cp.stderr, cp.stderr
    assert "content type" not in cp.stderr


def test_openapi_v2_protobuf_and_etag(apiserver):
    import ssl
    import urllib.request

    from kubepy.api.openapiv2 import OpenAPIv2_pb2 as pb

    ctx = ssl.create_default_context(cafile=str(apiserver.data_dir / "ca.crt"))
    accept = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"

    def get(path: str, **headers: str):
        req = urllib.request.Request(apiserver.url + path, headers={
            "Authorization": f"Bearer {apiserver.token()}", "Accept": accept, **headers})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    status, headers, body = get("/openapi/v2")
    assert status == 200 and headers["Content-Type"] == "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    doc = pb.Document()
    doc.ParseFromString(body)
    assert doc.swagger == "2.0" and any(p.name == "/apis/apps/v1/namespaces/{namespace}/deployments"
                                        for p in doc.paths.path)
    deploy = next(d for d in doc.definitions.additional_properties if d.name == "io.k8s.api.apps.v1.Deployment")
    gvk = next(e for e in deploy.value.vendor_extension if e.name == "x-kubernetes-group-version-kind")
    assert "kind: Deployment" in gvk.value.yaml
    assert get("/swagger-2.0.0.pb-v1")[2] == body
    assert get("/openapi/v2", **{"If-None-Match": headers["ETag"]})[0] == 304


def test_anonymous_is_401(apiserver):
    import ssl
    import urllib.error
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(apiserver.data_dir / "ca.crt"))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{apiserver.url}/api/v1/pods", context=ctx, timeout=5)
    assert e.value.code == 401
    body = json.loads(e.value.read())
    assert body["kind"] == "Status" and body["reason"] == "Unauthorized"


def test_typed_create_commands(apiserver):
    """These kubectl commands send protobuf bodies."""
    k = apiserver.kubectl
    k("create", "namespace", "typed")
    k("create", "-n", "typed", "configmap", "c", "--from-literal=a=b")
    k("create", "-n", "typed", "secret", "generic", "s", "--from-literal=p=q")
    k("create", "-n", "typed", "deployment", "web", "--image=nginx:1.25", "--port=80", "--replicas=3")
    k("create", "-n", "typed", "service", "nodeport", "web", "--tcp=80:8080", "--node-port=30081")
    k("create", "-n", "typed", "serviceaccount", "robot")
    cm = json.loads(k("get", "-n", "typed", "cm", "c", "-o", "json").stdout)
    assert cm["data"] == {"a": "b"}
    sec = json.loads(k("get", "-n", "typed", "secret", "s", "-o", "json").stdout)
    assert sec["data"] == {"p": "cQ=="} and sec["type"] == "Opaque"
    dep = json.loads(k("get", "-n", "typed", "deploy", "web", "-o", "json").stdout)
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"
    svc = json.loads(k("get", "-n", "typed", "svc", "web", "-o", "json").stdout)
    assert svc["spec"]["ports"][0]["nodePort"] == 30081 and svc["spec"]["ports"][0]["targetPort"] == 8080
    assert k("get", "-n", "typed", "sa", "robot", "-o", "name").stdout.strip() == "serviceaccount/robot"


def test_quota_and_limit_range_with_kubectl(apiserver):
    """`kubectl create quota` (a protobuf body), a LimitRange's defaults, the refusal as kubectl prints it,
    and `kubectl describe quota` from the status admission charged."""
    k = apiserver.kubectl
    k("create", "namespace", "quota")
    k("create", "-n", "quota", "quota", "q", "--hard=pods=1,requests.cpu=1,limits.cpu=1")
    k("apply", "-n", "quota", "-f", "-", input="""\
apiVersion: v1
kind: LimitRange
metadata: {name: cpu}
spec:
  limits:
  - type: Container
    default: {cpu: 500m}
    defaultRequest: {cpu: 200m}
""")
    k("run", "-n", "quota", "one", "--image=busybox:1.36", "--restart=Never")
    pod = json.loads(k("get", "-n", "quota", "pod", "one", "-o", "json").stdout)
    assert pod["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "500m"}, "requests": {"cpu": "200m"}}
    refused = k("run", "-n", "quota", "two", "--image=busybox:1.36", "--restart=Never", check=False)
    assert refused.returncode != 0
    assert 'pods "two" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1' \
        in refused.stderr, refused.stderr
    described = k("describe", "-n", "quota", "quota", "q").stdout
    lines = {tuple(line.split()) for line in described.splitlines()}
    assert ("pods", "1", "1") in lines and ("requests.cpu", "200m", "1") in lines and \
        ("limits.cpu", "500m", "1") in lines, described
    table = k("get", "-n", "quota", "quota").stdout
    assert "pods: 1/1" in table and "limits.cpu: 500m/1" in table, table
