"""ValidatingAdmissionPolicy in process: the API server's app, policies and bindings written through it.

Table-driven from the examples of the Kubernetes documentation page
"Validating Admission Policy" (the ``replicas <= 5`` policy bound to
namespaces labelled ``environment: test``, params from a resource,
``messageExpression``, ``variables``, ``matchConditions``, validation
actions), checked in upstream's words: the denial's message, code, reason
and cause, the Warn action's ``Warning`` header, failurePolicy with
expressions that fail at run time and missing params, and the kinds'
validation and printer columns.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kubepy.api import auth
from kubepy.api.policyadmission import ValidatingAdmissionPolicy
from kubepy.api.server import APIServer, ServerConfig
from kubepy.kinds import by_plural
from kubepy.store.base import open_store
from tests.api.test_semantics import call

VAP = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
VAPB = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


@dataclass
class Env:
    api: TestClient
    server: APIServer

    @property
    def plugin(self) -> ValidatingAdmissionPolicy:
        return next(p for p in self.server.storage.admission.plugins if isinstance(p, ValidatingAdmissionPolicy))

    async def seen(self, plural: str, name: str, generation: int | None = None) -> None:
        """Wait until admission's copy holds the object (its store watch may lag a delivery)."""
        mirror = self.plugin.policies if plural == "validatingadmissionpolicies" else self.plugin.bindings
        key = by_plural(plural).key(None, name)
        for _ in range(300):
            got = await mirror.get(key)
            if got is not None and (generation is None or got["metadata"].get("generation") == generation):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{plural}/{name} never reached admission")

    async def policy(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        made = await call(self.api, "POST", VAP, {"metadata": {"name": name}, "spec": spec}, status=201)
        await self.seen("validatingadmissionpolicies", name)
        return made

    async def binding(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        made = await call(self.api, "POST", VAPB, {"metadata": {"name": name}, "spec": spec}, status=201)
        await self.seen("validatingadmissionpolicybindings", name)
        return made

    async def namespace(self, name: str, labels: dict[str, str]) -> None:
        await call(self.api, "POST", "/api/v1/namespaces", {"metadata": {"name": name, "labels": labels}},
                   status=201)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = open_store("sqlite", data_dir=str(tmp_path))
    server = APIServer(store, ServerConfig(data_dir=tmp_path))
    await server.start()
    token = auth.token_for(auth.load_or_create_static_tokens(tmp_path), group=auth.MASTERS)
    client = TestClient(TestServer(server.app()), headers={"Authorization": f"Bearer {token}"})
    await client.start_server()
    try:
        yield Env(client, server)
    finally:
        await client.close()
        await server.stop()
        await store.close()


def deployments(ns: str) -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments"


def deployment(name: str, replicas: int, *, image: str = "busybox", labels: dict[str, str] | None = None
               ) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}}


DEPLOYMENT_RULES = {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                                       "resources": ["deployments"]}]}


# -- the documentation's first example ------------------------------------------------------------------
async def test_the_docs_replicas_policy_denies_in_test_namespaces_only_in_upstreams_words(env: Env) -> None:
    await env.namespace("test", {"environment": "test"})
    await env.namespace("prod", {"environment": "prod"})
    made = await env.policy("demo-policy.example.com", {"failurePolicy": "Fail", "matchConstraints": DEPLOYMENT_RULES,
                                                        "validations": [{"expression": "object.spec.replicas <= 5"}]})
    assert made["spec"]["matchConstraints"]["matchPolicy"] == "Equivalent"
    assert made["spec"]["matchConstraints"]["resourceRules"][0]["scope"] == "*"
    await env.binding("demo-binding-test.example.com", {
        "policyName": "demo-policy.example.com", "validationActions": ["Deny"],
        "matchResources": {"namespaceSelector": {"matchLabels": {"environment": "test"}}}})
    message = ('deployments.apps "big" is forbidden: ValidatingAdmissionPolicy \'demo-policy.example.com\' with '
               "binding 'demo-binding-test.example.com' denied request: failed expression: object.spec.replicas <= 5")
    body = await call(env.api, "POST", deployments("test"), deployment("big", 6), status=422)
    assert body["message"] == message
    assert (body["reason"], body["code"]) == ("Invalid", 422)
    assert body["details"] == {"name": "big", "group": "apps", "kind": "deployments",
                               "causes": [{"message": message.split(": ", 1)[1]}]}
    await call(env.api, "POST", deployments("test"), deployment("small", 5), status=201)
    await call(env.api, "POST", deployments("prod"), deployment("big", 6), status=201)  # not bound there
    # UPDATE is matched too; the stored object stays as it was.
    body = await call(env.api, "PATCH", f"{deployments('test')}/small", {"spec": {"replicas": 7}},
                      content_type="application/merge-patch+json", status=422)
    assert body["message"].endswith("denied request: failed expression: object.spec.replicas <= 5")
    assert (await call(env.api, "GET", f"{deployments('test')}/small"))["spec"]["replicas"] == 5
    # Deleting the binding lifts the policy at once (no restart).
    await call(env.api, "DELETE", f"{VAPB}/demo-binding-test.example.com")
    for _ in range(300):
        if not await env.plugin.bindings.all():
            break
        await asyncio.sleep(0.01)
    await call(env.api, "POST", deployments("test"), deployment("big", 6), status=201)


