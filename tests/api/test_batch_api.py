"""batch/v1 through the API server in process: a Job gets its generated selector and
labels, its status is written only through /status, its template is immutable, a
CronJob is served with its short name, and the Job ``kubectl create job --from=cronjob/``
builds client-side is accepted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.api.test_semantics import _serve, call

JOBS = "/apis/batch/v1/namespaces/default/jobs"
CRONJOBS = "/apis/batch/v1/namespaces/default/cronjobs"
TEMPLATE = {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[TestClient]:
    async for client in _serve(tmp_path):
        yield client


async def test_job_create_status_and_immutable_template(api):
    job = await call(api, "POST", JOBS, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
                                         "spec": {"template": TEMPLATE},
                                         "status": {"succeeded": 5}}, status=201)
    uid = job["metadata"]["uid"]
    assert job["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert job["spec"]["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "pi"
    assert job["spec"]["backoffLimit"] == 6 and job["spec"]["completions"] == 1
    assert "status" not in job or not job["status"].get("succeeded")
    job["status"] = {"active": 1, "startTime": "2026-01-01T00:00:00Z"}
    written = await call(api, "PUT", f"{JOBS}/pi/status", job)
    assert written["status"]["active"] == 1
    written["spec"]["template"]["spec"]["containers"][0]["image"] = "other"
    err = await call(api, "PUT", f"{JOBS}/pi", written, status=422)
    assert {"field": "spec.template", "reason": "FieldValueInvalid"}.items() <= err["details"]["causes"][0].items()
    never = await call(api, "POST", JOBS, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "bad"},
                                           "spec": {"template": {"spec": {"containers": [{"name": "c",
                                                                                          "image": "x"}]}}}},
                       status=422)
    assert never["details"]["causes"] == [{"reason": "FieldValueNotSupported", "field": "spec.template.spec.restartPolicy",
                                           "message": 'Unsupported value: "Always": supported values: "OnFailure", '
                                                      '"Never"'}]


async def test_cronjob_and_a_job_made_from_it_as_kubectl_does(api):
    cj = await call(api, "POST", CRONJOBS, {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "hello"},
        "spec": {"schedule": "@hourly", "jobTemplate": {"metadata": {"labels": {"app": "hello"}},
                                                        "spec": {"template": TEMPLATE}}}}, status=201)
    assert cj["spec"]["concurrencyPolicy"] == "Allow" and cj["spec"]["successfulJobsHistoryLimit"] == 3
    # kubectl create job manual --from=cronjob/hello: the template's spec, the instantiate annotation, an owner.
    manual = {"apiVersion": "batch/v1", "kind": "Job",
              "metadata": {"name": "manual", "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
                           "labels": {"app": "hello"},
                           "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "hello",
                                                "uid": cj["metadata"]["uid"], "controller": True}]},
              "spec": cj["spec"]["jobTemplate"]["spec"]}
    job = await call(api, "POST", JOBS, manual, status=201)
    assert job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"] == job["metadata"]["uid"]
    bad = await call(api, "POST", CRONJOBS, {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "bad"},
        "spec": {"schedule": "* * *", "jobTemplate": {"spec": {"template": TEMPLATE}}}}, status=422)
    assert bad["details"]["causes"][0]["message"] == 'Invalid value: "* * *": expected exactly 5 fields, found 3: * * *'
