"""Not part of the vendored suite: `helm test` of `helm create`'s default chart on the
same lab cluster (its pods really run), so Helm 3 is checked end to end without
--disable-openapi-validation (issue 12). The chart's nginx and its test hook's busybox
come from the package's registry, as the suite's images do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HELM = shutil.which("helm", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


def test_helm_install_test_upgrade_uninstall_on_a_lab(pyclient_e2e_lab):
    assert HELM, "helm not found: .ci/install puts Helm 3 in .venv/bin"
    lab = pyclient_e2e_lab
    home = Path(tempfile.mkdtemp(prefix="kptest-helm-lab-"))
    env = {**os.environ, "KUBECONFIG": str(lab.kubeconfig), "HOME": str(home),
           "XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_DATA_HOME": str(home / "data")}
    ns = "kptest-helm"

    def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        cp = subprocess.run([HELM, *args], env=env, capture_output=True, text=True, timeout=300)
        assert not check or cp.returncode == 0, f"helm {' '.join(args)}:\n{cp.stdout}\n{cp.stderr}"
        return cp

    try:
        helm("create", str(home / "demo"))
        helm("install", "demo", str(home / "demo"), "-n", ns, "--create-namespace", "--wait", "--timeout", "4m")
        test = helm("test", "demo", "-n", ns, "--timeout", "4m")
        assert "Phase:          Succeeded" in test.stdout, test.stdout
        helm("upgrade", "demo", str(home / "demo"), "-n", ns, "--set", "replicaCount=2", "--wait", "--timeout", "4m")
        status = json.loads(helm("status", "demo", "-n", ns, "-o", "json").stdout)
        assert status["info"]["status"] == "deployed" and status["version"] == 2
        test = helm("test", "demo", "-n", ns, "--timeout", "4m")
        assert "Phase:          Succeeded" in test.stdout, test.stdout
        helm("uninstall", "demo", "-n", ns)
    finally:
        helm("uninstall", "demo", "-n", ns, check=False)
        lab.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)
        shutil.rmtree(home, ignore_errors=True)
