"""Server-side Table columns and cells match what `kubectl get` shows against Kubernetes."""

from __future__ import annotations

import datetime as dt

import pytest

from kubepy.kinds.printers import human_duration, table_columns, table_row_cells

NOW = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def ago(**kw) -> str:
    return (NOW - dt.timedelta(**kw)).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(name: str, **extra) -> dict:
    return {"name": name, "namespace": "default", "creationTimestamp": ago(minutes=5), **extra}


def cells(resource: str, obj: dict) -> list:
    row = table_row_cells(resource, obj, now=NOW)
    assert len(row) == len(table_columns(resource)), "one cell per column"
    return row


# ---------------------------------------------------------------------------
# columns
# ---------------------------------------------------------------------------

COLUMNS = [
    ("pods", ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]),
    ("deployments", ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], ["CONTAINERS", "IMAGES", "SELECTOR"]),
    ("replicasets", ["NAME", "DESIRED", "CURRENT", "READY", "AGE"], ["CONTAINERS", "IMAGES", "SELECTOR"]),
    ("services", ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], ["SELECTOR"]),
    ("nodes", ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
     ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]),
    ("endpoints", ["NAME", "ENDPOINTS", "AGE"], []),
    ("namespaces", ["NAME", "STATUS", "AGE"], []),
    ("events", ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
     ["SUBOBJECT", "SOURCE", "FIRST SEEN", "COUNT", "NAME"]),
    ("configmaps", ["NAME", "DATA", "AGE"], []),
    ("secrets", ["NAME", "TYPE", "DATA", "AGE"], []),
    ("serviceaccounts", ["NAME", "SECRETS", "AGE"], []),
    ("leases", ["NAME", "HOLDER", "AGE"], []),
    ("widgets", ["NAME", "AGE"], []),
]


@pytest.mark.parametrize("resource,normal,wide", COLUMNS)
def test_columns_as_kubectl_prints_them(resource, normal, wide):
    cols = table_columns(resource)
    assert [c["name"].upper() for c in cols if c["priority"] == 0] == normal
    assert [c["name"].upper() for c in cols if c["priority"] == 1] == wide
    for c in cols:
        assert set(c) == {"name", "type", "format", "description", "priority"}
        assert c["description"]
        assert c["format"] == ("name" if c["name"] == "Name" else "")


def test_columns_are_fresh_copies():
    table_columns("pods")[0]["name"] = "mutated"
    assert table_columns("pods")[0]["name"] == "Name"


# ---------------------------------------------------------------------------
# durations
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seconds,text", [
    (-5, "<invalid>"), (-0.5, "0s"), (0, "0s"), (5, "5s"), (119, "119s"), (120, "2m"), (200, "3m20s"),
    (599, "9m59s"), (600, "10m"), (179 * 60 + 59, "179m"), (3 * 3600, "3h"), (3 * 3600 + 30 * 60, "3h30m"),
    (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"), (51 * 3600, "2d3h"), (8 * 86400, "8d"),
    (400 * 86400, "400d"), (730 * 86400, "2y"), (800 * 86400, "2y70d"), (3000 * 86400, "8y"),
])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


# ---------------------------------------------------------------------------
# pods
# ---------------------------------------------------------------------------


def running(name="app", restarts=0, ready=True, last_finished=None):
    status = {"name": name, "ready": ready, "restartCount": restarts, "state": {"running": {"startedAt": ago(minutes=4)}}}
    if last_finished:
        status["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": last_finished}}
    return status


