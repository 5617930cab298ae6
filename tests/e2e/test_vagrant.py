"""`vagrant up` on real VMs: one control plane and one worker under software emulation.

One worker, not the Vagrantfile's default two: under emulation on a two-core host every VM
(even idle, its daemons' loops) takes host CPU from the others, and a second worker added
about ten minutes to CI while checking nothing the first does not (traffic still crosses
nodes: the client pod runs on the control plane, every web pod on the worker).

What a user does, on this machine: build the box (vagrant/build-box; cached),
the wheelhouse (vagrant/build-wheelhouse) and the example images, then
`vagrant up` with the libvirt provider's qemu driver; libvirtd runs in a
network namespace of the test's own (tests/vagrant_vms.py). Then the lab
cluster's workload checks, on the VMs: every node Ready, the example app up,
reached from a pod on another node through its Service by DNS name and
through its NodePort on every VM's address, `kubectl logs` and `exec`; then
`vagrant reload` of a worker (a real reboot) and the cluster converging
again; `vagrant destroy -f` and everything stopped.

Guests run 5-12x slower than the host here, so every wait is on a condition,
with generous deadlines. The figures (box build, `vagrant up` to all nodes
Ready, the checks, each daemon's RSS in the VMs) are printed at the end; run
with ``-s`` to see them.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.vagrant_vms import PYTHON, Cluster, prepared_vms, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.vagrant]
FIGURES: dict[str, object] = {}


CLIENT_POD = """
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  nodeSelector: {kubernetes.io/hostname: kubepy-controlplane}
  tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
  containers:
  - name: client
    image: kubepy.local/job:1
    imagePullPolicy: IfNotPresent
    command: [sleep, "86400"]
  terminationGracePeriodSeconds: 1
"""

# A claim of the default class (a directory on worker1's disk) that must survive worker1's reboot.
STORE_POD = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: notes}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: notes, labels: {app: notes}}
spec:
  nodeSelector: {kubernetes.io/hostname: kubepy-worker1}
  containers:
  - name: notes
    image: kubepy.local/job:1
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "[ -f /data/first ] || cat /proc/sys/kernel/random/uuid > /data/first; exec sleep 86400"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: notes}}]
  terminationGracePeriodSeconds: 1
"""


@pytest.fixture(scope="module")
def cluster(request):
    with prepared_vms(request, FIGURES, workers=1) as (vms, done):
        start = time.monotonic()
        # The control plane; beside it, once its domain exists, the workers boot and run the common
        # provisioning (nothing of it needs the control plane). Then the workers' own provisioning, with
        # what the control plane published (rsynced to them first: the synced folder is one-way rsync).
        workers = [f"worker{i}" for i in range(1, vms.workers + 1)]
        controlplane = vms.vagrant_in_background("up", "controlplane")
        try:
            vms.wait_defined("controlplane", controlplane)
            vms.vagrant("up", "--provision-with", "common", *workers, timeout=3600)
            FIGURES["vagrant up workers, common provisioning (s)"] = round(time.monotonic() - start, 1)
            assert controlplane.wait(timeout=3600) == 0, f"vagrant up controlplane exited {controlplane.returncode}"
        finally:
            if controlplane.poll() is None:
                controlplane.kill()
                controlplane.wait()
        FIGURES["vagrant up controlplane (s)"] = round(time.monotonic() - start, 1)
        for worker in workers:
            vms.vagrant("rsync", worker, timeout=600)
            vms.vagrant("provision", worker, "--provision-with", "worker", timeout=3600)
        FIGURES["vagrant up, all VMs (s)"] = round(time.monotonic() - start, 1)
        c = Cluster(vms)
        wait_for(lambda: c.all_ready(1 + vms.workers), 900, "every node Ready")
        FIGURES["vagrant up to all nodes Ready (s)"] = round(time.monotonic() - start, 1)
        done()
        yield c


