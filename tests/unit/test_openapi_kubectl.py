"""Stock kubectl against a throwaway aiohttp server that serves only
discovery + kubepy's OpenAPI documents (kubepy.api.openapi).

Proves that ``kubectl explain`` works and that ``kubectl apply`` (default
``--validate=strict``) chooses server-side field validation, sending
``fieldValidation=Strict`` - and that a 400 strict-decoding Status is shown
to the user like real Kubernetes does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from kubepy.api import openapi

web = pytest.importorskip("aiohttp.web")

KUBECTL = shutil.which("kubectl", path=os.path.dirname(os.sys.executable)) or shutil.which(
    "kubectl")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed"),
]


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _resource_lists() -> dict[str, dict]:
    out: dict[str, dict] = {}
    for s in openapi.served():
        gv = f"{s.group}/{s.version}" if s.group else s.version
        lst = out.setdefault(gv, {"kind": "APIResourceList", "apiVersion": "v1",
                                  "groupVersion": gv, "resources": []})
        lst["resources"].append({
            "name": s.plural, "singularName": s.kind.lower(), "namespaced": s.namespaced,
            "kind": s.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch",
                      "update", "watch"]})
        for sub in s.subresources:
            kind = {"scale": "Scale", "binding": "Binding"}.get(sub, s.kind)
            lst["resources"].append({"name": f"{s.plural}/{sub}", "singularName": "",
                                     "namespaced": s.namespaced, "kind": kind,
                                     "verbs": ["get", "patch", "update"]})
    return out


class FakeAPIServer:
    """Discovery + OpenAPI + a create/patch endpoint honouring fieldValidation."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str, dict]] = []  # method, path, query, headers
        self.bodies: list[dict] = []
        self.lists = _resource_lists()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner = None
        self._thread: threading.Thread | None = None

    # -- handlers ---------------------------------------------------------
    async def handle(self, request):
        self.requests.append((request.method, request.path, request.query_string,
                              dict(request.headers)))
        p = request.path.rstrip("/")
        j = web.json_response
        if p == "/version":
            return j({"major": "1", "minor": "37", "gitVersion": "v1.37.0-kubepy",
                      "platform": "linux/amd64"})
        if p == "/api":
            return j({"kind": "APIVersions", "versions": ["v1"],
                      "serverAddressByClientCIDRs": [
                          {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}]})
        if p == "/apis":
            groups = []
            for gv in self.lists:
                if "/" not in gv:
                    continue
                g, v = gv.split("/")
                ver = {"groupVersion": gv, "version": v}
                groups.append({"name": g, "versions": [ver], "preferredVersion": ver})
            return j({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if p == "/api/v1" or (p.startswith("/apis/") and p.count("/") == 3):
            gv = p[len("/api/"):] if p.startswith("/api/") else p[len("/apis/"):]
            if gv in self.lists:
                return j(self.lists[gv])
        if p == "/openapi/v2":
            if "application/json" not in request.headers.get("Accept", ""):
                return j(_status(406, "NotAcceptable",
                                 "only application/json is supported"), status=406)
            data, h = openapi.openapi_v2_json()
            return web.Response(body=data, content_type="application/json",
                                headers={"ETag": f'"{h}"'})
        if p == "/openapi/v3":
            return j(openapi.openapi_v3_index())
        if p.startswith("/openapi/v3/"):
            got = openapi.openapi_v3_json(p)
            if got is None:
                return j(_status(404, "NotFound", "not found"), status=404)
            data, h = got
            headers = {"ETag": f'"{h}"'}
            if request.query.get("hash") == h:
                headers["Cache-Control"] = "public, immutable"
            return web.Response(body=data, content_type="application/json", headers=headers)
        if request.method == "GET":
            return j(_status(404, "NotFound", "the server could not find the requested resource"),
                     status=404)
        if request.method in ("POST", "PUT", "PATCH"):
            body = await request.json()
            self.bodies.append(body)
            directive = request.query.get("fieldValidation", "Warn")
            api_version, kind = body.get("apiVersion", ""), body.get("kind", "")
            unknown = openapi.unknown_fields(api_version, kind, body)
            headers: list[tuple[str, str]] = []
            if unknown and directive == "Strict":
                msg = openapi.strict_decoding_message(kind, api_version.rpartition("/")[2],
                                                      unknown)
                return j(_status(400, "BadRequest", msg), status=400)
            if unknown and directive == "Warn":
                headers += [("Warning", openapi.warning_header(w))
                            for w in openapi.unknown_field_warnings(unknown)]
            body.setdefault("metadata", {}).setdefault("uid", "0000-1111")
            resp = web.json_response(body, status=201)
            for k, v in headers:
                resp.headers.add(k, v)
            return resp
        return j(_status(405, "MethodNotAllowed", "method not allowed"), status=405)

    # -- lifecycle --------------------------------------------------------
    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self.handle)
            self._runner = web.AppRunner(app)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)


