"""The kubelet end to end: a real API server, containerd, node netns and kubelet process.

One kubelet (module fixture ``kubelet_node``) serves every test; pods are
bound to it directly (``spec.nodeName``), the test sets ``spec.podCIDR``
(no controller manager runs). Several pods run at once where that saves
time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from kubepy.client import Client, NotFoundError
from tests.kubelet.conftest import KubeletNode, kubeconfig_token

pytestmark = pytest.mark.slow
BUSYBOX = "busybox:1.36"


def pod(node: KubeletNode, name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    for c in containers + spec.get("initContainers", []):
        c.setdefault("image", BUSYBOX)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": node.test_ns},
            "spec": {"nodeName": node.name, "containers": containers, "terminationGracePeriodSeconds": 2, **spec}}


async def wait_for(client: Client, node: KubeletNode, name: str, check: Callable[[dict[str, Any]], bool],
                   timeout: float = 30.0, what: str = "") -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            obj = await client.get("pods", name, namespace=node.test_ns)
        except NotFoundError:
            obj = {}
        if obj and check(obj):
            return obj
        await asyncio.sleep(0.1)
    raise AssertionError(f"pod {name}: {what or 'condition'} not met in {timeout}s; status="
                         f"{json.dumps(obj.get('status'), indent=1)}\n--- kubelet log ---\n{node.log_tail(80)}")


def cond(obj: dict[str, Any], ctype: str) -> str | None:
    return next((c["status"] for c in obj.get("status", {}).get("conditions") or [] if c["type"] == ctype), None)


def cstatus(obj: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    key = "initContainerStatuses" if init else "containerStatuses"
    return next(s for s in obj["status"].get(key) or [] if s["name"] == name)


async def runtime_exec(node: KubeletNode, cid: str, argv: list[str]) -> str:
    from kubepy.kubelet.config import KubeletConfig
    from kubepy.kubelet.kubelet import make_runtime
    rt = make_runtime(KubeletConfig(container_runtime_endpoint=node.socket))
    proc = await rt.exec(cid, "t" + os.urandom(3).hex(), argv)
    out, err = await proc.communicate()
    assert proc.returncode == 0, (argv, out, err)
    return out.decode()


async def delete_and_wait_gone(client: Client, node: KubeletNode, name: str, ns: str, timeout: float = 20) -> None:
    """Delete a pod and wait until the kubelet has finalized it (the object is gone)."""
    await client.delete("pods", name, namespace=ns)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await client.get("pods", name, namespace=ns)
        except NotFoundError:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"pod {name} not finalized\n{node.log_tail()}")


def node_exec(node: KubeletNode, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", node.netns, *argv], capture_output=True, text=True,
                          timeout=20, check=False).stdout


def leftovers(node: KubeletNode, uid: str, ip: str) -> dict[str, Any]:
    from kubepy.kubelet.network import host_veth_name
    netns = [n for n in os.listdir("/var/run/netns") if n.endswith(uid.replace("-", "")[:8])]
    veth = host_veth_name(uid) in node_exec(node, "ip", "-o", "link")
    cgroups = [p for p in Path("/sys/fs/cgroup/memory/kubepy", node.name).glob(f"pod{uid}")]
    # Container ids carry the pod's name, not its uid: ask containerd by the uid label.
    containers = node.ctr("containers", "ls", "-q", f'labels."io.kubernetes.pod.uid"=={uid}').split()
    snapshots = node.ctr("snapshots", "ls")
    ipam = (node.root_dir / "ipam" / ip).exists() if ip else False
    pod_dir = (node.root_dir / "pods" / uid).exists()
    return {k: v for k, v in {"netns": netns, "veth": veth, "cgroups": cgroups, "containers": containers,
                              "ipam": ipam, "pod_dir": pod_dir,
                              "snapshots": [s for s in snapshots.splitlines()[1:] if "_" in s.split()[0]]}.items()
            if v}


async def test_pod_lifecycle_network_volumes_env_cgroup_restart_delete(kubelet_node: KubeletNode, client: Client):
    node = kubelet_node
    ns = node.test_ns
    await client.create("configmaps", {"metadata": {"name": "cfg"}, "data": {"greeting": "hello", "k2": "v2"}},
                        namespace=ns)
    await client.create("secrets", {"metadata": {"name": "sec"},
                                    "data": {"password": base64.b64encode(b"s3cret").decode()}}, namespace=ns)
    web = pod(node, "web", [{
        "name": "httpd",
        "command": ["sh", "-c", "echo hello-from-$(MY_POD) > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"],
        "env": [{"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
                {"name": "COMBINED", "value": "$(GREETING)-$(MY_POD)"}],
        "ports": [{"containerPort": 8080, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
        "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "sec", "mountPath": "/etc/sec"},
                         {"name": "scratch", "mountPath": "/scratch"}],
    }], volumes=[{"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "sec", "secret": {"secretName": "sec"}},
                 {"name": "scratch", "emptyDir": {}}])
    t0 = time.monotonic()
    await client.create("pods", web, namespace=ns)
    running = await wait_for(client, node, "web", lambda p: p["status"].get("phase") == "Running", what="Running")
    t_running = time.monotonic() - t0
    ready = await wait_for(client, node, "web", lambda p: cond(p, "Ready") == "True", what="Ready")
    t_ready = time.monotonic() - t0
    print(f"\nTIMING pod create -> Running {t_running:.2f}s, -> Ready {t_ready:.2f}s")
    st = ready["status"]
    ip, uid = st["podIP"], ready["metadata"]["uid"]
    assert st["hostIP"] == node.node_ip and st["podIPs"] == [{"ip": ip}] and st["startTime"]
    assert ip.startswith(node.pod_cidr.rsplit(".", 1)[0] + ".")
    cs = cstatus(ready, "httpd")
    assert cs["ready"] and cs["started"] and cs["restartCount"] == 0 and "running" in cs["state"]
    assert cs["containerID"].startswith("containerd://") and cs["imageID"].startswith("docker.io/library/busybox@")
    assert {c["type"] for c in st["conditions"]} == {"PodScheduled", "Initialized", "ContainersReady", "Ready"}
    assert st.get("qosClass") == "Guaranteed"
    assert running["status"]["phase"] == "Running"

    # served on the pod IP, reachable from the node
    assert node_exec(node, "wget", "-qO-", f"http://{ip}:8080/").strip() == "hello-from-web"

    cid = cs["containerID"].removeprefix("containerd://")
    script = ('echo "$MY_POD|$MY_IP|$GREETING|$PASSWORD|$COMBINED|$(hostname)"; cat /etc/cfg/greeting; echo;'
              " cat /etc/sec/password; echo; touch /etc/cfg/x 2>/dev/null && echo rw || echo ro")
    out = await runtime_exec(node, cid, ["sh", "-c", script])
    assert out.splitlines() == [f"web|{ip}|hello|s3cret|hello-web|web", "hello", "s3cret", "ro"]

    # limits in the pod cgroup
    pod_cg = Path("/sys/fs/cgroup/memory/kubepy") / node.name / f"pod{uid}"
    assert int((pod_cg / "memory.limit_in_bytes").read_text()) == 64 << 20
    assert int((Path("/sys/fs/cgroup/cpu/kubepy") / node.name / f"pod{uid}" / "cpu.cfs_quota_us").read_text()) == 50000

    # configMap change reaches the volume (atomic ..data swap)
    await client.patch("configmaps", "cfg", {"data": {"greeting": "bonjour"}}, namespace=ns)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if (await runtime_exec(node, cid, ["cat", "/etc/cfg/greeting"])) == "bonjour":
            break
        await asyncio.sleep(0.3)
    else:
        raise AssertionError("configmap update not visible in the volume")
    assert "..data" in await runtime_exec(node, cid, ["ls", "-a", "/etc/cfg"])

    # restarting the kubelet keeps the pod: same container, same restart count
    node.stop_kubelet()
    node.start_kubelet()
    await asyncio.sleep(4)
    again = await wait_for(client, node, "web", lambda p: cond(p, "Ready") == "True", what="Ready after restart")
    cs2 = cstatus(again, "httpd")
    assert cs2["containerID"] == cs["containerID"] and cs2["restartCount"] == 0
    assert node_exec(node, "wget", "-qO-", f"http://{ip}:8080/").strip() == "hello-from-web"

    # deletion: graceful stop, then nothing left
    t0 = time.monotonic()
    await delete_and_wait_gone(client, node, "web", ns)
    print(f"TIMING pod delete -> gone {time.monotonic() - t0:.2f}s")
    assert leftovers(node, uid, ip) == {}
    # the pod's life in Events (checked here, not by a later test, so each test stands alone)
    want = {"Pulled", "Created", "Started", "Killing"}
    deadline = time.monotonic() + 10
    while True:
        reasons = {e["reason"] for e in (await client.list("events", namespace=ns))["items"]
                   if e["involvedObject"]["name"] == "web" and e["involvedObject"].get("uid") == uid}
        if want <= reasons or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert want <= reasons, reasons


async def test_restart_policies_probes_init_and_oom(kubelet_node: KubeletNode, client: Client):
    node = kubelet_node
    ns = node.test_ns
    sleeper = {"command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}
    pods = [
        pod(node, "oom", [{"name": "hog", "command": ["sh", "-c", "tail /dev/zero"],
                           "resources": {"limits": {"memory": "32Mi"}}}], restartPolicy="Never"),
        pod(node, "inits", [{"name": "app", "command": ["sh", "-c", 'test "$(cat /work/order)" = "12"'],
                             "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
            initContainers=[{"name": "one", "command": ["sh", "-c", "printf 1 > /work/order"],
                             "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
                            {"name": "two", "command": ["sh", "-c", "sleep 1; printf 2 >> /work/order"],
                             "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
            volumes=[{"name": "work", "emptyDir": {}}], restartPolicy="Never"),
        pod(node, "fails", [{"name": "main", "command": ["sh", "-c", "echo bye; exit 3"]}], restartPolicy="Never"),
        pod(node, "live", [{"name": "main", **sleeper,
                            "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1,
                                              "failureThreshold": 1}}]),
        pod(node, "unready", [{"name": "main", **sleeper,
                               "readinessProbe": {"exec": {"command": ["sh", "-c", "echo not yet; exit 1"]},
                                                  "periodSeconds": 1}}]),
    ]
    for p in pods:
        await client.create("pods", p, namespace=ns)

    oom = await wait_for(client, node, "oom", lambda p: p["status"].get("phase") == "Failed", what="Failed")
    term = cstatus(oom, "hog")["state"]["terminated"]
    assert (term["reason"], term["exitCode"]) == ("OOMKilled", 137)

    inits = await wait_for(client, node, "inits", lambda p: p["status"].get("phase") == "Succeeded",
                           what="Succeeded")
    one, two = cstatus(inits, "one", init=True), cstatus(inits, "two", init=True)
    assert one["state"]["terminated"]["reason"] == "Completed" and two["state"]["terminated"]["exitCode"] == 0
    assert one["state"]["terminated"]["finishedAt"] <= two["state"]["terminated"]["startedAt"]
    assert cstatus(inits, "app")["state"]["terminated"]["reason"] == "Completed"
    assert cond(inits, "Ready") == "False"

    fails = await wait_for(client, node, "fails", lambda p: p["status"].get("phase") == "Failed", what="Failed")
    term = cstatus(fails, "main")["state"]["terminated"]
    assert (term["reason"], term["exitCode"], cstatus(fails, "main")["restartCount"]) == ("Error", 3, 0)
    log_file = node.log_dir / f"{ns}_fails_{fails['metadata']['uid']}" / "main" / "0.log"
    assert log_file.read_text().split(" ", 3)[1:] == ["stdout", "F", "bye\n"]

    unready = await wait_for(client, node, "unready", lambda p: p["status"].get("phase") == "Running",
                             what="Running")
    await asyncio.sleep(3)
    unready = await client.get("pods", "unready", namespace=ns)
    assert cond(unready, "Ready") == "False" and cond(unready, "ContainersReady") == "False"
    assert cstatus(unready, "main")["ready"] is False and "running" in cstatus(unready, "main")["state"]

    # liveness: killed and restarted; the second restart waits for the 10s back-off
    live = await wait_for(client, node, "live", lambda p: cstatus(p, "main")["restartCount"] >= 1,
                          timeout=20, what="first restart")
    live = await wait_for(client, node, "live", lambda p: cstatus(p, "main")["state"].get("waiting", {}).get(
        "reason") == "CrashLoopBackOff", timeout=20, what="CrashLoopBackOff")
    waiting = cstatus(live, "main")["state"]["waiting"]
    assert waiting["message"].startswith("back-off 10s restarting failed container=main pod=live_")
    assert cstatus(live, "main")["lastState"]["terminated"]["exitCode"] in (0, 137)
    live = await wait_for(client, node, "live", lambda p: cstatus(p, "main")["restartCount"] >= 2,
                          timeout=20, what="second restart")
    events = (await client.list("events", namespace=ns))["items"]
    reasons = {(e["involvedObject"]["name"], e["reason"]) for e in events}
    assert {("live", "Killing"), ("live", "Unhealthy"), ("live", "BackOff"), ("unready", "Unhealthy")} <= reasons, reasons
    msgs = [e["message"] for e in events if e["involvedObject"]["name"] == "live" and e["reason"] == "Killing"]
    assert "Container main failed liveness probe, will be restarted" in msgs

    uids = {}
    for p in pods:
        obj = await client.get("pods", p["metadata"]["name"], namespace=ns)
        uids[p["metadata"]["name"]] = (obj["metadata"]["uid"], obj["status"].get("podIP", ""))
        await client.delete("pods", p["metadata"]["name"], namespace=ns)
    deadline = time.monotonic() + 45  # a bound, not a speed claim: a CrashLoopBackOff pod on a loaded host took >20s
    while time.monotonic() < deadline and (await client.list("pods", namespace=ns))["items"]:
        await asyncio.sleep(0.2)
    assert (await client.list("pods", namespace=ns))["items"] == []
    for name, (uid, ip) in uids.items():
        assert leftovers(node, uid, ip) == {}, name


async def test_kubectl_logs_and_exec_through_the_real_kubelet(kubelet_node: KubeletNode, client: Client):
    """The stock kubectl → API server relay → kubelet → containerd, for real."""
    node = kubelet_node
    ns = node.test_ns
    talker = pod(node, "talker", [{"name": "main", "command": ["sh", "-c",
                                   "echo line-one; echo line-two >&2; sleep 0.5; echo line-three; exec sleep 3600"]}])
    await client.create("pods", talker, namespace=ns)
    await wait_for(client, node, "talker", lambda p: p["status"].get("phase") == "Running", what="Running")

    def kubectl(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return node.apiserver.kubectl("-n", ns, *args, input=input, check=False)

    deadline = time.monotonic() + 10
    while True:
        logs = kubectl("logs", "talker")
        if "line-three" in logs.stdout or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert logs.returncode == 0, logs.stderr
    lines = logs.stdout.splitlines()
    # stdout and stderr are separate pipes: only each stream's own order is guaranteed (as in Kubernetes).
    assert sorted(lines) == ["line-one", "line-three", "line-two"], logs.stdout
    assert lines.index("line-one") < lines.index("line-three")
    assert kubectl("logs", "talker", "--tail=1").stdout.strip() == "line-three"
    stamped = kubectl("logs", "talker", "--timestamps").stdout.splitlines()
    assert stamped[0].endswith(" line-one") and stamped[0][:4].isdigit() and "T" in stamped[0].split()[0]
    done = kubectl("exec", "talker", "--", "sh", "-c", "echo out-$HOSTNAME; echo err >&2; exit 3")
    assert done.returncode == 3, (done.returncode, done.stderr)
    assert done.stdout.strip() == "out-talker" and "err" in done.stderr
    piped = kubectl("exec", "-i", "talker", "--", "cat", input="through stdin\n")
    assert piped.returncode == 0 and piped.stdout == "through stdin\n", piped
    await client.delete("pods", "talker", namespace=ns, grace_period_seconds=0)


async def test_service_environment_variables(kubelet_node: KubeletNode, client: Client):
    node = kubelet_node
    ns = node.test_ns
    await client.create("services", {"metadata": {"name": "my-db"}, "spec": {
        "selector": {"app": "db"}, "ports": [{"name": "sql", "port": 5432}, {"name": "metrics", "port": 9187,
                                                                             "protocol": "UDP"}]}}, namespace=ns)
    await client.create("services", {"metadata": {"name": "headless"}, "spec": {
        "clusterIP": "None", "selector": {"app": "x"}, "ports": [{"port": 80}]}}, namespace=ns)
    db = await client.get("services", "my-db", namespace=ns)
    kube = await client.get("services", "kubernetes", namespace="default")
    ip = db["spec"]["clusterIP"]
    sleeper = [{"name": "c", "command": ["sleep", "3600"],
                "env": [{"name": "DB_URL", "value": "postgres://$(MY_DB_SERVICE_HOST):$(MY_DB_SERVICE_PORT)"},
                        {"name": "MY_DB_SERVICE_PORT_SQL", "value": "overridden"}]}]
    await client.create("pods", pod(node, "links", sleeper), namespace=ns)
    await client.create("pods", pod(node, "nolinks", [dict(sleeper[0], env=[])], enableServiceLinks=False),
                        namespace=ns)
    envs = {}
    for name in ("links", "nolinks"):
        p = await wait_for(client, node, name, lambda p: p["status"].get("phase") == "Running", what="Running")
        cid = cstatus(p, "c")["containerID"].removeprefix("containerd://")
        envs[name] = dict(line.split("=", 1) for line in (await runtime_exec(node, cid, ["env"])).splitlines()
                          if "=" in line)
    links, nolinks = envs["links"], envs["nolinks"]
    assert links["MY_DB_SERVICE_HOST"] == ip and links["MY_DB_SERVICE_PORT"] == "5432"
    assert links["MY_DB_SERVICE_PORT_METRICS"] == "9187"
    assert links["MY_DB_SERVICE_PORT_SQL"] == "overridden"  # the container's own env wins
    assert links["MY_DB_PORT"] == f"tcp://{ip}:5432"
    assert links["MY_DB_PORT_9187_UDP"] == f"udp://{ip}:9187" and links["MY_DB_PORT_9187_UDP_PROTO"] == "udp"
    assert links["MY_DB_PORT_5432_TCP_ADDR"] == ip and links["MY_DB_PORT_5432_TCP_PORT"] == "5432"
    assert links["DB_URL"] == f"postgres://{ip}:5432"
    assert not any(k.startswith("HEADLESS_") for k in links)
    for env in (links, nolinks):
        assert env["KUBERNETES_SERVICE_HOST"] == kube["spec"]["clusterIP"]
        assert env["KUBERNETES_SERVICE_PORT"] == str(kube["spec"]["ports"][0]["port"])
    assert not any(k.startswith("MY_DB_") for k in nolinks)
    for name in ("links", "nolinks"):
        await delete_and_wait_gone(client, node, name, ns)


async def test_a_volume_type_the_kubelet_cannot_provide_keeps_the_pod_from_running(kubelet_node: KubeletNode,
                                                                                    client: Client):
    node = kubelet_node
    ns = node.test_ns
    spec = pod(node, "novol", [{"name": "c", "command": ["sleep", "3600"],
                                "volumeMounts": [{"name": "info", "mountPath": "/etc/info"}]}],
               volumes=[{"name": "info", "nfs": {"server": "192.0.2.1", "path": "/export"}}])
    await client.create("pods", spec, namespace=ns)
    p = await wait_for(client, node, "novol", lambda p: "waiting" in (
        (p["status"].get("containerStatuses") or [{}])[0].get("state") or {}) and cstatus(p, "c")["state"][
        "waiting"].get("reason") == "CreateContainerConfigError", what="CreateContainerConfigError")
    waiting = cstatus(p, "c")["state"]["waiting"]
    assert 'volume "info"' in waiting["message"] and "nfs" in waiting["message"], waiting
    assert p["status"].get("phase") == "Pending"
    events, _ = await client.list_all("events", namespace=ns)
    assert any(e["reason"] == "Failed" and 'volume "info"' in e["message"]
               and e["involvedObject"]["name"] == "novol" for e in events), [e["message"] for e in events]
    app = node.ctr("containers", "ls", "-q",  # one filter, comma = and (several filters would be or)
                   'labels."io.kubernetes.pod.name"==novol,labels."io.kubernetes.container.name"==c').split()
    assert app == [], "no container may start without its volume"
    await delete_and_wait_gone(client, node, "novol", ns)


async def test_kubectl_port_forward(kubelet_node: KubeletNode, client: Client):
    """Stock kubectl port-forward: SPDY over a WebSocket, through the API server, into the pod's netns."""
    import hashlib
    import re
    import urllib.request

    from tests.e2e.conftest import KUBECTL

    node = kubelet_node
    ns = node.test_ns
    script = ("mkdir /www && echo pf-ok > /www/index.html && dd if=/dev/urandom of=/www/big bs=1024 count=3072 "
              "2>/dev/null && exec httpd -f -p 127.0.0.1:8080 -h /www")   # loopback only: reachable just in the pod
    pf = pod(node, "pf", [{"name": "web", "command": ["sh", "-c", script]}])
    pf["metadata"]["labels"] = {"kptest-app": "pf"}
    await client.create("pods", pf, namespace=ns)
    await client.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "pf-svc"},
                                     "spec": {"selector": {"kptest-app": "pf"},
                                              "ports": [{"name": "web", "port": 80, "targetPort": 8080}]}},
                        namespace=ns)
    await wait_for(client, node, "pf", lambda p: p["status"].get("phase") == "Running", what="Running")
    proc = subprocess.Popen([KUBECTL, "--kubeconfig", str(node.apiserver.kubeconfig), "-n", ns, "port-forward",
                             "pod/pf", ":8080", ":9"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ports = []
        deadline = time.monotonic() + 30
        while len(ports) < 2 and time.monotonic() < deadline:
            line = await asyncio.to_thread(proc.stdout.readline)
            if not line:
                break
            m = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)", line)
            if m:
                ports.append(int(m.group(1)))
        assert len(ports) == 2, (proc.poll(), proc.stderr.read() if proc.poll() is not None else "")

        def get(port: int, path: str) -> bytes:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
                return r.read()

        assert await asyncio.to_thread(get, ports[0], "/") == b"pf-ok\n"
        # A long stream and two at once: 3 MiB each, byte-exact.
        big = await asyncio.gather(asyncio.to_thread(get, ports[0], "/big"),
                                   asyncio.to_thread(get, ports[0], "/big"))
        cid = cstatus(await client.get("pods", "pf", namespace=ns), "web")["containerID"].split("//")[1]
        want = (await runtime_exec(node, cid, ["busybox", "md5sum", "/www/big"])).split()[0]
        assert [hashlib.md5(b).hexdigest() for b in big] == [want, want] and len(big[0]) == 3 << 20
        # Nothing listens on 9 in the pod: the connection fails, kubectl names the reason.
        with pytest.raises(OSError):
            await asyncio.to_thread(get, ports[1], "/")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "error forwarding port 9 to pod pf" in err, err
    # svc/NAME: kubectl picks a pod by the Service's selector and maps port 80 to its targetPort.
    proc = subprocess.Popen([KUBECTL, "--kubeconfig", str(node.apiserver.kubeconfig), "-n", ns, "port-forward",
                             "svc/pf-svc", ":80"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = await asyncio.to_thread(proc.stdout.readline)
        m = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> 8080", line)
        assert m, (line, proc.poll())
        assert await asyncio.to_thread(get, int(m.group(1)), "/") == b"pf-ok\n"
        big = await asyncio.to_thread(get, int(m.group(1)), "/big")
        assert hashlib.md5(big).hexdigest() == want
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
        await client.delete("services", "pf-svc", namespace=ns)
    await delete_and_wait_gone(client, node, "pf", ns)


async def test_proxy_subresources_and_kubectl_proxy(kubelet_node: KubeletNode, client: Client):
    import re
    import urllib.request

    from tests.e2e.conftest import KUBECTL

    node = kubelet_node
    ns = node.test_ns
    script = ("mkdir /www && echo '<a href=\"/other.html\">next</a>' > /www/index.html && echo other-page > "
              "/www/other.html && exec httpd -f -p 8080 -h /www")
    await client.create("pods", pod(node, "px", [{"name": "web", "command": ["sh", "-c", script], "ports": [
        {"name": "http", "containerPort": 8080}]}], ), namespace=ns)
    px = await wait_for(client, node, "px", lambda p: p["status"].get("phase") == "Running", what="Running")
    await client.create("services", {"metadata": {"name": "pxs"}, "spec": {
        "selector": {"app": "none"}, "ports": [{"name": "web", "port": 80, "targetPort": 8080}]}}, namespace=ns)
    # No controller manager here: the endpoints are written by hand, as the endpoints controller would.
    await client.create("endpoints", {"metadata": {"name": "pxs"}, "subsets": [{
        "addresses": [{"ip": px["status"]["podIP"], "nodeName": node.name,
                       "targetRef": {"kind": "Pod", "name": "px", "namespace": ns}}],
        "ports": [{"name": "web", "port": 8080}]}]}, namespace=ns)

    def raw(path: str) -> str:
        return node.apiserver.kubectl("get", "--raw", path).stdout

    base = f"/api/v1/namespaces/{ns}"
    page = raw(f"{base}/pods/px:8080/proxy/")
    assert page.strip() == f'<a href="{base}/pods/px:8080/proxy/other.html">next</a>', page
    assert raw(f"{base}/pods/px:http/proxy/other.html").strip() == "other-page"
    assert raw(f"{base}/services/pxs:web/proxy/other.html").strip() == "other-page"
    assert raw(f"{base}/services/http:pxs:80/proxy/other.html").strip() == "other-page"
    assert raw(f"/api/v1/nodes/{node.name}/proxy/healthz").strip() == "ok"
    missing = node.apiserver.kubectl("get", "--raw", f"{base}/pods/px:8080/proxy/nope.html", check=False)
    assert missing.returncode != 0 and "(NotFound)" in missing.stderr  # the pod answered 404

    proc = subprocess.Popen([KUBECTL, "--kubeconfig", str(node.apiserver.kubeconfig), "proxy", "--port=0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = await asyncio.to_thread(proc.stdout.readline)
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))

        def get(path: str) -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=20) as r:
                return r.read().decode()

        assert (await asyncio.to_thread(get, f"{base}/services/pxs:web/proxy/")).strip() == \
            f'<a href="{base}/services/pxs:web/proxy/other.html">next</a>'
        assert (await asyncio.to_thread(get, f"{base}/services/pxs:web/proxy/other.html")).strip() == "other-page"
    finally:
        proc.terminate()
        proc.wait(10)
    await delete_and_wait_gone(client, node, "px", ns)


async def test_short_execs_never_lose_their_output(kubelet_node: KubeletNode, client: Client):
    """Every one of many execs that print and exit at once returns its output (the kubelet's /exec).

    ctr tasks exec drops the output of a process that exits right after it starts now and then
    (it closes its FIFOs before it has read them; ``kubepy.kubelet.execio``); under CPU load a few
    in a hundred came back empty with exit code 0. Two busy loops supply the load here.
    """
    node = kubelet_node
    ns = node.test_ns
    await client.create("pods", pod(node, "quick", [{"name": "main", "command": ["sleep", "3600"]}]), namespace=ns)
    await wait_for(client, node, "quick", lambda p: p["status"].get("phase") == "Running", what="Running")
    # The kubelet asks the API server who the token is and whether it may use nodes/proxy: the admin may.
    token = kubeconfig_token(node.apiserver.kubeconfig)
    query = urlencode([("command", "hostname"), ("stdout", "1"), ("stderr", "1")])
    gate = asyncio.Semaphore(6)

    async def one(session: aiohttp.ClientSession) -> tuple[bytes, dict[str, Any]]:
        out, status = b"", {}
        async with gate, session.ws_connect(f"https://{node.node_ip}:10250/exec/{ns}/quick/main?{query}",
                                            protocols=("v5.channel.k8s.io",), ssl=False,
                                            headers={"Authorization": f"Bearer {token}"}) as ws:
            async for msg in ws:
                if msg.data[:1] == b"\x01":
                    out += msg.data[1:]
                elif msg.data[:1] == b"\x03":
                    status = json.loads(msg.data[1:])
        return out, status

    burners = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(2)]
    try:
        async with aiohttp.ClientSession() as session:
            results = await asyncio.gather(*[one(session) for _ in range(150)])
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert all(s.get("status") == "Success" for _, s in results), [s for _, s in results if s.get("status") != "Success"]
    lost = sum(1 for out, _ in results if out != b"quick\n")
    assert lost == 0, f"{lost} of {len(results)} execs lost their output"
    await client.delete("pods", "quick", namespace=ns, grace_period_seconds=0)
