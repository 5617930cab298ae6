"""Pod-level cgroups: CPU and memory limits enforced for a pod as a whole.

Layout (the same relative path in every hierarchy)::

    /<parent>/<node>/pod<uid>/<container id>      e.g. /kubepy/node1/pod<uid>/<cid>
    '------ parent_path ----'                     made by ensure_parent()
    '--------- create() returns this ----'        runc's cgroupsPath = that + "/<cid>"

The node name is part of the path so several kubelets of a lab cluster on
one host never share (or garbage-collect) each other's pods.

cgroup v1 (also "hybrid": v1 controllers plus an empty cgroup2 at
/sys/fs/cgroup/unified) - limits are written in the cpu, cpuacct, memory
and pids hierarchies; v2 - the unified tree, controllers enabled down the
path through ``cgroup.subtree_control``. Mode and mount points come from
/proc/self/mountinfo; tests pass fake ones.

Placement: the tree sits under the *root* of each hierarchy, not under the
kubelet's own cgroup. runc's cgroupfs driver treats an absolute cgroupsPath
as relative to each hierarchy's root and uses one path for all
controllers, so "under our own cgroup" would only be possible if the
kubelet sat at the same path in every hierarchy - on the development
machines it does not (memory:/process_api/<session>, everything else /).
The roots are writable by root, and a pod's processes must not share the
fate (limits, cleanup) of whatever supervises the kubelet.

Kubernetes' conversions: cpu.shares = max(2, milli*1024/1000); CFS quota =
milli*period/1000 (period 100000us, quota at least 1000us); v2 cpu.weight =
1 + (shares-2)*9999/262142.

Errors::

    CgroupError
     └── CgroupBusy   processes would not leave a pod cgroup being removed
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = [
    "CgroupBusy",
    "CgroupError",
    "PodCgroups",
    "cpu_quota_us",
    "cpu_shares",
    "cpu_weight",
    "detect_mounts",
]

log = logging.getLogger(__name__)

CFS_PERIOD_US = 100_000
MIN_QUOTA_US = 1_000
MIN_SHARES = 2
MAX_SHARES = 262_144
POD_PREFIX = "pod"
V1_LIMIT_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")
V2_CONTROLLERS = ("cpu", "memory", "pids")


class CgroupError(Exception):
    """Base of pod cgroup errors."""


class CgroupBusy(CgroupError):
    """A cgroup still has processes after they were killed."""


# -- conversions (pure) --------------------------------------------------------
def cpu_shares(milli: int) -> int:
    return min(MAX_SHARES, max(MIN_SHARES, milli * 1024 // 1000))


def cpu_quota_us(milli: int, period_us: int = CFS_PERIOD_US) -> int:
    return max(MIN_QUOTA_US, milli * period_us // 1000)


def cpu_weight(shares: int) -> int:
    return 1 + ((shares - 2) * 9999) // 262142


def detect_mounts(mountinfo: str) -> tuple[dict[str, Path], Path | None]:
    """``({v1 controller or name=X: mount point}, cgroup2 mount point or None)``."""
    v1: dict[str, Path] = {}
    v2: Path | None = None
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        fields, rest = pre.split(), post.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        mnt = Path(fields[4].replace("\\040", " "))
        if rest[0] == "cgroup2":
            v2 = v2 or mnt
        elif rest[0] == "cgroup":
            for opt in rest[2].split(","):
                if opt in ("rw", "ro") or (opt.startswith(("xattr", "release_agent", "clone_children"))):
                    continue
                v1.setdefault(opt, mnt)
    return v1, v2


class PodCgroups:
    """The node's pod cgroups: ``/<parent>/<node>/pod<uid>`` in every hierarchy."""

    def __init__(
        self,
        parent: str = "kubepy",
        *,
        node: str = "",
        v1_mounts: Mapping[str, Path] | None = None,
        v2_root: Path | None = None,
    ) -> None:
        if v1_mounts is None and v2_root is None:
            v1_mounts, v2_root = detect_mounts(Path("/proc/self/mountinfo").read_text())
        self.v1 = {k: Path(v) for k, v in (v1_mounts or {}).items()}
        # Hybrid: v1 owns the controllers whenever a v1 memory hierarchy exists.
        self.mode = "v1" if "memory" in self.v1 else "v2"
        if self.mode == "v2" and v2_root is None:
            raise CgroupError("no cgroup v1 memory hierarchy and no cgroup2 mount")
        self.v2_root = Path(v2_root) if v2_root is not None else None
        parts = [p for p in (*parent.strip("/").split("/"), node) if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ValueError(f"bad cgroup parent {parent!r} / node {node!r}")
        self.parent_path = "/" + "/".join(parts)

    # -- paths ----------------------------------------------------------------
    def pod_path(self, pod_uid: str) -> str:
        if not pod_uid or "/" in pod_uid or pod_uid in (".", ".."):
            raise ValueError(f"bad pod uid {pod_uid!r}")
        return f"{self.parent_path}/{POD_PREFIX}{pod_uid}"

    def _roots(self, *, all_hierarchies: bool) -> dict[str, Path]:
        if self.mode == "v2":
            assert self.v2_root is not None
            return {"unified": self.v2_root}
        names = set(self.v1) if all_hierarchies else set(V1_LIMIT_CONTROLLERS) & set(self.v1)
        # Co-mounted controllers (cpu,cpuacct) share one directory: keep one name each.
        by_mount: dict[Path, str] = {}
        for name in sorted(names):
            by_mount.setdefault(self.v1[name], name)
        roots = {name: mnt for mnt, name in by_mount.items()}
        if all_hierarchies and self.v2_root is not None:
            # Hybrid hosts: runc also makes the container's cgroup in the unified
            # tree, so removal must look there too.
            roots["unified"] = self.v2_root
        return roots

    def paths(self, pod_uid: str, *, all_hierarchies: bool = False) -> dict[str, Path]:
        """``{controller: directory}`` of the pod (v2: ``{"unified": dir}``)."""
        rel = self.pod_path(pod_uid).lstrip("/")
        return {c: root / rel for c, root in self._roots(all_hierarchies=all_hierarchies).items()}

    def _file(self, pod_uid: str, controller: str, name: str) -> Path:
        rel = self.pod_path(pod_uid).lstrip("/")
        root = self.v2_root if self.mode == "v2" else self.v1.get(controller)
        if root is None:
            raise CgroupError(f"controller {controller} is not mounted")
        return root / rel / name

    # -- lifecycle ------------------------------------------------------------
    def ensure_parent(self) -> str:
        """Create ``/<parent>/<node>`` (and on v2 enable the controllers down to it)."""
        rel = self.parent_path.lstrip("/")
        for root in self._roots(all_hierarchies=False).values():
            (root / rel).mkdir(parents=True, exist_ok=True)
        if self.mode == "v2":
            self._enable_v2_controllers(self.parent_path)
        return self.parent_path

    def create(
        self,
        pod_uid: str,
        *,
        cpu_request_milli: int = 0,
        cpu_limit_milli: int | None = None,
        memory_limit_bytes: int | None = None,
        pids_limit: int | None = None,
    ) -> str:
        """Create (or update) the pod's cgroup; returns its path, the parent of runc's."""
        self.ensure_parent()
        path = self.pod_path(pod_uid)
        for d in self.paths(pod_uid).values():
            d.mkdir(exist_ok=True)
        shares = cpu_shares(cpu_request_milli)
        if self.mode == "v1":
            self._write(pod_uid, "cpu", "cpu.shares", shares)
            self._write(pod_uid, "cpu", "cpu.cfs_period_us", CFS_PERIOD_US)
            quota = cpu_quota_us(cpu_limit_milli) if cpu_limit_milli else -1
            self._write(pod_uid, "cpu", "cpu.cfs_quota_us", quota)
            self._write(pod_uid, "memory", "memory.limit_in_bytes", memory_limit_bytes if memory_limit_bytes else -1)
            if "pids" in self.v1:
                self._write(pod_uid, "pids", "pids.max", pids_limit or "max")
        else:
            self._enable_v2_controllers(path)
            self._write(pod_uid, "cpu", "cpu.weight", cpu_weight(shares))
            quota_s = str(cpu_quota_us(cpu_limit_milli)) if cpu_limit_milli else "max"
            self._write(pod_uid, "cpu", "cpu.max", f"{quota_s} {CFS_PERIOD_US}")
            self._write(pod_uid, "memory", "memory.max", memory_limit_bytes or "max")
            self._write(pod_uid, "pids", "pids.max", pids_limit or "max")
        return path

    def attach(self, pod_uid: str, pid: int) -> None:
        """Move a process into the pod cgroup (every limit hierarchy)."""
        for d in self.paths(pod_uid).values():
            (d / "cgroup.procs").write_text(f"{pid}\n")

    def remove(self, pod_uid: str, *, timeout: float = 5.0) -> None:
        """Kill what is left inside, then remove the pod's cgroups deepest first. Idempotent."""
        dirs = [d for d in self.paths(pod_uid, all_hierarchies=True).values() if d.is_dir()]
        deadline = time.monotonic() + timeout
        while True:
            pids = {p for top in dirs for d in _walk_deepest_first(top) for p in _procs(d)}
            if not pids:
                break
            if time.monotonic() > deadline:
                raise CgroupBusy(f"pod {pod_uid}: processes {sorted(pids)} still in {self.pod_path(pod_uid)}")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        for top in dirs:
            for d in _walk_deepest_first(top):
                _rmdir_retry(d, deadline)

    def list_pods(self) -> list[str]:
        """Uids of the pod cgroups under this node's parent."""
        roots = self._roots(all_hierarchies=False)
        root = roots.get("memory") or roots.get("unified") or next(iter(roots.values()), None)
        if root is None:
            return []
        base = root / self.parent_path.lstrip("/")
        try:
            return sorted(
                e.name[len(POD_PREFIX) :] for e in os.scandir(base) if e.is_dir() and e.name.startswith(POD_PREFIX)
            )
        except FileNotFoundError:
            return []

    def remove_parent(self, *, timeout: float = 5.0) -> None:
        """Remove every pod and the node's parent (for ``kubepy down`` and tests)."""
        for uid in self.list_pods():
            self.remove(uid, timeout=timeout)
        rel = self.parent_path.lstrip("/")
        deadline = time.monotonic() + timeout
        roots = self._roots(all_hierarchies=True).values()
        for root in roots:
            if (root / rel).is_dir():
                for d in _walk_deepest_first(root / rel):
                    _rmdir_retry(d, deadline)
            # The shared top (/kubepy) goes too once no other node on this host uses it.
            top = root / rel.split("/", 1)[0]
            if top != root / rel and top.is_dir():
                with contextlib.suppress(OSError):
                    top.rmdir()

    # -- stats ----------------------------------------------------------------
    def oom_kill_count(self, pod_uid: str) -> int:
        """OOM kills in the pod, its containers' included.

        v2's memory.events is hierarchical and keeps counting after a child
        is gone. v1's memory.oom_control counts only in the victim's own
        memcg (checked on kernel 6.18: a kill in <pod>/<ctr> caused by the
        pod's limit shows as oom_kill 1 in <ctr>, 0 in <pod>), so v1 sums
        the subtree - a container cgroup runc has already removed no longer
        counts; read it before deleting the container if that matters.
        """
        if self.mode == "v2":
            return _read_counter(self._file(pod_uid, "memory", "memory.events"), "oom_kill")
        top = self._file(pod_uid, "memory", "memory.oom_control").parent
        return sum(_read_counter(d / "memory.oom_control", "oom_kill") for d in _walk_deepest_first(top))

    def memory_usage(self, pod_uid: str) -> int:
        name = "memory.usage_in_bytes" if self.mode == "v1" else "memory.current"
        return int(self._file(pod_uid, "memory", name).read_text())

    # -- internals --------------------------------------------------------------
    def _write(self, pod_uid: str, controller: str, name: str, value: object) -> None:
        self._file(pod_uid, controller, name).write_text(f"{value}\n")

    def _enable_v2_controllers(self, path: str) -> None:
        """``+cpu +memory +pids`` in subtree_control from the root down to ``path``."""
        assert self.v2_root is not None
        available = set((self.v2_root / "cgroup.controllers").read_text().split())
        wanted = " ".join(f"+{c}" for c in V2_CONTROLLERS if c in available)
        if not wanted:
            return
        current = self.v2_root
        for part in ["", *path.strip("/").split("/")]:
            current = current / part if part else current
            control = current / "cgroup.subtree_control"
            if set(control.read_text().split()) >= {w[1:] for w in wanted.split()}:
                continue
            control.write_text(wanted + "\n")


def _read_counter(path: Path, key: str) -> int:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return 0  # removed while we walked
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    raise CgroupError(f"{path} has no {key} counter (kernel older than 4.13?)")


def _procs(d: Path) -> list[int]:
    try:
        return [int(p) for p in (d / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def _walk_deepest_first(top: Path) -> Iterator[Path]:
    if not top.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
        yield Path(dirpath)


def _rmdir_retry(d: Path, deadline: float) -> None:
    # EBUSY right after the last process died: the kernel releases it lazily.
    while True:
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise CgroupBusy(f"cannot remove {d}: {e}") from e
            time.sleep(0.02)
