"""Small OCI image archives built from local files, for machines without a registry.

``umoci`` does the image work (layout, layer, config); ``tar`` packs the
layout. The archive's index names the image twice: ``org.opencontainers.
image.ref.name`` (the tag, as OCI says) and ``io.containerd.image.name`` (the
full normalised reference), which ``ctr images import`` uses as the image's
name - so ``busybox:1.36`` is imported as ``docker.io/library/busybox:1.36``,
the name a pod's ``image: busybox:1.36`` resolves to.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["BUSYBOX_APPLETS", "ImageBuildError", "build_image", "busybox_image"]

BUSYBOX = "/bin/busybox"   # Debian's busybox-static
BUSYBOX_APPLETS = ["sh", "ash", "sleep", "echo", "cat", "ls", "ps", "wget", "nc", "httpd", "ip",
                   "ifconfig", "hostname", "env", "id", "true", "false", "test", "mkdir", "rm",
                   "touch", "grep", "head", "tail", "dd", "date", "kill", "mount", "df", "uname",
                   "nslookup", "ping", "printf", "seq", "sed", "awk", "wc", "tee", "sort", "vi",
                   "top", "free", "yes", "timeout", "nohup", "nproc", "pwd", "whoami", "route"]
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


class ImageBuildError(Exception):
    pass


def build_image(ref: str, out_tar: Path, *, files: dict[str, Path] | None = None,
                symlinks: dict[str, str] | None = None, entrypoint: list[str] | None = None,
                cmd: list[str] | None = None, env: dict[str, str] | None = None,
                workdir: str | None = None, user: str | None = None) -> Path:
    """Build a one-layer image holding ``files`` (path in image → host file) and write
    an OCI archive that ``ctr images import`` names ``ref`` (normalised)."""
    from kubepy.kubelet.runtime import normalize_image_ref
    full = normalize_image_ref(ref)
    tag = full.rsplit(":", 1)[-1] if "@" not in full else "latest"
    tag = re.sub(r"[^A-Za-z0-9._-]", "_", tag)
    with tempfile.TemporaryDirectory(prefix="kubepy-image-") as tmp:
        layout, bundle = Path(tmp) / "layout", Path(tmp) / "bundle"
        image = f"{layout}:{tag}"
        _run("umoci", "init", "--layout", str(layout))
        _run("umoci", "new", "--image", image)
        _run("umoci", "unpack", "--image", image, str(bundle))
        rootfs = bundle / "rootfs"
        for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root"):
            (rootfs / d).mkdir(exist_ok=True)
        (rootfs / "tmp").chmod(0o1777)
        for dest, src in (files or {}).items():
            target = rootfs / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
        for dest, link_to in (symlinks or {}).items():
            target = rootfs / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            target.symlink_to(link_to)
        _run("umoci", "repack", "--image", image, str(bundle))
        config = ["umoci", "config", "--image", image]
        for arg in entrypoint or []:
            config += ["--config.entrypoint", arg]
        for arg in cmd or []:
            config += ["--config.cmd", arg]
        for k, v in (env or {}).items():
            config += ["--config.env", f"{k}={v}"]
        if workdir:
            config += ["--config.workingdir", workdir]
        if user:
            config += ["--config.user", user]
        _run(*config)
        _run("umoci", "gc", "--layout", str(layout))
        index_path = layout / "index.json"
        index = json.loads(index_path.read_text())
        for m in index["manifests"]:
            if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag:
                m["annotations"]["io.containerd.image.name"] = full
        index_path.write_text(json.dumps(index))
        out_tar = Path(out_tar)
        out_tar.parent.mkdir(parents=True, exist_ok=True)
        _run("tar", "-C", str(layout), "-cf", str(out_tar), ".")
    return out_tar


def busybox_image(ref: str, out_tar: Path, *, applets: list[str] | None = None) -> Path:
    """A busybox image: /bin/busybox (static) with applet symlinks, /etc/passwd, PATH=/bin."""
    with tempfile.TemporaryDirectory(prefix="kubepy-busybox-") as tmp:
        passwd, group = Path(tmp) / "passwd", Path(tmp) / "group"
        passwd.write_text(PASSWD)
        group.write_text(GROUP)
        return build_image(
            ref, out_tar,
            files={"/bin/busybox": Path(BUSYBOX), "/etc/passwd": passwd, "/etc/group": group},
            symlinks={f"/bin/{a}": "busybox" for a in (applets or BUSYBOX_APPLETS)},
            cmd=["sh"], env={"PATH": "/bin"}, workdir="/")


def _run(*argv: str) -> None:
    res = subprocess.run(argv, capture_output=True, check=False)
    if res.returncode != 0:
        raise ImageBuildError(f"{' '.join(argv)} exited with {res.returncode}: "
                              f"{res.stderr.decode(errors='replace').strip()}")
