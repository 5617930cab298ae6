"""Custom resources with stock kubectl against a real ``kubepy apiserver`` process: a CRD
applied, established and served without a restart (api-resources, explain, get by short name,
printer columns, scale, schema errors), its objects deleted with it."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import running_apiserver

pytestmark = pytest.mark.slow

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.kptest.example.com
spec:
  group: kptest.example.com
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames: [ct]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the cron tab runs and how often.
            x-kubernetes-validations:
            - rule: "self.replicas <= 5"
              message: at most 5 replicas
            properties:
              cronSpec:
                type: string
                description: The schedule, in cron format.
              image:
                type: string
              replicas:
                type: integer
                default: 1
          status:
            type: object
            properties:
              replicas:
                type: integer
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
    additionalPrinterColumns:
    - name: Spec
      type: string
      jsonPath: .spec.cronSpec
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
"""

CR = """\
apiVersion: kptest.example.com/v1
kind: CronTab
metadata:
  name: my-cron
spec:
  cronSpec: "* * * * */5"
  image: my-cron-image
  bogus: dropped
"""


@pytest.fixture(scope="module")
def srv():
    with running_apiserver("kptest-crd-") as s:
        yield s


def test_crd_with_kubectl(srv) -> None:
    srv.kubectl("apply", "-f", "-", input=CRD)
    srv.kubectl("wait", "--for=condition=Established", "crd/crontabs.kptest.example.com", "--timeout=20s")
    resources = srv.kubectl("api-resources", "--api-group=kptest.example.com").stdout
    assert "crontabs" in resources and "ct" in resources and "CronTab" in resources, resources
    explained = srv.kubectl("explain", "crontabs.spec").stdout
    assert "cronSpec" in explained and "The schedule, in cron format." in explained, explained

    strict = srv.kubectl("apply", "-f", "-", input=CR, check=False)  # kubectl's default: --validate=strict
    assert strict.returncode != 0 and 'unknown field "spec.bogus"' in strict.stderr, strict.stderr
    applied = srv.kubectl("apply", "--validate=warn", "-f", "-", input=CR)
    assert "created" in applied.stdout and 'unknown field "spec.bogus"' in applied.stderr, applied.stderr
    got = json.loads(srv.kubectl("get", "ct", "my-cron", "-o", "json").stdout)
    assert got["spec"]["replicas"] == 1 and "bogus" not in got["spec"]  # defaulted, pruned
    table = srv.kubectl("get", "ct").stdout.splitlines()
    assert table[0].split() == ["NAME", "SPEC", "REPLICAS"] and table[1].split()[:2] == ["my-cron", "*"], table
    assert "crontab.kptest.example.com/my-cron" in srv.kubectl("get", "all").stdout

    srv.kubectl("scale", "crontab/my-cron", "--replicas=3")
    assert json.loads(srv.kubectl("get", "ct", "my-cron", "-o", "json").stdout)["spec"]["replicas"] == 3
    refused = srv.kubectl("scale", "crontab/my-cron", "--replicas=9", check=False)
    assert refused.returncode != 0 and 'spec: Invalid value: "object": at most 5 replicas' in refused.stderr
    bad = srv.kubectl("apply", "-f", "-", check=False, input=CR.replace("  bogus: dropped\n", "").replace(
        '"* * * * */5"', "12"))
    assert bad.returncode != 0
    assert 'spec.cronSpec: Invalid value: "integer": spec.cronSpec in body must be of type string: "integer"' \
        in bad.stderr, bad.stderr

    srv.kubectl("delete", "crd", "crontabs.kptest.example.com", "--timeout=30s")
    gone = srv.kubectl("get", "crontabs.kptest.example.com", check=False)
    assert gone.returncode != 0 and "the server doesn't have a resource type" in gone.stderr, gone.stderr


@pytest.mark.etcd
def test_a_crd_made_through_one_api_server_is_served_by_another() -> None:
    """Two API servers on one etcd: the second learns of the CRD from the store, not from a request."""
    import contextlib

    from tests.etcd import running_etcd

    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(running_etcd())
        extra = ["--store", "etcd://" + endpoint.removeprefix("http://")]
        a = stack.enter_context(running_apiserver("kptest-crd-a-", extra=extra))
        b = stack.enter_context(running_apiserver("kptest-crd-b-", extra=extra))
        a.kubectl("apply", "-f", "-", input=CRD)
        b.kubectl("wait", "--for=condition=Established", "crd/crontabs.kptest.example.com", "--timeout=20s")
        deadline = time.monotonic() + 20
        while "crontabs" not in b.kubectl("api-resources", "--api-group=kptest.example.com").stdout:
            assert time.monotonic() < deadline, "the second API server never served crontabs"
            time.sleep(0.2)
        b.kubectl("apply", "--validate=false", "-f", "-", input=CR)
        assert a.kubectl("get", "ct", "my-cron", "-o", "name").stdout.strip() == "crontab.kptest.example.com/my-cron"
        a.kubectl("delete", "crd", "crontabs.kptest.example.com", "--timeout=30s")
        while b.kubectl("get", "crontabs.kptest.example.com", check=False).returncode == 0:
            assert time.monotonic() < deadline + 20, "the second API server still serves crontabs"
            time.sleep(0.2)