# -- params, messageExpression, reason ----------------------------------------------------------------
PARAM_POLICY = {
    "failurePolicy": "Fail",
    "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
    "matchConstraints": DEPLOYMENT_RULES,
    "validations": [{"expression": "object.spec.replicas <= int(params.data.maxReplicas)", "reason": "Forbidden",
                     "messageExpression": "'object.spec.replicas must be no greater than ' + params.data.maxReplicas"}],
}


async def test_params_from_a_configmap_with_a_message_expression_and_a_reason(env: Env) -> None:
    await env.policy("replicalimit-policy.example.com", PARAM_POLICY)
    await env.binding("replicalimit-binding.example.com", {
        "policyName": "replicalimit-policy.example.com", "validationActions": ["Deny"],
        "paramRef": {"name": "replica-limit", "namespace": "default", "parameterNotFoundAction": "Deny"}})
    # No param yet: the binding cannot be applied, and Deny says so.
    body = await call(env.api, "POST", deployments("default"), deployment("d0", 1), status=422)
    assert body["message"] == (
        'deployments.apps "d0" is forbidden: ValidatingAdmissionPolicy \'replicalimit-policy.example.com\' with '
        "binding 'replicalimit-binding.example.com' denied request: failed to configure binding: no params found "
        "for policy binding with `Deny` parameterNotFoundAction")
    await call(env.api, "POST", "/api/v1/namespaces/default/configmaps",
               {"metadata": {"name": "replica-limit"}, "data": {"maxReplicas": "3"}}, status=201)
    body = await call(env.api, "POST", deployments("default"), deployment("d1", 4), status=403)
    assert body["message"].endswith("denied request: object.spec.replicas must be no greater than 3")
    assert (body["reason"], body["code"]) == ("Forbidden", 403)
    await call(env.api, "POST", deployments("default"), deployment("d2", 3), status=201)
    # The param is read per request: a new limit applies to the next write.
    await call(env.api, "PATCH", "/api/v1/namespaces/default/configmaps/replica-limit",
               {"data": {"maxReplicas": "10"}}, content_type="application/merge-patch+json")
    await call(env.api, "POST", deployments("default"), deployment("d3", 4), status=201)


@pytest.mark.parametrize("param_ref,status,ending", [
    # a selector picks every labelled ConfigMap in the request's namespace: each must allow it
    ({"selector": {"matchLabels": {"limits": "replicas"}}, "parameterNotFoundAction": "Deny"}, 403,
     "must be no greater than 2"),
    # nothing found under Allow: the binding does not apply
    ({"name": "absent", "parameterNotFoundAction": "Allow"}, 201, ""),
    ({"name": "absent", "parameterNotFoundAction": "Deny"}, 422,
     "failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"),
])
async def test_param_refs_by_selector_and_parameter_not_found_action(env: Env, param_ref: dict[str, Any],
                                                                     status: int, ending: str) -> None:
    for name, limit in (("a", "4"), ("b", "2")):
        await call(env.api, "POST", "/api/v1/namespaces/default/configmaps", {
            "metadata": {"name": name, "labels": {"limits": "replicas"}}, "data": {"maxReplicas": limit}}, status=201)
    await env.policy("p.example.com", PARAM_POLICY)
    await env.binding("b.example.com", {"policyName": "p.example.com", "validationActions": ["Deny"],
                                        "paramRef": param_ref})
    body = await call(env.api, "POST", deployments("default"), deployment("d", 3), status=status)
    if ending:
        assert body["message"].endswith(ending), body["message"]


