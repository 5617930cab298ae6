"""A DaemonSet on a lab cluster, driven by the stock kubectl: one Running pod per
node, a node that joins later gets one (``kubepy up --nodes 3`` on the running
2-node cluster: the node joins as the first ones did), a new image rolls out
node by node with at most ``maxUnavailable`` nodes without an available pod,
and ``kubectl rollout undo`` brings the old image back.

One lab for the module; ``kubepy down`` afterwards, on failure too.
"""

from __future__ import annotations

import shutil
import time

import pytest

from tests.e2e.test_lab import Lab, wait_for

pytestmark = pytest.mark.slow

OLD, NEW = "docker.io/library/busybox:1.36", "docker.io/library/busybox:1.37"

AGENT = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: agent
        image: busybox:1.36
        imagePullPolicy: IfNotPresent
        env:
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        command: ["sh", "-c", "trap 'exit 0' TERM; echo agent on $NODE_NAME; while true; do sleep 3600 & wait $!; done"]
"""


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        up = lab.up_with_busybox(2)
        assert "ready in" in up.stdout, up.stdout
        # the image the rollout moves to: the same busybox under another tag, on every node
        from kubepy.images import busybox_image

        archive = lab.root / "busybox-new.tar"
        busybox_image(NEW, archive)
        lab.kubepy("image", "load", str(archive), "--name", lab.name, "--state-dir", str(lab.root))
        lab.archive = archive  # type: ignore[attr-defined]
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


def is_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def agent_pods(lab: Lab) -> list[dict]:
    return lab.json("get", "pods", "-l", "app=agent")["items"]


def one_running_pod_per_node(lab: Lab, nodes: int, image: str) -> list[dict] | None:
    pods = [p for p in agent_pods(lab) if not p["metadata"].get("deletionTimestamp")]
    running = [p for p in pods if p["status"].get("phase") == "Running" and is_ready(p)
               and p["spec"]["containers"][0]["image"].endswith(image.rsplit("/", 1)[-1])]
    on = sorted(p["spec"].get("nodeName") for p in running)
    want = sorted(n["metadata"]["name"] for n in lab.json("get", "nodes")["items"])
    return running if len(pods) == nodes and on == want and len(want) == nodes else None


def test_one_running_pod_on_every_node(lab: Lab):
    lab.kubectl("apply", "-f", "-", input=AGENT)
    pods = wait_for(lambda: one_running_pod_per_node(lab, 2, "busybox:1.36"), 90, "one agent per node")
    for p in pods:
        assert p["metadata"]["labels"]["controller-revision-hash"]
        logs = lab.kubectl("logs", p["metadata"]["name"]).stdout
        assert f"agent on {p['spec']['nodeName']}" in logs
    out = lab.kubectl("rollout", "status", "ds/agent", "--timeout=60s").stdout
    assert 'daemon set "agent" successfully rolled out' in out
    table = lab.kubectl("get", "ds", "agent").stdout.splitlines()
    assert table[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE",
                                "SELECTOR", "AGE"]
    assert table[1].split()[:7] == ["agent", "2", "2", "2", "2", "2", "<none>"]


def test_a_node_that_joins_gets_its_pod(lab: Lab):
    t0 = time.monotonic()
    up = lab.kubepy("up", "--nodes", "3", timeout=240)
    assert f"adding {lab.name}-node3" in up.stdout, up.stdout
    lab.kubepy("image", "load", str(lab.root / "busybox.tar"), "--name", lab.name, "--state-dir", str(lab.root))
    lab.kubepy("image", "load", str(lab.archive), "--name", lab.name, "--state-dir", str(lab.root))
    pods = wait_for(lambda: one_running_pod_per_node(lab, 3, "busybox:1.36"), 120, "an agent on the new node")
    assert f"{lab.name}-node3" in {p["spec"]["nodeName"] for p in pods}
    ds = lab.json("get", "ds", "agent")
    assert (ds["status"]["desiredNumberScheduled"], ds["status"]["numberAvailable"]) == (3, 3)
    print(f"node joined and ran its agent in {time.monotonic() - t0:.1f}s")


def test_new_image_rolls_out_node_by_node(lab: Lab):
    wait_for(lambda: one_running_pod_per_node(lab, 3, "busybox:1.36"), 60, "three agents")
    nodes = sorted(n["metadata"]["name"] for n in lab.json("get", "nodes")["items"])
    lab.kubectl("set", "image", "ds/agent", "agent=busybox:1.37")
    worst, states = 0, []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pods = agent_pods(lab)
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        available = {p["spec"].get("nodeName") for p in live if is_ready(p) and p["status"].get("phase") == "Running"}
        updated = {p["spec"].get("nodeName") for p in live if is_ready(p)
                   and p["spec"]["containers"][0]["image"] == "busybox:1.37"}
        worst = max(worst, len(set(nodes) - available))
        if not states or states[-1] != len(updated):
            states.append(len(updated))
        if updated == set(nodes) and len(live) == 3:
            break
        time.sleep(0.2)
    assert states[-1] == 3, f"the rollout did not finish: {states}"
    assert worst <= 1, f"{worst} nodes were without an available agent at once (maxUnavailable 1)"
    assert states == sorted(states) and len(states) >= 3, f"not node by node: updated nodes went {states}"
    out = lab.kubectl("rollout", "status", "ds/agent", "--timeout=60s").stdout
    assert 'daemon set "agent" successfully rolled out' in out
    history = lab.kubectl("rollout", "history", "ds/agent").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"], history


def test_rollout_undo_brings_the_old_image_back(lab: Lab):
    out = lab.kubectl("rollout", "undo", "ds/agent").stdout
    assert "daemonset.apps/agent rolled back" in out
    lab.kubectl("rollout", "status", "ds/agent", "--timeout=120s")
    pods = wait_for(lambda: one_running_pod_per_node(lab, 3, "busybox:1.36"), 120, "the old image back")
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"busybox:1.36"}
    revisions = {r["metadata"]["name"]: r["revision"] for r in lab.json("get", "controllerrevisions")["items"]}
    assert sorted(revisions.values()) == [2, 3], revisions  # revision 1 came back as 3
    ds = lab.json("get", "ds", "agent")
    assert ds["status"]["observedGeneration"] == ds["metadata"]["generation"] == 3
    assert ds["status"]["updatedNumberScheduled"] == 3
