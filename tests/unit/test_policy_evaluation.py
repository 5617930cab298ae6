"""ValidatingAdmissionPolicy's evaluation as a pure function (kubepy.api.policyevaluation.evaluate), by tables.

The decisions of one policy for one request: matchConditions, variables in
order, validations with message/messageExpression/reason, failurePolicy for
expressions that fail at run time, and the ``authorizer`` library asking a
fake authorizer that records what it was asked.
"""

from __future__ import annotations

from typing import Any

import pytest

from kubepy import kinds
from kubepy.api import admissioncel, authz
from kubepy.api.admission import CREATE, Attributes
from kubepy.api.policyevaluation import Decision, evaluate


class User:
    name, uid, groups, extra = "jane", "", ("dev",), {}


class FakeAuthorizer:
    """Allows ``update`` only; records every question."""

    def __init__(self) -> None:
        self.asked: list[authz.Attributes] = []

    def authorize(self, attrs: authz.Attributes) -> authz.Decision:
        self.asked.append(attrs)
        if attrs.verb == "update":
            return authz.ALLOWED
        return authz.Decision(authz.NO_OPINION, "no RBAC policy matched")


def request(replicas: int, labels: dict[str, str] | None = None) -> Attributes:
    obj = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": "team", "labels": labels or {}},
           "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    return Attributes(res=kinds.lookup("apps", "v1", "deployments"), namespace="team", obj=obj, old=None,
                      operation=CREATE, user=User())


def decide(spec: dict[str, Any], a: Attributes, decider: Any = None) -> list[Decision]:
    variables = admissioncel.activation(a, authorizer=decider or FakeAuthorizer(),
                                        namespace_object={"metadata": {"name": "team", "labels": {"tier": "gold"}}})
    decisions, _ = evaluate(spec, variables)
    return decisions


