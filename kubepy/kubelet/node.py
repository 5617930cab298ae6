"""The kubelet's Node: registration, heartbeats (Lease) and node status.

``build_node`` and ``node_conditions`` are pure (tests compare them);
``NodeAgent`` registers the Node (create, or patch what this kubelet
owns when it exists), renews its Lease in ``kube-node-lease`` every
``lease_renew_interval``, patches ``status`` (conditions from psutil,
addresses, capacity) every ``node_status_update_frequency`` - and at once
when poked (the container runtime's health changed) - and waits for the
node IPAM controller to fill ``spec.podCIDR``. ``Ready`` is ``True`` only
once the kubelet has started and while the runtime is healthy
(``runtimestate.ready_state``); each flip of it is logged. Talks to the
API server through ``Client``.

Pressure (like the kubelet's eviction thresholds): memory available <
100Mi → MemoryPressure; free space of the root dir's file system < 10% →
DiskPressure; fewer than 5% of pid_max pids left → PIDPressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import platform
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil

from kubepy.client import AlreadyExistsError, NotFoundError, ServerError, TransportError
from kubepy.kubelet.runtimestate import ready_state
from kubepy.version import version_info

log = logging.getLogger(__name__)

__all__ = ["KUBELET_VERSION", "NodeAgent", "build_node", "machine_info", "node_conditions"]

KUBELET_VERSION = version_info()["gitVersion"]  # the API level the whole of kubepy answers as
MEMORY_PRESSURE_BYTES = 100 * 1024 * 1024
DISK_PRESSURE_FRACTION = 0.10
PID_PRESSURE_FRACTION = 0.05
LEASE_NAMESPACE = "kube-node-lease"
REGISTER_FIRST_DELAY = 0.1   # upstream: 100 ms doubling to 7 s
REGISTER_MAX_DELAY = 7.0


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _os_image() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _cgroup_memory_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            return int(text)
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    mem = psutil.virtual_memory().total
    limit = _cgroup_memory_limit()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {"cpu": os.cpu_count() or 1, "memory": min(mem, limit) if limit else mem,
            "kernel": platform.release(), "os_image": _os_image(), "arch": arch,
            "machine_id": _read("/etc/machine-id"), "boot_id": _read("/proc/sys/kernel/random/boot_id")}


def pressure(root_dir: Path) -> dict[str, bool]:
    """Current pressure signals of this machine."""
    mem = psutil.virtual_memory().available < MEMORY_PRESSURE_BYTES
    try:
        du = shutil.disk_usage(root_dir)
        disk = du.free / du.total < DISK_PRESSURE_FRACTION
    except OSError:
        disk = False
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        pids = len(psutil.pids()) > pid_max * (1 - PID_PRESSURE_FRACTION)
    except (OSError, ValueError):
        pids = False
    return {"memory": mem, "disk": disk, "pid": pids}


# How often the kubelet re-reads its image list for status.images (seconds).
IMAGES_REFRESH = 30.0

_CONDITIONS = (
    ("MemoryPressure", "memory", "KubeletHasInsufficientMemory", "KubeletHasSufficientMemory",
     "kubelet has insufficient memory available", "kubelet has sufficient memory available"),
    ("DiskPressure", "disk", "KubeletHasDiskPressure", "KubeletHasNoDiskPressure",
     "kubelet has disk pressure", "kubelet has no disk pressure"),
    ("PIDPressure", "pid", "KubeletHasInsufficientPID", "KubeletHasSufficientPID",
     "kubelet has insufficient PID available", "kubelet has sufficient PID available"),
)


def node_conditions(signals: dict[str, bool], ready: bool, old: list[dict[str, Any]] | None,
                    now: str, *, not_ready_message: str = "") -> list[dict[str, Any]]:
    """Node conditions; ``lastTransitionTime`` moves only when a status flips."""
    prev = {c.get("type"): c for c in old or []}

    def cond(ctype: str, status: str, reason: str, message: str) -> dict[str, Any]:
        p = prev.get(ctype)
        since = p["lastTransitionTime"] if p and p.get("status") == status and p.get("lastTransitionTime") else now
        return {"type": ctype, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": since}

    out = []
    for ctype, key, bad_reason, good_reason, bad_msg, good_msg in _CONDITIONS:
        bad = signals.get(key, False)
        out.append(cond(ctype, "True" if bad else "False", bad_reason if bad else good_reason,
                        bad_msg if bad else good_msg))
    out.append(cond("Ready", "True" if ready else "False", "KubeletReady" if ready else "KubeletNotReady",
                    "kubelet is posting ready status" if ready else not_ready_message or "kubelet is not ready"))
    return out


def build_node(*, name: str, ip: str, port: int, info: dict[str, Any], runtime_version: str, max_pods: int,
               labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The Node object this kubelet registers (status without conditions)."""
    capacity = {"cpu": str(info["cpu"]), "memory": f"{info['memory'] // 1024}Ki", "pods": str(max_pods),
                "ephemeral-storage": "0"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                              "kubernetes.io/arch": info["arch"], "beta.kubernetes.io/os": "linux",
                                              "beta.kubernetes.io/arch": info["arch"], **(labels or {})}},
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "nodeInfo": {"machineID": info["machine_id"], "systemUUID": info["machine_id"],
                         "bootID": info["boot_id"], "kernelVersion": info["kernel"], "osImage": info["os_image"],
                         "containerRuntimeVersion": runtime_version, "kubeletVersion": KUBELET_VERSION,
                         "kubeProxyVersion": KUBELET_VERSION, "operatingSystem": "linux",
                         "architecture": info["arch"]},
        },
    }


