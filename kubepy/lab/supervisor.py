"""The lab supervisor: keeps every daemon of one lab cluster running, as systemd's
``Restart=always`` does on a VM.

::

    kubepy up ──writes──▶ <cluster>/daemons.json      what should run: name, argv, log, pid file
                                  │ read every tick
    kubepy lab supervise (twins)  │
      active:  holds flock(<cluster>/supervisor.lock); starts, adopts and restarts the daemons
               and keeps a standby twin alive
      standby: blocks on that flock; the kernel drops the lock when the active twin dies
               (even by SIGKILL), so the standby takes over at once and starts a new standby
                                  │ written atomically after every change
                                  ▼
                           <cluster>/supervisor.json  what runs: pid + start time, restarts, last restart
                                  ▲ read by ``kubepy status`` and ``kubepy down``

What must stay true:

- **One starter.** Only the twin holding the lock starts processes, so two twins
  never race; a standby that takes over re-reads ``supervisor.json`` first.
- **Adoption, not restart.** Daemons are not the supervisor's children once it
  died, so liveness is polled: a recorded daemon is running when
  ``/proc/<pid>/stat`` exists, is not a zombie and has the recorded start time
  (field 22), so a reused pid is never mistaken for the daemon.
- **Never started twice.** A daemon is spawned behind a gate (``sh`` reading one
  line from a pipe, then ``exec``-ing the daemon in the same pid): its pid and
  start time are on disk before the gate opens. If the active twin dies in
  between, the pipe's write end closes, the gate reads EOF and exits without
  starting anything; the record it left is then found dead and restarted once.
- **Backoff.** A daemon that dies within ``HEALTHY_AFTER`` of its start waits
  ``restart_delay(failures)`` (0.1 s doubling, capped at ``BACKOFF_MAX``) before
  the next start; one that stayed up that long starts again after the first,
  smallest delay (as systemd's ``RestartSec=100ms``).
- **Stopping.** ``kubepy down`` sets ``stopped`` in ``daemons.json`` before it
  signals the twins: an active twin exits at its next tick and a standby that
  gets the lock exits at once, so nothing is restarted under ``down``.

The decisions (``reconcile``, ``restart_delay``, ``is_running``, ``after_start``)
are pure functions over ``Record``; the rest are thin adapters for /proc,
files, flock and process spawning. Log lines are key=value, one per decision.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
HEALTHY_AFTER = 10.0
TICK = 0.25
STANDBY = "supervisor-standby"

DESIRED_FILE = "daemons.json"
STATE_FILE = "supervisor.json"
LOCK_FILE = "supervisor.lock"


# -- what should run ----------------------------------------------------------
@dataclass(frozen=True)
class Daemon:
    """One daemon as ``kubepy up`` declares it."""

    name: str
    argv: list[str]
    log: str                      # file its stdout and stderr go to
    pid_file: str | None = None   # written with its pid (containerd's own adoption reads it)
    # After it dies, kill what is left of its process group (systemd's KillMode=control-group).
    # Off for daemons whose children must outlive them: controlplane adopts its children,
    # containerd's shims keep the pods.
    kill_group: bool = True


@dataclass
class Desired:
    daemons: list[Daemon] = field(default_factory=list)
    stopped: bool = False

    def get(self, name: str) -> Daemon | None:
        return next((d for d in self.daemons if d.name == name), None)


def load_desired(cluster_dir: Path) -> Desired:
    try:
        raw = json.loads((cluster_dir / DESIRED_FILE).read_text())
    except FileNotFoundError:
        return Desired()
    return Desired([Daemon(**d) for d in raw.get("daemons", [])], bool(raw.get("stopped")))


def save_desired(cluster_dir: Path, desired: Desired) -> None:
    _write_json(cluster_dir / DESIRED_FILE, {"stopped": desired.stopped,
                                             "daemons": [asdict(d) for d in desired.daemons]})


def declare(cluster_dir: Path, daemon: Daemon) -> Daemon:
    """Add ``daemon`` unless one of that name is declared already; returns the declared one.

    An existing declaration wins: a repairing ``up`` must restart a daemon exactly
    as it ran (etcd on the same ports), not as a fresh ``up`` would pick.
    """
    desired = load_desired(cluster_dir)
    existing = desired.get(daemon.name)
    if existing is not None:
        return existing
    desired.daemons.append(daemon)
    save_desired(cluster_dir, desired)
    return daemon


def set_stopped(cluster_dir: Path, stopped: bool) -> None:
    desired = load_desired(cluster_dir)
    if desired.stopped != stopped:
        desired.stopped = stopped
        save_desired(cluster_dir, desired)


# -- what runs ----------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """What the supervisor knows of one daemon. Times: ``started``/``restart_at`` on the
    boot clock (shared by both twins, immune to wall-clock jumps), ``last_restart`` wall."""

    pid: int = 0
    start_time: int = 0       # /proc/<pid>/stat field 22: ticks since boot
    started: float = 0.0      # boot clock when this pid was started or adopted (0: never started)
    restarts: int = 0
    last_restart: float = 0.0
    failures: int = 0         # consecutive deaths within HEALTHY_AFTER of their start
    restart_at: float = 0.0   # boot clock: no start before this


@dataclass
class State:
    active: Record = field(default_factory=Record)
    active_since: float = 0.0  # wall clock
    takeovers: int = 0
    last_takeover: float = 0.0
    daemons: dict[str, Record] = field(default_factory=dict)


def load_state(cluster_dir: Path) -> State:
    try:
        raw = json.loads((cluster_dir / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return State()
    known = {f.name for f in fields(Record)}

    def rec(d: dict) -> Record:
        return Record(**{k: v for k, v in d.items() if k in known})

    return State(active=rec(raw.get("active") or {}), active_since=raw.get("active_since", 0.0),
                 takeovers=raw.get("takeovers", 0), last_takeover=raw.get("last_takeover", 0.0),
                 daemons={k: rec(v) for k, v in (raw.get("daemons") or {}).items()})


def save_state(cluster_dir: Path, state: State) -> None:
    _write_json(cluster_dir / STATE_FILE, {
        "active": asdict(state.active), "active_since": state.active_since, "takeovers": state.takeovers,
        "last_takeover": state.last_takeover, "daemons": {k: asdict(v) for k, v in state.daemons.items()}})


# -- decisions (pure) -----------------------------------------------------------
class Action(enum.Enum):
    KEEP = "keep"     # running: nothing to do
    DIED = "died"     # just found dead: the record now carries when to restart
    WAIT = "wait"     # dead, backoff not over
    START = "start"   # start it now


def restart_delay(failures: int) -> float:
    """Seconds to wait before a restart after ``failures`` consecutive quick deaths."""
    if failures <= 0:
        return 0.0
    return min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX)


def is_running(rec: Record, observed_start_time: int | None, *, me: int = 0) -> bool:
    """The recorded process still runs: same pid with the same start time, not a zombie
    (``observed_start_time`` is None for a zombie or a missing pid), and not ``me``."""
    return (rec.pid > 0 and rec.pid != me and observed_start_time is not None
            and observed_start_time == rec.start_time)


def reconcile(rec: Record | None, running: bool, now: float) -> tuple[Record, Action]:
    """One daemon's next step, from its record and whether it runs (``now``: boot clock)."""
    if rec is None:
        return Record(), Action.START
    if running:
        if rec.failures and now - rec.started >= HEALTHY_AFTER:
            return replace(rec, failures=0), Action.KEEP   # stayed up a while: backoff resets
        return rec, Action.KEEP
    if rec.pid:
        quick = now - rec.started < HEALTHY_AFTER
        failures = rec.failures + 1 if quick else 1
        return replace(rec, pid=0, start_time=0, failures=failures,
                       restart_at=now + restart_delay(failures)), Action.DIED
    if now >= rec.restart_at:
        return rec, Action.START
    return rec, Action.WAIT


