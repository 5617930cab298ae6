"""The kubelet's pure pieces: status and phase, back-off, env resolution, probe thresholds."""

from __future__ import annotations

import base64

import pytest

from kubepy.kubelet.config import parse_duration
from kubepy.kubelet.node import build_node, node_conditions
from kubepy.kubelet.pods import (
    Backoff,
    ConfigError,
    container_id_for,
    expand,
    pod_resources,
    projection,
    resolve_env,
    should_restart,
    write_atomic,
)
from kubepy.kubelet.probes import ProbeState, probe_delays
from kubepy.kubelet.status import (
    ContainerRecord,
    ContainerView,
    PodStatusInput,
    build_pod_status,
    container_status,
    pod_phase,
)

T0, T1, T2 = "2026-01-01T00:00:00.5Z", "2026-01-01T00:00:05.1Z", "2026-01-01T00:00:09Z"


def rec(name="c", *, running=False, code=None, restart=0, oom=False, kind="app", cid=None):
    return ContainerRecord(id=cid or f"{name}-{restart}", name=name, kind=kind, restart_count=restart,
                           image="docker.io/library/busybox:1.36", created_at=T0, running=running, exit_code=code,
                           finished_at=None if running else T1, oom_killed=oom)


C = {"name": "c", "image": "busybox:1.36"}


# -- container status ------------------------------------------------------------
def test_running_container_status():
    s = container_status(C, ContainerView(latest=rec(running=True), ready=True, started=True, image_id="x@sha"))
    assert s["state"] == {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    assert (s["ready"], s["started"], s["restartCount"], s["containerID"], s["imageID"]) == (
        True, True, 0, "containerd://c-0", "x@sha")
    assert s["lastState"] == {}


@pytest.mark.parametrize("code,oom,reason", [(0, False, "Completed"), (1, False, "Error"), (137, True, "OOMKilled")])
def test_terminated_reasons(code, oom, reason):
    s = container_status(C, ContainerView(latest=rec(code=code, oom=oom)))
    t = s["state"]["terminated"]
    assert (t["exitCode"], t["reason"], t["finishedAt"]) == (code, reason, "2026-01-01T00:00:05Z")
    assert not s["ready"]


def test_crashloop_waiting_moves_dead_instance_to_last_state():
    view = ContainerView(latest=rec(code=1, restart=2), waiting=("CrashLoopBackOff", "back-off 20s ..."))
    s = container_status(C, view)
    assert s["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s ..."}}
    assert s["lastState"]["terminated"]["exitCode"] == 1 and s["restartCount"] == 2


