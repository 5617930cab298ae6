"""Admission webhooks in process: the API server's app calling a real HTTPS webhook on loopback.

The webhook server is aiohttp with a certificate from a CA made here with
``cryptography``; each test says what its webhooks answer. Covers what
upstream's webhook admission promises: a refusal in upstream's words,
JSON patches, failurePolicy with a server that is down or hangs (never
held beyond timeoutSeconds), namespace/object selectors, dry run and side
effects, reinvocation, a Service resolved through its Endpoints, and the
configurations' validation.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubepy.api import auth
from kubepy.api.server import APIServer, ServerConfig
from kubepy.kinds import by_plural
from kubepy.store.base import open_store
from tests.api.test_semantics import call

VWC = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
MWC = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
CM = "/api/v1/namespaces/default/configmaps"


# -- certificates ------------------------------------------------------------
def make_ca_and_cert(*, dns: list[str], ips: list[str]) -> tuple[bytes, bytes, bytes]:
    """(CA PEM, serving certificate PEM, its key PEM): a self-signed CA and a cert it signed."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kptest-webhook-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem


# -- the webhook server --------------------------------------------------------
Answer = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class Hooks:
    """A loopback HTTPS server: ``answers[path]`` makes the ``response`` of each review POSTed to ``path``."""
    port: int = 0
    ca_bundle: str = ""
    answers: dict[str, Answer] = field(default_factory=dict)
    seen: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.seen.setdefault(request.path, []).append(review)
        response = await self.answers[request.path](review["request"])
        response.setdefault("uid", review["request"]["uid"])  # an answer may get it wrong on purpose
        return web.json_response({"apiVersion": review["apiVersion"], "kind": "AdmissionReview",
                                  "response": response})


def allow(**extra: Any) -> Answer:
    async def answer(req: dict[str, Any]) -> dict[str, Any]:
        return {"allowed": True, **extra}
    return answer


def patch(ops: list[dict[str, Any]]) -> dict[str, Any]:
    return {"allowed": True, "patchType": "JSONPatch", "patch": base64.b64encode(json.dumps(ops).encode()).decode()}


@dataclass
class Env:
    api: TestClient
    server: APIServer
    hooks: Hooks

    async def configure(self, kind: str, name: str, *webhooks: dict[str, Any]) -> None:
        """Create a configuration and wait until admission sees it (its store watch may lag a delivery)."""
        path, plural = (VWC, "validatingwebhookconfigurations") if kind == "validating" else \
            (MWC, "mutatingwebhookconfigurations")
        await call(self.api, "POST", path, {"metadata": {"name": name}, "webhooks": list(webhooks)}, status=201)
        plugin = next(p for p in self.server.storage.admission.plugins if getattr(p, "plural", "") == plural)
        key = by_plural(plural).key(None, name)
        for _ in range(200):
            if await plugin.configs.get(key) is not None:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{kind} configuration {name} never reached admission")

    def hook(self, name: str, path: str, **fields: Any) -> dict[str, Any]:
        rules = fields.pop("rules", [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                      "resources": ["configmaps"]}])
        return {"name": name, "clientConfig": {"url": self.hooks.url(path), "caBundle": self.hooks.ca_bundle},
                "rules": rules, "sideEffects": "None", "admissionReviewVersions": ["v1"], **fields}


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    ca, cert, key = make_ca_and_cert(dns=["hook.default.svc"], ips=["127.0.0.1"])
    (tmp_path / "hook.crt").write_bytes(cert)
    (tmp_path / "hook.key").write_bytes(key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "hook.crt", tmp_path / "hook.key")
    hooks = Hooks(ca_bundle=base64.b64encode(ca).decode())
    app = web.Application()
    app.router.add_post("/{tail:.*}", hooks.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    hooks.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    data = tmp_path / "api"
    data.mkdir()
    store = open_store("sqlite", data_dir=str(data))
    server = APIServer(store, ServerConfig(data_dir=data))
    await server.start()
    token = auth.token_for(auth.load_or_create_static_tokens(data), group=auth.MASTERS)
    client = TestClient(TestServer(server.app()), headers={"Authorization": f"Bearer {token}"})
    await client.start_server()
    try:
        yield Env(client, server, hooks)
    finally:
        await client.close()
        await server.stop()
        await store.close()
        await runner.cleanup()


def configmap(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}},
            "data": {"k": "v"}}


