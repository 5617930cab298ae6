"""Fixtures for the store contract suite: one ``store`` per backend.

The etcd backend runs against a real etcd process started once per session
on loopback (random free ports, throwaway data dir).  A missing etcd binary
fails those tests instead of skipping them: CI installs etcd, and a silently
skipped backend would look like a passing one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from typing import Callable, Iterator

import pytest

from kubepy.store.base import Store
from kubepy.store.etcd import EtcdStore
from kubepy.store.sqlite import SQLiteStore

log = logging.getLogger(__name__)

_ETCD_START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/health", timeout=1) as resp:
            return json.load(resp).get("health") == "true"
    except (OSError, ValueError, urllib.error.URLError):
        return False


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "<no log>"


@pytest.fixture(scope="session")
def etcd_endpoint() -> Iterator[str]:
    binary = shutil.which("etcd")
    if binary is None:
        pytest.fail(
            "etcd binary not found on PATH: the etcd store tests need a real etcd "
            "(Debian: apt-get install etcd-server)",
            pytrace=False,
        )
    root = tempfile.mkdtemp(prefix="kubepy-etcd-")
    client, peer = _free_port(), _free_port()
    endpoint = f"http://127.0.0.1:{client}"
    log_path = os.path.join(root, "etcd.log")
    cmd = [
        binary,
        "--name=kubepy-test",
        f"--data-dir={os.path.join(root, 'data')}",
        f"--listen-client-urls={endpoint}",
        f"--advertise-client-urls={endpoint}",
        f"--listen-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-cluster=kubepy-test=http://127.0.0.1:{peer}",
        "--log-level=warn",
        "--logger=zap",
    ]
    proc = None
    try:
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + _ETCD_START_TIMEOUT
        while not _healthy(endpoint):
            if proc.poll() is not None:
                pytest.fail(f"etcd exited with {proc.returncode}:\n{_tail(log_path)}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"etcd not healthy after {_ETCD_START_TIMEOUT}s:\n{_tail(log_path)}", pytrace=False)
            time.sleep(0.1)
        log.info("etcd started endpoint=%s pid=%d", endpoint, proc.pid)
        yield endpoint
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("etcd", marks=[pytest.mark.etcd, pytest.mark.slow]),
    ]
)
def store_factory(request: pytest.FixtureRequest, tmp_path) -> Callable[[], Store]:
    """Builds a store of the parametrized backend (a factory so reopen tests
    can make a second one)."""
    if request.param == "sqlite":
        path = str(tmp_path / "state.db")
        return lambda: SQLiteStore(path)
    endpoint = request.getfixturevalue("etcd_endpoint")
    return lambda: EtcdStore([endpoint])


@pytest.fixture
async def store(store_factory: Callable[[], Store]):
    s = store_factory()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses (the etcd server is shared)."""
    return f"/test/{uuid.uuid4().hex[:12]}/"