def test_restarted_container_shows_previous_as_last_state():
    s = container_status(C, ContainerView(latest=rec(running=True, restart=1), previous=rec(code=137, oom=True)))
    assert "running" in s["state"] and s["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert s["restartCount"] == 1


def test_not_created_yet_is_container_creating():
    assert container_status(C, ContainerView())["state"] == {"waiting": {"reason": "ContainerCreating"}}


# -- phase --------------------------------------------------------------------------
def st(state, last=None):
    return {"state": state, "lastState": last or {}}


RUN = {"running": {}}
OK = {"terminated": {"exitCode": 0}}
BAD = {"terminated": {"exitCode": 2}}
WAIT = {"waiting": {"reason": "ContainerCreating"}}


@pytest.mark.parametrize("policy,inits,apps,phase", [
    ("Always", [], [st(WAIT)], "Pending"),
    ("Always", [], [st(RUN)], "Running"),
    ("Always", [], [st(RUN), st(WAIT)], "Pending"),
    ("Always", [], [st(OK)], "Running"),
    ("Always", [], [st({"waiting": {"reason": "CrashLoopBackOff"}}, BAD)], "Running"),
    ("Never", [], [st(OK)], "Succeeded"),
    ("Never", [], [st(BAD)], "Failed"),
    ("Never", [], [st(OK), st(RUN)], "Running"),
    ("OnFailure", [], [st(OK)], "Succeeded"),
    ("OnFailure", [], [st(BAD)], "Running"),
    ("Never", [st(BAD)], [st(WAIT)], "Failed"),
    ("Always", [st(RUN)], [st(WAIT)], "Pending"),
    ("Always", [st(OK)], [st(RUN)], "Running"),
    ("OnFailure", [st({"waiting": {"reason": "CrashLoopBackOff"}}, BAD)], [st(WAIT)], "Pending"),
])
def test_pod_phase(policy, inits, apps, phase):
    assert pod_phase(policy, inits, apps) == phase


def test_pod_status_conditions_keep_transition_times():
    pod = {"metadata": {"name": "p", "namespace": "d", "uid": "u"},
           "spec": {"restartPolicy": "Always", "containers": [C]}, "status": {"qosClass": "BestEffort"}}
    inp = PodStatusInput(views={"c": ContainerView(latest=rec(running=True), ready=False, started=True)},
                         pod_ip="10.244.0.5", host_ip="10.0.0.1", start_time=T2)
    s1 = build_pod_status(pod, inp, now="2026-01-01T00:00:10Z")
    conds = {c["type"]: c for c in s1["conditions"]}
    assert s1["phase"] == "Running" and conds["Ready"]["status"] == "False"
    assert conds["Ready"]["message"] == "containers with unready status: [c]"
    assert s1["podIPs"] == [{"ip": "10.244.0.5"}] and s1["qosClass"] == "BestEffort"
    s2 = build_pod_status({**pod, "status": s1}, inp, now="2026-01-01T00:00:20Z")
    assert s2 == s1   # nothing changed: no write
    inp.views["c"].ready = True
    s3 = build_pod_status({**pod, "status": s2}, inp, now="2026-01-01T00:00:30Z")
    conds = {c["type"]: c for c in s3["conditions"]}
    assert conds["Ready"]["lastTransitionTime"] == "2026-01-01T00:00:30Z"
    assert conds["Initialized"]["lastTransitionTime"] == "2026-01-01T00:00:10Z"


def test_terminal_phase_is_kept():
    pod = {"metadata": {"name": "p"}, "spec": {"restartPolicy": "Never", "containers": [C]},
           "status": {"phase": "Succeeded"}}
    assert build_pod_status(pod, PodStatusInput())["phase"] == "Succeeded"


def test_ephemeral_container_statuses_count_for_neither_phase_nor_readiness():
    dbg = {"name": "dbg", "image": "busybox:1.36", "targetContainerName": "c"}
    pod = {"metadata": {"name": "p"}, "spec": {"restartPolicy": "Always", "containers": [C],
                                                "ephemeralContainers": [dbg, {"name": "late", "image": "busybox"}]}}
    inp = PodStatusInput(views={"c": ContainerView(latest=rec(running=True), ready=True, started=True)},
                         ephemeral_views={"dbg": ContainerView(latest=rec("dbg", code=0, kind="ephemeral"),
                                                               image_id="x@sha")})
    s = build_pod_status(pod, inp, now=T2)
    assert s["phase"] == "Running" and {c["type"]: c["status"] for c in s["conditions"]}["Ready"] == "True"
    done, late = s["ephemeralContainerStatuses"]
    assert done == {"name": "dbg", "image": "busybox:1.36", "imageID": "x@sha", "ready": False, "restartCount": 0,
                    "containerID": "containerd://dbg-0", "lastState": {},
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": "2026-01-01T00:00:00Z",
                                             "finishedAt": "2026-01-01T00:00:05Z",
                                             "containerID": "containerd://dbg-0"}}}
    assert late["state"] == {"waiting": {"reason": "ContainerCreating"}} and "started" not in late
    running = build_pod_status(pod, PodStatusInput(ephemeral_views={
        "dbg": ContainerView(latest=rec("dbg", running=True, kind="ephemeral"), ready=True, started=True)}), now=T2)
    first = running["ephemeralContainerStatuses"][0]
    assert first["state"] == {"running": {"startedAt": "2026-01-01T00:00:00Z"}} and first["ready"] is False
    assert "ephemeralContainerStatuses" not in build_pod_status(
        {"metadata": {"name": "p"}, "spec": {"containers": [C]}}, PodStatusInput(), now=T2)


# -- back-off -------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_backoff_doubles_caps_and_resets():
    clock = Clock()
    b = Backoff(10, 300, clock=clock)
    assert b.remaining("k", clock.t) == 0      # first crash: restart at once
    delays = [b.next("k") for _ in range(8)]
    assert delays == [10, 20, 40, 80, 160, 300, 300, 300]
    clock.t += 5
    assert b.remaining("k", clock.t - 5) == pytest.approx(295)
    clock.t += 601                               # 10 minutes without a restart
    assert b.remaining("k", clock.t) == 0 and b.next("k") == 10


def test_should_restart():
    assert should_restart("Always", 0) and should_restart("OnFailure", 1)
    assert not should_restart("OnFailure", 0) and not should_restart("Never", 1)