def free_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- tests ---------------------------------------------------------------------
async def test_a_validating_webhook_refuses_in_upstreams_words_and_its_warnings_reach_the_client(env: Env) -> None:
    async def deny_bad(req: dict[str, Any]) -> dict[str, Any]:
        if req["object"]["metadata"]["name"].startswith("bad"):
            return {"allowed": False, "status": {"code": 403, "reason": "Forbidden", "message": "bad names are bad"}}
        return {"allowed": True, "warnings": ["configmaps are watched"]}
    env.hooks.answers["/validate"] = deny_bad
    await env.configure("validating", "deny", env.hook("deny.kptest.example.com", "/validate"))
    body = await call(env.api, "POST", CM, configmap("bad-one"), status=403)
    assert body["message"] == 'admission webhook "deny.kptest.example.com" denied the request: bad names are bad'
    assert body["reason"] == "Forbidden"
    resp = await env.api.post(CM, json=configmap("good"))
    assert resp.status == 201
    assert resp.headers.getall("Warning") == ['299 - "configmaps are watched"']
    [_, review] = env.hooks.seen["/validate"]
    req = review["request"]
    assert review["apiVersion"] == "admission.k8s.io/v1"
    assert (req["operation"], req["kind"], req["resource"], req["namespace"], req["name"], req["dryRun"]) == (
        "CREATE", {"group": "", "version": "v1", "kind": "ConfigMap"},
        {"group": "", "version": "v1", "resource": "configmaps"}, "default", "good", False)
    assert req["userInfo"]["groups"][0] == auth.MASTERS and req["oldObject"] is None
    # A refusal without a code is a 400 at least, without a message upstream says so.
    env.hooks.answers["/validate"] = lambda req: asyncio.sleep(0, {"allowed": False})
    body = await call(env.api, "POST", CM, configmap("other"), status=400)
    assert body["message"] == 'admission webhook "deny.kptest.example.com" denied the request without explanation'


async def test_a_mutating_webhook_patch_adds_a_label_and_validation_sees_the_result(env: Env) -> None:
    env.hooks.answers["/mutate"] = lambda req: asyncio.sleep(0, patch(
        [{"op": "add", "path": "/metadata/labels/stamped", "value": "yes"}]))
    seen_by_validator: list[dict[str, str]] = []

    async def record(req: dict[str, Any]) -> dict[str, Any]:
        seen_by_validator.append(req["object"]["metadata"]["labels"])
        return {"allowed": True}
    env.hooks.answers["/validate"] = record
    await env.configure("mutating", "stamp", env.hook("stamp.kptest.example.com", "/mutate"))
    await env.configure("validating", "look", env.hook("look.kptest.example.com", "/validate"))
    made = await call(env.api, "POST", CM, configmap("m", {"a": "1"}), status=201)
    assert made["metadata"]["labels"] == {"a": "1", "stamped": "yes"}
    assert seen_by_validator == [{"a": "1", "stamped": "yes"}]
    got = await call(env.api, "GET", f"{CM}/m")
    assert got["metadata"]["labels"]["stamped"] == "yes"


async def test_a_down_webhook_is_ignored_or_fails_the_write_by_its_failure_policy(env: Env) -> None:
    down = {"url": f"https://127.0.0.1:{free_port()}/", "caBundle": env.hooks.ca_bundle}
    await env.configure("validating", "down-ignore", {**env.hook("ignore.kptest.example.com", "/"),
                                                      "clientConfig": down, "failurePolicy": "Ignore"})
    await call(env.api, "POST", CM, configmap("through"), status=201)
    await env.configure("mutating", "down-fail", {**env.hook("fail.kptest.example.com", "/"), "clientConfig": down})
    body = await call(env.api, "POST", CM, configmap("stopped"), status=500)
    assert body["reason"] == "InternalError"
    assert body["message"].startswith('Internal error occurred: failed calling webhook "fail.kptest.example.com": '
                                      f'failed to call webhook: Post "https://127.0.0.1:{down["url"].split(":")[2]}')
    await call(env.api, "GET", f"{CM}/stopped", status=404)


