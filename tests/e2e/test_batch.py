"""batch/v1 on a one-node lab cluster, driven by the stock kubectl: Jobs run real pods
to completion (completions/parallelism, back-off to BackoffLimitExceeded, Indexed pods
that see their index), CronJobs make Jobs on schedule and Forbid holds, and
``kubectl create job --from=cronjob/`` works.

The two CronJobs are created as soon as the lab is up, so their minutes pass
while the Job tests run; their test comes last.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from tests.e2e.test_lab import Lab

pytestmark = pytest.mark.slow

IMAGE = "docker.io/library/busybox:1.36"


def job_manifest(name: str, command: str, **spec) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                                           "containers": [{"name": "main", "image": IMAGE,
                                                           "imagePullPolicy": "IfNotPresent",
                                                           "command": ["sh", "-c", command]}]}}, **spec}}


def cronjob_manifest(name: str, command: str, policy: str) -> dict:
    job = job_manifest(name, command)
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
            "spec": {"schedule": "* * * * *", "concurrencyPolicy": policy,
                     "jobTemplate": {"spec": job["spec"]}}}


def apply(lab: Lab, obj: dict) -> None:
    lab.kubectl("apply", "-f", "-", input=json.dumps(obj))


def wait_until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        up = lab.up_with_busybox(1)
        assert "ready in" in up.stdout, up.stdout
        apply(lab, cronjob_manifest("quick", "echo tick", "Allow"))
        apply(lab, cronjob_manifest("slow", "sleep 150", "Forbid"))
        lab.cronjobs_at = time.monotonic()  # type: ignore[attr-defined]
        yield lab
    finally:
        lab.kubepy("down", check=False)
        shutil.rmtree(lab.root, ignore_errors=True)


def pods_of(lab: Lab, job: str) -> list[dict]:
    return lab.json("get", "pods", "-l", f"batch.kubernetes.io/job-name={job}")["items"]


def test_job_with_four_completions_two_at_a_time(lab):
    apply(lab, job_manifest("four", "sleep 2; echo done", completions=4, parallelism=2))
    time.sleep(3)
    running = pods_of(lab, "four")
    assert len([p for p in running if p["status"].get("phase") not in ("Succeeded", "Failed")]) <= 2
    lab.kubectl("wait", "--for=condition=complete", "job/four", "--timeout=120s", timeout=130)
    job = lab.json("get", "job", "four")
    assert job["status"]["succeeded"] == 4 and not job["status"].get("failed")
    pods = pods_of(lab, "four")
    assert len(pods) == 4 and {p["status"]["phase"] for p in pods} == {"Succeeded"}
    assert all("batch.kubernetes.io/job-tracking" not in (p["metadata"].get("finalizers") or []) for p in pods)
    row = lab.kubectl("get", "job", "four").stdout.splitlines()
    assert row[0].split()[:4] == ["NAME", "STATUS", "COMPLETIONS", "DURATION"], row
    assert row[1].split()[:3] == ["four", "Complete", "4/4"], row
    assert lab.kubectl("logs", "job/four").stdout.strip() == "done"


def test_failing_job_ends_failed_with_backoff_limit_exceeded(lab):
    apply(lab, job_manifest("fails", "echo no; exit 3", backoffLimit=1))
    lab.kubectl("wait", "--for=condition=failed", "job/fails", "--timeout=120s", timeout=130)
    job = lab.json("get", "job", "fails")
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"], failed["message"]) == (
        "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
    assert job["status"]["failed"] == 2
    pods = sorted(pods_of(lab, "fails"), key=lambda p: p["metadata"]["creationTimestamp"])
    assert len(pods) == 2  # the first try and one retry, after the back-off
    describe = lab.kubectl("describe", "job", "fails").stdout
    assert "BackoffLimitExceeded" in describe


def test_indexed_job_pods_see_their_index(lab):
    apply(lab, job_manifest("indexed", "echo index=$JOB_COMPLETION_INDEX host=$(hostname)", completions=3,
                            parallelism=3, completionMode="Indexed"))
    lab.kubectl("wait", "--for=condition=complete", "job/indexed", "--timeout=120s", timeout=130)
    job = lab.json("get", "job", "indexed")
    assert job["status"]["completedIndexes"] == "0-2"
    seen = set()
    for pod in pods_of(lab, "indexed"):
        index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        out = lab.kubectl("logs", pod["metadata"]["name"]).stdout.strip()
        assert out == f"index={index} host=indexed-{index}", out
        seen.add(index)
    assert seen == {"0", "1", "2"}


def test_create_job_from_cronjob(lab):
    out = lab.kubectl("create", "job", "by-hand", "--from=cronjob/quick").stdout
    assert "job.batch/by-hand created" in out
    lab.kubectl("wait", "--for=condition=complete", "job/by-hand", "--timeout=90s", timeout=100)
    job = lab.json("get", "job", "by-hand")
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert lab.kubectl("logs", "job/by-hand").stdout.strip() == "tick"


def test_cronjobs_run_every_minute_and_forbid_holds(lab):
    def scheduled(name: str) -> list[dict]:
        return [j for j in lab.json("get", "jobs")["items"]
                if any(r.get("name") == name for r in j["metadata"].get("ownerReferences") or [])
                and "batch.kubernetes.io/cronjob-scheduled-timestamp" in (j["metadata"].get("annotations") or {})]

    # A run of "quick" on schedule, completed, with the CronJob's bookkeeping.
    done = wait_until(lambda: [j for j in scheduled("quick") if any(
        c["type"] == "Complete" and c["status"] == "True" for c in (j.get("status") or {}).get("conditions") or [])],
        150, "a completed Job of cronjob/quick")
    assert done[0]["metadata"]["name"].startswith("quick-")
    assert "batch.kubernetes.io/cronjob-scheduled-timestamp" in done[0]["metadata"]["annotations"]
    cj = wait_until(lambda: lab.json("get", "cronjob", "quick").get("status", {}).get("lastSuccessfulTime") and
                    lab.json("get", "cronjob", "quick"), 30, "lastSuccessfulTime")
    assert cj["status"]["lastScheduleTime"]
    # "slow" runs 150 s: at the next minute Forbid must skip, not start a second Job.
    wait_until(lambda: "JobAlreadyActive" in lab.kubectl(
        "get", "events", "--field-selector", "involvedObject.name=slow", "-o", "json").stdout,
        max(5.0, 185 - (time.monotonic() - lab.cronjobs_at)), "a JobAlreadyActive event of cronjob/slow")
    assert len(scheduled("slow")) == 1
    row = lab.kubectl("get", "cj", "slow").stdout.splitlines()
    assert row[0].split()[:5] == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE"], row
    assert row[1].split()[:9] == ["slow", "*", "*", "*", "*", "*", "<none>", "False", "1"], row
