"""Resource metrics end to end on a one-node lab: kubelet stats → metrics server → aggregation → kubectl top.

The control plane runs ``kubepy metrics-server`` and registers it (Service, Endpoints, APIService
``v1beta1.metrics.k8s.io``); the stock kubectl's ``top`` reads ``metrics.k8s.io`` through the API
server's aggregation layer. A pod holding ~30 MB shows memory; a pod that starts burning CPU when
told (a file made with ``kubectl exec``) shows its CPU rise from idle. Last, the same metrics drive
a HorizontalPodAutoscaler: a web Deployment behind a Service scales from 1 to 3 or more replicas
while a load-generator pod sends it requests, and back to 1 once the load generator is deleted.
"""

from __future__ import annotations

import json
import re
import shutil
import time

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


# -- the horizontal pod autoscaler, end to end --------------------------------------------------------
HPA_NS = "kptest-hpa"

# A web Deployment whose every request to /cgi-bin/burn spends ~0.1 s of CPU in the pod that serves
# it, a Service in front, and an autoscaling/v2 HPA on its CPU: target 50% of the 100m request,
# 1-4 replicas, scale-up at once (upstream's default policies: +4 pods or +100% per 15 s) and a
# scale-down window of 5 s instead of 5 minutes, so the test sees both ways within minutes.
HPA_APP = f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: kptest-web-cgi, namespace: {HPA_NS}}}
data:
  burn: |
    #!/bin/sh
    i=0; while [ $i -lt 50000 ]; do i=$((i+1)); done
    printf 'Content-Type: text/plain\\r\\n\\r\\n'
    hostname
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: kptest-web, namespace: {HPA_NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: kptest-web}}}}
  template:
    metadata: {{labels: {{app: kptest-web}}}}
    spec:
      terminationGracePeriodSeconds: 1   # httpd as PID 1 ignores SIGTERM
      containers:
      - name: httpd
        image: busybox:1.36
        imagePullPolicy: Never
        command: [httpd, -f, -p, "8080", -h, /www]
        ports: [{{name: http, containerPort: 8080}}]
        resources: {{requests: {{cpu: 100m}}}}
        readinessProbe: {{tcpSocket: {{port: http}}, periodSeconds: 1}}
        volumeMounts: [{{name: cgi, mountPath: /www/cgi-bin}}]
      volumes:
      - name: cgi
        configMap: {{name: kptest-web-cgi, defaultMode: 365}}   # 0555
---
apiVersion: v1
kind: Service
metadata: {{name: kptest-web, namespace: {HPA_NS}}}
spec:
  selector: {{app: kptest-web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: kptest-web, namespace: {HPA_NS}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: kptest-web}}
  minReplicas: 1
  maxReplicas: 4
  metrics:
  - type: Resource
    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 50}}}}
  behavior:
    scaleUp: {{stabilizationWindowSeconds: 0}}
    scaleDown: {{stabilizationWindowSeconds: 5}}