async def test_an_answer_for_another_request_is_a_failed_call(env: Env) -> None:
    env.hooks.answers["/wrong"] = lambda req: asyncio.sleep(0, {"allowed": True, "uid": "not-yours"})
    await env.configure("validating", "wrong", env.hook("wrong.kptest.example.com", "/wrong"))
    body = await call(env.api, "POST", CM, configmap("w"), status=500)
    assert body["message"].startswith('Internal error occurred: failed calling webhook "wrong.kptest.example.com": '
                                      "expected response.uid="), body["message"]
    await call(env.api, "PATCH", f"{VWC}/wrong", [{"op": "replace", "path": "/webhooks/0/failurePolicy",
                                                  "value": "Ignore"}], content_type="application/json-patch+json")
    for _ in range(200):
        plugin = env.server.storage.admission.plugins[-2]
        got = await plugin.configs.get(by_plural("validatingwebhookconfigurations").key(None, "wrong"))
        if got["webhooks"][0]["failurePolicy"] == "Ignore":
            break
        await asyncio.sleep(0.01)
    await call(env.api, "POST", CM, configmap("w"), status=201)


@pytest.mark.parametrize("policy,status", [("Ignore", 201), ("Fail", 500)])
async def test_a_hanging_webhook_holds_the_write_only_for_its_timeout(env: Env, policy: str, status: int) -> None:
    env.hooks.answers["/hang"] = lambda req: asyncio.sleep(30, {"allowed": False})
    await env.configure("validating", "hang", env.hook("hang.kptest.example.com", "/hang", timeoutSeconds=1,
                                                       failurePolicy=policy))
    started = time.monotonic()
    body = await call(env.api, "POST", CM, configmap("slow"), status=status)
    took = time.monotonic() - started
    assert 0.9 < took < 2.5, took  # the hang is 30 s
    if policy == "Fail":
        assert body["message"].endswith('?timeout=1s": context deadline exceeded'), body["message"]


