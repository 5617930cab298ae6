"""kubectl logs / exec through a real API server to a real kubelet endpoint.

The kubelet side is ``KubeletServer`` in its own process with a fake pod
locator (no containerd): pods come from a JSON file, "containers" run
commands on the host, and a container "runs" while its marker file exists.
The node's kubelet token is the one ``/kubepy/v1/join`` issued, as in a real
cluster: with it the kubelet has its serving certificate signed and asks the API
server (TokenReview, SubjectAccessReview) about every caller; the API server
comes with its own client certificate and verifies the kubelet's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import KUBECTL, free_port, start_apiserver, stop_apiserver

pytestmark = pytest.mark.slow

NODE = "node-e2e"


# -- the kubelet process -------------------------------------------------------

class HostRuntime:
    """exec runs on the host; a container runs while ``<state>/<id>.running`` exists."""

    def __init__(self, state: Path) -> None:
        self.state = state

    async def exec(self, cid: str, exec_id: str, argv: list[str], *, tty: bool = False, stdin: bool = True,
                   cwd: str | None = None, user: str | None = None) -> asyncio.subprocess.Process:
        if tty:
            from kubepy.kubelet.runtime import _exec_with_pty
            return await _exec_with_pty(argv, dict(os.environ))
        return await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    async def task_pid(self, cid: str) -> int | None:
        return 1 if (self.state / f"{cid}.running").exists() else None


class FileLocator:
    """``pods.json``: {"ns/pod": {"container": {"id": ..., "log": ..., "previous": ...}}}."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.runtime: Any = HostRuntime(state)

    def locate(self, namespace: str, pod: str, container: str | None, *,
               previous: bool = False) -> tuple[str | None, Path | None]:
        pods = json.loads((self.state / "pods.json").read_text())
        containers = pods.get(f"{namespace}/{pod}")
        if containers is None:
            raise LookupError(f'pod "{pod}" not found on this node')
        if container is None:
            if len(containers) != 1:
                raise ValueError(f"a container name must be specified for pod {pod}, "
                                 f"choose one of: [{' '.join(containers)}]")
            container = next(iter(containers))
        if container not in containers:
            raise ValueError(f"container {container} is not valid for pod {pod}")
        c = containers[container]
        if previous:
            return None, Path(c["previous"]) if c.get("previous") else None
        return c["id"], Path(c["log"])


def serve(state: str, token: str, port: int, server: str, ca_file: str) -> None:
    """Entry point of the kubelet process: serve until killed."""
    from kubepy.client import Client, ClientConfig
    from kubepy.kubelet.auth import KubeletAuth
    from kubepy.kubelet.server import KubeletServer
    from kubepy.kubelet.servingcert import ensure_serving_cert

    async def main() -> None:
        ca = Path(ca_file).read_bytes()
        client = Client(ClientConfig(server=server, token=token, ca_data=ca))
        serving = await ensure_serving_cert(client, Path(state) / "pki", node_name=NODE, address="127.0.0.1",
                                            ca_pem=ca)
        srv = KubeletServer(FileLocator(Path(state)), node_name=NODE,  # type: ignore[arg-type]
                            auth=KubeletAuth(client, node_name=NODE, ca_pem=ca), client_ca=ca,
                            serving_cert=serving, cert_dir=Path(state) / "pki", address="127.0.0.1", port=port)
        await srv.start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# -- fixtures ------------------------------------------------------------------

def cri(stream: str, text: str, *, ago: float = 0.0, partial: bool = False) -> bytes:
    from kubepy.kubelet.logshim import format_cri_line
    return format_cri_line(stream, text.encode(), partial=partial, now_ns=time.time_ns() - int(ago * 1e9))


class Cluster:
    def __init__(self, apiserver: Any, state: Path) -> None:
        self.api = apiserver
        self.state = state

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess:
        return self.api.kubectl(*args, **kw)

    def append(self, name: str, *lines: bytes) -> None:
        with open(self.state / name, "ab") as f:
            f.write(b"".join(lines))


