"""Persistent storage on a two-node lab cluster, driven by the stock kubectl:
a claim of the default class (local-path, WaitForFirstConsumer) is provisioned
on the node its pod is scheduled to, as a directory under that node's kubelet
root; data written by one pod is read by the next; a claim in use stays
Terminating until its pod is gone; Delete removes the directory, Retain keeps
it and leaves the volume Released; a static PersistentVolume is bound by a
matching claim; a claim no node can hold stays Pending with events saying why;
a StatefulSet's pods keep their data across deletion; ``kubepy down`` leaves
no volume directory and no mount.

The lab's nodes share the host's filesystem (they are network namespaces), so
the test looks at the volume directories directly, where ``kubectl get pv``
says they are.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.test_lab import Lab, host_state

pytestmark = pytest.mark.slow

IMAGE = "busybox:1.36"


def apply(lab: Lab, *objs: dict) -> None:
    lab.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in objs))


def wait_until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def claim(name: str, size: str = "64Mi", **spec) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}, **spec}}


def pod(name: str, claim_name: str, command: str, *, restart: str = "Never") -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                                     "command": ["sh", "-c", command],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}]}}


def phase(lab: Lab, kind: str, name: str) -> str:
    cp = lab.kubectl("get", kind, name, "-o", "jsonpath={.status.phase}", check=False)
    return cp.stdout if cp.returncode == 0 else "<gone>"


def gone(lab: Lab, kind: str, name: str) -> bool:
    return lab.kubectl("get", kind, name, check=False).returncode != 0


def events_of(lab: Lab, name: str) -> list[str]:
    items = lab.json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return [f"{e['type']} {e['reason']} {e['message']}" for e in items]


def volume_of(lab: Lab, claim_name: str) -> dict:
    name = lab.json("get", "pvc", claim_name)["spec"]["volumeName"]
    return lab.json("get", "pv", name)


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        up = lab.up_with_busybox(3)   # the issue judges on three nodes
        assert "ready in" in up.stdout, up.stdout
        lab.volume_dirs = []  # type: ignore[attr-defined]
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


def test_a_claim_of_the_default_class_is_provisioned_on_its_pods_node(lab: Lab):
    sc = lab.kubectl("get", "storageclass", "--no-headers").stdout.split()
    assert sc[:6] == ["local-path", "(default)", "kubepy.io/local-path", "Delete", "WaitForFirstConsumer", "false"], sc
    apply(lab, claim("data"))
    time.sleep(1)
    assert phase(lab, "pvc", "data") == "Pending"
    assert any("WaitForFirstConsumer waiting for first consumer to be created before binding" in e
               for e in events_of(lab, "data"))
    apply(lab, pod("writer", "data", "echo hello from the first pod > /data/greeting; sleep 3600"))
    lab.kubectl("wait", "--for=condition=Ready", "pod/writer", "--timeout=60s", timeout=70)
    node = lab.json("get", "pod", "writer")["spec"]["nodeName"]
    pvc = lab.json("get", "pvc", "data")
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["storageClassName"] == "local-path"
    assert pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == node
    pv = volume_of(lab, "data")
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]
    path = Path(pv["spec"]["hostPath"]["path"])
    assert path.parent.name == "storage" and node in str(path), path  # under that node's kubelet root
    lab.volume_dirs.append(path)  # type: ignore[attr-defined]
    assert (path / "greeting").read_text() == "hello from the first pod\n"
    row = lab.kubectl("get", "pvc", "data", "--no-headers").stdout.split()
    assert row[:5] == ["data", "Bound", pv["metadata"]["name"], "64Mi", "RWO"] and row[5] == "local-path", row


def test_the_next_pod_reads_what_the_first_wrote(lab: Lab):
    lab.kubectl("delete", "pod", "writer", "--wait=true", timeout=70)
    apply(lab, pod("reader", "data", "cat /data/greeting"))
    wait_until(lambda: phase(lab, "pod", "reader") == "Succeeded", 60, "reader to finish")
    assert lab.kubectl("logs", "reader").stdout == "hello from the first pod\n"


def test_a_claim_in_use_stays_terminating_then_delete_removes_its_directory(lab: Lab):
    apply(lab, pod("holder", "data", "sleep 3600", restart="Always"))
    lab.kubectl("wait", "--for=condition=Ready", "pod/holder", "--timeout=60s", timeout=70)
    lab.kubectl("delete", "pod", "reader", "--wait=true")
    pv_name, path = volume_of(lab, "data")["metadata"]["name"], lab.volume_dirs[0]  # type: ignore[attr-defined]
    lab.kubectl("delete", "pvc", "data", "--wait=false")
    time.sleep(2)
    assert lab.kubectl("get", "pvc", "data", "--no-headers").stdout.split()[1] == "Terminating"
    assert path.is_dir()
    lab.kubectl("delete", "pod", "holder", "--wait=true", timeout=70)
    wait_until(lambda: gone(lab, "pvc", "data"), 30, "the claim to go once its pod is gone")
    wait_until(lambda: gone(lab, "pv", pv_name), 30, "the Delete volume to go")
    assert not path.exists()


def test_retain_keeps_the_directory_and_the_volume_goes_released(lab: Lab):
    apply(lab, {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "keep"},
                "provisioner": "kubepy.io/local-path", "reclaimPolicy": "Retain",
                "volumeBindingMode": "WaitForFirstConsumer"},
          claim("kept", storageClassName="keep"), pod("keeper", "kept", "echo precious > /data/f"))
    wait_until(lambda: phase(lab, "pod", "keeper") == "Succeeded", 60, "keeper to finish")
    pv = volume_of(lab, "kept")
    path = Path(pv["spec"]["hostPath"]["path"])
    lab.volume_dirs.append(path)  # type: ignore[attr-defined]
    lab.kubectl("delete", "pod", "keeper", "--wait=true")
    lab.kubectl("delete", "pvc", "kept", "--wait=true", timeout=70)
    wait_until(lambda: phase(lab, "pv", pv["metadata"]["name"]) == "Released", 30, "the volume to be Released")
    assert (path / "f").read_text() == "precious\n"
    row = lab.kubectl("get", "pv", pv["metadata"]["name"], "--no-headers").stdout.split()
    assert row[2:6] == ["RWO", "Retain", "Released", "default/kept"], row


def test_a_static_volume_is_bound_by_a_matching_claim(lab: Lab):
    static = lab.root / "static-volume"
    static.mkdir()
    apply(lab, {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "static-small"},
                "spec": {"capacity": {"storage": "100Mi"}, "accessModes": ["ReadWriteOnce"],
                         "storageClassName": "manual", "hostPath": {"path": str(static / "small")}}},
          {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "static-fit"},
           "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "manual", "hostPath": {"path": str(static), "type": "Directory"}}},
          claim("manual", "500Mi", storageClassName="manual"))
    wait_until(lambda: phase(lab, "pvc", "manual") == "Bound", 30, "the static claim to bind")
    assert lab.json("get", "pvc", "manual")["spec"]["volumeName"] == "static-fit"
    assert phase(lab, "pv", "static-small") == "Available"
    apply(lab, pod("static-user", "manual", "echo static > /data/s"))
    wait_until(lambda: phase(lab, "pod", "static-user") == "Succeeded", 60, "the static volume's pod")
    assert (static / "s").read_text() == "static\n"
    read_only = pod("static-ro", "manual", "cat /data/s; echo more > /data/s")
    read_only["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"] = True
    apply(lab, read_only)
    wait_until(lambda: phase(lab, "pod", "static-ro") == "Failed", 60, "the read-only pod's write to fail")
    assert lab.kubectl("logs", "static-ro").stdout.startswith("static\n")
    assert (static / "s").read_text() == "static\n"


def test_a_claim_no_node_can_hold_stays_pending_and_says_why(lab: Lab):
    apply(lab, claim("huge", "100Ti"), pod("hungry", "huge", "true"))

    def scheduling_message():
        cond = [c for c in lab.json("get", "pod", "hungry")["status"].get("conditions", [])
                if c["type"] == "PodScheduled"]
        return cond and cond[0].get("message")
    message = wait_until(scheduling_message, 30, "the pod's scheduling verdict")
    assert message.startswith("0/3 nodes are available: 3 node(s) did not have enough free storage."), message
    assert phase(lab, "pvc", "huge") == "Pending"
    warnings = wait_until(lambda: [e for e in events_of(lab, "huge") if e.startswith("Warning ProvisioningFailed")],
                          30, "a warning on the claim")
    assert "no node has 100Ti of free storage for class local-path" in warnings[0]
    lab.kubectl("delete", "pod", "hungry", "--wait=false")


def test_a_statefulset_keeps_each_pods_data_across_deletion(lab: Lab):
    apply(lab, {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "kv"},
                "spec": {"serviceName": "kv", "replicas": 2, "podManagementPolicy": "Parallel",
                         "selector": {"matchLabels": {"app": "kv"}},
                         "template": {"metadata": {"labels": {"app": "kv"}}, "spec": {
                             "terminationGracePeriodSeconds": 0,
                             "containers": [{"name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                                             "command": ["sh", "-c", "[ -f /data/id ] || (hostname; date +%s%N) "
                                                                     "> /data/id; exec sleep 3600"],
                                             "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                         "volumeClaimTemplates": [claim("data")]}})
    lab.kubectl("rollout", "status", "statefulset/kv", "--timeout=90s", timeout=100)
    first = {i: lab.kubectl("exec", f"kv-{i}", "--", "cat", "/data/id").stdout for i in (0, 1)}
    assert first[0].startswith("kv-0\n") and first[1].startswith("kv-1\n")
    lab.volume_dirs.extend(Path(volume_of(lab, f"data-kv-{i}")["spec"]["hostPath"]["path"])  # type: ignore[attr-defined]
                           for i in (0, 1))
    old_uid = lab.json("get", "pod", "kv-0")["metadata"]["uid"]
    lab.kubectl("delete", "pod", "kv-0", "--wait=true", timeout=70)
    wait_until(lambda: lab.kubectl("get", "pod", "kv-0", "-o", "jsonpath={.metadata.uid}", check=False).stdout
               not in ("", old_uid), 60, "kv-0 to come back")
    lab.kubectl("wait", "--for=condition=Ready", "pod/kv-0", "--timeout=60s", timeout=70)
    assert lab.kubectl("exec", "kv-0", "--", "cat", "/data/id").stdout == first[0]


def test_a_kubelet_restart_keeps_the_claim_mounted_and_its_data(lab: Lab):
    """SIGKILL the kubelet of kv-0's node: the supervisor starts another, which adopts the pod;
    the same container still reads and writes its claim."""
    before = lab.json("get", "pod", "kv-0")
    node = before["spec"]["nodeName"]
    supervisor = lab.root / lab.name / "supervisor.json"
    old = json.loads(supervisor.read_text())["daemons"][f"{node}/kubelet"]["pid"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: (lambda p: p if p and p != old else None)(
        json.loads(supervisor.read_text())["daemons"][f"{node}/kubelet"].get("pid")), 60, "a new kubelet")
    wait_until(lambda: any(c["type"] == "Ready" and c["status"] == "True"
                           for c in lab.json("get", "node", node)["status"]["conditions"]), 60, "node Ready")
    time.sleep(3)  # a sync or two of the new kubelet
    after = lab.json("get", "pod", "kv-0")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["status"]["containerStatuses"][0]["restartCount"] == \
        before["status"]["containerStatuses"][0]["restartCount"]
    assert lab.kubectl("exec", "kv-0", "--", "cat", "/data/id").stdout.startswith("kv-0\n")
    lab.kubectl("exec", "kv-0", "--", "sh", "-c", "echo after-restart > /data/note")
    assert lab.kubectl("exec", "kv-0", "--", "cat", "/data/note").stdout == "after-restart\n"


def test_down_leaves_no_volume_directory_and_no_mount(lab: Lab):
    dirs = list(lab.volume_dirs)  # type: ignore[attr-defined]
    assert any(d.exists() for d in dirs), "the check needs volume directories that down must remove"
    lab.kubepy("down")
    assert [d for d in dirs if d.exists()] == []
    mounts = {m for m in host_state()["mounts"] - lab.before["mounts"] if str(lab.root) in m or lab.name in m}
    assert not mounts, mounts
