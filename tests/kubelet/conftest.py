"""Fixtures for the kubelet's real-system tests: API server, node netns, containerd, kubelet.

The node is a network namespace ``kptest-node-<rand>`` (lo up, the node IP
on lo). The kubelet runs as a subprocess inside it (``nsenter --net=``),
beside a private containerd (also inside it). The API server listens on
the host's 127.0.0.1; a small forwarder (a socket bound inside the node
netns, connections made from the test process in the root netns) makes
it reachable as 127.0.0.1:<port> from the node too, so TLS names match.
Cleanup removes the kubelet, containers, containerd, pod and node netns,
cgroups and temp dirs even when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import APIServerProcess, start_apiserver, stop_apiserver
from tests.kubelet.images import busybox_archive  # noqa: F401  (fixture)

CLONE_NEWNET = 0x40000000
REPO = Path(__file__).resolve().parents[2]


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class NetnsForwarder:
    """127.0.0.1:port inside a netns → 127.0.0.1:port of the test process's netns."""

    def __init__(self, netns_path: str, port: int) -> None:
        self.netns_path, self.port = netns_path, port
        self._sock: socket.socket | None = None
        self._stopped = False

    def start(self) -> None:
        made: list[socket.socket | BaseException] = []

        def make() -> None:   # setns only moves this thread, which then ends
            try:
                own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
                target = os.open(self.netns_path, os.O_RDONLY)
                try:
                    _setns(target)
                    s = socket.socket()
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", self.port))
                    s.listen(64)
                    _setns(own)
                    made.append(s)
                finally:
                    os.close(own)
                    os.close(target)
            except BaseException as e:  # noqa: BLE001
                made.append(e)

        t = threading.Thread(target=make)
        t.start()
        t.join()
        if isinstance(made[0], BaseException):
            raise made[0]
        self._sock = made[0]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stopped:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.port))
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        self._stopped = True
        if self._sock is not None:
            self._sock.close()


