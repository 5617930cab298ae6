"""``kubectl auth can-i`` (with and without ``--list`` and ``--as``) and the RBAC tables, with the
stock kubectl against a real API server process (no nodes are needed)."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import running_apiserver

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def srv():
    with running_apiserver("kubepy-authz-") as s:
        s.kubectl("create", "namespace", "dev")
        s.kubectl("create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", "dev")
        s.kubectl("create", "role", "one-cm", "--verb=get", "--resource=configmaps", "--resource-name=settings",
                  "-n", "dev")
        s.kubectl("create", "rolebinding", "alice-pods", "--role=pod-reader", "--user=alice", "-n", "dev")
        s.kubectl("create", "rolebinding", "alice-cm", "--role=one-cm", "--user=alice", "--group=devs",
                  "--serviceaccount=dev:ci", "-n", "dev")
        yield s


def can_i(srv, *args: str) -> tuple[int, str]:
    cp = srv.kubectl("auth", "can-i", *args, check=False)
    return cp.returncode, cp.stdout.strip()


def test_can_i_answers_for_the_admin_and_for_impersonated_users(srv) -> None:
    deadline = time.monotonic() + 10
    while can_i(srv, "list", "pods", "-n", "dev", "--as", "alice") != (0, "yes") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert can_i(srv, "list", "pods", "-n", "dev", "--as", "alice") == (0, "yes")
    assert can_i(srv, "list", "pods", "-n", "default", "--as", "alice") == (1, "no")
    assert can_i(srv, "create", "pods", "-n", "dev", "--as", "alice") == (1, "no")
    assert can_i(srv, "get", "configmaps/settings", "-n", "dev", "--as", "alice") == (0, "yes")
    assert can_i(srv, "get", "configmaps/other", "-n", "dev", "--as", "alice") == (1, "no")
    assert can_i(srv, "get", "secrets", "-n", "dev", "--as", "bob", "--as-group", "system:masters") == (0, "yes")
    assert can_i(srv, "*", "*") == (0, "yes")
    assert can_i(srv, "get", "/healthz", "--as", "alice") == (0, "yes")
    assert can_i(srv, "get", "/metrics", "--as", "alice") == (1, "no")


def test_can_i_list(srv) -> None:
    out = srv.kubectl("auth", "can-i", "--list", "-n", "dev", "--as", "alice").stdout
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["Resources", "Non-Resource", "URLs", "Resource", "Names", "Verbs"]
    assert ["pods", "[]", "[]", "[get", "list]"] in rows
    assert ["configmaps", "[]", "[settings]", "[get]"] in rows
    assert ["selfsubjectaccessreviews.authorization.k8s.io", "[]", "[]", "[create]"] in rows
    assert ["[/api/*]", "[]", "[get]"] in rows  # a non-resource row leaves the Resources column empty
    other = srv.kubectl("auth", "can-i", "--list", "-n", "default", "--as", "alice").stdout
    assert "pods " not in other and "configmaps" not in other


def test_rbac_tables(srv) -> None:
    out = srv.kubectl("get", "rolebindings", "-n", "dev", "-o", "wide").stdout.splitlines()
    assert out[0].split() == ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    cm = next(line.split() for line in out if line.startswith("alice-cm"))
    assert cm[1] == "Role/one-cm" and cm[3:] == ["alice", "devs", "dev/ci"]
    roles = srv.kubectl("get", "clusterroles", "cluster-admin", "view").stdout.splitlines()
    assert roles[0].split() == ["NAME", "CREATED", "AT"]
    assert [r.split()[0] for r in roles[1:]] == ["cluster-admin", "view"]


def test_components_on_their_own_identities(srv) -> None:
    """Rows of the authorization table for the control plane's own components: the scheduler's and
    the controller manager's kubeconfigs (written by the API server, as kubeadm's scheduler.conf and
    controller-manager.conf) and a controller's service account; a certificate of another CA."""
    import subprocess
    from kubepy.api import certs
    from tests.e2e.conftest import KUBECTL

    def as_file(name: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([KUBECTL, "--kubeconfig", str(srv.data_dir / name), *args], capture_output=True,
                              text=True, timeout=60)

    who = as_file("scheduler.kubeconfig", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert who.stdout == "system:kube-scheduler", who.stderr
    # the scheduler creating a Pod: 403
    made = as_file("scheduler.kubeconfig", "run", "sneaky", "--image=busybox", "-n", "dev")
    assert made.returncode == 1 and "Forbidden" in made.stderr and \
        'User "system:kube-scheduler" cannot create resource "pods"' in made.stderr, made.stderr
    assert as_file("scheduler.kubeconfig", "auth", "can-i", "create", "pods", "--subresource=binding",
                   "-n", "dev").stdout.strip() \
        == "yes"
    assert as_file("scheduler.kubeconfig", "auth", "can-i", "get", "secrets", "-n", "dev").stdout.strip() == "no"
    cm = "controller-manager.kubeconfig"
    assert as_file(cm, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout == \
        "system:kube-controller-manager"
    assert as_file(cm, "auth", "can-i", "create", "serviceaccounts/token", "-n", "kube-system").stdout.strip() \
        == "yes"
    assert as_file(cm, "auth", "can-i", "create", "pods", "-n", "dev").stdout.strip() == "no"
    rs = "--as=system:serviceaccount:kube-system:replicaset-controller"
    deadline = time.monotonic() + 10
    while can_i(srv, "create", "pods", "-n", "dev", rs) != (0, "yes") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert can_i(srv, "create", "pods", "-n", "dev", rs) == (0, "yes")
    assert can_i(srv, "get", "secrets", "-n", "dev", rs) == (1, "no")
    assert can_i(srv, "create", "deployments.apps", "-n", "dev", rs) == (1, "no")
    # nothing but admin.kubeconfig is system:masters
    for name in ("scheduler.kubeconfig", cm):
        assert "system:masters" not in as_file(name, "auth", "whoami").stdout
    # a client certificate of another CA: 401 from the authenticator, not a TLS failure
    other = srv.data_dir / "other-ca"
    other.mkdir(exist_ok=True)
    crt, key = certs.issue_client_cert(other, user="kubernetes-admin", groups=("system:masters",))
    import base64
    import yaml
    cfg = yaml.safe_load(srv.kubeconfig.read_text())
    cfg["users"][0]["user"] = {"client-certificate-data": base64.b64encode(crt).decode(),
                               "client-key-data": base64.b64encode(key).decode()}
    forged = srv.data_dir / "forged.kubeconfig"
    forged.write_text(yaml.safe_dump(cfg))
    forged.chmod(0o600)
    cp = as_file("forged.kubeconfig", "auth", "whoami")
    assert cp.returncode == 1 and "(Unauthorized)" in cp.stderr, cp.stderr
