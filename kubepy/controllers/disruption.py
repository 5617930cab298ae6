"""Disruption controller: the status of every PodDisruptionBudget.

Kubernetes' ``pkg/controller/disruption`` in miniature. For one budget it
counts the pods its selector picks, how many of them are healthy (Ready, not
being deleted, not just approved for eviction), how many are expected (the
scale of the pods' controllers: a Deployment through its ReplicaSet, a
ReplicaSet, a ReplicationController, a StatefulSet, or any kind with a
``scale`` subresource; or simply the pods there are, for an integer
``minAvailable``) and how many must stay healthy, and writes
``disruptionsAllowed`` with the ``DisruptionAllowed`` condition
(SufficientPods / InsufficientPods). The ``pods/eviction`` subresource of the
API server reads that number and decrements it, recording the pod in
``status.disruptedPods``; this controller keeps such a pod out of the healthy
count until it is seen going, or for at most ``DELETION_TIMEOUT``.

If a sync fails (a pod whose controller cannot be found), the budget is
closed: ``disruptionsAllowed: 0`` with the reason SyncFailed ("fail safe").
Status is written with the resourceVersion it was computed from, so an
eviction's concurrent decrement is never overwritten: a conflict requeues.

Handlers only enqueue budget keys (a pod maps to the budgets selecting it).
Reads the shared ``pods``, ``poddisruptionbudgets``, ``replicasets``,
``deployments``, ``replicationcontrollers`` (and ``statefulsets`` when served)
informers; other controllers' scale is read through the API. Not done:
clearing stale ``DisruptionTarget`` pod conditions (nothing sets them here).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubepy import kinds
from kubepy.client import ConflictError, NotFoundError, WorkQueue, object_key, run_workers
from kubepy.controllers.context import ControllerContext
from kubepy.controllers.ownership import controller_ref
from kubepy.controllers.pods import is_pod_ready, parse_time
from kubepy.kinds.policy.poddisruptionbudget import (
    CONDITION_DISRUPTION_ALLOWED,
    REASON_INSUFFICIENT_PODS,
    REASON_SUFFICIENT_PODS,
    REASON_SYNC_FAILED,
    disruption_allowed_condition,
    set_condition,
)
from kubepy.meta.selectors import label_selector_from_dict

log = logging.getLogger(__name__)

__all__ = [
    "DELETION_TIMEOUT",
    "DisruptionController",
    "SyncError",
    "build_disrupted_pods",
    "count_healthy",
    "desired_healthy",
    "fail_safe_status",
    "new_status",
    "scaled_value",
]

DELETION_TIMEOUT = timedelta(minutes=2)  # an approved eviction not seen as a deletion by then is forgotten


class SyncError(Exception):
    """A budget's status cannot be computed (its message goes into the SyncFailed condition)."""


