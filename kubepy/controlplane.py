"""``kubepy controlplane``: the API server, scheduler and controller manager
as three supervised child processes.

Each child is the same ``kubepy`` command a person could run alone; they
talk only through the API. A child that exits is restarted with backoff
(1 s doubling to 30 s, reset after a minute of good health). SIGTERM stops
the children in reverse order (controllers first, API server last).
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

HEALTHY_AFTER = 60.0
MAX_BACKOFF = 30.0


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    started: float = 0.0
    backoff: float = 1.0
    restart_at: float = 0.0
    restarts: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "kubepy", *self.argv], stdin=subprocess.DEVNULL)
        self.started = time.monotonic()
        log.info("started child=%s pid=%d restarts=%d", self.name, self.proc.pid, self.restarts)


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


class Supervisor:
    def __init__(self, children: list[Child], *, data_dir: Path, port: int) -> None:
        self.children = children
        self.data_dir = data_dir
        self.port = port
        self.stopping = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        api, *rest = self.children
        api.start()
        deadline = time.monotonic() + 60
        while not apiserver_ready(self.data_dir, self.port):
            if self.stopping:
                return self._shutdown()
            if api.proc and api.proc.poll() is not None:
                log.error("apiserver exited during start-up code=%s", api.proc.returncode)
                return 1
            if time.monotonic() > deadline:
                log.error("apiserver not ready after 60s")
                self._shutdown()
                return 1
            time.sleep(0.1)
        for child in rest:
            child.start()
        while not self.stopping:
            self._tend()
            time.sleep(0.2)
        return self._shutdown()

    def _tend(self) -> None:
        now = time.monotonic()
        for child in self.children:
            proc = child.proc
            if proc is not None and proc.poll() is None:
                if now - child.started > HEALTHY_AFTER:
                    child.backoff = 1.0
                continue
            if proc is not None:
                child.restart_at = now + child.backoff
                log.warning("child exited child=%s code=%s restart_in=%.0fs", child.name, proc.returncode,
                            child.backoff)
                child.backoff = min(child.backoff * 2, MAX_BACKOFF)
                child.proc = None
            if now >= child.restart_at:
                child.restarts += 1
                child.start()

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _shutdown(self) -> int:
        for child in reversed(self.children):
            if child.proc and child.proc.poll() is None:
                child.proc.terminate()
        for child in reversed(self.children):
            if child.proc:
                try:
                    child.proc.wait(15)
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()
        log.info("stopped")
        return 0


def run_controlplane(apiserver_argv: list[str], scheduler_argv: list[str], cm_argv: list[str], *,
                     data_dir: Path, port: int) -> int:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    children = [Child("apiserver", apiserver_argv), Child("scheduler", scheduler_argv),
                Child("controller-manager", cm_argv)]
    return Supervisor(children, data_dir=data_dir, port=port).run()
