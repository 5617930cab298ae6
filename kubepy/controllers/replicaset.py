"""ReplicaSet controller: keep ``spec.replicas`` pods of a template running.

Kubernetes' ``pkg/controller/replicaset`` in miniature. Informer handlers
only put "namespace/name" keys on the work queue (a pod maps to its
controlling ReplicaSet, an orphan pod to every ReplicaSet whose selector
matches it). ``reconcile(key)`` reads the caches, adopts matching orphans
and releases owned pods that no longer match, creates missing pods in
slow-start batches or deletes the extra ones that matter least, and writes
``status`` through the ``/status`` subresource when it changed.

``Expectations`` keep a ReplicaSet from acting twice before its pod watch
has caught up: after asking for N creates or deletes the controller waits
until the informer has shown them (or ``EXPECTATIONS_TIMEOUT`` passed).

Talks to the API server only through ``ControllerContext.client``; reads
only the shared ``pods`` and ``replicasets`` informers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubepy.meta.selectors import LabelSelector, label_selector_from_dict
from kubepy.client import (
    APIStatusError,
    NotFoundError,
    WorkQueue,
    object_key,
    run_workers,
)
from kubepy.controllers.context import ControllerContext

log = logging.getLogger(__name__)

__all__ = [
    "BURST_REPLICAS",
    "EXPECTATIONS_TIMEOUT",
    "Expectations",
    "ReplicaSetController",
    "calculate_status",
    "controller_ref",
    "is_pod_active",
    "is_pod_available",
    "is_pod_ready",
    "pod_deletion_order",
    "pods_to_delete",
    "slow_start_batch",
]

BURST_REPLICAS = 500  # most pods created or deleted in one sync, as Kubernetes' --replicaset burst
EXPECTATIONS_TIMEOUT = 300.0  # seconds: a lost watch event must not stall a ReplicaSet forever

REASON_SUCCESSFUL_CREATE = "SuccessfulCreate"
REASON_SUCCESSFUL_DELETE = "SuccessfulDelete"
REASON_FAILED_CREATE = "FailedCreate"
REASON_FAILED_DELETE = "FailedDelete"
CONDITION_REPLICA_FAILURE = "ReplicaFailure"
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"


# -- pod facts (pure) ------------------------------------------------------------
def controller_ref(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _ready_condition(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond
    return None


def is_pod_active(pod: dict[str, Any]) -> bool:
    """Counts towards replicas: not finished and not being deleted."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not (pod.get("metadata") or {}).get("deletionTimestamp")


def is_pod_ready(pod: dict[str, Any]) -> bool:
    cond = _ready_condition(pod)
    return bool(cond and cond.get("status") == "True")


def is_pod_available(pod: dict[str, Any], min_ready_seconds: int, now: datetime) -> bool:
    """Ready for at least ``min_ready_seconds``."""
    if not is_pod_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = parse_time((_ready_condition(pod) or {}).get("lastTransitionTime"))
    return since is not None and (now - since).total_seconds() >= min_ready_seconds


def _seconds_until_available(pod: dict[str, Any], min_ready_seconds: int, now: datetime) -> float | None:
    if min_ready_seconds <= 0 or not is_pod_ready(pod) or is_pod_available(pod, min_ready_seconds, now):
        return None
    since = parse_time((_ready_condition(pod) or {}).get("lastTransitionTime"))
    if since is None:
        return float(min_ready_seconds)
    return max(0.0, min_ready_seconds - (now - since).total_seconds())


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
    ready_since = _timestamp((_ready_condition(pod) or {}).get("lastTransitionTime")) if ready else 0.0
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