"""

# One client asking again and again, as upstream's HPA walkthrough does; it stops at SIGTERM. A
# request that hangs gives up after 5 s rather than stop the load (`timeout`, not `wget -T`: Debian
# 12's static busybox wget segfaults with -T, and the loop would spin on the crash, sending nothing).
LOAD = ("trap 'exit 0' TERM; "
        "while sleep 0.01; do timeout 5 wget -q -O- http://kptest-web/cgi-bin/burn >/dev/null 2>&1; done")


def _conditions(obj: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def _hpa_and_deployment(lab: Lab) -> tuple[dict, dict]:
    """Both in one request: the test polls for minutes and the host has two cores."""
    items = lab.json("get", "-n", HPA_NS, "horizontalpodautoscaler/kptest-web", "deployment/kptest-web")["items"]
    by_kind = {i["kind"]: i for i in items}
    return by_kind["HorizontalPodAutoscaler"], by_kind["Deployment"]


def _rescales(lab: Lab) -> list[str]:
    events = lab.json("get", "events", "-n", HPA_NS, "--field-selector", "reason=SuccessfulRescale")["items"]
    return [e["message"] for e in events if e["involvedObject"]["kind"] == "HorizontalPodAutoscaler"]


def _wait_for_hpa(lab: Lab, cond, timeout: float, what: str):
    """wait_for, every 2 s; on a timeout the message carries what a user would look at."""
    try:
        return wait_for(cond, timeout, what, interval=2)
    except AssertionError as e:
        seen = [lab.kubectl(*args, "-n", HPA_NS, check=False) for args in (
            ("describe", "hpa", "kptest-web"), ("get", "pods", "-o", "wide"), ("top", "pods"))]
        raise AssertionError("\n".join([str(e), *(cp.stdout + cp.stderr for cp in seen)])) from None


def test_an_hpa_scales_a_deployment_up_under_load_and_back_down(lab: Lab) -> None:
    # The controller manager syncs each HPA every 15 s and the metrics server scrapes every 15 s (the
    # lab's defaults, as upstream's); a new pod's CPU counts once a whole window follows its readiness.
    # So each step below takes about 30-60 s; the deadlines allow a loaded host several times that.
    lab.kubectl("create", "namespace", HPA_NS)
    lab.kubectl("apply", "-f", "-", input=HPA_APP)

    def measured_idle():
        hpa, deploy = _hpa_and_deployment(lab)
        active = _conditions(hpa).get("ScalingActive", {})
        return (active.get("status") == "True" and (hpa["status"].get("currentMetrics") or [])
                and (deploy.get("status") or {}).get("readyReplicas") == 1 and (hpa, deploy))
    hpa, deploy = _wait_for_hpa(lab, measured_idle, 180, "the HPA to measure the idle Deployment")
    [metric] = hpa["status"]["currentMetrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["current"]["averageUtilization"] < 50, metric
    assert (hpa["status"]["currentReplicas"], hpa["status"]["desiredReplicas"]) == (1, 1)
    assert deploy["spec"]["replicas"] == 1
    conds = _conditions(hpa)
    assert conds["AbleToScale"]["status"] == "True"
    assert conds["ScalingActive"]["reason"] == "ValidMetricFound"

    lab.kubectl("run", "kptest-load", "-n", HPA_NS, f"--image={IMAGE}", "--image-pull-policy=Never",
                "--", "sh", "-c", LOAD)
    loaded = time.monotonic()

    def scaled_up():
        hpa, deploy = _hpa_and_deployment(lab)
        st = hpa.get("status") or {}
        return (st.get("currentReplicas", 0) >= 3 and st.get("desiredReplicas", 0) >= 3
                and (deploy.get("status") or {}).get("readyReplicas", 0) >= 3 and (hpa, deploy))
    hpa, deploy = _wait_for_hpa(lab, scaled_up, 240, "the HPA to scale kptest-web to 3 or more ready replicas")
    up_seconds, up_ready = time.monotonic() - loaded, deploy["status"]["readyReplicas"]
    assert deploy["spec"]["replicas"] <= 4
    conds = _conditions(hpa)
    assert conds["AbleToScale"]["status"] == "True", conds
    assert (conds["ScalingActive"]["status"], conds["ScalingActive"]["reason"]) == ("True", "ValidMetricFound")
    assert hpa["status"]["lastScaleTime"]
    up = wait_for(lambda: [m for m in _rescales(lab) if "above target" in m], 30, "a SuccessfulRescale event")
    # One step to 4 when the first sample already shows the load; 2 then more when it caught only its start.
    assert all(re.fullmatch(r"New size: [234]; reason: cpu resource utilization \(percentage of request\) "
                            r"above target", m) for m in up), up
    printed = lab.kubectl("get", "hpa", "-n", HPA_NS).stdout
    assert re.search(r"^kptest-web\s+Deployment/kptest-web\s+cpu: \d+%/50%\s+1\s+4\s+[34]\s", printed, re.M), printed

    lab.kubectl("delete", "pod", "kptest-load", "-n", HPA_NS)
    stopped = time.monotonic()

    def scaled_down():
        hpa, deploy = _hpa_and_deployment(lab)
        st, dst = hpa.get("status") or {}, deploy.get("status") or {}
        return (st.get("desiredReplicas") == 1 and deploy["spec"]["replicas"] == 1
                and dst.get("replicas") == 1 and dst.get("readyReplicas") == 1 and (hpa, deploy))
    hpa, deploy = _wait_for_hpa(lab, scaled_down, 240, "the HPA to scale kptest-web back to 1")
    down_seconds = time.monotonic() - stopped
    down = wait_for(lambda: [m for m in _rescales(lab) if "below target" in m], 30, "a scale-down event")
    assert "New size: 1; reason: All metrics below target" in down, down
    assert _conditions(hpa)["ScalingActive"]["status"] == "True"
    print(f"hpa: load started → {up_ready} replicas ready in {up_seconds:.0f}s; "
          f"load stopped → 1 replica in {down_seconds:.0f}s")