# -- validation actions ---------------------------------------------------------------------------------
async def test_warn_sends_a_warning_header_and_audit_lets_the_write_through(env: Env) -> None:
    await env.policy("warn-policy.example.com", {"matchConstraints": DEPLOYMENT_RULES, "validations": [
        {"expression": "object.spec.replicas <= 5", "message": "more than 5 replicas"}]})
    await env.binding("warn-binding.example.com", {"policyName": "warn-policy.example.com",
                                                   "validationActions": ["Warn", "Audit"]})
    resp = await env.api.post(deployments("default"), json=deployment("w", 6))
    assert resp.status == 201, await resp.text()
    assert resp.headers.getall("Warning") == [
        "299 - \"Validation failed for ValidatingAdmissionPolicy 'warn-policy.example.com' with binding "
        "'warn-binding.example.com': more than 5 replicas\""]
    resp = await env.api.post(deployments("default"), json=deployment("ok", 5))
    assert resp.status == 201 and "Warning" not in resp.headers


# -- variables, matchConditions, namespaceObject, oldObject -------------------------------------------------
async def test_variables_match_conditions_namespace_object_and_old_object(env: Env) -> None:
    await env.namespace("prod", {"environment": "prod"})
    await env.namespace("dev", {"environment": "dev"})
    await env.policy("image-policy.example.com", {
        "matchConstraints": DEPLOYMENT_RULES,
        "matchConditions": [{"name": "not-exempt",
                             "expression": "!has(object.metadata.labels) || !('exempt' in object.metadata.labels)"}],
        "variables": [
            {"name": "environment", "expression": "namespaceObject.metadata.labels['environment']"},
            {"name": "containers", "expression": "object.spec.template.spec.containers"},
            {"name": "unpinned", "expression": "variables.containers.filter(c, !c.image.contains('@sha256:'))"},
        ],
        "validations": [
            {"expression": "variables.environment != 'prod' || size(variables.unpinned) == 0",
             "messageExpression": "'images in ' + variables.environment + ' must be pinned: ' + "
                                  "variables.unpinned.map(c, c.name).join(', ')"},
            {"expression": "request.operation != 'UPDATE' || object.spec.replicas >= oldObject.spec.replicas",
             "message": "replicas may not go down"},
        ]})
    await env.binding("image-binding.example.com", {"policyName": "image-policy.example.com",
                                                    "validationActions": ["Deny"]})
    body = await call(env.api, "POST", deployments("prod"), deployment("web", 1), status=422)
    assert body["message"].endswith("denied request: images in prod must be pinned: c"), body["message"]
    await call(env.api, "POST", deployments("prod"), deployment("exempt", 1, labels={"exempt": "yes"}), status=201)
    await call(env.api, "POST", deployments("prod"), deployment("pinned", 2, image="busybox@sha256:" + "a" * 64),
               status=201)
    await call(env.api, "POST", deployments("dev"), deployment("web", 2), status=201)
    body = await call(env.api, "PATCH", f"{deployments('dev')}/web", {"spec": {"replicas": 1}},
                      content_type="application/merge-patch+json", status=422)
    assert body["message"].endswith("denied request: replicas may not go down")
    await call(env.api, "PATCH", f"{deployments('dev')}/web", {"spec": {"replicas": 3}},
               content_type="application/merge-patch+json")


# -- failurePolicy ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("failure_policy,status", [("Fail", 422), ("Ignore", 201)])
async def test_an_expression_that_fails_at_run_time_follows_the_failure_policy(env: Env, failure_policy: str,
                                                                               status: int) -> None:
    await env.policy("p.example.com", {"failurePolicy": failure_policy, "matchConstraints": DEPLOYMENT_RULES,
                                       "validations": [{"expression": "object.spec.paused == false"}]})
    await env.binding("b.example.com", {"policyName": "p.example.com", "validationActions": ["Deny"]})
    body = await call(env.api, "POST", deployments("default"), deployment("d", 1), status=status)
    if status == 422:
        assert body["message"] == (
            'deployments.apps "d" is forbidden: ValidatingAdmissionPolicy \'p.example.com\' with binding '
            "'b.example.com' denied request: expression 'object.spec.paused == false' resulted in error: "
            "no such key: paused")


