"""The kubelet's half of persistent storage: this node's local-path volumes and
the claims its pods mount.

Who does what (the control plane's half is kubepy/controllers/persistentvolume.py):

- this module publishes where the node keeps local-path volumes and how much
  room it has, as the CSIStorageCapacity ``kube-system/local-path-<node>``
  (annotation ``kubepy.io/local-path-dir``: ``<kubelet root>/storage``;
  ``capacity``: the free space of the filesystem holding it, or what is left
  of ``--local-storage-capacity`` when that is set and smaller).  The
  scheduler's VolumeBinding filter and the provisioner honour it;
- the persistent-volume controller provisions a PersistentVolume for a claim
  whose pod was scheduled here: ``hostPath`` ``<kubelet root>/storage/<pv
  name>`` with node affinity to this node, annotated
  ``kubepy.io/local-path-node: <node>``;
- this module makes that directory (mode 0777, as local-path provisioners do,
  so containers running as any user can write), and when such a volume is
  Released with reclaim policy ``Delete`` removes the directory and then the
  PersistentVolume (nodes may delete only PVs annotated with their name);
  ``Retain`` volumes and their directories stay;
- ``claim_volume`` is what the pod worker calls for a ``persistentVolumeClaim``
  volume: the bound volume's directory, or a ``MountError`` (FailedMount) while
  the claim is missing or unbound.  Containers get it as a bind mount.

A directory is only ever removed when it is under the storage directory.
Reads the claims and volumes through informers; ``sync_node`` runs every
``interval`` seconds and whenever a volume changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubepy.client import AlreadyExistsError, Client, Informer, NotFoundError
from kubepy.kubelet.poderrors import MountError
from kubepy.meta.volumes import (
    ANN_LOCAL_PATH_DIR,
    ANN_LOCAL_PATH_NODE,
    ANN_PROVISIONED_BY,
    CAPACITY_NAMESPACE,
    HOSTNAME_LABEL,
    LOCAL_PATH_CLASS,
    LOCAL_PATH_PROVISIONER,
    capacity_name,
    node_affinity_matches,
    pv_capacity,
    pv_path,
)

log = logging.getLogger(__name__)

__all__ = ["LocalVolumes", "ClaimNotReady", "ClaimVolume", "free_bytes", "persistent_volume_claim"]

STORAGE_DIR = "storage"
# Capacity is republished when it moves by more than this (or 1%), not on every byte written.
REPUBLISH_DELTA = 64 * 1024 * 1024


class ClaimNotReady(Exception):
    """The claim cannot be mounted yet (missing, unbound, its volume missing or elsewhere)."""


@dataclass(frozen=True)
class ClaimVolume:
    path: Path
    read_only: bool


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _is_ours(pv: dict, node: str) -> bool:
    ann = _d(_d(pv.get("metadata")).get("annotations"))
    return ann.get(ANN_PROVISIONED_BY) == LOCAL_PATH_PROVISIONER and ann.get(ANN_LOCAL_PATH_NODE) == node


class LocalVolumes:
    def __init__(self, client: Client, *, node_name: str, root_dir: Path, capacity_limit: int | None = None,
                 interval: float = 10.0) -> None:
        self.client = client
        self.node = node_name
        self.storage_dir = Path(root_dir) / STORAGE_DIR
        self.capacity_limit = capacity_limit
        self.interval = interval
        self.claims = Informer(client, "persistentvolumeclaims")
        self.volumes = Informer(client, "persistentvolumes")
        self._published: int | None = None
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.volumes.add_handler(lambda _v: self._dirty.set(), lambda _o, _n: self._dirty.set(), None)

    # -- the pod worker's question ------------------------------------------------------------
    def claim_path(self, namespace: str, source: dict[str, Any]) -> Path:
        """The directory to bind-mount for a pod's ``persistentVolumeClaim`` volume source."""
        return self.claim_volume(namespace, str(source.get("claimName") or ""),
                                 read_only=bool(source.get("readOnly"))).path

    def claim_volume(self, namespace: str, claim_name: str, *, read_only: bool = False) -> ClaimVolume:
        """The bound volume's directory, and whether it may only be read."""
        claim = self.claims.cache.get(f"{namespace}/{claim_name}")
        if claim is None:
            raise ClaimNotReady(f'persistentvolumeclaim "{claim_name}" not found')
        volume_name = _d(claim.get("spec")).get("volumeName") or ""
        phase = _d(claim.get("status")).get("phase") or ""
        if phase != "Bound" or not volume_name:
            # The kubelet's own words (desired_state_of_world_populator).
            raise ClaimNotReady(f'PVC {namespace}/{claim_name} has non-bound phase ("{phase}") or empty '
                                f'pvc.Spec.VolumeName ("{volume_name}")')
        pv = self.volumes.cache.get(volume_name)
        if pv is None:
            raise ClaimNotReady(f'persistentvolume "{volume_name}" not found')
        node = {"metadata": {"name": self.node, "labels": {HOSTNAME_LABEL: self.node}}}
        if _d(_d(pv.get("spec")).get("nodeAffinity")) and not node_affinity_matches(pv, node):
            raise ClaimNotReady(f'volume "{volume_name}" has node affinity that does not match node "{self.node}"')
        path = pv_path(pv)
        if path is None:
            raise ClaimNotReady(f'volume "{volume_name}" is neither local nor hostPath: kubepy cannot mount it')
        spec = _d(pv.get("spec"))
        target = Path(path)
        if _is_ours(pv, self.node) or _d(spec.get("hostPath")).get("type") == "DirectoryOrCreate":
            self._make_dir(target)
        elif not target.exists():
            raise ClaimNotReady(f'path "{path}" of volume "{volume_name}" does not exist on node "{self.node}"')
        modes = set(spec.get("accessModes") or [])
        return ClaimVolume(target, read_only or modes == {"ReadOnlyMany"})

    # -- the node's loop ----------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self.claims.run(), name="kubelet:claims"),
                       asyncio.create_task(self.volumes.run(), name="kubelet:volumes")]
        await asyncio.gather(self.claims.wait_synced(), self.volumes.wait_synced())
        self._tasks.append(asyncio.create_task(self._loop(), name="kubelet:local-volumes"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.sync_node()
            except Exception as e:  # noqa: BLE001 - retried on the next beat
                log.warning("local volumes sync failed node=%s err=%s", self.node, e)
            try:
                await asyncio.wait_for(self._dirty.wait(), self.interval)
            except TimeoutError:
                pass
            self._dirty.clear()

    async def sync_node(self) -> None:
        """Make and reclaim this node's volume directories, then publish what room is left."""
        await asyncio.to_thread(self._make_dir, self.storage_dir, 0o711)
        for pv in self.volumes.cache.list():
            if not _is_ours(pv, self.node):
                continue
            path = pv_path(pv)
            released = _d(pv.get("status")).get("phase") == "Released"
            policy = _d(pv.get("spec")).get("persistentVolumeReclaimPolicy")
            if released and policy == "Delete":
                await self._reclaim(pv, path)
            elif path and not _d(pv.get("metadata")).get("deletionTimestamp"):
                await asyncio.to_thread(self._make_dir, Path(path))
        await self.publish_capacity()

    async def _reclaim(self, pv: dict, path: str | None) -> None:
        name = pv["metadata"]["name"]
        if path:
            target = Path(path)
            if self._inside(target):
                await asyncio.to_thread(shutil.rmtree, target, True)
                log.info("volume data removed volume=%s path=%s", name, target)
            else:
                log.warning("volume not removed: outside the storage dir volume=%s path=%s", name, target)
                return
        try:
            await self.client.delete("persistentvolumes", name)
            log.info("volume deleted volume=%s reason=ReclaimDelete", name)
        except NotFoundError:
            pass

    def capacity_bytes(self) -> int:
        free = free_bytes(self.storage_dir)
        if self.capacity_limit is None:
            return free
        used = sum(int(pv_capacity(pv)) for pv in self.volumes.cache.list()
                   if _is_ours(pv, self.node) and _d(pv.get("status")).get("phase") != "Released")
        return max(0, min(free, self.capacity_limit - used))

    async def publish_capacity(self) -> None:
        amount = await asyncio.to_thread(self.capacity_bytes)
        last = self._published
        if last is not None and abs(amount - last) <= max(REPUBLISH_DELTA, last // 100):
            return
        name = capacity_name(self.node)
        body = {"apiVersion": "storage.k8s.io/v1", "kind": "CSIStorageCapacity",
                "metadata": {"name": name, "namespace": CAPACITY_NAMESPACE,
                             "annotations": {ANN_LOCAL_PATH_DIR: str(self.storage_dir)}},
                "storageClassName": LOCAL_PATH_CLASS, "capacity": str(amount),
                "nodeTopology": {"matchLabels": {HOSTNAME_LABEL: self.node}}}
        try:
            await self.client.create("csistoragecapacities", body, namespace=CAPACITY_NAMESPACE)
        except AlreadyExistsError:
            await self.client.patch("csistoragecapacities", name, {
                "metadata": {"annotations": body["metadata"]["annotations"]}, "capacity": str(amount)},
                namespace=CAPACITY_NAMESPACE)
        self._published = amount
        log.info("published local storage node=%s capacity=%d dir=%s", self.node, amount, self.storage_dir)

    # -- files --------------------------------------------------------------------------------
    def _inside(self, path: Path) -> bool:
        try:
            resolved, root = path.resolve(), self.storage_dir.resolve()
        except OSError:
            return False
        return resolved != root and root in resolved.parents

    def _make_dir(self, path: Path, mode: int = 0o777) -> None:
        if path.is_dir():
            return
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        log.info("volume directory made path=%s", path)



async def persistent_volume_claim(ctx: Any, v: dict[str, Any]) -> Path:
    """The ``persistentVolumeClaim`` entry of kubepy/kubelet/volumes.py's SETUP table: the bound
    volume's directory (then bind-mounted into the containers), with the pod's fsGroup applied
    as to other writable volumes; FailedMount while the claim cannot be used yet."""
    from kubepy.kubelet.volumes import _ownership_ok, set_ownership   # volumes imports this module

    name, src = v["name"], v.get("persistentVolumeClaim") or {}
    try:
        got = ctx.kubelet.local_volumes.claim_volume(ctx.namespace, str(src.get("claimName") or ""),
                                                     read_only=bool(src.get("readOnly")))
    except ClaimNotReady as e:
        raise MountError(f'MountVolume.SetUp failed for volume "{name}" : {e}') from e
    gid = ctx.fs_group
    if gid is not None and not got.read_only and (
            ctx.fs_group_policy == "Always" or not _ownership_ok(got.path, gid, read_only=False)):
        await asyncio.to_thread(set_ownership, got.path, gid, read_only=False)
    return got.path
