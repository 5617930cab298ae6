"""What the benchmarks share: a real control plane (``kubepy controlplane``) in a temporary directory."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from kubepy.client import Client, ClientConfig
from tests.e2e.conftest import free_port


@asynccontextmanager
async def controlplane() -> AsyncIterator[Client]:
    """API server, scheduler and controller manager on loopback; yields an admin client."""
    tmp = Path(tempfile.mkdtemp(prefix="kubepy-bench-"))
    cp = subprocess.Popen([sys.executable, "-m", "kubepy", "--log-level", "warning", "controlplane",
                           "--data-dir", str(tmp), "--bind-address", "127.0.0.1", "--port", str(free_port())])
    try:
        kubeconfig = tmp / "admin.kubeconfig"
        deadline = time.monotonic() + 60
        while not kubeconfig.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("control plane did not start")
            await asyncio.sleep(0.1)
        client = Client(ClientConfig.from_kubeconfig(kubeconfig))
        try:
            yield client
        finally:
            await client.close()
    finally:
        cp.terminate()
        try:
            cp.wait(30)
        except subprocess.TimeoutExpired:
            cp.kill()
        shutil.rmtree(tmp, ignore_errors=True)
