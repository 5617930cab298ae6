"""Leaked containerd shims: finding the ones of this kubelet's containerd that nobody owns, and killing them.

containerd starts one ``containerd-shim-runc-v2`` per task; it outlives
containerd (that is how containers survive a containerd restart). When
containerd dies while a task is being created, the shim is already running
but the task was never recorded: the new containerd does not know it, and
nothing ever stops the shim (checked with containerd 1.6: SIGKILL of
containerd right after the shim appears leaves one per attempt).

A shim names its containerd on its command line::

    containerd-shim-runc-v2 -namespace kubepy -id <container id> -address <containerd socket>

It is an *orphan* of this kubelet when its ``-address`` is this kubelet's
containerd socket, its ``-namespace`` this kubelet's containerd namespace,
its ``-id`` is not a task containerd lists, and it is older than
``min_age`` - a shim whose task is being created right now is not listed
yet. Shims of other containerds (other lab nodes, the host's) and of other
namespaces are never touched.

Pure: ``parse_shim_argv``, ``orphan_shims``. Effects: ``list_shims`` (reads
/proc through psutil), ``kill_shim`` (SIGKILL to the shim's descendants -
the container processes it reaps as a subreaper - then to the shim).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

__all__ = ["SHIM_BINARY", "Shim", "kill_shim", "list_shims", "orphan_shims", "parse_shim_argv"]

SHIM_BINARY = "containerd-shim-runc-v2"
_BOOL_FLAGS = {"debug", "v"}   # the shim's flags that take no value


@dataclass(frozen=True)
class Shim:
    pid: int
    address: str
    namespace: str
    id: str
    started: float          # seconds since the epoch (the process's create time)


def parse_shim_argv(argv: list[str]) -> tuple[str, str, str] | None:
    """(address, namespace, id) of a task shim's command line; None if it is not one."""
    if not argv or os.path.basename(argv[0]) != SHIM_BINARY:
        return None
    flags: dict[str, str] = {}
    i = 1
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            # An action (``start``, ``delete``): containerd's short-lived invocation that
            # launches a shim or cleans up after a dead one - not a task's shim.
            return None
        name, eq, value = arg.lstrip("-").partition("=")
        if eq or name in _BOOL_FLAGS:
            flags[name] = value
        elif i + 1 < len(argv):
            flags[name] = argv[i + 1]
            i += 1
        i += 1
    if not (flags.get("address") and flags.get("namespace") and flags.get("id")):
        return None
    return flags["address"], flags["namespace"], flags["id"]


def orphan_shims(shims: Iterable[Shim], *, address: str, namespace: str, tasks: set[str],
                 now: float, min_age: float) -> tuple[list[Shim], list[Shim]]:
    """(orphans to kill now, candidates too young to judge yet) among ``shims``."""
    address = os.path.abspath(address)
    orphans: list[Shim] = []
    young: list[Shim] = []
    for s in shims:
        if os.path.abspath(s.address) != address or s.namespace != namespace or s.id in tasks:
            continue
        (orphans if now - s.started >= min_age else young).append(s)
    return orphans, young


def list_shims() -> list[Shim]:
    """Every runc v2 shim on this host (visible in this pid namespace)."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "create_time"]):
        argv = p.info.get("cmdline") or []
        parsed = parse_shim_argv(argv)
        if parsed is None:
            continue
        out.append(Shim(pid=p.info["pid"], address=parsed[0], namespace=parsed[1], id=parsed[2],
                        started=p.info.get("create_time") or 0.0))
    return out


def kill_shim(shim: Shim, *, timeout: float = 5.0) -> int:
    """SIGKILL the shim's descendants, then the shim; the number of processes killed.

    The shim is checked to still be the same process (pid and create time)
    so a recycled pid is never hit.
    """
    try:
        proc = psutil.Process(shim.pid)
        if abs(proc.create_time() - shim.started) > 0.01 or parse_shim_argv(proc.cmdline()) is None:
            return 0
        children = proc.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0
    victims = [*children, proc]
    killed = 0
    for p in victims:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            p.send_signal(signal.SIGKILL)
            killed += 1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in victims):
        time.sleep(0.02)
    return killed


def _alive(p: psutil.Process) -> bool:
    """Running and not a zombie (a zombie is dead, whoever is to reap it)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