def _call(srv: Any, method: str, path: str, body: Any) -> Any:
    ctx = ssl.create_default_context(cafile=str(srv.data_dir / "ca.crt"))
    req = urllib.request.Request(srv.url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {srv.token()}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def cluster():
    tmp = Path(tempfile.mkdtemp(prefix="kubepy-logs-"))
    state = tmp / "node"
    state.mkdir()
    srv = start_apiserver(tmp / "api")
    kubelet = None
    try:
        token = _call(srv, "POST", "/kubepy/v1/join", {"nodeName": NODE})["token"]
        (state / "app.log.1").write_bytes(cri("stdout", "rotated line", ago=10000))
        (state / "app.log").write_bytes(cri("stdout", "one", ago=5000) + cri("stderr", "two", ago=4000)
                                        + cri("stdout", "thr", ago=30, partial=True) + cri("stdout", "ee", ago=30)
                                        + cri("stdout", "four", ago=20))
        (state / "app-prev.log").write_bytes(cri("stdout", "crashed before", ago=200))
        (state / "side.log").write_bytes(cri("stdout", "sidecar says hi", ago=10))
        (state / "pods.json").write_text(json.dumps({"default/web": {
            "app": {"id": "c-app", "log": str(state / "app.log"), "previous": str(state / "app-prev.log")},
            "side": {"id": "c-side", "log": str(state / "side.log")}}}))
        for cid in ("c-app", "c-side"):
            (state / f"{cid}.running").touch()
        port = free_port()
        entry = ("import sys; from tests.e2e.test_logs_exec import serve; "
                 "serve(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])")
        with open(tmp / "kubelet.log", "wb") as kubelet_log:
            kubelet = subprocess.Popen([sys.executable, "-c", entry, str(state), token, str(port), srv.url,
                                        str(srv.data_dir / "ca.crt")],
                                       cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                                       stderr=kubelet_log, text=True)
        assert kubelet.stdout is not None and kubelet.stdout.readline().strip() == "ready", \
            (tmp / "kubelet.log").read_text()
        _call(srv, "POST", "/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                     {"type": "Hostname", "address": NODE}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
        _call(srv, "POST", "/api/v1/namespaces/default/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "busybox"},
                                                      {"name": "side", "image": "busybox"}]}})
        _call(srv, "POST", "/api/v1/namespaces/default/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pending"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}})
        yield Cluster(srv, state)
    finally:
        if kubelet is not None:
            kubelet.kill()
            kubelet.wait(5)
        stop_apiserver(srv)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def wired(cluster: Cluster) -> Cluster:
    return cluster


# -- kubectl logs ----------------------------------------------------------------

def test_logs(wired: Cluster):
    cp = wired.kubectl("logs", "web")          # kubectl picks the first container
    assert cp.stdout == "rotated line\none\ntwo\nthree\nfour\n"
    assert wired.kubectl("logs", "web", "-c", "side").stdout == "sidecar says hi\n"


def test_logs_tail_timestamps_previous_since(wired: Cluster):
    assert wired.kubectl("logs", "web", "--tail=2").stdout == "three\nfour\n"
    stamped = wired.kubectl("logs", "web", "-c", "app", "--tail=1", "--timestamps").stdout
    stamp, text = stamped.rstrip("\n").split(" ", 1)
    assert text == "four" and stamp.endswith("Z") and len(stamp) == len("2026-11-21T11:00:00.000000000Z")
    assert wired.kubectl("logs", "web", "-c", "app", "--previous").stdout == "crashed before\n"
    assert wired.kubectl("logs", "web", "-c", "app", "--since=600s").stdout == "three\nfour\n"
    assert wired.kubectl("logs", "web", "-c", "app", "--limit-bytes=5").stdout == "rotat"


def test_logs_errors(wired: Cluster):
    cp = wired.kubectl("logs", "pending", check=False)
    assert cp.returncode != 0 and "does not have a host assigned" in cp.stderr
    cp = wired.kubectl("logs", "web", "-c", "nope", check=False)
    assert cp.returncode != 0 and "container nope is not valid for pod web" in cp.stderr


def test_logs_follow(wired: Cluster):
    assert KUBECTL
    proc = subprocess.Popen([KUBECTL, "--kubeconfig", str(wired.api.kubeconfig), "logs", "-f", "web", "-c", "side"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "sidecar says hi\n"
        wired.append("side.log", cri("stdout", "streamed"))
        assert proc.stdout.readline() == "streamed\n"
        wired.append("side.log", cri("stdout", "last words"))
        (wired.state / "c-side.running").unlink()     # the container stops: the stream ends
        assert proc.stdout.readline() == "last words\n"
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- kubectl exec ----------------------------------------------------------------

def test_exec_exit_code(wired: Cluster):
    cp = wired.kubectl("exec", "web", "-c", "app", "--", "sh", "-c", "echo hi; echo err >&2; exit 3", check=False)
    assert cp.returncode == 3, cp.stderr
    assert cp.stdout == "hi\n"
    assert "err\n" in cp.stderr and "command terminated with exit code 3" in cp.stderr


def test_exec_stdin(wired: Cluster):
    cp = wired.kubectl("exec", "-i", "web", "-c", "app", "--", "sh", "-c", "tr a-z A-Z", input="shout\n")
    assert cp.stdout == "SHOUT\n"


def test_exec_errors(wired: Cluster):
    cp = wired.kubectl("exec", "pending", "--", "true", check=False)
    assert cp.returncode != 0 and "does not have a host assigned" in cp.stderr, cp.stderr
    cp = wired.kubectl("exec", "web", "-c", "nope", "--", "true", check=False)
    assert cp.returncode != 0 and "nope" in cp.stderr, cp.stderr
