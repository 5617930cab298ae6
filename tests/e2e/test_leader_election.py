"""Leader election of real `kubepy scheduler` and `kubepy controller-manager` processes. Schedulers: one
holds the kube-system/kube-scheduler Lease and binds pods; when it is killed
(no release) the other takes over once the lease expires and binds the next."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from kubepy.client import Client, ClientConfig
from tests.e2e.conftest import running_apiserver

pytestmark = pytest.mark.slow

FLAGS = ["--leader-elect", "--leader-elect-lease-duration", "2s", "--leader-elect-renew-deadline", "1500ms",
         "--leader-elect-retry-period", "250ms", "--healthz-bind-address", ""]


def node(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


async def until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out: {what}")


async def test_a_standby_scheduler_takes_over_from_a_killed_leader() -> None:
    with running_apiserver("kubepy-le-") as srv:
        tmp = Path(tempfile.mkdtemp(prefix="kubepy-le-logs-"))
        procs: list[subprocess.Popen] = []
        try:
            async with Client(ClientConfig.from_kubeconfig(srv.kubeconfig)) as c:
                created = await c.create("nodes", node("le-n1"))
                await c.patch("nodes", "le-n1", {"status": node("le-n1")["status"]}, subresource="status",
                              patch_type="merge")
                assert created
                logs = [tmp / f"sched{i}.log" for i in range(2)]
                for log in logs:
                    with log.open("w") as out:
                        procs.append(subprocess.Popen([sys.executable, "-m", "kubepy", "scheduler", "--kubeconfig",
                                                       str(srv.kubeconfig), *FLAGS], stderr=out,
                                                      start_new_session=True))

                async def leader_index():
                    led = [i for i, log in enumerate(logs) if "leader elected" in log.read_text()]
                    return led or None

                (leader,) = await until(leader_index, 30, "one leader")
                first = (await c.get("leases", "kube-scheduler", namespace="kube-system"))["spec"]["holderIdentity"]
                await c.create("pods", pod("le-a"), namespace="default")

                async def bound(name: str):
                    return (await c.get("pods", name, namespace="default"))["spec"].get("nodeName")

                assert await until(lambda: bound("le-a"), 30, "le-a bound") == "le-n1"
                standby = 1 - leader

                async def waiting():
                    return "leader election waiting" in logs[standby].read_text()

                await until(waiting, 30, "the other one waits")
                # The leader dies without releasing: the standby takes over once the 2 s lease expires.
                t0 = time.monotonic()
                os.killpg(procs[leader].pid, signal.SIGKILL)
                procs[leader].wait()

                async def moved():
                    lease = await c.get("leases", "kube-scheduler", namespace="kube-system")
                    h = lease["spec"].get("holderIdentity")
                    return h if h and h != first else None

                await until(moved, 15, "leadership moved")
                took = time.monotonic() - t0
                assert took > 1.0, took   # not before the 2 s lease could expire (the last renewal was <= 0.5 s earlier)
                assert "leader elected" in logs[standby].read_text()
                await c.create("pods", pod("le-b"), namespace="default")
                assert await until(lambda: bound("le-b"), 30, "le-b bound by the new leader") == "le-n1"
                lease = await c.get("leases", "kube-scheduler", namespace="kube-system")
                assert lease["spec"]["leaseTransitions"] >= 1
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        os.killpg(p.pid, signal.SIGKILL)
                        p.wait()
            shutil.rmtree(tmp, ignore_errors=True)


async def test_controller_managers_elect_one_leader_and_hand_over_on_a_clean_stop() -> None:
    """Two controller managers (the serviceaccount controller only): one leads and acts; stopped
    with SIGTERM it releases the Lease, so the other leads within a retry period, not a lease."""
    with running_apiserver("kubepy-le-cm-") as srv:
        tmp = Path(tempfile.mkdtemp(prefix="kubepy-le-logs-"))
        procs: list[subprocess.Popen] = []
        try:
            async with Client(ClientConfig.from_kubeconfig(srv.kubeconfig)) as c:
                logs = [tmp / f"cm{i}.log" for i in range(2)]
                for log in logs:
                    with log.open("w") as out:
                        procs.append(subprocess.Popen(
                            [sys.executable, "-m", "kubepy", "controller-manager", "--kubeconfig",
                             str(srv.kubeconfig), "--controllers", "serviceaccount", *FLAGS],
                            stderr=out, start_new_session=True))

                async def leader_index():
                    led = [i for i, log in enumerate(logs) if "leader elected" in log.read_text()]
                    return led or None

                (leader,) = await until(leader_index, 30, "one leader")
                standby = 1 - leader

                async def default_sa(ns: str):
                    items = (await c.list("serviceaccounts", namespace=ns))["items"]
                    return any(i["metadata"]["name"] == "default" for i in items)

                await c.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "le-1"}})
                await until(lambda: default_sa("le-1"), 30, "the leader's controller acts")
                t0 = time.monotonic()
                os.killpg(procs[leader].pid, signal.SIGTERM)
                procs[leader].wait(15)
                assert "lease released" in logs[leader].read_text()

                async def took_over():
                    return "leader elected" in logs[standby].read_text()

                await until(took_over, 10, "the standby leads")
                assert time.monotonic() - t0 < 8.0, "the standby waited too long"
                await c.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "le-2"}})
                await until(lambda: default_sa("le-2"), 30, "the new leader's controller acts")
                lease = await c.get("leases", "kube-controller-manager", namespace="kube-system")
                assert lease["spec"]["holderIdentity"] and lease["spec"]["leaseTransitions"] == 1
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        os.killpg(p.pid, signal.SIGKILL)
                        p.wait()
            shutil.rmtree(tmp, ignore_errors=True)