def test_nodes_ready_on_private_addresses(cluster: Cluster):
    nodes = cluster.json("nodes")["items"]
    want = {("kubepy-" + name): ip for name, ip in cluster.vms.addresses().items()}
    got = {n["metadata"]["name"]: next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
           for n in nodes}
    assert got == want, "every node registers with its private-network address, never eth0's"
    cp = next(n for n in nodes if n["metadata"]["name"] == "kubepy-controlplane")
    assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in cp["spec"].get("taints", [])
    # Under systemd: the units are active.
    state = cluster.vms.ssh("worker1", "systemctl is-active kubepy-kubelet kubepy-proxy kubepy-netpol kubepy-dns containerd")
    assert state.split() == ["active"] * 5, state
    # The kubelet's server (10250), kube-proxy's healthz (10256) and DNS (53) listen on the private address
    # only; everything else a node daemon serves (the kubelet's healthz 10248, the proxy's, the policy
    # agent's and DNS's metrics) on loopback, as upstream's defaults: nothing on eth0 or 0.0.0.0.
    listeners = [line.split()[4] for line in cluster.vms.ssh("worker1", "sudo ss -Hltnup").splitlines()
                 if '(("kubepy"' in line]
    outside = [a for a in listeners if not a.startswith("127.")]
    assert sorted({a.rsplit(":", 1)[1] for a in outside}) == ["10250", "10256", "53"], listeners
    assert all(a.rsplit(":", 1)[0] == want["kubepy-worker1"] for a in outside), listeners
    assert {a.rsplit(":", 1)[1] for a in listeners if a.startswith("127.")} <= {"10248", "10249", "10262", "9153"}, \
        listeners


def test_example_app(cluster: Cluster):
    start = time.monotonic()
    cluster.kubectl("apply", "-f", "examples/redis.yaml", "-f", "examples/web.yaml", "-f", "examples/job.yaml")
    cluster.kubectl("apply", "-f", "-", input=CLIENT_POD)
    cluster.kubectl("apply", "-f", "-", input=STORE_POD)
    wait_for(lambda: len(cluster.ready_pods("app=web")) == 3 and len(cluster.ready_pods("app=redis")) == 1,
             900, "3 web pods and Redis Ready")
    wait_for(lambda: cluster.ready_pods("app=client"), 600, "the client pod on the control plane Ready")
    wait_for(lambda: cluster.ready_pods("app=notes"), 600, "the notes pod with its claim Ready on worker1")
    assert cluster.json("pvc", "notes")["status"]["phase"] == "Bound"
    wait_for(lambda: any(c["type"] == "Complete" and c["status"] == "True"
                         for c in cluster.json("job", "primes").get("status", {}).get("conditions") or []),
             600, "the primes Job to complete")
    FIGURES["example app Ready after apply (s)"] = round(time.monotonic() - start, 1)
    web_nodes = {p["spec"]["nodeName"] for p in cluster.ready_pods("app=web")}
    workers = {"kubepy-" + m for m in cluster.vms.addresses() if m != "controlplane"}
    assert web_nodes == workers, "the control plane's taint keeps web off it"


def test_service_by_dns_name_from_another_nodes_pod(cluster: Cluster):
    start = time.monotonic()

    def visit() -> str | None:
        # (`timeout`, not `wget -T`: Debian 12's static busybox wget segfaults with -T.)
        out = cluster.kubectl("exec", "client", "--", "timeout", "15", "wget", "-qO-",
                              "http://web.default.svc.cluster.local/", check=False).stdout.strip()
        # A cold pod under emulation may take longer than the app's own 3 s wait for Redis (a 503): ask again.
        return out if re.fullmatch(r"hello from web v1 on web-\S+, visits: \d+", out) else None

    # The client runs on the control plane, where no web pod runs: every request crosses nodes.
    # Three visits (each a `kubectl exec` into an emulated VM, about a minute when CI's host is busy).
    replies = [wait_for(visit, 120, "an answer from web through its Service name") for _ in range(3)]
    counts = [int(r.rsplit("visits: ", 1)[1]) for r in replies]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), "each visit reaches the one Redis"
    FIGURES["DNS + ClusterIP checks (s)"] = round(time.monotonic() - start, 1)


