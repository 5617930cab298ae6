"""Authentication with the stock kubectl against a real ``kubepy apiserver`` process:
the admin's client certificate (as kubeadm writes admin.conf), ``kubectl create token``
(duration, audience, bound to a pod) and ``kubectl auth whoami`` with that token.
No nodes are needed: every answer comes from the API server."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import yaml

from tests.e2e.conftest import KUBECTL, APIServerProcess, running_apiserver

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def srv() -> Iterator[APIServerProcess]:
    with running_apiserver("kubepy-authn-") as s:
        yield s


def kubectl(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    assert KUBECTL
    cp = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                        timeout=60)
    if check:
        assert cp.returncode == 0, f"kubectl {' '.join(args)}:\n{cp.stdout}\n{cp.stderr}"
    return cp


def _variant(srv: APIServerProcess, name: str, keep: tuple[str, ...]) -> Path:
    """The admin kubeconfig with only the user fields in ``keep``."""
    cfg = yaml.safe_load(srv.kubeconfig.read_text())
    user = cfg["users"][0]["user"]
    cfg["users"][0]["user"] = {k: v for k, v in user.items() if k in keep}
    path = srv.data_dir / name
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return path


def _whoami_rows(out: str) -> dict[str, str]:
    lines = out.strip().splitlines()
    assert lines[0].split() == ["ATTRIBUTE", "VALUE"], out
    return {line[:lines[0].index("VALUE")].strip(): line[lines[0].index("VALUE"):].strip() for line in lines[1:]}


def test_the_admin_kubeconfig_is_a_kubeadm_style_certificate_kubeconfig(srv: APIServerProcess):
    assert srv.kubeconfig.stat().st_mode & 0o777 == 0o600
    view = yaml.safe_load(kubectl(srv.kubeconfig, "config", "view").stdout)
    assert view["current-context"] == "kubernetes-admin@kubepy"
    assert view["users"][0]["name"] == "kubernetes-admin"
    assert view["users"][0]["user"]["client-certificate-data"] == "DATA+OMITTED"
    assert view["users"][0]["user"]["client-key-data"] == "DATA+OMITTED"
    certs_only = _variant(srv, "cert.kubeconfig", ("client-certificate-data", "client-key-data"))
    rows = _whoami_rows(kubectl(certs_only, "auth", "whoami").stdout)
    assert rows == {"Username": "kubernetes-admin", "Groups": "[system:masters system:authenticated]"}
    # and the certificate alone is an admin
    assert "kube-system" in kubectl(certs_only, "get", "namespaces").stdout


def test_kubectl_create_token_and_whoami(srv: APIServerProcess):
    k = srv.kubeconfig
    kubectl(k, "create", "serviceaccount", "robot")
    kubectl(k, "run", "p", "--image=busybox:1.36", "--overrides",
            '{"spec": {"serviceAccountName": "robot"}}')
    uid = kubectl(k, "get", "sa", "robot", "-o", "jsonpath={.metadata.uid}").stdout
    pod_uid = kubectl(k, "get", "pod", "p", "-o", "jsonpath={.metadata.uid}").stdout

    bound = kubectl(k, "create", "token", "robot", "--duration", "10m", "--audience", "x",
                    "--bound-object-kind", "Pod", "--bound-object-name", "p").stdout.strip()
    claims = jwt.decode(bound, options={"verify_signature": False})
    assert claims["aud"] == ["x"] and claims["exp"] - claims["iat"] == 600
    assert claims["kubernetes.io"]["pod"] == {"name": "p", "uid": pod_uid}

    too_short = kubectl(k, "create", "token", "robot", "--duration", "1m", check=False)
    assert too_short.returncode != 0
    assert "may not specify a duration less than 10 minutes" in too_short.stderr, too_short.stderr

    token = kubectl(k, "create", "token", "robot", "--bound-object-kind", "Pod",
                    "--bound-object-name", "p").stdout.strip()
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    anonymous = _variant(srv, "cluster-only.kubeconfig", ())
    rows = _whoami_rows(kubectl(anonymous, "--token", token, "auth", "whoami").stdout)
    assert rows["Username"] == "system:serviceaccount:default:robot"
    assert rows["UID"] == uid
    assert rows["Groups"] == "[system:serviceaccounts system:serviceaccounts:default system:authenticated]"
    assert rows["Extra: authentication.kubernetes.io/credential-id"] == f"[JTI={jti}]"
    assert rows["Extra: authentication.kubernetes.io/pod-name"] == "[p]"
    assert rows["Extra: authentication.kubernetes.io/pod-uid"] == f"[{pod_uid}]"
    # the audience-x token is not for the API server; after the pod goes, neither is the other
    assert kubectl(anonymous, "--token", bound, "auth", "whoami", check=False).returncode != 0
    kubectl(k, "delete", "pod", "p", "--grace-period=0", "--force")
    gone = kubectl(anonymous, "--token", token, "auth", "whoami", check=False)
    assert gone.returncode != 0 and "Unauthorized" in gone.stderr, gone.stderr
    # the legacy Secret form: kubectl reads its token like on Kubernetes
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
              "metadata": {"name": "robot-token", "annotations": {"kubernetes.io/service-account.name": "robot"}}}
    subprocess.run([KUBECTL, "--kubeconfig", str(k), "apply", "-f", "-"], input=yaml.safe_dump(secret),
                   check=True, capture_output=True, text=True, timeout=60)
    legacy = base64.b64decode(kubectl(k, "get", "secret", "robot-token", "-o",
                                      "jsonpath={.data.token}").stdout).decode()
    rows = _whoami_rows(kubectl(anonymous, "--token", legacy, "auth", "whoami").stdout)
    assert rows["Username"] == "system:serviceaccount:default:robot"
