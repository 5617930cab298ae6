"""Job controller against the FakeAPI, with a fake clock: completions, parallelism,
back-off, deadlines, suspend, Indexed Jobs, podFailurePolicy, backoffLimitPerIndex,
the tracking finalizer, TTL; plus the kind's defaults, validation and printer."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubepy import kinds
from kubepy.controllers.context import ControllerConfig, ControllerContext, InformerFactory
from kubepy.controllers.job import (
    TRACKING_FINALIZER,
    JobController,
    backoff_delay,
    format_indexes,
    match_pod_failure_policy,
    parse_indexes,
)
from kubepy.kinds.validation import default_object, validate_object
from kubepy.testing.fakeapi import FakeAPI

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


# -- pure parts -------------------------------------------------------------------------
@pytest.mark.parametrize("text, indexes", [
    ("", set()), ("0", {0}), ("1,3-5", {1, 3, 4, 5}), ("0-2,7,9-10", {0, 1, 2, 7, 9, 10}),
])
def test_index_sets_round_trip(text, indexes):
    assert parse_indexes(text) == indexes
    assert format_indexes(indexes) == text


@pytest.mark.parametrize("failures, delay", [(0, 0), (1, 10), (2, 20), (3, 40), (6, 320), (7, 360), (30, 360)])
def test_backoff_doubles_from_ten_seconds_up_to_six_minutes(failures, delay):
    assert backoff_delay(failures) == delay


def failed_pod(code: int, *, container: str = "main", conditions: list | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Failed", "conditions": conditions or [],
                       "containerStatuses": [{"name": container, "state": {"terminated": {"exitCode": code}}}]}}


POLICY_JOB = {"spec": {"podFailurePolicy": {"rules": [
    {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
]}}}


@pytest.mark.parametrize("pod, expected", [
    (failed_pod(42), ("FailJob", "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0")),
    (failed_pod(42, container="side"), ("Count", "Container side for pod ns/p failed with exit code 42 matching "
                                                 "Count rule at index 2")),
    (failed_pod(1, conditions=[{"type": "DisruptionTarget", "status": "True"}]),
     ("Ignore", "Pod ns/p has condition DisruptionTarget matching Ignore rule at index 1")),
    (failed_pod(1), None),   # NotIn [1, 2] does not match 1
    (failed_pod(0), None),   # exit code 0 never matches
])
def test_pod_failure_policy_first_matching_rule(pod, expected):
    assert match_pod_failure_policy(POLICY_JOB, pod) == expected


# -- the kind -----------------------------------------------------------------------------
def job_manifest(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi", "namespace": "ns", "uid": "u-1"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "main", "image": "busybox"}]}}, **spec}}


def prepared(obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server makes of a create before validating: prepare, defaults."""
    obj = copy.deepcopy(obj)
    kind = kinds.by_kind("batch", obj["kind"])
    kind.strategy.prepare_create(obj)
    default_object(kind, obj)
    return obj


