"""`kubepy up --config cluster.yaml` with kind's own file of three control-plane nodes and a
labelled worker: three control-plane nodes on a three-member etcd behind HAProxy, and the cluster
keeps working when the leaders' node is cut off (issue 21).

Under a steady writer (ConfigMaps through the one address kubectl uses, every acknowledged
name recorded): the link of the control-plane node holding the controller-manager lease goes
down; the API answers again through HAProxy within seconds, both leases move to a live node, a
Deployment scaled meanwhile converges, and every acknowledged write is there afterwards. The
node's link comes back and it rejoins (its API server ready, listed in the kubernetes endpoints).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.test_lab import Lab, wait_for
from tests.e2e.writer import Writer

pytestmark = pytest.mark.slow


class HALab(Lab):
    @property
    def kubeconfig(self) -> Path:
        return self.root / self.name / "admin.kubeconfig"

    def cp_netns(self, j: int) -> str:
        return f"{self.name}-cp{j}"


# kind's docs' shape (kind.sigs.k8s.io/docs/user/configuration): as `kubepy up --control-planes 3 --nodes 1`.
KIND_CLUSTER = """\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
- role: control-plane
- role: control-plane
- role: control-plane
- role: worker
  labels:
    tier: backend
"""


@pytest.fixture(scope="module")
def lab():
    lab = HALab()
    try:
        config = lab.root / "cluster.yaml"
        config.write_text(KIND_CLUSTER)
        up = lab.kubepy("up", "--config", str(config), timeout=400)
        assert "ready in" in up.stdout, up.stdout
        lab.up_stdout = up.stdout
        from kubepy.images import busybox_image

        archive = lab.root / "busybox.tar"
        busybox_image("docker.io/library/busybox:1.36", archive)
        lab.kubepy("image", "load", str(archive), "--name", lab.name, "--state-dir", str(lab.root))
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


def holder(lab: HALab, lease: str) -> str:
    """The lease's holder ("" while the API cannot be read: one loaded host, three control planes)."""
    try:
        return lab.json("get", "lease", "-n", "kube-system", lease)["spec"].get("holderIdentity", "")
    except AssertionError:
        return ""


def api_endpoints(lab: HALab) -> list[str]:
    try:
        ep = lab.json("get", "endpoints", "kubernetes")
    except AssertionError:
        return []
    return sorted(a["ip"] for s in ep.get("subsets", []) for a in s["addresses"])


def metrics_endpoints(lab: HALab) -> list[str]:
    try:
        ep = lab.json("get", "endpoints", "-n", "kube-system", "metrics-server")
    except AssertionError:
        return []
    return sorted(a["ip"] for s in ep.get("subsets", []) for a in s["addresses"])


def node_metrics_served(lab: HALab, times: int) -> bool:
    """``times`` reads of NodeMetrics in a row, each through the aggregator to some metrics server."""
    return all(lab.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes", check=False,
                           timeout=20).returncode == 0 for _ in range(times))


def dashboard_page(lab: HALab) -> str:
    """The dashboard's page through the address `kubepy up` printed, its certificate checked against the
    cluster CA for that address ("" while no control plane's dashboard answers)."""
    url = next(line.split()[1] for line in lab.up_stdout.splitlines() if line.strip().startswith("dashboard:"))
    ctx = ssl.create_default_context(cafile=str(lab.root / lab.name / "controlplane" / "ca.crt"))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


def test_three_api_servers_behind_one_address_and_one_leader_each(lab: HALab):
    server = next(line for line in lab.kubeconfig.read_text().splitlines() if "server:" in line)
    assert ":" in server and ".1:" in server, server  # HAProxy on the bridge's gateway address
    prefix = lab.json("get", "nodes")["items"][0]["status"]["addresses"][0]["address"].rsplit(".", 1)[0]
    assert wait_for(lambda: api_endpoints(lab) == [f"{prefix}.{k}" for k in (2, 3, 4)], 30, "three endpoints")
    for lease in ("kube-scheduler", "kube-controller-manager"):
        assert holder(lab, lease).split("_")[0] in {f"{lab.name}-cp{j}" for j in (1, 2, 3)}
    # The kind file's worker is the lab's one node, with the file's label.
    nodes = lab.json("get", "nodes")["items"]
    assert [(n["metadata"]["name"], n["metadata"]["labels"].get("tier")) for n in nodes] == \
        [(f"{lab.name}-node1", "backend")]
    # Every control plane's metrics server behind the one Service, each trusting every aggregator (one
    # front-proxy CA): reads through any API server to any metrics server are answered.
    wait_for(lambda: metrics_endpoints(lab) == [f"{prefix}.{k}" for k in (2, 3, 4)], 60, "three metrics servers")
    assert node_metrics_served(lab, 9)
    # One dashboard address for the cluster: HAProxy's, in front of every control plane's dashboard.
    assert f"https://{server.split('//')[1].split(':')[0]}:8443/" in lab.up_stdout, lab.up_stdout
    assert "<title>kubepy dashboard</title>" in wait_for(lambda: dashboard_page(lab), 30, "the dashboard")


DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: ha-web}
spec:
  replicas: 1
  selector: {matchLabels: {app: ha-web}}
  template:
    metadata: {labels: {app: ha-web}}
    spec:
      containers: [{name: c, image: "busybox:1.36", command: ["sleep", "3600"]}]
"""


def test_cutting_off_the_leaders_node_keeps_the_cluster_working_and_loses_no_write(lab: HALab):
    lab.kubectl("apply", "-f", "-", input=DEPLOY)
    wait_for(lambda: lab.json("get", "deploy", "ha-web").get("status", {}).get("readyReplicas") == 1, 120, "1 ready pod")
    leader = wait_for(lambda: holder(lab, "kube-controller-manager"), 30, "the leader").split("_")[0]
    j = int(leader.rsplit("cp", 1)[1])
    prefix = lab.json("get", "nodes")["items"][0]["status"]["addresses"][0]["address"].rsplit(".", 1)[0]
    writer = Writer(lab.kubeconfig)
    writer.start()
    try:
        wait_for(lambda: len(writer.acked) >= 10, 30, "the writer going")
        cut = time.monotonic()
        acked_before = len(writer.acked)
        subprocess.run(["ip", "-n", lab.cp_netns(j), "link", "set", "eth0", "down"], check=True)
        try:
            wait_for(lambda: len(writer.acked) >= acked_before + 10, 60, "writes through the other two servers")
            api_back = time.monotonic() - cut
            moved = {}
            for lease in ("kube-controller-manager", "kube-scheduler"):
                wait_for(lambda: (lambda h: h and not h.startswith(leader + "_"))(holder(lab, lease)), 60,
                         f"{lease} moving")
                moved[lease] = time.monotonic() - cut
            assert "<title>kubepy dashboard</title>" in wait_for(
                lambda: dashboard_page(lab), 30, "the dashboard through another control plane")
            # The live control planes drop the cut one's metrics server from the Service (each re-registers
            # every 10 s), so every aggregated read reaches a live one.
            live = [f"{prefix}.{k + 1}" for k in (1, 2, 3) if k != j]
            wait_for(lambda: metrics_endpoints(lab) == live, 60, "the cut metrics server dropped")
            assert node_metrics_served(lab, 6)
            lab.kubectl("scale", "deploy", "ha-web", "--replicas", "3")
            wait_for(lambda: lab.json("get", "deploy", "ha-web").get("status", {}).get("readyReplicas") == 3, 120,
                     "the Deployment converging without the old leaders")
            converged = time.monotonic() - cut
            print(f"control-plane node cp{j} cut off: writes again after {api_back:.1f}s, "
                  + ", ".join(f"{k} lease moved after {v:.1f}s" for k, v in moved.items())
                  + f", Deployment at 3 ready after {converged:.1f}s")
        finally:
            subprocess.run(["ip", "-n", lab.cp_netns(j), "link", "set", "eth0", "up"], check=True)
        assert wait_for(lambda: (lambda e: e if len(e) == 3 else None)(api_endpoints(lab)), 60,
                        "the node rejoining the endpoints") == [f"{prefix}.{k}" for k in (2, 3, 4)]
        wait_for(lambda: metrics_endpoints(lab) == [f"{prefix}.{k}" for k in (2, 3, 4)], 60,
                 "its metrics server registered again")
    finally:
        writer.stop.set()
        writer.join(20)
    names = {c["metadata"]["name"] for c in lab.json("get", "configmaps")["items"]}
    lost = [n for n in writer.acked if n not in names]
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:10]}"
    print(f"{len(writer.acked)} writes acknowledged, none lost; {writer.errors} refused or timed out during the cut")