async def test_namespace_and_object_selectors_choose_what_is_sent(env: Env) -> None:
    env.hooks.answers["/v"] = allow()
    await call(env.api, "POST", "/api/v1/namespaces",
               {"metadata": {"name": "kptest-watched", "labels": {"hooks": "on"}}}, status=201)
    await env.configure("validating", "sel", env.hook(
        "sel.kptest.example.com", "/v", namespaceSelector={"matchLabels": {"hooks": "on"}},
        objectSelector={"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]},
        rules=[{"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}]))
    await call(env.api, "POST", CM, configmap("elsewhere"), status=201)
    watched = "/api/v1/namespaces/kptest-watched/configmaps"
    await call(env.api, "POST", watched, configmap("skipped", {"skip": "1"}), status=201)
    await call(env.api, "POST", watched, configmap("sent"), status=201)
    # An update that adds the skip label still matches: the old object's labels do.
    await call(env.api, "PATCH", f"{watched}/sent", {"metadata": {"labels": {"skip": "1"}}},
               content_type="application/merge-patch+json")
    await call(env.api, "DELETE", f"{watched}/sent")  # now labelled skip: not sent
    await call(env.api, "POST", watched, configmap("gone"), status=201)
    await call(env.api, "DELETE", f"{watched}/gone")
    sent = [(r["request"]["operation"], r["request"]["name"]) for r in env.hooks.seen["/v"]]
    assert sent == [("CREATE", "sent"), ("UPDATE", "sent"), ("CREATE", "gone"), ("DELETE", "gone")]
    # A namespace made just now counts with its labels, even before admission's copy has caught up.
    await call(env.api, "POST", "/api/v1/namespaces", {"metadata": {"name": "kptest-new", "labels": {"hooks": "on"}}},
               status=201)
    await call(env.api, "POST", "/api/v1/namespaces/kptest-new/configmaps", configmap("fresh"), status=201)
    assert env.hooks.seen["/v"][-1]["request"]["name"] == "fresh"
    [_, update, _, delete, _] = env.hooks.seen["/v"]
    assert update["request"]["oldObject"]["metadata"]["labels"] == {}
    assert delete["request"]["object"] is None and delete["request"]["oldObject"]["metadata"]["name"] == "gone"


async def test_dry_run_is_sent_as_such_and_refused_by_a_webhook_with_side_effects(env: Env) -> None:
    env.hooks.answers["/m"] = lambda req: asyncio.sleep(0, patch(
        [{"op": "add", "path": "/metadata/labels/stamped", "value": "dry"}]))
    await env.configure("mutating", "dry", env.hook("dry.kptest.example.com", "/m", sideEffects="NoneOnDryRun"))
    made = await call(env.api, "POST", CM, configmap("d"), status=201, dryRun="All")
    assert made["metadata"]["labels"] == {"stamped": "dry"}
    assert env.hooks.seen["/m"][0]["request"]["dryRun"] is True
    assert env.hooks.seen["/m"][0]["request"]["options"]["dryRun"] == ["All"]
    await call(env.api, "GET", f"{CM}/d", status=404)
    # v1 refuses sideEffects Some; one stored by an older version (written to the store here) refuses dry runs.
    body = await call(env.api, "POST", VWC, {"metadata": {"name": "some"}, "webhooks": [
        env.hook("some.kptest.example.com", "/m", sideEffects="Some")]}, status=422)
    assert body["details"]["causes"][0] == {"reason": "FieldValueNotSupported",
                                            "message": 'Unsupported value: "Some": supported values: "None", '
                                                       '"NoneOnDryRun"',
                                            "field": "webhooks[0].sideEffects"}
    res = by_plural("validatingwebhookconfigurations")
    old = {"apiVersion": res.api_version, "kind": res.kind, "metadata": {"name": "legacy", "uid": "u1"},
           "webhooks": [env.hook("legacy.kptest.example.com", "/m", sideEffects="Unknown")]}
    res.strategy.default(old, None)
    await env.server.store.create(res.key(None, "legacy"), json.dumps(old).encode())
    plugin = env.server.storage.admission.plugins[-2]
    for _ in range(200):
        if await plugin.configs.get(res.key(None, "legacy")):
            break
        await asyncio.sleep(0.01)
    body = await call(env.api, "POST", CM, configmap("d2"), status=400, dryRun="All")
    assert body["message"] == 'admission webhook "legacy.kptest.example.com" does not support dry run'


async def test_if_needed_webhooks_are_called_again_after_a_later_webhook_changed_the_object(env: Env) -> None:
    async def first(req: dict[str, Any]) -> dict[str, Any]:
        labels = req["object"]["metadata"].get("labels") or {}
        if "second" in labels and "first-saw-second" not in labels:
            return patch([{"op": "add", "path": "/metadata/labels/first-saw-second", "value": "yes"}])
        return {"allowed": True}
    env.hooks.answers["/1"] = first
    env.hooks.answers["/2"] = lambda req: asyncio.sleep(0, patch(
        [{"op": "add", "path": "/metadata/labels/second", "value": "yes"}]))
    await env.configure("mutating", "a-first", env.hook("first.kptest.example.com", "/1",
                                                        reinvocationPolicy="IfNeeded"))
    await env.configure("mutating", "b-second", env.hook("second.kptest.example.com", "/2"))
    made = await call(env.api, "POST", CM, configmap("r"), status=201)
    assert made["metadata"]["labels"] == {"second": "yes", "first-saw-second": "yes"}
    assert (len(env.hooks.seen["/1"]), len(env.hooks.seen["/2"])) == (2, 1)


async def test_a_service_webhook_is_called_at_a_ready_endpoint_and_verified_by_its_service_name(env: Env) -> None:
    env.hooks.answers["/svc"] = lambda req: asyncio.sleep(0, {"allowed": False, "status": {"message": "via svc"}})
    await call(env.api, "POST", "/api/v1/namespaces/default/services", {"metadata": {"name": "hook"}, "spec": {
        "ports": [{"name": "https", "port": 443, "targetPort": 8443}], "clusterIP": "None"}}, status=201)
    # Endpoints may not hold loopback addresses; the test's webhook lives on loopback, so its Endpoints
    # are written to the store directly (the resolver reads them from there, as it would any other).
    eps = by_plural("endpoints")
    await env.server.store.create(eps.key("default", "hook"), json.dumps({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "hook", "namespace": "default", "uid": "e1"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "notReadyAddresses": [{"ip": "127.0.0.2"}],
                     "ports": [{"name": "https", "port": env.hooks.port}]}]}).encode())
    await env.configure("validating", "svc", {**env.hook("svc.kptest.example.com", "/svc"), "clientConfig": {
        "service": {"namespace": "default", "name": "hook", "path": "/svc"}, "caBundle": env.hooks.ca_bundle}})
    body = await call(env.api, "POST", CM, configmap("x"), status=400)
    assert body["message"] == 'admission webhook "svc.kptest.example.com" denied the request: via svc'
    # Without ready addresses the call fails as upstream's resolver words it.
    await call(env.api, "PATCH", "/api/v1/namespaces/default/endpoints/hook", {"subsets": None},
               content_type="application/merge-patch+json")
    body = await call(env.api, "POST", CM, configmap("y"), status=500)
    assert body["message"] == ('Internal error occurred: failed calling webhook "svc.kptest.example.com": '
                               'no endpoints available for service "hook"')
    # The same server behind another Service name fails verification: its certificate names hook.default.svc.
    await call(env.api, "DELETE", f"{VWC}/svc")
    await call(env.api, "POST", "/api/v1/namespaces/default/services", {"metadata": {"name": "other"}, "spec": {
        "ports": [{"name": "https", "port": 443, "targetPort": 8443}], "clusterIP": "None"}}, status=201)
    await env.server.store.create(eps.key("default", "other"), json.dumps({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "other", "namespace": "default", "uid": "e2"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": env.hooks.port}]}]}
    ).encode())
    await env.configure("validating", "wrong-name", {**env.hook("wrong.kptest.example.com", "/svc"), "clientConfig": {
        "service": {"namespace": "default", "name": "other", "path": "/svc"}, "caBundle": env.hooks.ca_bundle}})
    body = await call(env.api, "POST", CM, configmap("x2"), status=500)
    assert body["message"].startswith('Internal error occurred: failed calling webhook "wrong.kptest.example.com": '
                                      'failed to call webhook: Post "https://other.default.svc:443/svc?timeout=10s"')
    assert "certificate is not valid for 'other.default.svc'" in body["message"], body["message"]


async def test_webhook_configurations_are_validated_and_printed_as_upstream(env: Env) -> None:
    bad = {"name": "short.name", "clientConfig": {"url": "http://x.example.com/?a=b",
                                                  "service": {"namespace": "n", "name": "s"}},
           "rules": [{"operations": ["CONNECT"], "apiGroups": [""], "apiVersions": ["v1"],
                      "resources": ["pods/exec"]}],
           "matchConditions": [{"name": "c", "expression": "object.x == "}, {"name": "c", "expression": "nope"},
                               {"name": "bad name!", "expression": ""},
                               {"name": "authz", "expression": "authorizer.group('').resource('x').check('get')"
                                                                ".allowed() && nope"}],
           "timeoutSeconds": 31,
           "admissionReviewVersions": ["v2"]}
    body = await call(env.api, "POST", MWC, {"metadata": {"name": "bad"}, "webhooks": [bad, bad]}, status=422)
    causes = {(c["field"], c["message"]) for c in body["details"]["causes"]}
    for want in [
        ("webhooks[0].name", 'Invalid value: "short.name": should be a domain with at least three segments '
                             'separated by dots'),
        ("webhooks[1].name", 'Duplicate value: "short.name"'),
        ("webhooks[0].sideEffects", "Required value: must specify one of None, NoneOnDryRun"),
        ("webhooks[0].timeoutSeconds", "Invalid value: 31: the timeout value must be between 1 and 30 seconds"),
        ("webhooks[0].admissionReviewVersions", 'Invalid value: ["v2"]: must include at least one of v1, v1beta1'),
        ("webhooks[0].clientConfig", "Required value: exactly one of url or service is required"),
        ("webhooks[0].matchConditions[0].expression",
         'Invalid value: "object.x == ": compilation failed: ERROR: <input>:1:10: Syntax error: object.x == '),
        ("webhooks[0].matchConditions[1].name", 'Duplicate value: "c"'),
        ("webhooks[0].matchConditions[1].expression",
         "Invalid value: \"nope\": compilation failed: ERROR: <input>:1:1: undeclared reference to 'nope' "
         "(in container '')"),
        ("webhooks[0].matchConditions[2].name",
         'Invalid value: "bad name!": name part must consist of alphanumeric characters, \'-\', \'_\' or \'.\', '
         "and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', "
         "regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"),
        ("webhooks[0].matchConditions[2].expression", "Required value"),
        ("webhooks[0].matchConditions[3].expression",
         "Invalid value: \"authorizer.group('').resource('x').check('get').allowed() && nope\": compilation failed: "
         "ERROR: <input>:1:1: undeclared reference to 'nope' (in container '')"),
        ("webhooks[0].rules[0].operations[0]", "Forbidden: CONNECT requests (exec, attach, port-forward) are not "
                                               "sent to admission webhooks by this API server"),
        ("webhooks[0].rules[0].resources[0]", "Forbidden: the exec subresource is not sent to admission webhooks "
                                              "by this API server"),
    ]:
        assert want in causes, (want, causes)
    made = await call(env.api, "POST", MWC, {"metadata": {"name": "ok"}, "webhooks": [
        env.hook("ok.kptest.example.com", "/x", rules=[{"operations": ["*"], "apiGroups": ["*"],
                                                        "apiVersions": ["*"], "resources": ["pods/status"]}])]},
        status=201)
    [hook] = made["webhooks"]
    assert (hook["failurePolicy"], hook["matchPolicy"], hook["timeoutSeconds"], hook["reinvocationPolicy"],
            hook["namespaceSelector"], hook["objectSelector"], hook["rules"][0]["scope"]) == (
        "Fail", "Equivalent", 10, "Never", {}, {}, "*")
    table = await env.api.get(MWC, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    body = await table.json()
    assert [c["name"] for c in body["columnDefinitions"]] == ["Name", "Webhooks", "Age"]
    assert body["rows"][0]["cells"][:2] == ["ok", 1]


async def test_status_writes_meet_webhooks_for_the_status_subresource_only(env: Env) -> None:
    env.hooks.answers["/st"] = lambda req: asyncio.sleep(0, {"allowed": False, "status": {"message": "no status"}})
    await env.configure("validating", "st", env.hook("st.kptest.example.com", "/st", rules=[
        {"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/status"]}]))
    pods = "/api/v1/namespaces/default/pods"
    await call(env.api, "POST", pods, {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "busybox"}]}}, status=201)
    await call(env.api, "PATCH", f"{pods}/p", {"metadata": {"labels": {"x": "y"}}},
               content_type="application/merge-patch+json")
    body = await call(env.api, "PATCH", f"{pods}/p/status", {"status": {"message": "hi"}},
                      content_type="application/merge-patch+json", status=400)
    assert body["message"] == 'admission webhook "st.kptest.example.com" denied the request: no status'
    assert env.hooks.seen["/st"][0]["request"]["subResource"] == "status"


async def test_a_mutating_webhook_on_update_is_validated_again_and_a_status_write_keeps_only_status(env: Env) -> None:
    async def stamp(req: dict[str, Any]) -> dict[str, Any]:
        if req.get("subResource"):
            return patch([{"op": "add", "path": "/metadata/labels", "value": {"from-status": "yes"}},
                          {"op": "replace", "path": "/status/message", "value": "stamped"}])
        return patch([{"op": "add", "path": "/data/stamped", "value": req["operation"]}])
    env.hooks.answers["/u"] = stamp
    await env.configure("mutating", "upd", env.hook("upd.kptest.example.com", "/u", rules=[
        {"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps", "pods/status"]}]))
    await call(env.api, "POST", CM, configmap("u"), status=201)
    got = await call(env.api, "PATCH", f"{CM}/u", {"data": {"k": "w"}}, content_type="application/merge-patch+json")
    assert got["data"] == {"k": "w", "stamped": "UPDATE"}
    assert (await call(env.api, "GET", f"{CM}/u"))["data"]["stamped"] == "UPDATE"
    # A patch that makes the object invalid is refused by validation, which runs after mutation.
    env.hooks.answers["/u"] = lambda req: asyncio.sleep(0, patch(
        [{"op": "add", "path": "/metadata/labels", "value": {"bad key!": "x"}}]))
    body = await call(env.api, "PATCH", f"{CM}/u", {"data": {"k": "x"}}, content_type="application/merge-patch+json",
                      status=422)
    assert body["details"]["causes"][0]["field"] == "metadata.labels"
    # Through pods/status only status moves, whatever else the webhook patched.
    env.hooks.answers["/u"] = stamp
    pods = "/api/v1/namespaces/default/pods"
    await call(env.api, "POST", pods, {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "busybox"}]}}, status=201)
    got = await call(env.api, "PATCH", f"{pods}/p/status", {"status": {"message": "hi"}},
                     content_type="application/merge-patch+json")
    assert got["status"]["message"] == "stamped" and not got["metadata"].get("labels")


