"""A real etcd on loopback for tests: random free ports, throwaway data dir.

A missing etcd binary fails the tests that need it instead of skipping
them: CI installs etcd, and a silently skipped backend would look like a
passing one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Iterator

import pytest

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


@contextlib.contextmanager
def running_etcd() -> Iterator[str]:
    """Yields the client endpoint (http://127.0.0.1:PORT) of a fresh etcd."""
    binary = shutil.which("etcd")
    if binary is None:
        pytest.fail("etcd binary not found on PATH: these tests need a real etcd "
                    "(Debian: apt-get install etcd-server)", pytrace=False)
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
        yield endpoint
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
