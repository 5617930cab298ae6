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
import heapq
import itertools
import logging
import functools
import random
import subprocess
import sys
import time
from collections.abc import Callable, Container
from dataclasses import dataclass
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
from kubepy.meta.volumes import ANN_SELECTED_NODE, LOCAL_PATH_PROVISIONER
from kubepy.scheduler.listers import Listers
from kubepy.scheduler.metrics import SchedulerMetrics
from kubepy.scheduler import preemption
from kubepy.scheduler.config import SchedulerConfig, build_plugins, default_config
from kubepy.scheduler.framework import (
    NodeInfo,
    PodInfo,
    ScheduleResult,
    num_feasible_nodes_to_find,
    schedule_one,
)
from kubepy.scheduler.volumebinding import VolumeBinding, claim_progress, claims_to_bind, selected_node_claims

log = logging.getLogger(__name__)

DEFAULT_SCHEDULER = "default-scheduler"
UNSCHEDULABLE_FLUSH = 60.0
MAX_BINDS_IN_FLIGHT = 32
BIND_TIMEOUT = 600.0  # upstream VolumeBindingArgs.bindTimeoutSeconds


# numpy is tried in a child first: a numpy built for a newer CPU than this one dies of SIGILL on import
# (numpy 2 needs x86-64-v2; QEMU's default CPU, qemu64, as in emulated VMs, lacks it), which no except
# in this process could catch.
NUMPY_PROBE = (sys.executable, "-c", "import numpy")