async def test_match_conditions_choose_the_requests_a_webhook_sees_and_errors_follow_its_failure_policy(
        env: Env) -> None:
    env.hooks.answers["/mc"] = lambda req: asyncio.sleep(0, {"allowed": False, "status": {"message": "called"}})
    # Upstream's documented example: skip requests from node users, and only objects labelled for it.
    await env.configure("validating", "mc", env.hook("mc.kptest.example.com", "/mc", rules=[
        {"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
        matchConditions=[
            {"name": "exclude-nodes", "expression": "!('system:nodes' in request.userInfo.groups)"},
            {"name": "labelled", "expression": "has(object.metadata.labels) && 'check' in object.metadata.labels"},
            {"name": "update-only-if-data-changed",
             "expression": "request.operation != 'UPDATE' || oldObject.data != object.data"}]))
    await call(env.api, "POST", CM, configmap("plain"), status=201)  # 'labelled' is false: not called
    body = await call(env.api, "POST", CM, configmap("checked", {"check": "1"}), status=400)
    assert body["message"] == 'admission webhook "mc.kptest.example.com" denied the request: called'
    assert [r["request"]["name"] for r in env.hooks.seen["/mc"]] == ["checked"]
    # An expression that fails at run time (no such key) and no false one: the failurePolicy decides.
    await call(env.api, "DELETE", f"{VWC}/mc")
    await env.configure("validating", "err-fail", env.hook("fail.kptest.example.com", "/mc", matchConditions=[
        {"name": "missing", "expression": "object.data.nothere == 'x'"}]))
    body = await call(env.api, "POST", CM, configmap("e1"), status=403)
    assert body["message"] == ('configmaps "e1" is forbidden: expression \'object.data.nothere == \'x\'\' '
                               "resulted in error: no such key: nothere"), body["message"]
    assert body["reason"] == "Forbidden"
    await call(env.api, "DELETE", f"{VWC}/err-fail")
    await env.configure("validating", "err-ignore", env.hook("ignore.kptest.example.com", "/mc", failurePolicy="Ignore",
                                                             matchConditions=[{"name": "missing",
                                                                               "expression": "object.data.nothere == 'x'"}]))
    await call(env.api, "POST", CM, configmap("e2"), status=201)
    assert [r["request"]["name"] for r in env.hooks.seen["/mc"]] == ["checked"]


async def test_a_mutating_webhooks_match_conditions_see_what_earlier_webhooks_did(env: Env) -> None:
    env.hooks.answers["/first"] = lambda req: asyncio.sleep(0, patch(
        [{"op": "add", "path": "/metadata/labels/tier", "value": "gold"}]))
    env.hooks.answers["/gold"] = lambda req: asyncio.sleep(0, patch(
        [{"op": "add", "path": "/metadata/labels/gold-seen", "value": "yes"}]))
    await env.configure("mutating", "a-first", env.hook("first.kptest.example.com", "/first"))
    await env.configure("mutating", "b-gold", env.hook("gold.kptest.example.com", "/gold", matchConditions=[
        {"name": "gold-only", "expression": "has(object.metadata.labels) && object.metadata.labels['tier'] == 'gold'"}]))
    made = await call(env.api, "POST", CM, configmap("g"), status=201)
    assert made["metadata"]["labels"] == {"tier": "gold", "gold-seen": "yes"}