@pytest.fixture(scope="module")
def server():
    openapi.warm()
    s = FakeAPIServer()
    s.start()
    yield s
    s.stop()


def kubectl(server: FakeAPIServer, tmp: Path, *args: str, stdin: str | None = None):
    cmd = [KUBECTL, "--server", f"http://127.0.0.1:{server.port}",
           "--cache-dir", str(tmp / "cache"), *args]
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["KUBECONFIG"] = str(tmp / "no-kubeconfig")
    env["HOME"] = str(tmp)
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60, env=env)


DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: "25%"}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        IMAGE_FIELD
        ports:
        - containerPort: 80
        resources:
          requests: {cpu: 100m, memory: 64Mi}
          limits: {cpu: 1, memory: 128Mi}
        readinessProbe:
          httpGet: {path: /, port: 80}
"""


def test_explain_pod_spec(server, tmp_path):
    r = kubectl(server, tmp_path, "explain", "pod.spec")
    assert r.returncode == 0, r.stderr
    assert "KIND:       Pod" in r.stdout
    assert "VERSION:    v1" in r.stdout
    assert "FIELD: spec <PodSpec>" in r.stdout
    assert "containers\t<[]Container> -required-" in r.stdout
    assert "List of containers belonging to the pod." in r.stdout


def test_explain_deployment_strategy(server, tmp_path):
    r = kubectl(server, tmp_path, "explain", "deployment.spec.strategy")
    assert r.returncode == 0, r.stderr
    assert "GROUP:      apps" in r.stdout
    assert "rollingUpdate\t<RollingUpdateDeployment>" in r.stdout
    assert "Type of deployment." in r.stdout
    r = kubectl(server, tmp_path, "explain", "deployment.spec.strategy.rollingUpdate.maxSurge")
    assert r.returncode == 0, r.stderr
    assert "FIELD: maxSurge <IntOrString>" in r.stdout


def test_explain_unknown_field(server, tmp_path):
    r = kubectl(server, tmp_path, "explain", "pod.spec.nosuchfield")
    assert r.returncode != 0
    assert 'field "nosuchfield" does not exist' in r.stderr


def test_apply_valid_is_posted_with_strict_validation(server, tmp_path):
    server.bodies.clear()
    start = len(server.requests)
    r = kubectl(server, tmp_path, "apply", "-f", "-", stdin=DEPLOY.replace("IMAGE_FIELD", ""))
    assert r.returncode == 0, r.stderr
    assert "deployment.apps/web created" in r.stdout
    posts = [q for q in server.requests[start:] if q[0] == "POST"]
    assert posts and posts[0][1] == "/apis/apps/v1/namespaces/default/deployments"
    assert "fieldValidation=Strict" in posts[0][2]
    # client-side (v2 protobuf) validation was never needed
    assert not any(q[1] == "/openapi/v2" for q in server.requests[start:])
    assert server.bodies[-1]["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"


def test_apply_typo_is_rejected(server, tmp_path):
    r = kubectl(server, tmp_path, "apply", "-f", "-",
                stdin=DEPLOY.replace("IMAGE_FIELD", "imagePullPolicyy: Always"))
    assert r.returncode != 0
    assert ('Error from server (BadRequest): error when creating "STDIN": Deployment in '
            'version "v1" cannot be handled as a Deployment: strict decoding error: '
            'unknown field "spec.template.spec.containers[0].imagePullPolicyy"') in r.stderr


def test_apply_typo_warn(server, tmp_path):
    r = kubectl(server, tmp_path, "apply", "--validate=warn", "-f", "-",
                stdin=DEPLOY.replace("IMAGE_FIELD", "imagePullPolicyy: Always"))
    assert r.returncode == 0, r.stderr
    assert ('Warning: unknown field "spec.template.spec.containers[0].imagePullPolicyy"'
            in r.stderr)