def test_node_port_on_every_vm_address(cluster: Cluster):
    start = time.monotonic()
    for name, ip in cluster.vms.addresses().items():
        reply = wait_for(lambda: cluster.http_get(f"http://{ip}:30080/"), 120, f"NodePort on {name} ({ip})")
        assert reply.startswith("hello from web v1"), (name, reply)
    FIGURES["NodePort checks (s)"] = round(time.monotonic() - start, 1)


DASHBOARD_GET = """
import base64, json, ssl, sys, urllib.request
import yaml
cfg = yaml.safe_load(open(sys.argv[1]))
ctx = ssl.create_default_context(cadata=base64.b64decode(cfg["clusters"][0]["cluster"]["certificate-authority-data"]).decode())
def get(path, token=None):
    req = urllib.request.Request(sys.argv[2] + path, headers={"Authorization": "Bearer " + token} if token else {})
    with urllib.request.urlopen(req, context=ctx, timeout=20) as r:
        return r.read().decode()
page = get("/")
nodes = json.loads(get("/api/v1/nodes", cfg["users"][0]["user"]["token"]))
print(json.dumps({"title": "<title>kubepy dashboard</title>" in page,
                  "nodes": sorted(n["metadata"]["name"] for n in nodes["items"])}))
"""


def test_dashboard_on_the_control_planes_private_address(cluster: Cluster):
    """The control plane's unit serves the dashboard on its advertised address, its certificate by the
    cluster CA for that address; a request through it acts with the bearer token it carries."""
    ip = cluster.vms.addresses()["controlplane"]
    out = wait_for(lambda: cluster.vms.run(PYTHON, "-c", DASHBOARD_GET, str(cluster.vms.kubeconfig),
                                           f"https://{ip}:8443", timeout=60).stdout, 120, "the dashboard")
    assert json.loads(out) == {"title": True, "nodes": sorted("kubepy-" + n for n in cluster.vms.addresses())}


def test_logs_and_exec(cluster: Cluster):
    # Asked again while the API server cannot reach the kubelet: on CI's busy host an emulated worker has
    # once answered its port 10250 too late ("error dialing the kubelet ... Connection timeout").
    start = time.monotonic()
    logs = wait_for(lambda: cluster.kubectl("logs", "job/primes").stdout, 300, "the primes Job's log")
    assert "the first 20 primes: 2 3 5 7 11" in logs
    web = cluster.ready_pods("app=web")[0]["metadata"]["name"]
    assert wait_for(lambda: cluster.kubectl("exec", web, "--", "hostname").stdout.strip(), 300,
                    f"hostname from {web}") == web

    def exit_3():
        done = cluster.kubectl("exec", web, "--", "sh", "-c", "exit 3", check=False)
        return None if "error dialing the kubelet" in done.stderr else done
    failed = wait_for(exit_3, 300, f"exit 3 from {web}")
    assert failed.returncode == 3, (failed.returncode, failed.stderr)
    FIGURES["logs/exec checks (s)"] = round(time.monotonic() - start, 1)


def test_daemon_memory_in_the_vms(cluster: Cluster):
    """Not a limit (that is for benchmarks): records each daemon's RSS in the VMs, and that they all run."""
    rss: dict[str, dict[str, int]] = {}
    for machine in cluster.vms.addresses():
        out = cluster.vms.ssh(machine, "ps -eo rss=,args= | grep -E 'kubepy|containerd|ctr ' | grep -v grep")
        for line in out.splitlines():
            kb, _, args = line.strip().partition(" ")
            m = re.search(r"(?:/kubepy|-m kubepy)(?: --log-level \S+)? ([a-z-]+)", args)
            if m:
                label = f"kubepy {m.group(1)}"
            elif args.startswith("ctr "):
                label = "ctr " + next((w for w in args.split()[1:] if not w.startswith("-") and "/" not in w), "")
            else:
                label = Path(args.split()[0]).name
            rss.setdefault(machine, {})
            rss[machine][label] = rss[machine].get(label, 0) + int(kb) // 1024
    FIGURES["RSS in the VMs (MiB)"] = rss
    for machine in cluster.vms.addresses():
        labels = " ".join(rss.get(machine, {}))
        for daemon in ("kubelet", "proxy", "dns", "containerd"):
            assert daemon in labels, (machine, rss.get(machine))
    for daemon in ("controlplane", "apiserver", "scheduler", "controller-manager"):
        assert f"kubepy {daemon}" in rss["controlplane"], rss["controlplane"]


