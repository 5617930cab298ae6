"""ValidatingAdmissionPolicy with stock kubectl against a real ``kubepy apiserver`` process.

The documentation's example ("Validating Admission Policy"): a policy that
allows at most 5 replicas per Deployment, bound with Deny to namespaces
labelled ``environment: test`` and with Warn to ``environment: staging``.
kubectl prints the denial (create, apply, patch) and the warning as it does against Kubernetes;
policies and bindings take effect without a restart; ``kubectl get`` shows
upstream's columns.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import running_apiserver

pytestmark = pytest.mark.slow

POLICY = """\
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: demo-policy.example.com
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups:   ["apps"]
      apiVersions: ["v1"]
      operations:  ["CREATE", "UPDATE"]
      resources:   ["deployments"]
  validations:
  - expression: "object.spec.replicas <= 5"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: demo-binding-test.example.com
spec:
  policyName: demo-policy.example.com
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels:
        environment: test
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: demo-binding-staging.example.com
spec:
  policyName: demo-policy.example.com
  validationActions: [Warn]
  matchResources:
    namespaceSelector:
      matchLabels:
        environment: staging
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: big
spec:
  replicas: 6
  selector:
    matchLabels: {app: big}
  template:
    metadata:
      labels: {app: big}
    spec:
      containers:
      - name: c
        image: busybox
"""


def test_kubectl_shows_a_policy_denial_and_a_warning() -> None:
    with running_apiserver() as srv:
        srv.kubectl("create", "namespace", "test")
        srv.kubectl("label", "namespace", "test", "environment=test")
        srv.kubectl("create", "namespace", "staging")
        srv.kubectl("label", "namespace", "staging", "environment=staging")
        out = srv.kubectl("apply", "-f", "-", input=POLICY).stdout
        assert "validatingadmissionpolicy.admissionregistration.k8s.io/demo-policy.example.com created" in out
        # Admission follows the store's watch: the policy applies within moments, without a restart.
        deadline = time.monotonic() + 10
        while True:
            cp = srv.kubectl("create", "deployment", "web", "--image=busybox", "--replicas=6", "-n", "test",
                             check=False)
            if cp.returncode != 0 or time.monotonic() > deadline:
                break
            srv.kubectl("delete", "deployment", "web", "-n", "test")
            time.sleep(0.2)
        assert cp.returncode == 1, (cp.stdout, cp.stderr)
        assert cp.stderr.strip() == (
            'error: failed to create deployment: deployments.apps "web" is forbidden: ValidatingAdmissionPolicy '
            "'demo-policy.example.com' with binding 'demo-binding-test.example.com' denied request: failed "
            "expression: object.spec.replicas <= 5"), cp.stderr
        # kubectl apply prints a 422's cause as it does for Kubernetes (the cause names no field).
        cp = srv.kubectl("apply", "-n", "test", "-f", "-", check=False, input=DEPLOYMENT)
        assert cp.returncode == 1
        assert cp.stderr.strip() == (
            'The deployments "big" is invalid: : ValidatingAdmissionPolicy \'demo-policy.example.com\' with binding '
            "'demo-binding-test.example.com' denied request: failed expression: object.spec.replicas <= 5"), cp.stderr
        srv.kubectl("create", "deployment", "web", "--image=busybox", "--replicas=5", "-n", "test")
        cp = srv.kubectl("patch", "deployment", "web", "-n", "test", "-p", '{"spec":{"replicas":7}}', check=False)
        assert cp.returncode == 1
        assert cp.stderr.strip() == (
            'The deployments "web" is invalid: : ValidatingAdmissionPolicy \'demo-policy.example.com\' with binding '
            "'demo-binding-test.example.com' denied request: failed expression: object.spec.replicas <= 5"), cp.stderr

        cp = srv.kubectl("create", "deployment", "web", "--image=busybox", "--replicas=6", "-n", "staging")
        assert "deployment.apps/web created" in cp.stdout
        assert cp.stderr.strip() == (
            "Warning: Validation failed for ValidatingAdmissionPolicy 'demo-policy.example.com' with binding "
            "'demo-binding-staging.example.com': failed expression: object.spec.replicas <= 5"), cp.stderr

        out = srv.kubectl("get", "validatingadmissionpolicies").stdout.splitlines()
        assert out[0].split() == ["NAME", "VALIDATIONS", "PARAMKIND", "AGE"]
        assert out[1].split()[:3] == ["demo-policy.example.com", "1", "<unset>"]
        out = srv.kubectl("get", "validatingadmissionpolicybindings").stdout.splitlines()
        assert out[0].split() == ["NAME", "POLICYNAME", "PARAMREF", "AGE"]
        assert [line.split()[:3] for line in out[1:]] == [
            ["demo-binding-staging.example.com", "demo-policy.example.com", "<unset>"],
            ["demo-binding-test.example.com", "demo-policy.example.com", "<unset>"]]
        # The status the server wrote, and the types kubectl explains from the OpenAPI document.
        deadline = time.monotonic() + 10
        while srv.kubectl("get", "validatingadmissionpolicy", "demo-policy.example.com", "-o",
                          "jsonpath={.status.observedGeneration}").stdout != "1":
            assert time.monotonic() < deadline, "status.observedGeneration never written"
            time.sleep(0.1)
        out = srv.kubectl("explain", "validatingadmissionpolicy.spec.validations.reason").stdout
        assert "GROUP:      admissionregistration.k8s.io" in out and "FIELD: reason <string>" in out, out
