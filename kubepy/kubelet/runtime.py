"""Container runtime adapter: images, containers, tasks, exec and events via ``ctr``.

The kubelet talks to its node's containerd only through this module, and
this module only through the ``ctr`` CLI (asyncio subprocesses). Errors::

    RuntimeError_
     ├── RuntimeCommandError   ctr failed: cmd, code, stderr
     │    └── ContainerNotFound no such container / task
     ├── ImageNotFound         the image is not in containerd's store
     ├── ImagePullError        pull failed: reason
     └── NotSupported          asked for something ctr cannot do

How a container is run (``run``): the image's config is read from the
content store (``ctr content get``) and resolved with Kubernetes'
command/args rules; a writable snapshot named after the container is
prepared on the image's top layer (``ctr snapshots prepare``) and mounted at
``state_dir/rootfs/<id>``; a complete OCI runtime spec (process, user,
hostname, namespaces joined by path, mounts, ``cgroupsPath``, resources) is
written to ``state_dir/specs/<id>.json`` and started with ``ctr run --config
-d``. The spec is therefore exactly what ``build_oci_spec`` returns - ``ctr``
flags cannot set a hostname, and ``ctr run IMAGE`` cannot take a full spec.
Consequences: the container record has no image or snapshot (both are kept
in labels: ``io.kubepy.image``); the kubelet and containerd must share a
mount namespace (the lab enters only the node's network namespace). ``remove``
unmounts and deletes the snapshot, so nothing leaks.

Attachable containers (``stdin`` or ``tty``): the binary log driver takes
stdout and stderr only, so such a container is started by its own IO process
(``kubepy.kubelet.attachio``), which runs ``ctr run -d --fifo-dir`` itself,
owns the task's FIFOs, writes the CRI log and serves attachers on a socket
in ``state_dir/io/<hash of id>/`` (``attach_socket``); ``remove`` stops it.
Every other container keeps the log shim and no extra process.

Exit statuses: ``ctr task ls`` has none, so ``list_containers`` reaps each
STOPPED task (``ctr task delete`` reports its status) and records status
and time as container labels (``io.kubepy.exit-status``,
``io.kubepy.exited-at``): they survive kubelet and containerd restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubepy.children import die_with_parent
from kubepy.kubelet.unixpath import short_path
from kubepy.meta.images import normalize_image_ref, parse_ctr_images  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

__all__ = [
    "ContainerInfo",
    "ContainerNotFound",
    "ContainerSpec",
    "ImageInfo",
    "ImageNotFound",
    "ImagePullError",
    "NotSupported",
    "Runtime",
    "RuntimeCommandError",
    "RuntimeError_",
    "RuntimeEvent",
    "build_oci_spec",
    "kill_exec",
    "normalize_image_ref",
    "resolve_process_args",
]

LABEL_IMAGE = "io.kubepy.image"
LABEL_EXIT_STATUS = "io.kubepy.exit-status"
LABEL_EXITED_AT = "io.kubepy.exited-at"
ATTACH_START_TIMEOUT = 180.0   # seconds for an attachable container's IO process to start it
EXEC_HANDOFF_TIMEOUT = 60.0    # seconds for the shim to start an exec's IO process and hand its pipes over
EXEC_DRAIN_AFTER_EXIT = 2.0    # seconds an exec's output may still end after ctr exits (see ExecProcess)
EXEC_REAP_TIMEOUT = 2.0        # seconds to wait for a killed exec's ctr to be reaped (see kill_exec)
SLOW_CTR_SECONDS = 5.0         # a ctr call (not a pull or import) slower than this is logged
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

RUNNING, STOPPED, CREATED, PAUSED, UNKNOWN = "RUNNING", "STOPPED", "CREATED", "PAUSED", "UNKNOWN"


class RuntimeError_(Exception):
    """Base of this module's errors (named so to leave the builtin alone)."""


class RuntimeCommandError(RuntimeError_):
    def __init__(self, cmd: list[str], code: int | None, stderr: str) -> None:
        self.cmd, self.code, self.stderr = cmd, code, stderr
        super().__init__(f"{' '.join(cmd)} exited with {code}: {stderr.strip()}")


class ContainerNotFound(RuntimeCommandError):
    pass


class ImageNotFound(RuntimeError_):
    pass


class ImagePullError(RuntimeError_):
    def __init__(self, ref: str, reason: str) -> None:
        self.ref, self.reason = ref, reason
        super().__init__(f"pull {ref}: {reason}")


class NotSupported(RuntimeError_):
    pass


# -- data ------------------------------------------------------------------

@dataclass
class ContainerSpec:
    """What the kubelet asks for; ``build_oci_spec`` turns it into an OCI spec.

    ``command``/``args`` follow Kubernetes: command replaces the image's
    Entrypoint (and drops its Cmd), args replace its Cmd. ``netns_path`` None
    means the network namespace containerd runs in (the node's: hostNetwork).
    ``mounts`` are (host_path, container_path, readonly) bind mounts.
    """

    id: str
    image: str
    command: list[str] | None = None
    args: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    user: str | None = None                     # "uid[:gid]" or names; overrides the image's
    additional_gids: list[int] = field(default_factory=list)   # fsGroup, supplementalGroups
    mounts: list[tuple[str, str, bool]] = field(default_factory=list)
    netns_path: str | None = None
    ipc_ns_path: str | None = None
    uts_ns_path: str | None = None
    pid_ns_path: str | None = None
    shm_path: str | None = None                 # the pod's /dev/shm, bind-mounted
    hostname: str | None = None
    cgroups_path: str | None = None             # default /<namespace>/<id>
    labels: dict[str, str] = field(default_factory=dict)
    log_path: str | None = None
    log_max_bytes: int = 10 * 1024 * 1024
    log_max_files: int = 5
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    privileged: bool = False
    read_only_rootfs: bool = False
    memory_limit: int | None = None             # bytes
    cpu_shares: int | None = None
    cpu_quota: int | None = None                # microseconds per cpu_period
    cpu_period: int = 100_000
    pids_limit: int | None = None
    oom_score_adj: int | None = None


