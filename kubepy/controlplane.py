"""``kubepy controlplane``: the API server, scheduler and controller manager
(and, with an advertised address, the metrics server and the web dashboard) as
supervised child processes.

The metrics server (``kubepy.metricsserver``) is an add-on upstream runs as a
pod; here it runs beside the control plane on its advertised address, so the
API server (which cannot reach pod addresses in a lab) can proxy
``/apis/metrics.k8s.io`` to it. Once the API server is ready the supervisor
issues its serving certificate (cluster CA, ``metrics-server.kube-system.svc``)
and registers it with the admin's credentials: Service and Endpoints
``kube-system/metrics-server``, APIService ``v1beta1.metrics.k8s.io``
(``kubepy.metricsserver.register``). A registration that fails is logged and
the metrics server is not started; the rest of the control plane runs on.
The dashboard (``kubepy.dashboard``) gets a serving certificate by the
cluster CA for the advertised address and forwards its users' requests to the
API server on loopback with their own tokens; it has no identity of its own.

Each child is the same ``kubepy`` command a person could run alone; they
talk only through the API. The supervisor keeps them alive and healthy:

- A child that exits is restarted with backoff (1 s doubling to 30 s, reset
  after a minute of good health).
- A child whose health fails is killed and so restarted: the API server's
  ``/healthz``, and the scheduler's and controller manager's, which fail when
  their event loop lags (``kubepy.healthz``). A stuck process (a livelocked
  loop, SIGSTOP) looks alive to ``ps``; only its health tells. Before a child
  has once been healthy it has ``STARTUP_GRACE`` to become so.
- What runs is recorded in ``DATA_DIR/run/<child>.json`` (pid, start time,
  health URL). A supervisor that is itself restarted (SIGKILL, a crash)
  *adopts* the children still running instead of starting second copies
  (the API server's port would be taken, and a second controller manager
  would fight the first); a pid is adopted only if its start time matches,
  so a reused pid is never mistaken for ours.

SIGTERM stops the children in reverse order (controllers first, API server
last).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

HEALTHY_AFTER = 60.0
MAX_BACKOFF = 30.0
METRICS_REGISTRATION_REFRESH = 10.0  # seconds between a control plane's re-registrations of its metrics server
PROBE_PERIOD = 2.0
# A stuck child is killed after FAILURE_THRESHOLD failed probes in a row: 10-35 s. Tighter (2 s
# timeouts, 3 failures) killed a healthy but CPU-starved API server on a 2-vCPU emulated VM while
# every node daemon was starting, and each restart made the starvation worse. Upstream's static
# pods allow 15 s per probe and 8 failures; these stay tighter so a livelock is not left for minutes.
PROBE_TIMEOUT = 5.0
FAILURE_THRESHOLD = 5
# The API server gets kubeadm's liveness allowance (15 s probes, 8 failures): everything else depends on
# it, and on an emulated VM a `vagrant provision` starved it past the tighter limits, so it was
# killed and spent a minute starting again.
APISERVER_PROBE_TIMEOUT = 15.0
APISERVER_FAILURE_THRESHOLD = 8
# How long a child may take to answer its first probe (the API server: to become ready) before it is
# killed: kubeadm's startup probes allow control-plane pods 240 s (24 failures, 10 s apart). 60 s killed
# a healthy API server still importing its modules on a 2-vCPU emulated VM while every daemon started, and
# then the scheduler, controller manager, metrics server and dashboard one after another (each restart
# costing the others more CPU).
STARTUP_GRACE = 240.0


def proc_start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass
class Child:
    name: str
    argv: list[str]
    health_flag: str | None = None  # the child's own flag for where to serve /healthz (plain HTTP)
    proc: subprocess.Popen | None = None
    pid: int = 0
    start_ticks: int | None = None
    health_url: str | None = None
    started: float = 0.0
    backoff: float = 1.0
    restart_at: float = 0.0
    restarts: int = 0
    healthy_once: bool = False
    failures: int = 0
    next_probe: float = 0.0
    env: dict[str, str] = field(default_factory=dict)

    def start(self, run_dir: Path | None = None) -> None:
        argv = list(self.argv)
        if self.health_flag:
            port = _free_port()
            argv += [self.health_flag, f"127.0.0.1:{port}"]
            self.health_url = f"http://127.0.0.1:{port}/healthz"
        self.proc = subprocess.Popen([sys.executable, "-m", "kubepy", *argv], stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        self.start_ticks = proc_start_ticks(self.pid)
        self._reset_health()
        log.info("started child=%s pid=%d restarts=%d", self.name, self.pid, self.restarts)
        if run_dir is not None:
            self.record(run_dir)

    def adopt(self, run_dir: Path) -> bool:
        """Take over this child from an earlier supervisor if it is still running."""
        try:
            rec = json.loads((run_dir / f"{self.name}.json").read_text())
            pid, ticks = int(rec["pid"]), rec.get("start_ticks")
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if ticks is None or proc_start_ticks(pid) != ticks:
            return False
        self.proc, self.pid, self.start_ticks = None, pid, ticks
        self.health_url = rec.get("health_url") or self.health_url
        self.restarts = int(rec.get("restarts") or 0)
        self._reset_health()
        self.healthy_once = True  # it ran before we came; its health decides from the first probe
        log.info("adopted child=%s pid=%d restarts=%d", self.name, pid, self.restarts)
        return True

    def record(self, run_dir: Path) -> None:
        tmp = run_dir / f".{self.name}.json.tmp"
        tmp.write_text(json.dumps({"pid": self.pid, "start_ticks": self.start_ticks, "health_url": self.health_url,
                                   "restarts": self.restarts}))
        tmp.replace(run_dir / f"{self.name}.json")

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid > 0 and proc_start_ticks(self.pid) == self.start_ticks

    def exit_code(self) -> int | str:
        return self.proc.returncode if self.proc is not None else "unknown (adopted)"

    def signal(self, sig: int) -> None:
        if self.pid > 0 and self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def forget(self) -> None:
        self.proc, self.pid, self.start_ticks = None, 0, None

    def _reset_health(self) -> None:
        self.started = time.monotonic()
        self.healthy_once = False
        self.failures = 0
        self.next_probe = self.started + 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def apiserver_ready(data_dir: Path, port: int) -> bool:
    """True once the API server whose data dir is ``data_dir`` answers /readyz on this host."""
    ca = data_dir / "ca.crt"
    if not ca.exists() or not (data_dir / "admin.kubeconfig").exists():
        return False
    try:
        ctx = ssl.create_default_context(cafile=str(ca))
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=ctx, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def probe(url: str, *, cafile: Path | None = None, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """One health probe: (healthy, what it said)."""
    ctx = ssl.create_default_context(cafile=str(cafile)) if url.startswith("https:") and cafile else None
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:
            return r.status == 200, r.read(200).decode(errors="replace").strip()
    except urllib.error.HTTPError as e:
        return False, f"{e.code} {e.read(200).decode(errors='replace').strip()}"
    except (OSError, ValueError) as e:
        return False, f"{type(e).__name__}: {e}"


def health_verdict(child: Child, ok: bool, now: float, grace: float = STARTUP_GRACE) -> str:
    """What one probe result means: "healthy", "failing" (count it) or "kill"; a child never healthy yet
    has ``grace`` seconds from its start."""
    if ok:
        return "healthy"
    if not child.healthy_once:
        return "kill" if now - child.started > grace else "starting"
    threshold = APISERVER_FAILURE_THRESHOLD if child.name == "apiserver" else FAILURE_THRESHOLD
    return "kill" if child.failures + 1 >= threshold else "failing"


READY_FILE_PERIOD = 5.0   # seconds between two /readyz probes for --ready-file
READY_FILE_TIMEOUT = 8.0


class ReadyFile:
    """Writes ``0`` to ``path`` while this host's API server answers ``/readyz`` with 200 and ``1``
    otherwise (from the start, and when the supervisor stops), probing every ``period`` seconds
    over one kept-alive HTTPS connection: keepalived's ``track_file`` reads it, so moving the
    API's virtual address costs no process and no TLS handshake per check (an ``openssl s_client``
    every few seconds took up to a fifth of an emulated control plane's CPU)."""

    def __init__(self, path: Path, *, data_dir: Path, port: int, period: float = READY_FILE_PERIOD,
                 timeout: float = READY_FILE_TIMEOUT) -> None:
        self.path, self.data_dir, self.port = path, data_dir, port
        self.period, self.timeout = period, timeout
        self.ready: bool | None = None
        self._conn: http.client.HTTPSConnection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write(self, ready: bool) -> None:
        """Say ``ready`` in the file, atomically (keepalived sees the rename), unless it already does."""
        want = "0\n" if ready else "1\n"
        if ready == self.ready:
            try:
                if self.path.read_text() == want:
                    return
            except OSError:
                pass
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(want)
        os.replace(tmp, self.path)
        if self.ready is not None or ready:
            log.info("apiserver readiness for the virtual address ready=%s file=%s", ready, self.path)
        self.ready = ready

    def probe(self) -> bool:
        """One GET /readyz on the kept connection (opened again after any failure)."""
        try:
            if self._conn is None:
                ctx = ssl.create_default_context(cafile=str(self.data_dir / "ca.crt"))
                self._conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=self.timeout)
            self._conn.request("GET", "/readyz")
            resp = self._conn.getresponse()
            resp.read()
            return resp.status == 200
        except (OSError, http.client.HTTPException, ssl.SSLError):
            self.close()
            return False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def start(self) -> None:
        self.write(False)
        self._thread = threading.Thread(target=self._run, name="ready-file", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.write(self.probe())
            self._stop.wait(self.period)
        self.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)
        self.write(False)


