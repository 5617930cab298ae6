"""A pod's volumes on the node: one setup function per volume type, and the container mounts.

``setup_volumes(ctx)`` walks ``spec.volumes`` and calls the function of
each volume's type from ``SETUP`` (a volume type is the one key besides
``name``); each returns the host path that containers bind-mount. A type
missing from the table is refused with ``UnsupportedVolume`` (never an
empty directory in its place). ``container_mounts`` turns a container's
``volumeMounts`` into ``(host, container path, read-only)`` triples
(``subPath``/``subPathExpr`` resolved and kept inside their volume,
``mountPropagation`` only None).

Volume directories live under ``<pod dir>/volumes/kubernetes.io~<plugin>/<name>``
as on Kubernetes. Files of configMap, secret, downwardAPI and projected
volumes are written with Kubernetes' atomic writer layout
(``write_atomic``: ``..data`` → ``..<timestamp>``, user names are symlinks
into ``..data``); they are rewritten on every pod sync when their sources
(objects, labels, annotations, tokens) changed. ``emptyDir`` with
``medium: Memory`` and the pod's ``/dev/shm`` are tmpfs mounts
(``mount_tmpfs``), taken down with the pod (``unmount_below``).
``securityContext.fsGroup`` makes volume files group-owned by it
(``set_ownership``, as upstream's SetVolumeOwnership).

Pure pieces (unit-tested): ``write_atomic``, ``projection``,
``downward_files``, ``format_map``, ``memory_medium_size``,
``expand_subpath``, ``emptydir_over_limit``.

Talks to: the kubelet (``ctx.kubelet``: informer caches
``get_configmap``/``get_secret``, ``node_alloc``, ``tokens`` — the
TokenRequest cache) and the kernel (``mount``/``umount``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import datetime as dt
import logging
import math
import os
import re
import secrets
import shutil
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubepy.kubelet.localvolumes import persistent_volume_claim
from kubepy.kubelet.poderrors import ConfigError, MountError, UnsupportedVolume
from kubepy.kubelet.tokens import TokenError
from kubepy.meta.quantity import bytes_value, canonicalize_quantity, cpu_millis

log = logging.getLogger(__name__)

__all__ = [
    "SETUP",
    "SHM_SIZE",
    "VolumeContext",
    "container_mounts",
    "downward_files",
    "emptydir_over_limit",
    "ensure_shm",
    "expand_subpath",
    "format_map",
    "memory_medium_size",
    "mount_tmpfs",
    "projection",
    "set_ownership",
    "setup_volumes",
    "unmount_below",
    "write_atomic",
]

SHM_SIZE = 64 * 1024 * 1024     # containerd's and docker's default /dev/shm
DEFAULT_MODE = 0o644             # secret/configMap/downwardAPI/projected defaultMode
DEFAULT_TOKEN_SECONDS = 3600
RW_MASK, RO_MASK, EXEC_MASK = 0o660, 0o440, 0o110


@dataclass
class VolumeContext:
    """What a volume setup function may use: the kubelet, the pod and its directory."""

    kubelet: Any
    pod: dict[str, Any]
    pod_dir: Path
    wake_in: Callable[[float], None] | None = None
    #: volumes set up for the first time in this pass (for fsGroupChangePolicy)
    created: set[str] = field(default_factory=set)

    @property
    def namespace(self) -> str:
        return str((self.pod.get("metadata") or {}).get("namespace", ""))

    @property
    def pod_name(self) -> str:
        return str((self.pod.get("metadata") or {}).get("name", ""))

    @property
    def pod_uid(self) -> str:
        return str((self.pod.get("metadata") or {}).get("uid", ""))

    @property
    def fs_group(self) -> int | None:
        g = ((self.pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
        return int(g) if g is not None else None

    @property
    def fs_group_policy(self) -> str:
        return str(((self.pod.get("spec") or {}).get("securityContext") or {}).get("fsGroupChangePolicy")
                   or "Always")

    def volume_dir(self, plugin: str, name: str) -> Path:
        return self.pod_dir / "volumes" / f"kubernetes.io~{plugin}" / name


def _fail(volume: str, err: object) -> MountError:
    return MountError(f'MountVolume.SetUp failed for volume "{volume}" : {err}')


# -- the atomic writer ----------------------------------------------------------

def _effective_mode(mode: int, gid: int | None) -> int:
    return mode | RO_MASK if gid is not None else mode


def write_atomic(target: Path, files: dict[str, tuple[bytes, int]], *, gid: int | None = None) -> bool:
    """Kubernetes' AtomicWriter: files in ``..<ts>/``, ``..data`` → it, user paths → ``..data/<path>``.

    Returns True when the content changed. Readers never see a half-written
    set: the ``..data`` symlink is replaced with one rename. With ``gid``
    (the pod's fsGroup) files are group-owned by it and group-readable,
    directories setgid, as upstream's SetVolumeOwnership leaves a
    read-only volume.
    """
    target.mkdir(parents=True, exist_ok=True)
    data_link = target / "..data"
    if data_link.is_symlink():
        current = target / os.readlink(data_link)
        same = True
        for rel, (content, mode) in files.items():
            p = current / rel
            try:
                st = p.stat()
                if p.read_bytes() != content or (st.st_mode & 0o777) != _effective_mode(mode, gid) or (
                        gid is not None and st.st_gid != gid):
                    same = False
                    break
            except OSError:
                same = False
                break
        if same:
            existing = {str(p.relative_to(current)) for p in current.rglob("*") if p.is_file()}
            if existing == set(files):
                return False
    # Kubernetes' layout: ..2026_12_05_12_00_00.123456789 (ours: microseconds and a random tail)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y_%m_%d_%H_%M_%S.%f")
    ts_dir = target / f"..{stamp}{secrets.token_hex(2)}"
    ts_dir.mkdir()
    ts_dir.chmod(0o755)
    for rel, (content, mode) in files.items():
        p = ts_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        p.chmod(mode)
    if gid is not None:
        set_ownership(ts_dir, gid, read_only=True)
        os.lchown(target, -1, gid)
        target.chmod(target.stat().st_mode & 0o7777 | RO_MASK | EXEC_MASK | stat.S_ISGID)
    tmp = target / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(ts_dir.name)
    if gid is not None:
        os.lchown(tmp, -1, gid)
    os.replace(tmp, data_link)
    tops = {rel.split("/", 1)[0] for rel in files}
    for top in tops:
        link = target / top
        if not link.is_symlink():
            link.symlink_to(f"..data/{top}")
            if gid is not None:
                os.lchown(link, -1, gid)
    for entry in target.iterdir():
        if entry.name.startswith(".."):
            if entry.name not in ("..data", ts_dir.name) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_symlink() and entry.name not in tops:
            entry.unlink()
    return True


def set_ownership(root: Path, gid: int, *, read_only: bool) -> None:
    """Upstream's SetVolumeOwnership: group ``gid``, g+rw (g+r read-only), setgid and g+x on directories."""
    def one(path: str) -> None:
        st = os.lstat(path)
        os.lchown(path, -1, gid)
        if stat.S_ISLNK(st.st_mode):
            return
        mask = RO_MASK if read_only else RW_MASK
        if stat.S_ISDIR(st.st_mode):
            mask |= stat.S_ISGID | EXEC_MASK
        os.chmod(path, (st.st_mode & 0o7777) | mask)

    one(str(root))
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            one(os.path.join(dirpath, n))


def _ownership_ok(root: Path, gid: int, *, read_only: bool) -> bool:
    """fsGroupChangePolicy OnRootMismatch: the volume's root already has the group and mode."""
    try:
        st = root.stat()
    except OSError:
        return False
    want = (RO_MASK if read_only else RW_MASK) | stat.S_ISGID | EXEC_MASK
    return st.st_gid == gid and (st.st_mode & want) == want


def projection(source: dict[str, Any], data: dict[str, bytes], *, kind: str, name: str,
               namespace: str, default_mode: int | None = None) -> dict[str, tuple[bytes, int]]:
    """Files of a configMap/secret volume (``items`` select and rename keys)."""
    default_mode = int(source.get("defaultMode", DEFAULT_MODE) if default_mode is None else default_mode)
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


# -- the downward API ---------------------------------------------------------------

def _go_quote(value: str) -> str:
    """Go's %q for the strings labels and annotations hold."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_map(m: dict[str, str]) -> str:
    """Upstream's fieldpath.FormatMap: ``key="value"`` lines, keys sorted, no final newline."""
    return "\n".join(f"{k}={_go_quote(str(m[k]))}" for k in sorted(m))


def _downward_field(path: str, pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    simple = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", ""),
              "metadata.uid": meta.get("uid", "")}
    if path in simple:
        return str(simple[path])
    if path in ("metadata.labels", "metadata.annotations"):
        return format_map(meta.get(path.split(".")[1]) or {})
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise MountError(f"unsupported fieldPath: {path}")


def _downward_resource(ref: dict[str, Any], pod: dict[str, Any], node_alloc: dict[str, int]) -> str:
    spec = pod.get("spec") or {}
    cname = ref.get("containerName", "")
    c = next((c for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
              if c.get("name") == cname), None)
    if c is None:
        raise MountError(f"container {cname} not found")
    resource = ref.get("resource", "")
    section, _, what = resource.partition(".")
    res = (c.get("resources") or {}).get(section) or {}
    divisor = ref.get("divisor") or "1"
    if float(bytes_value(divisor) if what != "cpu" else cpu_millis(divisor)) == 0:
        divisor = "1"
    if what == "cpu":
        # Limits fall back to the node's allocatable (upstream merges them in); requests to 0.
        milli = cpu_millis(res["cpu"]) if "cpu" in res else (node_alloc.get("cpu_milli", 0)
                                                              if section == "limits" else 0)
        return str(math.ceil(milli / max(1, cpu_millis(divisor))))
    if what in ("memory", "ephemeral-storage"):
        value = bytes_value(res[what]) if what in res else (node_alloc.get(what, 0) if section == "limits" else 0)
        return str(math.ceil(value / max(1, bytes_value(divisor))))
    raise MountError(f"unsupported container resource : {resource}")


def downward_files(source: dict[str, Any], pod: dict[str, Any], node_alloc: dict[str, int], *,
                   default_mode: int | None = None) -> dict[str, tuple[bytes, int]]:
    """Files of a downwardAPI volume (or projected source)."""
    mode0 = int(source.get("defaultMode", DEFAULT_MODE) if default_mode is None else default_mode)
    out: dict[str, tuple[bytes, int]] = {}
    for item in source.get("items") or []:
        path = str(item.get("path") or "")
        mode = int(item.get("mode", mode0))
        if item.get("fieldRef"):
            value = _downward_field(item["fieldRef"].get("fieldPath", ""), pod)
        elif item.get("resourceFieldRef"):
            value = _downward_resource(item["resourceFieldRef"], pod, node_alloc)
        else:
            continue
        out[path] = (value.encode(), mode)
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


def _object_data(obj: dict[str, Any], *, is_cm: bool) -> dict[str, bytes]:
    if is_cm:
        data = {k: str(val).encode() for k, val in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(val) for k, val in (obj.get("binaryData") or {}).items()})
        return data
    return {k: base64.b64decode(val) for k, val in (obj.get("data") or {}).items()}