@dataclass
class ContainerInfo:
    id: str
    image: str
    labels: dict[str, str]
    status: str | None                 # RUNNING/STOPPED/CREATED/PAUSED/UNKNOWN, None: no task
    pid: int | None = None
    exit_status: int | None = None
    exited_at: str | None = None       # RFC 3339


@dataclass
class RuntimeEvent:
    kind: str                          # "start", "exit", "oom", "delete"
    container_id: str
    exec_id: str | None = None         # set for an exec'd process's exit
    pid: int | None = None
    exit_status: int | None = None
    exited_at: str | None = None
    topic: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImageInfo:
    ref: str
    digest: str                        # the image's target (manifest or index)
    config: dict[str, Any]             # the OCI image config JSON
    chain_id: str | None               # top layer's snapshot name; None: no layers


# -- pure helpers ----------------------------------------------------------

# How long a `ctr images ls` that showed an image is trusted (see Runtime.image_exists).
IMAGE_PRESENT_TTL = 60.0

# normalize_image_ref lives in kubepy.meta.images (the scheduler needs it too).

def chain_id(diff_ids: list[str]) -> str | None:
    chain: str | None = None
    for d in diff_ids:
        chain = d if chain is None else "sha256:" + hashlib.sha256(f"{chain} {d}".encode()).hexdigest()
    return chain


def resolve_process_args(image_config: dict[str, Any], command: list[str] | None,
                         args: list[str] | None) -> list[str]:
    """Kubernetes' rules for command/args over the image's Entrypoint/Cmd."""
    cfg = image_config.get("config") or {}
    entrypoint, cmd = cfg.get("Entrypoint") or [], cfg.get("Cmd") or []
    if command:
        argv = list(command) + list(args or [])
    elif args:
        argv = list(entrypoint) + list(args)
    else:
        argv = list(entrypoint) + list(cmd)
    if not argv:
        raise RuntimeError_("no command: the image has no Entrypoint/Cmd and none was given")
    return argv


def resolve_user(user: str, rootfs: Path | None) -> tuple[int, int]:
    """``uid[:gid]`` or names looked up in the image's /etc/passwd and /etc/group."""
    if not user:
        return 0, 0
    name, _, group = user.partition(":")

    def lookup(file: str, key: str, field_no: int) -> int | None:
        if key.isdigit():
            return int(key)
        if rootfs is not None:
            try:
                for line in (rootfs / "etc" / file).read_text().splitlines():
                    parts = line.split(":")
                    if len(parts) > field_no and parts[0] == key:
                        return int(parts[2])
            except OSError:
                pass
        raise RuntimeError_(f"unable to find {'user' if file == 'passwd' else 'group'} {key}")

    uid = lookup("passwd", name, 2)
    gid: int | None = lookup("group", group, 2) if group else None
    if gid is None:
        gid = 0
        if rootfs is not None:
            try:
                for line in (rootfs / "etc" / "passwd").read_text().splitlines():
                    parts = line.split(":")
                    if len(parts) > 3 and (parts[0] == name or parts[2] == str(uid)):
                        gid = int(parts[3])
                        break
            except (OSError, ValueError):
                pass
    assert uid is not None
    return uid, gid


DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
DEVICE_RULES = [  # containerd's defaults for unprivileged containers
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": ma, "minor": mi, "access": "rwm"}
      for ma, mi in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2))),
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},
]
MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def build_oci_spec(spec: ContainerSpec, image_config: dict[str, Any], rootfs: str, *,
                   namespace: str = "kubepy", uid: int = 0, gid: int = 0) -> dict[str, Any]:
    """The complete OCI runtime spec runc gets for ``spec`` (pure; tests compare it)."""
    cfg = image_config.get("config") or {}
    env: dict[str, str] = {}
    for item in cfg.get("Env") or []:
        k, _, v = item.partition("=")
        env[k] = v
    env.setdefault("PATH", DEFAULT_PATH)
    if spec.hostname and spec.uts_ns_path is None:
        env["HOSTNAME"] = spec.hostname
    env.update(spec.env)
    caps = DEFAULT_CAPS
    process: dict[str, Any] = {
        "terminal": spec.tty,
        "user": {"uid": uid, "gid": gid, **({"additionalGids": sorted(set(spec.additional_gids))}
                                            if spec.additional_gids else {})},
        "args": resolve_process_args(image_config, spec.command, spec.args),
        "env": [f"{k}={v}" for k, v in env.items()],
        "cwd": spec.working_dir or cfg.get("WorkingDir") or "/",
        "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
        "noNewPrivileges": False,
    }
    if spec.oom_score_adj is not None:
        process["oomScoreAdj"] = spec.oom_score_adj
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]
    if spec.shm_path:
        mounts.append({"destination": "/dev/shm", "type": "bind", "source": spec.shm_path,
                       "options": ["rbind", "rprivate", "rw"]})
    else:
        mounts.append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                       "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]})
    for host, dest, ro in spec.mounts:
        mounts.append({"destination": dest, "type": "bind", "source": host,
                       "options": ["rbind", "rprivate", "ro" if ro else "rw"]})
    namespaces: list[dict[str, str]] = [{"type": "mount"}]
    for ns_type, path in (("pid", spec.pid_ns_path), ("ipc", spec.ipc_ns_path),
                          ("uts", spec.uts_ns_path), ("network", spec.netns_path)):
        if ns_type == "network" and path is None:
            continue     # the node's network namespace (hostNetwork)
        namespaces.append({"type": ns_type, **({"path": path} if path else {})})
    resources: dict[str, Any] = {"devices": DEVICE_RULES}
    if spec.memory_limit:
        resources["memory"] = {"limit": spec.memory_limit}
    cpu: dict[str, Any] = {}
    if spec.cpu_shares:
        cpu["shares"] = spec.cpu_shares
    if spec.cpu_quota:
        cpu["quota"], cpu["period"] = spec.cpu_quota, spec.cpu_period
    if cpu:
        resources["cpu"] = cpu
    if spec.pids_limit:
        resources["pids"] = {"limit": spec.pids_limit}
    oci: dict[str, Any] = {
        "ociVersion": "1.0.2-dev",
        "process": process,
        "root": {"path": rootfs, "readonly": spec.read_only_rootfs},
        "mounts": mounts,
        "linux": {
            "cgroupsPath": spec.cgroups_path or f"/{namespace}/{spec.id}",
            "namespaces": namespaces,
            "resources": resources,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }
    if spec.hostname and spec.uts_ns_path is None:
        oci["hostname"] = spec.hostname
    if spec.privileged:
        all_caps = _all_capabilities()
        process["capabilities"] = {k: all_caps for k in ("bounding", "effective", "permitted")}
        oci["linux"]["maskedPaths"] = []
        oci["linux"]["readonlyPaths"] = []
        resources["devices"] = [{"allow": True, "access": "rwm"}]
        for m in mounts:
            if m["destination"] in ("/sys", "/sys/fs/cgroup"):
                m["options"] = [o for o in m["options"] if o != "ro"]
    return oci


def _all_capabilities() -> list[str]:
    names = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
             "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
             "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
             "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
             "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
             "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
             "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"]
    return ["CAP_" + n for n in names]


_EVENT_LINE = re.compile(r"^\S+ \S+ \S+ \S+ (?P<ns>\S+) (?P<topic>/\S+) (?P<body>\{.*\})\s*$")


def parse_event_line(line: str) -> RuntimeEvent | None:
    """One line of ``ctr events``: ``DATE TIME +0000 UTC NS /topic {json}``."""
    m = _EVENT_LINE.match(line)
    if not m:
        return None
    topic = m["topic"]
    kind = {"/tasks/exit": "exit", "/tasks/oom": "oom", "/tasks/start": "start",
            "/tasks/delete": "delete"}.get(topic)
    if kind is None:
        return None
    try:
        body = json.loads(m["body"])
    except ValueError:
        return None
    cid = body.get("container_id", "")
    pid_ = body.get("id")
    return RuntimeEvent(kind=kind, container_id=cid,
                        exec_id=pid_ if kind == "exit" and pid_ and pid_ != cid else None,
                        pid=body.get("pid"), exit_status=body.get("exit_status", 0 if kind in ("exit", "delete") else None),
                        exited_at=body.get("exited_at"), topic=topic, raw=body)


# -- mounting (the container's root file system) ---------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_MS = {"ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "bind": 4096, "rbind": 4096 | 16384,
       "rw": 0, "remount": 32, "private": 1 << 18, "rprivate": (1 << 18) | 16384}


def _mount(m: dict[str, Any], target: Path) -> None:
    flags, data = 0, []
    for opt in m.get("Options") or []:
        if opt in _MS:
            flags |= _MS[opt]
        else:
            data.append(opt)
    fstype = "none" if m["Type"] == "bind" else m["Type"]
    if _libc.mount(m["Source"].encode(), str(target).encode(), fstype.encode(), flags,
                   ",".join(data).encode() or None) != 0:
        err = ctypes.get_errno()
        raise RuntimeError_(f"mount {m} on {target}: {os.strerror(err)}")


def _is_mountpoint(target: Path) -> bool:
    """From mountinfo: ``os.path.ismount`` misses bind mounts within one file system."""
    path = os.path.abspath(target)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = line.split(" ", 5)[4]
            if "\\" in mnt:
                mnt = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), mnt)
            if mnt == path:
                return True
    return False


def _umount(target: Path) -> None:
    while _is_mountpoint(target):
        if _libc.umount2(str(target).encode(), 2) != 0:   # MNT_DETACH
            err = ctypes.get_errno()
            raise RuntimeError_(f"umount {target}: {os.strerror(err)}")


# -- the adapter -----------------------------------------------------------

