"""Host-local IPAM: pod addresses out of the node's pod CIDR, kept on disk.

Like the CNI ``host-local`` plugin: one file per handed-out address in
``state_dir`` (named by the address, holding ``<pod uid>\\n<namespace/name>``),
plus ``last_reserved_ip`` so allocation goes round-robin through the range and
a just-released address is not handed to the next pod at once (stale
conntrack entries and endpoints would still point at it).

Every read-modify-write happens under an exclusive ``fcntl.flock`` on
``state_dir/lock``, and each file is written to a temporary name and renamed,
so two processes (or threads) never hand out one address twice and a crash
never leaves a half-written entry. State survives restarts; the kubelet
calls :meth:`HostLocalIPAM.release` when a pod's sandbox is gone.

Errors::

    IPAMError
     └── AddressesExhausted   every usable address of the CIDR is taken
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["AddressesExhausted", "HostLocalIPAM", "IPAMError"]

LOCK_FILE = "lock"
LAST_RESERVED_FILE = "last_reserved_ip"


class IPAMError(Exception):
    """Base of IPAM errors."""


class AddressesExhausted(IPAMError):
    """Every usable address of the pod CIDR is allocated."""


class HostLocalIPAM:
    """Addresses of one pod CIDR; the gateway is the first usable address."""

    def __init__(self, state_dir: Path, cidr: str) -> None:
        self.state_dir = Path(state_dir)
        self.network = ipaddress.IPv4Network(cidr, strict=False)
        if self.network.num_addresses < 4:
            raise ValueError(f"pod CIDR {cidr} is too small (need at least a /30)")
        self.gateway = str(self.network.network_address + 1)
        self.prefixlen = self.network.prefixlen

    # -- public API ---------------------------------------------------------
    def allocate(self, pod_uid: str, *, name: str = "") -> str:
        """The pod's address: its existing one, or the next free one (round-robin)."""
        if not pod_uid or "\n" in pod_uid:
            raise ValueError(f"bad pod uid {pod_uid!r}")
        with self._locked():
            taken = self._read_all()
            for ip, (uid, _) in taken.items():
                if uid == pod_uid and ipaddress.IPv4Address(ip) in self.network:
                    return ip
            ip = self._next_free(set(taken))
            self._write(self.state_dir / ip, f"{pod_uid}\n{name}\n")
            self._write(self.state_dir / LAST_RESERVED_FILE, ip + "\n")
            return ip

    def release(self, pod_uid: str) -> str | None:
        """Free every address held by the pod; returns the (last) one freed, or None."""
        freed = None
        with self._locked():
            for ip, (uid, _) in self._read_all().items():
                if uid == pod_uid:
                    with contextlib.suppress(FileNotFoundError):
                        (self.state_dir / ip).unlink()
                    freed = ip
        return freed

    def get(self, pod_uid: str) -> str | None:
        """The pod's address, or None."""
        return self.allocations().get(pod_uid)

    def allocations(self) -> dict[str, str]:
        """``{pod uid: ip}`` of every allocation on disk."""
        with self._locked():
            return {uid: ip for ip, (uid, _) in self._read_all().items()}

    def names(self) -> dict[str, str]:
        """``{pod uid: name}`` as recorded at allocation (for logs and GC messages)."""
        with self._locked():
            return {uid: name for _, (uid, name) in self._read_all().items()}

    # -- internals ----------------------------------------------------------
    def _usable(self) -> Iterator[ipaddress.IPv4Address]:
        # Skip the network address, the gateway (.1) and the broadcast address.
        first = int(self.network.network_address) + 2
        last = int(self.network.broadcast_address) - 1
        for n in range(first, last + 1):
            yield ipaddress.IPv4Address(n)

    def _next_free(self, taken: set[str]) -> str:
        usable = list(self._usable())
        start = 0
        last = self._read_last()
        if last is not None and last in self.network:
            start = (int(last) - int(usable[0]) + 1) % len(usable)
        for i in range(len(usable)):
            ip = str(usable[(start + i) % len(usable)])
            if ip not in taken:
                return ip
        raise AddressesExhausted(f"no free address in {self.network} ({len(taken)} allocated)")

    def _read_last(self) -> ipaddress.IPv4Address | None:
        try:
            return ipaddress.IPv4Address((self.state_dir / LAST_RESERVED_FILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _read_all(self) -> dict[str, tuple[str, str]]:
        """``{ip: (uid, name)}``; files that are not addresses are ignored."""
        out: dict[str, tuple[str, str]] = {}
        for entry in os.scandir(self.state_dir):
            try:
                ipaddress.IPv4Address(entry.name)
            except ValueError:
                continue
            try:
                lines = Path(entry.path).read_text().split("\n")
            except FileNotFoundError:
                continue
            out[entry.name] = (lines[0], lines[1] if len(lines) > 1 else "")
        return out

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def _write(self, path: Path, text: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
