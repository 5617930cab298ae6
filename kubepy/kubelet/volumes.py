"""A pod's volumes on the node: one setup function per volume type, and the container mounts.

``setup_volumes(ctx)`` walks ``spec.volumes`` and calls the function of
each volume's type from ``SETUP`` (a volume type is the one key besides
``name``); each returns the host path that containers bind-mount. A type
missing from the table is refused with ``UnsupportedVolume`` (never an
empty directory in its place). ``container_mounts`` turns a container's
``volumeMounts`` into ``(host, container path, read-only)`` triples.

Volume directories live under ``<pod dir>/volumes/kubernetes.io~<plugin>/<name>``
as on Kubernetes. Files of configMap/secret volumes are written with
Kubernetes' atomic writer layout (``write_atomic``).

Talks to: the kubelet (``ctx.kubelet``: informer caches ``get_configmap``/``get_secret``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import os
import secrets
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubepy.kubelet.poderrors import ConfigError, MountError, UnsupportedVolume

log = logging.getLogger(__name__)

__all__ = [
    "SETUP",
    "VolumeContext",
    "container_mounts",
    "projection",
    "setup_volumes",
    "write_atomic",
]


@dataclass
class VolumeContext:
    """What a volume setup function may use: the kubelet, the pod and its directory."""

    kubelet: Any
    pod: dict[str, Any]
    pod_dir: Path

    @property
    def namespace(self) -> str:
        return str((self.pod.get("metadata") or {}).get("namespace", ""))

    @property
    def pod_name(self) -> str:
        return str((self.pod.get("metadata") or {}).get("name", ""))

    def volume_dir(self, plugin: str, name: str) -> Path:
        return self.pod_dir / "volumes" / f"kubernetes.io~{plugin}" / name


# -- the atomic writer ----------------------------------------------------------

def write_atomic(target: Path, files: dict[str, tuple[bytes, int]]) -> bool:
    """Kubernetes' AtomicWriter: files in ``..<ts>/``, ``..data`` → it, user paths → ``..data/<path>``.

    Returns True when the content changed. Readers never see a half-written
    set: the ``..data`` symlink is replaced with one rename.
    """
    target.mkdir(parents=True, exist_ok=True)
    data_link = target / "..data"
    if data_link.is_symlink():
        current = target / os.readlink(data_link)
        same = True
        for rel, (content, mode) in files.items():
            p = current / rel
            try:
                if p.read_bytes() != content or (p.stat().st_mode & 0o777) != mode:
                    same = False
                    break
            except OSError:
                same = False
                break
        if same:
            existing = {str(p.relative_to(current)) for p in current.rglob("*") if p.is_file()}
            if existing == set(files):
                return False
    stamp = dt.datetime.now(dt.UTC).strftime("%Y_%m_%d_%H_%M_%S.%f")
    ts_dir = target / f"..{stamp}{secrets.token_hex(2)}"
    ts_dir.mkdir()
    for rel, (content, mode) in files.items():
        p = ts_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        p.chmod(mode)
    tmp = target / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(ts_dir.name)
    os.replace(tmp, data_link)
    tops = {rel.split("/", 1)[0] for rel in files}
    for top in tops:
        link = target / top
        if not link.is_symlink():
            link.symlink_to(f"..data/{top}")
    for entry in target.iterdir():
        if entry.name.startswith(".."):
            if entry.name not in ("..data", ts_dir.name) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_symlink() and entry.name not in tops:
            entry.unlink()
    return True


def projection(source: dict[str, Any], data: dict[str, bytes], *, kind: str, name: str,
               namespace: str) -> dict[str, tuple[bytes, int]]:
    """Files of a configMap/secret volume (``items`` select and rename keys)."""
    default_mode = int(source.get("defaultMode", 0o644))
    items = source.get("items")
    if not items:
        return {k: (v, default_mode) for k, v in data.items()}
    out = {}
    for item in items:
        key = item.get("key")
        if key not in data:
            if source.get("optional"):
                continue
            raise MountError(f'configmap references non-existent config key: {key}' if kind == "configmap"
                             else f"references non-existent secret key: {key}")
        out[str(item.get("path") or key).lstrip("/")] = (data[key], int(item.get("mode", default_mode)))
    return out


# -- one function per volume type -------------------------------------------------

async def host_path(ctx: VolumeContext, v: dict[str, Any]) -> Path:
    name, hp = v["name"], v["hostPath"]
    path, typ = Path(hp["path"]), hp.get("type") or ""
    if typ == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif typ == "FileOrCreate" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    elif typ in ("Directory", "File", "Socket", "CharDevice", "BlockDevice") and not path.exists():
        raise MountError(f'MountVolume.SetUp failed for volume "{name}" : hostPath type check '
                         f"failed: {path} does not exist")
    return path


async def _object_volume(ctx: VolumeContext, v: dict[str, Any], *, is_cm: bool) -> Path:
    name, ns = v["name"], ctx.namespace
    src = v["configMap" if is_cm else "secret"]
    obj_name = src.get("name" if is_cm else "secretName", "")
    obj = (ctx.kubelet.get_configmap if is_cm else ctx.kubelet.get_secret)(ns, obj_name)
    kind = "configmap" if is_cm else "secret"
    if obj is None and not src.get("optional"):
        raise MountError(f'MountVolume.SetUp failed for volume "{name}" : {kind} "{obj_name}" not found')
    data: dict[str, bytes] = {}
    if obj is not None:
        if is_cm:
            data = {k: str(val).encode() for k, val in (obj.get("data") or {}).items()}
            data.update({k: base64.b64decode(val) for k, val in (obj.get("binaryData") or {}).items()})
        else:
            data = {k: base64.b64decode(val) for k, val in (obj.get("data") or {}).items()}
    try:
        files = projection(src, data, kind=kind, name=obj_name, namespace=ns)
    except MountError as e:
        raise MountError(f'MountVolume.SetUp failed for volume "{name}" : {e}') from e
    target = ctx.volume_dir(kind, name)
    if await asyncio.to_thread(write_atomic, target, files):
        log.info("volume updated pod=%s/%s volume=%s source=%s/%s", ns, ctx.pod_name, name, kind, obj_name)
    return target


async def config_map(ctx: VolumeContext, v: dict[str, Any]) -> Path:
    return await _object_volume(ctx, v, is_cm=True)


async def secret(ctx: VolumeContext, v: dict[str, Any]) -> Path:
    return await _object_volume(ctx, v, is_cm=False)


async def empty_dir(ctx: VolumeContext, v: dict[str, Any]) -> Path:
    name = v["name"]
    medium = (v.get("emptyDir") or {}).get("medium") or ""
    if medium:
        raise UnsupportedVolume(f'volume "{name}": emptyDir medium "{medium}" is not supported '
                                f"by this kubelet (only the node's disk)")
    target = ctx.volume_dir("empty-dir", name)
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(0o777)
    return target


Setup = Callable[[VolumeContext, dict[str, Any]], Awaitable[Path]]

#: volume type (the key in a pod's ``spec.volumes[]``) → its setup function.
SETUP: dict[str, Setup] = {
    "hostPath": host_path,
    "configMap": config_map,
    "secret": secret,
    "emptyDir": empty_dir,
}

#: volume types whose mounts are always read-only.
READ_ONLY_TYPES = frozenset({"configMap", "secret"})


def volume_type(v: dict[str, Any]) -> str:
    return next((k for k in v if k != "name"), "unknown")


async def setup_volumes(ctx: VolumeContext) -> dict[str, Path]:
    """Set up every volume of the pod; ``{volume name: host path}``."""
    out: dict[str, Path] = {}
    for v in (ctx.pod.get("spec") or {}).get("volumes") or []:
        kind = next((k for k in SETUP if k in v), None)
        if kind is None:
            raise UnsupportedVolume(f'volume "{v["name"]}": volume type "{volume_type(v)}" is not supported '
                                    f"by this kubelet")
        out[v["name"]] = await SETUP[kind](ctx, v)
    return out


def container_mounts(pod: dict[str, Any], c: dict[str, Any], volume_paths: dict[str, Path]) -> list[tuple[str, str, bool]]:
    """``(host path, container path, read-only)`` for a container's volumeMounts."""
    mounts: list[tuple[str, str, bool]] = []
    vols = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
    for m in c.get("volumeMounts") or []:
        host = volume_paths.get(m["name"])
        if host is None:
            raise ConfigError(f'volume "{m["name"]}" not found')
        if m.get("subPath"):
            host = host / m["subPath"].lstrip("/")
            if not host.exists():
                host.mkdir(parents=True, exist_ok=True)
        v = vols.get(m["name"]) or {}
        ro = bool(m.get("readOnly")) or any(t in v for t in READ_ONLY_TYPES)
        mounts.append((str(host), m["mountPath"], ro))
    return mounts
