"""Backups of the cluster's store, and restoring a cluster from one.

SQLite (the single-node default): ``save`` copies the database with SQLite's
online backup API, so it is consistent even while an API server writes (WAL);
``restore`` puts a snapshot in place of a stopped API server's database and
then does what ``etcdutl snapshot restore --bump-revision N --mark-compacted``
does for etcd: the revision jumps ahead by N and everything before is marked
compacted. Components that remember a resourceVersion from before the
restore (informers, kubelets) are answered 410 Gone when they watch from it,
so they list again and see the restored state, rather than waiting for
revisions that will never come.

etcd: ``save`` and ``restore`` are the distribution's ``etcdctl snapshot
save|restore`` (etcd 3.4's etcdctl has no revision bump: restart every
component after restoring an etcd cluster, as Kubernetes' documentation says).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

# As upstream recommends for etcdutl: far beyond any revision a client saw.
DEFAULT_BUMP = 1_000_000_000


class SnapshotError(RuntimeError):
    """A snapshot could not be taken or restored (the message says why, in one line)."""


@dataclass
class SnapshotInfo:
    revision: int
    keys: int
    size: int


def _sqlite_info(path: Path) -> SnapshotInfo:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (ok,) = conn.execute("PRAGMA integrity_check").fetchone()
        if ok != "ok":
            raise SnapshotError(f"{path}: the database is damaged: {ok}")
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kv'").fetchone()
        (keys,) = conn.execute(
            "SELECT COUNT(*) FROM kv k WHERE deleted = 0 AND id = (SELECT MAX(id) FROM kv WHERE key = k.key)"
        ).fetchone()
    except sqlite3.DatabaseError as e:
        raise SnapshotError(f"{path}: not a kubepy store: {e}") from None
    finally:
        conn.close()
    return SnapshotInfo(row[0] if row else 0, keys, path.stat().st_size)


def save_sqlite(db: Path, out: Path) -> SnapshotInfo:
    if not db.exists():
        raise SnapshotError(f"no store at {db}")
    tmp = out.with_name(out.name + ".part")
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
        finally:
            dst.close()
    except sqlite3.DatabaseError as e:
        tmp.unlink(missing_ok=True)
        raise SnapshotError(f"{db}: {e}") from None
    finally:
        src.close()
    os.chmod(tmp, 0o600)   # every Secret of the cluster is in it
    info = _sqlite_info(tmp)
    tmp.replace(out)
    return info


def _in_use(db: Path) -> bool:
    """Does a process on this host have the database (or its WAL) open? SQLite's own locks
    are held only while a statement runs, so they cannot say whether an API server is up."""
    import psutil

    names = {str(db.resolve()), str(db.resolve()) + "-wal", str(db.resolve()) + "-shm"}
    for proc in psutil.process_iter():
        try:
            if any(f.path in names for f in proc.open_files()):
                return True
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return False


def restore_sqlite(snapshot: Path, db: Path, *, bump: int = DEFAULT_BUMP) -> SnapshotInfo:
    """Replace *db* (its API server stopped) by *snapshot*, the revision bumped and history compacted."""
    if not snapshot.exists():
        raise SnapshotError(f"no snapshot at {snapshot}")
    _sqlite_info(snapshot)
    if db.exists() and _in_use(db):
        raise SnapshotError(f"{db} is in use: stop its API server first")
    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(db.name + ".restoring")
    shutil.copyfile(snapshot, tmp)
    os.chmod(tmp, 0o600)
    conn = sqlite3.connect(tmp)
    try:
        with conn:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kv'").fetchone()
            bumped = (row[0] if row else 0) + bump
            # sqlite_sequence has no key: update kv's row, or add it (a store that never wrote)
            if row:
                conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'kv'", (bumped,))
            else:
                conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('kv', ?)", (bumped,))
            conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('compact_revision', ?)", (bumped,))
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    tmp.replace(db)
    return _sqlite_info(db)


def _etcdctl(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("etcdctl")
    if exe is None:
        raise SnapshotError("etcdctl is not installed (Debian: apt-get install etcd-client)")
    cp = subprocess.run([exe, *args], capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"},
                        check=False, timeout=600)
    if cp.returncode:
        raise SnapshotError(f"etcdctl {args[0]} {args[1]}: {(cp.stderr or cp.stdout).strip().splitlines()[-1:]}")
    return cp


def save_etcd(endpoint: str, out: Path) -> SnapshotInfo:
    _etcdctl("snapshot", "save", str(out), "--endpoints", endpoint)
    os.chmod(out, 0o600)
    return _etcd_info(out)


def _etcd_info(path: Path) -> SnapshotInfo:
    import json

    cp = _etcdctl("snapshot", "status", str(path), "-w", "json")
    status = json.loads(cp.stdout)
    return SnapshotInfo(int(status.get("revision", 0)), int(status.get("totalKey", 0)),
                        int(status.get("totalSize", 0)))


def restore_etcd(snapshot: Path, data_dir: Path, *, name: str = "default",
                 initial_cluster: str | None = None, advertise_peer_url: str = "http://localhost:2380") -> SnapshotInfo:
    """A new member data dir from *snapshot* (start etcd on it with ``--data-dir``)."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise SnapshotError(f"{data_dir} is not empty: restore into a new data directory")
    info = _etcd_info(snapshot)
    _etcdctl("snapshot", "restore", str(snapshot), "--data-dir", str(data_dir), "--name", name,
             "--initial-cluster", initial_cluster or f"{name}={advertise_peer_url}",
             "--initial-advertise-peer-urls", advertise_peer_url)
    return info