class NodeAgent:
    """Registers the node and keeps its Lease and status fresh."""

    def __init__(self, client: Any, config: Any, *, runtime_version: str,
                 runtime_errors: Callable[[], list[str]] = list,
                 images: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None) -> None:
        self.client = client
        self.config = config
        self.runtime_version = runtime_version
        self.runtime_errors = runtime_errors
        self.images = images
        self._reported_images: list[dict[str, Any]] | None = None
        self._images_read = -IMAGES_REFRESH  # monotonic time of the last read
        self.is_ready = False   # the kubelet has started (pods informer synced, orphans collected)
        self._conditions: list[dict[str, Any]] | None = None
        self._poke = asyncio.Event()

    def poke(self) -> None:
        """Write the node status now rather than at the next beat."""
        self._poke.set()

    def _node(self) -> dict[str, Any]:
        c = self.config
        return build_node(name=c.node_name, ip=c.node_ip, port=c.port, info=machine_info(),
                          runtime_version=self.runtime_version, max_pods=c.max_pods, labels=c.node_labels)

    async def register(self) -> dict[str, Any]:
        """Create (or adopt) this Node, trying again while the API server cannot be reached or
        fails (upstream's registerWithAPIServer: it never gives up, backing off to 7 s); a refusal
        (Forbidden, Invalid) is not retried."""
        delay = REGISTER_FIRST_DELAY
        while True:
            try:
                return await self._register_once()
            except (TransportError, ServerError) as e:
                log.warning("node registration failed node=%s retry_in=%.1fs err=%s", self.config.node_name,
                            delay, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, REGISTER_MAX_DELAY)

    async def _register_once(self) -> dict[str, Any]:
        node = self._node()
        node["status"]["conditions"] = self._next_conditions()
        try:
            created = await self.client.create("nodes", node)
            log.info("node registered node=%s", self.config.node_name)
            return created
        except AlreadyExistsError:
            patch = {"metadata": {"labels": node["metadata"]["labels"]}}
            await self.client.patch("nodes", self.config.node_name, patch)
            got = await self.update_status(full=True)
            log.info("node already registered node=%s", self.config.node_name)
            return got

    def _next_conditions(self) -> list[dict[str, Any]]:
        ready, message = ready_state(started=self.is_ready, errors=self.runtime_errors())
        old_ready = next((c for c in self._conditions or [] if c["type"] == "Ready"), None)
        self._conditions = node_conditions(pressure(self.config.root_dir), ready, self._conditions,
                                           _now(), not_ready_message=message)
        new_ready = next(c for c in self._conditions if c["type"] == "Ready")
        if old_ready is None or (old_ready["status"], old_ready["message"]) != (new_ready["status"],
                                                                               new_ready["message"]):
            log.info("node ready condition node=%s status=%s reason=%s message=%r", self.config.node_name,
                     new_ready["status"], new_ready["reason"], new_ready["message"])
        return self._conditions

    async def _changed_images(self, *, full: bool) -> list[dict[str, Any]] | None:
        """The node's images (``status.images``, for the scheduler's ImageLocality) when
        they differ from what was last reported; read at most every IMAGES_REFRESH seconds."""
        if self.images is None or (not full and time.monotonic() - self._images_read < IMAGES_REFRESH):
            return None
        self._images_read = time.monotonic()
        try:
            images = await self.images()
        except Exception as e:  # noqa: BLE001 - the image list is advisory; the status still goes out
            log.warning("image list failed node=%s err=%s", self.config.node_name, e)
            return None
        if images == self._reported_images and not full:
            return None
        if images != self._reported_images:
            log.info("node images changed node=%s images=%d", self.config.node_name, len(images))
        return images

    async def update_status(self, *, full: bool = False) -> dict[str, Any]:
        status: dict[str, Any] = {"conditions": self._next_conditions()}
        if full:
            status.update({k: v for k, v in self._node()["status"].items()})
            status["conditions"] = self._conditions
        images = await self._changed_images(full=full)
        if images is not None:
            status["images"] = images
        got = await self.client.patch("nodes", self.config.node_name, {"status": status},
                                      subresource="status", patch_type="strategic")
        if images is not None:
            self._reported_images = images
        return got

    async def renew_lease(self) -> None:
        name = self.config.node_name
        try:
            await self.client.patch("leases", name, {"spec": {"renewTime": _micro_now(), "holderIdentity": name,
                                                              "leaseDurationSeconds": self.config.lease_duration}},
                                    namespace=LEASE_NAMESPACE)
        except NotFoundError:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": self.config.lease_duration,
                             "renewTime": _micro_now()}}
            try:
                await self.client.create("leases", body, namespace=LEASE_NAMESPACE)
            except AlreadyExistsError:
                pass

    async def wait_pod_cidr(self, poll: float = 0.5) -> str:
        """Until the node IPAM controller (or an admin) sets ``spec.podCIDR``. An API server that
        cannot answer (unreachable, or 5xx while its store catches up) is asked again, as
        ``register`` does: the kubelet must not exit over it."""
        logged = False
        delay = REGISTER_FIRST_DELAY
        while True:
            try:
                node = await self.client.get("nodes", self.config.node_name)
                cidr = (node.get("spec") or {}).get("podCIDR")
                if cidr:
                    log.info("node pod cidr node=%s cidr=%s", self.config.node_name, cidr)
                    return str(cidr)
            except NotFoundError:
                await self.register()
            except (TransportError, ServerError) as e:
                log.warning("node pod cidr read failed node=%s retry_in=%.1fs err=%s", self.config.node_name,
                            delay, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, REGISTER_MAX_DELAY)
                continue
            if not logged:
                log.info("waiting for spec.podCIDR node=%s", self.config.node_name)
                logged = True
            await asyncio.sleep(poll)

    async def run_lease(self) -> None:
        while True:
            try:
                await self.renew_lease()
            except Exception as e:  # noqa: BLE001 - a heartbeat keeps trying
                log.warning("lease renew failed node=%s err=%s", self.config.node_name, e)
            await asyncio.sleep(self.config.lease_renew_interval)

    async def run_status(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.config.node_status_update_frequency)
            self._poke.clear()
            try:
                await self.update_status()
            except NotFoundError:
                log.warning("node object gone, registering again node=%s", self.config.node_name)
                try:
                    await self.register()
                except Exception as e:  # noqa: BLE001
                    log.warning("node register failed node=%s err=%s", self.config.node_name, e)
            except Exception as e:  # noqa: BLE001
                log.warning("node status update failed node=%s err=%s", self.config.node_name, e)