@functools.lru_cache(maxsize=None)
def node_columns_available(probe: tuple[str, ...] = NUMPY_PROBE) -> tuple[bool, str]:
    """Whether the node columns (kubepy.scheduler.columns, on numpy) can load here, and if not, why."""
    try:
        done = subprocess.run(probe, stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"probe failed: {e}"
    if done.returncode == 0:
        return True, ""
    if done.returncode < 0:
        return False, f"importing numpy was killed by signal {-done.returncode}"
    said = done.stderr.decode(errors="replace").strip().splitlines()
    return False, f"importing numpy failed: {said[-1] if said else f'exit {done.returncode}'}"


def node_columns(probe: tuple[str, ...] = NUMPY_PROBE) -> Any:
    """A NodeColumns where numpy loads, else None: every node is then judged by the plugins in Python,
    with the same results, more slowly."""
    ok, why = node_columns_available(probe)
    if not ok:
        log.warning("node columns off reason=%r", why)
        return None
    from kubepy.scheduler.columns import NodeColumns

    log.info("node columns on")
    return NodeColumns()


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_terminated(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _profile_name(pod: dict[str, Any]) -> str:
    return (pod.get("spec") or {}).get("schedulerName") or DEFAULT_SCHEDULER


def _wants_us(pod: dict[str, Any], names: Container[str]) -> bool:
    spec = pod.get("spec") or {}
    return (not spec.get("nodeName") and not spec.get("schedulingGates")
            and _profile_name(pod) in names
            and not (pod.get("metadata") or {}).get("deletionTimestamp") and not _is_terminated(pod))


class _PreBindFailed(Exception):
    """The pod's claims will not be bound on the chosen node: schedule it again."""


class PriorityQueue(WorkQueue):
    """The scheduling queue: highest ``spec.priority`` first, then first come
    (kube-scheduler's PrioritySort). A key's priority is read when it is queued."""

    def __init__(self, priority: Callable[[str], int], **kw: Any) -> None:
        super().__init__(**kw)
        self._heap: list[tuple[int, int, str]] = []
        self._queue = self._heap  # type: ignore[assignment]  # len() and truthiness as before
        self._priority = priority
        self._seq = itertools.count()

    def _push(self, key: str) -> None:
        heapq.heappush(self._heap, (-self._priority(key), next(self._seq), key))

    def _pop(self) -> str:
        return heapq.heappop(self._heap)[2]


@dataclass
class _Profile:
    """One ``schedulerName``'s plugins, as the configuration made them."""

    name: str
    filters: list[Any]
    scorers: list[tuple[Any, int]]
    preemption: bool
    percentage: int
    recorder: EventRecorder


class Scheduler:
    def __init__(self, client: Client, *, name: str = DEFAULT_SCHEDULER, rng: random.Random | None = None,
                 percentage_of_nodes_to_score: int = 0, config: SchedulerConfig | None = None,
                 metrics: SchedulerMetrics | None = None) -> None:
        self.client = client
        self.metrics = metrics
        if config is None:
            config = default_config()
            config.profiles[0].scheduler_name = name
            config.percentage_of_nodes_to_score = percentage_of_nodes_to_score
        self.config = config
        self.name = config.profiles[0].scheduler_name
        self.rng = rng or random.Random()
        self.percentage = config.percentage_of_nodes_to_score
        self.nodes = Informer(client, "nodes")
        self.pods = Informer(client, "pods")
        self.node_infos: dict[str, NodeInfo] = {}
        self._node_list: list[NodeInfo] | None = None  # the order schedule_one walks, rebuilt on change
        self._columns = node_columns()  # the plain filters' and scorers' figures of _node_list, as arrays
        self._waiting_for_node: dict[str, dict[str, dict[str, Any]]] = {}  # node -> pod key -> pod
        self.pdbs = Informer(client, "poddisruptionbudgets")
        self.queue = PriorityQueue(self._priority_of, base_delay=config.pod_initial_backoff_seconds,
                                   max_delay=config.pod_max_backoff_seconds, name="scheduler")
        self.nominated: dict[str, str] = {}  # pod key -> node it preempted on, until it is bound or gone
        self.unschedulable: set[str] = set()
        self.gated: set[str] = set()  # pods of ours held back by spec.schedulingGates (scheduler_pending_pods)
        self.assumed: dict[str, str] = {}  # pod key -> node, until the informer shows the binding
        self._binds = asyncio.Semaphore(MAX_BINDS_IN_FLIGHT)
        self._bind_tasks: set[asyncio.Task[None]] = set()
        self._next_start = 0
        self.volume_informers = {r: Informer(client, r) for r in _VOLUME_RESOURCES}
        self.volume_listers = _VolumeListers(self.volume_informers)
        # Namespaces' labels and the workloads behind default spreading.
        self.listers = Listers.from_client(client)
        volume_binding = VolumeBinding(self.volume_listers, capacity_provisioners=frozenset({LOCAL_PATH_PROVISIONER}))
        self.profiles: dict[str, _Profile] = {}
        for prof in config.profiles:  # plugins hold no per-pod state
            filters, scorers = build_plugins(prof, listers=self.listers, volume_binding=volume_binding)
            percentage = (prof.percentage_of_nodes_to_score if prof.percentage_of_nodes_to_score is not None
                          else config.percentage_of_nodes_to_score)
            self.profiles[prof.scheduler_name] = _Profile(
                prof.scheduler_name, filters, scorers, prof.preemption, percentage,
                EventRecorder(client, component=prof.scheduler_name))
            log.info("scheduler profile name=%s filters=%s scores=%s preemption=%s percentage_of_nodes_to_score=%d",
                     prof.scheduler_name, ",".join(p.name for p in filters),
                     ",".join(f"{p.name}:{w}" for p, w in scorers), prof.preemption, percentage)
        for note in config.notes:
            log.info("scheduler config note=%r", note)
        first = self.profiles[self.name]
        self.recorder = first.recorder
        self._filters, self._scorers = first.filters, first.scorers
        self.bound = 0
        if metrics is not None:
            metrics.watch_pending(lambda: {"active": len(self.queue), "backoff": self.queue.num_delayed,
                                           "unschedulable": len(self.unschedulable), "gated": len(self.gated)})
        self.bind_timeout = BIND_TIMEOUT
        self.nodes.add_handler(self._node_added, self._node_updated, self._node_deleted)
        self.pods.add_handler(self._pod_added, self._pod_updated, self._pod_deleted)
        for resource, inf in self.volume_informers.items():
            inf.add_handler(lambda _o, r=resource: self._retry_unschedulable(f"{r} changed"),
                            lambda _o, _n, r=resource: self._retry_unschedulable(f"{r} changed"), None)

    def _priority_of(self, key: str) -> int:
        pod = self.pods.cache.get(key)
        return int(((pod or {}).get("spec") or {}).get("priority") or 0)

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

    def _track_gates(self, pod: dict[str, Any]) -> None:
        spec = pod.get("spec") or {}
        if spec.get("schedulingGates") and _wants_us({**pod, "spec": {**spec, "schedulingGates": None}},
                                                    self.profiles):
            self.gated.add(object_key(pod))
        else:
            self.gated.discard(object_key(pod))

    def _pod_added(self, pod: dict[str, Any]) -> None:
        self._track_gates(pod)
        if (pod.get("spec") or {}).get("nodeName"):
            self.assumed.pop(object_key(pod), None)
            if not _is_terminated(pod):
                self._account(pod)
                self._retry_waiting_for_peers()
        elif _wants_us(pod, self.profiles):
            self._note_nomination(pod)
            self.queue.add(object_key(pod))

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self._track_gates(new)
        key = object_key(new)
        if (new.get("spec") or {}).get("nodeName"):
            self.assumed.pop(key, None)
            self.nominated.pop(key, None)
            self.unschedulable.discard(key)
            if _is_terminated(new):
                self._unaccount(new)
                self._retry_unschedulable(f"pod {key} finished")
            else:
                self._account(new)
                if not (old.get("spec") or {}).get("nodeName"):
                    self._retry_waiting_for_peers()
        elif _wants_us(new, self.profiles):
            self._note_nomination(new)
            if key not in self.unschedulable and key not in self.assumed:
                self.queue.add(key)

    def _note_nomination(self, pod: dict[str, Any]) -> None:
        """A nomination survives a scheduler restart in ``status.nominatedNodeName``."""
        node = (pod.get("status") or {}).get("nominatedNodeName")
        if node:
            self.nominated[object_key(pod)] = node

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        key = object_key(pod)
        self.gated.discard(key)
        self.unschedulable.discard(key)
        self.nominated.pop(key, None)
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
                 asyncio.create_task(self.pdbs.run(), name="scheduler:pdbs"),
                 asyncio.create_task(self._flush_unschedulable(), name="scheduler:flush"),
                 asyncio.create_task(self.listers.run(), name="scheduler:listers"),
                 *(asyncio.create_task(inf.run(), name=f"scheduler:{r}") for r, inf in self.volume_informers.items())]
        try:
            await self.nodes.wait_synced()
            await self.pods.wait_synced()
            await self.listers.wait_synced()
            for inf in self.volume_informers.values():
                await inf.wait_synced()
            log.info("scheduler ready nodes=%d pods=%d", len(self.node_infos), len(self.pods.cache))
            while True:
                try:
                    key = await self.queue.get()
                except QueueShutdown:
                    return
                started = time.monotonic()
                result = "error"
                try:
                    result = await self._schedule(key)
                finally:
                    self.queue.done(key)
                    if self.metrics is not None and result is not None:
                        self.metrics.attempted(result, self._profile_of(key), time.monotonic() - started)
        finally:
            self.queue.shutdown()
            for t in [*tasks, *self._bind_tasks]:
                t.cancel()
            await asyncio.gather(*tasks, *self._bind_tasks, return_exceptions=True)
            for prof in self.profiles.values():
                await prof.recorder.stop()

    async def _flush_unschedulable(self) -> None:
        while True:
            await asyncio.sleep(UNSCHEDULABLE_FLUSH)
            self._retry_unschedulable("periodic flush")

    def _nodes_in_order(self) -> list[NodeInfo]:
        if self._node_list is None:
            self._node_list = [self.node_infos[n] for n in sorted(self.node_infos)]
        return self._node_list

    def _profile_of(self, key: str) -> str:
        pod = self.pods.cache.get(key)
        return _profile_name(pod) if pod is not None else self.name

    async def _schedule(self, key: str) -> str | None:
        """One attempt: "scheduled", "unschedulable", or None when the pod is not ours to schedule."""
        pod = self.pods.cache.get(key)
        if pod is None or not _wants_us(pod, self.profiles) or key in self.assumed:
            return None
        prof = self.profiles[_profile_name(pod)]
        info = PodInfo(pod)
        nodes = self._with_nominated(info, self._nodes_in_order())
        max_feasible = num_feasible_nodes_to_find(len(nodes), prof.percentage) if nodes else None
        result = schedule_one(info, nodes, filters=prof.filters, scorers=prof.scorers, rng=self.rng,
                              max_feasible=max_feasible, start=self._next_start,
                              columns=self._columns if nodes is self._node_list else None)
        self._next_start = result.next_start
        if result.node is None:
            self._unschedulable(key, pod, self._preempt(key, info, nodes, result, prof), prof)
            return "unschedulable"
        node = result.node
        why = result.why()
        log.info("scheduled pod=%s node=%s profile=%s %s", key, node, prof.name, why)
        self.assumed[key] = node
        self.nominated.pop(key, None)
        self.node_infos[node].add_pod(_assumed_copy(pod, node, info))
        self.queue.forget(key)
        await self._binds.acquire()
        task = asyncio.create_task(self._bind(key, pod, node, prof, why))
        self._bind_tasks.add(task)
        task.add_done_callback(self._bind_tasks.discard)
        return "scheduled"

    async def _select_node_for_claims(self, pod: dict[str, Any], node: str) -> None:
        """The provisioner's cue (VolumeBinding's PreBind): claims waiting for their first
        consumer learn the node it was put on."""
        ns = pod["metadata"]["namespace"]
        for name in selected_node_claims(pod, self.volume_listers):
            await self.client.patch("persistentvolumeclaims", name,
                                    {"metadata": {"annotations": {ANN_SELECTED_NODE: node}}}, namespace=ns)
            log.info("selected node claim=%s/%s node=%s", ns, name, node)

    def _with_nominated(self, pod: PodInfo, nodes: list[NodeInfo]) -> list[NodeInfo]:
        """Nodes as ``pod`` must see them: a pod of at least its priority that preempted
        on a node is counted there already (upstream's addNominatedPods)."""
        extra: dict[str, list[dict[str, Any]]] = {}
        for key, node in self.nominated.items():
            other = self.pods.cache.get(key)
            if other is None or key == pod.metadata.get("namespace", "") + "/" + pod.metadata.get("name", ""):
                continue
            if int((other.get("spec") or {}).get("priority") or 0) >= pod.priority:
                extra.setdefault(node, []).append(other)
        if not extra:
            return nodes
        out = []
        for info in nodes:
            if info.name in extra:
                info = info.clone()
                for other in extra[info.name]:
                    info.add_pod(other)
            out.append(info)
        return out

    def _preempt(self, key: str, pod: PodInfo, nodes: list[NodeInfo], result: ScheduleResult,
                 prof: _Profile) -> str:
        """DefaultPreemption: evict lower-priority pods so ``pod`` fits later. Returns the event message."""
        base = result.message()
        if result.num_nodes == 0:
            return base
        head = base.split(" preemption:")[0]
        if not prof.preemption:
            return head  # no PostFilter plugin: the filters' verdict is all there is to say
        why = preemption.eligible(pod, self.node_infos)
        if why is not None:
            return f"{head} preemption: {why}"
        cand, verdicts = preemption.find_candidate(pod, nodes, result.statuses, prof.filters,
                                                   self.pdbs.cache.list())
        if cand is None:
            return base
        self.nominated[key] = cand.node
        victims = ", ".join(f"{v.metadata.get('namespace')}/{v.metadata.get('name')}" for v in cand.victims)
        log.info("preempting pod=%s node=%s victims=%s pdb_violations=%d", key, cand.node, victims,
                 cand.pdb_violations)
        task = asyncio.create_task(self._evict_victims(key, pod, cand, prof))
        self._bind_tasks.add(task)
        task.add_done_callback(self._bind_tasks.discard)
        return head

    async def _evict_victims(self, key: str, pod: PodInfo, cand: preemption.Candidate, prof: _Profile) -> None:
        meta = pod.metadata
        try:
            await self.client.patch("pods", meta["name"], {"status": {"nominatedNodeName": cand.node}},
                                    namespace=meta["namespace"], subresource="status", patch_type="merge")
        except NotFoundError:
            return
        except Exception as e:  # noqa: BLE001 - the nomination is advisory; the eviction still goes ahead
            log.warning("nomination failed pod=%s node=%s err=%s", key, cand.node, e)
        for victim in cand.victims:
            vm = victim.metadata
            cond = {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                    "message": f"{prof.name}: preempting to accommodate a higher priority pod",
                    "lastTransitionTime": _now()}
            try:
                await self.client.patch("pods", vm["name"], {"status": {"conditions": [cond]}},
                                        namespace=vm["namespace"], subresource="status", patch_type="strategic")
                await self.client.delete("pods", vm["name"], namespace=vm["namespace"])
            except NotFoundError:
                continue
            except Exception as e:  # noqa: BLE001 - retried when the preemptor is tried again
                log.warning("preemption delete failed victim=%s/%s err=%s", vm["namespace"], vm["name"], e)
                continue
            log.info("preempted victim=%s/%s preemptor=%s node=%s", vm["namespace"], vm["name"], key, cand.node)
            prof.recorder.event(victim.pod, "Normal", "Preempted",
                                f"Preempted by pod {meta.get('uid', '')} on node {cand.node}")

    async def _wait_for_claims(self, key: str, pod: dict[str, Any], node: str, names: list[str]) -> None:
        """VolumeBinding's PreBind: the pod is bound only once its delayed claims are, so a
        provisioner that cannot serve the node (and drops the claim's selected-node) sends
        the pod back to be scheduled elsewhere instead of stranding it there."""
        ns = pod["metadata"]["namespace"]
        seen: set[str] = set()
        deadline = asyncio.get_running_loop().time() + self.bind_timeout
        while True:
            if self.pods.cache.get(key) is None:
                raise NotFoundError(f'pods "{pod["metadata"]["name"]}" not found')
            pending = []
            for name in names:
                claim = self.volume_listers.claim(ns, name)
                if ((claim or {}).get("metadata") or {}).get("annotations", {}).get(ANN_SELECTED_NODE) == node:
                    seen.add(name)
                state = claim_progress(claim, node, seen_selected=name in seen)
                if state == "waiting":
                    pending.append(name)
                elif state != "bound":
                    raise _PreBindFailed(f'claim "{ns}/{name}": {state}')
            if not pending:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise _PreBindFailed(f"timed out waiting for claims {', '.join(pending)} to be bound")
            await asyncio.sleep(0.1)

    async def _bind(self, key: str, pod: dict[str, Any], node: str, prof: _Profile, why: str) -> None:
        meta = pod["metadata"]
        try:
            waiting = claims_to_bind(pod, self.volume_listers)
            await self._select_node_for_claims(pod, node)
            if waiting:
                await self._wait_for_claims(key, pod, node, waiting)
            await self.client.create("pods", {
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            }, namespace=meta["namespace"], subresource="binding", name=meta["name"])
            self.bound += 1
            log.info("bound pod=%s node=%s", key, node)
            # Upstream's words, then why this node (its scores, the runner-up): the dashboard's source.
            prof.recorder.event(pod, "Normal", "Scheduled", f"Successfully assigned {key} to {node} ({why})")
        except _PreBindFailed as e:
            message = f'running PreBind plugin "VolumeBinding": binding volumes: {e}'
            log.info("bind aborted pod=%s node=%s reason=%r", key, node, message)
            prof.recorder.event(pod, "Warning", "FailedScheduling", message)
            self._forget_assumed(key, pod, node)
            self.queue.add_rate_limited(key)
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

    def _unschedulable(self, key: str, pod: dict[str, Any], message: str, prof: _Profile) -> None:
        self.unschedulable.add(key)
        cond = next((c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == "PodScheduled"), None)
        if cond and cond.get("status") == "False" and cond.get("message") == message:
            return  # nothing new to say: no write, no event
        log.info("unschedulable pod=%s message=%r", key, message)
        prof.recorder.event(pod, "Warning", "FailedScheduling", message)
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


_VOLUME_RESOURCES = ("persistentvolumeclaims", "persistentvolumes", "storageclasses", "csistoragecapacities")


class _VolumeListers:
    """VolumeBinding's view of the claims, volumes, classes and capacities (the informers' caches)."""

    def __init__(self, informers: dict[str, Informer]) -> None:
        self._inf = informers

    def claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._inf["persistentvolumeclaims"].cache.get(f"{namespace}/{name}")

    def volume(self, name: str) -> dict[str, Any] | None:
        return self._inf["persistentvolumes"].cache.get(name)

    def volumes(self) -> list[dict[str, Any]]:
        return self._inf["persistentvolumes"].cache.list()

    def storage_class(self, name: str) -> dict[str, Any] | None:
        return self._inf["storageclasses"].cache.get(name)

    def capacities(self) -> list[dict[str, Any]]:
        return self._inf["csistoragecapacities"].cache.list()


def _conditions(node: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c.get("type", ""), c.get("status", "")) for c in (node.get("status") or {}).get("conditions") or []]


def _assumed_copy(pod: dict[str, Any], node: str, info: PodInfo) -> PodInfo:
    """The pod as it will be once bound; reuses ``info``'s parsed facts."""
    info.pod = {**pod, "spec": {**(pod.get("spec") or {}), "nodeName": node}}
    return info


async def run_scheduler(kubeconfig: str, *, stop: asyncio.Event | None = None,
                        config: SchedulerConfig | None = None, metrics: SchedulerMetrics | None = None) -> None:
    from kubepy.client import ClientConfig

    from kubepy.client.leaderelection import run_leader_elected

    client = Client(ClientConfig.from_kubeconfig(kubeconfig), user_agent="kubepy-scheduler")

    async def lead() -> None:
        await Scheduler(client, config=config, metrics=metrics).run()

    task = asyncio.create_task(run_leader_elected(client, config.leader_election if config else None, lead))
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
