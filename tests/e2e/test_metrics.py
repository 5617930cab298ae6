"""Resource metrics end to end on a one-node lab: kubelet stats → metrics server → aggregation → kubectl top.

The control plane runs ``kubepy metrics-server`` and registers it (Service, Endpoints, APIService
``v1beta1.metrics.k8s.io``); the stock kubectl's ``top`` reads ``metrics.k8s.io`` through the API
server's aggregation layer. A pod holding ~30 MB shows memory; a pod that starts burning CPU when
told (a file made with ``kubectl exec``) shows its CPU rise from idle.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.e2e.test_lab import Lab, wait_for

pytestmark = pytest.mark.slow

IMAGE = "docker.io/library/busybox:1.36"

# Burns CPU only while /tmp/go exists; holds ~30 MB in a shell variable throughout.
BURN = ("x=$(head -c 30000000 /dev/zero | tr '\\0' a); "
        "while :; do while [ ! -e /tmp/go ]; do sleep 1; done; while [ -e /tmp/go ]; do :; done; done")


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        lab.up_with_busybox(1)
        lab.kubectl("run", "kptest-burn", f"--image={IMAGE}", "--image-pull-policy=Never", "--labels=app=burn",
                    "--", "sh", "-c", BURN)
        lab.kubectl("create", "namespace", "kptest-other")
        lab.kubectl("run", "kptest-idle", "-n", "kptest-other", f"--image={IMAGE}", "--image-pull-policy=Never",
                    "--", "sleep", "3600")
        lab.kubectl("wait", "--for=condition=Ready", "pod/kptest-burn", "--timeout=60s")
        lab.kubectl("wait", "-n", "kptest-other", "--for=condition=Ready", "pod/kptest-idle", "--timeout=60s")
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


def _cpu_milli(text: str) -> int:
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def _mebi(text: str) -> int:
    return int(text[:-2]) if text.endswith("Mi") else 0


def top(lab: Lab, *args: str) -> list[list[str]]:
    """``kubectl top ARGS`` as rows of cells ([] while the metrics API has nothing yet)."""
    cp = lab.kubectl("top", *args, check=False)
    if cp.returncode:
        return []
    return [re.split(r"\s{2,}", line.strip()) for line in cp.stdout.splitlines()[1:] if line.strip()]


def test_the_metrics_api_is_registered_available_and_discoverable(lab: Lab) -> None:
    def available():
        svc = lab.json("get", "apiservice", "v1beta1.metrics.k8s.io")
        conds = {c["type"]: c for c in (svc.get("status") or {}).get("conditions") or []}
        return conds.get("Available", {}).get("status") == "True" and svc
    svc = wait_for(available, 60, "APIService v1beta1.metrics.k8s.io Available")
    assert svc["spec"]["service"] == {"name": "metrics-server", "namespace": "kube-system", "port": 443}
    assert svc["spec"]["caBundle"] and not svc["spec"].get("insecureSkipTLSVerify")
    out = lab.kubectl("api-resources", "--api-group=metrics.k8s.io").stdout
    assert re.search(r"^nodes\s+metrics.k8s.io/v1beta1\s+false\s+NodeMetrics$", out, re.M), out
    assert re.search(r"^pods\s+metrics.k8s.io/v1beta1\s+true\s+PodMetrics$", out, re.M), out
    printed = lab.kubectl("get", "apiservice", "v1beta1.metrics.k8s.io").stdout
    assert re.search(r"v1beta1.metrics.k8s.io\s+kube-system/metrics-server\s+True", printed), printed


def test_kubectl_top_node_and_pods(lab: Lab) -> None:
    nodes = wait_for(lambda: top(lab, "node"), 60, "kubectl top node")
    [[name, cpu, cpu_pct, mem, mem_pct]] = nodes
    assert name == f"{lab.name}-node1"
    assert _cpu_milli(cpu) > 0 and _mebi(mem) > 0 and cpu_pct.endswith("%") and mem_pct.endswith("%")
    rows = wait_for(lambda: (r := top(lab, "pod", "-A")) and len(r) == 2 and r, 60, "kubectl top pod -A")
    by_pod = {(r[0], r[1]): r for r in rows}
    assert set(by_pod) == {("default", "kptest-burn"), ("kptest-other", "kptest-idle")}
    assert _mebi(by_pod[("default", "kptest-burn")][3]) >= 20   # the ~30 MB it holds
    # One namespace, by label, per container.
    [[pod, container, _, mem]] = top(lab, "pod", "-l", "app=burn", "--containers")
    assert (pod, container) == ("kptest-burn", "kptest-burn") and _mebi(mem) >= 20
    assert [r[0] for r in top(lab, "pod", "-n", "kptest-other")] == ["kptest-idle"]
    # The kubelet's own Summary API, through the nodes/proxy subresource.
    summary = json.loads(lab.kubectl("get", "--raw", f"/api/v1/nodes/{lab.name}-node1/proxy/stats/summary").stdout)
    pods = {p["podRef"]["name"]: p for p in summary["pods"]}
    assert pods["kptest-burn"]["memory"]["workingSetBytes"] > 20 * 2**20
    assert pods["kptest-burn"]["containers"][0]["cpu"]["usageCoreNanoSeconds"] > 0
    assert summary["node"]["cpu"]["usageCoreNanoSeconds"] > 0


def test_a_pod_burning_cpu_shows_its_cpu_rise(lab: Lab) -> None:
    def burn_cpu() -> int | None:
        rows = top(lab, "pod", "kptest-burn")
        return _cpu_milli(rows[0][1]) if rows else None
    before = wait_for(lambda: (c := burn_cpu()) is not None and (c,), 60, "metrics of kptest-burn")[0]
    assert before < 100, f"kptest-burn is idle until told, yet uses {before}m"
    lab.kubectl("exec", "kptest-burn", "--", "touch", "/tmp/go")
    try:
        after = wait_for(lambda: (c := burn_cpu()) is not None and c >= 200 and c, 75, "kptest-burn's CPU to rise")
    finally:
        # A core burnt for the rest of the module would slow every later test on a two-core host.
        lab.kubectl("exec", "kptest-burn", "--", "rm", "-f", "/tmp/go")
    assert after >= before + 150


def test_metrics_need_rbac(lab: Lab) -> None:
    cp = lab.kubectl("top", "pod", "--as=kptest-nobody", check=False)
    assert cp.returncode != 0
    assert ('pods.metrics.k8s.io is forbidden: User "kptest-nobody" cannot list resource "pods" in API group '
            '"metrics.k8s.io" in the namespace "default"') in cp.stderr
    # view (and so edit and admin) may read them, through the aggregated-metrics-reader role.
    lab.kubectl("create", "rolebinding", "kptest-view", "--clusterrole=view", "--user=kptest-viewer")
    rows = wait_for(lambda: top(lab, "pod", "--as=kptest-viewer"), 30, "kubectl top pod as a viewer")
    assert rows[0][0] == "kptest-burn"
