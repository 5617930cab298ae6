"""One node's private containerd: its config, its process, its socket.

Several kubelets share one host in the lab cluster, so every node runs its
own containerd with its own root, state, sockets and config under one
``state_dir``; nothing is shared with a system containerd in /run/containerd
except the shim socket directory, whose names are hashed from our socket path.
In the lab the daemon runs inside the node's network namespace through
``nsenter --net=`` (the mount namespace stays the host's: the runtime mounts
container root filesystems that runc must see).

Facts this module relies on (checked with containerd 1.6 / runc 1.1 on the
development machines):

- the CRI plugin is disabled: kubepy drives containerd only through ``ctr``;
- ``overlayfs`` is the snapshotter when an overlay mount works under
  ``state_dir`` (probed at start), else ``native``; ctr clients must be told
  which (``Runtime(snapshotter=...)`` sets ``CONTAINERD_SNAPSHOTTER``);
- cgroup v1 hybrid needs no setting: containerd and runc detect it from
  /sys/fs/cgroup; shims stay in containerd's cgroup, containers go where
  their spec's ``cgroupsPath`` says;
- stopping containerd (SIGTERM, then SIGKILL) leaves running containers and
  their shims alive; a new containerd on the same ``state_dir`` reconnects
  to them;
- ``start()`` adopts a containerd already running for this ``state_dir``
  (pid file + answering socket), so a restarted kubelet keeps its node's pods.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["Containerd", "ContainerdError"]

CONFIG_TEMPLATE = """\
# Written by kubepy: a private containerd for one node.
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"""


class ContainerdError(Exception):
    """containerd did not start or did not stop; carries the log's tail."""


class Containerd:
    """A containerd daemon owned by one node; see the module docstring."""

    def __init__(self, state_dir: Path, *, netns: str | None = None,
                 containerd: str = "containerd", ctr: str = "ctr") -> None:
        self.state_dir = Path(state_dir).absolute()
        self.netns = netns
        self._containerd = containerd
        self._ctr = ctr
        self._proc: subprocess.Popen[bytes] | None = None
        self.snapshotter = "overlayfs"

    # -- paths -------------------------------------------------------------

    @property
    def socket(self) -> str:
        return str(self.state_dir / "containerd.sock")

    @property
    def config_path(self) -> Path:
        return self.state_dir / "config.toml"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "containerd.log"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / "containerd.pid"

    @property
    def runc_root(self) -> str:
        """runc state for this node only (runc's default root is host-wide)."""
        return str(self.state_dir / "runc")

    @property
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text())
        except (OSError, ValueError):
            return None
        return pid if _is_containerd(pid, str(self.config_path)) else None

    # -- lifecycle ---------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Start (or adopt) this node's containerd and wait until it answers."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.snapshotter = self._pick_snapshotter()
        self.write_config()
        if self.pid is not None and await self.is_ready():
            log.info("containerd adopted pid=%s state_dir=%s", self.pid, self.state_dir)
            return
        argv = self.command()
        # Popen, not asyncio: an asyncio subprocess transport kills its child
        # when the event loop closes, and containerd must outlive its starter.
        with open(self.log_path, "ab") as logf:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                          stderr=logf, start_new_session=True)
        self.pid_path.write_text(str(self._proc.pid))
        deadline = time.monotonic() + timeout
        while not await self.is_ready():
            if self._proc.poll() is not None:
                raise ContainerdError(f"containerd exited with {self._proc.returncode}: "
                                      f"{self._log_tail()}")
            if time.monotonic() > deadline:
                await self.stop()
                raise ContainerdError(f"containerd not ready after {timeout}s: {self._log_tail()}")
            await asyncio.sleep(0.02)
        log.info("containerd started pid=%s state_dir=%s snapshotter=%s",
                 self._proc.pid, self.state_dir, self.snapshotter)

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; shims and containers live on."""
        pid = self.pid
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self._alive(pid):
                await asyncio.sleep(0.02)
            if not self._alive(pid):
                break
        else:
            raise ContainerdError(f"containerd pid {pid} survived SIGKILL")
        self._proc = None
        self.pid_path.unlink(missing_ok=True)
        Path(self.socket).unlink(missing_ok=True)

    async def is_ready(self) -> bool:
        if not Path(self.socket).exists():
            return False
        proc = await asyncio.create_subprocess_exec(
            self._ctr, "--address", self.socket, "--timeout", "1s", "version",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        return await proc.wait() == 0

    def command(self) -> list[str]:
        """The argv that runs this containerd (in its netns), config written first.

        For whoever starts it: ``start()`` here, or the lab's supervisor, which
        also writes ``pid_path`` so ``start()`` and ``stop()`` find the daemon.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.snapshotter = self._pick_snapshotter()
        self.write_config()
        argv = [self._containerd, "--config", str(self.config_path)]
        if self.netns:
            path = self.netns if self.netns.startswith("/") else f"/var/run/netns/{self.netns}"
            argv = ["nsenter", f"--net={path}", *argv]
        return argv

    # -- helpers -----------------------------------------------------------

    def write_config(self) -> None:
        text = CONFIG_TEMPLATE.format(root=self.state_dir / "root", state=self.state_dir / "state",
                                      socket=self.socket, opt=self.state_dir / "opt")
        if not self.config_path.exists() or self.config_path.read_text() != text:
            self.config_path.write_text(text)

    def _pick_snapshotter(self) -> str:
        """overlayfs if an overlay mount works on this file system, else native."""
        marker = self.state_dir / "snapshotter"
        if marker.exists():   # keep the choice: images are unpacked for it
            return marker.read_text().strip()
        choice = "overlayfs" if overlay_works(self.state_dir) else "native"
        marker.write_text(choice + "\n")
        return choice

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None   # our child: reap it
        return _is_containerd(pid, str(self.config_path))

    def _log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""


def overlay_works(where: Path) -> bool:
    """Mount a throw-away overlay under ``where``; True if that worked."""
    with tempfile.TemporaryDirectory(dir=where, prefix=".overlay-probe-") as tmp:
        t = Path(tmp)
        for d in ("lower", "upper", "work", "merged"):
            (t / d).mkdir()
        opts = f"lowerdir={t}/lower,upperdir={t}/upper,workdir={t}/work"
        res = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(t / "merged")],
                             capture_output=True, check=False)
        if res.returncode != 0:
            log.warning("overlay mount failed, using native snapshotter: %s",
                        res.stderr.decode(errors="replace").strip())
            return False
        subprocess.run(["umount", str(t / "merged")], check=False)
        return True


def _is_containerd(pid: int, config: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return (state != b"Z" and os.path.basename(argv[0]) == b"containerd"
            and config.encode() in argv)
