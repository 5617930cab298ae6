"""Hollow nodes: simulated nodes for testing the control plane without containers.

A ``HollowCluster`` registers Nodes (Ready, with capacity), renews their
Leases, and plays the kubelet's part for pods bound to them: marks them
Running and Ready (or not ready, as ``is_ready`` decides) and finishes
their graceful deletion. Stopping a node's heartbeat simulates a node that
died: its Lease goes stale, and the node lifecycle controller takes over.
No traffic goes anywhere: addresses are from TEST-NET (192.0.2.0/24).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
from typing import Any, Callable

from kubepy.client import AlreadyExistsError, Client, ConflictError, Informer, NotFoundError

log = logging.getLogger(__name__)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class HollowCluster:
    def __init__(self, client: Client, count: int, *, prefix: str = "hollow-", cpu: str = "4",
                 memory: str = "8Gi", max_pods: int = 110, lease_interval: float = 2.0,
                 run_pods: bool = True, is_ready: Callable[[dict[str, Any]], bool] = lambda pod: True,
                 ready_delay: float = 0.0, labels: dict[str, str] | None = None,
                 run_for: Callable[[dict[str, Any]], float | None] = lambda pod: None) -> None:
        self.client = client
        self.names = [f"{prefix}{i}" for i in range(count)]
        self.cpu, self.memory, self.max_pods = cpu, memory, max_pods
        self.lease_interval = lease_interval
        self.run_pods = run_pods
        self.is_ready = is_ready
        self.ready_delay = ready_delay  # how long a container "starts" before it is ready
        self.labels = labels or {}
        self.run_for = run_for  # seconds a pod's containers run before exiting 0 (None: forever)
        self.heartbeating = set(self.names)
        self.pods = Informer(client, "pods")
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._ips: dict[str, int] = {}
        self._finishing: set[str] = set()

    async def start(self) -> None:
        sem = asyncio.Semaphore(32)

        async def register(i: int, name: str) -> None:
            async with sem:
                await self._register(i, name)

        await asyncio.gather(*(register(i, n) for i, n in enumerate(self.names)))
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="hollow:heartbeat"))
        if self.run_pods:
            self.pods.add_handler(self._pod_changed, lambda old, new: self._pod_changed(new), None)
            self._tasks.append(asyncio.create_task(self.pods.run(), name="hollow:pods"))
            await self.pods.wait_synced()

    async def stop(self) -> None:
        for t in [*self._tasks, *self._pending]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._pending, return_exceptions=True)
        self._tasks.clear()

    def stop_heartbeat(self, name: str) -> None:
        self.heartbeating.discard(name)

    def resume_heartbeat(self, name: str) -> None:
        self.heartbeating.add(name)

    # -- nodes ------------------------------------------------------------
    def _address(self, i: int) -> str:
        return str(ipaddress.ip_address("192.0.2.0") + 1 + i % 250)

    async def _register(self, i: int, name: str) -> None:
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                  "kubepy.io/hollow": "true", **self.labels}},
            "spec": {},
            "status": {
                "capacity": {"cpu": self.cpu, "memory": self.memory, "pods": str(self.max_pods)},
                "allocatable": {"cpu": self.cpu, "memory": self.memory, "pods": str(self.max_pods)},
                "conditions": self._conditions(),
                "addresses": [{"type": "InternalIP", "address": self._address(i)},
                              {"type": "Hostname", "address": name}],
                "nodeInfo": {"kubeletVersion": "v1.36.0-hollow", "containerRuntimeVersion": "hollow://0",
                             "osImage": "hollow", "kernelVersion": "0", "operatingSystem": "linux",
                             "architecture": "amd64"},
            },
        }
        try:
            await self.client.create("nodes", node)
        except AlreadyExistsError:
            pass
        await self._renew(name)

    def _conditions(self) -> list[dict[str, Any]]:
        now = _now()
        conds = [("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                 ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                 ("PIDPressure", "False", "KubeletHasSufficientPID"),
                 ("Ready", "True", "KubeletReady")]
        return [{"type": t, "status": s, "reason": r, "message": r, "lastHeartbeatTime": now,
                 "lastTransitionTime": now} for t, s, r in conds]

    async def _renew(self, name: str) -> None:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": _micro_now()}}
        try:
            await self.client.patch("leases", name, {"spec": {"renewTime": _micro_now()}},
                                    namespace="kube-node-lease")
        except NotFoundError:
            try:
                await self.client.create("leases", body, namespace="kube-node-lease")
            except AlreadyExistsError:
                pass

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_interval)
            for name in list(self.heartbeating):
                try:
                    await self._renew(name)
                    node = await self.client.get("nodes", name)
                    ready = next((c for c in (node.get("status") or {}).get("conditions") or []
                                  if c.get("type") == "Ready"), None)
                    if ready is None or ready.get("status") != "True":
                        # Came back after being marked unreachable: report Ready again.
                        await self.client.patch("nodes", name, {"status": {"conditions": self._conditions()}},
                                                subresource="status", patch_type="strategic")
                except Exception as e:  # noqa: BLE001 - a test node keeps trying
                    log.warning("hollow heartbeat failed node=%s err=%s", name, e)

    # -- pods -------------------------------------------------------------
    def _pod_changed(self, pod: dict[str, Any]) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node not in self.heartbeating:
            return  # not ours, or "dead": a dead node's kubelet does nothing
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            self._spawn(self._finish_deletion(pod))
            return
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed") or meta["uid"] in self._finishing:
            return
        ready = self.is_ready(pod)
        if status.get("phase") == "Running" and _is_ready(pod) == ready:
            return
        self._spawn(self._run(pod, node, ready))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _run(self, pod: dict[str, Any], node: str, ready: bool) -> None:
        meta = pod["metadata"]
        if ready and self.ready_delay and (pod.get("status") or {}).get("phase") != "Running":
            await self._run(pod, node, False)  # Running, not yet Ready
            await asyncio.sleep(self.ready_delay)
        idx = self.names.index(node) if node in self.names else 0
        n = self._ips[meta["uid"]] = self._ips.get(meta["uid"], len(self._ips) + 1)
        now = _now()
        flag = "True" if ready else "False"
        containers = (pod.get("spec") or {}).get("containers") or []
        status = {
            "phase": "Running", "hostIP": self._address(idx), "podIP": f"198.18.{n // 250 % 250}.{n % 250 + 1}",
            "startTime": (pod.get("status") or {}).get("startTime") or now,
            "conditions": [{"type": t, "status": s, "lastProbeTime": None, "lastTransitionTime": now}
                           for t, s in (("PodScheduled", "True"), ("Initialized", "True"),
                                        ("ContainersReady", flag), ("Ready", flag))],
            "containerStatuses": [{"name": c["name"], "image": c.get("image", ""), "imageID": "",
                                   "containerID": f"hollow://{meta['uid']}/{c['name']}", "ready": ready,
                                   "started": True, "restartCount": 0,
                                   "state": {"running": {"startedAt": now}}} for c in containers],
        }
        await self._write_status(pod, status)
        seconds = self.run_for(pod)
        if seconds is not None and meta["uid"] not in self._finishing:
            self._finishing.add(meta["uid"])
            await asyncio.sleep(seconds)
            await self._succeed(pod, containers, status)

    async def _succeed(self, pod: dict[str, Any], containers: list[dict[str, Any]], running: dict[str, Any]) -> None:
        """Every container exited 0: the pod is Succeeded (what a Job's pod does)."""
        now = _now()
        status = {
            **running, "phase": "Succeeded",
            "conditions": [{"type": t, "status": s, "lastProbeTime": None, "lastTransitionTime": now,
                            **({"reason": "PodCompleted"} if s == "False" else {})}
                           for t, s in (("PodScheduled", "True"), ("Initialized", "True"),
                                        ("ContainersReady", "False"), ("Ready", "False"))],
            "containerStatuses": [{"name": c["name"], "image": c.get("image", ""), "imageID": "",
                                   "containerID": f"hollow://{pod['metadata']['uid']}/{c['name']}", "ready": False,
                                   "started": False, "restartCount": 0,
                                   "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                            "startedAt": running["startTime"], "finishedAt": now}}}
                                  for c in containers],
        }
        await self._write_status(pod, status)

    async def _write_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            await self.client.patch("pods", meta["name"], {"status": status}, namespace=meta["namespace"],
                                    subresource="status", patch_type="merge")
        except NotFoundError:
            pass
        except Exception as e:  # noqa: BLE001
            log.warning("hollow pod status failed pod=%s/%s err=%s", meta["namespace"], meta["name"], e)

    async def _finish_deletion(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            await self.client.delete("pods", meta["name"], namespace=meta["namespace"], grace_period_seconds=0,
                                     preconditions={"uid": meta["uid"]})
        except (NotFoundError, ConflictError):
            pass


def _is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])
