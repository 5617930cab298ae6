"""CronJob (batch/v1): the cronjob controller makes a Job from ``spec.jobTemplate`` on its schedule.

As upstream's ``pkg/registry/batch/cronjob/strategy.go`` and
``pkg/apis/batch/validation``: defaults (concurrencyPolicy Allow, suspend
false, history limits 3 and 1), the schedule checked as the standard
five-field cron syntax or an ``@hourly``-style macro (parsed by croniter, as
the controller parses it), ``timeZone`` a name of the tz database, the job
template's spec checked as a Job's but without a selector, and a name of at
most 52 characters (the Jobs it makes append ``-<minutes>``).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.kinds.batch.job import SELECTOR_DOC, validate_job_spec

__all__ = ["CRONJOB", "CONCURRENCY_POLICIES", "MACROS", "MAX_NAME_LENGTH", "schedule_problem"]

CONCURRENCY_POLICIES = ("Allow", "Forbid", "Replace")
MAX_NAME_LENGTH = 52  # a DNS-1035 label (63) minus the 11 characters of "-<minutes>"
# robfig/cron's descriptors, as cron.ParseStandard accepts them (Kubernetes' parser).
MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}


def _d(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def schedule_problem(schedule: str) -> str | None:
    """Why ``schedule`` is not a standard cron schedule (robfig/cron's wording), or None."""
    from croniter import croniter  # the same parser the controller uses

    text = schedule.strip()
    if "TZ=" in text:
        return "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
    if text.startswith("@"):
        return None if text in MACROS else f"unrecognized descriptor: {text}"
    fields = text.split()
    if len(fields) != 5:
        return f"expected exactly 5 fields, found {len(fields)}: {text}"
    if not croniter.is_valid(text):
        return f"failed to parse schedule: {text}"
    return None


def _default(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    job_spec = _d(_d(spec.get("jobTemplate")).get("spec"))
    v.default_template_spec(job_spec.get("template"))


def _prepare_create(obj: dict) -> None:
    obj.pop("status", None)


def _validate_time_zone(tz: Any, errs: v.Errs) -> None:
    if tz is None:
        return
    if not isinstance(tz, str) or not tz:
        errs.invalid("spec.timeZone", tz, "timeZone must be nil or non-empty string")
        return
    if tz.lower() == "local":
        errs.invalid("spec.timeZone", tz, "timeZone must be an explicit time zone as defined in "
                     "https://www.iana.org/time-zones")
        return
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        errs.invalid("spec.timeZone", tz, f"unknown time zone {tz}")


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    spec = _d(obj.get("spec"))
    name = str(_d(obj.get("metadata")).get("name") or "")
    if old is None and len(name) > MAX_NAME_LENGTH:
        errs.invalid("metadata.name", name, f"must be no more than {MAX_NAME_LENGTH} characters")
    schedule = spec.get("schedule")
    if not schedule:
        errs.required("spec.schedule")
    elif (problem := schedule_problem(str(schedule))) is not None:
        errs.invalid("spec.schedule", schedule, problem)
    _validate_time_zone(spec.get("timeZone"), errs)
    errs.nonnegative("spec.startingDeadlineSeconds", spec.get("startingDeadlineSeconds"))
    errs.enum("spec.concurrencyPolicy", spec.get("concurrencyPolicy"), CONCURRENCY_POLICIES)
    errs.nonnegative("spec.successfulJobsHistoryLimit", spec.get("successfulJobsHistoryLimit"))
    errs.nonnegative("spec.failedJobsHistoryLimit", spec.get("failedJobsHistoryLimit"))
    template = _d(spec.get("jobTemplate"))
    job_spec = _d(template.get("spec"))
    validate_job_spec(job_spec, "spec.jobTemplate.spec", errs)
    if job_spec.get("selector") is not None:
        errs.invalid("spec.jobTemplate.spec.selector", job_spec["selector"], "`selector` will be auto-generated")
    if job_spec.get("manualSelector") is True:
        errs.not_supported("spec.jobTemplate.spec.manualSelector", True, ("nil", "false"))


# -- printer (printCronJob) ---------------------------------------------------------------
def _cells(obj: dict, now: dt.datetime) -> list:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    last = status.get("lastScheduleTime")
    suspend = spec.get("suspend")
    job_spec = _d(_d(spec.get("jobTemplate")).get("spec"))
    names, images = printers.containers_and_images(_d(_d(job_spec.get("template")).get("spec")))
    return [printers.name_cell(obj), str(spec.get("schedule") or ""), spec.get("timeZone") or "<none>",
            "<unset>" if suspend is None else ("True" if suspend else "False"),
            len(status.get("active") or []), printers.since(last, now) if last else "<none>",
            printers.age_cell(obj, now), names, images, printers.format_label_selector(job_spec.get("selector"))]


_COLUMNS = (
    printers.name_column(),
    printers.column("Schedule", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
    printers.column("Timezone", "The time zone name for the given schedule, see "
                    "https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, this will "
                    "default to the time zone of the kube-controller-manager process."),
    printers.column("Suspend", "This flag tells the controller to suspend subsequent executions, it does not apply "
                    "to already started executions.  Defaults to false.", type_="boolean"),
    printers.column("Active", "A list of pointers to currently running jobs.", type_="integer"),
    printers.column("Last Schedule", "Information when was the last time the job was successfully scheduled."),
    printers.age_column(),
    printers.column("Containers", printers.CONTAINERS_DOC, priority=1),
    printers.column("Images", printers.IMAGES_DOC, priority=1),
    printers.column("Selector", SELECTOR_DOC, priority=1),
)

CRONJOB = register(Kind(
    "batch", "v1", "CronJob", "cronjobs", namespaced=True, short_names=("cj",), subresources=("status",),
    categories=("all",), has_status=True, has_spec_generation=True, model="V1CronJob", proto="CronJob",
    proto_schema="""
CronJob
    1 metadata                         ObjectMeta
    2 spec                             CronJobSpec
    3 status                           CronJobStatus
CronJobSpec
    1 schedule                         string
    8 timeZone                         *string
    2 startingDeadlineSeconds          *int64
    3 concurrencyPolicy                string
    4 suspend                          *bool
    5 jobTemplate                      JobTemplateSpec
    6 successfulJobsHistoryLimit       *int32
    7 failedJobsHistoryLimit           *int32
CronJobStatus
    1 active                           []ObjectReference
    4 lastScheduleTime                 *Time
    5 lastSuccessfulTime               *Time
JobTemplateSpec
    1 metadata                         ObjectMeta
    2 spec                             JobSpec
""",
    api_types=("CronJob", "CronJobList", "CronJobSpec", "CronJobStatus"),
    strategy=Strategy(default=_default, validate=_validate, prepare_create=_prepare_create),
    printer=Printer(_COLUMNS, _cells),
))