@dataclass
class KubeletNode:
    name: str
    netns: str
    node_ip: str
    pod_cidr: str
    tmp: Path
    apiserver: APIServerProcess
    test_ns: str
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    host_if: str = ""

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"

    @property
    def containerd_dir(self) -> Path:
        return self.tmp / "ctrd"

    @property
    def socket(self) -> str:
        return str(self.containerd_dir / "containerd.sock")

    @property
    def root_dir(self) -> Path:
        return self.tmp / "kubelet"

    @property
    def log_dir(self) -> Path:
        return self.tmp / "logs"

    def start_kubelet(self) -> None:
        self.log_path = self.tmp / f"kubelet-{int(time.time() * 1000)}.log"
        code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from kubepy.kubelet.kubelet import main; main(sys.argv[1:])"
        with open(self.log_path, "ab") as logf:   # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(["nsenter", f"--net={self.netns_path}", sys.executable, "-c", code,
                                          *self.args], stdout=logf, stderr=subprocess.STDOUT)

    def stop_kubelet(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log_tail(self, n: int = 60) -> str:
        out = []
        for p in sorted(self.tmp.glob("kubelet-*.log")):
            out += p.read_text(errors="replace").splitlines()
        return "\n".join(out[-n:])

    def ctr(self, *args: str) -> str:
        return subprocess.run(["ctr", "--address", self.socket, "--namespace", "kubepy", *args],
                              capture_output=True, text=True, check=False).stdout


def _admin_patch_pod_cidr(srv: APIServerProcess, node: str, cidr: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cp = srv.kubectl("get", "node", node, "-o", "name", check=False)
        if cp.returncode == 0:
            srv.kubectl("patch", "node", node, "--type", "merge", "-p", f'{{"spec":{{"podCIDR":"{cidr}"}}}}')
            return
        time.sleep(0.2)
    raise AssertionError(f"node {node} never registered")


def _cleanup(node: KubeletNode) -> None:
    node.stop_kubelet(signal.SIGKILL)
    from kubepy.kubelet.cgroups import PodCgroups
    from kubepy.kubelet.containerd import Containerd
    from kubepy.kubelet.runtime import Runtime, remove_tree

    async def containers() -> None:
        cd = Containerd(node.containerd_dir, netns=node.netns)
        with contextlib.suppress(Exception):
            if not await cd.is_ready():
                await cd.start()
            rt = Runtime(cd.socket, namespace="kubepy", snapshotter=cd.snapshotter, runc_root=cd.runc_root)
            for c in await rt.list_containers(reap=False):
                with contextlib.suppress(Exception):
                    await rt.remove(c.id)
            remove_tree(rt.state_dir)
        with contextlib.suppress(Exception):
            await cd.stop()

    asyncio.run(containers())
    if node.host_if:   # gone with the netns, unless something still holds the netns open
        subprocess.run(["ip", "link", "delete", node.host_if], capture_output=True, check=False)
    for name in os.listdir("/var/run/netns") if os.path.isdir("/var/run/netns") else []:
        if name.startswith(f"kp-{node.test_ns}-") or name == node.netns:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
    with contextlib.suppress(Exception):
        PodCgroups("kubepy", node=node.name).remove_parent()
    unmount_under(node.tmp)   # a SIGKILLed kubelet leaves its pods' /dev/shm tmpfs mounted
    shutil.rmtree(node.tmp, ignore_errors=True)


def unmount_under(root: Path) -> None:
    """Lazily unmount every mount point below ``root``, deepest first."""
    prefix = str(root).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _free_octet(seed: int) -> int:
    """An octet X for 10.250.X.0/24 that no route on the host uses yet: the modules of this
    directory each make a node, and a node that a previous module left behind (its netns held
    open by a process) must not make the next one's `ip route add` fail with "File exists"."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True,
                            check=True).stdout
    for i in range(200):
        octet = (seed + i) % 200 + 20
        if f"10.250.{octet}." not in routes:
            return octet
    raise AssertionError("every 10.250.X.0/24 test range is in use on this host")


@pytest.fixture(scope="module")
def kubelet_node(busybox_archive: Path) -> Iterator[KubeletNode]:  # noqa: F811
    tmp = Path(tempfile.mkdtemp(prefix="kpk-", dir="/tmp"))   # short: socket paths ≤ 108 bytes
    rand = secrets.token_hex(3)
    name = f"kptest-node-{rand}"
    octet = _free_octet(int(rand[:2], 16))
    srv = start_apiserver(tmp / "api")
    node = KubeletNode(name=name, netns=name, node_ip=f"10.250.{octet}.1", pod_cidr=f"10.244.{octet}.0/24",
                       tmp=tmp, apiserver=srv, test_ns=f"kptest-{rand}")
    fwd: NetnsForwarder | None = None
    controllers: subprocess.Popen | None = None
    try:
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", f"{node.node_ip}/32", "dev", "lo"], check=True)
        # A link from the host so the API server can relay logs/exec to the kubelet at the
        # node IP (the lab cluster's bridge does this for real nodes). It goes with the netns.
        host_if, host_ip = f"kpth{rand}", f"10.250.{octet}.254"
        node.host_if = host_if
        subprocess.run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", name],
                       check=True)
        subprocess.run(["ip", "addr", "add", f"{host_ip}/32", "dev", host_if], check=True)
        subprocess.run(["ip", "link", "set", host_if, "up"], check=True)
        subprocess.run(["ip", "route", "add", f"{node.node_ip}/32", "dev", host_if, "src", host_ip], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "eth0", "up"], check=True)
        subprocess.run(["ip", "-n", name, "route", "add", f"{host_ip}/32", "dev", "eth0", "src", node.node_ip],
                       check=True)
        fwd = NetnsForwarder(node.netns_path, srv.port)
        fwd.start()

        from kubepy.kubelet.containerd import Containerd
        from kubepy.kubelet.runtime import Runtime

        async def containerd() -> None:
            cd = Containerd(node.containerd_dir, netns=name)
            await cd.start()
            rt = Runtime(cd.socket, namespace="kubepy", snapshotter=cd.snapshotter, runc_root=cd.runc_root)
            await rt.import_archive(busybox_archive)

        asyncio.run(containerd())
        from kubepy.privatefiles import write_private

        token_file = tmp / "bootstrap-token"
        write_private(token_file, srv.bootstrap_token() + "\n")
        node.args = ["--hostname-override", name, "--node-ip", node.node_ip, "--server", srv.url,
                     "--ca-file", str(srv.data_dir / "ca.crt"), "--bootstrap-token-file", str(token_file),
                     "--root-dir", str(node.root_dir), "--pod-logs-dir", str(node.log_dir),
                     "--container-runtime-endpoint", node.socket, "--node-status-update-frequency", "5s",
                     "--sync-frequency", "5s", "--eviction-monitoring-interval", "1s", "--log-level", "info"]
        node.start_kubelet()
        _admin_patch_pod_cidr(srv, name, node.pod_cidr)
        # What every namespace has on a cluster: a "default" ServiceAccount and the kube-root-ca.crt
        # ConfigMap, which every pod's kube-api-access volume projects; two real controllers make them.
        cm_log = open(tmp / "controller-manager.log", "ab")
        controllers = subprocess.Popen(
            [sys.executable, "-m", "kubepy", "--log-level", "info", "controller-manager", "--kubeconfig",
             str(srv.kubeconfig), "--controllers", "serviceaccount,root-ca-cert-publisher"],
            stdout=cm_log, stderr=subprocess.STDOUT)
        srv.kubectl("create", "namespace", node.test_ns)
        for ns in (node.test_ns, "default"):
            _wait_for_objects(srv, ns, ("serviceaccount/default", "configmap/kube-root-ca.crt"))
        yield node
    finally:
        if controllers is not None:
            controllers.terminate()
            try:
                controllers.wait(10)
            except subprocess.TimeoutExpired:
                controllers.kill()
        _cleanup(node)
        if fwd is not None:
            fwd.stop()
        stop_apiserver(srv)


def _wait_for_objects(srv: APIServerProcess, namespace: str, names: tuple[str, ...], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = srv.kubectl("get", "-n", namespace, *names, "-o", "name", check=False)
        if got.returncode == 0 and len(got.stdout.split()) == len(names):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{names} never appeared in {namespace}: {got.stderr}")
        time.sleep(0.2)


@pytest.fixture
async def client(kubelet_node: KubeletNode):
    """kubepy's client as the admin, for the tests that drive the kubelet through the API."""
    from kubepy.client import Client

    c = Client.from_kubeconfig(str(kubelet_node.apiserver.kubeconfig))
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture(scope="module")
def admin_kubeconfig(kubelet_node: KubeletNode) -> str:
    return str(kubelet_node.apiserver.kubeconfig)


def kubeconfig_token(path: Path) -> str:
    return yaml.safe_load(path.read_text())["users"][0]["user"]["token"]