class Runtime:
    """Async adapter over ``ctr`` for one containerd and one containerd namespace."""

    def __init__(self, socket: str, *, namespace: str = "kubepy", ctr: str = "ctr",
                 snapshotter: str | None = None, runc_root: str | None = None,
                 state_dir: Path | None = None, log_shim: Path | None = None,
                 shim_dir: Path | None = None, hosts_dir: Path | None = None) -> None:
        self.socket = socket
        # containerd's registry hosts directory (``<host>/hosts.toml``, as /etc/containerd/certs.d):
        # mirrors and plain-HTTP registries for pulls. ctr reads it client-side, so it is a pull flag.
        self.hosts_dir = hosts_dir
        self.namespace = namespace
        self.ctr = ctr
        self.snapshotter = snapshotter
        self.runc_root = runc_root
        self.state_dir = Path(state_dir) if state_dir else Path(socket).parent / "kubepy-runtime" / namespace
        self.log_shim = log_shim
        # Where the log shim's wrapper is written: it must be on an exec-able file system,
        # which /run (state_dir's default) is not on systemd hosts (noexec).
        self.shim_dir = Path(shim_dir) if shim_dir else self.state_dir / "bin"
        self._env = dict(os.environ)
        if snapshotter:
            self._env["CONTAINERD_SNAPSHOTTER"] = snapshotter
        self._images: dict[str, ImageInfo] = {}
        self._containers: dict[str, dict[str, Any]] = {}   # id -> {"labels": ..., "image": ...}
        self._exits: dict[str, tuple[int, str]] = {}        # from events: id -> (status, exited_at)
        self._io_procs: dict[str, asyncio.subprocess.Process] = {}   # attachable containers we started
        self._present: dict[str, float] = {}   # image name -> when `ctr images ls` last showed it
        self._listing: asyncio.Future[Any] | None = None        # the container listing running now
        self._next_listing: asyncio.Future[Any] | None = None   # the one callers arriving now will share
        self._listing_tasks: set[asyncio.Task[None]] = set()

    # -- plumbing --------------------------------------------------------

    async def _ctr(self, *args: str, timeout: float | None = 60.0, check: bool = True,
                   stdin: bytes | None = None) -> tuple[int, str, str]:
        cmd = [self.ctr, "--address", self.socket, "--namespace", self.namespace, *args]
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self._env)
        try:
            async with asyncio.timeout(timeout):   # not wait_for: see RuntimeHealth.run
                out, err = await proc.communicate(stdin)
        except (TimeoutError, asyncio.CancelledError) as e:
            proc.kill()
            await proc.wait()
            if isinstance(e, TimeoutError):
                log.warning("ctr call timed out args=%r seconds=%.1f", " ".join(args[:4]), time.monotonic() - started)
            raise
        took = time.monotonic() - started
        if took > SLOW_CTR_SECONDS and args[0] != "images":   # pulls and imports take their time
            # a wedged shim or a starved host: say which call, for the pod it delays
            log.warning("ctr call slow args=%r seconds=%.1f", " ".join(args[:4]), took)
        code = proc.returncode
        assert code is not None
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        if check and code != 0:
            cls = ContainerNotFound if "not found" in stderr else RuntimeCommandError
            raise cls(cmd, code, stderr)
        return code, stdout, stderr

    async def status(self, *, timeout: float = 5.0) -> str:
        """The server's version if containerd answers within ``timeout``; raises RuntimeError_ if not."""
        if not os.path.exists(self.socket):   # ctr would wait for it until its connect timeout
            raise RuntimeCommandError(["ctr", "version"], None, f"no socket at {self.socket}")
        seconds = f"{max(1, int(timeout))}s"
        try:
            _, out, _ = await self._ctr("--connect-timeout", seconds, "--timeout", seconds, "version",
                                        timeout=timeout + 1)
        except TimeoutError:
            raise RuntimeCommandError(["ctr", "version"], None, f"no answer within {timeout}s") from None
        m = re.search(r"Version:\s*(\S+)", out.split("Server:", 1)[-1])
        return m.group(1) if m else "unknown"

    # -- images ----------------------------------------------------------

    async def image_exists(self, ref: str) -> bool:
        """Whether the image is here; a yes is remembered for IMAGE_PRESENT_TTL seconds (every pod
        start asks twice, and `ctr images ls` is a process each time), forgotten when the kubelet
        removes the image or a container of it fails to start."""
        name = normalize_image_ref(ref)
        seen = self._present.get(name)
        if seen is not None and time.monotonic() - seen < IMAGE_PRESENT_TTL:
            return True
        _, out, _ = await self._ctr("images", "ls", "-q", f"name=={name}")
        if out.strip():
            self._present[name] = time.monotonic()
            return True
        self._present.pop(name, None)
        return False

    async def pull(self, ref: str, *, timeout: float = 300.0) -> str:
        name = normalize_image_ref(ref)
        hosts = ["--hosts-dir", str(self.hosts_dir)] if self.hosts_dir else []
        try:
            code, _out, err = await self._ctr("images", "pull", *hosts, name, timeout=timeout, check=False)
        except TimeoutError:
            raise ImagePullError(name, f"timed out after {timeout}s") from None
        if code != 0:
            reason = (err.strip().splitlines() or [f"exit {code}"])[-1].removeprefix("ctr: ")
            raise ImagePullError(name, reason)
        self._images.pop(name, None)
        return name

    async def import_archive(self, path: Path) -> list[str]:
        """``ctr images import``; returns the names the archive gave its images."""
        _, out, _ = await self._ctr("images", "import", str(path), timeout=300.0)
        names = re.findall(r"unpacking (\S+) \(sha256:", out)
        for n in names:
            self._images.pop(n, None)
        return names

    async def list_images(self) -> list[str]:
        _, out, _ = await self._ctr("images", "ls", "-q")
        return out.split()

    async def node_images(self) -> list[dict[str, Any]]:
        """The images on this node as Node ``status.images`` lists them (names, sizeBytes)."""
        _, out, _ = await self._ctr("images", "ls")
        return parse_ctr_images(out)

    async def remove_image(self, ref: str) -> None:
        name = normalize_image_ref(ref)
        self._images.pop(name, None)
        self._present.pop(name, None)
        code, _, err = await self._ctr("images", "rm", name, check=False)
        if code != 0:
            if "not found" in err:
                raise ImageNotFound(name)
            raise RuntimeCommandError(["ctr", "images", "rm", name], code, err)

    async def image_info(self, ref: str) -> ImageInfo:
        name = normalize_image_ref(ref)
        if name in self._images:
            return self._images[name]
        _, out, _ = await self._ctr("images", "ls", f"name=={name}")
        rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
        if not rows:
            raise ImageNotFound(name)
        digest = rows[0][2]
        manifest = await self._content(digest)
        if "manifests" in manifest:   # an index: this machine's platform
            arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
            for m in manifest["manifests"]:
                p = m.get("platform") or {}
                if p.get("os", "linux") == "linux" and p.get("architecture", arch) == arch:
                    manifest = await self._content(m["digest"])
                    break
            else:
                raise ImageNotFound(f"{name}: no manifest for linux/{arch}")
        config = await self._content(manifest["config"]["digest"])
        info = ImageInfo(ref=name, digest=digest, config=config,
                         chain_id=chain_id((config.get("rootfs") or {}).get("diff_ids") or []))
        self._images[name] = info
        return info

    async def _content(self, digest: str) -> dict[str, Any]:
        _, out, _ = await self._ctr("content", "get", digest)
        return json.loads(out)

    # -- containers ------------------------------------------------------

    def rootfs_path(self, cid: str) -> Path:
        return self.state_dir / "rootfs" / cid

    def spec_path(self, cid: str) -> Path:
        return self.state_dir / "specs" / f"{cid}.json"

    async def run(self, spec: ContainerSpec) -> None:
        """Create the container and start its task, detached."""
        image = await self.image_info(spec.image)
        rootfs = self.rootfs_path(spec.id)
        try:
            mounts = await self._prepare_snapshot(spec.id, image)
            rootfs.mkdir(parents=True, exist_ok=True)
            for m in mounts:
                _mount(m, rootfs)
            user = spec.user if spec.user is not None else (image.config.get("config") or {}).get("User", "")
            uid, gid = resolve_user(user or "", rootfs)
            oci = build_oci_spec(spec, image.config, str(rootfs), namespace=self.namespace, uid=uid, gid=gid)
            spec_file = self.spec_path(spec.id)
            spec_file.parent.mkdir(parents=True, exist_ok=True)
            spec_file.write_text(json.dumps(oci))
            labels = {**spec.labels, LABEL_IMAGE: image.ref}
            opts = ["--config", str(spec_file)]
            if self.runc_root:
                opts += ["--runc-root", self.runc_root]
            for k, v in labels.items():
                opts += ["--label", f"{k}={v}"]
            if spec.stdin or spec.tty:
                await self._run_attachable(spec, [*opts, spec.id])
            elif spec.log_path:
                await self._ctr("run", "-d", *opts, "--log-uri", self._log_uri(spec), spec.id)
            else:
                await self._ctr("run", "-d", *opts, "--null-io", spec.id)
        except BaseException:
            self._present.pop(normalize_image_ref(spec.image), None)   # perhaps gone: ask ctr next time
            await asyncio.shield(self.remove(spec.id))
            raise
        self._containers[spec.id] = {"labels": labels, "image": image.ref}

    async def _prepare_snapshot(self, key: str, image: ImageInfo) -> list[dict[str, Any]]:
        parent = [image.chain_id] if image.chain_id else []
        code, out, err = await self._ctr("snapshots", "prepare", "--mounts", key, *parent, check=False)
        if code != 0 and "not found" in err and image.chain_id:
            # Not unpacked for this snapshotter (or a stale cache): unpack and retry.
            self._images.pop(image.ref, None)
            await self._ctr("snapshots", "unpack", image.digest, check=False)
            code, out, err = await self._ctr("snapshots", "prepare", "--mounts", key, *parent, check=False)
        if code != 0:
            raise RuntimeCommandError(["ctr", "snapshots", "prepare", key, *parent], code, err)
        return json.loads(out)

    def _log_uri(self, spec: ContainerSpec) -> str:
        from kubepy.kubelet import logshim
        shim = self.log_shim or logshim.ensure_shim_executable(self.shim_dir)
        return logshim.log_uri(shim, Path(spec.log_path or ""), max_bytes=spec.log_max_bytes,
                               max_files=spec.log_max_files)

    def attach_socket(self, cid: str) -> Path:
        """Where the container's IO process serves attachers (exists only for attachable containers)."""
        from kubepy.kubelet import attachio
        return attachio.socket_path(self.state_dir, cid)

    def is_attachable(self, cid: str) -> bool:
        return self.attach_socket(cid).exists()

    async def _run_attachable(self, spec: ContainerSpec, run_args: list[str]) -> None:
        """Start the container through its IO process (see the module doc); wait for its verdict."""
        from kubepy.kubelet import attachio
        directory = attachio.io_dir(self.state_dir, spec.id)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        src_root = Path(__file__).resolve().parents[2]
        args = [sys.executable, "-S", "-m", "kubepy.kubelet.attachio", "--id", spec.id, "--dir", str(directory),
                "--ctr", self.ctr, "--address", self.socket, "--namespace", self.namespace,
                *(["--log", spec.log_path, "--max-bytes", str(spec.log_max_bytes),
                   "--max-files", str(spec.log_max_files)] if spec.log_path else []),
                *(["--stdin"] if spec.stdin else []), *(["--stdin-once"] if spec.stdin_once else []),
                *(["--tty"] if spec.tty else []), "--", *run_args]
        env = {**self._env, "PYTHONPATH": str(src_root)}
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, env=env, start_new_session=True)
        assert proc.stdout is not None
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), ATTACH_START_TIMEOUT)).decode(errors="replace")
        except TimeoutError:
            line = f"error the IO process did not report within {ATTACH_START_TIMEOUT}s"
        if line.strip() != "ok":
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            reason = line.strip().removeprefix("error ") or f"the IO process exited with {proc.returncode}"
            raise RuntimeCommandError(["ctr", "run", spec.id], proc.returncode, reason)
        # Reaped by asyncio's child watcher when it ends; it outlives us if we restart.
        self._io_procs[spec.id] = proc
        log.info("attachable container started id=%s stdin=%s stdin_once=%s tty=%s io_pid=%d",
                 spec.id, spec.stdin, spec.stdin_once, spec.tty, proc.pid)

    async def _stop_io(self, cid: str) -> None:
        from kubepy.kubelet import attachio
        directory = attachio.io_dir(self.state_dir, cid)
        proc = self._io_procs.pop(cid, None)
        pid = proc.pid if proc is not None else None
        if pid is None:
            try:
                pid = int((directory / "pid").read_text())
            except (OSError, ValueError):
                pid = None
        if pid is not None and _is_io_process(pid, cid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc is not None:
            await proc.wait()
        shutil.rmtree(directory, ignore_errors=True)

    async def kill(self, cid: str, signal: str = "SIGTERM", *, all_processes: bool = False) -> None:
        await self._ctr("tasks", "kill", "-s", signal, *(["--all"] if all_processes else []), cid)

    async def remove(self, cid: str) -> None:
        """Kill (SIGKILL) and delete task, container, rootfs mount and snapshot; idempotent."""
        code, _, err = await self._ctr("tasks", "delete", "--force", cid, check=False)
        if code != 0 and "not found" not in err:
            raise RuntimeCommandError(["ctr", "tasks", "delete", "--force", cid], code, err)
        rootfs = self.rootfs_path(cid)
        _umount(rootfs)
        try:
            rootfs.rmdir()
        except FileNotFoundError:
            pass
        for args in (("containers", "delete", cid), ("snapshots", "rm", cid)):
            code, _, err = await self._ctr(*args, check=False)
            if code != 0 and "not found" not in err and "does not exist" not in err:
                raise RuntimeCommandError(["ctr", *args], code, err)
        self.spec_path(cid).unlink(missing_ok=True)
        await self._stop_io(cid)
        self._containers.pop(cid, None)
        self._exits.pop(cid, None)

    async def _tasks(self) -> dict[str, tuple[int, str]]:
        _, out, _ = await self._ctr("tasks", "ls")
        tasks = {}
        for line in out.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3:
                tasks[parts[0]] = (int(parts[1]), parts[2])
        return tasks

    async def task_ids(self) -> set[str]:
        """The ids of every task containerd knows in this namespace (any state)."""
        return set(await self._tasks())

    async def _container_meta(self, cid: str) -> dict[str, Any] | None:
        if cid not in self._containers:
            code, out, _err = await self._ctr("containers", "info", cid, check=False)
            if code != 0:
                return None
            info = json.loads(out)
            labels = info.get("Labels") or {}
            self._containers[cid] = {"labels": labels, "image": labels.get(LABEL_IMAGE) or info.get("Image", "")}
        return self._containers[cid]

    async def _containers_and_tasks(self) -> tuple[list[str], dict[str, tuple[int, str]]]:
        """``ctr containers ls`` and ``ctr tasks ls``, shared: callers that arrive while a
        listing runs all get the next one (it starts after they asked, so it shows what they
        did before), instead of one pair of processes each: 30 pods starting at once on 2
        cores spent most of their time forking listings."""
        if self._next_listing is None:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[Any] = loop.create_future()
            self._next_listing = fut
            previous = self._listing

            async def run_round() -> None:
                if previous is not None:
                    await asyncio.wait([previous])
                self._next_listing = None   # this round starts now: later callers wait for another
                self._listing = fut
                try:
                    (_, out, _), tasks = await asyncio.gather(self._ctr("containers", "ls", "-q"), self._tasks())
                    fut.set_result((out.split(), tasks))
                except asyncio.CancelledError:
                    fut.cancel()
                    raise
                except Exception as e:  # noqa: BLE001 - every waiter gets it, as if it had listed itself
                    fut.set_exception(e)
                    fut.exception()   # retrieved here too: a round nobody awaits any more must not warn

            task = loop.create_task(run_round())
            self._listing_tasks.add(task)
            task.add_done_callback(self._listing_tasks.discard)
        return await asyncio.shield(self._next_listing)

    async def list_containers(self, *, reap: bool = True) -> list[ContainerInfo]:
        """Every container with its task's state; STOPPED tasks are reaped (see module doc)."""
        ids, tasks = await self._containers_and_tasks()
        sem = asyncio.Semaphore(8)

        async def one(cid: str) -> ContainerInfo | None:
            async with sem:
                meta = await self._container_meta(cid)
                if meta is None:
                    return None
                pid, status = tasks.get(cid, (None, None))
                if status == STOPPED and reap:
                    await self._reap(cid)
                    pid = None
                labels = meta["labels"]
                exit_status = labels.get(LABEL_EXIT_STATUS)
                return ContainerInfo(
                    id=cid, image=meta["image"], labels=dict(labels),
                    status=STOPPED if status is None and exit_status is not None else status,
                    pid=pid or None, exit_status=int(exit_status) if exit_status is not None else None,
                    exited_at=labels.get(LABEL_EXITED_AT))

        return [c for c in await asyncio.gather(*(one(i) for i in ids)) if c is not None]

    async def _reap(self, cid: str) -> int:
        """Delete a stopped task; record its exit status as container labels."""
        code, _, err = await self._ctr("tasks", "delete", cid, check=False)
        if code != 0:
            raise (ContainerNotFound if "not found" in err else RuntimeCommandError)(
                ["ctr", "tasks", "delete", cid], code, err)
        m = re.search(r"exit code (\d+)", err)
        status = int(m.group(1)) if m else 0
        exited_at = self._exits.get(cid, (status, _now()))[1]
        await self._ctr("containers", "label", cid, f"{LABEL_EXIT_STATUS}={status}",
                        f"{LABEL_EXITED_AT}={exited_at}")
        meta = await self._container_meta(cid)
        if meta is not None:
            meta["labels"].update({LABEL_EXIT_STATUS: str(status), LABEL_EXITED_AT: exited_at})
        return status

    async def task_pid(self, cid: str) -> int | None:
        _, tasks = await self._containers_and_tasks()   # a shared listing, started after we asked
        pid, status = tasks.get(cid, (0, None))
        return pid if status in (RUNNING, PAUSED, CREATED) and pid else None

    async def exit_status(self, cid: str) -> int | None:
        """The container's exit status, None while it runs (reaps a stopped task)."""
        meta = await self._container_meta(cid)
        if meta is None:
            raise ContainerNotFound(["ctr", "containers", "info", cid], 1, "not found")
        if LABEL_EXIT_STATUS in meta["labels"]:
            return int(meta["labels"][LABEL_EXIT_STATUS])
        _, status = (await self._tasks()).get(cid, (0, None))
        if status == STOPPED:
            return await self._reap(cid)
        return None

    async def exec(self, cid: str, exec_id: str, argv: list[str], *, tty: bool = False, stdin: bool = True,
                   cwd: str | None = None, user: str | None = None) -> Any:
        """Start ``argv`` in the container; the caller streams the pipes.

        The process's returncode is the exec'd command's exit status (ctr
        exits with it). With ``tty`` ctr needs a terminal: the process gets
        a pseudo-terminal and ``stdout`` carries the terminal's output, ``stdin``
        writes to it, ``stderr`` is None.

        Without ``stdin`` and ``tty`` (``kubectl exec`` without ``-i``) ctr does
        not carry the output: it can drop the output of a
        process that exits right away (``kubepy.kubelet.execio`` says why), so
        the shim's pipes are handed to us instead and ``stdin`` is None; the
        result is an ``ExecProcess`` with the same ``stdout``/``stderr``/
        ``wait``/``kill``/``communicate``/``returncode`` as a subprocess.
        With ``stdin`` ctr's pipes are used as before (ctr has no way to give
        an exec stdin without copying its output too).
        """
        args = [self.ctr, "--address", self.socket, "--namespace", self.namespace,
                "tasks", "exec", "--exec-id", exec_id]
        if cwd:
            args += ["--cwd", cwd]
        if user:
            args += ["--user", user]
        if not tty and not stdin:
            return await self._exec_handoff(args, cid, exec_id, argv)
        if not tty:
            return await asyncio.create_subprocess_exec(
                *args, cid, *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self._env)
        return await _exec_with_pty([*args, "--tty", cid, *argv], self._env)

    async def _exec_handoff(self, args: list[str], cid: str, exec_id: str, argv: list[str]) -> ExecProcess:
        """``ctr tasks exec --log-uri binary://execio``: the exec's pipes come to us over a socket."""
        from kubepy.kubelet import execio
        exe = execio.ensure_executable(self.shim_dir)
        directory = self.state_dir / "exec"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / (hashlib.sha256(f"{cid}/{exec_id}".encode()).hexdigest()[:16] + ".sock")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        proc: asyncio.subprocess.Process | None = None
        try:
            with short_path(path) as addr:
                listener.bind(addr)
            os.chmod(path, 0o600)
            listener.listen(1)
            listener.setblocking(False)
            proc = await asyncio.create_subprocess_exec(
                *args, "--log-uri", execio.exec_uri(exe, path), cid, *argv, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=self._env)
            loop = asyncio.get_running_loop()
            accepted = asyncio.ensure_future(loop.sock_accept(listener))
            exited = asyncio.ensure_future(proc.wait())
            try:
                await asyncio.wait({accepted, exited}, timeout=EXEC_HANDOFF_TIMEOUT,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                exited.cancel()
            if not accepted.done() or accepted.cancelled() or accepted.exception() is not None:
                accepted.cancel()
                # ctr failed before the process started (no such task, bad user...), or hangs.
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
                return ExecProcess(proc, {})
            conn, _ = accepted.result()
            with conn:
                try:
                    # On the loop, not a thread: a probe cancelled here must not leave a worker thread blocked
                    # in recvmsg for the whole timeout (closing the socket does not wake it).
                    await _readable(conn, EXEC_HANDOFF_TIMEOUT)
                    fds = execio.receive_fds(conn)
                except (OSError, TimeoutError) as e:
                    log.warning("exec IO handoff failed container=%s exec_id=%s err=%s", cid, exec_id, e)
                    if proc.returncode is None:
                        proc.kill()
                    await proc.wait()
                    return ExecProcess(proc, {})
            return ExecProcess(proc, fds)
        except asyncio.CancelledError:
            if proc is not None and proc.returncode is None:   # the caller gave up: its ctr goes too
                proc.kill()
            raise
        finally:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # -- events ----------------------------------------------------------

    async def events(self) -> AsyncIterator[RuntimeEvent]:
        """Task start/exit/OOM/delete events of this namespace, as they happen.

        ``ctr events`` subscribes a moment after the generator starts (allow
        ~100 ms before relying on it); stop by closing the generator. Exits
        seen here also give ``list_containers`` exact ``exited_at`` times.
        """
        # It dies with the kubelet: a kubelet killed (SIGKILL, or systemd's stop timeout) would otherwise
        # leave it subscribed beside the next kubelet's (KillMode=process keeps the unit's other processes).
        proc = await asyncio.create_subprocess_exec(
            self.ctr, "--address", self.socket, "events", f"namespace=={self.namespace}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=self._env,
            preexec_fn=die_with_parent)
        assert proc.stdout is not None
        try:
            while True:
                line = await proc.stdout.readline()
                if not line:
                    break
                ev = parse_event_line(line.decode(errors="replace"))
                if ev is None:
                    continue
                if ev.kind == "exit" and ev.exec_id is None and ev.exit_status is not None:
                    self._exits[ev.container_id] = (ev.exit_status, ev.exited_at or _now())
                yield ev
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _readable(sock: socket.socket, timeout: float) -> None:
    """Until ``sock`` (made non-blocking) has something to read, or end of stream; TimeoutError after ``timeout``."""
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        async with asyncio.timeout(timeout):
            await ready
    finally:
        loop.remove_reader(sock.fileno())


def _is_io_process(pid: int, cid: str) -> bool:
    """Is ``pid`` the attach IO process of ``cid`` (and not a recycled pid)?"""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"kubepy.kubelet.attachio" in argv and cid.encode() in argv


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


async def _exec_with_pty(cmd: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    """Run ``cmd`` on a new pseudo-terminal; expose its master side as stdin/stdout."""
    import pty
    master, slave = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(*cmd, stdin=slave, stdout=slave, stderr=slave,
                                                    env=env, start_new_session=True)
    finally:
        os.close(slave)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(master, "rb", 0))
    wtransport, wprotocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(os.dup(master), "wb", 0))
    proc.stdout = reader
    proc.stdin = asyncio.StreamWriter(wtransport, wprotocol, None, loop)
    proc.stderr = None
    return proc


class _PipeProtocol(asyncio.StreamReaderProtocol):
    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        self.ended = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.ended.done():
            self.ended.set_result(None)


class ExecProcess:
    """An exec whose output pipes were handed over by the shim (``Runtime.exec``).

    ``ctr`` (the ``proc``) gives the exit status and carries no output. The
    pipes end when the exec'd process and the shim have closed them, which
    is before ctr exits; if something the process left behind still holds
    them, they are closed ``EXEC_DRAIN_AFTER_EXIT`` seconds after ctr exits
    (the output already written is read first). When the handoff did not
    happen (ctr failed), ``stderr`` carries ctr's message.
    """

    stdin = None

    def __init__(self, proc: asyncio.subprocess.Process, fds: dict[int, int]) -> None:
        self._proc = proc
        self.pid = proc.pid
        self.stdout = asyncio.StreamReader()
        self.stderr = asyncio.StreamReader()
        self._fds = fds
        self._done = asyncio.ensure_future(self._run())

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        transports: list[tuple[asyncio.BaseTransport, _PipeProtocol]] = []
        ctr_err = b""
        handed_over = bool(self._fds)
        try:
            for fd, reader in ((3, self.stdout), (4, self.stderr)):
                if fd not in self._fds:
                    if fd == 3 or handed_over:
                        reader.feed_eof()
                    continue
                protocol = _PipeProtocol(reader)
                transport, _ = await loop.connect_read_pipe(lambda p=protocol: p,
                                                            os.fdopen(self._fds.pop(fd), "rb", 0))
                transports.append((transport, protocol))
            assert self._proc.stderr is not None
            ctr_err = await self._proc.stderr.read()
            await self._proc.wait()
            while pending := [(t, p) for t, p in transports if not p.ended.done()]:
                await asyncio.wait([p.ended for _, p in pending], timeout=EXEC_DRAIN_AFTER_EXIT)
                if all(t.is_reading() for t, p in pending if not p.ended.done()):
                    break            # not waiting on a slow reader: whatever holds the pipe is not the exec
        finally:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            for transport, protocol in transports:
                if not protocol.ended.done():
                    transport.close()
            if not handed_over:      # what ctr said is the only output
                self.stderr.feed_data(ctr_err)
                self.stderr.feed_eof()
            elif ctr_err.strip():
                log.info("ctr exec said: %s", ctr_err.decode(errors="replace").strip())

    async def wait(self) -> int:
        return await self._proc.wait()

    def kill(self) -> None:
        self._proc.kill()

    async def communicate(self, input: bytes | None = None) -> tuple[bytes, bytes]:
        out, err, _ = await asyncio.gather(self.stdout.read(), self.stderr.read(), self._proc.wait())
        await self._done
        return out, err


async def kill_exec(proc: Any, *, wait: float = EXEC_REAP_TIMEOUT) -> bool:
    """Kill an exec's ``ctr`` (``Runtime.exec``'s process) if it still runs; True once it is reaped.

    For whoever gives up on an exec - a probe or hook that timed out or was
    cancelled: its ctr must not outlive it. The wait is bounded (a killed
    process's ``wait`` also waits for its pipes, which something it left
    behind may hold) and uses no cancellation of its own, so it behaves the
    same in a ``finally`` of a task that is being cancelled.
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    waiter = asyncio.ensure_future(proc.wait())
    try:
        await asyncio.wait([waiter], timeout=wait)
    finally:
        if not waiter.done():
            waiter.cancel()
    return waiter.done() and not waiter.cancelled() and waiter.exception() is None


def remove_tree(path: Path) -> None:
    """Remove a runtime state dir after its containers are gone (tests, ``kubepy down``)."""
    for mnt in sorted((path / "rootfs").glob("*")) if (path / "rootfs").exists() else []:
        _umount(mnt)
    shutil.rmtree(path, ignore_errors=True)