async def slow_start_batch(count: int, fn: Callable[[], Awaitable[None]], *,
                           initial_batch: int = 1) -> tuple[int, BaseException | None]:
    """Call ``fn`` ``count`` times in batches of 1, 2, 4, …; stop after the
    first batch with a failure. Returns (successes, first error)."""
    remaining, successes = count, 0
    batch = min(remaining, initial_batch)
    while batch > 0:
        results = await asyncio.gather(*(fn() for _ in range(batch)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        successes += batch - len(errors)
        if errors:
            return successes, errors[0]
        remaining -= batch
        batch = min(2 * batch, remaining)
    return successes, None


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


# -- expectations ----------------------------------------------------------------
@dataclass
class _Expected:
    adds: int = 0
    deletes: set[str] = field(default_factory=set)  # pod keys: a pod's deletion counts once however seen
    since: float = field(default_factory=time.monotonic)


class Expectations:
    """Creates and deletes a controller asked for and has not yet seen in its cache."""

    def __init__(self, timeout: float = EXPECTATIONS_TIMEOUT) -> None:
        self.timeout = timeout
        self._pending: dict[str, _Expected] = {}

    def satisfied(self, key: str) -> bool:
        exp = self._pending.get(key)
        if exp is None:
            return True
        if exp.adds <= 0 and not exp.deletes:
            return True
        if time.monotonic() - exp.since > self.timeout:
            log.info("expectations timed out key=%s adds=%d deletes=%d", key, exp.adds, len(exp.deletes))
            return True
        return False

    def expect_creations(self, key: str, count: int) -> None:
        self._pending[key] = _Expected(adds=count)

    def expect_deletions(self, key: str, pod_keys: Sequence[str]) -> None:
        self._pending[key] = _Expected(deletes=set(pod_keys))

    def creation_observed(self, key: str) -> None:
        exp = self._pending.get(key)
        if exp is not None and exp.adds > 0:
            exp.adds -= 1

    def deletion_observed(self, key: str, pod_key: str) -> None:
        exp = self._pending.get(key)
        if exp is not None:
            exp.deletes.discard(pod_key)

    def forget(self, key: str) -> None:
        self._pending.pop(key, None)

    def pending(self, key: str) -> tuple[int, int]:
        exp = self._pending.get(key)
        return (exp.adds, len(exp.deletes)) if exp else (0, 0)


# -- the controller --------------------------------------------------------------
class ReplicaSetController:
    name = "replicaset"
    kind = "ReplicaSet"
    api_version = "apps/v1"

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.recorder = ctx.recorder
        self.queue = WorkQueue(name=self.name)
        self.expectations = Expectations()
        self.rs_informer = ctx.informers.informer("replicasets")
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
        """The key of the cached ReplicaSet ``ref`` names, if it is one and still that object."""
        if ref is None or ref.get("kind") != self.kind:
            return None
        key = f"{pod['metadata'].get('namespace')}/{ref.get('name')}"
        rs = self.rs_informer.cache.get(key)
        if rs is None or rs["metadata"].get("uid") != ref.get("uid"):
            return None
        return key

    def _enqueue_matching(self, pod: dict[str, Any]) -> None:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        for rs in self.rs_informer.cache.by_index("namespace", pod["metadata"].get("namespace", "")):
            if _selector(rs).matches(labels):
                self.queue.add(object_key(rs))

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
        old_ref, new_ref = controller_ref(old), controller_ref(new)
        ref_changed = (old_ref or {}).get("uid") != (new_ref or {}).get("uid")
        if ref_changed and old_ref is not None:
            old_key = self._owner_key(old, old_ref)
            if old_key is not None:
                self.queue.add(old_key)
        if new_ref is not None:
            key = self._owner_key(new, new_ref)
            if key is None:
                return
            self.queue.add(key)
            rs = self.rs_informer.cache.get(key) or {}
            min_ready = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
            if min_ready > 0 and not is_pod_ready(old) and is_pod_ready(new):
                self.queue.add_after(key, min_ready + 1)  # when it becomes available
            return
        if labels_changed or ref_changed:
            self._enqueue_matching(new)

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
        pods = await self._claim_pods(rs, candidates)

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
        waits = [w for p in pods if (w := _seconds_until_available(p, min_ready, now)) is not None]
        if waits:
            self.queue.add_after(key, min(waits) + 0.1)

    async def _claim_pods(self, rs: dict[str, Any], candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Pods this ReplicaSet controls after adopting matching orphans and
        releasing owned pods that no longer match."""
        selector = _selector(rs)
        uid = rs["metadata"]["uid"]
        rs_deleting = bool(rs["metadata"].get("deletionTimestamp"))
        claimed: list[dict[str, Any]] = []
        can_adopt: bool | None = None
        for pod in candidates:
            ref = controller_ref(pod)
            matches = selector.matches(pod["metadata"].get("labels") or {})
            if ref is not None:
                if ref.get("uid") != uid:
                    continue  # someone else's
                if matches:
                    claimed.append(pod)
                elif not rs_deleting:
                    await self._release(rs, pod)
                continue
            if not matches or rs_deleting:
                continue
            if can_adopt is None:
                can_adopt = await self._can_adopt(rs)
            if can_adopt and await self._adopt(rs, pod):
                claimed.append(pod)
        return claimed

    async def _can_adopt(self, rs: dict[str, Any]) -> bool:
        """A fresh read: never adopt for a ReplicaSet that is gone or going."""
        try:
            fresh = await self.client.get("replicasets", rs["metadata"]["name"], namespace=rs["metadata"]["namespace"])
        except NotFoundError:
            return False
        return fresh["metadata"].get("uid") == rs["metadata"]["uid"] and not fresh["metadata"].get("deletionTimestamp")

    def _owner_reference(self, rs: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": self.api_version, "kind": self.kind, "name": rs["metadata"]["name"],
                "uid": rs["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}

    async def _adopt(self, rs: dict[str, Any], pod: dict[str, Any]) -> bool:
        meta = pod["metadata"]
        # No resourceVersion precondition: the API server refuses a second
        # controller reference, so two adopters cannot both win.
        patch = {"metadata": {"ownerReferences": [self._owner_reference(rs)]}}
        try:
            await self.client.patch("pods", meta["name"], patch, namespace=meta["namespace"], patch_type="strategic")
        except NotFoundError:
            return False
        log.info("adopted pod rs=%s pod=%s", object_key(rs), meta["name"])
        return True

    async def _release(self, rs: dict[str, Any], pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        patch = {"metadata": {"ownerReferences": [{"$patch": "delete", "uid": rs["metadata"]["uid"]}]}}
        try:
            await self.client.patch("pods", meta["name"], patch, namespace=meta["namespace"], patch_type="strategic")
        except NotFoundError:
            return
        log.info("released pod rs=%s pod=%s", object_key(rs), meta["name"])

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
            for _ in range(count - successes):
                self.expectations.creation_observed(key)  # never coming
            return error, set()
        if diff > 0:
            victims = pods_to_delete(pods, min(diff, BURST_REPLICAS))
            self.expectations.expect_deletions(key, [object_key(p) for p in victims])
            log.info("deleting pods rs=%s extra=%d", key, len(victims))
            results = await asyncio.gather(*(self._delete_pod(key, rs, p) for p in victims), return_exceptions=True)
            deleted = {object_key(p) for p, r in zip(victims, results, strict=True) if not isinstance(r, BaseException)}
            return next((r for r in results if isinstance(r, BaseException)), None), deleted
        return None, set()

    def _pod_from_template(self, rs: dict[str, Any]) -> dict[str, Any]:
        template = rs["spec"].get("template") or {}
        tmeta = template.get("metadata") or {}
        meta: dict[str, Any] = {
            "generateName": f"{rs['metadata']['name']}-",
            "namespace": rs["metadata"]["namespace"],
            "labels": dict(tmeta.get("labels") or {}),
            "ownerReferences": [self._owner_reference(rs)],
        }
        if tmeta.get("annotations"):
            meta["annotations"] = dict(tmeta["annotations"])
        if tmeta.get("finalizers"):
            meta["finalizers"] = list(tmeta["finalizers"])
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec") or {}}

    async def _create_pod(self, rs: dict[str, Any]) -> None:
        try:
            pod = await self.client.create("pods", self._pod_from_template(rs), namespace=rs["metadata"]["namespace"])
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
            await self.client.patch("replicasets", meta["name"], {"status": body}, namespace=meta["namespace"],
                                    subresource="status")
        except NotFoundError:
            return


def _selector(rs: dict[str, Any]) -> LabelSelector:
    return label_selector_from_dict((rs.get("spec") or {}).get("selector"))