async def _write(ctx: VolumeContext, target: Path, files: dict[str, tuple[bytes, int]], what: str) -> Path:
    if await asyncio.to_thread(write_atomic, target, files, gid=ctx.fs_group):
        log.info("volume updated pod=%s/%s volume=%s", ctx.namespace, ctx.pod_name, what)
    return target


async def _object_volume(ctx: VolumeContext, v: dict[str, Any], *, is_cm: bool) -> Path:
    name, ns = v["name"], ctx.namespace
    src = v["configMap" if is_cm else "secret"]
    obj_name = src.get("name" if is_cm else "secretName", "")
    obj = (ctx.kubelet.get_configmap if is_cm else ctx.kubelet.get_secret)(ns, obj_name)
    kind = "configmap" if is_cm else "secret"
    if obj is None and not src.get("optional"):
        raise MountError(f'MountVolume.SetUp failed for volume "{name}" : {kind} "{obj_name}" not found')
    data = _object_data(obj, is_cm=is_cm) if obj is not None else {}
    try:
        files = projection(src, data, kind=kind, name=obj_name, namespace=ns)
    except MountError as e:
        raise _fail(name, e) from e
    return await _write(ctx, ctx.volume_dir(kind, name), files, f"{name} source={kind}/{obj_name}")


async def config_map(ctx: VolumeContext, v: dict[str, Any]) -> Path:
    return await _object_volume(ctx, v, is_cm=True)


