"""Image references and the node's image list, shared by the kubelet (which
reports ``status.images``) and the scheduler (which scores image locality)."""

from __future__ import annotations

import re
from typing import Any

# The kubelet reports at most this many images (upstream --node-status-max-images).
NODE_STATUS_MAX_IMAGES = 50

_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
          "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def normalize_image_ref(ref: str) -> str:
    """Docker's rules: busybox:1.36 → docker.io/library/busybox:1.36."""
    name, digest = (ref.split("@", 1) + [""])[:2] if "@" in ref else (ref, "")
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        domain, path = "docker.io", name
    else:
        domain, path = first, rest
    if domain == "docker.io" and "/" not in path:
        path = "library/" + path
    if ":" not in path.rsplit("/", 1)[-1] and not digest:
        path += ":latest"
    return f"{domain}/{path}" + (f"@{digest}" if digest else "")


def parse_ctr_images(out: str) -> list[dict[str, Any]]:
    """``ctr images ls`` (REF TYPE DIGEST SIZE PLATFORMS LABELS) → Node ``status.images``
    entries: one per image digest, its names (each ref and ``repo@digest``) and size,
    biggest first and at most ``NODE_STATUS_MAX_IMAGES``, as the kubelet reports them."""
    by_digest: dict[str, dict[str, Any]] = {}
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5 or not fields[2].startswith("sha256:"):
            continue
        ref, digest = fields[0], fields[2]
        m = re.fullmatch(r"([\d.]+)", fields[3])
        size = int(float(m.group(1)) * _UNITS.get(fields[4], 1)) if m else 0
        entry = by_digest.setdefault(digest, {"names": [], "sizeBytes": size})
        if ref.startswith("sha256:"):
            continue
        repo = ref.split("@", 1)[0].rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref.split("@", 1)[0]
        for name in (f"{repo}@{digest}", ref):
            if name not in entry["names"]:
                entry["names"].append(name)
    images = [e for e in by_digest.values() if e["names"]]
    images.sort(key=lambda e: (-e["sizeBytes"], e["names"][0]))
    return images[:NODE_STATUS_MAX_IMAGES]
