"""Stock kubectl's server-side apply against a real kubepy API server:
``apply --server-side``, conflicts and ``--force-conflicts``, ``diff
--server-side``, ``get --show-managed-fields``, and taking over an object
made by client-side ``kubectl apply``."""

from __future__ import annotations

import secrets

import pytest
import yaml

from tests.e2e.conftest import running_apiserver

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
"""


@pytest.fixture(scope="module")
def srv():
    with running_apiserver("kptest-ssa-") as s:
        yield s


@pytest.fixture
def ns(srv):
    name = f"kptest-ssa-{secrets.token_hex(4)}"
    srv.kubectl("create", "namespace", name)
    yield name
    srv.kubectl("delete", "namespace", name, "--wait=false", check=False)


def managed(srv, ns: str, name: str = "deployment/web") -> dict[str, dict]:
    obj = yaml.safe_load(srv.kubectl("get", "-n", ns, name, "-o", "yaml", "--show-managed-fields").stdout)
    return {e["manager"]: e for e in obj["metadata"]["managedFields"]}


def test_apply_server_side_conflicts_and_force(srv, ns):
    k = srv.kubectl
    out = k("apply", "--server-side", "-n", ns, "-f", "-", input=MANIFEST).stdout
    assert "deployment.apps/web serverside-applied" in out, out
    plain = yaml.safe_load(k("get", "-n", ns, "deployment/web", "-o", "yaml").stdout)
    assert "managedFields" not in plain["metadata"]  # kubectl hides them unless asked
    entry = managed(srv, ns)["kubectl"]
    assert entry["operation"] == "Apply" and entry["fieldsV1"]["f:spec"]["f:replicas"] == {}

    changed = MANIFEST.replace("replicas: 2", "replicas: 4")
    cp = k("apply", "--server-side", "--field-manager=other", "-n", ns, "-f", "-", input=changed, check=False)
    assert cp.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas' in cp.stderr, cp.stderr
    assert k("get", "-n", ns, "deployment/web", "-o", "jsonpath={.spec.replicas}").stdout == "2"

    k("apply", "--server-side", "--force-conflicts", "--field-manager=other", "-n", ns, "-f", "-", input=changed)
    assert k("get", "-n", ns, "deployment/web", "-o", "jsonpath={.spec.replicas}").stdout == "4"
    entries = managed(srv, ns)
    assert "f:replicas" in entries["other"]["fieldsV1"]["f:spec"]
    assert "f:replicas" not in entries["kubectl"]["fieldsV1"]["f:spec"]


def test_diff_server_side_shows_the_change_and_writes_nothing(srv, ns):
    k = srv.kubectl
    k("apply", "--server-side", "-n", ns, "-f", "-", input=MANIFEST)
    before = k("get", "-n", ns, "deployment/web", "-o", "jsonpath={.metadata.resourceVersion}").stdout
    cp = k("diff", "--server-side", "-n", ns, "-f", "-", input=MANIFEST.replace("nginx:1.25", "nginx:1.26"),
           check=False)
    assert cp.returncode == 1, cp.stderr  # 1: there are differences
    assert "-      - image: nginx:1.25" in cp.stdout and "+      - image: nginx:1.26" in cp.stdout, cp.stdout
    after = k("get", "-n", ns, "deployment/web", "-o", "jsonpath={.metadata.resourceVersion}").stdout
    assert after == before
    same = k("diff", "--server-side", "-n", ns, "-f", "-", input=MANIFEST, check=False)
    assert same.returncode == 0, same.stdout + same.stderr


def test_server_side_apply_takes_over_from_client_side_apply(srv, ns):
    k = srv.kubectl
    k("apply", "-n", ns, "-f", "-", input=MANIFEST)  # client-side
    assert managed(srv, ns)["kubectl-client-side-apply"]["operation"] == "Update"
    changed = MANIFEST.replace("replicas: 2", "replicas: 3")
    out = k("apply", "--server-side", "-n", ns, "-f", "-", input=changed).stdout
    assert "serverside-applied" in out, out
    entries = managed(srv, ns)
    assert entries["kubectl"]["operation"] == "Apply"
    assert "f:replicas" in entries["kubectl"]["fieldsV1"]["f:spec"]
    obj = yaml.safe_load(k("get", "-n", ns, "deployment/web", "-o", "yaml").stdout)
    assert obj["spec"]["replicas"] == 3
    last = yaml.safe_load(obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
    assert last["spec"]["replicas"] == 3