POD_CASES = {
    "running": (
        {"metadata": meta("web"), "spec": {"nodeName": "node-1", "containers": [{"name": "app"}, {"name": "side"}]},
         "status": {"phase": "Running", "podIP": "10.244.0.5",
                    "containerStatuses": [running(), running("side", ready=False)]}},
        ["web", "1/2", "Running", "0", "5m", "10.244.0.5", "node-1", "<none>", "<none>"],
    ),
    "crashlooping": (
        {"metadata": meta("crash"), "spec": {"containers": [{"name": "app"}]},
         "status": {"phase": "Running", "podIPs": [{"ip": "10.244.0.6"}], "containerStatuses": [{
             "name": "app", "ready": False, "restartCount": 3,
             "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(seconds=30)}}}]}},
        ["crash", "0/1", "CrashLoopBackOff", "3 (30s ago)", "5m", "10.244.0.6", "<none>", "<none>", "<none>"],
    ),
    "completed": (
        {"metadata": meta("job"), "spec": {"containers": [{"name": "app"}]},
         "status": {"phase": "Succeeded", "containerStatuses": [{
             "name": "app", "ready": False, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}},
        ["job", "0/1", "Completed", "0", "5m", "<none>", "<none>", "<none>", "<none>"],
    ),
    "exit-code-without-reason": (
        {"metadata": meta("x"), "spec": {"containers": [{"name": "app"}]},
         "status": {"phase": "Failed", "containerStatuses": [{
             "name": "app", "state": {"terminated": {"exitCode": 2}}}]}},
        ["x", "0/1", "ExitCode:2", "0", "5m", "<none>", "<none>", "<none>", "<none>"],
    ),
    "init-running": (
        {"metadata": meta("init"), "spec": {"initContainers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "app"}]},
         "status": {"phase": "Pending",
                    "initContainerStatuses": [
                        {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                        {"name": "b", "state": {"running": {}}}],
                    "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}]}},
        ["init", "0/1", "Init:1/2", "0", "5m", "<none>", "<none>", "<none>", "<none>"],
    ),
    "init-not-started": (
        {"metadata": meta("init0"), "spec": {"initContainers": [{"name": "a"}], "containers": [{"name": "app"}]},
         "status": {"phase": "Pending", "initContainerStatuses": [{"name": "a", "state": {"waiting": {}}}]}},
        ["init0", "0/1", "Init:0/1", "0", "5m", "<none>", "<none>", "<none>", "<none>"],
    ),
    "init-crashing": (
        {"metadata": meta("initc"), "spec": {"initContainers": [{"name": "a"}], "containers": [{"name": "app"}]},
         "status": {"phase": "Pending", "initContainerStatuses": [
             {"name": "a", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}},
        ["initc", "0/1", "Init:CrashLoopBackOff", "2", "5m", "<none>", "<none>", "<none>", "<none>"],
    ),
    "terminating": (
        {"metadata": meta("bye", deletionTimestamp=ago(seconds=10)), "spec": {"containers": [{"name": "app"}]},
         "status": {"phase": "Running", "containerStatuses": [running()]}},
        ["bye", "1/1", "Terminating", "0", "5m", "<none>", "<none>", "<none>", "<none>"],
    ),
    "pending-unscheduled": (
        {"metadata": {"name": "new"}, "spec": {"containers": [{"name": "app"}],
                                               "readinessGates": [{"conditionType": "example.com/ready"}]},
         "status": {"phase": "Pending", "conditions": [{"type": "example.com/ready", "status": "True"}]}},
        ["new", "0/1", "Pending", "0", "<unknown>", "<none>", "<none>", "<none>", "1/1"],
    ),
    "evicted": (
        {"metadata": meta("ev"), "spec": {"containers": [{"name": "app"}]},
         "status": {"phase": "Failed", "reason": "Evicted"}},
        ["ev", "0/1", "Evicted", "0", "5m", "<none>", "<none>", "<none>", "<none>"],
    ),
}


@pytest.mark.parametrize("case", list(POD_CASES))
def test_pod_cells(case):
    obj, expected = POD_CASES[case]
    assert cells("pods", obj) == expected


# ---------------------------------------------------------------------------
# other kinds
# ---------------------------------------------------------------------------

TEMPLATE = {"spec": {"containers": [{"name": "web", "image": "nginx:1.25"}, {"name": "log", "image": "busybox"}]}}

CASES = [
    ("deployments",
     {"metadata": meta("web"), "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "tier": "fe"}},
                                        "template": TEMPLATE},
      "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}},
     ["web", "2/3", 3, 2, "5m", "web,log", "nginx:1.25,busybox", "app=web,tier=fe"]),
    ("deployments",
     {"metadata": meta("new"), "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}}, "template": TEMPLATE}},
     ["new", "0/1", 0, 0, "5m", "web,log", "nginx:1.25,busybox", "app=x"]),
    ("replicasets",
     {"metadata": meta("web-5d4f8"), "spec": {"replicas": 2, "template": TEMPLATE, "selector": {
         "matchLabels": {"app": "web"}, "matchExpressions": [{"key": "env", "operator": "In", "values": ["b", "a"]}]}},
      "status": {"replicas": 2, "readyReplicas": 1}},
     ["web-5d4f8", 2, 2, 1, "5m", "web,log", "nginx:1.25,busybox", "app=web,env in (a,b)"]),
    ("services",
     {"metadata": meta("web"), "spec": {"type": "NodePort", "clusterIP": "10.96.12.34", "clusterIPs": ["10.96.12.34"],
                                        "selector": {"app": "web"},
                                        "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                                                  {"port": 53, "protocol": "UDP"}]}},
     ["web", "NodePort", "10.96.12.34", "<none>", "80:30080/TCP,53/UDP", "5m", "app=web"]),
    ("services",
     {"metadata": meta("kubernetes"), "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1",
                                               "ports": [{"port": 443, "protocol": "TCP"}]}},
     ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP", "5m", "<none>"]),
    ("services",
     {"metadata": meta("lb"), "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9", "ports": [{"port": 80}]},
      "status": {"loadBalancer": {}}},
     ["lb", "LoadBalancer", "10.96.0.9", "<pending>", "80/TCP", "5m", "<none>"]),
    ("services",
     {"metadata": meta("db"), "spec": {"type": "ExternalName", "externalName": "db.example.com"}},
     ["db", "ExternalName", "<none>", "db.example.com", "<none>", "5m", "<none>"]),
    ("nodes",
     {"metadata": meta("node-1", labels={"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "infra"}),
      "spec": {"unschedulable": True},
      "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                 "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "n1"}],
                 "nodeInfo": {"kubeletVersion": "v1.37.1", "osImage": "Debian GNU/Linux 12 (bookworm)",
                              "kernelVersion": "6.1.0", "containerRuntimeVersion": "kubepy://0.1.0"}}},
     ["node-1", "Ready,SchedulingDisabled", "control-plane,infra", "5m", "v1.37.1", "192.168.1.10", "<none>",
      "Debian GNU/Linux 12 (bookworm)", "6.1.0", "kubepy://0.1.0"]),
    ("nodes",
     {"metadata": meta("node-2"), "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}},
     ["node-2", "NotReady", "<none>", "5m", "", "<none>", "<none>", "<unknown>", "<unknown>", "<unknown>"]),
    ("nodes", {"metadata": meta("node-3")},
     ["node-3", "Unknown", "<none>", "5m", "", "<none>", "<none>", "<unknown>", "<unknown>", "<unknown>"]),
    ("endpoints",
     {"metadata": meta("web"), "subsets": [{"addresses": [{"ip": f"10.0.0.{i}"} for i in range(1, 6)],
                                            "ports": [{"port": 80}]}]},
     ["web", "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 2 more...", "5m"]),
    ("endpoints",
     {"metadata": meta("two"), "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}],
                                            "ports": [{"port": 80}]}]},
     ["two", "10.0.0.1:80,[fd00::1]:80", "5m"]),
    ("endpoints", {"metadata": meta("empty")}, ["empty", "<none>", "5m"]),
    ("namespaces", {"metadata": meta("team"), "status": {"phase": "Active"}}, ["team", "Active", "5m"]),
    ("events",
     {"metadata": meta("web.17a"), "type": "Normal", "reason": "Scheduled", "message": "Successfully assigned\n",
      "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
      "source": {"component": "default-scheduler"}, "count": 2,
      "firstTimestamp": ago(minutes=3), "lastTimestamp": ago(seconds=40)},
     ["40s", "Normal", "Scheduled", "pod/web", "spec.containers{app}", "default-scheduler", "Successfully assigned",
      "3m", 2, "web.17a"]),
    ("events",
     {"metadata": meta("n.1"), "type": "Warning", "reason": "Rebooted", "involvedObject": {"kind": "Node"},
      "eventTime": (NOW - dt.timedelta(seconds=7)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
      "reportingComponent": "kubelet", "reportingInstance": "node-1"},
     ["7s", "Warning", "Rebooted", "node", "", "kubelet, node-1", "", "7s", 1, "n.1"]),
    ("configmaps", {"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}},
     ["cfg", 3, "5m"]),
    ("secrets", {"metadata": meta("s"), "type": "Opaque", "data": {"a": "eA=="}}, ["s", "Opaque", 1, "5m"]),
    ("serviceaccounts", {"metadata": meta("default")}, ["default", 0, "5m"]),
    ("leases", {"metadata": meta("kube-scheduler"), "spec": {"holderIdentity": "host_1234"}},
     ["kube-scheduler", "host_1234", "5m"]),
    ("widgets", {"metadata": meta("w")}, ["w", "5m"]),
]


@pytest.mark.parametrize("resource,obj,expected", CASES, ids=[f"{r}:{o['metadata']['name']}" for r, o, _ in CASES])
def test_row_cells(resource, obj, expected):
    assert cells(resource, obj) == expected


def test_naive_now_is_treated_as_utc():
    obj = {"metadata": meta("x")}
    assert table_row_cells("configmaps", obj, now=NOW.replace(tzinfo=None))[2] == "5m"