async def secret(ctx: VolumeContext, v: dict[str, Any]) -> Path:
    return await _object_volume(ctx, v, is_cm=False)


async def downward_api(ctx: VolumeContext, v: dict[str, Any]) -> Path:
    name = v["name"]
    try:
        files = downward_files(v.get("downwardAPI") or {}, ctx.pod, ctx.kubelet.node_alloc)
    except MountError as e:
        raise _fail(name, e) from e
    return await _write(ctx, ctx.volume_dir("downward-api", name), files, name)


async def _token_files(ctx: VolumeContext, src: dict[str, Any], mode: int) -> dict[str, tuple[bytes, int]]:
    spec = ctx.pod.get("spec") or {}
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    audience = src.get("audience") or ""
    tok = await ctx.kubelet.tokens.get(
        namespace=ctx.namespace, service_account=sa, audiences=[audience] if audience else [],
        expiration_seconds=int(src.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS),
        pod_name=ctx.pod_name, pod_uid=ctx.pod_uid)
    if not tok.token:
        raise TokenError("failed to fetch token: the API server answered an empty token")
    return {str(src.get("path") or "token"): (tok.token.encode(), mode)}


async def projected(ctx: VolumeContext, v: dict[str, Any]) -> Path:
    """configMap, secret, downwardAPI and serviceAccountToken sources in one atomic directory."""
    name, ns = v["name"], ctx.namespace
    proj = v.get("projected") or {}
    mode = int(proj.get("defaultMode", DEFAULT_MODE))
    files: dict[str, tuple[bytes, int]] = {}
    for source in proj.get("sources") or []:
        if source.get("configMap") is not None or source.get("secret") is not None:
            is_cm = source.get("configMap") is not None
            src = source["configMap" if is_cm else "secret"]
            kind = "configmap" if is_cm else "secret"
            obj_name = src.get("name", "")
            obj = (ctx.kubelet.get_configmap if is_cm else ctx.kubelet.get_secret)(ns, obj_name)
            if obj is None:
                if src.get("optional"):
                    continue
                raise _fail(name, f'{kind} "{obj_name}" not found')
            try:
                files.update(projection(src, _object_data(obj, is_cm=is_cm), kind=kind, name=obj_name,
                                        namespace=ns, default_mode=mode))
            except MountError as e:
                raise _fail(name, e) from e
        elif source.get("downwardAPI") is not None:
            try:
                files.update(downward_files(source["downwardAPI"], ctx.pod, ctx.kubelet.node_alloc,
                                            default_mode=mode))
            except MountError as e:
                raise _fail(name, e) from e
        elif source.get("serviceAccountToken") is not None:
            try:
                files.update(await _token_files(ctx, source["serviceAccountToken"], mode))
            except TokenError as e:
                raise _fail(name, e) from e
            due = ctx.kubelet.tokens.refresh_in(ctx.pod_uid)
            if due is not None and ctx.wake_in is not None:
                ctx.wake_in(due + 0.5)
        else:
            kind = next((k for k in source), "unknown")
            raise UnsupportedVolume(f'volume "{name}": projected source "{kind}" is not supported by this kubelet')
    return await _write(ctx, ctx.volume_dir("projected", name), files, name)