def _running_tasks(cluster: Cluster, machine: str) -> dict[str, str]:
    """containerd's running tasks in the kubepy namespace: container id -> PID."""
    out = cluster.vms.ssh(machine, "sudo ctr -n kubepy tasks ls")
    return {f[0]: f[1] for f in (line.split() for line in out.splitlines()[1:]) if len(f) == 3 and f[2] == "RUNNING"}


def _main_pids(cluster: Cluster, machine: str, units: list[str]) -> dict[str, str]:
    out = cluster.vms.ssh(machine, "systemctl show -p MainPID --value " + " ".join(units))
    return dict(zip(units, out.split(), strict=True))


@pytest.mark.vagrant_long
def test_kubelet_restart_keeps_the_pods_running(cluster: Cluster):
    """KillMode=process: systemd restarts the kubelet alone; the new kubelet adopts the running pods."""
    pods = {p["metadata"]["name"]: p for p in cluster.ready_pods("app=web") if p["spec"]["nodeName"] == "kubepy-worker1"}
    assert pods, "worker1 runs web pods"
    before = _running_tasks(cluster, "worker1")
    assert len(before) >= 2 * len(pods), before   # a sandbox and a container per pod
    old_pid = _main_pids(cluster, "worker1", ["kubepy-kubelet"])["kubepy-kubelet"]
    cluster.vms.ssh("worker1", "sudo systemctl restart kubepy-kubelet")
    invocation = cluster.vms.ssh("worker1", "systemctl show -p InvocationID --value kubepy-kubelet").strip()
    assert _main_pids(cluster, "worker1", ["kubepy-kubelet"])["kubepy-kubelet"] not in (old_pid, "0")

    def adopted() -> str | None:
        journal = cluster.vms.ssh("worker1", f"sudo journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID={invocation}")
        return journal if all(f"sandbox adopted pod=default/{name} " in journal for name in pods) else None

    journal = wait_for(adopted, 300, f"the restarted kubelet to adopt {sorted(pods)}")
    assert "sandbox started" not in journal and "container started" not in journal, journal
    assert _running_tasks(cluster, "worker1") == before, "the same containers run, with the same PIDs"
    for name, pod in pods.items():
        now = cluster.json("pod", name)["status"]["containerStatuses"][0]["restartCount"]
        assert now == pod["status"]["containerStatuses"][0]["restartCount"], name
    # The old kubelet's `ctr events` went with it (KillMode=process leaves children alone).
    wait_for(lambda: cluster.vms.ssh("worker1", "ps -eo args= | grep -cE '^(/usr/bin/)?ctr .*events' || true")
             .strip() == "1", 120, "one `ctr events` subscriber on worker1")


@pytest.mark.vagrant_long
def test_provision_again_changes_nothing(cluster: Cluster):
    """`vagrant provision` on a provisioned cluster writes no file and restarts no daemon."""
    units = {"controlplane": ["containerd", "kubepy-controlplane", "kubepy-kubelet", "kubepy-proxy", "kubepy-netpol",
                              "kubepy-dns", "kubepy-ingress"],
             "worker1": ["containerd", "kubepy-kubelet", "kubepy-proxy", "kubepy-netpol", "kubepy-dns"]}
    before = {m: _main_pids(cluster, m, u) for m, u in units.items()}
    tasks = {m: _running_tasks(cluster, m) for m in units}
    start = time.monotonic()
    out = cluster.vms.run("vagrant", "provision", *units, timeout=1800).stdout
    FIGURES["vagrant provision again, 2 VMs (s)"] = round(time.monotonic() - start, 1)
    assert out.count("common provisioning done") == 2, out[-3000:]
    assert "control plane ready" in out and "worker kubepy-worker1 joined" in out, out[-3000:]
    changes = re.findall(r"^.*(?:\] (?:wrote|start|restart|import|pip install|python3 -m venv|build|taint|published) "
                         r"|kubepy: wrote ).*$", out, re.MULTILINE)
    assert not changes, changes
    assert {m: _main_pids(cluster, m, u) for m, u in units.items()} == before, "no daemon restarted"
    assert {m: _running_tasks(cluster, m) for m in units} == tasks, "no container restarted"