def after_start(rec: Record, pid: int, start_time: int, now: float, wall: float) -> Record:
    """The record once ``pid`` was started for it; a start after an earlier one is a restart."""
    again = rec.started > 0
    return replace(rec, pid=pid, start_time=start_time, started=now, restart_at=0.0,
                   restarts=rec.restarts + (1 if again else 0),
                   last_restart=wall if again else rec.last_restart)


# -- adapters -------------------------------------------------------------------
def boot_clock() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat; None when there is no such process or it is a zombie."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


def record_running(rec: Record | None) -> bool:
    return rec is not None and is_running(rec, process_start_time(rec.pid))


def supervisor_active(cluster_dir: Path) -> bool:
    """True while some twin holds the cluster's supervisor lock."""
    path = cluster_dir / LOCK_FILE
    if not path.exists():
        return False
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def supervise_argv(cluster_dir: Path) -> list[str]:
    return [sys.executable, "-m", "kubepy", "lab", "supervise", "--cluster-dir", str(cluster_dir)]


def launch(cluster_dir: Path, log_path: Path) -> int:
    """Start a first twin (``kubepy up``); it becomes active or standby by the lock."""
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(supervise_argv(cluster_dir), stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc.pid


def spawn_gated(argv: list[str], log_path: Path) -> tuple[int, int]:
    """Start ``argv`` behind the gate (see the module docstring): returns (pid, gate fd).

    Write a line to the gate fd and close it to let the daemon run; closing it
    unwritten (or dying) makes the gate exit instead.
    """
    r, w = os.pipe()
    try:
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen(
                ["sh", "-c", 'read -r go || exit 111; exec "$@" </dev/null', "kubepy-gate", *argv],
                stdin=r, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    except BaseException:
        os.close(w)
        raise
    finally:
        os.close(r)
    return proc.pid, w


def open_gate(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, b"go\n")
    os.close(fd)


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def reap_children() -> dict[int, int]:
    """Collect exited children (daemons this twin started); returns pid -> exit code."""
    out: dict[int, int] = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return out
        if pid == 0:
            return out
        out[pid] = os.waitstatus_to_exitcode(status)


def _write_json(path: Path, obj: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


# -- the twins ------------------------------------------------------------------
class Supervisor:
    """One twin of one cluster: waits for the lock, then tends until stopped or killed."""

    def __init__(self, cluster_dir: Path) -> None:
        self.dir = cluster_dir
        self.logs = cluster_dir / "logs"
        self.me = os.getpid()
        self.exits: dict[int, int] = {}
        self.seen: set[str] = set()   # daemons this twin has started or adopted
        self.stopping = False

    def run(self) -> int:
        lock = open(self.dir / LOCK_FILE, "a+")
        log.info("role=standby pid=%d waiting_for=%s", self.me, lock.name)
        fcntl.flock(lock, fcntl.LOCK_EX)   # blocks while the other twin is active
        if not self.dir.is_dir() or load_desired(self.dir).stopped:
            log.info("role=active pid=%d exiting reason=stopped", self.me)
            return 0
        signal.signal(signal.SIGTERM, self._on_term)
        state = load_state(self.dir)
        wall = time.time()
        previous = state.active.pid
        if previous:
            state.takeovers += 1
            state.last_takeover = wall
        state.active = Record(pid=self.me, start_time=process_start_time(self.me) or 0, started=boot_clock())
        state.active_since = wall
        save_state(self.dir, state)
        log.info("role=active pid=%d previous=%s takeovers=%d", self.me, previous or "-", state.takeovers)
        while not self.stopping:
            desired = load_desired(self.dir) if self.dir.is_dir() else Desired(stopped=True)
            if desired.stopped:
                log.info("role=active pid=%d exiting reason=stopped", self.me)
                return 0
            if self.tend(state, desired):
                save_state(self.dir, state)
            time.sleep(TICK)
        log.info("role=active pid=%d exiting reason=SIGTERM", self.me)
        return 0

    def _on_term(self, signum: int, frame: object) -> None:
        self.stopping = True

    def tend(self, state: State, desired: Desired) -> bool:
        """One pass over every daemon and the standby twin; True when the state changed."""
        self.exits.update(reap_children())
        changed = False
        wanted = [*desired.daemons, Daemon(STANDBY, supervise_argv(self.dir), str(self.logs / "supervisor.log"),
                                           kill_group=False)]
        for daemon in wanted:
            rec = state.daemons.get(daemon.name)
            now = boot_clock()
            running = rec is not None and is_running(rec, process_start_time(rec.pid), me=self.me)
            new, action = reconcile(rec, running, now)
            if action is Action.KEEP:
                if daemon.name not in self.seen:   # running from before this twin was active
                    self.seen.add(daemon.name)
                    log.info("daemon=%s event=adopted pid=%d", daemon.name, new.pid)
                if new != rec:
                    state.daemons[daemon.name] = new
                    changed = True
                continue
            if action is Action.DIED and rec is not None and rec.pid == self.me:
                log.info("daemon=%s event=promoted pid=%d", daemon.name, self.me)   # the standby was this twin
                new, action = reconcile(new, False, now)
            elif action is Action.DIED:
                assert rec is not None
                code = self.exits.pop(rec.pid, None)
                log.warning("daemon=%s event=died pid=%d code=%s uptime=%.1fs failures=%d restart_in=%.1fs",
                            daemon.name, rec.pid, "unknown" if code is None else code, now - rec.started,
                            new.failures, max(new.restart_at - now, 0))
                if daemon.kill_group and rec.pid != self.me:
                    kill_group(rec.pid)   # leftovers of the dead daemon (e.g. its `ctr events`)
                new, action = reconcile(new, False, now)
            if action is Action.START:
                new = self._start(daemon, new, state)
            if new != rec:
                state.daemons[daemon.name] = new
                changed = True
        for gone in set(state.daemons) - {d.name for d in wanted}:
            del state.daemons[gone]
            changed = True
        return changed

    def _start(self, daemon: Daemon, rec: Record, state: State) -> Record:
        try:
            pid, gate = spawn_gated(daemon.argv, Path(daemon.log))
        except OSError as e:
            log.error("daemon=%s event=start-failed error=%r retry_in=%.1fs", daemon.name, str(e), BACKOFF_MAX)
            return replace(rec, restart_at=boot_clock() + BACKOFF_MAX)
        try:
            started = process_start_time(pid)
            if started is None:   # the gate itself could not run: nothing started, retry later
                return replace(rec, restart_at=boot_clock() + BACKOFF_MAX)
            new = after_start(rec, pid, started, boot_clock(), time.time())
            state.daemons[daemon.name] = new
            save_state(self.dir, state)   # on disk before the daemon may run: never started twice
            if daemon.pid_file:
                Path(daemon.pid_file).write_text(f"{pid}\n")
        except BaseException:
            os.close(gate)   # the gate exits: nothing started
            raise
        open_gate(gate)
        self.seen.add(daemon.name)
        log.info("daemon=%s event=started pid=%d restarts=%d", daemon.name, pid, new.restarts)
        return new


def run_supervisor(cluster_dir: Path) -> int:
    if not cluster_dir.is_dir():
        print(f"kubepy lab supervise: no cluster at {cluster_dir}", file=sys.stderr)
        return 1
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return Supervisor(cluster_dir).run()
