"""Files that hold secrets: mode 0600 from the moment they exist, in 0700 directories.

Keys, tokens, kubeconfigs and the store are written here rather than with
``open()``: a file is created under a temporary name with ``O_EXCL`` and
mode 0600, filled, fsynced and renamed over the target, so there is never a
moment when it exists with a wider mode or half written. ``private_dir``
makes a directory 0700 and narrows one that already exists (directories
made by older kubepy versions were 0755): a daemon calls it at start for
the directories it owns.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["FILE_MODE", "DIR_MODE", "private_dir", "narrow_file", "write_private", "is_private"]

FILE_MODE = 0o600
DIR_MODE = 0o700


def is_private(mode: int) -> bool:
    """No permission bit for the group or others."""
    return stat.S_IMODE(mode) & 0o077 == 0


def private_dir(path: Path) -> Path:
    """``path`` exists as a directory with mode 0700 (parents are left as they are)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        mode = path.stat().st_mode
        if not is_private(mode):
            os.chmod(path, DIR_MODE)
            log.info("narrowed directory mode path=%s from=%o to=%o", path, stat.S_IMODE(mode), DIR_MODE)
    return path


def narrow_file(path: Path) -> None:
    """An existing file readable by others becomes 0600 (files older kubepy versions made 0644)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not is_private(mode):
        os.chmod(path, FILE_MODE)
        log.info("narrowed file mode path=%s from=%o to=%o", path, stat.S_IMODE(mode), FILE_MODE)


def write_private(path: Path, data: bytes | str) -> None:
    """Replaces ``path`` atomically with ``data``, mode 0600 (never wider, never partial)."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
