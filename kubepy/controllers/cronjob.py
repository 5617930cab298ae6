"""CronJob controller: make a Job from a CronJob's template at each scheduled time.

Kubernetes' ``pkg/controller/cronjob`` (its v2 controller) in miniature.
Handlers enqueue the CronJob (a Job's event enqueues its controlling
CronJob). ``reconcile(key)``:

1. reconciles ``status.active`` with the Jobs it owns (a finished Job leaves
   the list, ``SawCompletedJob``; a vanished one, ``MissingJob``; a Complete
   one sets ``lastSuccessfulTime``);
2. unless suspended, finds the most recent scheduled time that has passed
   since ``lastScheduleTime`` (or creation), within
   ``startingDeadlineSeconds``: after the controller manager was down it
   starts at most one missed run, the latest, and more than 100 missed times
   are reported as ``TooManyMissedTimes``;
3. honours ``concurrencyPolicy`` (Forbid: skip while a Job runs; Replace:
   delete the running ones first), then creates the Job
   ``NAME-<scheduled time in minutes since the epoch>`` (a deterministic name,
   so a restarted controller cannot start the same run twice) with the
   ``batch.kubernetes.io/cronjob-scheduled-timestamp`` annotation;
4. deletes finished Jobs beyond ``successfulJobsHistoryLimit`` /
   ``failedJobsHistoryLimit``, oldest first;
5. requeues itself for the next scheduled time.

Schedules are parsed by croniter (standard five fields, or an ``@hourly``-style
macro) in ``spec.timeZone`` (UTC when unset). Talks to the API server only
through ``ControllerContext.client``; reads the ``cronjobs`` and ``jobs`` informers.
"""

from __future__ import annotations

import copy
import logging
import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter

from kubepy.client import AlreadyExistsError, NotFoundError, WorkQueue, object_key, run_workers
from kubepy.controllers.context import ControllerContext
from kubepy.controllers.ownership import OwnerKind, controller_ref, owner_reference, resolve_controller_ref
from kubepy.controllers.pods import format_time, parse_time
from kubepy.kinds.batch.cronjob import MACROS

log = logging.getLogger(__name__)

__all__ = ["CRONJOB", "CronJobController", "job_name", "most_recent_schedule", "next_schedule"]

CRONJOB = OwnerKind("batch/v1", "CronJob", "cronjobs")
SCHEDULED_TIMESTAMP_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
MAX_MISSED = 100  # more missed start times than this is reported, as Kubernetes does


def utcnow() -> datetime:
    return datetime.now(UTC)


