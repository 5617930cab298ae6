"""A steady writer for failover tests and benchmarks: creates ConfigMaps through a kubeconfig as fast as
they are acknowledged, and records each acknowledged name and when it was acknowledged."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path


class Writer(threading.Thread):
    def __init__(self, kubeconfig: Path, prefix: str = "ha", *, pause: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.kubeconfig, self.prefix, self.pause = kubeconfig, prefix, pause
        self.acked: list[str] = []       # names, in acknowledgement order
        self.times: list[float] = []     # monotonic time of each acknowledgement
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        from kubepy.client import Client
        from kubepy.client.errors import APIStatusError, TransportError

        async with Client.from_kubeconfig(str(self.kubeconfig)) as client:
            i = 0
            while not self.stop.is_set():
                name = f"{self.prefix}-{i}"
                i += 1
                try:
                    async with asyncio.timeout(10):
                        await client.create("configmaps", {"metadata": {"name": name}}, namespace="default")
                    self.acked.append(name)
                    self.times.append(time.monotonic())
                except (APIStatusError, TransportError, TimeoutError):
                    self.errors += 1
                    await asyncio.sleep(0.1)
                if self.pause:
                    await asyncio.sleep(self.pause)

    def longest_gap(self, start: float, end: float) -> float:
        """The longest stretch within [start, end] without an acknowledgement (API unavailability)."""
        times = [start] + [t for t in self.times if start <= t <= end] + [end]
        return max(b - a for a, b in zip(times, times[1:]))