# -- the kinds --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path,body,want", [
    (VAP, {"matchConstraints": DEPLOYMENT_RULES, "validations": [
        {"expression": "object.spec.replicas <= ", "reason": "Teapot", "message": "two\nlines"}]}, [
        ("spec.validations[0].expression", 'Invalid value: "object.spec.replicas <= ": compilation failed: ERROR: '
                                          "<input>:1:22: Syntax error: object.spec.replicas <= "),
        ("spec.validations[0].reason", 'Unsupported value: "Teapot": supported values: "Forbidden", "Invalid", '
                                      '"RequestEntityTooLarge", "Unauthorized"'),
        ("spec.validations[0].message", 'Invalid value: "two\\nlines": message must not contain line breaks'),
    ]),
    (VAP, {"failurePolicy": "Sometimes", "validations": [], "variables": [
        {"name": "1x", "expression": "x"}, {"name": "a", "expression": "1"}, {"name": "a", "expression": "2"}]}, [
        ("spec.variables[2].name", 'Duplicate value: "a"'),
        ("spec.failurePolicy", 'Unsupported value: "Sometimes": supported values: "Fail", "Ignore"'),
        ("spec.matchConstraints", "Required value"),
        ("spec.validations", "Required value: validations or auditAnnotations must contain at least one item"),
        ("spec.variables[0].name", 'Invalid value: "1x": name is not a valid CEL identifier'),
        ("spec.variables[0].expression", "Invalid value: \"x\": compilation failed: ERROR: <input>:1:1: undeclared "
                                         "reference to 'x' (in container '')"),
    ]),
    (VAP, {"matchConstraints": DEPLOYMENT_RULES, "validations": [{"expression": "variables.nope == 1"},
                                                                 {"expression": ""}],
           "paramKind": {"kind": "ConfigMap"},
           "auditAnnotations": [{"key": "a", "valueExpression": "'x'"}, {"key": "a", "valueExpression": "'y'"}]}, [
        ("spec.auditAnnotations[1].key", 'Duplicate value: "a"'),
        ("spec.validations[0].expression", "Invalid value: \"variables.nope == 1\": compilation failed: ERROR: "
                                           "<input>:1:10: undefined field 'nope'"),
        ("spec.validations[1].expression", "Required value: expression is not specified"),
        ("spec.paramKind.apiVersion", "Required value"),
    ]),
    (VAP, {"matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CONNECT"],
                                                   "resources": ["pods/exec"]}], "matchPolicy": "Roughly"},
           "validations": [{"expression": "true"}]}, [
        ("spec.matchConstraints.matchPolicy", 'Unsupported value: "Roughly": supported values: "Equivalent", "Exact"'),
        ("spec.matchConstraints.resourceRules[0].operations[0]", "Forbidden: CONNECT requests (exec, attach, "
                                                                 "port-forward) are not sent to admission policies by "
                                                                 "this API server"),
        ("spec.matchConstraints.resourceRules[0].resources[0]", "Forbidden: the exec subresource is not sent to "
                                                                "admission policies by this API server"),
    ]),
    (VAPB, {"policyName": "p", "validationActions": ["Deny", "Warn", "Deny", "Block"],
            "paramRef": {"name": "x", "selector": {}}}, [
        ("spec.validationActions[2]", 'Duplicate value: "Deny"'),
        ("spec.validationActions[3]", 'Unsupported value: "Block": supported values: "Audit", "Deny", "Warn"'),
        ("spec.validationActions", 'Invalid value: ["Deny","Warn","Deny","Block"]: must not contain both Deny and '
                                   "Warn (repeating the same validation failure information in the API response "
                                   "and headers serves no purpose)"),
        ("spec.paramRef.name", "Forbidden: name and selector are mutually exclusive"),
        ("spec.paramRef.parameterNotFoundAction", "Required value"),
    ]),
    (VAPB, {"validationActions": []}, [
        ("spec.policyName", "Required value"),
        ("spec.validationActions", "Required value: at least one validation action is required"),
    ]),
])
async def test_policies_and_bindings_are_validated_as_upstream(env: Env, path: str, body: dict[str, Any],
                                                               want: list[tuple[str, str]]) -> None:
    got = await call(env.api, "POST", path, {"metadata": {"name": "x"}, "spec": body}, status=422)
    causes = {(c["field"], c["message"]) for c in got["details"]["causes"]}
    for w in want:
        assert w in causes, (w, causes)


