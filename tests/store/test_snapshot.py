"""Backups and restores of the store: a snapshot saved while the API server
writes restores the cluster as it was, and clients that remember newer
resourceVersions are told to list again (410), never left waiting."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from kubepy.client import Client, ClientConfig, GoneError
from tests.e2e.conftest import start_apiserver, stop_apiserver
from tests.etcd import running_etcd

pytestmark = pytest.mark.slow


def kubepy(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cp = subprocess.run([sys.executable, "-m", "kubepy", *args], capture_output=True, text=True, timeout=120)
    assert not check or cp.returncode == 0, cp.stderr
    return cp


def cm(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": name}}


async def test_a_sqlite_snapshot_restores_the_cluster_and_old_resource_versions_are_gone() -> None:
    root = Path(tempfile.mkdtemp(prefix="kubepy-snap-"))
    data, snap = root / "cp", root / "backup.db"
    srv = start_apiserver(data)
    try:
        async with Client(ClientConfig.from_kubeconfig(srv.kubeconfig)) as c:
            await c.create("configmaps", cm("kept"), namespace="default")
            out = kubepy("snapshot", "save", str(snap), "--data-dir", str(data))   # while it runs
            assert out.stdout.startswith(f"saved {snap}: revision ") and snap.stat().st_mode & 0o777 == 0o600
            await c.create("configmaps", cm("after"), namespace="default")
            await c.delete("configmaps", "kept", namespace="default")
            seen_rv = (await c.list("configmaps", namespace="default"))["metadata"]["resourceVersion"]
        refused = kubepy("snapshot", "restore", str(snap), "--data-dir", str(data), check=False)
        assert refused.returncode == 1 and "is in use: stop its API server first" in refused.stderr
        stop_apiserver(srv)
        kubepy("snapshot", "restore", str(snap), "--data-dir", str(data))
        srv = start_apiserver(data, port=srv.port)
        async with Client(ClientConfig.from_kubeconfig(srv.kubeconfig)) as c:
            listed = await c.list("configmaps", namespace="default")
            names = {i["metadata"]["name"] for i in listed["items"]}
            assert "kept" in names and "after" not in names
            assert int(listed["metadata"]["resourceVersion"]) > 1_000_000_000
            # A client that remembers the cluster after the snapshot is sent to list again.
            with pytest.raises(GoneError):
                async for _ in c.watch("configmaps", namespace="default", resource_version=seen_rv,
                                       timeout_seconds=2):
                    pass
            created = await c.create("configmaps", cm("new"), namespace="default")
            assert int(created["metadata"]["resourceVersion"]) > int(seen_rv)
    finally:
        stop_apiserver(srv)
        shutil.rmtree(root, ignore_errors=True)


def test_a_damaged_or_missing_snapshot_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database" * 100)
    cp = kubepy("snapshot", "restore", str(bad), "--data-dir", str(tmp_path / "cp"), check=False)
    assert cp.returncode == 1 and "not a kubepy store" in cp.stderr
    cp = kubepy("snapshot", "save", str(tmp_path / "x.db"), "--data-dir", str(tmp_path / "nothing"), check=False)
    assert cp.returncode == 1 and "no store at" in cp.stderr


def test_an_etcd_snapshot_restores_into_a_new_member(tmp_path: Path) -> None:
    with running_etcd() as endpoint:
        subprocess.run(["etcdctl", "--endpoints", endpoint, "put", "/registry/x", "hello"], check=True,
                       capture_output=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
        out = kubepy("etcd", "snapshot", "save", str(tmp_path / "e.db"), "--endpoints", endpoint)
        assert "keys" in out.stdout
    restored = kubepy("etcd", "snapshot", "restore", str(tmp_path / "e.db"), "--data-dir", str(tmp_path / "member"))
    assert "restart every API server" in restored.stdout
    assert (tmp_path / "member" / "member" / "snap").is_dir()
    again = kubepy("etcd", "snapshot", "restore", str(tmp_path / "e.db"), "--data-dir", str(tmp_path / "member"),
                   check=False)
    assert again.returncode == 1 and "not empty" in again.stderr
