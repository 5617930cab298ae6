"""``kubepy scheduler``: binds pending pods to nodes, through the API only.

Informers keep one ``NodeInfo`` per node (the node and the pods assigned to
it). Pending pods whose ``schedulerName`` is ours go on a work queue; one
scheduling loop takes them in turn, runs ``schedule_one`` (filter, score,
select), *assumes* the pod onto the chosen node at once so the next pod
sees the resources taken, and binds in the background (``pods/binding``).

A pod that fits nowhere gets ``PodScheduled=False`` with Kubernetes'
message and a ``FailedScheduling`` event, and waits in the unschedulable
set. It is retried, with a per-pod backoff (1 s doubling to 10 s), when a
node appears or changes or an assigned pod goes away, and at least once a
minute: never in a hot loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from kubepy.client import (
    Client,
    ConflictError,
    EventRecorder,
    Informer,
    NotFoundError,
    QueueShutdown,
    WorkQueue,
    object_key,
)
from kubepy.scheduler.listers import Listers
from kubepy.scheduler.framework import (
    NodeInfo,
    PodInfo,
    default_filters,
    default_scorers,
    num_feasible_nodes_to_find,
    schedule_one,
)

log = logging.getLogger(__name__)

DEFAULT_SCHEDULER = "default-scheduler"
UNSCHEDULABLE_FLUSH = 60.0
MAX_BINDS_IN_FLIGHT = 32


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_terminated(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _wants_us(pod: dict[str, Any], name: str) -> bool:
    spec = pod.get("spec") or {}
    return (not spec.get("nodeName") and (spec.get("schedulerName") or DEFAULT_SCHEDULER) == name
            and not (pod.get("metadata") or {}).get("deletionTimestamp") and not _is_terminated(pod))


class Scheduler:
    def __init__(self, client: Client, *, name: str = DEFAULT_SCHEDULER, rng: random.Random | None = None,
                 percentage_of_nodes_to_score: int = 0) -> None:
        self.client = client
        self.name = name
        self.rng = rng or random.Random()
        self.percentage = percentage_of_nodes_to_score
        self.recorder = EventRecorder(client, component=name)
        self.nodes = Informer(client, "nodes")
        self.pods = Informer(client, "pods")
        self.node_infos: dict[str, NodeInfo] = {}
        self._node_list: list[NodeInfo] | None = None  # the order schedule_one walks, rebuilt on change
        self._waiting_for_node: dict[str, dict[str, dict[str, Any]]] = {}  # node -> pod key -> pod
        self.queue = WorkQueue(base_delay=1.0, max_delay=10.0, name="scheduler")
        self.unschedulable: set[str] = set()
        self.assumed: dict[str, str] = {}  # pod key -> node, until the informer shows the binding
        self._binds = asyncio.Semaphore(MAX_BINDS_IN_FLIGHT)
        self._bind_tasks: set[asyncio.Task[None]] = set()
        self._next_start = 0
        # Namespaces' labels and the workloads behind default spreading.
        self.listers = Listers.from_client(client)
        self._filters = default_filters(self.listers)  # plugins hold no per-pod state
        self._scorers = default_scorers(self.listers)
        self.bound = 0
        self.nodes.add_handler(self._node_added, self._node_updated, self._node_deleted)
        self.pods.add_handler(self._pod_added, self._pod_updated, self._pod_deleted)

    # -- cluster state ----------------------------------------------------
    def _node_added(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        info = NodeInfo.from_node(node, self._waiting_for_node.pop(name, {}).values())
        self.node_infos[name] = info
        self._node_list = None
        self._retry_unschedulable(f"node {name} added")

    def _node_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        name = new["metadata"]["name"]
        info = self.node_infos.get(name)
        if info is None:
            self._node_added(new)
            return
        info.set_node(new)
        if (old.get("spec") != new.get("spec") or old.get("metadata", {}).get("labels") != new.get("metadata", {}).get("labels")
                or _conditions(old) != _conditions(new) or
                (old.get("status") or {}).get("allocatable") != (new.get("status") or {}).get("allocatable")):
            self._retry_unschedulable(f"node {name} changed")

    def _node_deleted(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        self.node_infos.pop(name, None)
        self._node_list = None

    def _account(self, pod: dict[str, Any]) -> None:
        """Count an assigned, not terminated pod on its node."""
        node = pod["spec"]["nodeName"]
        info = self.node_infos.get(node)
        if info is None:
            self._waiting_for_node.setdefault(node, {})[object_key(pod)] = pod
        else:
            info.add_pod(pod)

    def _unaccount(self, pod: dict[str, Any]) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            return
        info = self.node_infos.get(node)
        if info is not None:
            info.remove_pod(pod)
        self._waiting_for_node.get(node, {}).pop(object_key(pod), None)

    def _pod_added(self, pod: dict[str, Any]) -> None:
        if (pod.get("spec") or {}).get("nodeName"):
            self.assumed.pop(object_key(pod), None)
            if not _is_terminated(pod):
                self._account(pod)
                self._retry_waiting_for_peers()
        elif _wants_us(pod, self.name):
            self.queue.add(object_key(pod))

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        key = object_key(new)
        if (new.get("spec") or {}).get("nodeName"):
            self.assumed.pop(key, None)
            self.unschedulable.discard(key)
            if _is_terminated(new):
                self._unaccount(new)
                self._retry_unschedulable(f"pod {key} finished")
            else:
                self._account(new)
                if not (old.get("spec") or {}).get("nodeName"):
                    self._retry_waiting_for_peers()
        elif _wants_us(new, self.name) and key not in self.unschedulable and key not in self.assumed:
            self.queue.add(key)

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        key = object_key(pod)
        self.unschedulable.discard(key)
        self.queue.forget(key)
        node = self.assumed.pop(key, None) or (pod.get("spec") or {}).get("nodeName")
        if node:
            info = self.node_infos.get(node)
            if info is not None:
                info.remove_pod(pod)
            self._waiting_for_node.get(node, {}).pop(key, None)
            self._retry_unschedulable(f"pod {key} deleted")

    def _retry_unschedulable(self, why: str) -> None:
        if not self.unschedulable:
            return
        log.debug("retrying unschedulable pods count=%d reason=%r", len(self.unschedulable), why)
        for key in list(self.unschedulable):
            self.unschedulable.discard(key)
            self.queue.add_rate_limited(key)

    def _retry_waiting_for_peers(self) -> None:
        """A pod was placed: pods whose pod affinity or spread constraints
        failed may fit now (upstream's AssignedPodAdd event for those plugins)."""
        if not self.unschedulable:
            return
        for key in list(self.unschedulable):
            spec = (self.pods.cache.get(key) or {}).get("spec") or {}
            if (spec.get("affinity") or {}).get("podAffinity") or spec.get("topologySpreadConstraints"):
                self.unschedulable.discard(key)
                self.queue.add_rate_limited(key)

    # -- the scheduling loop ----------------------------------------------
    async def run(self) -> None:
        tasks = [asyncio.create_task(self.nodes.run(), name="scheduler:nodes"),
                 asyncio.create_task(self.pods.run(), name="scheduler:pods"),
                 asyncio.create_task(self._flush_unschedulable(), name="scheduler:flush"),
                 asyncio.create_task(self.listers.run(), name="scheduler:listers")]
        try:
            await self.nodes.wait_synced()
            await self.pods.wait_synced()
            await self.listers.wait_synced()
            log.info("scheduler ready nodes=%d pods=%d", len(self.node_infos), len(self.pods.cache))
            while True:
                try:
                    key = await self.queue.get()
                except QueueShutdown:
                    return
                try:
                    await self._schedule(key)
                finally:
                    self.queue.done(key)
        finally:
            self.queue.shutdown()
            for t in [*tasks, *self._bind_tasks]:
                t.cancel()
            await asyncio.gather(*tasks, *self._bind_tasks, return_exceptions=True)
            await self.recorder.flush()

    async def _flush_unschedulable(self) -> None:
        while True:
            await asyncio.sleep(UNSCHEDULABLE_FLUSH)
            self._retry_unschedulable("periodic flush")

    def _nodes_in_order(self) -> list[NodeInfo]:
        if self._node_list is None:
            self._node_list = [self.node_infos[n] for n in sorted(self.node_infos)]
        return self._node_list

    async def _schedule(self, key: str) -> None:
        pod = self.pods.cache.get(key)
        if pod is None or not _wants_us(pod, self.name) or key in self.assumed:
            return
        info = PodInfo(pod)
        nodes = self._nodes_in_order()
        max_feasible = num_feasible_nodes_to_find(len(nodes), self.percentage) if nodes else None
        result = schedule_one(info, nodes, filters=self._filters, scorers=self._scorers, rng=self.rng,
                              max_feasible=max_feasible, start=self._next_start)
        self._next_start = result.next_start
        if result.node is None:
            self._unschedulable(key, pod, result.message())
            return
        node = result.node
        self.assumed[key] = node
        self.node_infos[node].add_pod(_assumed_copy(pod, node, info))
        self.queue.forget(key)
        await self._binds.acquire()
        task = asyncio.create_task(self._bind(key, pod, node))
        self._bind_tasks.add(task)
        task.add_done_callback(self._bind_tasks.discard)

    async def _bind(self, key: str, pod: dict[str, Any], node: str) -> None:
        meta = pod["metadata"]
        try:
            await self.client.create("pods", {
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            }, namespace=meta["namespace"], subresource="binding", name=meta["name"])
            self.bound += 1
            log.info("bound pod=%s node=%s", key, node)
            self.recorder.event(pod, "Normal", "Scheduled", f"Successfully assigned {key} to {node}")
        except (NotFoundError, ConflictError) as e:
            # Deleted meanwhile, or already bound (by us, before a restart): nothing to undo
            # beyond our assumption, which the informer will correct.
            log.info("bind skipped pod=%s node=%s reason=%s", key, node, type(e).__name__)
            self._forget_assumed(key, pod, node)
        except Exception as e:  # noqa: BLE001 - any failure means: forget and retry later
            log.warning("bind failed pod=%s node=%s err=%s", key, node, e)
            self._forget_assumed(key, pod, node)
            self.queue.add_rate_limited(key)
        finally:
            self._binds.release()

    def _forget_assumed(self, key: str, pod: dict[str, Any], node: str) -> None:
        if self.assumed.get(key) == node:
            del self.assumed[key]
            info = self.node_infos.get(node)
            current = self.pods.cache.get(key)
            # Keep counting it if the informer already shows it bound there.
            if info is not None and not ((current or {}).get("spec") or {}).get("nodeName") == node:
                info.remove_pod(pod)

    def _unschedulable(self, key: str, pod: dict[str, Any], message: str) -> None:
        self.unschedulable.add(key)
        cond = next((c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == "PodScheduled"), None)
        if cond and cond.get("status") == "False" and cond.get("message") == message:
            return  # nothing new to say: no write, no event
        log.info("unschedulable pod=%s message=%r", key, message)
        self.recorder.event(pod, "Warning", "FailedScheduling", message)
        task = asyncio.create_task(self._set_condition(pod, message))
        self._bind_tasks.add(task)
        task.add_done_callback(self._bind_tasks.discard)

    async def _set_condition(self, pod: dict[str, Any], message: str) -> None:
        meta = pod["metadata"]
        patch = {"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                            "message": message, "lastProbeTime": None,
                                            "lastTransitionTime": _now()}]}}
        try:
            await self.client.patch("pods", meta["name"], patch, namespace=meta["namespace"], subresource="status",
                                    patch_type="strategic")
        except NotFoundError:
            pass
        except Exception as e:  # noqa: BLE001 - a status write is best effort; the retry rewrites it
            log.warning("status update failed pod=%s/%s err=%s", meta["namespace"], meta["name"], e)


def _conditions(node: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c.get("type", ""), c.get("status", "")) for c in (node.get("status") or {}).get("conditions") or []]


def _assumed_copy(pod: dict[str, Any], node: str, info: PodInfo) -> PodInfo:
    """The pod as it will be once bound; reuses ``info``'s parsed facts."""
    info.pod = {**pod, "spec": {**(pod.get("spec") or {}), "nodeName": node}}
    return info


async def run_scheduler(kubeconfig: str, *, stop: asyncio.Event | None = None) -> None:
    from kubepy.client import ClientConfig

    client = Client(ClientConfig.from_kubeconfig(kubeconfig), user_agent="kubepy-scheduler")
    scheduler = Scheduler(client)
    task = asyncio.create_task(scheduler.run())
    try:
        if stop is None:
            await task
        else:
            done, _ = await asyncio.wait({task, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
