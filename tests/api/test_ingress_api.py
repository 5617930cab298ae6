"""Ingress and IngressClass in process, against the aiohttp app: upstream's validation messages,
the default class at admission, the status subresource and the table columns."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.api.test_semantics import NS, api, call  # noqa: F401 - api is a fixture

INGRESSES = f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses"
CLASSES = "/apis/networking.k8s.io/v1/ingressclasses"
TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}


def backend(name: str = "web", **port: Any) -> dict[str, Any]:
    return {"service": {"name": name, "port": port or {"number": 80}}}


def ingress(name: str, *, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def ingress_class(name: str, controller: Any = "kubepy.io/ingress", default: bool = False,
                  **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if default:
        meta["annotations"] = {"ingressclass.kubernetes.io/is-default-class": "true"}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": meta,
            "spec": {"controller": controller, **spec}}


def causes(body: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["field"], c["message"]) for c in body["details"]["causes"]}


async def test_bad_ingresses_are_refused_with_upstreams_messages(api: TestClient) -> None:
    body = await call(api, "POST", INGRESSES, ingress(
        "bad", ingressClassName="Bad_Class",
        defaultBackend={"service": {"name": "web", "port": {"name": "http", "number": 80}}},
        rules=[
            {"host": "10.0.0.1", "http": {"paths": [
                {"path": "/a", "backend": backend()},
                {"path": "b", "pathType": "Prefix", "backend": backend()},
                {"path": "/a//b/.", "pathType": "Exact", "backend": backend()},
                {"path": "/x", "pathType": "Regex", "backend": backend()},
                {"path": "c", "pathType": "ImplementationSpecific", "backend": backend()},
            ]}},
            {"host": "*.*.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {}},
                {"path": "/", "pathType": "Prefix",
                 "backend": {**backend(), "resource": {"kind": "Bucket", "name": "b"}}},
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "1web"}}},
                {"path": "/", "pathType": "Prefix", "backend": backend(number=70000)},
            ]}},
            {"host": "ok.example.com", "http": {"paths": []}},
        ],
        tls=[{"hosts": ["Bad.example.com"], "secretName": "Bad_Secret"}]), status=422)
    got = causes(body)
    assert got == {
        ("spec.defaultBackend", 'Invalid value: "": cannot set both port name & port number'),
        ("spec.rules[0].host", 'Invalid value: "10.0.0.1": must be a DNS name, not an IP address'),
        ("spec.rules[0].http.paths[0].pathType", "Required value: pathType must be specified"),
        ("spec.rules[0].http.paths[1].path", 'Invalid value: "b": must be an absolute path'),
        ("spec.rules[0].http.paths[2].path", "Invalid value: \"/a//b/.\": must not contain '//'"),
        ("spec.rules[0].http.paths[2].path", "Invalid value: \"/a//b/.\": cannot end with '/.'"),
        ("spec.rules[0].http.paths[3].pathType",
         'Unsupported value: "Regex": supported values: "Exact", "ImplementationSpecific", "Prefix"'),
        ("spec.rules[0].http.paths[4].path", 'Invalid value: "c": must be an absolute path'),
        ("spec.rules[1].host", next(m for f, m in got if f == "spec.rules[1].host")),
        ("spec.rules[1].http.paths[0].backend", 'Invalid value: "": resource or service backend is required'),
        ("spec.rules[1].http.paths[1].backend", 'Invalid value: "": cannot set both resource and service backends'),
        ("spec.rules[1].http.paths[2].backend.service.name",
         next(m for f, m in got if f == "spec.rules[1].http.paths[2].backend.service.name")),
        ("spec.rules[1].http.paths[2].backend", "Required value: port name or number is required"),
        ("spec.rules[1].http.paths[3].backend.service.port.number",
         "Invalid value: 70000: must be between 1 and 65535, inclusive"),
        ("spec.rules[2].http.paths", "Required value"),
        ("spec.tls[0].hosts[0]", next(m for f, m in got if f == "spec.tls[0].hosts[0]")),
        ("spec.tls[0].secretName", next(m for f, m in got if f == "spec.tls[0].secretName")),
        ("spec.ingressClassName", next(m for f, m in got if f == "spec.ingressClassName")),
    }
    assert dict(got)["spec.rules[1].host"].startswith(
        'Invalid value: "*.*.example.com": a wildcard DNS-1123 subdomain must start with \'*.\'')
    assert "a DNS-1035 label must consist of" in dict(got)["spec.rules[1].http.paths[2].backend.service.name"]
    assert body["message"].startswith('Ingress.networking.k8s.io "bad" is invalid: [')
    empty = await call(api, "POST", INGRESSES, ingress("empty"), status=422)
    assert causes(empty) == {("spec", "Invalid value: null: either `defaultBackend` or `rules` must be specified")}
    mismatch = await call(api, "POST", INGRESSES, ingress(
        "mismatch", annotations={"kubernetes.io/ingress.class": "a"}, ingressClassName="b",
        defaultBackend=backend()), status=422)
    assert causes(mismatch) == {("annotations.kubernetes.io/ingress.class",
                                 'Invalid value: "a": must match `ingressClassName` when both are specified')}


async def test_wrongly_typed_fields_are_refused_as_upstream_decodes_them(api: TestClient) -> None:
    body = await call(api, "POST", INGRESSES, ingress(
        "types", ingressClassName=5, tls=[{"hosts": [7], "secretName": 3}],
        rules=[{"host": 1, "http": {"paths": [{"path": 5, "pathType": ["Prefix"],
                                               "backend": {"service": {"name": 2, "port": {"name": 9}}}}]}}]),
        status=400)
    assert body["message"].startswith('Ingress in version "v1" cannot be handled as a Ingress: ')
    assert "spec.rules[0].http.paths[0].path: expected string, got number" in body["message"]
    cls = await call(api, "POST", CLASSES, ingress_class("types", controller=5, parameters={"kind": 1, "name": [],
                                                                                           "scope": {}}), status=400)
    assert "spec.controller: expected string, got number" in cls["message"]


async def test_a_good_ingress_is_stored_as_sent_with_an_empty_status(api: TestClient) -> None:
    spec = {"ingressClassName": "other",
            "rules": [{"host": "*.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
            ]}}]}
    created = await call(api, "POST", INGRESSES, ingress("good", **spec), status=201)
    assert created["spec"] == spec
    assert created["status"] == {"loadBalancer": {}}
    named = await call(api, "GET", f"{INGRESSES}/good")
    assert named["metadata"]["generation"] == 1


async def test_ingress_class_validation_and_defaults(api: TestClient) -> None:
    body = await call(api, "POST", CLASSES, ingress_class(
        "bad", controller="nodomain", parameters={"kind": "", "name": "p", "scope": "Namespace"}), status=422)
    assert causes(body) == {
        ("spec.controller", 'Invalid value: "nodomain": must be a domain-prefixed path (such as "acme.io/foo")'),
        ("spec.parameters.kind", "Required value: kind is required"),
        ("spec.parameters.namespace", "Required value: `parameters.scope` is set to 'Namespace'"),
    }
    cluster = await call(api, "POST", CLASSES, ingress_class(
        "params", parameters={"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "p"}), status=201)
    assert cluster["spec"]["parameters"]["scope"] == "Cluster"
    changed = {**cluster, "spec": {**cluster["spec"], "controller": "example.com/other"}}
    body = await call(api, "PUT", f"{CLASSES}/params", changed, status=422)
    assert causes(body) == {("spec.controller", 'Invalid value: "example.com/other": field is immutable')}
    table = await (await api.get(CLASSES, headers=TABLE)).json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Controller", "Parameters", "Age"]
    assert table["rows"][0]["cells"][:3] == ["params", "kubepy.io/ingress", "IngressParameters.k8s.example.com/p"]


async def test_an_ingress_without_a_class_gets_the_newest_default_class(api: TestClient) -> None:
    none = await call(api, "POST", INGRESSES, ingress("before", defaultBackend=backend()), status=201)
    assert "ingressClassName" not in none["spec"]
    await call(api, "POST", CLASSES, ingress_class("old", default=True), status=201)
    await asyncio.sleep(1.1)  # creationTimestamp has one-second resolution
    await call(api, "POST", CLASSES, ingress_class("new", default=True), status=201)
    await call(api, "POST", CLASSES, ingress_class("plain"), status=201)
    got = await call(api, "POST", INGRESSES, ingress("after", defaultBackend=backend()), status=201)
    assert got["spec"]["ingressClassName"] == "new"
    chosen = await call(api, "POST", INGRESSES, ingress("chosen", ingressClassName="plain",
                                                        defaultBackend=backend()), status=201)
    assert chosen["spec"]["ingressClassName"] == "plain"
    legacy = await call(api, "POST", INGRESSES, ingress("legacy", annotations={"kubernetes.io/ingress.class": "x"},
                                                        defaultBackend=backend()), status=201)
    assert "ingressClassName" not in legacy["spec"]


async def test_status_is_written_through_its_subresource_and_shown_by_kubectl_get(api: TestClient) -> None:
    created = await call(api, "POST", INGRESSES, ingress(
        "web", ingressClassName="kubepy", tls=[{"hosts": ["a.example.com"], "secretName": "tls"}],
        rules=[{"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend()}]}}
               for h in ("a.example.com", "b.example.com", "c.example.com", "d.example.com")]), status=201)
    created["status"] = {"loadBalancer": {"ingress": [{"ip": "172.30.0.11"}, {"ip": "172.30.0.12"}]}}
    ignored = await call(api, "PUT", f"{INGRESSES}/web", created)
    assert ignored["status"] == {"loadBalancer": {}}
    created["metadata"]["resourceVersion"] = ignored["metadata"]["resourceVersion"]
    written = await call(api, "PUT", f"{INGRESSES}/web/status", created)
    assert written["status"]["loadBalancer"]["ingress"] == [{"ip": "172.30.0.11"}, {"ip": "172.30.0.12"}]
    bad = {**written, "status": {"loadBalancer": {"ingress": [{"ip": "nope"}, {"hostname": "1.2.3.4"}]}}}
    body = await call(api, "PUT", f"{INGRESSES}/web/status", bad, status=422)
    assert {f for f, _ in causes(body)} == {"status.loadBalancer.ingress[0].ip",
                                           "status.loadBalancer.ingress[1].hostname"}
    table = await (await api.get(INGRESSES, headers=TABLE)).json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Class", "Hosts", "Address", "Ports", "Age"]
    assert table["rows"][0]["cells"][:5] == [
        "web", "kubepy", "a.example.com,b.example.com,c.example.com + 1 more...", "172.30.0.11,172.30.0.12", "80, 443"]
