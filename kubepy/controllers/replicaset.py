"""ReplicaSet controller: keep ``spec.replicas`` pods of a template running.

Kubernetes' ``pkg/controller/replicaset`` in miniature. Informer handlers
only put "namespace/name" keys on the work queue (a pod maps to its
controlling ReplicaSet, an orphan pod to every ReplicaSet whose selector
matches it). ``reconcile(key)`` reads the caches, adopts matching orphans
and releases owned pods that no longer match, creates missing pods in
slow-start batches or deletes the extra ones that matter least, and writes
``status`` through the ``/status`` subresource when it changed.

``ControllerExpectations`` keep a ReplicaSet from acting twice before its
pod watch has caught up: after asking for N creates or deletes the
controller waits until the informer has shown them (or the expectations
timed out). Claiming, expectations, slow-start batches and pod
availability are the shared machinery of ``ownership``, ``expectations``,
``slowstart`` and ``pods``; what is left here is the ReplicaSet's own.

``ReplicationManager`` is the same controller for ReplicationControllers
(v1), whose selector is a plain label map: as upstream's ReplicationManager,
it differs only in what it owns and how it reads the selector.

Talks to the API server only through ``ControllerContext.client``; reads
only the shared ``pods`` and ``replicasets`` (or ``replicationcontrollers``)
informers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from kubepy.client import (
    APIStatusError,
    NotFoundError,
    WorkQueue,
    object_key,
    run_workers,
)
from kubepy.controllers.context import ControllerContext
from kubepy.controllers.expectations import ControllerExpectations
from kubepy.controllers.ownership import (
    ControllerRefManager,
    OwnerKind,
    controller_ref,
    owners_selecting,
    owners_to_sync_on_update,
    resolve_controller_ref,
    selector_of,
)
from kubepy.controllers.pods import (
    is_pod_active,
    is_pod_available,
    is_pod_ready,
    parse_time,
    pod_from_template,
    ready_condition,
    seconds_until_available,
)
from kubepy.controllers.slowstart import slow_start_batch
from kubepy.meta.selectors import LabelSelector, label_selector_from_dict

log = logging.getLogger(__name__)

__all__ = [
    "BURST_REPLICAS",
    "REPLICASET",
    "REPLICATIONCONTROLLER",
    "ReplicaSetController",
    "ReplicationManager",
    "calculate_status",
    "pod_deletion_order",
    "pods_to_delete",
]

BURST_REPLICAS = 500  # most pods created or deleted in one sync, as Kubernetes' --replicaset burst
REPLICASET = OwnerKind("apps/v1", "ReplicaSet", "replicasets")
REPLICATIONCONTROLLER = OwnerKind("v1", "ReplicationController", "replicationcontrollers")

REASON_SUCCESSFUL_CREATE = "SuccessfulCreate"
REASON_SUCCESSFUL_DELETE = "SuccessfulDelete"
REASON_FAILED_CREATE = "FailedCreate"
REASON_FAILED_DELETE = "FailedDelete"
CONDITION_REPLICA_FAILURE = "ReplicaFailure"
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"


# -- which pods to delete (pure) -------------------------------------------------
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def _deletion_cost(pod: dict[str, Any]) -> int:
    try:
        return int(((pod.get("metadata") or {}).get("annotations") or {}).get(DELETION_COST_ANNOTATION, 0))
    except (TypeError, ValueError):
        return 0


def _restarts(pod: dict[str, Any]) -> int:
    return sum(int(cs.get("restartCount") or 0) for cs in (pod.get("status") or {}).get("containerStatuses") or [])


def _timestamp(value: str | None) -> float:
    t = parse_time(value)
    return t.timestamp() if t else 0.0


def pod_deletion_order(pod: dict[str, Any], colocated: int = 0) -> tuple[Any, ...]:
    """Sort key: pods that sort first are deleted first (Kubernetes' ActivePodsWithRanks).

    unassigned < assigned; Pending < Unknown < Running; not ready < ready;
    lower deletion cost first; more pods of the same owner on its node
    first; ready more recently first; more restarts first; created more
    recently first."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    ready = is_pod_ready(pod)
    ready_since = _timestamp((ready_condition(pod) or {}).get("lastTransitionTime")) if ready else 0.0
    created = _timestamp((pod.get("metadata") or {}).get("creationTimestamp"))
    return (
        bool(spec.get("nodeName")),
        _PHASE_RANK.get(status.get("phase") or "Pending", 0),
        ready,
        _deletion_cost(pod),
        -colocated,
        -ready_since,
        -_restarts(pod),
        -created,
    )


def pods_to_delete(pods: Sequence[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The ``count`` pods whose loss hurts least."""
    if count >= len(pods):
        return list(pods)
    per_node: dict[str, int] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            per_node[node] = per_node.get(node, 0) + 1

    def key(pod: dict[str, Any]) -> tuple[Any, ...]:
        node = (pod.get("spec") or {}).get("nodeName")
        return pod_deletion_order(pod, per_node.get(node, 0) if node else 0)

    return sorted(pods, key=key)[:count]


def _labels_superset(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def calculate_status(rs: dict[str, Any], pods: Sequence[dict[str, Any]], manage_error: BaseException | None,
                     diff: int, now: datetime) -> dict[str, Any]:
    """The ReplicaSet's status from its active pods (and the last create/delete failure)."""
    spec = rs.get("spec") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    old = rs.get("status") or {}
    conditions = [dict(c) for c in old.get("conditions") or []]
    failure = next((c for c in conditions if c.get("type") == CONDITION_REPLICA_FAILURE), None)
    if manage_error is not None and failure is None:
        conditions.append({
            "type": CONDITION_REPLICA_FAILURE,
            "status": "True",
            "reason": REASON_FAILED_CREATE if diff < 0 else REASON_FAILED_DELETE,
            "message": str(manage_error),
            "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        })
    elif manage_error is None and failure is not None:
        conditions.remove(failure)
    status: dict[str, Any] = {
        "replicas": len(pods),
        "fullyLabeledReplicas": sum(1 for p in pods if _labels_superset(
            (p.get("metadata") or {}).get("labels") or {}, template_labels)),
        "readyReplicas": sum(1 for p in pods if is_pod_ready(p)),
        "availableReplicas": sum(1 for p in pods if is_pod_available(p, min_ready, now)),
        "observedGeneration": int((rs.get("metadata") or {}).get("generation") or 0),
    }
    if conditions:
        status["conditions"] = conditions
    return status


def _status_equal(old: dict[str, Any], new: dict[str, Any]) -> bool:
    keys = ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration")
    return all(int(old.get(k) or 0) == int(new.get(k) or 0) for k in keys) and \
        (old.get("conditions") or []) == (new.get("conditions") or [])


# -- the controller --------------------------------------------------------------
class ReplicaSetController:
    name = "replicaset"
    kind = REPLICASET  # what it owns; its pods' controller references name this kind

    @staticmethod
    def selector(owner: dict[str, Any]) -> LabelSelector:
        return selector_of(owner)

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.recorder = ctx.recorder
        self.queue = WorkQueue(name=self.name)
        self.expectations = ControllerExpectations()
        self.rs_informer = ctx.informers.informer(self.kind.resource)
        self.pod_informer = ctx.informers.informer("pods")
        self.rs_informer.add_handler(self._on_rs_add, self._on_rs_update, self._on_rs_delete)
        self.pod_informer.add_handler(self._on_pod_add, self._on_pod_update, self._on_pod_delete)

    async def run(self) -> None:
        await self.rs_informer.wait_synced()
        await self.pod_informer.wait_synced()
        log.info("controller started name=%s", self.name)
        await run_workers(self.queue, self.reconcile, workers=self.ctx.config.concurrent_syncs, logger=log)

    # -- handlers: only enqueue (and count what the expectations wait for) ----
    def _on_rs_add(self, rs: dict[str, Any]) -> None:
        self.queue.add(object_key(rs))

    def _on_rs_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.queue.add(object_key(new))

    def _on_rs_delete(self, rs: dict[str, Any]) -> None:
        key = object_key(rs)
        self.expectations.forget(key)
        self.queue.add(key)

    def _owner_key(self, pod: dict[str, Any], ref: dict[str, Any] | None) -> str | None:
        return resolve_controller_ref(pod, ref, self.kind, self.rs_informer.cache)

    def _enqueue_matching(self, pod: dict[str, Any]) -> None:
        for key in owners_selecting(pod, self.rs_informer.cache, selector=self.selector):
            self.queue.add(key)

    def _on_pod_add(self, pod: dict[str, Any]) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            # Restarted controller, or a pod deleted while we looked away:
            # it must not count as a creation.
            self._on_pod_delete(pod)
            return
        ref = controller_ref(pod)
        if ref is not None:
            key = self._owner_key(pod, ref)
            if key is not None:
                self.expectations.creation_observed(key)
                self.queue.add(key)
            return
        self._enqueue_matching(pod)

    def _on_pod_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
            return  # a periodic resync: nothing happened to this pod
        labels_changed = old["metadata"].get("labels") != new["metadata"].get("labels")
        if new["metadata"].get("deletionTimestamp"):
            # Graceful deletion: for us the pod is gone now.
            self._on_pod_delete(new)
            if labels_changed:
                self._on_pod_delete(old)
            return
        for key in owners_to_sync_on_update(old, new, self.kind, self.rs_informer.cache, selector=self.selector):
            self.queue.add(key)
        key = self._owner_key(new, controller_ref(new))
        if key is not None and not is_pod_ready(old) and is_pod_ready(new):
            rs = self.rs_informer.cache.get(key) or {}
            min_ready = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
            if min_ready > 0:
                self.queue.add_after(key, min_ready + 1)  # when it becomes available

    def _on_pod_delete(self, pod: dict[str, Any]) -> None:
        key = self._owner_key(pod, controller_ref(pod))
        if key is None:
            return
        self.expectations.deletion_observed(key, object_key(pod))
        self.queue.add(key)

    # -- reconcile ------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        rs = self.rs_informer.cache.get(key)
        if rs is None:
            self.expectations.forget(key)
            return
        namespace = rs["metadata"]["namespace"]
        needs_sync = self.expectations.satisfied(key) and not rs["metadata"].get("deletionTimestamp")
        candidates = [p for p in self.pod_informer.cache.by_index("namespace", namespace) if is_pod_active(p)]
        pods = await ControllerRefManager(self.client, rs, self.kind, resource="pods",
                                          selector=self.selector(rs)).claim(candidates)

        manage_error: BaseException | None = None
        diff = len(pods) - int(rs["spec"].get("replicas", 1))
        if needs_sync:
            manage_error, deleted = await self._manage_replicas(key, rs, pods)
            # Pods just deleted no longer count: a status that still showed them
            # available would let a Deployment scale down too far.
            pods = [p for p in pods if object_key(p) not in deleted]

        now = datetime.now(UTC)
        status = calculate_status(rs, pods, manage_error, diff, now)
        if not _status_equal(rs.get("status") or {}, status):
            await self._write_status(rs, status)
        if manage_error is not None:
            raise manage_error  # requeue with backoff
        min_ready = int(rs["spec"].get("minReadySeconds") or 0)
        waits = [w for p in pods if (w := seconds_until_available(p, min_ready, now)) is not None]
        if waits:
            self.queue.add_after(key, min(waits) + 0.1)

    async def _manage_replicas(self, key: str, rs: dict[str, Any], pods: list[dict[str, Any]]
                               ) -> tuple[BaseException | None, set[str]]:
        """Create or delete pods; (first error, keys of pods deleted)."""
        diff = len(pods) - int(rs["spec"].get("replicas", 1))
        if diff < 0:
            count = min(-diff, BURST_REPLICAS)
            # Expect them all before the first request: the informer may show
            # a new pod before create() returns.
            self.expectations.expect_creations(key, count)
            log.info("creating pods rs=%s need=%d", key, count)
            successes, error = await slow_start_batch(count, lambda: self._create_pod(rs))
            self.expectations.lower_creations(key, count - successes)  # never coming
            return error, set()
        if diff > 0:
            victims = pods_to_delete(pods, min(diff, BURST_REPLICAS))
            self.expectations.expect_deletions(key, [object_key(p) for p in victims])
            log.info("deleting pods rs=%s extra=%d", key, len(victims))
            results = await asyncio.gather(*(self._delete_pod(key, rs, p) for p in victims), return_exceptions=True)
            deleted = {object_key(p) for p, r in zip(victims, results, strict=True) if not isinstance(r, BaseException)}
            return next((r for r in results if isinstance(r, BaseException)), None), deleted
        return None, set()

    async def _create_pod(self, rs: dict[str, Any]) -> None:
        try:
            pod = await self.client.create("pods", pod_from_template(rs, self.kind), namespace=rs["metadata"]["namespace"])
        except APIStatusError as e:
            self.recorder.event(rs, "Warning", REASON_FAILED_CREATE, f"Error creating: {e}")
            raise
        self.recorder.event(rs, "Normal", REASON_SUCCESSFUL_CREATE, f"Created pod: {pod['metadata']['name']}")

    async def _delete_pod(self, key: str, rs: dict[str, Any], pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            await self.client.delete("pods", meta["name"], namespace=meta["namespace"],
                                     preconditions={"uid": meta["uid"]} if meta.get("uid") else None)
        except NotFoundError:
            self.expectations.deletion_observed(key, object_key(pod))  # already gone: no event will come
            return
        except APIStatusError as e:
            self.expectations.deletion_observed(key, object_key(pod))
            self.recorder.event(rs, "Warning", REASON_FAILED_DELETE, f"Error deleting: {e}")
            raise
        self.recorder.event(rs, "Normal", REASON_SUCCESSFUL_DELETE, f"Deleted pod: {meta['name']}")

    async def _write_status(self, rs: dict[str, Any], status: dict[str, Any]) -> None:
        body = dict(status)
        body.setdefault("conditions", None)  # merge patch: drop a cleared ReplicaFailure
        meta = rs["metadata"]
        try:
            await self.client.patch(self.kind.resource, meta["name"], {"status": body}, namespace=meta["namespace"],
                                    subresource="status")
        except NotFoundError:
            return


class ReplicationManager(ReplicaSetController):
    """The ReplicaSet controller for ReplicationControllers (upstream's ReplicationManager)."""

    name = "replicationcontroller"
    kind = REPLICATIONCONTROLLER

    @staticmethod
    def selector(owner: dict[str, Any]) -> LabelSelector:
        # A label map; an absent one selects nothing (validation never lets one in).
        labels = (owner.get("spec") or {}).get("selector")
        return label_selector_from_dict({"matchLabels": labels} if labels else None)