# -- pure decisions ---------------------------------------------------------------
def scaled_value(value: Any, total: int, *, round_up: bool = True) -> int:
    """intstr.GetScaledValueFromIntOrPercent: an int as is, "N%" of ``total`` rounded up."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.endswith("%"):
        try:
            pct = int(value[:-1])
        except ValueError:
            raise SyncError(f"invalid value for IntOrString: invalid value {value!r}") from None
        exact = pct * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    raise SyncError("invalid value for IntOrString: invalid type: string is not a percentage")


def desired_healthy(spec: dict[str, Any], pod_count: int, expected_scale: Callable[[], int]) -> tuple[int, int]:
    """(expectedPods, desiredHealthy) for a budget's spec, as getExpectedPodCount.

    ``expected_scale()`` sums the scale of the pods' controllers; an integer
    minAvailable does not need it (the pods there are are the expected ones)."""
    if spec.get("maxUnavailable") is not None:
        expected = expected_scale()
        return expected, max(0, expected - scaled_value(spec["maxUnavailable"], expected))
    min_available = spec.get("minAvailable")
    if isinstance(min_available, int) and not isinstance(min_available, bool):
        return pod_count, min_available
    if min_available is not None:
        expected = expected_scale()
        return expected, scaled_value(min_available, expected)
    return 0, 0


def build_disrupted_pods(pods: Sequence[dict[str, Any]], disrupted: dict[str, str] | None,
                         now: datetime) -> tuple[dict[str, str], datetime | None, list[str]]:
    """The disruptedPods still pending, when to look again, and the pods whose eviction never came.

    An entry is kept while its pod exists, is not being deleted yet and was
    approved less than DELETION_TIMEOUT ago (buildDisruptedPodMap)."""
    disrupted = disrupted or {}
    kept: dict[str, str] = {}
    recheck: datetime | None = None
    expired: list[str] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        name = meta.get("name", "")
        if meta.get("deletionTimestamp") or name not in disrupted:
            continue
        approved = parse_time(disrupted[name])
        if approved is None:
            continue
        deadline = approved + DELETION_TIMEOUT
        if deadline < now:
            expired.append(name)
            continue
        kept[name] = disrupted[name]
        recheck = deadline if recheck is None or deadline < recheck else recheck
    return kept, recheck, expired


def count_healthy(pods: Sequence[dict[str, Any]], disrupted: dict[str, str], now: datetime) -> int:
    """Ready pods that are neither being deleted nor about to be (countHealthyPods)."""
    healthy = 0
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        approved = parse_time(disrupted.get(meta.get("name", "")))
        if approved is not None and approved + DELETION_TIMEOUT > now:
            continue
        if is_pod_ready(pod):
            healthy += 1
    return healthy


def _conditions_up_to_date(pdb: dict[str, Any]) -> bool:
    status = pdb.get("status") or {}
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == CONDITION_DISRUPTION_ALLOWED), None)
    if cond is None or int(status.get("observedGeneration") or 0) != int(pdb["metadata"].get("generation") or 0):
        return False
    if int(status.get("disruptionsAllowed") or 0) > 0:
        return cond.get("status") == "True" and cond.get("reason") == REASON_SUFFICIENT_PODS
    return cond.get("status") == "False" and cond.get("reason") == REASON_INSUFFICIENT_PODS


def new_status(pdb: dict[str, Any], *, current: int, desired: int, expected: int, disrupted: dict[str, str],
               now: datetime) -> dict[str, Any] | None:
    """The status to write (updatePdbStatus), or None when the stored one already says it."""
    allowed = current - desired
    if expected <= 0 or allowed <= 0:
        allowed = 0  # a budget that matches no pods yet must be safe when they appear
    old = pdb.get("status") or {}
    generation = int(pdb["metadata"].get("generation") or 0)
    if (int(old.get("currentHealthy") or 0), int(old.get("desiredHealthy") or 0), int(old.get("expectedPods") or 0),
            int(old.get("disruptionsAllowed") or 0), old.get("disruptedPods") or {},
            int(old.get("observedGeneration") or 0)) == (current, desired, expected, allowed, disrupted, generation) \
            and _conditions_up_to_date(pdb):
        return None
    status: dict[str, Any] = {"observedGeneration": generation}
    if disrupted:
        status["disruptedPods"] = dict(disrupted)
    status.update(disruptionsAllowed=allowed, currentHealthy=current, desiredHealthy=desired, expectedPods=expected,
                  conditions=old.get("conditions") or [])
    status["conditions"] = disruption_allowed_condition(status, now)
    return status


def fail_safe_status(pdb: dict[str, Any], message: str, now: datetime) -> dict[str, Any]:
    """No disruptions allowed, and why (failSafe)."""
    status = dict(pdb.get("status") or {})
    status["disruptionsAllowed"] = 0
    status["conditions"] = set_condition(status.get("conditions") or [], {
        "type": CONDITION_DISRUPTION_ALLOWED, "status": "False", "reason": REASON_SYNC_FAILED, "message": message,
        "observedGeneration": int(status.get("observedGeneration") or 0)}, now)
    return status


# -- the controller ---------------------------------------------------------------
@dataclass(frozen=True)
class _Scale:
    uid: str
    replicas: int


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


class DisruptionController:
    name = "disruption"

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.recorder = ctx.recorder
        self.queue = WorkQueue(name=self.name)
        self.pdb_informer = ctx.informers.informer("poddisruptionbudgets")
        self.pod_informer = ctx.informers.informer("pods")
        # The workload controllers whose caches say their scale; a kind not served yet is read through /scale.
        self.owner_informers = {plural: ctx.informers.informer(plural)
                                for plural in ("replicasets", "deployments", "replicationcontrollers", "statefulsets")
                                if any(k.plural == plural for k in kinds.all_kinds())}
        self.pdb_informer.add_handler(self._on_pdb, lambda old, new: self._on_pdb(new), self._on_pdb)
        self.pod_informer.add_handler(self._on_pod, lambda old, new: self._on_pod(new), self._on_pod)

    async def run(self) -> None:
        for informer in (self.pdb_informer, self.pod_informer, *self.owner_informers.values()):
            await informer.wait_synced()
        log.info("controller started name=%s", self.name)
        await run_workers(self.queue, self.reconcile, workers=self.ctx.config.concurrent_syncs, logger=log)

    # -- handlers: only enqueue -----------------------------------------------------
    def _on_pdb(self, pdb: dict[str, Any]) -> None:
        self.queue.add(object_key(pdb))

    def _on_pod(self, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        for pdb in self.pdb_informer.cache.by_index("namespace", meta.get("namespace", "")):
            try:
                selector = label_selector_from_dict((pdb.get("spec") or {}).get("selector"))
            except ValueError:
                continue
            if not selector.empty() and selector.matches(labels):
                self.queue.add(object_key(pdb))

    # -- reconcile --------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        pdb = self.pdb_informer.cache.get(key)
        if pdb is None:
            return
        now = datetime.now(UTC)
        try:
            await self._try_sync(key, pdb, now)
        except ConflictError:
            raise  # the eviction handler (or someone) wrote first: compute again from the new object
        except (SyncError, ValueError) as e:
            log.info("sync failed pdb=%s err=%s", key, e)
            await self._write_status(pdb, fail_safe_status(pdb, str(e), now))
            raise

    async def _try_sync(self, key: str, pdb: dict[str, Any], now: datetime) -> None:
        spec = pdb.get("spec") or {}
        selector = label_selector_from_dict(spec.get("selector"))
        pods = [p for p in self.pod_informer.cache.by_index("namespace", pdb["metadata"]["namespace"])
                if selector.matches((p.get("metadata") or {}).get("labels") or {})]
        if not pods:
            self.recorder.event(pdb, "Normal", "NoPods", "No matching pods found")
        unmanaged: list[str] = []
        scales: dict[str, int] = {}

        def expected_scale() -> int:
            return sum(scales.values())

        needs_scale = spec.get("maxUnavailable") is not None or isinstance(spec.get("minAvailable"), str)
        if needs_scale:
            try:
                for pod in pods:
                    ref = controller_ref(pod)
                    if ref is None:
                        unmanaged.append(pod["metadata"]["name"])
                        continue
                    if ref.get("uid") in scales:
                        continue
                    found = await self._controller_scale(ref, pod["metadata"]["namespace"])
                    if found is None:
                        raise SyncError(f'found no controllers for pod "{pod["metadata"]["name"]}"')
                    scales[found.uid] = found.replicas
            except SyncError as e:
                self.recorder.event(pdb, "Warning", "CalculateExpectedPodCountFailed",
                                    f"Failed to calculate the number of expected pods: {e}")
                raise
        expected, desired = desired_healthy(spec, len(pods), expected_scale)
        if unmanaged:
            self.recorder.event(pdb, "Warning", "UnmanagedPods", (
                f"Pods selected by this PodDisruptionBudget (selector: {selector}) were found to be unmanaged. "
                "As a result, the status of the PDB cannot be calculated correctly, which may result in undefined "
                "behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an "
                "integer value."))
        disrupted, recheck, expired = build_disrupted_pods(pods, (pdb.get("status") or {}).get("disruptedPods"), now)
        for name in expired:
            pod = next(p for p in pods if p["metadata"]["name"] == name)
            self.recorder.event(pod, "Warning", "NotDeleted",
                                f"Pod was expected by PDB {pdb['metadata']['namespace']}/{pdb['metadata']['name']} "
                                "to be deleted but it wasn't")
        current = count_healthy(pods, disrupted, now)
        status = new_status(pdb, current=current, desired=desired, expected=expected, disrupted=disrupted, now=now)
        if status is not None:
            log.info("status pdb=%s expected=%d healthy=%d desired=%d allowed=%d", key, expected, current, desired,
                     status["disruptionsAllowed"])
            await self._write_status(pdb, status)
        if recheck is not None:
            self.queue.add_after(key, max(0.0, (recheck - now).total_seconds()))

    async def _controller_scale(self, ref: dict[str, Any], namespace: str) -> _Scale | None:
        """The scale of the controller ``ref`` names (the finders of upstream's getExpectedScale)."""
        kind, group, name, uid = ref.get("kind"), _group(str(ref.get("apiVersion", ""))), ref.get("name"), ref.get("uid")

        def cached(plural: str, owner_name: Any) -> dict[str, Any] | None:
            informer = self.owner_informers.get(plural)
            return informer.cache.get(f"{namespace}/{owner_name}") if informer is not None else None

        def replicas(obj: dict[str, Any]) -> int:
            value = (obj.get("spec") or {}).get("replicas")
            return 1 if value is None else int(value)

        if kind == "ReplicaSet" and group in ("apps", "extensions") and "replicasets" in self.owner_informers:
            rs = cached("replicasets", name)
            if rs is None or rs["metadata"].get("uid") != uid:
                return None
            owner = controller_ref(rs)
            if owner is not None and owner.get("kind") == "Deployment":
                deployment = cached("deployments", owner.get("name"))
                if deployment is None or deployment["metadata"].get("uid") != owner.get("uid"):
                    return None
                return _Scale(str(owner["uid"]), replicas(deployment))
            return _Scale(str(uid), replicas(rs))
        plural = {("", "ReplicationController"): "replicationcontrollers",
                  ("apps", "StatefulSet"): "statefulsets"}.get((group, str(kind)))
        if plural in self.owner_informers:
            owner = cached(plural, name)
            return _Scale(str(uid), replicas(owner)) if owner and owner["metadata"].get("uid") == uid else None
        return await self._scale_subresource(kind, str(ref.get("apiVersion", "")), name, uid, namespace)

    async def _scale_subresource(self, kind: Any, api_version: str, name: Any, uid: Any,
                                 namespace: str) -> _Scale | None:
        k = kinds.by_api_version(api_version, str(kind))
        if k is None:
            raise SyncError(f"no matches for kind \"{kind}\" in version \"{api_version}\"")
        if "scale" not in k.subresources:
            raise SyncError(f"{k.qualified} does not implement the scale subresource")
        try:
            scale = await self.client.get(k.plural, str(name), namespace=namespace, subresource="scale")
        except NotFoundError:
            return None
        if scale["metadata"].get("uid") != uid:
            return None
        return _Scale(str(uid), int((scale.get("spec") or {}).get("replicas") or 0))

    async def _write_status(self, pdb: dict[str, Any], status: dict[str, Any]) -> None:
        # A PUT with the resourceVersion the status was computed from (UpdateStatus):
        # an eviction's decrement in between makes it a conflict, never a lost update.
        body = {**pdb, "status": status}
        try:
            await self.client.update("poddisruptionbudgets", body, subresource="status")
        except NotFoundError:
            return