@pytest.mark.parametrize("spec,replicas,want", [
    # the documentation's policy
    ({"validations": [{"expression": "object.spec.replicas <= 5"}]}, 5, []),
    ({"validations": [{"expression": "object.spec.replicas <= 5"}]}, 6,
     [("failed expression: object.spec.replicas <= 5", "Invalid")]),
    # message, and messageExpression over it; reason
    ({"validations": [{"expression": "object.spec.replicas <= 5", "message": "  at most 5  ", "reason": "Forbidden"}]},
     6, [("at most 5", "Forbidden")]),
    ({"validations": [{"expression": "object.spec.replicas <= 5", "message": "fallback",
                       "messageExpression": "'replicas ' + string(object.spec.replicas) + ' > 5'"}]},
     6, [("replicas 6 > 5", "Invalid")]),
    # a messageExpression that fails or gives several lines falls back to message
    ({"validations": [{"expression": "false", "message": "fallback", "messageExpression": "object.nope"}]},
     1, [("fallback", "Invalid")]),
    ({"validations": [{"expression": "false", "messageExpression": "'a\\nb'"}]}, 1, [("failed expression: false",
                                                                                       "Invalid")]),
    # variables, each seeing the ones before it; namespaceObject
    ({"variables": [{"name": "limit", "expression": "namespaceObject.metadata.labels.tier == 'gold' ? 10 : 2"},
                    {"name": "over", "expression": "object.spec.replicas > variables.limit"}],
      "validations": [{"expression": "!variables.over", "messageExpression": "'limit is ' + "
                                                                             "string(variables.limit)"}]},
     11, [("limit is 10", "Invalid")]),
    # a variable that fails makes the validations using it fail (failurePolicy Fail: a denial)
    ({"variables": [{"name": "bad", "expression": "object.spec.nope"}],
      "validations": [{"expression": "variables.bad == 1"}, {"expression": "true"}]},
     1, [("expression 'variables.bad == 1' resulted in error: composited variable \"bad\" fails to evaluate: "
          "no such key: nope", "")]),
    # … and only those: a variable whose name extends the failed one's is its own
    ({"variables": [{"name": "bad", "expression": "object.spec.nope"}, {"name": "badge", "expression": "1"},
                    {"name": "worse", "expression": "variables.bad + 1"}],
      "validations": [{"expression": "variables.badge == 1"}, {"expression": "variables.worse == 2"}]},
     1, [("expression 'variables.worse == 2' resulted in error: composited variable \"worse\" fails to evaluate: "
          "composited variable \"bad\" fails to evaluate: no such key: nope", "")]),
    ({"failurePolicy": "Ignore", "validations": [{"expression": "object.spec.nope == 1"}]}, 1, []),
    # matchConditions: false → the policy does not apply; an error under Fail → a denial
    ({"matchConditions": [{"name": "big", "expression": "object.spec.replicas > 100"}],
      "validations": [{"expression": "false"}]}, 1, []),
    ({"matchConditions": [{"name": "broken", "expression": "object.spec.nope > 1"}],
      "validations": [{"expression": "false"}]}, 1,
     [("expression 'object.spec.nope > 1' resulted in error: no such key: nope", "")]),
    ({"failurePolicy": "Ignore", "matchConditions": [{"name": "broken", "expression": "object.spec.nope > 1"}],
      "validations": [{"expression": "false"}]}, 1, []),
    # the authorizer: the fake allows update only
    ({"validations": [{"expression": "authorizer.group('apps').resource('deployments').subresource('scale')"
                                     ".namespace('team').check('update').allowed()"}]}, 9, []),
    ({"validations": [{"expression": "authorizer.requestResource.check('create').allowed()",
                       "messageExpression": "authorizer.requestResource.check('create').reason()"}]}, 1,
     [("no RBAC policy matched", "Invalid")]),
    ({"validations": [{"expression": "!authorizer.path('/metrics').check('get').allowed() && "
                                     "authorizer.serviceAccount('team', 'bot').check('update').allowed()"}]}, 1, []),
])
def test_decisions(spec: dict[str, Any], replicas: int, want: list[tuple[str, str]]) -> None:
    got = decide(spec, request(replicas))
    assert [(d.message, d.reason) for d in got] == want


def test_the_authorizer_is_asked_for_the_requesting_user_and_what_the_expression_names() -> None:
    fake = FakeAuthorizer()
    decide({"validations": [{"expression": "authorizer.group('apps').resource('deployments').subresource('scale')"
                                           ".namespace('team').name('web').check('update').allowed()"},
                            {"expression": "authorizer.requestResource.check('create').allowed()"},
                            {"expression": "authorizer.path('/healthz').check('get').allowed()"}]},
           request(1), fake)
    assert [(q.user.name, q.verb, q.is_resource, q.api_group, q.resource, q.subresource, q.namespace, q.name, q.path)
            for q in fake.asked] == [
        ("jane", "update", True, "apps", "deployments", "scale", "team", "web", ""),
        ("jane", "create", True, "apps", "deployments", "", "team", "web", ""),
        ("jane", "get", False, "", "", "", "", "", "/healthz")]


def test_an_expression_that_runs_out_of_budget_is_cancelled_as_upstream_cancels_it(monkeypatch) -> None:
    from kubepy.kinds import cel
    monkeypatch.setattr(cel._BudgetedRunner, "limit", 500)
    admissioncel._PROGRAMS.clear()
    spec = {"validations": [{"expression": "object.spec.template.spec.containers.all(c, "
                                           "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10].all(i, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"
                                           ".all(j, i * j > 0)))"}]}
    got = decide(spec, request(1))
    assert [d.message for d in got] == [
        f"expression '{spec['validations'][0]['expression']}' resulted in error: operation cancelled: actual cost "
        "limit exceeded"]
    monkeypatch.setattr(cel._BudgetedRunner, "limit", cel.PER_CALL_LIMIT)
    assert decide(spec, request(1)) == []
    admissioncel._PROGRAMS.clear()
