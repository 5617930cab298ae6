"""`kubepy up` as a person meets it: repeatable, honest about failures, etcd on request."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def kubepy(*args: str, root: Path, name: str, env: dict | None = None, timeout: float = 180):
    return subprocess.run([sys.executable, "-m", "kubepy", *args, "--name", name, "--state-dir", str(root)],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def where():
    root = Path(tempfile.mkdtemp(prefix="kplab-", dir="/tmp"))
    name = f"kptest-{secrets.token_hex(3)}"
    try:
        yield root, name
    finally:
        kubepy("down", root=root, name=name)
        shutil.rmtree(root, ignore_errors=True)


def test_up_twice_is_harmless_and_status_reports(where):
    root, name = where
    first = kubepy("up", "--nodes", "0", root=root, name=name)
    assert first.returncode == 0, first.stderr
    again = kubepy("up", "--nodes", "0", root=root, name=name)
    assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
    status = kubepy("status", root=root, name=name)
    assert status.returncode == 0
    for component in ("apiserver", "scheduler", "controller-manager"):
        assert f"✓ {component}" in status.stdout, status.stdout
    path = subprocess.run([sys.executable, "-m", "kubepy", "kubeconfig", "--name", name, "--state-dir", str(root)],
                          capture_output=True, text=True).stdout.strip()
    assert path.endswith("admin.kubeconfig") and Path(path).exists()


def test_failed_up_says_which_step_and_cleans_up(where):
    root, name = where
    with socket.socket() as taken:  # the port the API server will be told to use
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
        cp = kubepy("up", "--nodes", "1", "--port", str(port), root=root, name=name)
    assert cp.returncode == 1
    assert "kubepy up failed at 'controlplane'" in cp.stderr, cp.stderr
    assert "address already in use" in cp.stderr, "the failing daemon's log tail is shown"
    assert not (root / name).exists(), "a failed up removes what it made"
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    assert not {n for n in after - before if n.startswith(name)}


def test_missing_prerequisites_are_named(where):
    root, name = where
    env = {**os.environ, "PATH": "/nonexistent"}
    cp = kubepy("up", "--nodes", "1", root=root, name=name, env=env)
    assert cp.returncode == 1
    assert "containerd is missing: apt-get install -y containerd" in cp.stderr, cp.stderr
    assert "iptables is missing: apt-get install -y iptables" in cp.stderr


def test_store_etcd_runs_a_real_etcd(where):
    root, name = where
    cp = kubepy("up", "--nodes", "1", "--store", "etcd", root=root, name=name)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "✓ etcd" in cp.stdout
    cluster = root / name
    assert (cluster / "etcd").is_dir(), "etcd's data dir is the cluster's"
    kubectl = [sys.executable, "-m", "kubepy", "kubectl", "--name", name, "--state-dir", str(root)]
    nodes = subprocess.run([*kubectl, "get", "nodes"], capture_output=True, text=True)
    assert f"{name}-node1   Ready" in nodes.stdout, nodes.stdout + nodes.stderr
    down = kubepy("down", root=root, name=name)
    assert down.returncode == 0 and "stop etcd" in down.stdout
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"--name={name}" not in procs