def created(obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server stores on create: prepare, defaults, validation."""
    obj = prepared(obj)
    validate_object(kinds.by_kind("batch", obj["kind"]), obj)
    return obj


def test_job_defaults_and_generated_selector():
    job = created(job_manifest())
    spec = job["spec"]
    assert {k: spec[k] for k in ("completions", "parallelism", "backoffLimit", "completionMode", "suspend",
                                 "manualSelector", "podReplacementPolicy")} == {
        "completions": 1, "parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed", "suspend": False,
        "manualSelector": False, "podReplacementPolicy": "TerminatingOrFailed"}
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}}
    assert spec["template"]["metadata"]["labels"] == {
        "batch.kubernetes.io/controller-uid": "u-1", "batch.kubernetes.io/job-name": "pi",
        "controller-uid": "u-1", "job-name": "pi"}
    assert created(job_manifest(parallelism=3))["spec"].get("completions") is None  # a work queue
    per_index = created(job_manifest(completionMode="Indexed", completions=3, backoffLimitPerIndex=1))
    assert per_index["spec"]["backoffLimit"] == 2**31 - 1
    with_policy = created(job_manifest(podFailurePolicy={"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}))
    assert with_policy["spec"]["podReplacementPolicy"] == "Failed"
    assert with_policy["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"] == "True"


def causes(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    try:
        validate_object(kinds.by_kind("batch", obj["kind"]), obj, old=old)
    except kinds.Invalid as e:
        return [(c["field"], c["message"]) for c in e.causes]
    return []


def test_job_validation_messages():
    always = job_manifest()
    always["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(kinds.Invalid) as e:
        created(always)
    assert ("spec.template.spec.restartPolicy", 'Unsupported value: "Always": supported values: "OnFailure", "Never"') \
        in [(c["field"], c["message"]) for c in e.value.causes]
    bad = created(job_manifest())
    bad["spec"].update(parallelism=-1, completionMode="Sometimes", backoffLimitPerIndex=1)
    assert set(causes(bad)) >= {
        ("spec.parallelism", "Invalid value: -1: must be greater than or equal to 0"),
        ("spec.completionMode", 'Unsupported value: "Sometimes": supported values: "NonIndexed", "Indexed"'),
        ("spec.completionMode", 'Required value: when backoffLimitPerIndex is specified, completionMode must be '
                                '"Indexed"'),
    }
    indexed = created(job_manifest(completionMode="Indexed", completions=2))
    del indexed["spec"]["completions"]
    assert ("spec.completions", "Required value: when completion mode is Indexed") in causes(indexed)
    fail_index = prepared(job_manifest(podFailurePolicy={"rules": [
        {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [3, 1]}}]}))
    assert set(causes(fail_index)) >= {
        ("spec.podFailurePolicy.rules[0].action", 'Invalid value: "FailIndex": requires the backoffLimitPerIndex '
                                                  'to be set'),
        ("spec.podFailurePolicy.rules[0].onExitCodes.values[1]", "Invalid value: 1: must be ordered"),
    }


def test_job_update_rules():
    old = created(job_manifest(completions=2))
    new = copy.deepcopy(old)
    new["spec"]["completions"] = 3
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "other"
    new["spec"]["parallelism"] = 5   # may change
    fields = [f for f, _ in causes(new, old)]
    assert fields == ["spec.completions", "spec.template"]
    # A suspended Job that never started may change its scheduling directives.
    old = created(job_manifest(suspend=True))
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "ssd"}
    assert causes(new, old) == []
    old["status"] = {"startTime": "2026-01-01T00:00:00Z"}
    assert [f for f, _ in causes(new, old)] == ["spec.template"]


def test_job_printer():
    kind = kinds.by_kind("batch", "Job")
    job = created(job_manifest(completions=4, parallelism=2))
    job["metadata"]["creationTimestamp"] = "2026-01-01T11:58:00Z"
    job["status"] = {"succeeded": 4, "startTime": "2026-01-01T11:58:00Z", "completionTime": "2026-01-01T11:58:25Z",
                     "conditions": [{"type": "Complete", "status": "True"}]}
    assert kind.printer.cells(job, T0) == ["pi", "Complete", "4/4", "25s", "2m", "main", "busybox",
                                           "batch.kubernetes.io/controller-uid=u-1"]
    job["spec"].pop("completions")
    job["status"] = {"startTime": "2026-01-01T11:59:50Z"}
    assert kind.printer.cells(job, T0)[1:4] == ["Running", "0/1 of 2", "10s"]


# -- the controller, against the FakeAPI ----------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def event(self, obj, type_, reason, message):
        self.events.append((type_, reason, message))

    def reasons(self) -> list[str]:
        return [r for _, r, _ in self.events]


class Harness:
    """A JobController whose caches are filled from the FakeAPI before each sync, and a clock the test moves."""

    def __init__(self) -> None:
        self.api = FakeAPI()
        self.now = T0
        self.recorder = Recorder()
        ctx = ControllerContext(client=self.api, informers=InformerFactory(self.api),  # type: ignore[arg-type]
                                recorder=self.recorder, config=ControllerConfig())  # type: ignore[arg-type]
        self.ctrl = JobController(ctx, clock=lambda: self.now)

    def add_job(self, **spec: Any) -> dict[str, Any]:
        job = created(job_manifest(**spec))
        return self.api.seed("jobs", job)

    def refresh(self) -> None:
        for resource, inf in (("jobs", self.ctrl.job_informer), ("pods", self.ctrl.pod_informer)):
            for key in list(inf.cache.keys()):
                inf.cache.delete(key)
            for obj in self.api.objects(resource):
                inf.cache.set(obj)
        self.ctrl.expectations = type(self.ctrl.expectations)()  # the caches are exact now

    async def sync(self, times: int = 1) -> dict[str, Any] | None:
        for _ in range(times):
            self.refresh()
            await self.ctrl.reconcile("ns/pi")
        jobs = self.api.objects("jobs")
        return jobs[0] if jobs else None

    def pods(self, *, live: bool = True) -> list[dict[str, Any]]:
        return [p for p in self.api.objects("pods")
                if not live or ((p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                                and not p["metadata"].get("deletionTimestamp"))]

    async def finish(self, pod: dict[str, Any], phase: str, exit_code: int = 0,
                     conditions: list | None = None) -> None:
        """What the kubelet writes when the pod's containers exit."""
        status = {"phase": phase, "conditions": conditions or [],
                  "containerStatuses": [{"name": "main", "restartCount": 0, "state": {"terminated": {
                      "exitCode": exit_code, "finishedAt": self.now.strftime("%Y-%m-%dT%H:%M:%SZ")}}}]}
        await self.api.patch("pods", pod["metadata"]["name"], {"status": status}, namespace="ns",
                             subresource="status")

    async def run_pods(self) -> None:
        for p in self.pods():
            await self.api.patch("pods", p["metadata"]["name"], {"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True"}]}}, namespace="ns", subresource="status")


