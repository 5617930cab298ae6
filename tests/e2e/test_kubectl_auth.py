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
