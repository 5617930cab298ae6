"""Job controller: run a Job's pods until enough succeed, or the Job fails.

Kubernetes' ``pkg/controller/job`` (and its ttl-after-finished controller) in
miniature. Handlers only enqueue the Job's "namespace/name". ``reconcile(key)``
reads the caches and:

1. claims the pods its selector matches (finished ones too: they are the
   Job's record of progress);
2. accounts for pods that finished, crash-safely, with the
   ``batch.kubernetes.io/job-tracking`` finalizer every pod is created with:
   their UIDs first go to ``status.uncountedTerminatedPods``, then their
   finalizers are removed, then they move into ``status.succeeded``/``failed``
   (and ``completedIndexes``/``failedIndexes``). So a count is never lost when
   a pod is deleted, and never made twice when the controller restarts;
3. applies the ``podFailurePolicy`` (FailJob, FailIndex, Ignore, Count) to
   each newly failed pod and ``backoffLimitPerIndex`` to its index;
4. decides whether the Job has succeeded (completions, or one success of a
   work-queue Job) or failed (backoffLimit, activeDeadlineSeconds, a FailJob
   rule, failed indexes) or met its ``successPolicy`` (Indexed): first the interim ``SuccessCriteriaMet`` /
   ``FailureTarget`` condition, then, once no pod is left running or
   terminating, ``Complete`` / ``Failed`` with the same reason and message;
5. otherwise keeps ``min(parallelism, what is left)`` pods running, Indexed
   pods each with their index (annotation, label, ``JOB_COMPLETION_INDEX``
   from the downward API, hostname ``NAME-INDEX``), retried after a failure
   only once the exponential back-off (10 s doubling, at most 6 min, from the
   newest failed pod's finish time; rebuilt from the pods after a restart) is over;
   suspends and resumes (``Suspended`` condition);
6. writes ``status`` through ``/status`` with the Job's resourceVersion, so a
   stale cache can never count twice (a conflict just requeues);
7. deletes a finished Job ``ttlSecondsAfterFinished`` after it finished.

Orphaned pods (their Job is gone) lose the tracking finalizer, so they can go.
Talks to the API server only through ``ControllerContext.client``; reads the
shared ``jobs`` and ``pods`` informers.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from kubepy.client import APIStatusError, ConflictError, NotFoundError, WorkQueue, object_key, run_workers
from kubepy.controllers.context import ControllerContext
from kubepy.controllers.expectations import ControllerExpectations
from kubepy.controllers.ownership import (
    ControllerRefManager,
    OwnerKind,
    controller_ref,
    owners_selecting,
    owners_to_sync_on_update,
    resolve_controller_ref,
)
from kubepy.controllers.pods import format_time, is_pod_ready, parse_time, pod_from_template
from kubepy.controllers.slowstart import slow_start_batch

log = logging.getLogger(__name__)

__all__ = [
    "JOB",
    "JobController",
    "TRACKING_FINALIZER",
    "backoff_delay",
    "backoff_from_pods",
    "finished_time",
    "match_success_policy",
    "next_backoff",
    "format_indexes",
    "match_pod_failure_policy",
    "parse_indexes",
]

JOB = OwnerKind("batch/v1", "Job", "jobs")
TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
INDEX_FAILURE_COUNT_ANNOTATION = "batch.kubernetes.io/job-index-failure-count"
INDEX_ENV = "JOB_COMPLETION_INDEX"

BACKOFF_BASE = 10.0       # seconds before the first retry (DefaultJobPodFailureBackOff)
BACKOFF_MAX = 360.0       # the back-off stops doubling at six minutes
BURST = 500               # most pods created or deleted in one sync

# Conditions, reasons and messages as Kubernetes writes them.
COMPLETE, FAILED, SUSPENDED = "Complete", "Failed", "Suspended"
FAILURE_TARGET, SUCCESS_CRITERIA_MET = "FailureTarget", "SuccessCriteriaMet"
REASON_BACKOFF_LIMIT = "BackoffLimitExceeded"
MSG_BACKOFF_LIMIT = "Job has reached the specified backoff limit"
REASON_DEADLINE = "DeadlineExceeded"
MSG_DEADLINE = "Job was active longer than specified deadline"
REASON_POD_FAILURE_POLICY = "PodFailurePolicy"
REASON_MAX_FAILED_INDEXES = "MaxFailedIndexesExceeded"
MSG_MAX_FAILED_INDEXES = "Job has exceeded the specified maximal number of failed indexes"
REASON_FAILED_INDEXES = "FailedIndexes"
MSG_FAILED_INDEXES = "Job has failed indexes"
REASON_SUCCESS_POLICY = "SuccessPolicy"
MSG_SUCCESS_POLICY = "Matched rules at index"
REASON_COMPLETIONS = "CompletionsReached"
MSG_COMPLETIONS = "Reached expected number of succeeded pods"
REASON_SUSPENDED, MSG_SUSPENDED = "JobSuspended", "Job suspended"
REASON_RESUMED, MSG_RESUMED = "JobResumed", "Job resumed"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _d(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


# -- pure decisions -----------------------------------------------------------------
def parse_indexes(text: str | None) -> set[int]:
    """"1,3-5" → {1, 3, 4, 5} (``status.completedIndexes`` / ``failedIndexes``)."""
    out: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def format_indexes(indexes: Iterable[int]) -> str:
    """{1, 3, 4, 5} → "1,3-5": sorted, consecutive runs as ranges."""
    runs: list[list[int]] = []
    for i in sorted(set(indexes)):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def backoff_delay(failures: int) -> float:
    """Seconds to wait before the next pod after ``failures`` failures in a row: 10 s, 20 s, 40 s, … ≤ 6 min."""
    if failures <= 0:
        return 0.0
    return min(BACKOFF_BASE * 2 ** (failures - 1), BACKOFF_MAX)


def _bounded_indexes(text: str, completions: int) -> set[int] | None:
    """Like ``parse_indexes`` but only indexes below ``completions``; None if ``text`` does not parse."""
    try:
        return {i for i in parse_indexes(text) if 0 <= i < completions}
    except ValueError:
        return None


def match_success_policy(job: dict[str, Any], succeeded: set[int]) -> str | None:
    """The message of the first ``successPolicy`` rule the succeeded indexes meet, or None (upstream's
    matchSuccessPolicy): a rule with ``succeededIndexes`` is met when all of them succeeded, or at least
    ``succeededCount`` of them; a rule with only ``succeededCount`` when that many indexes succeeded."""
    spec = _d(job.get("spec"))
    policy = spec.get("successPolicy")
    completions = spec.get("completions")
    if not isinstance(policy, dict) or not succeeded or not isinstance(completions, int):
        return None
    for i, rule in enumerate(policy.get("rules") or []):
        count = rule.get("succeededCount")
        if rule.get("succeededIndexes") is not None:
            required = _bounded_indexes(str(rule["succeededIndexes"]), completions)
            if not required:
                continue  # a rule that does not parse matches nothing
            contains = len(required & succeeded)
            if contains == len(required) or (count is not None and contains >= count):
                return f"{MSG_SUCCESS_POLICY} {i}"
        elif count is not None and len(succeeded) >= count:
            return f"{MSG_SUCCESS_POLICY} {i}"
    return None


def finished_time(pod: dict[str, Any]) -> datetime | None:
    """When a pod finished (upstream's getFinishedTime): the latest ``finishedAt`` if every container
    terminated, else the ``Ready=False`` transition, else ``deletionTimestamp`` less the grace period,
    else its creation."""
    status, meta = _d(pod.get("status")), pod["metadata"]
    latest: datetime | None = None
    for cs in status.get("containerStatuses") or []:
        when = parse_time(_d(_d(cs.get("state")).get("terminated")).get("finishedAt"))
        if when is None:
            latest = None
            break
        latest = when if latest is None or when > latest else latest
    if latest is not None:
        return latest
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready and ready.get("status") == "False" and parse_time(ready.get("lastTransitionTime")):
        return parse_time(ready.get("lastTransitionTime"))
    deleted = parse_time(meta.get("deletionTimestamp"))
    if deleted is not None:
        return deleted - timedelta(seconds=int(meta.get("deletionGracePeriodSeconds") or 0))
    return parse_time(meta.get("creationTimestamp"))


Backoff = tuple[int, datetime | None]   # failures since the last success, time of the last one


def _finished_at(pod: dict[str, Any], default: datetime) -> datetime:
    return finished_time(pod) or default


def next_backoff(prev: Backoff, succeeded: list[dict[str, Any]], failed: list[dict[str, Any]],
                 now: datetime) -> Backoff:
    """The back-off record after newly finished pods (upstream's newBackoffRecord): failures add up;
    a success starts the count again from the failures that finished after it."""
    if not failed:
        return (0, None) if succeeded else prev
    failed_at = sorted(_finished_at(p, now) for p in failed)
    if not succeeded:
        return prev[0] + len(failed_at), failed_at[-1]
    last_success = max(_finished_at(p, now) for p in succeeded)
    after = [t for t in failed_at if t > last_success]
    return (len(after), after[-1]) if after else (0, None)


def backoff_from_pods(status: dict[str, Any], succeeded: list[dict[str, Any]], failed: list[dict[str, Any]],
                      now: datetime) -> Backoff:
    """The back-off record a (re)started controller rebuilds from what it finds: ``succeeded``/``failed``
    are the Job's finished pods already counted (or recorded as uncounted).

    With no success yet, every failure so far is in a row: ``status.failed`` plus the uncounted failed
    UIDs (pods may be gone, the counter is not). After a success, the failed pods that finished after the
    newest one. The time is the newest failed pod's finish; with no failed pod left there is nothing to
    wait for."""
    uncounted = _d(status.get("uncountedTerminatedPods"))
    if not failed:
        return 0, None
    if int(status.get("succeeded") or 0) + len(uncounted.get("succeeded") or []) == 0:
        count = max(int(status.get("failed") or 0) + len(uncounted.get("failed") or []), len(failed))
        return count, max(_finished_at(p, now) for p in failed)
    return next_backoff((0, None), succeeded, failed, now) if succeeded else \
        (len(failed), max(_finished_at(p, now) for p in failed))


def _exit_code_matches(code: int, req: dict[str, Any]) -> bool:
    values = req.get("values") or []
    return code in values if req.get("operator") == "In" else code not in values


def match_pod_failure_policy(job: dict[str, Any], pod: dict[str, Any]) -> tuple[str, str] | None:
    """(action, message) of the first ``podFailurePolicy`` rule a failed pod matches, or None.

    An exit-code rule looks at terminated containers (init containers too)
    with a non-zero exit code; a condition rule at the pod's conditions."""
    rules = _d(_d(job.get("spec")).get("podFailurePolicy")).get("rules") or []
    meta, status = pod["metadata"], _d(pod.get("status"))
    containers = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    for i, rule in enumerate(rules):
        action = rule.get("action", "")
        req = rule.get("onExitCodes")
        if req is not None:
            for cs in containers:
                if req.get("containerName") not in (None, cs.get("name")):
                    continue
                term = _d(_d(cs.get("state")).get("terminated"))
                code = term.get("exitCode")
                if isinstance(code, int) and code != 0 and _exit_code_matches(code, req):
                    return action, (f"Container {cs.get('name')} for pod {meta.get('namespace')}/{meta.get('name')} "
                                    f"failed with exit code {code} matching {action} rule at index {i}")
            continue
        for pattern in rule.get("onPodConditions") or []:
            for cond in status.get("conditions") or []:
                if cond.get("type") == pattern.get("type") and cond.get("status") == pattern.get("status", "True"):
                    return action, (f"Pod {meta.get('namespace')}/{meta.get('name')} has condition "
                                    f"{cond.get('type')} matching {action} rule at index {i}")
    return None


def pod_index(pod: dict[str, Any]) -> int | None:
    value = _d(pod["metadata"].get("annotations")).get(INDEX_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _failure_count(pod: dict[str, Any]) -> int:
    try:
        return int(_d(pod["metadata"].get("annotations")).get(INDEX_FAILURE_COUNT_ANNOTATION) or 0)
    except ValueError:
        return 0


def find_condition(status: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == ctype), None)


def has_condition(status: dict[str, Any], ctype: str) -> bool:
    return (find_condition(status, ctype) or {}).get("status") == "True"


def set_condition(status: dict[str, Any], ctype: str, value: str, reason: str, message: str, now: datetime) -> bool:
    """Set a condition; True if anything changed (the transition time moves only with the status)."""
    conditions = status.setdefault("conditions", [])
    cond = find_condition(status, ctype)
    if cond is None:
        conditions.append({"type": ctype, "status": value, "lastProbeTime": format_time(now),
                           "lastTransitionTime": format_time(now), "reason": reason, "message": message})
        return True
    if (cond.get("status"), cond.get("reason"), cond.get("message")) == (value, reason, message):
        return False
    if cond.get("status") != value:
        cond["lastTransitionTime"] = format_time(now)
    cond.update(status=value, reason=reason, message=message, lastProbeTime=format_time(now))
    return True


def finished(job: dict[str, Any]) -> str | None:
    """"Complete" or "Failed" once the Job has that condition."""
    status = _d(job.get("status"))
    return next((c for c in (COMPLETE, FAILED) if has_condition(status, c)), None)


def _is_failed(pod: dict[str, Any], job_spec: dict[str, Any], now: datetime) -> bool:
    """A pod that counts as failed: phase Failed, or deleted before it succeeded (upstream's isPodFailed).

    With ``podReplacementPolicy: Failed`` a deleted pod counts once it has had its grace period."""
    status, meta = _d(pod.get("status")), pod["metadata"]
    if status.get("phase") == "Failed":
        return True
    if not meta.get("deletionTimestamp") or status.get("phase") == "Succeeded":
        return False
    if job_spec.get("podReplacementPolicy") == "Failed":
        when = parse_time(meta.get("deletionTimestamp"))
        return when is not None and when <= now
    return True


def _is_active(pod: dict[str, Any]) -> bool:
    return _d(pod.get("status")).get("phase") not in ("Succeeded", "Failed") \
        and not pod["metadata"].get("deletionTimestamp")


def _is_terminating(pod: dict[str, Any]) -> bool:
    return _d(pod.get("status")).get("phase") not in ("Succeeded", "Failed") \
        and bool(pod["metadata"].get("deletionTimestamp"))


def _restarts(pod: dict[str, Any]) -> int:
    status = _d(pod.get("status"))
    return sum(int(cs.get("restartCount") or 0)
               for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []))


# -- the controller ------------------------------------------------------------------
class JobController:
    name = "job"

    def __init__(self, ctx: ControllerContext, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.recorder = ctx.recorder
        self.clock = clock
        self.queue = WorkQueue(name=self.name)
        self.expectations = ControllerExpectations()
        self.job_informer = ctx.informers.informer("jobs")
        self.pod_informer = ctx.informers.informer("pods")
        self.job_informer.add_handler(self._on_job_add, self._on_job_update, self._on_job_delete)
        self.pod_informer.add_handler(self._on_pod_add, self._on_pod_update, self._on_pod_delete)
        self._written: dict[str, dict[str, Any]] = {}      # our last status write, newer than the cache may be
        self._unfinalized: dict[str, set[str]] = {}        # pod UIDs whose finalizer we removed, per Job
        self._deleted: dict[str, set[str]] = {}            # pod UIDs we deleted ourselves (not failures)
        self._backoff: dict[str, Backoff] = {}             # failures in a row, time of the last one

    async def run(self) -> None:
        await self.job_informer.wait_synced()
        await self.pod_informer.wait_synced()
        log.info("controller started name=%s", self.name)
        await run_workers(self.queue, self.reconcile, workers=self.ctx.config.concurrent_syncs, logger=log)

    # -- handlers: only enqueue ---------------------------------------------------
    def _on_job_add(self, job: dict[str, Any]) -> None:
        self.queue.add(object_key(job))

    def _on_job_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.queue.add(object_key(new))

    def _on_job_delete(self, job: dict[str, Any]) -> None:
        key = object_key(job)
        self.expectations.forget(key)
        for store in (self._written, self._unfinalized, self._deleted, self._backoff):
            store.pop(key, None)
        self.queue.add(key)
        # Its pods may still hold the tracking finalizer: release them.
        for pod in self.pod_informer.cache.by_index("namespace", job["metadata"].get("namespace", "")):
            ref = controller_ref(pod)
            if ref and ref.get("uid") == job["metadata"].get("uid") and self._has_finalizer(pod):
                self.queue.add(f"orphan:{object_key(pod)}")

    def _owner_key(self, pod: dict[str, Any]) -> str | None:
        return resolve_controller_ref(pod, controller_ref(pod), JOB, self.job_informer.cache)

    @staticmethod
    def _has_finalizer(pod: dict[str, Any]) -> bool:
        return TRACKING_FINALIZER in (pod["metadata"].get("finalizers") or [])

    def _orphan_check(self, pod: dict[str, Any]) -> None:
        ref = controller_ref(pod)
        if self._has_finalizer(pod) and (ref is None or ref.get("kind") == "Job") and self._owner_key(pod) is None:
            self.queue.add(f"orphan:{object_key(pod)}")

    def _on_pod_add(self, pod: dict[str, Any]) -> None:
        key = self._owner_key(pod)
        if key is not None:
            if not pod["metadata"].get("deletionTimestamp"):
                self.expectations.creation_observed(key)
            self.queue.add(key)
            return
        self._orphan_check(pod)
        if controller_ref(pod) is None:
            for k in owners_selecting(pod, self.job_informer.cache):
                self.queue.add(k)

    def _on_pod_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
            return
        for key in owners_to_sync_on_update(old, new, JOB, self.job_informer.cache):
            if new["metadata"].get("deletionTimestamp") and not old["metadata"].get("deletionTimestamp"):
                self.expectations.deletion_observed(key, object_key(new))
            self.queue.add(key)
        if self._owner_key(new) is None:
            self._orphan_check(new)

    def _on_pod_delete(self, pod: dict[str, Any]) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.deletion_observed(key, object_key(pod))
            self.queue.add(key)

    # -- reconcile --------------------------------------------------------------------
    def _current(self, key: str) -> dict[str, Any] | None:
        """The cached Job, or our own newer write of it (read-your-writes for status)."""
        cached = self.job_informer.cache.get(key)
        written = self._written.get(key)
        if cached is None or written is None:
            return cached
        if written["metadata"].get("uid") != cached["metadata"].get("uid"):
            return cached
        try:
            newer = int(written["metadata"]["resourceVersion"]) > int(cached["metadata"]["resourceVersion"])
        except (KeyError, ValueError):
            newer = False
        return written if newer else cached

    async def reconcile(self, key: str) -> None:
        if key.startswith("orphan:"):
            await self._release_orphan(key.removeprefix("orphan:"))
            return
        job = self._current(key)
        if job is None:
            self.expectations.forget(key)
            return
        now = self.clock()
        namespace = job["metadata"]["namespace"]
        candidates = self.pod_informer.cache.by_index("namespace", namespace)
        pods = await ControllerRefManager(self.client, job, JOB, resource="pods").claim(candidates)
        sync = _Sync(self, key, copy.deepcopy(job), pods, now)
        await sync.run()

    async def _release_orphan(self, pod_key: str) -> None:
        pod = self.pod_informer.cache.get(pod_key)
        if pod is None or not self._has_finalizer(pod) or self._owner_key(pod) is not None:
            return
        await self._remove_finalizer(pod)

    async def _remove_finalizer(self, pod: dict[str, Any]) -> bool:
        """True once the pod no longer holds the tracking finalizer (or is gone)."""
        meta = pod["metadata"]
        finalizers = [f for f in meta.get("finalizers") or [] if f != TRACKING_FINALIZER]
        try:
            await self.client.patch("pods", meta["name"], {"metadata": {"finalizers": finalizers or None,
                                                                        "resourceVersion": meta.get("resourceVersion")}},
                                    namespace=meta["namespace"])
        except NotFoundError:
            return True
        except ConflictError:
            # Someone else wrote the pod: read it again and try once more.
            try:
                fresh = await self.client.get("pods", meta["name"], namespace=meta["namespace"])
            except NotFoundError:
                return True
            if TRACKING_FINALIZER not in (fresh["metadata"].get("finalizers") or []):
                return True
            return await self._remove_finalizer(fresh)
        log.info("removed tracking finalizer pod=%s/%s", meta["namespace"], meta["name"])
        return True


class _Sync:
    """One reconcile of one Job (state that lives only for it)."""

    def __init__(self, ctrl: JobController, key: str, job: dict[str, Any], pods: list[dict[str, Any]],
                 now: datetime) -> None:
        self.ctrl, self.key, self.job, self.pods, self.now = ctrl, key, job, pods, now
        self.spec = _d(job.get("spec"))
        self.original_status = copy.deepcopy(_d(job.get("status")))
        self.status = job.setdefault("status", {})
        self.indexed = self.spec.get("completionMode") == "Indexed"
        self.completions = self.spec.get("completions")
        self.per_index = self.spec.get("backoffLimitPerIndex")
        self.requeue: list[float] = []

    # -- the steps ------------------------------------------------------------------------
    async def run(self) -> None:
        ctrl = self.ctrl
        if finished(self.job):
            await self._release_finished()
            await self._write_status()
            await self._ttl()
            return
        if self.job["metadata"].get("deletionTimestamp"):
            # Being deleted: let its pods go (the garbage collector deletes them).
            await self._release(p for p in self.pods if ctrl._has_finalizer(p))
            return
        await self._track_finished_pods()
        if self.status.get("startTime") is None and not self.spec.get("suspend"):
            self.status["startTime"] = format_time(self.now)
        self._decide()
        manage_error: BaseException | None = None
        if has_condition(self.status, FAILURE_TARGET) or has_condition(self.status, SUCCESS_CRITERIA_MET):
            await self._delete(self._active(), reason="finishing")
            self._finish_when_no_pods_left()
        elif self.spec.get("suspend"):
            await self._suspend()
        else:
            self._resume()
            if ctrl.expectations.satisfied(self.key):
                manage_error = await self._manage()
        self._count_pods()
        await self._write_status()
        if finished(self.job):
            await self._release_finished()
            await self._write_status()
            await self._ttl()
        if self.requeue:
            ctrl.queue.add_after(self.key, max(0.05, min(self.requeue)))
        if manage_error is not None:
            raise manage_error

    # -- pods by state --------------------------------------------------------------------
    def _active(self) -> list[dict[str, Any]]:
        return [p for p in self.pods if _is_active(p)]

    def _deleted_by_us(self, pod: dict[str, Any]) -> bool:
        return pod["metadata"].get("uid") in self.ctrl._deleted.get(self.key, set())

    # -- 2, 3: counting finished pods through the finalizer ------------------------------------
    async def _track_finished_pods(self) -> None:
        ctrl, spec = self.ctrl, self.spec
        uncounted = self.status.setdefault("uncountedTerminatedPods", {})
        counted_uids = set(uncounted.get("succeeded") or []) | set(uncounted.get("failed") or [])
        done_uids = ctrl._unfinalized.setdefault(self.key, set())
        completed = parse_indexes(self.status.get("completedIndexes"))
        failed_indexes = parse_indexes(self.status.get("failedIndexes"))
        release: list[dict[str, Any]] = []
        if self.key not in ctrl._backoff:
            ctrl._backoff[self.key] = self._rebuild_backoff(counted_uids)
        new_failed: list[dict[str, Any]] = []
        new_succeeded: list[dict[str, Any]] = []
        for pod in self.pods:
            uid = pod["metadata"].get("uid")
            if not ctrl._has_finalizer(pod) or uid in counted_uids or uid in done_uids:
                continue
            phase = _d(pod.get("status")).get("phase")
            if phase == "Succeeded":
                index = pod_index(pod) if self.indexed else None
                if self.indexed and (index is None or index >= (self.completions or 0) or index in completed):
                    release.append(pod)  # a duplicate or stray index: no count
                    continue
                uncounted.setdefault("succeeded", []).append(uid)
                new_succeeded.append(pod)
                if index is not None:
                    completed.add(index)
            elif _is_failed(pod, spec, self.now):
                if self._deleted_by_us(pod):
                    release.append(pod)  # deleted on purpose (suspend, scale down, finishing): no failure
                    continue
                if self._apply_failure_policy(pod, failed_indexes):
                    release.append(pod)  # Ignore
                    continue
                uncounted.setdefault("failed", []).append(uid)
                new_failed.append(pod)
        # Failures in a row, and when the last one finished; a success starts the count again.
        ctrl._backoff[self.key] = next_backoff(ctrl._backoff[self.key], new_succeeded, new_failed, self.now)
        if self.per_index is not None:
            self.status["failedIndexes"] = format_indexes(failed_indexes)
        if uncounted != _d(self.original_status.get("uncountedTerminatedPods")) \
                or self.status.get("failedIndexes") != self.original_status.get("failedIndexes"):
            # Recorded before any finalizer goes: a crash from here on loses nothing.
            await self._write_status()
        await self._release(release)
        await self._flush_uncounted(completed)

    def _rebuild_backoff(self, uncounted_uids: set[str]) -> Backoff:
        """No record (a new Job, or a restarted controller): derive it from the pods already accounted
        for: released from the tracking finalizer, or recorded in ``uncountedTerminatedPods``."""
        succeeded: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for pod in self.pods:
            if self.ctrl._has_finalizer(pod) and pod["metadata"].get("uid") not in uncounted_uids:
                continue  # not accounted for yet: this sync counts it
            if _d(pod.get("status")).get("phase") == "Succeeded":
                succeeded.append(pod)
            elif _is_failed(pod, self.spec, self.now) and not self._ignored(pod):
                failed.append(pod)
        record = backoff_from_pods(self.status, succeeded, failed, self.now)
        if record[0]:
            log.info("rebuilt back-off from pods job=%s failures=%d last=%s", self.key, record[0],
                     format_time(record[1]) if record[1] else "")
        return record

    def _ignored(self, pod: dict[str, Any]) -> bool:
        matched = match_pod_failure_policy(self.job, pod) if self.spec.get("podFailurePolicy") else None
        return matched is not None and matched[0] == "Ignore"

    def _apply_failure_policy(self, pod: dict[str, Any], failed_indexes: set[int]) -> bool:
        """Apply ``podFailurePolicy`` and ``backoffLimitPerIndex`` to one failed pod; True if it is ignored."""
        index = pod_index(pod) if self.indexed else None
        matched = match_pod_failure_policy(self.job, pod) if self.spec.get("podFailurePolicy") else None
        if matched is not None:
            action, message = matched
            log.info("pod failure policy job=%s pod=%s action=%s", self.key, pod["metadata"]["name"], action)
            if action == "Ignore":
                return True
            if action == "FailJob" and not has_condition(self.status, FAILURE_TARGET):
                set_condition(self.status, FAILURE_TARGET, "True", REASON_POD_FAILURE_POLICY, message, self.now)
            if action == "FailIndex" and index is not None:
                failed_indexes.add(index)
                return False
        if self.per_index is not None and index is not None and _failure_count(pod) + 1 > self.per_index:
            failed_indexes.add(index)
        return False

    async def _release(self, pods: Iterable[dict[str, Any]]) -> list[str]:
        """Remove the tracking finalizer from these pods; the UIDs that are free now."""
        pods = [p for p in pods if self.ctrl._has_finalizer(p)]
        results = await asyncio.gather(*(self.ctrl._remove_finalizer(p) for p in pods), return_exceptions=True)
        freed = [p["metadata"]["uid"] for p, ok in zip(pods, results, strict=True) if ok is True]
        self.ctrl._unfinalized.setdefault(self.key, set()).update(freed)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return freed

    async def _flush_uncounted(self, completed: set[int]) -> None:
        """Move UIDs whose pods no longer hold the finalizer (or are gone) into the counters."""
        uncounted = self.status.setdefault("uncountedTerminatedPods", {})
        pending = set(uncounted.get("succeeded") or []) | set(uncounted.get("failed") or [])
        if not pending:
            return
        by_uid = {p["metadata"].get("uid"): p for p in self.pods}
        holding = [by_uid[u] for u in pending if u in by_uid]
        freed = set(await self._release(holding)) | {u for u in pending if u not in by_uid}
        for field in ("succeeded", "failed"):
            uids = uncounted.get(field) or []
            moved = [u for u in uids if u in freed]
            if field == "succeeded" and self.indexed:
                self.status["completedIndexes"] = format_indexes(completed)
                self.status["succeeded"] = len(completed)
            else:
                self.status[field] = int(self.status.get(field) or 0) + len(moved)
            rest = [u for u in uids if u not in freed]
            if rest:
                uncounted[field] = rest
            else:
                uncounted.pop(field, None)

    # -- 4: success and failure ----------------------------------------------------------------
    def _decide(self) -> None:
        status, spec = self.status, self.spec
        if has_condition(status, FAILURE_TARGET) or has_condition(status, SUCCESS_CRITERIA_MET):
            return
        succeeded, failed = int(status.get("succeeded") or 0), int(status.get("failed") or 0)
        failure: tuple[str, str] | None = None
        if self.per_index is None:
            backoff_limit = int(spec.get("backoffLimit") if spec.get("backoffLimit") is not None else 6)
            on_failure = _d(_d(spec.get("template")).get("spec")).get("restartPolicy") == "OnFailure"
            # OnFailure pods restart in place: their restarts count against the limit (pastBackoffLimitOnFailure).
            restarts = sum(_restarts(p) for p in self._active()) if on_failure else 0
            past_on_failure = on_failure and (restarts > 0 if backoff_limit == 0 else restarts >= backoff_limit)
            if failed > backoff_limit or past_on_failure:
                failure = (REASON_BACKOFF_LIMIT, MSG_BACKOFF_LIMIT)
        else:
            failed_indexes = parse_indexes(status.get("failedIndexes"))
            max_failed = spec.get("maxFailedIndexes")
            if max_failed is not None and len(failed_indexes) > max_failed:
                failure = (REASON_MAX_FAILED_INDEXES, MSG_MAX_FAILED_INDEXES)
            elif failed_indexes and len(failed_indexes | parse_indexes(status.get("completedIndexes"))) \
                    >= (self.completions or 0):
                failure = (REASON_FAILED_INDEXES, MSG_FAILED_INDEXES)
        deadline = spec.get("activeDeadlineSeconds")
        start = parse_time(status.get("startTime"))
        if failure is None and deadline is not None and start is not None and not spec.get("suspend"):
            left = (start + timedelta(seconds=int(deadline)) - self.now).total_seconds()
            if left <= 0:
                failure = (REASON_DEADLINE, MSG_DEADLINE)
            else:
                self.requeue.append(left)
        if failure is not None:
            set_condition(status, FAILURE_TARGET, "True", *failure, self.now)
            self.ctrl.recorder.event(self.job, "Warning", failure[0], failure[1])
            log.info("job failing job=%s reason=%s", self.key, failure[0])
            return
        if self.indexed and self.spec.get("successPolicy"):
            matched = match_success_policy(self.job, parse_indexes(status.get("completedIndexes")))
            if matched is not None:
                set_condition(status, SUCCESS_CRITERIA_MET, "True", REASON_SUCCESS_POLICY, matched, self.now)
                log.info("job succeeding job=%s reason=%s message=%r", self.key, REASON_SUCCESS_POLICY, matched)
                return
        if self.completions is not None:
            done = succeeded >= self.completions
        else:
            done = succeeded > 0 and not self._active()
        if done:
            set_condition(status, SUCCESS_CRITERIA_MET, "True", REASON_COMPLETIONS, MSG_COMPLETIONS, self.now)
            log.info("job succeeding job=%s succeeded=%d", self.key, succeeded)

    def _finish_when_no_pods_left(self) -> None:
        if any(_is_active(p) or _is_terminating(p) for p in self.pods):
            return  # Complete/Failed only once every pod is gone or finished (Kubernetes >= 1.31)
        status = self.status
        interim = find_condition(status, FAILURE_TARGET) if has_condition(status, FAILURE_TARGET) \
            else find_condition(status, SUCCESS_CRITERIA_MET)
        assert interim is not None
        if interim["type"] == FAILURE_TARGET:
            set_condition(status, FAILED, "True", interim["reason"], interim["message"], self.now)
        else:
            set_condition(status, COMPLETE, "True", interim["reason"], interim["message"], self.now)
            status["completionTime"] = format_time(self.now)
            self.ctrl.recorder.event(self.job, "Normal", "Completed", "Job completed")
        log.info("job finished job=%s condition=%s reason=%s", self.key,
                 COMPLETE if interim["type"] == SUCCESS_CRITERIA_MET else FAILED, interim["reason"])

    # -- 5: suspend, resume, pods ----------------------------------------------------------------
    async def _suspend(self) -> None:
        await self._delete(self._active(), reason="suspended")
        if not has_condition(self.status, SUSPENDED):
            set_condition(self.status, SUSPENDED, "True", REASON_SUSPENDED, MSG_SUSPENDED, self.now)
            self.ctrl.recorder.event(self.job, "Normal", "Suspended", MSG_SUSPENDED)
            log.info("job suspended job=%s", self.key)

    def _resume(self) -> None:
        if has_condition(self.status, SUSPENDED):
            set_condition(self.status, SUSPENDED, "False", REASON_RESUMED, MSG_RESUMED, self.now)
            self.status["startTime"] = format_time(self.now)  # the deadline counts from the resume
            self.ctrl.recorder.event(self.job, "Normal", "Resumed", MSG_RESUMED)
            log.info("job resumed job=%s", self.key)

    async def _manage(self) -> BaseException | None:
        """Create missing pods (after the back-off), delete extra ones; the first error."""
        spec, status = self.spec, self.status
        active = self._active()
        parallelism = int(spec.get("parallelism") if spec.get("parallelism") is not None else 1)
        succeeded = int(status.get("succeeded") or 0)
        terminating = [p for p in self.pods if _is_terminating(p)] \
            if spec.get("podReplacementPolicy") == "Failed" else []
        if self.indexed:
            return await self._manage_indexed(active, parallelism, len(terminating))
        if self.completions is None:
            want = min(len(active), parallelism) if succeeded > 0 else parallelism  # a work queue: no new pods
        else:
            want = max(0, min(parallelism, self.completions - succeeded))
        diff = len(active) + len(terminating) - want
        if diff > 0 and len(active) > want:
            extra = sorted(active, key=lambda p: (is_pod_ready(p), bool(p["spec"].get("nodeName"))))
            await self._delete(extra[: min(len(active) - want, BURST)], reason="too many")
            return None
        if diff < 0:
            if self._backing_off():
                return None
            return await self._create([None] * min(-diff, BURST))
        return None

    async def _manage_indexed(self, active: list[dict[str, Any]], parallelism: int,
                              terminating: int) -> BaseException | None:
        completed = parse_indexes(self.status.get("completedIndexes"))
        failed = parse_indexes(self.status.get("failedIndexes"))
        by_index: dict[int, list[dict[str, Any]]] = {}
        extra: list[dict[str, Any]] = []
        for p in active:
            i = pod_index(p)
            if i is None or i >= (self.completions or 0) or i in completed or i in failed:
                extra.append(p)
            else:
                by_index.setdefault(i, []).append(p)
        for pods in by_index.values():
            extra.extend(pods[1:])  # one pod per index
        if extra:
            await self._delete(extra[:BURST], reason="duplicate or finished index")
            return None
        room = max(0, parallelism - len(by_index) - terminating)
        todo = [i for i in range(self.completions or 0)
                if i not in completed and i not in failed and i not in by_index][:min(room, BURST)]
        if not todo or self._backing_off():
            return None
        return await self._create(todo)

    def _backing_off(self) -> bool:
        failures, last = self.ctrl._backoff.get(self.key, (0, None))
        if not failures or last is None:
            return False
        left = (min(last, self.now) + timedelta(seconds=backoff_delay(failures)) - self.now).total_seconds()
        if left > 0:
            self.requeue.append(left)
            log.info("backing off job=%s failures=%d seconds=%.1f", self.key, failures, left)
            return True
        return False

    def _pod_for(self, index: int | None) -> dict[str, Any]:
        job = self.job
        name = job["metadata"]["name"]
        pod = pod_from_template(job, JOB, generate_name=f"{name}-{index}-" if index is not None else f"{name}-")
        pod["spec"] = copy.deepcopy(pod["spec"])
        meta = pod["metadata"]
        meta["finalizers"] = [*(meta.get("finalizers") or []), TRACKING_FINALIZER]
        if index is not None:
            meta.setdefault("annotations", {})[INDEX_ANNOTATION] = str(index)
            meta["labels"][INDEX_LABEL] = str(index)
            if self.per_index is not None:
                meta["annotations"][INDEX_FAILURE_COUNT_ANNOTATION] = str(self._index_failures(index))
            pod["spec"].setdefault("hostname", f"{name}-{index}")
            env = {"name": INDEX_ENV, "valueFrom": {"fieldRef": {
                "fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}}
            for c in (pod["spec"].get("initContainers") or []) + (pod["spec"].get("containers") or []):
                if not any(e.get("name") == INDEX_ENV for e in c.get("env") or []):
                    c["env"] = [*(c.get("env") or []), env]
        return pod

    def _index_failures(self, index: int) -> int:
        """How often ``index`` failed so far: one more than the most its failed pods had recorded."""
        counts = [_failure_count(p) + 1 for p in self.pods
                  if pod_index(p) == index and _is_failed(p, self.spec, self.now)]
        return max(counts, default=0)

    async def _create(self, indexes: list[int | None]) -> BaseException | None:
        ctrl, key = self.ctrl, self.key
        ctrl.expectations.expect_creations(key, len(indexes))
        log.info("creating pods job=%s count=%d", key, len(indexes))
        queue = list(indexes)

        async def one() -> None:
            index = queue.pop(0)
            try:
                pod = await ctrl.client.create("pods", self._pod_for(index), namespace=self.job["metadata"]["namespace"])
            except APIStatusError as e:
                ctrl.recorder.event(self.job, "Warning", "FailedCreate", f"Error creating: {e}")
                raise
            ctrl.recorder.event(self.job, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
            self.pods.append(pod)

        successes, error = await slow_start_batch(len(indexes), one)
        ctrl.expectations.lower_creations(key, len(indexes) - successes)
        return error

    async def _delete(self, pods: list[dict[str, Any]], *, reason: str) -> None:
        if not pods:
            return
        ctrl, key = self.ctrl, self.key
        ctrl.expectations.expect_deletions(key, [object_key(p) for p in pods])
        ctrl._deleted.setdefault(key, set()).update(p["metadata"]["uid"] for p in pods)
        log.info("deleting pods job=%s count=%d reason=%s", key, len(pods), reason)

        async def one(pod: dict[str, Any]) -> None:
            meta = pod["metadata"]
            try:
                marked = await ctrl.client.delete("pods", meta["name"], namespace=meta["namespace"],
                                                  preconditions={"uid": meta["uid"]})
            except NotFoundError:
                ctrl.expectations.deletion_observed(key, object_key(pod))
                return
            except APIStatusError as e:
                ctrl.expectations.deletion_observed(key, object_key(pod))
                ctrl.recorder.event(self.job, "Warning", "FailedDelete", f"Error deleting: {e}")
                raise
            ctrl.recorder.event(self.job, "Normal", "SuccessfulDelete", f"Deleted pod: {meta['name']}")
            if isinstance(marked, dict) and marked.get("metadata", {}).get("uid") == meta["uid"]:
                pod.update(marked)  # now terminating (or already finished)

        results = await asyncio.gather(*(one(p) for p in pods), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    # -- 6: status ------------------------------------------------------------------------------------
    def _count_pods(self) -> None:
        active = self._active()
        self.status["active"] = len(active)
        self.status["ready"] = sum(1 for p in active if is_pod_ready(p))
        self.status["terminating"] = sum(1 for p in self.pods if _is_terminating(p))
        if not self.indexed:
            self.status.pop("completedIndexes", None)

    async def _write_status(self) -> None:
        status = {k: v for k, v in self.status.items() if v not in (None, "") or k == "failedIndexes"}
        for k in ("active", "succeeded", "failed"):
            if not status.get(k):
                status.pop(k, None)  # omitempty, as Kubernetes writes them
        if self.per_index is None:
            status.pop("failedIndexes", None)
        status.setdefault("uncountedTerminatedPods", {})
        if status == self.original_status:
            return
        body = copy.deepcopy(self.job)
        body["status"] = status
        try:
            written = await self.ctrl.client.update("jobs", body, subresource="status")
        except NotFoundError:
            return
        self.ctrl._written[self.key] = written
        self.job = copy.deepcopy(written)
        self.original_status = copy.deepcopy(status)
        self.status = self.job.setdefault("status", {})

    # -- 7: when it is done --------------------------------------------------------------------------
    async def _release_finished(self) -> None:
        """A finished Job keeps no finalizer on any pod; whatever is uncounted is counted."""
        await self._flush_uncounted(parse_indexes(self.status.get("completedIndexes")))
        await self._release(p for p in self.pods if self.ctrl._has_finalizer(p))

    async def _ttl(self) -> None:
        ttl = self.spec.get("ttlSecondsAfterFinished")
        if ttl is None or self.job["metadata"].get("deletionTimestamp"):
            return
        cond = find_condition(self.status, COMPLETE) if has_condition(self.status, COMPLETE) \
            else find_condition(self.status, FAILED)
        finished_at = parse_time(self.status.get("completionTime") or (cond or {}).get("lastTransitionTime"))
        if finished_at is None:
            return
        left = (finished_at + timedelta(seconds=int(ttl)) - self.now).total_seconds()
        if left > 0:
            self.ctrl.queue.add_after(self.key, left)
            return
        self.requeue.clear()
        meta = self.job["metadata"]
        try:
            await self.ctrl.client.delete("jobs", meta["name"], namespace=meta["namespace"],
                                          propagation_policy="Foreground", preconditions={"uid": meta["uid"]})
        except (NotFoundError, ConflictError):
            return
        log.info("deleted finished job after its ttl job=%s", self.key)