def conditions(job: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in job["status"].get("conditions") or []}


async def test_completions_and_parallelism_with_the_tracking_finalizer():
    h = Harness()
    h.add_job(completions=4, parallelism=2)
    job = await h.sync()
    pods = h.pods()
    assert len(pods) == 2
    assert all(TRACKING_FINALIZER in p["metadata"]["finalizers"] for p in pods)
    assert all(p["metadata"]["generateName"] == "pi-" for p in pods)
    assert job["status"]["active"] == 2 and job["status"]["startTime"] == "2026-01-01T12:00:00Z"
    await h.run_pods()
    job = await h.sync()
    assert job["status"]["ready"] == 2
    await h.finish(pods[0], "Succeeded")
    job = await h.sync()
    # counted, and its finalizer is gone; a replacement keeps two running
    assert job["status"]["succeeded"] == 1 and job["status"]["uncountedTerminatedPods"] == {}
    done = next(p for p in h.api.objects("pods") if p["metadata"]["name"] == pods[0]["metadata"]["name"])
    assert TRACKING_FINALIZER not in (done["metadata"].get("finalizers") or [])
    assert len(h.pods()) == 2
    # the uncounted step is written before the finalizer goes
    writes = [a.body["status"] for a in h.api.calls("update", "jobs", "status")]
    assert any(pods[0]["metadata"]["uid"] in (w.get("uncountedTerminatedPods") or {}).get("succeeded", [])
               for w in writes)
    # a counted pod deleted later is not lost
    await h.api.delete("pods", pods[0]["metadata"]["name"], namespace="ns")
    for _ in range(3):
        for p in h.pods():
            await h.finish(p, "Succeeded")
        job = await h.sync()
    assert job["status"]["succeeded"] == 4
    assert conditions(job)["Complete"] == ("True", "CompletionsReached", "Reached expected number of succeeded pods")
    assert conditions(job)["SuccessCriteriaMet"][0] == "True"
    assert job["status"]["completionTime"] == "2026-01-01T12:00:00Z"
    assert len(h.api.calls("create", "pods")) == 4  # exactly four pods ran
    assert all(TRACKING_FINALIZER not in (p["metadata"].get("finalizers") or []) for p in h.api.objects("pods"))
    assert "Completed" in h.recorder.reasons()


async def test_a_stale_pod_cache_never_counts_twice():
    h = Harness()
    h.add_job()
    await h.sync()
    [pod] = h.pods()
    await h.finish(pod, "Succeeded")
    h.refresh()
    stale_pod = h.ctrl.pod_informer.cache.get(f"ns/{pod['metadata']['name']}")
    await h.ctrl.reconcile("ns/pi")
    # the pod cache still shows the finalizer, the job cache the old status: sync again without refreshing
    h.ctrl.pod_informer.cache.set(stale_pod)
    await h.ctrl.reconcile("ns/pi")
    [job] = h.api.objects("jobs")
    assert job["status"]["succeeded"] == 1