# -- env ---------------------------------------------------------------------------------
def test_resolve_env_sources_and_expansion():
    pod = {"metadata": {"name": "web", "namespace": "ns1", "uid": "u1", "labels": {"app": "w"}},
           "spec": {"nodeName": "n1", "serviceAccountName": "default"}}
    cms = {("ns1", "cfg"): {"data": {"a": "1", "b": "2"}}}
    secs = {("ns1", "s"): {"data": {"pw": base64.b64encode(b"hunter2").decode()}}}
    c = {"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CM_"}],
         "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                 {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                 {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                 {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                 {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                 {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                 {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                 {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a"}}},
                 {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                 {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                 {"name": "X", "value": "$(POD)-$(A)-$(NOPE)-$$(POD)"}],
         "resources": {"limits": {"memory": "64Mi"}}}
    env = resolve_env(c, pod, pod_ip="10.244.0.2", host_ip="10.0.0.1", node_name="n1",
                      get_configmap=lambda n, x: cms.get((n, x)), get_secret=lambda n, x: secs.get((n, x)))
    assert env == {"CM_a": "1", "CM_b": "2", "POD": "web", "NS": "ns1", "UID": "u1", "IP": "10.244.0.2",
                   "HOST": "10.0.0.1", "NODE": "n1", "APP": "w", "A": "1", "PW": "hunter2", "MEM": "64",
                   "X": "web-1-$(NOPE)-$(POD)"}


