"""``kubepy stop-pods``: stop every container of a node, for a node shutdown.

The kubelet leaves its pods running when it stops (a restart keeps them), and
the containers live in kubepy's own cgroups, outside any systemd unit. When the
machine shuts down, systemd/kubepy-shutdown.service runs this after the kubelet
has stopped and before containerd does: every running task gets SIGTERM, then,
after ``grace`` seconds, SIGKILL. (Left alone, they would get systemd-shutdown's
last SIGTERM, which a container's PID 1 usually ignores, and the machine would
wait 90 s for them.) After the reboot the kubelet finds the sandboxes gone and
starts the pods again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

from kubepy.kubelet.runtime import Runtime, RuntimeCommandError

log = logging.getLogger(__name__)


async def running_tasks(runtime: Runtime) -> list[str]:
    return [cid for cid, (_pid, status) in (await runtime._tasks()).items() if status == "RUNNING"]


async def stop_all(runtime: Runtime, grace: float = 10.0, poll: float = 0.5) -> tuple[int, int]:
    """SIGTERM every running task, SIGKILL what still runs after ``grace`` s; returns (termed, killed)."""
    async def signal_all(cids: list[str], sig: str) -> None:
        async def one(cid: str) -> None:
            try:
                await runtime.kill(cid, sig, all_processes=True)
            except RuntimeCommandError as e:   # it exited meanwhile
                log.debug("kill failed container=%s signal=%s err=%s", cid, sig, e)
        await asyncio.gather(*(one(c) for c in cids))

    termed = await running_tasks(runtime)
    await signal_all(termed, "SIGTERM")
    deadline = time.monotonic() + grace
    left = await running_tasks(runtime)
    while left and time.monotonic() < deadline:
        await asyncio.sleep(poll)
        left = await running_tasks(runtime)
    await signal_all(left, "SIGKILL")
    log.info("pods stopped namespace=%s sigterm=%d sigkill=%d", runtime.namespace, len(termed), len(left))
    return len(termed), len(left)


def run(args: argparse.Namespace) -> int:
    runtime = Runtime(args.container_runtime_endpoint, namespace=args.containerd_namespace)
    asyncio.run(stop_all(runtime, grace=args.grace_period))
    return 0
