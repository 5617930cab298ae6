"""Status bodies byte for byte as Kubernetes serializes them (clients compare them)."""

from __future__ import annotations

import json

from kubepy.api.errors import Invalid, NotFound


def test_not_found_status_as_kubernetes_writes_it():
    # kube-apiserver 1.3x, GET /api/v1/namespaces/default/pods/nope
    want = ('{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
            '"message":"pods \\"nope\\" not found","reason":"NotFound",'
            '"details":{"name":"nope","kind":"pods"},"code":404}')
    err = NotFound('pods "nope" not found', details={"name": "nope", "group": "", "kind": "pods"})
    assert json.dumps(err.status(), separators=(",", ":")) == want


def test_invalid_status_field_order_and_group():
    err = Invalid("Deployment", "web", [{"reason": "FieldValueRequired", "message": "Required value",
                                         "field": "spec.selector"}], group="apps")
    body = err.status()
    assert list(body) == ["kind", "apiVersion", "metadata", "status", "message", "reason", "details", "code"]
    assert list(body["details"]) == ["name", "group", "kind", "causes"]
    core = Invalid("Pod", "p", [{"reason": "FieldValueRequired", "message": "Required value", "field": "x"}])
    assert "group" not in core.status()["details"]