class Supervisor:
    def __init__(self, children: list[Child], *, data_dir: Path, port: int,
                 before_children: Callable[[], list[str]] | None = None,
                 periodic: tuple[float, Callable[[], object]] | None = None,
                 startup_grace: float = STARTUP_GRACE, ready_file: ReadyFile | None = None) -> None:
        self.children = children
        self.ready_file = ready_file
        self.startup_grace = startup_grace
        # (every seconds, job): run on a thread of its own once the children run, never two at once.
        self.periodic = periodic
        self._periodic_thread: threading.Thread | None = None
        self._periodic_due = 0.0
        # Called once the API server is ready; returns the names of children not to start.
        self.before_children = before_children
        self.data_dir = data_dir
        self.port = port
        self.run_dir = data_dir / "run"
        self.stopping = False
        api = next((c for c in children if c.name == "apiserver"), None)
        if api is not None:
            api.health_url = f"https://127.0.0.1:{port}/healthz"

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.ready_file is not None:
            self.ready_file.start()
        try:
            return self._run()
        finally:
            if self.ready_file is not None:
                self.ready_file.stop()

    def _run(self) -> int:
        api, *rest = self.children
        if not api.adopt(self.run_dir):
            api.start(self.run_dir)
        deadline = time.monotonic() + self.startup_grace
        while not apiserver_ready(self.data_dir, self.port):
            if self.stopping:
                return self._shutdown()
            if not api.alive():
                log.error("apiserver exited during start-up code=%s", api.exit_code())
                return 1
            if time.monotonic() > deadline:
                log.error("apiserver not ready after %.0fs", self.startup_grace)
                self._shutdown()
                return 1
            time.sleep(0.1)
        if self.before_children is not None:
            skipped = set(self.before_children())
            self.children = [c for c in self.children if c.name not in skipped]
            rest = [c for c in rest if c.name not in skipped]
        for child in rest:
            if not child.adopt(self.run_dir):
                child.start(self.run_dir)
        if self.periodic is not None:
            self._periodic_due = time.monotonic() + self.periodic[0]
        while not self.stopping:
            self._tend()
            self._run_periodic()
            time.sleep(0.2)
        return self._shutdown()

    def _run_periodic(self) -> None:
        if self.periodic is None or time.monotonic() < self._periodic_due:
            return
        if self._periodic_thread is not None and self._periodic_thread.is_alive():
            return
        every, job = self.periodic
        self._periodic_due = time.monotonic() + every
        self._periodic_thread = threading.Thread(target=job, name="supervisor-periodic", daemon=True)
        self._periodic_thread.start()

    def _tend(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.pid and child.alive():
                if child.healthy_once and now - child.started > HEALTHY_AFTER and child.failures == 0:
                    child.backoff = 1.0
                if now >= child.next_probe:
                    self._probe(child, now)
                continue
            if child.pid:
                child.restart_at = now + child.backoff
                log.warning("child exited child=%s pid=%d code=%s restart_in=%.0fs", child.name, child.pid,
                            child.exit_code(), child.backoff)
                child.backoff = min(child.backoff * 2, MAX_BACKOFF)
                child.forget()
            if now >= child.restart_at:
                child.restarts += 1
                child.start(self.run_dir)

    def _probe(self, child: Child, now: float) -> None:
        child.next_probe = now + PROBE_PERIOD
        if not child.health_url:
            return
        ok, said = probe(child.health_url, cafile=self.data_dir / "ca.crt",
                         timeout=APISERVER_PROBE_TIMEOUT if child.name == "apiserver" else PROBE_TIMEOUT)
        verdict = health_verdict(child, ok, time.monotonic(), self.startup_grace)
        if verdict == "healthy":
            if child.failures:
                log.info("child healthy again child=%s pid=%d", child.name, child.pid)
            child.healthy_once, child.failures = True, 0
        elif verdict == "failing":
            child.failures += 1
            log.warning("health check failed child=%s pid=%d failures=%d said=%r", child.name, child.pid,
                        child.failures, said)
        elif verdict == "kill":
            log.error("child unhealthy, killing child=%s pid=%d failures=%d said=%r", child.name, child.pid,
                      child.failures + 1, said)
            child.signal(signal.SIGKILL)
            child.signal(signal.SIGCONT)  # a stopped process dies only once it runs again

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _shutdown(self) -> int:
        for child in reversed(self.children):
            child.signal(signal.SIGTERM)
            child.signal(signal.SIGCONT)
        for child in reversed(self.children):
            deadline = time.monotonic() + 15
            while child.pid and child.alive() and time.monotonic() < deadline:
                if child.proc is not None:
                    try:
                        child.proc.wait(0.1)
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    time.sleep(0.1)
            if child.pid and child.alive():
                child.signal(signal.SIGKILL)
                if child.proc is not None:
                    child.proc.wait()
            (self.run_dir / f"{child.name}.json").unlink(missing_ok=True)
        log.info("stopped")
        return 0


def register_metrics_server(data_dir: Path, *, address: str, port: int, refresh: bool = False) -> bool:
    """The metrics server's serving certificate, then its Service, Endpoints and APIService; False on failure.
    ``refresh``: the periodic re-application, which logs only what it changed."""
    import asyncio

    from kubepy.api import certs
    from kubepy.client import Client, ClientConfig
    from kubepy.metricsserver import register

    try:
        certs.ensure_serving_cert(data_dir, [register.SERVICE_DNS, f"{register.NAME}.{register.NAMESPACE}",
                                             address], name="metrics-server-serving", common_name=register.NAME)

        async def apply() -> None:
            async with Client(ClientConfig.from_kubeconfig(data_dir / "admin.kubeconfig"),
                              user_agent="kubepy-controlplane") as client:
                return await register.apply(client, address=address, port=port,
                                            ca_pem=(data_dir / "ca.crt").read_bytes())

        addresses, changed = asyncio.run(apply())
    except Exception as e:  # noqa: BLE001 - the control plane runs on without the add-on
        if refresh:
            log.warning("metrics server registration not refreshed address=%s port=%d err=%s", address, port, e)
        else:
            log.error("metrics server not registered address=%s port=%d err=%s", address, port, e)
        return False
    if changed or not refresh:
        log.info("metrics server registered apiservice=v1beta1.metrics.k8s.io endpoint=%s:%d endpoints=%s",
                 address, port, ",".join(addresses))
    return True


def issue_dashboard_cert(data_dir: Path, *, address: str, sans: list[str] | tuple[str, ...] = ()) -> bool:
    """The dashboard's serving certificate (cluster CA) for ``address`` and the API server's extra
    ``sans`` (``--tls-san``: a shared address in front of several control planes serves the dashboard
    too); False (logged) on failure."""
    from kubepy.api import certs

    try:
        certs.ensure_serving_cert(data_dir, [address, *sans], name="dashboard-serving",
                                  common_name="kubepy-dashboard")
    except (OSError, ValueError) as e:
        log.error("dashboard not started: no serving certificate address=%s err=%s", address, e)
        return False
    return True


def run_controlplane(apiserver_argv: list[str], scheduler_argv: list[str], cm_argv: list[str], *,
                     data_dir: Path, port: int, metrics_argv: list[str] | None = None,
                     advertise_address: str | None = None, metrics_port: int = 0,
                     dashboard_argv: list[str] | None = None, tls_sans: list[str] | tuple[str, ...] = (),
                     startup_grace: float = STARTUP_GRACE, ready_file: Path | None = None) -> int:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    children = [Child("apiserver", apiserver_argv),
                Child("scheduler", scheduler_argv, health_flag="--healthz-bind-address"),
                Child("controller-manager", cm_argv, health_flag="--healthz-bind-address")]
    metrics = metrics_argv is not None and bool(advertise_address)
    dashboard = dashboard_argv is not None and bool(advertise_address)
    if metrics:
        children.append(Child("metrics-server", metrics_argv, health_flag="--healthz-bind-address"))
    if dashboard:
        children.append(Child("dashboard", dashboard_argv, health_flag="--healthz-bind-address"))

    def before() -> list[str]:
        skipped = []
        if metrics and not register_metrics_server(data_dir, address=advertise_address, port=metrics_port):
            skipped.append("metrics-server")
        if dashboard and not issue_dashboard_cert(data_dir, address=advertise_address, sans=tls_sans):
            skipped.append("dashboard")
        return skipped
    supervisor = Supervisor(children, data_dir=data_dir, port=port,
                            before_children=before if metrics or dashboard else None, startup_grace=startup_grace,
                            ready_file=ReadyFile(ready_file, data_dir=data_dir, port=port) if ready_file else None)
    if metrics:
        # Every control plane re-registers its metrics server (unless it was not started): the live ones
        # drop an address nothing answers on, one that comes back adds itself again.
        supervisor.periodic = (METRICS_REGISTRATION_REFRESH, lambda: any(
            c.name == "metrics-server" for c in supervisor.children) and register_metrics_server(
            data_dir, address=advertise_address, port=metrics_port, refresh=True))
    return supervisor.run()


def recorded_children(data_dir: Path) -> dict[str, dict[str, object]]:
    """What ``DATA_DIR/run`` says each child is: pid, restarts, and whether that process still runs."""
    out: dict[str, dict[str, object]] = {}
    for name in ("apiserver", "scheduler", "controller-manager"):
        try:
            rec = json.loads((data_dir / "run" / f"{name}.json").read_text())
            pid, ticks = int(rec["pid"]), rec.get("start_ticks")
        except (OSError, ValueError, KeyError, TypeError):
            out[name] = {"pid": 0, "restarts": 0, "alive": False}
            continue
        out[name] = {"pid": pid, "restarts": int(rec.get("restarts") or 0),
                     "alive": ticks is not None and proc_start_ticks(pid) == ticks}
    return out