async def test_tables_show_upstreams_columns(env: Env) -> None:
    await env.policy("p.example.com", PARAM_POLICY)
    await env.binding("b.example.com", {"policyName": "p.example.com", "validationActions": ["Deny"],
                                        "paramRef": {"name": "limits", "parameterNotFoundAction": "Allow"}})
    resp = await env.api.get(VAP, headers={"Accept": TABLE})
    table = await resp.json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Validations", "ParamKind", "Age"]
    assert table["rows"][0]["cells"][:3] == ["p.example.com", 1, "v1/ConfigMap"]
    resp = await env.api.get(VAPB, headers={"Accept": TABLE})
    table = await resp.json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "PolicyName", "ParamRef", "Age"]
    assert table["rows"][0]["cells"][:3] == ["b.example.com", "p.example.com", "*/limits"]


async def test_the_server_writes_the_observed_generation_and_status_is_a_subresource(env: Env) -> None:
    await env.policy("p.example.com", {"matchConstraints": DEPLOYMENT_RULES,
                                       "validations": [{"expression": "object.spec.replicas <= 5"}]})

    async def status_of_generation(generation: int) -> dict[str, Any]:
        for _ in range(300):
            got = await call(env.api, "GET", f"{VAP}/p.example.com")
            if (got.get("status") or {}).get("observedGeneration") == generation:
                return got
            await asyncio.sleep(0.01)
        raise AssertionError(f"observedGeneration never reached {generation}: {got.get('status')}")
    got = await status_of_generation(1)
    assert got["status"] == {"observedGeneration": 1, "typeChecking": {}}
    await call(env.api, "PATCH", f"{VAP}/p.example.com", {"spec": {"validations": [
        {"expression": "object.spec.replicas <= 3"}]}}, content_type="application/merge-patch+json")
    got = await status_of_generation(2)
    assert got["metadata"]["generation"] == 2
    # status is written through /status only: a spec write's status is dropped.
    await call(env.api, "PATCH", f"{VAP}/p.example.com", {"status": {"observedGeneration": 9}},
               content_type="application/merge-patch+json")
    assert (await call(env.api, "GET", f"{VAP}/p.example.com"))["status"]["observedGeneration"] == 2


async def test_delete_sees_the_old_object_and_the_request_names_the_user(env: Env) -> None:
    await env.policy("protect.example.com", {
        "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["DELETE"],
                                                "resources": ["configmaps"]}]},
        "validations": [{"expression": "object == null && !(has(oldObject.metadata.labels) && "
                         "'protected' in oldObject.metadata.labels)",
                         "messageExpression": "request.userInfo.username + ' may not delete protected ' + "
                                              "request.resource.resource + ' in ' + request.namespace",
                         "reason": "Forbidden"}]})
    await env.binding("protect-binding.example.com", {"policyName": "protect.example.com",
                                                      "validationActions": ["Deny"]})
    cms = "/api/v1/namespaces/default/configmaps"
    await call(env.api, "POST", cms, {"metadata": {"name": "keep", "labels": {"protected": "yes"}}}, status=201)
    await call(env.api, "POST", cms, {"metadata": {"name": "drop"}}, status=201)
    body = await call(env.api, "DELETE", f"{cms}/keep", status=403)
    assert body["message"] == (
        'configmaps "keep" is forbidden: ValidatingAdmissionPolicy \'protect.example.com\' with binding '
        "'protect-binding.example.com' denied request: admin may not delete protected configmaps in default")
    await call(env.api, "GET", f"{cms}/keep")
    await call(env.api, "DELETE", f"{cms}/drop")


@pytest.mark.parametrize("failure_policy,status", [("Fail", 422), ("Ignore", 201)])
async def test_a_param_kind_the_server_does_not_serve_is_the_policys_configuration_error(
        env: Env, failure_policy: str, status: int) -> None:
    await env.policy("p.example.com", {**PARAM_POLICY, "failurePolicy": failure_policy,
                                       "paramKind": {"apiVersion": "rules.example.com/v1", "kind": "ReplicaLimit"}})
    await env.binding("b.example.com", {"policyName": "p.example.com", "validationActions": ["Deny"],
                                        "paramRef": {"name": "x", "parameterNotFoundAction": "Deny"}})
    body = await call(env.api, "POST", deployments("default"), deployment("d", 1), status=status)
    if status == 422:
        assert body["message"] == (
            'deployments.apps "d" is forbidden: ValidatingAdmissionPolicy \'p.example.com\' denied request: failed to '
            "configure policy: failed to find resource referenced by paramKind: 'rules.example.com/v1, "
            "Kind=ReplicaLimit'")