@pytest.mark.vagrant_long
def test_reboot_a_worker_and_converge(cluster: Cluster):
    before = {p["metadata"]["name"] for p in cluster.pods("app=web") if p["spec"]["nodeName"] == "kubepy-worker1"}
    assert before, "worker1 runs web pods before the reboot"
    boot_id = cluster.vms.ssh("worker1", "cat /proc/sys/kernel/random/boot_id").strip()
    note = cluster.kubectl("exec", "notes", "--", "cat", "/data/first").stdout
    assert len(note.strip()) == 36, note
    start = time.monotonic()
    cluster.vms.vagrant("reload", "worker1", timeout=1800)
    assert cluster.vms.ssh("worker1", "cat /proc/sys/kernel/random/boot_id").strip() != boot_id, "it rebooted"
    wait_for(lambda: cluster.all_ready(1 + cluster.vms.workers), 900, "every node Ready after the reboot")
    # The same pods come back on worker1 (new sandboxes, same pod objects) and serve again.
    def back() -> bool:
        ready = {p["metadata"]["name"] for p in cluster.ready_pods("app=web")}
        return len(ready) == 3 and before <= ready
    wait_for(back, 900, f"web pods {sorted(before)} Ready again on worker1")
    wait_for(lambda: cluster.ready_pods("app=redis"), 600, "Redis Ready")
    ip = cluster.vms.addresses()["worker1"]
    reply = wait_for(lambda: cluster.http_get(f"http://{ip}:30080/"), 300, "NodePort on worker1 after the reboot")
    assert reply.startswith("hello from web v1"), reply
    restarted = [p for p in cluster.pods("app=web") if p["metadata"]["name"] in before]
    assert all(p["status"]["containerStatuses"][0]["restartCount"] >= 1 or
               p["status"]["containerStatuses"][0].get("lastState") for p in restarted), \
        "the pods' containers were started again after the reboot"
    FIGURES["reload worker1 to converged (s)"] = round(time.monotonic() - start, 1)
    # The claim's directory outlived the reboot: the pod's new container reads what the old one wrote.
    wait_for(lambda: cluster.ready_pods("app=notes"), 600, "the notes pod Ready again")
    assert cluster.kubectl("exec", "notes", "--", "cat", "/data/first").stdout == note


def test_destroy_leaves_nothing(cluster: Cluster):
    """`vagrant destroy -f`: no domain or disk of ours is left, and .kube/ forgets the old control plane."""
    start = time.monotonic()
    cluster.vms.vagrant("destroy", "-f", timeout=900)
    FIGURES["vagrant destroy -f (s)"] = round(time.monotonic() - start, 1)
    states = re.findall(r",state,([a-z_]+)", cluster.vms.run("vagrant", "status", "--machine-readable").stdout)
    assert states == ["not_created"] * (1 + cluster.vms.workers), states
    domains = cluster.vms.virsh("list", "--all", "--name").stdout.split()
    assert not [d for d in domains if d.startswith(cluster.vms.prefix)], domains
    volumes = cluster.vms.virsh("vol-list", cluster.vms.pool).stdout
    assert cluster.vms.prefix not in volumes, volumes   # the base box's volume may stay, as Vagrant keeps it
    left = [f.name for f in (cluster.vms.project / ".kube").glob("*") if f.is_file()]
    assert not {"admin.kubeconfig", "bootstrap-token", "ca.crt"} & set(left), left