async def test_failures_back_off_exponentially_then_backoff_limit_exceeded():
    h = Harness()
    h.add_job(backoffLimit=2)
    await h.sync()
    created_at = []
    for round_ in range(3):
        [pod] = h.pods()
        created_at.append(h.now)
        await h.finish(pod, "Failed", exit_code=1)
        job = await h.sync()
        if round_ < 2:
            assert h.pods() == []  # backing off
            h.now += timedelta(seconds=backoff_delay(round_ + 1) - 1)
            await h.sync()
            assert h.pods() == [], f"retried before the {backoff_delay(round_ + 1)} s back-off"
            h.now += timedelta(seconds=1)
            await h.sync()
            assert len(h.pods()) == 1
    assert job["status"]["failed"] == 3
    assert conditions(job)["Failed"] == ("True", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
    assert conditions(job)["FailureTarget"][1] == "BackoffLimitExceeded"
    assert "completionTime" not in job["status"]
    assert ("Warning", "BackoffLimitExceeded", "Job has reached the specified backoff limit") in h.recorder.events


async def test_active_deadline_fails_the_job_and_deletes_its_pods():
    h = Harness()
    h.add_job(activeDeadlineSeconds=30, parallelism=2, completions=5)
    await h.sync()
    assert len(h.pods()) == 2
    requeued = h.ctrl.queue
    h.now += timedelta(seconds=31)
    job = await h.sync()
    assert conditions(job)["FailureTarget"][1:] == ("DeadlineExceeded", "Job was active longer than specified deadline")
    assert "Failed" not in conditions(job)  # not before its pods are gone
    assert h.pods() == [] and job["status"]["terminating"] == 2  # held by the tracking finalizer
    job = await h.sync()
    assert "Failed" not in conditions(job) and h.api.objects("pods") == []  # released, gone
    job = await h.sync()
    assert conditions(job)["Failed"] == ("True", "DeadlineExceeded", "Job was active longer than specified deadline")
    assert job["status"].get("failed") is None  # pods we deleted are no failures
    assert requeued is h.ctrl.queue


async def test_suspend_and_resume():
    h = Harness()
    h.add_job(parallelism=2, completions=2)
    await h.sync()
    assert len(h.pods()) == 2
    job = h.api.objects("jobs")[0]
    job["spec"]["suspend"] = True
    await h.api.update("jobs", job)
    job = await h.sync()
    assert h.pods() == []
    assert conditions(job)["Suspended"] == ("True", "JobSuspended", "Job suspended")
    job["spec"]["suspend"] = False
    await h.api.update("jobs", job)
    h.now += timedelta(minutes=5)
    job = await h.sync()
    assert len(h.pods()) == 2
    assert conditions(job)["Suspended"] == ("False", "JobResumed", "Job resumed")
    assert job["status"]["startTime"] == "2026-01-01T12:05:00Z"
    assert job["status"].get("failed") is None
    assert {"Suspended", "Resumed"} <= set(h.recorder.reasons())


async def test_indexed_job_pods_carry_their_index():
    h = Harness()
    h.add_job(completionMode="Indexed", completions=3, parallelism=3)
    job = await h.sync()
    pods = sorted(h.pods(), key=lambda p: p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])
    assert [p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods] == ["0", "1", "2"]
    assert [p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] for p in pods] == ["0", "1", "2"]
    assert [p["metadata"]["generateName"] for p in pods] == ["pi-0-", "pi-1-", "pi-2-"]
    assert [p["spec"]["hostname"] for p in pods] == ["pi-0", "pi-1", "pi-2"]
    assert pods[0]["spec"]["containers"][0]["env"] == [{"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}]
    await h.finish(pods[2], "Succeeded")
    await h.finish(pods[0], "Failed", exit_code=1)
    job = await h.sync()
    assert job["status"]["completedIndexes"] == "2" and job["status"]["succeeded"] == 1
    h.now += timedelta(seconds=10)
    await h.sync()
    [retry] = [p for p in h.pods() if p["metadata"]["uid"] not in {q["metadata"]["uid"] for q in pods}]
    assert retry["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "0"
    for p in h.pods():
        await h.finish(p, "Succeeded")
    job = await h.sync(2)
    assert job["status"]["completedIndexes"] == "0-2"
    assert conditions(job)["Complete"][0] == "True"


async def test_backoff_limit_per_index_and_max_failed_indexes():
    h = Harness()
    h.add_job(completionMode="Indexed", completions=3, parallelism=3, backoffLimitPerIndex=1, maxFailedIndexes=0)
    await h.sync()
    index0 = next(p for p in h.pods() if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "0")
    assert index0["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"] == "0"
    await h.finish(index0, "Failed", exit_code=1)
    await h.sync()
    h.now += timedelta(seconds=10)
    job = await h.sync()
    retry = next(p for p in h.pods() if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "0")
    assert retry["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"] == "1"
    assert job["status"]["failedIndexes"] == ""
    await h.finish(retry, "Failed", exit_code=1)  # the second failure of index 0: past its limit of 1
    job = await h.sync()
    assert conditions(job)["FailureTarget"][1] == "MaxFailedIndexesExceeded"
    assert job["status"]["terminating"] == 2  # the other indexes' pods are stopped first
    job = await h.sync(2)
    assert job["status"]["failedIndexes"] == "0"
    assert conditions(job)["Failed"] == ("True", "MaxFailedIndexesExceeded",
                                         "Job has exceeded the specified maximal number of failed indexes")


async def test_pod_failure_policy_fail_job_and_ignore():
    h = Harness()
    rules = [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
             {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    h.add_job(podFailurePolicy={"rules": rules}, backoffLimit=0)
    await h.sync()
    [pod] = h.pods()
    await h.finish(pod, "Failed", exit_code=1, conditions=[{"type": "DisruptionTarget", "status": "True"}])
    job = await h.sync()
    assert job["status"].get("failed") is None and "FailureTarget" not in conditions(job)  # ignored: not counted
    [pod] = h.pods()  # replaced at once: an ignored failure has no back-off
    await h.finish(pod, "Failed", exit_code=42)
    job = await h.sync(2)
    assert conditions(job)["Failed"] == ("True", "PodFailurePolicy", f"Container main for pod ns/"
                                         f"{pod['metadata']['name']} failed with exit code 42 matching FailJob rule "
                                         f"at index 0")


async def test_ttl_after_finished_deletes_the_job():
    h = Harness()
    h.add_job(ttlSecondsAfterFinished=60)
    await h.sync()
    [pod] = h.pods()
    await h.finish(pod, "Succeeded")
    job = await h.sync()
    assert conditions(job)["Complete"][0] == "True"
    h.now += timedelta(seconds=59)
    assert await h.sync() is not None
    h.now += timedelta(seconds=1)
    await h.sync()
    [delete] = h.api.calls("delete", "jobs")
    assert delete.options["propagation_policy"] == "Foreground"


async def test_work_queue_job_completes_after_one_success_and_the_rest_finish():
    h = Harness()
    h.add_job(parallelism=3)
    await h.sync()
    pods = h.pods()
    assert len(pods) == 3
    await h.finish(pods[0], "Succeeded")
    job = await h.sync()
    assert "SuccessCriteriaMet" not in conditions(job)  # the others still work
    assert len(h.pods()) == 2  # no new pods after a success
    for p in pods[1:]:
        await h.finish(p, "Succeeded")
    job = await h.sync(2)
    assert conditions(job)["Complete"][0] == "True" and job["status"]["succeeded"] == 3


async def test_orphaned_pods_lose_the_finalizer():
    h = Harness()
    h.add_job()
    await h.sync()
    [pod] = h.pods()
    job = h.api.objects("jobs")[0]
    h.refresh()
    await h.api.delete("jobs", "pi", namespace="ns")
    h.ctrl.job_informer.cache.delete("ns/pi")
    h.ctrl._on_job_delete(job)
    await h.ctrl.reconcile(f"orphan:ns/{pod['metadata']['name']}")
    [left] = h.api.objects("pods")
    assert TRACKING_FINALIZER not in (left["metadata"].get("finalizers") or [])


async def test_fail_index_rule_fails_only_that_index():
    h = Harness()
    h.add_job(completionMode="Indexed", completions=2, parallelism=2, backoffLimitPerIndex=3, podFailurePolicy={
        "rules": [{"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [7]}}]},
        podReplacementPolicy="Failed")
    await h.sync()
    by_index = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p for p in h.pods()}
    await h.finish(by_index["0"], "Failed", exit_code=7)
    await h.finish(by_index["1"], "Succeeded")
    job = await h.sync(3)
    assert (job["status"]["failedIndexes"], job["status"]["completedIndexes"]) == ("0", "1")
    assert conditions(job)["Failed"][1:] == ("FailedIndexes", "Job has failed indexes")
    assert len(h.api.calls("create", "pods")) == 2  # index 0 was not retried


async def test_restarts_of_on_failure_pods_count_against_the_backoff_limit():
    h = Harness()
    job = created(job_manifest(backoffLimit=2))
    job["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    h.api.seed("jobs", job)
    await h.sync()
    [pod] = h.pods()
    await h.api.patch("pods", pod["metadata"]["name"], {"status": {"phase": "Running", "containerStatuses": [
        {"name": "main", "restartCount": 2}]}}, namespace="ns", subresource="status")
    job = await h.sync()
    assert conditions(job)["FailureTarget"][1] == "BackoffLimitExceeded"


async def test_a_restarted_controller_counts_a_half_tracked_pod_once():
    h = Harness()
    h.add_job(completions=2, parallelism=1)
    await h.sync()
    [pod] = h.pods()
    await h.finish(pod, "Succeeded")
    # The controller wrote the pod into uncountedTerminatedPods, then died before removing the finalizer.
    job = h.api.objects("jobs")[0]
    job["status"]["uncountedTerminatedPods"] = {"succeeded": [pod["metadata"]["uid"]]}
    await h.api.update("jobs", job, subresource="status")
    fresh = Harness.__new__(Harness)
    fresh.__dict__.update(h.__dict__)
    ctx = h.ctrl.ctx
    fresh.ctrl = JobController(ctx, clock=lambda: h.now)
    job = await fresh.sync(3)
    assert job["status"]["succeeded"] == 1 and job["status"]["uncountedTerminatedPods"] == {}
    assert len(fresh.pods()) == 1  # the second completion is running


async def test_a_restarted_controller_keeps_backing_off_from_the_pods():
    h = Harness()
    h.add_job(backoffLimit=6)
    await h.sync()
    for _ in range(2):  # two failures in a row: the next retry waits 20 s
        [pod] = h.pods()
        await h.finish(pod, "Failed", exit_code=1)
        await h.sync()
        h.now += timedelta(seconds=backoff_delay(h.ctrl._backoff["ns/pi"][0]))
        await h.sync()
    [pod] = h.pods()
    await h.finish(pod, "Failed", exit_code=1)
    await h.sync()
    assert h.ctrl._backoff["ns/pi"] == (3, h.now)
    h.now += timedelta(seconds=5)
    fresh = JobController(h.ctrl.ctx, clock=lambda: h.now)  # the controller restarts: no memory
    h.ctrl = fresh
    await h.sync()
    assert h.pods() == [] and fresh._backoff["ns/pi"] == (3, h.now - timedelta(seconds=5))
    h.now += timedelta(seconds=backoff_delay(3) - 5 - 1)
    await h.sync()
    assert h.pods() == [], "retried before the 40 s back-off"
    h.now += timedelta(seconds=1)
    await h.sync()
    assert len(h.pods()) == 1


async def test_success_policy_by_indexes_terminates_the_rest_then_completes():
    h = Harness()
    h.add_job(completionMode="Indexed", completions=4, parallelism=4,
              successPolicy={"rules": [{"succeededIndexes": "0,2"}]})
    await h.sync()
    by_index = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p for p in h.pods()}
    await h.finish(by_index["0"], "Succeeded")
    job = await h.sync()
    assert "SuccessCriteriaMet" not in conditions(job)
    await h.finish(by_index["2"], "Succeeded")
    job = await h.sync()
    assert conditions(job)["SuccessCriteriaMet"] == ("True", "SuccessPolicy", "Matched rules at index 0")
    assert "Complete" not in conditions(job) and job["status"]["terminating"] == 2  # indexes 1 and 3 stop first
    assert h.pods() == []
    for p in h.api.objects("pods"):  # the kubelet ends the terminating pods
        if p["metadata"].get("deletionTimestamp"):
            await h.finish(p, "Failed", exit_code=137)
    job = await h.sync(2)
    assert conditions(job)["Complete"] == ("True", "SuccessPolicy", "Matched rules at index 0")
    assert job["status"]["completedIndexes"] == "0,2" and job["status"].get("failed") is None
    assert len(h.api.calls("create", "pods")) == 4


async def test_success_policy_by_count():
    h = Harness()
    h.add_job(completionMode="Indexed", completions=5, parallelism=5, successPolicy={"rules": [
        {"succeededIndexes": "0-1", "succeededCount": 2}, {"succeededCount": 3}]})
    await h.sync()
    by_index = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p for p in h.pods()}
    for i in ("2", "3"):
        await h.finish(by_index[i], "Succeeded")
    job = await h.sync()
    assert "SuccessCriteriaMet" not in conditions(job)
    await h.finish(by_index["4"], "Succeeded")
    job = await h.sync()
    assert conditions(job)["SuccessCriteriaMet"] == ("True", "SuccessPolicy", "Matched rules at index 1")
    for p in h.api.objects("pods"):
        if p["metadata"].get("deletionTimestamp"):
            await h.finish(p, "Failed", exit_code=137)
    job = await h.sync(2)
    assert conditions(job)["Complete"][1:] == ("SuccessPolicy", "Matched rules at index 1")


def test_success_policy_validation():
    def spec(**policy: Any) -> dict[str, Any]:
        return prepared(job_manifest(completionMode="Indexed", completions=5, successPolicy=policy))
    assert causes(spec(rules=[{"succeededIndexes": "0,2-4", "succeededCount": 3}])) == []
    non_indexed = prepared(job_manifest(successPolicy={"rules": []}))
    assert ("spec.successPolicy", 'Invalid value: {"rules":[]}: requires indexed completion mode') \
        in causes(non_indexed)
    assert causes(spec(rules=[])) == [
        ("spec.successPolicy.rules", "Required value: at least one rules must be specified when the successPolicy "
                                     "is specified")]
    assert ("spec.successPolicy.rules", "Too many: 21: must have at most 20 items") \
        in causes(spec(rules=[{"succeededCount": 1}] * 21))
    assert causes(spec(rules=[{}])) == [
        ("spec.successPolicy.rules[0]", "Required value: at least one of succeededCount or succeededIndexes must be "
                                        "specified")]
    assert causes(spec(rules=[{"succeededIndexes": "0,5"}])) == [
        ("spec.successPolicy.rules[0].succeededIndexes",
         'Invalid value: "0,5": error parsing succeededIndexes: too large index: "5"')]
    assert causes(spec(rules=[{"succeededIndexes": "3,1"}])) == [
        ("spec.successPolicy.rules[0].succeededIndexes",
         'Invalid value: "3,1": error parsing succeededIndexes: non-increasing order, previous: 3, current: 1')]
    assert causes(spec(rules=[{"succeededIndexes": "0-x"}])) == [
        ("spec.successPolicy.rules[0].succeededIndexes",
         'Invalid value: "0-x": error parsing succeededIndexes: cannot convert string to integer for index: "x"')]
    assert causes(spec(rules=[{"succeededCount": 6}])) == [
        ("spec.successPolicy.rules[0].succeededCount",
         "Invalid value: 6: must be less than or equal to 5 (the number of specified completions)")]
    assert causes(spec(rules=[{"succeededIndexes": "1-2", "succeededCount": 3}])) == [
        ("spec.successPolicy.rules[0].succeededCount", "Invalid value: 3: must be less than or equal to 2 (the "
                                                       "number of indexes in the specified succeededIndexes field)")]
    old = created(job_manifest(completionMode="Indexed", completions=5, successPolicy={"rules": [{"succeededCount": 1}]}))
    new = copy.deepcopy(old)
    new["spec"]["successPolicy"]["rules"][0]["succeededCount"] = 2
    assert [f for f, _ in causes(new, old)] == ["spec.successPolicy"]
