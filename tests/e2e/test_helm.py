"""Helm 3 (the stock binary) against a real API server: validation needs OpenAPI v2 in protobuf.

Helm 3 validates every manifest against /openapi/v2 (protobuf only); before the API server
served it, install and upgrade failed with "the server could not find the requested
resource" unless given --disable-openapi-validation. Pods don't run here (no nodes): that
part of `helm test` is the lab's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.e2e.conftest import running_apiserver

pytestmark = pytest.mark.slow

HELM = shutil.which("helm", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


@pytest.fixture(scope="module")
def helm_env():
    assert HELM, "helm not found: .ci/install puts Helm 3 in .venv/bin"
    home = Path(tempfile.mkdtemp(prefix="kptest-helm-"))
    try:
        with running_apiserver() as srv:
            env = {**os.environ, "KUBECONFIG": str(srv.kubeconfig), "HOME": str(home),
                   "XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config"),
                   "XDG_DATA_HOME": str(home / "data")}
            subprocess.run([HELM, "create", str(home / "demo")], env=env, check=True, capture_output=True)
            yield srv, env, home / "demo"
    finally:
        shutil.rmtree(home, ignore_errors=True)


def helm(env, *args: str) -> subprocess.CompletedProcess:
    cp = subprocess.run([HELM, *args], env=env, capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, f"helm {' '.join(args)}:\n{cp.stdout}\n{cp.stderr}"
    return cp


def test_install_upgrade_rollback_uninstall_with_validation(helm_env):
    srv, env, chart = helm_env
    helm(env, "install", "web", str(chart), "--wait=false")
    dep = json.loads(srv.kubectl("get", "deployment", "web-demo", "-o", "json").stdout)
    assert dep["spec"]["replicas"] == 1
    assert dep["metadata"]["annotations"]["meta.helm.sh/release-name"] == "web"
    helm(env, "upgrade", "web", str(chart), "--set", "replicaCount=3")
    assert json.loads(srv.kubectl("get", "deployment", "web-demo", "-o", "json").stdout)["spec"]["replicas"] == 3
    history = json.loads(helm(env, "history", "web", "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2] and history[-1]["status"] == "deployed"
    helm(env, "rollback", "web", "1")
    assert json.loads(srv.kubectl("get", "deployment", "web-demo", "-o", "json").stdout)["spec"]["replicas"] == 1
    helm(env, "uninstall", "web")
    gone = srv.kubectl("get", "deployment", "web-demo", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_validation_is_real(helm_env):
    # A manifest with a field the schema doesn't have is refused by Helm's own validation.
    srv, env, chart = helm_env
    bad = chart.parent / "bad"
    shutil.copytree(chart, bad)
    (bad / "templates" / "extra.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\ndata: {a: b}\nnotAField: 1\n")
    cp = subprocess.run([HELM, "install", "bad", str(bad)], env=env, capture_output=True, text=True, timeout=120)
    assert cp.returncode != 0 and "notAField" in cp.stderr, cp.stderr