def _d(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


# -- pure schedule arithmetic -------------------------------------------------------------
def _zone(cj: dict[str, Any]) -> zoneinfo.ZoneInfo | None:
    tz = _d(cj.get("spec")).get("timeZone")
    return zoneinfo.ZoneInfo(tz) if tz else None


def _cron(schedule: str, start: datetime, tz: Any) -> croniter:
    expr = MACROS.get(schedule.strip(), schedule.strip())
    return croniter(expr, start.astimezone(tz or UTC))


def next_schedule(schedule: str, after: datetime, tz: Any = None) -> datetime:
    """The first scheduled time strictly after ``after``."""
    return _cron(schedule, after, tz).get_next(datetime).astimezone(UTC)


def most_recent_schedule(schedule: str, earliest: datetime, now: datetime, tz: Any = None
                         ) -> tuple[datetime | None, int]:
    """(the latest scheduled time in (earliest, now], how many were missed in that window).

    Only the latest is ever started (upstream's mostRecentScheduleTime)."""
    it = _cron(schedule, earliest, tz)
    t1 = it.get_next(datetime).astimezone(UTC)
    if t1 > now:
        return None, 0
    t2 = it.get_next(datetime).astimezone(UTC)
    if t2 > now:
        return t1, 1
    period = (t2 - t1).total_seconds()
    missed = int((now - t1).total_seconds() // period) + 1 if period > 0 else 2
    # The exact latest time, whatever the schedule's irregularities (months, DST).
    latest = croniter(MACROS.get(schedule.strip(), schedule.strip()),
                      (now + timedelta(seconds=1)).astimezone(tz or UTC)).get_prev(datetime).astimezone(UTC)
    return max(latest, t1), missed


def job_name(cronjob_name: str, scheduled: datetime) -> str:
    """``NAME-<minutes since the epoch>``: the same name for the same run, always."""
    return f"{cronjob_name}-{int(scheduled.timestamp()) // 60}"


def _job_finished(job: dict[str, Any]) -> str | None:
    for c in _d(job.get("status")).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return str(c["type"])
    return None


class CronJobController:
    name = "cronjob"

    def __init__(self, ctx: ControllerContext, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.recorder = ctx.recorder
        self.clock = clock
        self.queue = WorkQueue(name=self.name)
        self.cj_informer = ctx.informers.informer("cronjobs")
        self.job_informer = ctx.informers.informer("jobs")
        self.cj_informer.add_handler(lambda cj: self.queue.add(object_key(cj)),
                                     lambda old, new: self.queue.add(object_key(new)),
                                     lambda cj: self.queue.add(object_key(cj)))
        self.job_informer.add_handler(self._on_job, lambda old, new: self._on_job(new), self._on_job)
        self._written: dict[str, dict[str, Any]] = {}

    async def run(self) -> None:
        await self.cj_informer.wait_synced()
        await self.job_informer.wait_synced()
        log.info("controller started name=%s", self.name)
        await run_workers(self.queue, self.reconcile, workers=self.ctx.config.concurrent_syncs, logger=log)

    def _on_job(self, job: dict[str, Any]) -> None:
        key = resolve_controller_ref(job, controller_ref(job), CRONJOB, self.cj_informer.cache)
        if key is not None:
            self.queue.add(key)

    def _current(self, key: str) -> dict[str, Any] | None:
        cached, written = self.cj_informer.cache.get(key), self._written.get(key)
        if cached is None or written is None or written["metadata"].get("uid") != cached["metadata"].get("uid"):
            return cached
        try:
            newer = int(written["metadata"]["resourceVersion"]) > int(cached["metadata"]["resourceVersion"])
        except (KeyError, ValueError):
            newer = False
        return written if newer else cached

    async def reconcile(self, key: str) -> None:
        cached = self._current(key)
        if cached is None:
            self._written.pop(key, None)
            return
        cj = copy.deepcopy(cached)
        now = self.clock()
        uid = cj["metadata"]["uid"]
        jobs = [j for j in self.job_informer.cache.by_index("namespace", cj["metadata"]["namespace"])
                if (controller_ref(j) or {}).get("uid") == uid]
        status = cj.setdefault("status", {})
        before = copy.deepcopy(status)
        self._sync_active(cj, jobs)
        requeue: float | None = None
        if not cj["metadata"].get("deletionTimestamp"):
            requeue = await self._schedule(cj, jobs, now)
            await self._clean_up_history(cj, jobs)
        if status != before:
            body = copy.deepcopy(cj)
            if not status.get("active"):
                body["status"].pop("active", None)
            try:
                self._written[key] = await self.client.update("cronjobs", body, subresource="status")
            except NotFoundError:
                return
        if requeue is not None:
            self.queue.add_after(key, requeue)

    def _sync_active(self, cj: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        status = cj["status"]
        by_uid = {j["metadata"]["uid"]: j for j in jobs}
        active = [dict(r) for r in status.get("active") or []]
        listed = {r.get("uid") for r in active}
        for job in jobs:
            if job["metadata"]["uid"] not in listed and not _job_finished(job) \
                    and not job["metadata"].get("deletionTimestamp"):
                active.append(_reference(job))  # ours and running, but not listed (a lost status write)
        kept = []
        for ref in active:
            job = by_uid.get(ref.get("uid"))
            if job is None:
                self.recorder.event(cj, "Normal", "MissingJob", f"Active job went missing: {ref.get('name')}")
                continue
            state = _job_finished(job)
            if state is None:
                kept.append(ref)
                continue
            self.recorder.event(cj, "Normal", "SawCompletedJob",
                                f"Saw completed job: {job['metadata']['name']}, status: {state}")
            log.info("job finished cronjob=%s job=%s status=%s", object_key(cj), job["metadata"]["name"], state)
            if state == "Complete":
                done = parse_time(_d(job.get("status")).get("completionTime"))
                last = parse_time(status.get("lastSuccessfulTime"))
                if done is not None and (last is None or done > last):
                    status["lastSuccessfulTime"] = format_time(done)
        status["active"] = kept

    async def _schedule(self, cj: dict[str, Any], jobs: list[dict[str, Any]], now: datetime) -> float | None:
        """Start the run that is due, if any; seconds until the next scheduled time."""
        spec, status, key = _d(cj.get("spec")), cj["status"], object_key(cj)
        schedule = str(spec.get("schedule") or "")
        try:
            tz = _zone(cj)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.recorder.event(cj, "Warning", "UnknownTimeZone", f"invalid timeZone: {spec.get('timeZone')!r}")
            return None
        try:
            following = next_schedule(schedule, now, tz)
        except (ValueError, KeyError) as e:
            self.recorder.event(cj, "Warning", "UnparseableSchedule", f"unparseable schedule: {schedule!r} : {e}")
            return None
        wait = max(0.1, (following - now).total_seconds() + 0.1)
        if spec.get("suspend"):
            log.info("suspended cronjob=%s", key)
            return None
        earliest = parse_time(status.get("lastScheduleTime")) or parse_time(cj["metadata"].get("creationTimestamp")) \
            or now
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None:
            earliest = max(earliest, now - timedelta(seconds=int(deadline)))
        scheduled, missed = most_recent_schedule(schedule, earliest, now, tz)
        if scheduled is None:
            return wait
        if missed > MAX_MISSED:
            self.recorder.event(cj, "Warning", "TooManyMissedTimes",
                                f"too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds "
                                "or check clock skew")
            log.info("too many missed start times cronjob=%s missed=%d", key, missed)
        if deadline is not None and scheduled + timedelta(seconds=int(deadline)) < now:
            self.recorder.event(cj, "Warning", "MissSchedule",
                                f"Missed scheduled time to start a job: {format_time(scheduled)}")
            return wait
        name = job_name(cj["metadata"]["name"], scheduled)
        if any(r.get("name") == name for r in status.get("active") or []) \
                or any(j["metadata"]["name"] == name for j in jobs):
            return wait  # this run has its Job already
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and status.get("active"):
            self.recorder.event(cj, "Normal", "JobAlreadyActive",
                                "Not starting job because prior execution is running and concurrency policy is Forbid")
            log.info("not starting: forbid and a job is active cronjob=%s", key)
            return wait
        if policy == "Replace":
            for ref in list(status.get("active") or []):
                await self._delete_job(cj, str(ref.get("name")))
                status["active"].remove(ref)
        job = await self._create_job(cj, name, scheduled, tz)
        if job is not None:
            status.setdefault("active", []).append(_reference(job))
        status["lastScheduleTime"] = format_time(scheduled)
        return wait

    async def _create_job(self, cj: dict[str, Any], name: str, scheduled: datetime, tz: Any) -> dict[str, Any] | None:
        template = _d(_d(cj.get("spec")).get("jobTemplate"))
        tmeta = _d(template.get("metadata"))
        annotations = {**_d(tmeta.get("annotations")),
                       SCHEDULED_TIMESTAMP_ANNOTATION: scheduled.astimezone(tz or UTC).isoformat().replace("+00:00", "Z")}
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": name, "namespace": cj["metadata"]["namespace"],
                            "labels": dict(_d(tmeta.get("labels"))), "annotations": annotations,
                            "ownerReferences": [owner_reference(cj, CRONJOB)]},
               "spec": copy.deepcopy(_d(template.get("spec")))}
        try:
            made = await self.client.create("jobs", job, namespace=cj["metadata"]["namespace"])
        except AlreadyExistsError:
            log.info("job already exists cronjob=%s job=%s", object_key(cj), name)
            return None
        self.recorder.event(cj, "Normal", "SuccessfulCreate", f"Created job {name}")
        log.info("created job cronjob=%s job=%s scheduled=%s", object_key(cj), name, format_time(scheduled))
        return made

    async def _delete_job(self, cj: dict[str, Any], name: str) -> None:
        try:
            await self.client.delete("jobs", name, namespace=cj["metadata"]["namespace"],
                                     propagation_policy="Background")
        except NotFoundError:
            return
        self.recorder.event(cj, "Normal", "SuccessfulDelete", f"Deleted job {name}")
        log.info("deleted job cronjob=%s job=%s", object_key(cj), name)

    async def _clean_up_history(self, cj: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        spec = _d(cj.get("spec"))
        for state, limit_key in (("Complete", "successfulJobsHistoryLimit"), ("Failed", "failedJobsHistoryLimit")):
            limit = spec.get(limit_key)
            if limit is None:
                continue
            done = [j for j in jobs if _job_finished(j) == state and not j["metadata"].get("deletionTimestamp")]
            done.sort(key=lambda j: (_d(j.get("status")).get("startTime") or j["metadata"].get("creationTimestamp")
                                     or "", j["metadata"]["name"]))
            for job in done[:max(0, len(done) - int(limit))]:
                await self._delete_job(cj, job["metadata"]["name"])


def _reference(job: dict[str, Any]) -> dict[str, Any]:
    meta = job["metadata"]
    return {"kind": "Job", "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"],
            "apiVersion": "batch/v1", "resourceVersion": meta.get("resourceVersion", "")}
