"""CronJob controller against the FakeAPI with a fake clock: schedules and macros in a time
zone, concurrency policies, starting deadlines, suspend, history limits, one missed run
after downtime; plus the kind's defaults, validation and printer."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from kubepy import kinds
from kubepy.controllers.context import ControllerConfig, ControllerContext, InformerFactory
from kubepy.controllers.cronjob import CronJobController, job_name, most_recent_schedule, next_schedule
from kubepy.kinds.validation import default_object, validate_object
from kubepy.testing.fakeapi import FakeAPI

T0 = datetime(2026, 3, 7, 11, 59, 30, tzinfo=UTC)  # a Saturday


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if "+" not in text else datetime.fromisoformat(text)


# -- schedule arithmetic --------------------------------------------------------------------
@pytest.mark.parametrize("schedule, after, tz, expected", [
    ("* * * * *", "2026-03-07T11:59:30", None, "2026-03-07T12:00:00"),
    ("*/15 * * * *", "2026-03-07T12:01:00", None, "2026-03-07T12:15:00"),
    ("@hourly", "2026-03-07T12:01:00", None, "2026-03-07T13:00:00"),
    ("@daily", "2026-03-07T12:01:00", None, "2026-03-08T00:00:00"),
    ("@weekly", "2026-03-07T12:01:00", None, "2026-03-08T00:00:00"),   # Sunday midnight
    ("@monthly", "2026-03-07T12:01:00", None, "2026-04-01T00:00:00"),
    ("@yearly", "2026-03-07T12:01:00", None, "2027-01-01T00:00:00"),
    ("0 9 * * 1-5", "2026-03-07T12:01:00", None, "2026-03-09T09:00:00"),
    # 09:00 in New York is 14:00 UTC in March before DST (March 8th 2026), 13:00 after it
    ("0 9 * * *", "2026-03-07T12:01:00", "America/New_York", "2026-03-07T14:00:00"),
    ("0 9 * * *", "2026-03-08T14:01:00", "America/New_York", "2026-03-09T13:00:00"),
])
def test_next_schedule(schedule, after, tz, expected):
    import zoneinfo
    zone = zoneinfo.ZoneInfo(tz) if tz else None
    assert next_schedule(schedule, at(after), zone) == at(expected)


def test_most_recent_schedule_is_the_latest_missed_one():
    latest, missed = most_recent_schedule("*/5 * * * *", at("2026-03-07T10:00:00"), at("2026-03-07T11:07:00"))
    assert latest == at("2026-03-07T11:05:00") and missed == 13
    assert most_recent_schedule("*/5 * * * *", at("2026-03-07T10:00:00"), at("2026-03-07T10:04:00")) == (None, 0)
    assert most_recent_schedule("*/5 * * * *", at("2026-03-07T10:00:00"), at("2026-03-07T10:06:00")) == \
        (at("2026-03-07T10:05:00"), 1)


def test_job_names_are_minutes_since_the_epoch():
    assert job_name("hello", at("2026-03-07T12:00:00")) == f"hello-{int(at('2026-03-07T12:00:00').timestamp()) // 60}"


# -- the kind ---------------------------------------------------------------------------------
def cronjob_manifest(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "hello", "namespace": "ns", "uid": "cj-1", "creationTimestamp": "2026-03-07T11:00:00Z"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}, **spec}}


def created(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    kind = kinds.by_kind("batch", "CronJob")
    kind.strategy.prepare_create(obj)
    default_object(kind, obj)
    validate_object(kind, obj)
    return obj


def causes(obj: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        validate_object(kinds.by_kind("batch", "CronJob"), obj)
    except kinds.Invalid as e:
        return [(c["field"], c["message"]) for c in e.causes]
    return []


def test_cronjob_defaults():
    spec = created(cronjob_manifest())["spec"]
    assert {k: spec[k] for k in ("concurrencyPolicy", "suspend", "successfulJobsHistoryLimit",
                                 "failedJobsHistoryLimit")} == {
        "concurrencyPolicy": "Allow", "suspend": False, "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1}
    assert kinds.by_kind("batch", "CronJob").short_names == ("cj",)


@pytest.mark.parametrize("change, expected", [
    ({"schedule": "every minute"}, ("spec.schedule", 'Invalid value: "every minute": expected exactly 5 fields, '
                                                     'found 2: every minute')),
    ({"schedule": "@fortnightly"}, ("spec.schedule", 'Invalid value: "@fortnightly": unrecognized descriptor: '
                                                     '@fortnightly')),
    ({"schedule": "61 * * * *"}, ("spec.schedule", 'Invalid value: "61 * * * *": failed to parse schedule: '
                                                   '61 * * * *')),
    ({"schedule": "TZ=UTC * * * * *"}, ("spec.schedule", 'Invalid value: "TZ=UTC * * * * *": cannot use TZ or '
                                                         'CRON_TZ in schedule, use timeZone field instead')),
    ({"timeZone": "Mars/Olympus"}, ("spec.timeZone", 'Invalid value: "Mars/Olympus": unknown time zone '
                                                     'Mars/Olympus')),
    ({"concurrencyPolicy": "Sometimes"}, ("spec.concurrencyPolicy", 'Unsupported value: "Sometimes": supported '
                                                                    'values: "Allow", "Forbid", "Replace"')),
    ({"startingDeadlineSeconds": -1}, ("spec.startingDeadlineSeconds",
                                       "Invalid value: -1: must be greater than or equal to 0")),
])
def test_cronjob_validation_messages(change, expected):
    obj = created(cronjob_manifest())
    obj["spec"].update(change)
    assert expected in causes(obj)


def test_cronjob_job_template_rules_and_name_length():
    obj = created(cronjob_manifest())
    obj["spec"]["jobTemplate"]["spec"]["selector"] = {"matchLabels": {"a": "b"}}
    obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    obj["metadata"]["name"] = "x" * 53
    found = causes(obj)
    assert ("spec.jobTemplate.spec.selector", 'Invalid value: {"matchLabels":{"a":"b"}}: `selector` will be '
                                              'auto-generated') in found
    assert ("spec.jobTemplate.spec.template.spec.restartPolicy",
            'Unsupported value: "Always": supported values: "OnFailure", "Never"') in found
    assert ("metadata.name", f'Invalid value: "{"x" * 53}": must be no more than 52 characters') in found


def test_cronjob_printer():
    obj = created(cronjob_manifest(timeZone="Europe/Paris"))
    obj["status"] = {"active": [{"name": "hello-1"}], "lastScheduleTime": "2026-03-07T11:59:00Z"}
    assert kinds.by_kind("batch", "CronJob").printer.cells(obj, T0) == [
        "hello", "* * * * *", "Europe/Paris", "False", 1, "30s", "59m", "c", "busybox", "<none>"]


# -- the controller ---------------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def event(self, obj, type_, reason, message):
        self.events.append((type_, reason, message))


class Harness:
    def __init__(self, **spec: Any) -> None:
        self.api = FakeAPI()
        self.now = T0
        self.recorder = Recorder()
        ctx = ControllerContext(client=self.api, informers=InformerFactory(self.api),  # type: ignore[arg-type]
                                recorder=self.recorder, config=ControllerConfig())  # type: ignore[arg-type]
        self.ctrl = CronJobController(ctx, clock=lambda: self.now)
        self.api.seed("cronjobs", created(cronjob_manifest(**spec)))

    async def sync(self) -> dict[str, Any]:
        for resource, inf in (("cronjobs", self.ctrl.cj_informer), ("jobs", self.ctrl.job_informer)):
            for key in list(inf.cache.keys()):
                inf.cache.delete(key)
            for obj in self.api.objects(resource):
                inf.cache.set(obj)
        await self.ctrl.reconcile("ns/hello")
        return self.api.objects("cronjobs")[0]

    def jobs(self) -> list[str]:
        return [j["metadata"]["name"] for j in self.api.objects("jobs")]

    async def finish(self, name: str, state: str = "Complete") -> None:
        status = {"conditions": [{"type": state, "status": "True"}], "startTime": _stamp(self.now),
                  **({"completionTime": _stamp(self.now)} if state == "Complete" else {})}
        await self.api.patch("jobs", name, {"status": status}, namespace="ns", subresource="status")

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.recorder.events]


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def minutes(t: str) -> int:
    return int(at(t).timestamp()) // 60


async def test_creates_a_job_each_scheduled_minute_and_tracks_it():
    h = Harness()
    cj = await h.sync()
    assert h.jobs() == [f"hello-{minutes('2026-03-07T11:59:00')}"]  # created at 11:00: the 11:59 run is due
    h.now = at("2026-03-07T12:00:05")
    cj = await h.sync()
    name = f"hello-{minutes('2026-03-07T12:00:00')}"
    assert name in h.jobs()
    job = next(j for j in h.api.objects("jobs") if j["metadata"]["name"] == name)
    assert job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"] == "2026-03-07T12:00:00Z"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"
    assert cj["status"]["lastScheduleTime"] == "2026-03-07T12:00:00Z"
    assert name in [r["name"] for r in cj["status"]["active"]]
    assert ("Normal", "SuccessfulCreate", f"Created job {name}") in h.recorder.events
    await h.finish(name)
    cj = await h.sync()
    assert name not in [r["name"] for r in cj["status"].get("active") or []]
    assert cj["status"]["lastSuccessfulTime"] == "2026-03-07T12:00:05Z"
    assert ("Normal", "SawCompletedJob", f"Saw completed job: {name}, status: Complete") in h.recorder.events


async def test_after_downtime_only_the_latest_missed_run_starts():
    h = Harness(schedule="*/5 * * * *")
    h.api.objects("cronjobs")
    h.now = at("2026-03-07T11:02:00")
    await h.sync()
    assert h.jobs() == []
    h.now = at("2026-03-07T13:07:00")   # the controller manager was down for two hours
    cj = await h.sync()
    assert h.jobs() == [f"hello-{minutes('2026-03-07T13:05:00')}"]
    assert cj["status"]["lastScheduleTime"] == "2026-03-07T13:05:00Z"
    await h.sync()
    assert len(h.jobs()) == 1   # not twice


async def test_too_many_missed_start_times_is_reported():
    h = Harness()
    h.now = at("2026-03-07T14:00:30")   # 180 minutes since creation, every minute
    await h.sync()
    assert ("Warning", "TooManyMissedTimes", "too many missed start times: 180. Set or decrease "
            ".spec.startingDeadlineSeconds or check clock skew") in h.recorder.events
    assert h.jobs() == [f"hello-{minutes('2026-03-07T14:00:00')}"]


async def test_starting_deadline_skips_a_late_run():
    h = Harness(schedule="0 * * * *", startingDeadlineSeconds=60)
    h.now = at("2026-03-07T12:02:00")
    await h.sync()
    assert h.jobs() == []
    h.now = at("2026-03-07T13:00:30")
    await h.sync()
    assert h.jobs() == [f"hello-{minutes('2026-03-07T13:00:00')}"]


async def test_forbid_skips_while_a_job_runs_and_replace_replaces_it():
    h = Harness(concurrencyPolicy="Forbid")
    h.now = at("2026-03-07T12:00:05")
    await h.sync()
    h.now = at("2026-03-07T12:01:05")
    cj = await h.sync()
    assert len(h.jobs()) == 1 and "JobAlreadyActive" in h.reasons()
    assert cj["status"]["lastScheduleTime"] == "2026-03-07T12:00:00Z"
    await h.finish(h.jobs()[0])
    h.now = at("2026-03-07T12:02:05")
    await h.sync()
    assert len(h.jobs()) == 2

    r = Harness(concurrencyPolicy="Replace")
    r.now = at("2026-03-07T12:00:05")
    await r.sync()
    r.now = at("2026-03-07T12:01:05")
    cj = await r.sync()
    assert [a.name for a in r.api.calls("delete", "jobs")] == [f"hello-{minutes('2026-03-07T12:00:00')}"]
    assert [ref["name"] for ref in cj["status"]["active"]] == [f"hello-{minutes('2026-03-07T12:01:00')}"]


async def test_allow_runs_concurrently_and_suspend_stops_new_runs():
    h = Harness()
    for minute in range(3):
        h.now = at(f"2026-03-07T12:0{minute}:05")
        cj = await h.sync()
    assert len(h.jobs()) == 3 and len(cj["status"]["active"]) == 3
    cj["spec"]["suspend"] = True
    await h.api.update("cronjobs", cj)
    h.now = at("2026-03-07T12:05:05")
    await h.sync()
    assert len(h.jobs()) == 3


async def test_history_limits_delete_the_oldest_finished_jobs():
    h = Harness(successfulJobsHistoryLimit=1, failedJobsHistoryLimit=1)
    for minute in range(4):
        h.now = at(f"2026-03-07T12:0{minute}:05")
        await h.sync()
        await h.finish(h.jobs()[-1], "Complete" if minute != 1 else "Failed")
    h.now = at("2026-03-07T12:04:01")
    await h.sync()
    deleted = [a.name for a in h.api.calls("delete", "jobs")]
    assert deleted == [f"hello-{minutes('2026-03-07T12:00:00')}", f"hello-{minutes('2026-03-07T12:02:00')}"]
