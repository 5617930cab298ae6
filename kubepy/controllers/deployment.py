"""Deployment controller: roll a pod template out through ReplicaSets.

Kubernetes' ``pkg/controller/deployment`` in miniature. Each distinct pod
template gets its own ReplicaSet named ``<deployment>-<pod-template-hash>``
(the hash also goes into the ReplicaSet's selector and template labels,
hence into its pods). ``reconcile(key)`` claims the deployment's
ReplicaSets, finds the new one (same template, hash label ignored), and
moves replicas between them by the strategy:

* RollingUpdate - grow the new ReplicaSet while the total stays within
  ``replicas + maxSurge``; shrink old ones (unhealthy replicas first) while
  at least ``replicas - maxUnavailable`` stay available.
* Recreate - scale every old ReplicaSet to 0, wait until their pods are
  gone, then scale the new one up.

A paused deployment, or one whose ``replicas`` changed, is only scaled
(proportionally across its active ReplicaSets). Revisions live in the
``deployment.kubernetes.io/revision`` annotation (kubectl's rollout
history/undo read them); old ReplicaSets beyond ``revisionHistoryLimit``
are deleted. Status carries the Available and Progressing conditions
that ``kubectl rollout status`` reads.

The decisions are pure functions (hash, fenceposts, rolling steps,
proportions, status); the class only reads caches and writes through
``ControllerContext.client``. Reads the shared ``deployments``,
``replicasets`` and ``pods`` informers.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from kubepy.client import (
    AlreadyExistsError,
    NotFoundError,
    WorkQueue,
    object_key,
    run_workers,
)
from kubepy.controllers.context import ControllerContext
from kubepy.controllers.history import compute_hash, safe_encode  # the pod-template-hash
from kubepy.controllers.ownership import (
    ControllerRefManager,
    OwnerKind,
    controller_ref,
    owner_reference,
    owners_selecting,
    owners_to_sync_on_update,
    resolve_controller_ref,
    selector_of,
)
from kubepy.controllers.pods import parse_time

log = logging.getLogger(__name__)

__all__ = [
    "DeploymentController",
    "calculate_status",
    "compute_hash",
    "deployment_complete",
    "deployment_timed_out",
    "equal_ignore_hash",
    "max_surge",
    "max_unavailable",
    "new_rs_new_replicas",
    "plan_proportional_scale",
    "plan_rolling_scale_down",
    "resolve_fenceposts",
    "safe_encode",
    "scaled_value",
]

DEPLOYMENT = OwnerKind("apps/v1", "Deployment", "deployments")
HASH_LABEL = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
# Deployment annotations that are not copied onto its ReplicaSets.
SKIP_COPY_ANNOTATIONS = frozenset({REVISION_ANNOTATION, REVISION_HISTORY_ANNOTATION, DESIRED_REPLICAS_ANNOTATION,
                                   MAX_REPLICAS_ANNOTATION, LAST_APPLIED_ANNOTATION})

COND_AVAILABLE = "Available"
COND_PROGRESSING = "Progressing"
COND_REPLICA_FAILURE = "ReplicaFailure"
REASON_MIN_AVAILABLE = "MinimumReplicasAvailable"
REASON_MIN_UNAVAILABLE = "MinimumReplicasUnavailable"
REASON_NEW_RS_CREATED = "NewReplicaSetCreated"
REASON_FOUND_NEW_RS = "FoundNewReplicaSet"
REASON_RS_UPDATED = "ReplicaSetUpdated"
REASON_NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
REASON_TIMED_OUT = "ProgressDeadlineExceeded"
REASON_PAUSED = "DeploymentPaused"
REASON_RESUMED = "DeploymentResumed"
REASON_FAILED_RS_CREATE = "ReplicaSetCreateError"
REASON_SCALING = "ScalingReplicaSet"



def _without_hash(template: dict[str, Any] | None) -> dict[str, Any]:
    t = copy.deepcopy(template or {})
    labels = (t.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return t


def equal_ignore_hash(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return _without_hash(a) == _without_hash(b)


# -- fenceposts ----------------------------------------------------------------------
def scaled_value(value: int | str | None, total: int, *, round_up: bool) -> int:
    """An IntOrString: an int as is, "N%" of ``total`` rounded as asked."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not text.endswith("%"):
        return int(text)
    exact = int(text[:-1]) * total / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def _replicas(obj: dict[str, Any] | None) -> int:
    if obj is None:
        return 0
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def _is_rolling(d: dict[str, Any]) -> bool:
    return ((d.get("spec") or {}).get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"


def resolve_fenceposts(max_surge_value: int | str | None, max_unavailable_value: int | str | None,
                       desired: int) -> tuple[int, int]:
    """(surge, unavailable): surge rounds up, unavailable down; never both 0."""
    surge = scaled_value(max_surge_value, desired, round_up=True)
    unavailable = scaled_value(max_unavailable_value, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        # Validation forbids two zeros; rounding down can still make one.
        unavailable = 1
    return surge, unavailable


def _fenceposts(d: dict[str, Any]) -> tuple[int, int]:
    rolling = ((d.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    return resolve_fenceposts(rolling.get("maxSurge", "25%"), rolling.get("maxUnavailable", "25%"), _replicas(d))


def max_surge(d: dict[str, Any]) -> int:
    return _fenceposts(d)[0] if _is_rolling(d) else 0


def max_unavailable(d: dict[str, Any]) -> int:
    replicas = _replicas(d)
    if not _is_rolling(d) or replicas == 0:
        return 0
    return min(_fenceposts(d)[1], replicas)


# -- ReplicaSet arithmetic -------------------------------------------------------------
def _status(rs: dict[str, Any] | None, field: str) -> int:
    return int(((rs or {}).get("status") or {}).get(field) or 0)


def _sum_spec(rss: Sequence[dict[str, Any] | None]) -> int:
    return sum(_replicas(rs) for rs in rss if rs is not None)


def _sum_status(rss: Sequence[dict[str, Any] | None], field: str) -> int:
    return sum(_status(rs, field) for rs in rss if rs is not None)


def _available(rs: dict[str, Any]) -> int:
    """Available replicas, never more than the ReplicaSet is asked for: just
    after a scale-down its status still counts the pods it is deleting, and
    trusting that would let a rollout dip below its availability floor."""
    return min(_status(rs, "availableReplicas"), _replicas(rs))


def _active(rss: Sequence[dict[str, Any] | None]) -> list[dict[str, Any]]:
    return [rs for rs in rss if rs is not None and _replicas(rs) > 0]


def _created(rs: dict[str, Any]) -> tuple[str, str]:
    meta = rs.get("metadata") or {}
    return meta.get("creationTimestamp") or "", meta.get("name") or ""


def _revision(rs: dict[str, Any]) -> int:
    try:
        return int(((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION) or 0)
    except ValueError:
        return 0


def _int_annotation(rs: dict[str, Any], name: str) -> int | None:
    try:
        return int(((rs.get("metadata") or {}).get("annotations") or {})[name])
    except (KeyError, ValueError, TypeError):
        return None


def new_rs_new_replicas(d: dict[str, Any], all_rss: Sequence[dict[str, Any] | None], new_rs: dict[str, Any]) -> int:
    """How big the new ReplicaSet may be now."""
    replicas = _replicas(d)
    if not _is_rolling(d):
        return replicas
    current = _sum_spec(all_rss)
    max_total = replicas + max_surge(d)
    if current >= max_total:
        return _replicas(new_rs)
    scale_up = min(max_total - current, replicas - _replicas(new_rs))
    return _replicas(new_rs) + scale_up


def plan_rolling_scale_down(d: dict[str, Any], new_rs: dict[str, Any], old_rss: Sequence[dict[str, Any]]
                            ) -> list[tuple[dict[str, Any], int]]:
    """Old ReplicaSets to shrink in one step, as (rs, new replicas).

    First the unavailable replicas of old ReplicaSets (they serve nobody),
    then available ones while at least replicas - maxUnavailable stay."""
    old_rss = sorted(old_rss, key=_created)
    if _sum_spec(old_rss) == 0:
        return []
    all_rss = [*old_rss, new_rs]
    min_available = _replicas(d) - max_unavailable(d)
    new_unavailable = _replicas(new_rs) - _available(new_rs)
    budget = _sum_spec(all_rss) - min_available - new_unavailable
    if budget <= 0:
        return []
    sizes = {id(rs): _replicas(rs) for rs in old_rss}
    cleaned = 0
    for rs in old_rss:
        if cleaned >= budget:
            break
        unhealthy = sizes[id(rs)] - _available(rs)
        if sizes[id(rs)] == 0 or unhealthy <= 0:
            continue
        take = min(budget - cleaned, unhealthy)
        sizes[id(rs)] -= take
        cleaned += take
    # Available pods may go only down to min_available, counting the new RS's.
    available = sum(_available(rs) for rs in all_rss)
    to_scale = available - min_available
    scaled = 0
    if to_scale > 0:
        for rs in old_rss:
            if scaled >= to_scale:
                break
            if sizes[id(rs)] == 0:
                continue
            take = min(sizes[id(rs)], to_scale - scaled)
            sizes[id(rs)] -= take
            scaled += take
    return [(rs, sizes[id(rs)]) for rs in old_rss if sizes[id(rs)] != _replicas(rs)]


def plan_proportional_scale(d: dict[str, Any], new_rs: dict[str, Any] | None,
                            old_rss: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """Sizes after ``spec.replicas`` changed mid-rollout: the change shared
    among active ReplicaSets in proportion to their size (Kubernetes' scale())."""
    replicas = _replicas(d)
    newest_first = sorted(old_rss, key=_created, reverse=True)
    active = _active([*newest_first, new_rs])
    if (new_rs is not None or old_rss) and len(active) <= 1:
        # One active ReplicaSet (or none: then the newest) takes the whole change.
        target = active[0] if active else (new_rs if new_rs is not None else newest_first[0])
        return [] if _replicas(target) == replicas else [(target, replicas)]
    if new_rs is not None and _is_saturated(d, new_rs):
        return [(rs, 0) for rs in _active(old_rss)]
    if not _is_rolling(d) or not active:
        return []
    allowed = replicas + max_surge(d) if replicas > 0 else 0
    to_add = allowed - _sum_spec(active)
    if to_add == 0:
        return []
    if to_add > 0:  # bigger first, newer first on ties
        ordered = sorted(active, key=lambda rs: (-_replicas(rs), _neg_created(rs)))
    else:  # bigger first, older first on ties
        ordered = sorted(active, key=lambda rs: (-_replicas(rs), _created(rs)))
    added = 0
    sizes: dict[int, int] = {}
    for rs in ordered:
        proportion = _proportion(rs, d, to_add, added)
        sizes[id(rs)] = _replicas(rs) + proportion
        added += proportion
    if added != to_add:
        first = ordered[0]
        sizes[id(first)] = max(0, sizes[id(first)] + to_add - added)
    return [(rs, sizes[id(rs)]) for rs in ordered if sizes[id(rs)] != _replicas(rs)]


def _neg_created(rs: dict[str, Any]) -> tuple[float, str]:
    meta = rs.get("metadata") or {}
    ts = meta.get("creationTimestamp") or ""
    try:
        t = datetime.fromisoformat(ts).timestamp() if ts else 0.0
    except ValueError:
        t = 0.0
    return -t, meta.get("name") or ""


def _proportion(rs: dict[str, Any], d: dict[str, Any], to_add: int, added: int) -> int:
    if _replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = _fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def _fraction(rs: dict[str, Any], d: dict[str, Any]) -> int:
    if _replicas(d) == 0:
        return -_replicas(rs)
    total = _replicas(d) + max_surge(d)
    annotated = _int_annotation(rs, MAX_REPLICAS_ANNOTATION)
    if annotated is None:
        annotated = _status(d, "replicas")
    if not annotated:
        return 0
    exact = _replicas(rs) * total / annotated
    return math.floor(exact + 0.5) - _replicas(rs)  # Go's math.Round for non-negatives


def _is_saturated(d: dict[str, Any], rs: dict[str, Any]) -> bool:
    return (_int_annotation(rs, DESIRED_REPLICAS_ANNOTATION) == _replicas(d) and _replicas(rs) == _replicas(d)
            and _status(rs, "availableReplicas") == _replicas(d))


# -- status ---------------------------------------------------------------------------
def _now_str(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_condition(type_: str, status: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    ts = _now_str(now)
    return {"type": type_, "status": status, "lastUpdateTime": ts, "lastTransitionTime": ts,
            "reason": reason, "message": message}


def get_condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


def set_condition(status: dict[str, Any], cond: dict[str, Any]) -> None:
    """Kubernetes' SetDeploymentCondition: same status and reason is no change."""
    current = get_condition(status, cond["type"])
    if current is not None and current.get("status") == cond["status"] and current.get("reason") == cond["reason"]:
        return
    if current is not None and current.get("status") == cond["status"]:
        cond = {**cond, "lastTransitionTime": current.get("lastTransitionTime")}
    remove_condition(status, cond["type"])
    status.setdefault("conditions", []).append(cond)


def remove_condition(status: dict[str, Any], type_: str) -> None:
    conds = [c for c in status.get("conditions") or [] if c.get("type") != type_]
    if conds:
        status["conditions"] = conds
    else:
        status.pop("conditions", None)


def calculate_status(d: dict[str, Any], all_rss: Sequence[dict[str, Any] | None], new_rs: dict[str, Any] | None,
                     now: datetime) -> dict[str, Any]:
    available = _sum_status(all_rss, "availableReplicas")
    old = d.get("status") or {}
    status: dict[str, Any] = {
        "observedGeneration": int(d["metadata"].get("generation") or 0),
        "replicas": _sum_status(all_rss, "replicas"),
        "updatedReplicas": _status(new_rs, "replicas"),
        "readyReplicas": _sum_status(all_rss, "readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": max(0, _sum_spec(all_rss) - available),
    }
    if old.get("collisionCount") is not None:
        status["collisionCount"] = old["collisionCount"]
    if old.get("conditions"):
        status["conditions"] = copy.deepcopy(old["conditions"])
    if available >= _replicas(d) - max_unavailable(d):
        cond = new_condition(COND_AVAILABLE, "True", REASON_MIN_AVAILABLE, "Deployment has minimum availability.", now)
    else:
        cond = new_condition(COND_AVAILABLE, "False", REASON_MIN_UNAVAILABLE,
                             "Deployment does not have minimum availability.", now)
    set_condition(status, cond)
    return status


def deployment_complete(d: dict[str, Any], status: dict[str, Any]) -> bool:
    replicas = _replicas(d)
    return (int(status.get("updatedReplicas") or 0) == replicas and int(status.get("replicas") or 0) == replicas
            and int(status.get("availableReplicas") or 0) == replicas
            and int(status.get("observedGeneration") or 0) >= int(d["metadata"].get("generation") or 0))


def deployment_progressing(d: dict[str, Any], status: dict[str, Any]) -> bool:
    old = d.get("status") or {}

    def g(s: dict[str, Any], k: str) -> int:
        return int(s.get(k) or 0)

    return (g(status, "updatedReplicas") > g(old, "updatedReplicas")
            or g(status, "replicas") - g(status, "updatedReplicas") < g(old, "replicas") - g(old, "updatedReplicas")
            or g(status, "readyReplicas") > g(old, "readyReplicas")
            or g(status, "availableReplicas") > g(old, "availableReplicas"))


def _has_deadline(d: dict[str, Any]) -> bool:
    return (d.get("spec") or {}).get("progressDeadlineSeconds") is not None


def deployment_timed_out(d: dict[str, Any], status: dict[str, Any], now: datetime) -> bool:
    if not _has_deadline(d):
        return False
    cond = get_condition(status, COND_PROGRESSING)
    if cond is None or cond.get("reason") == REASON_NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == REASON_TIMED_OUT:
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    return since is not None and (now - since).total_seconds() > int(d["spec"]["progressDeadlineSeconds"])


def progress_check_after(d: dict[str, Any], status: dict[str, Any], now: datetime) -> float | None:
    """Seconds until the progress deadline of ``d`` passes, or None when there is nothing to check.

    Only a condition that can still time out is worth a check: a complete
    rollout (``NewReplicaSetAvailable``: scaling a stable Deployment keeps that
    reason), a paused or already timed-out one never will. Checking those was
    issue 11's livelock: the deadline of a long-stable Deployment had passed,
    it never timed out, and it was requeued at once, forever."""
    cond = get_condition(status, COND_PROGRESSING)
    if (not _has_deadline(d) or cond is None or deployment_complete(d, status)
            or cond.get("reason") in (REASON_TIMED_OUT, REASON_PAUSED, REASON_NEW_RS_AVAILABLE)):
        return None
    since = parse_time(cond.get("lastUpdateTime"))
    if since is None:
        return None
    return (since - now).total_seconds() + int(d["spec"]["progressDeadlineSeconds"])


# -- the controller -----------------------------------------------------------------
class DeploymentController:
    name = "deployment"

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.recorder = ctx.recorder
        self.queue = WorkQueue(name=self.name)
        self.d_informer = ctx.informers.informer("deployments")
        self.rs_informer = ctx.informers.informer("replicasets")
        self.pod_informer = ctx.informers.informer("pods")
        self.d_informer.add_handler(self._on_d_add, self._on_d_update, self._on_d_delete)
        self.rs_informer.add_handler(self._on_rs_add, self._on_rs_update, self._on_rs_delete)
        self.pod_informer.add_handler(None, None, self._on_pod_delete)
        # What we wrote last, per "resource:ns/name": our own writes must not
        # look stale to the next sync while the informers catch up.
        self._written: dict[str, dict[str, Any]] = {}

    async def run(self) -> None:
        for inf in (self.d_informer, self.rs_informer, self.pod_informer):
            await inf.wait_synced()
        log.info("controller started name=%s", self.name)
        await run_workers(self.queue, self.reconcile, workers=self.ctx.config.concurrent_syncs, logger=log)

    # -- handlers ---------------------------------------------------------------
    def _on_d_add(self, d: dict[str, Any]) -> None:
        self.queue.add(object_key(d))

    def _on_d_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.queue.add(object_key(new))

    def _on_d_delete(self, d: dict[str, Any]) -> None:
        self._written.pop(f"deployments:{object_key(d)}", None)
        self.queue.add(object_key(d))

    def _owner_key(self, obj: dict[str, Any], ref: dict[str, Any] | None) -> str | None:
        return resolve_controller_ref(obj, ref, DEPLOYMENT, self.d_informer.cache)

    def _on_rs_add(self, rs: dict[str, Any]) -> None:
        ref = controller_ref(rs)
        key = self._owner_key(rs, ref)
        if key is not None:
            self.queue.add(key)
        elif ref is None:
            for owner_key in owners_selecting(rs, self.d_informer.cache):
                self.queue.add(owner_key)

    def _on_rs_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
            return
        for key in owners_to_sync_on_update(old, new, DEPLOYMENT, self.d_informer.cache):
            self.queue.add(key)

    def _on_rs_delete(self, rs: dict[str, Any]) -> None:
        self._written.pop(f"replicasets:{object_key(rs)}", None)
        key = self._owner_key(rs, controller_ref(rs))
        if key is not None:
            self.queue.add(key)

    def _on_pod_delete(self, pod: dict[str, Any]) -> None:
        # Only Recreate waits for old pods to be gone before scaling up.
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.rs_informer.cache.get(f"{pod['metadata'].get('namespace')}/{ref.get('name')}")
        if rs is None:
            return
        key = self._owner_key(rs, controller_ref(rs))
        d = self.d_informer.cache.get(key) if key else None
        if d is not None and not _is_rolling(d):
            self.queue.add(key)  # type: ignore[arg-type]

    # -- reconcile ----------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        cached = self.d_informer.cache.get(key)
        if cached is None:
            return
        cached = self._fresh("deployments", cached)
        d = copy.deepcopy(cached)
        if selector_of(d).empty():
            self.recorder.event(d, "Warning", "SelectingAll",
                                "This deployment is selecting all pods. A non-empty selector is required.")
            return
        rss = await self._claim_replicasets(d)
        if d["metadata"].get("deletionTimestamp"):
            new_rs, old_rss = await self._get_all_rss(d, rss, create=False)
            await self._sync_status(d, [*old_rss, new_rs], new_rs)
            return
        await self._check_paused_conditions(d)
        if (d.get("spec") or {}).get("paused"):
            await self._sync(d, rss)
            return
        if await self._is_scaling_event(d, rss):
            await self._sync(d, rss)
            return
        if _is_rolling(d):
            await self._rollout_rolling(d, rss)
        else:
            await self._rollout_recreate(d, rss)

    async def _claim_replicasets(self, d: dict[str, Any]) -> list[dict[str, Any]]:
        rss = [self._fresh("replicasets", rs)
               for rs in self.rs_informer.cache.by_index("namespace", d["metadata"]["namespace"])]
        manager = ControllerRefManager(self.client, d, DEPLOYMENT, resource="replicasets",
                                       on_written=lambda rs: self._remember("replicasets", rs))
        return await manager.claim(rss)

    # -- read-your-writes ---------------------------------------------------------------
    def _remember(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        self._written[f"{resource}:{object_key(obj)}"] = obj
        return obj

    def _fresh(self, resource: str, cached: dict[str, Any]) -> dict[str, Any]:
        """The cached object, or what we wrote if the cache has not seen that yet."""
        key = f"{resource}:{object_key(cached)}"
        written = self._written.get(key)
        if written is None:
            return cached
        if written["metadata"].get("uid") != cached["metadata"].get("uid") or _rv(cached) >= _rv(written):
            del self._written[key]
            return cached
        return written

    # -- finding and creating the new ReplicaSet ----------------------------------
    async def _get_all_rss(self, d: dict[str, Any], rss: list[dict[str, Any]], *, create: bool
                           ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """(new RS or None, old RSs); syncs revision annotations on the way."""
        template = d["spec"]["template"]
        existing = next((rs for rs in sorted(rss, key=_created)
                         if equal_ignore_hash(rs["spec"].get("template"), template)), None)
        old_rss = [rs for rs in rss if rs is not existing]
        new_revision = str(max((_revision(rs) for rs in old_rss), default=0) + 1)
        if existing is not None:
            synced = await self._sync_existing_new_rs(d, existing, old_rss, new_revision)
            # Later steps of this sync must see what was just written.
            rss[rss.index(existing)] = synced
            return synced, old_rss
        if not create:
            return None, old_rss
        return await self._create_new_rs(d, old_rss, new_revision), old_rss

    async def _sync_existing_new_rs(self, d: dict[str, Any], rs: dict[str, Any], old_rss: list[dict[str, Any]],
                                    new_revision: str) -> dict[str, Any]:
        annotations = dict(rs["metadata"].get("annotations") or {})
        changed = _set_new_rs_annotations(d, annotations, new_revision, exists=True)
        min_ready = int(d["spec"].get("minReadySeconds") or 0)
        if changed or int(rs["spec"].get("minReadySeconds") or 0) != min_ready:
            # Only this controller writes these fields: no precondition needed.
            patch = {"metadata": {"annotations": annotations}, "spec": {"minReadySeconds": min_ready}}
            return self._remember("replicasets", await self.client.patch(
                "replicasets", rs["metadata"]["name"], patch, namespace=rs["metadata"]["namespace"]))
        await self._set_deployment_revision(d, annotations.get(REVISION_ANNOTATION, ""))
        if _has_deadline(d) and get_condition(d.setdefault("status", {}), COND_PROGRESSING) is None:
            set_condition(d["status"], new_condition(COND_PROGRESSING, "True", REASON_FOUND_NEW_RS,
                                                     f"Found new replica set \"{rs['metadata']['name']}\"",
                                                     datetime.now(UTC)))
            await self._write_status(d)
        return rs

    async def _create_new_rs(self, d: dict[str, Any], old_rss: list[dict[str, Any]],
                             new_revision: str) -> dict[str, Any]:
        meta = d["metadata"]
        collision = (d.get("status") or {}).get("collisionCount")
        template = copy.deepcopy(d["spec"]["template"])
        pod_hash = compute_hash(template, collision)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = copy.deepcopy(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        name = f"{meta['name']}-{pod_hash}"
        rs: dict[str, Any] = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": meta["namespace"], "labels": dict(template["metadata"]["labels"]),
                         "ownerReferences": [owner_reference(d, DEPLOYMENT)], "annotations": {}},
            "spec": {"replicas": 0, "minReadySeconds": int(d["spec"].get("minReadySeconds") or 0),
                     "selector": selector, "template": template},
        }
        rs["spec"]["replicas"] = new_rs_new_replicas(d, [*old_rss, rs], rs)
        _set_new_rs_annotations(d, rs["metadata"]["annotations"], new_revision, exists=False)
        try:
            created = await self.client.create("replicasets", rs, namespace=meta["namespace"])
        except AlreadyExistsError:
            try:
                found = await self.client.get("replicasets", name, namespace=meta["namespace"])
            except NotFoundError:
                raise RuntimeError(f"replica set {name} exists and does not") from None
            ref = controller_ref(found)
            if ref is not None and ref.get("uid") == meta["uid"] and equal_ignore_hash(
                    found["spec"].get("template"), d["spec"]["template"]):
                return found  # ours, from an earlier sync whose cache had not caught up
            # A hash collision: another template owns the name. Bump the count
            # so the next sync computes a different hash.
            d.setdefault("status", {})["collisionCount"] = int(collision or 0) + 1
            await self._write_status(d)
            raise RuntimeError(f"hash collision for replica set {name}; collisionCount now "
                               f"{d['status']['collisionCount']}") from None
        except Exception as e:
            now = datetime.now(UTC)
            status = d.setdefault("status", {})
            msg = f"Failed to create new replica set \"{name}\": {e}"
            if _has_deadline(d):
                set_condition(status, new_condition(COND_PROGRESSING, "False", REASON_FAILED_RS_CREATE, msg, now))
                await self._write_status(d)
            self.recorder.event(d, "Warning", REASON_FAILED_RS_CREATE, msg)
            raise
        replicas = _replicas(created)
        if replicas > 0:
            self.recorder.event(d, "Normal", REASON_SCALING, f"Scaled up replica set {name} from 0 to {replicas}")
        await self._set_deployment_revision(d, new_revision)
        if _has_deadline(d):
            set_condition(d.setdefault("status", {}), new_condition(
                COND_PROGRESSING, "True", REASON_NEW_RS_CREATED, f"Created new replica set \"{name}\"",
                datetime.now(UTC)))
            await self._write_status(d)
        return created

    async def _set_deployment_revision(self, d: dict[str, Any], revision: str) -> None:
        annotations = d["metadata"].get("annotations") or {}
        if not revision or annotations.get(REVISION_ANNOTATION) == revision:
            return
        updated = await self.client.patch("deployments", d["metadata"]["name"],
                                          {"metadata": {"annotations": {REVISION_ANNOTATION: revision}}},
                                          namespace=d["metadata"]["namespace"])
        self._remember("deployments", updated)
        d["metadata"] = updated["metadata"]

    # -- strategies ---------------------------------------------------------------
    async def _rollout_rolling(self, d: dict[str, Any], rss: list[dict[str, Any]]) -> None:
        new_rs, old_rss = await self._get_all_rss(d, rss, create=True)
        assert new_rs is not None
        all_rss = [*old_rss, new_rs]
        # Grow the new ReplicaSet first.
        replicas = _replicas(d)
        if _replicas(new_rs) != replicas:
            target = replicas if _replicas(new_rs) > replicas else new_rs_new_replicas(d, all_rss, new_rs)
            scaled, new_rs = await self._scale_rs(new_rs, target, d)
            if scaled:
                await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)
                return
        # Then shrink old ones within the availability budget.
        plan = plan_rolling_scale_down(d, new_rs, _active(old_rss))
        if plan:
            by_name = {rs["metadata"]["name"]: rs for rs in old_rss}
            for rs, size in plan:
                _, by_name[rs["metadata"]["name"]] = await self._scale_rs(rs, size, d)
            old_rss = list(by_name.values())
            await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)
            return
        if deployment_complete(d, d.get("status") or {}):
            await self._cleanup(d, old_rss)
        await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)

    async def _rollout_recreate(self, d: dict[str, Any], rss: list[dict[str, Any]]) -> None:
        new_rs, old_rss = await self._get_all_rss(d, rss, create=False)
        scaled_down = False
        updated_old: list[dict[str, Any]] = []
        for rs in old_rss:
            if _replicas(rs) != 0:
                changed, rs = await self._scale_rs(rs, 0, d)
                scaled_down = scaled_down or changed
            updated_old.append(rs)
        old_rss = updated_old
        if scaled_down or self._old_pods_running(d, new_rs, old_rss):
            await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)
            return
        if new_rs is None:
            new_rs, old_rss = await self._get_all_rss(d, [*old_rss], create=True)
            assert new_rs is not None
        _, new_rs = await self._scale_rs(new_rs, _replicas(d), d)
        if deployment_complete(d, d.get("status") or {}):
            await self._cleanup(d, old_rss)
        await self._sync_rollout_status(d, [*old_rss, new_rs], new_rs)

    def _old_pods_running(self, d: dict[str, Any], new_rs: dict[str, Any] | None,
                          old_rss: list[dict[str, Any]]) -> bool:
        if _sum_status(old_rss, "replicas") > 0:
            return True
        old_uids = {rs["metadata"]["uid"] for rs in old_rss}
        new_uid = (new_rs or {}).get("metadata", {}).get("uid")
        for pod in self.pod_informer.cache.by_index("namespace", d["metadata"]["namespace"]):
            ref = controller_ref(pod)
            if ref is None or ref.get("uid") == new_uid or ref.get("uid") not in old_uids:
                continue
            if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                return True
        return False

    # -- scaling, paused or not -----------------------------------------------------
    async def _is_scaling_event(self, d: dict[str, Any], rss: list[dict[str, Any]]) -> bool:
        new_rs, old_rss = await self._get_all_rss(d, rss, create=False)
        for rs in _active([*old_rss, new_rs]):
            desired = _int_annotation(rs, DESIRED_REPLICAS_ANNOTATION)
            if desired is not None and desired != _replicas(d):
                return True
        return False

    async def _sync(self, d: dict[str, Any], rss: list[dict[str, Any]]) -> None:
        """Scale only: no rollout (paused, or replicas changed)."""
        new_rs, old_rss = await self._get_all_rss(d, rss, create=False)
        updated = {id(rs): rs for rs in old_rss}
        for rs, size in plan_proportional_scale(d, new_rs, old_rss):
            _, fresh = await self._scale_rs(rs, size, d)
            if rs is new_rs:
                new_rs = fresh
            else:
                updated[id(rs)] = fresh
        old_rss = list(updated.values())
        # Replica annotations must follow spec.replicas even when no size changed,
        # or every later sync would look like a scaling event.
        for i, rs in enumerate(old_rss):
            if _replicas(rs) > 0:
                _, old_rss[i] = await self._scale_rs(rs, _replicas(rs), d)
        if new_rs is not None:
            _, new_rs = await self._scale_rs(new_rs, _replicas(new_rs), d)
        if (d.get("spec") or {}).get("paused"):
            await self._cleanup(d, old_rss)
        await self._sync_status(d, [*old_rss, new_rs], new_rs)

    async def _scale_rs(self, rs: dict[str, Any], size: int, d: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """(whether the size changed, the ReplicaSet as written)."""
        desired, most = _replicas(d), _replicas(d) + max_surge(d)
        annotations = (rs["metadata"].get("annotations") or {})
        needs_annotations = (annotations.get(DESIRED_REPLICAS_ANNOTATION) != str(desired)
                             or annotations.get(MAX_REPLICAS_ANNOTATION) != str(most))
        old_size = _replicas(rs)
        if old_size == size and not needs_annotations:
            return False, rs
        # The decision rests on spec.replicas: test exactly that, so the
        # ReplicaSet controller's status writes do not make us conflict.
        patch: list[dict[str, Any]] = [{"op": "test", "path": "/spec/replicas", "value": old_size},
                                       {"op": "replace", "path": "/spec/replicas", "value": size}]
        wanted = {DESIRED_REPLICAS_ANNOTATION: str(desired), MAX_REPLICAS_ANNOTATION: str(most)}
        if "annotations" in rs["metadata"]:
            patch += [{"op": "add", "path": f"/metadata/annotations/{_pointer(k)}", "value": v}
                      for k, v in wanted.items()]
        else:
            patch.append({"op": "add", "path": "/metadata/annotations", "value": wanted})
        updated = self._remember("replicasets", await self.client.patch(
            "replicasets", rs["metadata"]["name"], patch, namespace=rs["metadata"]["namespace"], patch_type="json"))
        if old_size != size:
            direction = "up" if size > old_size else "down"
            self.recorder.event(d, "Normal", REASON_SCALING,
                                f"Scaled {direction} replica set {rs['metadata']['name']} from {old_size} to {size}")
            log.info("scaled replica set deployment=%s rs=%s from=%d to=%d", object_key(d),
                     rs["metadata"]["name"], old_size, size)
        return old_size != size, updated

    async def _cleanup(self, d: dict[str, Any], old_rss: list[dict[str, Any]]) -> None:
        """Delete the oldest empty ReplicaSets beyond revisionHistoryLimit."""
        limit = (d.get("spec") or {}).get("revisionHistoryLimit")
        if limit is None:
            return
        alive = [rs for rs in old_rss if not rs["metadata"].get("deletionTimestamp")]
        excess = len(alive) - int(limit)
        if excess <= 0:
            return
        for rs in sorted(alive, key=lambda r: (_revision(r), _created(r)))[:excess]:
            meta = rs["metadata"]
            if (_status(rs, "replicas") != 0 or _replicas(rs) != 0
                    or int(meta.get("generation") or 0) > _status(rs, "observedGeneration")):
                continue
            log.info("deleting old replica set deployment=%s rs=%s", object_key(d), meta["name"])
            self._written.pop(f"replicasets:{object_key(rs)}", None)
            try:
                await self.client.delete("replicasets", meta["name"], namespace=meta["namespace"],
                                         preconditions={"uid": meta["uid"]})
            except NotFoundError:
                pass

    # -- status ------------------------------------------------------------------------
    async def _check_paused_conditions(self, d: dict[str, Any]) -> None:
        if not _has_deadline(d):
            return
        status = d.setdefault("status", {})
        cond = get_condition(status, COND_PROGRESSING)
        if cond is not None and cond.get("reason") == REASON_TIMED_OUT:
            return
        paused = bool(d["spec"].get("paused"))
        paused_cond = cond is not None and cond.get("reason") == REASON_PAUSED
        now = datetime.now(UTC)
        if paused and not paused_cond:
            set_condition(status, new_condition(COND_PROGRESSING, "Unknown", REASON_PAUSED,
                                                "Deployment is paused", now))
        elif not paused and paused_cond:
            set_condition(status, new_condition(COND_PROGRESSING, "Unknown", REASON_RESUMED,
                                                "Deployment is resumed", now))
        else:
            return
        await self._write_status(d)

    async def _sync_status(self, d: dict[str, Any], all_rss: list[dict[str, Any] | None],
                           new_rs: dict[str, Any] | None) -> None:
        status = calculate_status(d, all_rss, new_rs, datetime.now(UTC))
        if status != (d.get("status") or {}):
            d["status"] = status
            await self._write_status(d)

    async def _sync_rollout_status(self, d: dict[str, Any], all_rss: list[dict[str, Any] | None],
                                   new_rs: dict[str, Any] | None) -> None:
        now = datetime.now(UTC)
        status = calculate_status(d, all_rss, new_rs, now)
        if not _has_deadline(d):
            remove_condition(status, COND_PROGRESSING)
        current = get_condition(status, COND_PROGRESSING)
        complete_already = (status["replicas"] == status["updatedReplicas"] and current is not None
                            and current.get("reason") == REASON_NEW_RS_AVAILABLE)
        rs_name = (new_rs or {}).get("metadata", {}).get("name")
        if _has_deadline(d) and not complete_already:
            if deployment_complete(d, status):
                msg = (f"ReplicaSet \"{rs_name}\" has successfully progressed." if rs_name
                       else f"Deployment \"{d['metadata']['name']}\" has successfully progressed.")
                set_condition(status, new_condition(COND_PROGRESSING, "True", REASON_NEW_RS_AVAILABLE, msg, now))
            elif deployment_progressing(d, status):
                msg = (f"ReplicaSet \"{rs_name}\" is progressing." if rs_name
                       else f"Deployment \"{d['metadata']['name']}\" is progressing.")
                cond = new_condition(COND_PROGRESSING, "True", REASON_RS_UPDATED, msg, now)
                if current is not None:
                    if current.get("status") == "True":
                        cond["lastTransitionTime"] = current.get("lastTransitionTime")
                    remove_condition(status, COND_PROGRESSING)
                set_condition(status, cond)
            elif deployment_timed_out(d, status, now):
                msg = (f"ReplicaSet \"{rs_name}\" has timed out progressing." if rs_name
                       else f"Deployment \"{d['metadata']['name']}\" has timed out progressing.")
                set_condition(status, new_condition(COND_PROGRESSING, "False", REASON_TIMED_OUT, msg, now))
        failure = _replica_failure(all_rss, new_rs)
        if failure is not None:
            set_condition(status, failure)
        else:
            remove_condition(status, COND_REPLICA_FAILURE)
        if status != (d.get("status") or {}):
            d["status"] = status
            await self._write_status(d)
        self._requeue_stuck(d, status, now)

    def _requeue_stuck(self, d: dict[str, Any], status: dict[str, Any], now: datetime) -> None:
        """Come back when the progress deadline would pass."""
        after = progress_check_after(d, status, now)
        if after is None:
            return
        if after < 1.0:
            # Overdue: the next sync marks it timed out. Never "at once" (issue 11's livelock).
            self.queue.add_rate_limited(object_key(d))
        else:
            self.queue.add_after(object_key(d), after + 1.0)

    async def _write_status(self, d: dict[str, Any]) -> None:
        body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": dict(d["metadata"]), "spec": d["spec"],
                "status": d.get("status") or {}}
        try:
            updated = await self.client.update("deployments", body, subresource="status")
        except NotFoundError:
            return
        self._remember("deployments", updated)
        d["metadata"] = updated["metadata"]


def _replica_failure(all_rss: Sequence[dict[str, Any] | None], new_rs: dict[str, Any] | None
                     ) -> dict[str, Any] | None:
    ordered = [new_rs, *[rs for rs in all_rss if rs is not new_rs]]
    for rs in ordered:
        if rs is None:
            continue
        for cond in (rs.get("status") or {}).get("conditions") or []:
            if cond.get("type") == COND_REPLICA_FAILURE and cond.get("status") == "True":
                return {"type": COND_REPLICA_FAILURE, "status": "True",
                        "lastUpdateTime": cond.get("lastTransitionTime"),
                        "lastTransitionTime": cond.get("lastTransitionTime"),
                        "reason": cond.get("reason"), "message": cond.get("message")}
    return None


def _set_new_rs_annotations(d: dict[str, Any], annotations: dict[str, str], new_revision: str, *,
                            exists: bool) -> bool:
    """Copy the deployment's annotations, raise the revision; True when changed."""
    changed = False
    for k, v in ((d["metadata"].get("annotations")) or {}).items():
        if k not in SKIP_COPY_ANNOTATIONS and annotations.get(k) != v:
            annotations[k] = v
            changed = True
    old_revision = annotations.get(REVISION_ANNOTATION, "")
    try:
        old_int = int(old_revision) if old_revision else 0
    except ValueError:
        return changed
    if old_int < int(new_revision):
        annotations[REVISION_ANNOTATION] = new_revision
        changed = True
        if old_revision:
            history = [h for h in annotations.get(REVISION_HISTORY_ANNOTATION, "").split(",") if h]
            annotations[REVISION_HISTORY_ANNOTATION] = ",".join([*history, old_revision])
    if not exists:
        annotations[DESIRED_REPLICAS_ANNOTATION] = str(_replicas(d))
        annotations[MAX_REPLICAS_ANNOTATION] = str(_replicas(d) + max_surge(d))
        changed = True
    return changed


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0

