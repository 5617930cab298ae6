"""Fault injection on a 3-node lab cluster (issue 11): every daemon killed, nothing acknowledged lost.

While a writer records every acknowledged create and delete and a Deployment keeps scaling,
each daemon `kubepy up` runs is SIGKILLed in turn: the API server, scheduler and controller
manager, the control-plane supervisor, the lab supervisor's active twin, and on every node
containerd, the kubelet, kube-proxy and DNS. Each must come back by itself; afterwards no
acknowledged write is lost or resurrected, the cluster converges, and no healthy pod was
restarted. Then: a Deployment scaled past its progress deadline doesn't stop the controller
manager; a node whose containerd is frozen goes NotReady and comes back; a frozen kubelet's
pods are Terminating (not gone) while replacements run elsewhere; and `kubepy down` leaves no
process or shim of the cluster.

One cluster for the module (name prefix ``kptlab``); traffic stays inside it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from kubepy.controlplane import recorded_children
from tests.e2e.test_lab import wait_for
from tests.e2e.test_lab_supervision import SupervisedLab, proc_alive, processes_naming

pytestmark = pytest.mark.slow

NODES = 3


def deployment(name: str, replicas: int, *, deadline: int = 600, tolerate: int | None = None,
               spread: bool = False) -> str:
    spec: dict = {"terminationGracePeriodSeconds": 1, "containers": [
        {"name": "c", "image": "busybox:1.36", "command": ["sleep", "100000"],
         "resources": {"requests": {"cpu": "10m"}}}]}
    if tolerate is not None:
        spec["tolerations"] = [{"key": f"node.kubernetes.io/{k}", "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": tolerate} for k in ("unreachable", "not-ready")]
    if spread:
        spec["topologySpreadConstraints"] = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                              "whenUnsatisfiable": "DoNotSchedule",
                                              # A node tainted unreachable is no domain to balance against
                                              # (else its replacement could go nowhere, as on Kubernetes).
                                              "nodeTaintsPolicy": "Honor",
                                              "labelSelector": {"matchLabels": {"app": name}}}]
    return json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                       "spec": {"replicas": replicas, "progressDeadlineSeconds": deadline,
                                "selector": {"matchLabels": {"app": name}},
                                "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}})


@pytest.fixture(scope="module")
def lab():
    lab = SupervisedLab()
    try:
        lab.up_with_busybox(NODES)
        yield lab
    finally:
        lab.kubepy("down", check=False)
        import shutil

        shutil.rmtree(lab.root, ignore_errors=True)


def running_pods(lab: SupervisedLab, app: str) -> list[dict]:
    return [p for p in lab.json("get", "pods", "-l", f"app={app}")["items"]
            if not p["metadata"].get("deletionTimestamp") and any(
                c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]


def api_up(lab: SupervisedLab) -> bool:
    return lab.kubectl("get", "--raw", "/readyz", check=False).returncode == 0


class Writer(threading.Thread):
    """Creates ConfigMaps and deletes every third, recording only what the API acknowledged."""

    def __init__(self, kubeconfig: str) -> None:
        super().__init__(daemon=True)
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        self.api = client.CoreV1Api(client.ApiClient(cfg))
        self.created: set[str] = set()
        self.deleted: set[str] = set()
        self.unsure: set[str] = set()   # no answer: either outcome is allowed
        self.stop = threading.Event()

    def run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        i = 0
        while not self.stop.is_set():
            name = f"w-{i}"
            try:
                self.api.create_namespaced_config_map("default", {"metadata": {"name": name}, "data": {"i": str(i)}},
                                                      _request_timeout=5)
                self.created.add(name)
            except ApiException as e:
                (self.unsure if e.status >= 500 or e.status == 409 else set()).add(name)
            except Exception:  # noqa: BLE001 - connection refused/reset while the API server restarts
                self.unsure.add(name)
                time.sleep(0.2)
            if i % 3 == 2:
                victim = f"w-{i - 2}"
                if victim in self.created:
                    try:
                        self.api.delete_namespaced_config_map(victim, "default", _request_timeout=5)
                        self.deleted.add(victim)
                    except ApiException as e:
                        if e.status != 404:
                            self.unsure.add(victim)
                    except Exception:  # noqa: BLE001
                        self.unsure.add(victim)
            i += 1
            time.sleep(0.02)


AGENT = json.dumps({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
                    "spec": {"selector": {"matchLabels": {"app": "agent"}},
                             "template": {"metadata": {"labels": {"app": "agent"}},
                                          "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                                              {"name": "c", "image": "busybox:1.36",
                                               "command": ["sleep", "100000"]}]}}}})
# Ordered identities across the kills: the same two pods, none made twice.
ORDERED = json.dumps({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "ordered"},
                      "spec": {"replicas": 2, "serviceName": "ordered", "selector": {"matchLabels": {"app": "ordered"}},
                               "template": {"metadata": {"labels": {"app": "ordered"}},
                                            "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                                                {"name": "c", "image": "busybox:1.36",
                                                 "command": ["sleep", "100000"]}]}}}})
# Runs across the kills: must run exactly once (completions 1, one pod, one success).
ONCE = json.dumps({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
                   "spec": {"completions": 1, "backoffLimit": 0,
                            "template": {"spec": {"restartPolicy": "Never", "containers": [
                                {"name": "c", "image": "busybox:1.36",
                                 "command": ["sh", "-c", "sleep 20; echo ran once"]}]}}}})


def job_complete(lab: SupervisedLab, name: str) -> bool:
    conds = lab.json("get", "job", name).get("status", {}).get("conditions") or []
    return any(c["type"] == "Complete" and c["status"] == "True" for c in conds)


def test_every_daemon_killed_in_turn_nothing_acknowledged_is_lost(lab: SupervisedLab):
    lab.kubectl("apply", "-f", "-", input=deployment("steady", NODES, spread=True))
    lab.kubectl("apply", "-f", "-", input=deployment("churn", 2))
    lab.kubectl("apply", "-f", "-", input=AGENT)
    lab.kubectl("apply", "-f", "-", input=ORDERED)
    wait_for(lambda: len(running_pods(lab, "steady")) == NODES and len(running_pods(lab, "churn")) == 2
             and len(running_pods(lab, "agent")) == NODES and len(running_pods(lab, "ordered")) == 2, 180,
             "steady, churn, the agent and the ordered set running")
    ordered_before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in running_pods(lab, "ordered")}
    before = {p["metadata"]["uid"]: p["status"]["containerStatuses"][0] for p in running_pods(lab, "steady")}
    agents_before = {p["metadata"]["uid"] for p in running_pods(lab, "agent")}
    lab.kubectl("apply", "-f", "-", input=ONCE)

    writer = Writer(str(lab.kubeconfig))
    writer.start()
    scaling = threading.Event()

    def scaler() -> None:
        n = 0
        while not scaling.is_set():
            lab.kubectl("scale", "deployment/churn", f"--replicas={2 + n % 4}", check=False)
            n += 1
            scaling.wait(2)

    scaler_thread = threading.Thread(target=scaler, daemon=True)
    scaler_thread.start()
    killed: list[str] = []
    try:
        # The control plane's children, from its own record of them.
        for child in ("controller-manager", "scheduler", "apiserver"):
            old = recorded_children(lab.dir / "controlplane")[child]["pid"]
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: (lambda r: r["alive"] and r["pid"] != old)(
                recorded_children(lab.dir / "controlplane")[child]), 60, f"{child} back")
            killed.append(child)
            time.sleep(1)
        wait_for(lambda: api_up(lab), 60, "API back")
        # Every daemon the lab supervisor runs, then the supervisor's active twin itself.
        daemons = ["controlplane"] + [f"{lab.node(i)}/{d}" for i in range(1, NODES + 1)
                                      for d in ("containerd", "kubelet", "proxy", "dns")]
        for daemon in daemons:
            old = lab.pid(daemon)
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: lab.pid(daemon) not in (0, old) and proc_alive(lab.pid(daemon)), 60, f"{daemon} back")
            killed.append(daemon)
            time.sleep(0.5)
        active = lab.sup()["active"]
        active_pid = active["pid"] if isinstance(active, dict) else active
        os.kill(active_pid, signal.SIGKILL)
        wait_for(lambda: (lambda a: (a["pid"] if isinstance(a, dict) else a) != active_pid)(lab.sup()["active"]),
                 60, "a new active supervisor")
        killed.append("supervisor")
        time.sleep(3)
    finally:
        scaling.set()
        scaler_thread.join(30)
        writer.stop.set()
        writer.join(30)
    assert len(killed) == 3 + 1 + 4 * NODES + 1

    wait_for(lambda: api_up(lab), 60, "API ready")
    wait_for(lambda: all(lab.node_ready(i) for i in range(1, NODES + 1)), 120, "every node Ready")
    names = {c["metadata"]["name"] for c in lab.json("get", "configmaps", "-n", "default")["items"]}
    must_exist = writer.created - writer.deleted - writer.unsure
    lost = must_exist - names
    resurrected = (writer.deleted - writer.unsure) & names
    assert len(writer.created) > 50, "the writer must have written under the faults"
    assert not lost, f"acknowledged creates lost: {sorted(lost)[:10]}"
    assert not resurrected, f"acknowledged deletes came back: {sorted(resurrected)[:10]}"

    lab.kubectl("scale", "deployment/churn", "--replicas=4")
    wait_for(lambda: len(running_pods(lab, "churn")) == 4, 180, "churn converged to 4")
    after = {p["metadata"]["uid"]: p["status"]["containerStatuses"][0] for p in running_pods(lab, "steady")}
    assert set(after) == set(before), "no steady pod was replaced"
    for uid, st in after.items():
        assert st["restartCount"] == before[uid]["restartCount"], (uid, st)
        assert st["containerID"] == before[uid]["containerID"], (uid, st)
    # The new controllers came through too: the DaemonSet kept its pods, the Job ran exactly once.
    assert {p["metadata"]["uid"] for p in running_pods(lab, "agent")} == agents_before
    ordered = lab.json("get", "pods", "-l", "app=ordered")["items"]
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in ordered} == ordered_before
    wait_for(lambda: lab.json("get", "sts", "ordered")["status"].get("readyReplicas") == 2, 60, "ordered status")
    wait_for(lambda: job_complete(lab, "once"), 180, "the Job complete")
    job = lab.json("get", "job", "once")
    job_pods = lab.json("get", "pods", "-l", "job-name=once")["items"]
    assert job["status"].get("succeeded") == 1 and not job["status"].get("failed"), job["status"]
    assert len(job_pods) == 1, [p["metadata"]["name"] for p in job_pods]
    assert "ran once" in lab.kubectl("logs", "job/once").stdout


def test_scaling_past_the_progress_deadline_keeps_the_controller_manager_working(lab: SupervisedLab):
    lab.kubectl("apply", "-f", "-", input=deployment("late", 1, deadline=3))
    wait_for(lambda: len(running_pods(lab, "late")) == 1, 120, "late running")
    time.sleep(5)  # the Progressing condition is older than the deadline now
    lab.kubectl("scale", "deployment/late", "--replicas=3")
    lab.kubectl("apply", "-f", "-", input=deployment("after", 2))
    wait_for(lambda: len(running_pods(lab, "late")) == 3 and len(running_pods(lab, "after")) == 2, 120,
             "both Deployments progress")
    log = (lab.dir / "logs" / "controlplane.log").read_text(errors="replace")
    assert "hot requeue queue=deployment" not in log


def test_a_node_whose_containerd_is_frozen_goes_not_ready_and_back(lab: SupervisedLab):
    victim = 3
    pid = lab.pid(f"{lab.node(victim)}/containerd")
    os.kill(pid, signal.SIGSTOP)
    try:
        def ready_condition():
            node = lab.json("get", "node", lab.node(victim))
            return next(c for c in node["status"]["conditions"] if c["type"] == "Ready")

        cond = wait_for(lambda: (lambda c: c if c["status"] == "False" else None)(ready_condition()), 120,
                        "NotReady while the runtime is down")
        assert cond["reason"] == "KubeletNotReady" and "container runtime is down" in cond["message"], cond
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: lab.node_ready(victim), 60, "Ready again")
    assert lab.pid(f"{lab.node(victim)}/containerd") == pid, "a frozen containerd is not a dead one"


def test_a_frozen_kubelets_pods_are_terminating_not_gone_and_replaced(lab: SupervisedLab):
    lab.kubectl("apply", "-f", "-", input=deployment("away", NODES, tolerate=2, spread=True))
    wait_for(lambda: len(running_pods(lab, "away")) == NODES, 120, "away running")
    victim = 2
    on_victim = {p["metadata"]["name"] for p in running_pods(lab, "away") if p["spec"]["nodeName"] == lab.node(victim)}
    assert on_victim, "spread puts one pod on every node"
    pid = lab.pid(f"{lab.node(victim)}/kubelet")
    os.kill(pid, signal.SIGSTOP)
    try:
        def terminating() -> bool:
            pods = {p["metadata"]["name"]: p for p in lab.json("get", "pods", "-l", "app=away")["items"]}
            return all(n in pods and pods[n]["metadata"].get("deletionTimestamp") for n in on_victim)

        wait_for(terminating, 150, "the frozen node's pods Terminating (still there)")
        # Replacements run elsewhere while the old ones are still listed.
        wait_for(lambda: len([p for p in running_pods(lab, "away")
                              if p["spec"]["nodeName"] != lab.node(victim)]) == NODES, 120, "replacements")
        assert terminating()
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: not ({p["metadata"]["name"] for p in lab.json("get", "pods", "-l", "app=away")["items"]}
                          & on_victim), 120, "the returned kubelet confirms the deletions")
    wait_for(lambda: lab.node_ready(victim), 60, "node Ready again")


def test_down_leaves_no_process_or_shim(lab: SupervisedLab):
    cluster = lab.dir
    lab.kubepy("down")
    left = processes_naming(cluster)
    assert not left, left
    ps = os.popen("ps -eo args").read()
    assert str(cluster) not in ps