def test_resolve_env_missing_sources():
    pod = {"metadata": {"name": "p", "namespace": "d"}, "spec": {}}
    none = lambda n, x: None
    kw = {"pod_ip": "", "host_ip": "", "node_name": "n", "get_configmap": none, "get_secret": none}
    with pytest.raises(ConfigError, match='configmap "cfg" not found'):
        resolve_env({"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a"}}}]},
                    pod, **kw)
    assert resolve_env({"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a",
                                                                              "optional": True}}}]}, pod, **kw) == {}
    with pytest.raises(ConfigError, match="couldn't find key b in ConfigMap d/cfg"):
        resolve_env({"env": [{"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "b"}}}]}, pod,
                    **{**kw, "get_configmap": lambda n, x: {"data": {"a": "1"}}})


def test_expand():
    assert expand("$(A)/$(B)/$$(A)/$A", {"A": "x"}) == "x/$(B)/$(A)/$A"


# -- resources, names, volumes --------------------------------------------------------------
def test_pod_resources():
    spec = {"containers": [{"resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1", "memory": "64Mi"}}},
                           {"resources": {"limits": {"cpu": "500m", "memory": "32Mi"}}}],
            "initContainers": [{"resources": {"limits": {"cpu": "2", "memory": "16Mi"}}}]}
    r = pod_resources(spec)
    assert (r.cpu_request_milli, r.cpu_limit_milli, r.memory_limit) == (2000, 2000, 96 << 20)
    r = pod_resources({"containers": [{"resources": {"limits": {"memory": "64Mi"}}}, {}]})
    assert (r.cpu_limit_milli, r.memory_limit) == (None, None)


def test_container_id_is_readable_and_valid():
    import re
    cid = container_id_for("default", "web-" + "x" * 80, "main.c")
    assert re.fullmatch(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*", cid) and len(cid) <= 76
    assert cid.startswith("default_web-") and cid != container_id_for("default", "web", "main.c")


def test_container_id_is_valid_when_a_cut_ends_a_part_on_a_separator_or_separators_repeat():
    # A Deployment's pod: 20 characters end on the '-' before the pod's suffix (containerd refused "…-_pause_…").
    import re
    for ns, pod, container in (("kptest-helm4", "web-demo-665d946f66-n5b4c", "pause"),
                               ("a--b", "x..y-.z", "c_d"), ("-", "..", "-main-")):
        cid = container_id_for(ns, pod, container)
        assert re.fullmatch(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*", cid), cid
    assert container_id_for("kptest-helm4", "web-demo-665d946f66-n5b4c", "pause").startswith(
        "kptest-helm4_web-demo-665d946f66_pause_")
    assert container_id_for("a--b", "x..y", "c").startswith("a-b_x-y_c_")


def test_atomic_writer_swaps_data_and_drops_stale_keys(tmp_path):
    t = tmp_path / "vol"
    assert write_atomic(t, {"a": (b"1", 0o644), "d/b": (b"2", 0o600)})
    assert (t / "a").read_text() == "1" and (t / "d" / "b").read_text() == "2"
    assert (t / "..data").is_symlink() and (t / "a").is_symlink()
    assert not write_atomic(t, {"a": (b"1", 0o644), "d/b": (b"2", 0o600)})
    old = (t / "..data").resolve()
    assert write_atomic(t, {"a": (b"3", 0o644)})
    assert (t / "a").read_text() == "3" and not (t / "d").exists() and not old.exists()
    assert len([p for p in t.iterdir() if p.name.startswith("..") and p.name != "..data"]) == 1


def test_projection_items():
    files = projection({"items": [{"key": "a", "path": "sub/x", "mode": 0o600}], "defaultMode": 0o644},
                       {"a": b"1", "b": b"2"}, kind="configmap", name="c", namespace="d")
    assert files == {"sub/x": (b"1", 0o600)}


# -- probes --------------------------------------------------------------------------------
def test_probe_thresholds():
    s = ProbeState(success_threshold=2, failure_threshold=3, verdict=None)
    assert [s.observe(ok) for ok in (True, False, True, True)] == [False, False, False, True]
    assert s.verdict is True
    assert [s.observe(False) for _ in range(3)] == [False, False, True] and s.verdict is False
    assert not s.observe(False)


def test_probe_initial_delay():
    assert probe_delays({"initialDelaySeconds": 5}, 100.0, 102.0) == 3.0
    assert probe_delays({}, 100.0, 102.0) == 0.0


# -- node -------------------------------------------------------------------------------------
def test_node_object_and_conditions():
    info = {"cpu": 4, "memory": 8 << 30, "kernel": "6.1", "os_image": "Debian GNU/Linux 12 (bookworm)",
            "arch": "amd64", "machine_id": "m", "boot_id": "b"}
    node = build_node(name="n1", ip="10.0.0.5", port=10250, info=info, runtime_version="containerd://1.6.20",
                      max_pods=110)
    st = node["status"]
    assert st["capacity"] == {"cpu": "4", "memory": f"{8 << 20}Ki", "pods": "110", "ephemeral-storage": "0"}
    assert st["addresses"] == [{"type": "InternalIP", "address": "10.0.0.5"}, {"type": "Hostname", "address": "n1"}]
    assert st["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "n1"
    c1 = node_conditions({"memory": False, "disk": True}, True, None, "t1")
    byt = {c["type"]: c for c in c1}
    assert byt["DiskPressure"]["status"] == "True" and byt["Ready"]["reason"] == "KubeletReady"
    c2 = {c["type"]: c for c in node_conditions({"memory": True, "disk": True}, True, c1, "t2")}
    assert c2["DiskPressure"]["lastTransitionTime"] == "t1" and c2["MemoryPressure"]["lastTransitionTime"] == "t2"
    assert c2["Ready"]["lastHeartbeatTime"] == "t2"


def test_parse_duration():
    assert [parse_duration(x) for x in ("10s", "5m", "250ms", "2")] == [10, 300, 0.25, 2]


async def test_concurrent_container_listings_share_ctr_runs(tmp_path):
    """30 pod workers asking at once cost a couple of `ctr containers ls`/`tasks ls`
    pairs, not 30; and a listing that started before a caller asked is not given to it."""
    import asyncio

    from kubepy.kubelet.runtime import Runtime

    rt = Runtime(str(tmp_path / "c.sock"), state_dir=tmp_path)
    calls: list[str] = []
    gate = asyncio.Event()
    state = {"ids": "a\n"}

    async def fake_ctr(*args, **kw):
        calls.append(args[0])
        if args[0] == "containers" and args[1] == "ls":
            snapshot = state["ids"]
            await gate.wait()
            return 0, snapshot, ""
        return 0, "TASK PID STATUS\n", ""

    rt._ctr = fake_ctr  # type: ignore[method-assign]
    first = asyncio.create_task(rt._containers_and_tasks())
    await asyncio.sleep(0.01)             # the first listing is running (held at the gate)
    state["ids"] = "a\nb\n"               # a container created after it started...
    later = [asyncio.create_task(rt._containers_and_tasks()) for _ in range(30)]
    await asyncio.sleep(0.01)
    gate.set()
    got_first = await first
    got_later = await asyncio.gather(*later)
    assert got_first[0] == ["a"]
    assert all(g[0] == ["a", "b"] for g in got_later)   # ... is seen by everyone who asked after it
    assert calls.count("containers") == 2 and calls.count("tasks") == 2