# -- tmpfs ----------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MNT_DETACH = 2


def _unescape(mnt: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), mnt)


def mounts_below(root: Path) -> list[tuple[str, str, str]]:
    """(mount point, fs type, options) under ``root`` (itself included), from /proc/self/mountinfo."""
    prefix = os.path.abspath(root)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split(" ")
            point = _unescape(fields[4])
            if point == prefix or point.startswith(prefix + "/"):
                rfields = right.split(" ")
                out.append((point, rfields[0], rfields[2].strip() if len(rfields) > 2 else ""))
    return out


def is_mounted(path: Path) -> bool:
    p = os.path.abspath(path)
    return any(m[0] == p for m in mounts_below(path))


def mount_tmpfs(path: Path, *, size: int, mode: int = 0o777, flags: int = 0) -> bool:
    """A tmpfs of ``size`` bytes at ``path`` unless one is there already; True when mounted now."""
    path.mkdir(parents=True, exist_ok=True)
    if is_mounted(path):
        return False
    data = f"size={size},mode={mode:o}".encode()
    if _libc.mount(b"tmpfs", str(path).encode(), b"tmpfs", flags, data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {path}: {os.strerror(err)}")
    return True


def unmount_below(root: Path) -> list[str]:
    """Unmount everything under ``root``, deepest first (lazily: a busy mount goes when released)."""
    done = []
    for point, _, _ in sorted(mounts_below(root), key=lambda m: len(m[0]), reverse=True):
        if _libc.umount2(point.encode(), MNT_DETACH) == 0:
            done.append(point)
        else:
            log.warning("umount failed path=%s err=%s", point, os.strerror(ctypes.get_errno()))
    return done


def ensure_shm(pod_dir: Path) -> Path:
    """The pod's shared /dev/shm: a 64 MiB tmpfs (as containerd makes one per sandbox)."""
    shm = pod_dir / "shm"
    mount_tmpfs(shm, size=SHM_SIZE, mode=0o1777, flags=MS_NOSUID | MS_NODEV | MS_NOEXEC)
    return shm


def memory_medium_size(*, node_allocatable: int, pod_memory_limit: int | None, size_limit: int | None) -> int:
    """Upstream's calculateEmptyDirMemorySize: node allocatable, lowered by the pod's limit, then sizeLimit."""
    size = node_allocatable
    if pod_memory_limit and 0 < pod_memory_limit <= size:
        size = pod_memory_limit
    if size_limit and 0 < size_limit <= size:
        size = size_limit
    return size


async def empty_dir(ctx: VolumeContext, v: dict[str, Any]) -> Path:
    name = v["name"]
    src = v.get("emptyDir") or {}
    medium = src.get("medium") or ""
    if medium not in ("", "Memory"):
        raise UnsupportedVolume(f'volume "{name}": emptyDir medium "{medium}" is not supported '
                                f"by this kubelet (only the node's disk and Memory)")
    target = ctx.volume_dir("empty-dir", name)
    fresh = not target.exists()
    if medium == "Memory":
        from kubepy.kubelet.pods import pod_resources   # pods imports this module
        size = memory_medium_size(
            node_allocatable=int(ctx.kubelet.node_alloc.get("memory", 0)) or 2**40,
            pod_memory_limit=pod_resources(ctx.pod.get("spec") or {}).memory_limit,
            size_limit=bytes_value(src["sizeLimit"]) if src.get("sizeLimit") else None)
        try:
            if await asyncio.to_thread(mount_tmpfs, target, size=size):
                fresh = True
                log.info("tmpfs mounted pod=%s/%s volume=%s size=%d", ctx.namespace, ctx.pod_name, name, size)
        except OSError as e:
            raise _fail(name, e) from e
    else:
        target.mkdir(parents=True, exist_ok=True)
    if fresh:
        target.chmod(0o777)
        ctx.created.add(name)
    gid = ctx.fs_group
    if gid is not None and (fresh or (ctx.fs_group_policy == "Always" and not _ownership_ok(
            target, gid, read_only=False))):
        await asyncio.to_thread(set_ownership, target, gid, read_only=False)
    return target


def emptydir_over_limit(pod: dict[str, Any], usage: dict[str, int]) -> str | None:
    """Upstream's eviction message when an emptyDir uses more than its sizeLimit, else None."""
    for v in (pod.get("spec") or {}).get("volumes") or []:
        src = v.get("emptyDir")
        if src is None or not src.get("sizeLimit") or v["name"] not in usage:
            continue
        limit = bytes_value(src["sizeLimit"])
        if limit > 0 and usage[v["name"]] > limit:
            return f'Usage of EmptyDir volume "{v["name"]}" exceeds the limit "{canonicalize_quantity(src["sizeLimit"])}". '
    return None


def disk_usage(path: Path) -> int:
    """Bytes a directory tree holds on disk (``du``: allocated blocks, each inode once)."""
    total, seen = 0, set()
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def emptydir_usage(pod: dict[str, Any], pod_dir: Path) -> dict[str, int]:
    """Usage of the pod's emptyDir volumes that have a sizeLimit."""
    out = {}
    for v in (pod.get("spec") or {}).get("volumes") or []:
        if (v.get("emptyDir") or {}).get("sizeLimit"):
            d = pod_dir / "volumes" / "kubernetes.io~empty-dir" / v["name"]
            if d.exists():
                out[v["name"]] = disk_usage(d)
    return out


Setup = Callable[[VolumeContext, dict[str, Any]], Awaitable[Path]]

#: volume type (the key in a pod's ``spec.volumes[]``) → its setup function.
SETUP: dict[str, Setup] = {
    "hostPath": host_path,
    "configMap": config_map,
    "secret": secret,
    "emptyDir": empty_dir,
    "downwardAPI": downward_api,
    "projected": projected,
    "persistentVolumeClaim": persistent_volume_claim,   # kubepy/kubelet/localvolumes.py
}

#: volume types whose mounts are always read-only.
READ_ONLY_TYPES = frozenset({"configMap", "secret", "downwardAPI", "projected"})


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


# -- mounts into a container ------------------------------------------------------------

_SUBPATH_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_subpath(expr: str, env: dict[str, str]) -> str:
    """Upstream's ExpandContainerVolumeMounts: ``$(VAR)`` from the container's env; a missing or empty one fails."""
    missing: set[str] = set()

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        value = env.get(m.group(1), "")
        if not value:
            missing.add(m.group(1))
        return value

    out = _SUBPATH_VAR.sub(sub, expr)
    if missing:
        raise ConfigError(f"missing value for {', '.join(sorted(missing))}")
    return out


def _safe_subpath(volume: Path, sub: str, *, mount: str, container: str, gid: int | None) -> Path:
    """``volume/sub`` created if missing and resolved; it may not leave the volume (.., symlinks)."""
    if os.path.isabs(sub):
        raise ConfigError(f"error SubPath `{sub}` must not be an absolute path")
    if ".." in Path(sub).parts:
        raise ConfigError(f"unable to provision SubPath `{sub}`: must not contain '..'")
    root = volume.resolve()
    host = volume / sub
    if not os.path.lexists(host):
        # Kubernetes' SafeMakeDir: each new component below an existing, contained parent.
        parent = root
        for part in Path(sub).parts:
            nxt = parent / part
            if os.path.lexists(nxt):
                nxt = nxt.resolve()
                if nxt != root and root not in nxt.parents:
                    raise ConfigError(f'failed to create subPath directory for volumeMount "{mount}" '
                                      f'of container "{container}"')
            else:
                nxt.mkdir(mode=root.stat().st_mode & 0o7777)
                nxt.chmod(root.stat().st_mode & 0o7777)
                if gid is not None:
                    os.lchown(nxt, -1, gid)
            parent = nxt
    real = host.resolve()
    if real != root and root not in real.parents:
        raise ConfigError(f'failed to prepare subPath for volumeMount "{mount}" of container "{container}"')
    return real


def container_mounts(pod: dict[str, Any], c: dict[str, Any], volume_paths: dict[str, Path],
                     env: dict[str, str] | None = None) -> list[tuple[str, str, bool]]:
    """``(host path, container path, read-only)`` for a container's volumeMounts."""
    mounts: list[tuple[str, str, bool]] = []
    vols = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
    gid = ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
    for m in c.get("volumeMounts") or []:
        host = volume_paths.get(m["name"])
        if host is None:
            raise ConfigError(f'volume "{m["name"]}" not found')
        prop = m.get("mountPropagation") or "None"
        if prop != "None":
            raise ConfigError(f'volumeMount "{m["name"]}": mountPropagation "{prop}" is not supported by this '
                              f"kubelet (only None)")
        if m.get("subPath") and m.get("subPathExpr"):
            raise ConfigError("subPath and subPathExpr are mutually exclusive")   # validation stops it first
        sub = m.get("subPath") or ""
        if m.get("subPathExpr"):
            sub = expand_subpath(m["subPathExpr"], env or {})
        if sub:
            host = _safe_subpath(host, sub, mount=m["name"], container=c.get("name", ""),
                                 gid=int(gid) if gid is not None else None)
        v = vols.get(m["name"]) or {}
        ro = bool(m.get("readOnly")) or any(t in v for t in READ_ONLY_TYPES) \
            or bool((v.get("persistentVolumeClaim") or {}).get("readOnly"))
        mounts.append((str(host), m["mountPath"], ro))
    return mounts
