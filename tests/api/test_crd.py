"""CustomResourceDefinitions through the API server in process: a CRD becomes a served kind
without a restart (discovery, OpenAPI, tables), and its objects are pruned, defaulted and
validated by the CRD's schema and CEL rules with Kubernetes' messages; status and scale
subresources, several versions with conversion None, and deleting a CRD deletes its objects."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.api.test_semantics import _serve, call, watch_events

GROUP = "kptest.example.com"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
W1 = f"/apis/{GROUP}/v1/namespaces/default/widgets"
W1B = f"/apis/{GROUP}/v1beta1/namespaces/default/widgets"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["image"],
            "x-kubernetes-validations": [
                {"rule": "self.replicas <= self.maxReplicas", "message": "replicas must not exceed maxReplicas"},
            ],
            "properties": {
                "image": {"type": "string", "minLength": 1,
                          "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "image is immutable"}]},
                "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
                "maxReplicas": {"type": "integer", "default": 5,
                                "x-kubernetes-validations": [
                                    {"rule": "self < 100", "messageExpression": "'maxReplicas is ' + string(self)",
                                     "reason": "FieldValueForbidden"}]},
                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                "size": {"x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
                "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                          "items": {"type": "object", "required": ["name"],
                                    "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                             "x-kubernetes-preserve-unknown-fields": True},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "status": {"type": "object", "properties": {"replicas": {"type": "integer"},
                                                    "selector": {"type": "string"}}},
    },
}


def crd(name: str = "widgets", group: str = GROUP, *, kind: str = "Widget", scope: str = "Namespaced",
        schema: dict | None = None, **spec: Any) -> dict[str, Any]:
    version = {"name": "v1", "served": True, "storage": True,
               "schema": {"openAPIV3Schema": copy.deepcopy(schema or SCHEMA)},
               "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                        "statusReplicasPath": ".status.replicas",
                                                        "labelSelectorPath": ".status.selector"}},
               "additionalPrinterColumns": [
                   {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                   {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                   {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
               "selectableFields": [{"jsonPath": ".spec.color"}]}
    beta = {**copy.deepcopy(version), "name": "v1beta1", "storage": False}
    body = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{name}.{group}"},
            "spec": {"group": group, "scope": scope,
                     "names": {"plural": name, "singular": kind.lower(), "kind": kind, "shortNames": ["wd"],
                               "categories": ["all"]},
                     "versions": [version, beta]}}
    body["spec"].update(spec)
    return body


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name},
            "spec": {"image": "busybox", **spec}}


async def established(api: TestClient, name: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            got = await call(api, "GET", f"{CRDS}/{name}")
            conds = {c["type"]: c["status"] for c in (got.get("status") or {}).get("conditions", [])}
            if conds.get("Established") == "True":
                return got
            await asyncio.sleep(0.02)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[TestClient]:
    async for client in _serve(tmp_path):
        yield client


@pytest.fixture
async def widgets(api: TestClient) -> TestClient:
    await call(api, "POST", CRDS, crd(), status=201)
    await established(api, f"widgets.{GROUP}")
    return api


# -- a CRD becomes a served kind ---------------------------------------------------------
async def test_established_crd_is_discovered_and_described(api: TestClient) -> None:
    await call(api, "GET", W1, status=404)
    await call(api, "POST", CRDS, crd(), status=201)
    got = await established(api, f"widgets.{GROUP}")
    status = got["status"]
    assert {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]} == {
        "NamesAccepted": ("True", "NoConflicts"), "Established": ("True", "InitialNamesAccepted")}
    assert status["acceptedNames"]["kind"] == "Widget" and status["acceptedNames"]["listKind"] == "WidgetList"
    assert status["storedVersions"] == ["v1"]
    groups = await call(api, "GET", "/apis")
    assert any(g["name"] == GROUP and [v["version"] for v in g["versions"]] == ["v1", "v1beta1"]
               for g in groups["groups"])
    res = await call(api, "GET", f"/apis/{GROUP}/v1")
    by_name = {r["name"]: r for r in res["resources"]}
    assert by_name["widgets"]["shortNames"] == ["wd"] and by_name["widgets"]["categories"] == ["all"]
    assert by_name["widgets"]["namespaced"] is True
    assert by_name["widgets/scale"]["kind"] == "Scale" and "widgets/status" in by_name
    v3 = await call(api, "GET", f"/openapi/v3/apis/{GROUP}/v1")
    schema = v3["components"]["schemas"]["com.example.kptest.v1.Widget"]
    assert schema["x-kubernetes-group-version-kind"] == [{"group": GROUP, "kind": "Widget", "version": "v1"}]
    assert schema["properties"]["spec"]["properties"]["replicas"]["maximum"] == 10
    patch_op = v3["paths"][f"/apis/{GROUP}/v1/namespaces/{{namespace}}/widgets/{{name}}"]["patch"]
    assert "application/strategic-merge-patch+json" not in patch_op["requestBody"]["content"]
    v2 = await call(api, "GET", "/openapi/v2")
    assert "nullable" not in json.dumps(v2["definitions"]["com.example.kptest.v1.Widget"])
    assert (await api.get("/openapi/v2", headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"})).status == 200


async def test_a_stored_version_cannot_be_dropped(widgets: TestClient) -> None:
    current = await call(widgets, "GET", f"{CRDS}/widgets.{GROUP}")
    current["spec"]["versions"] = [v for v in current["spec"]["versions"] if v["name"] == "v1beta1"]
    current["spec"]["versions"][0]["storage"] = True
    err = await call(widgets, "PUT", f"{CRDS}/widgets.{GROUP}", current, status=422)
    assert {"reason": "FieldValueInvalid", "field": "status.storedVersions[0]",
            "message": 'Invalid value: "v1": must appear in spec.versions'} in err["details"]["causes"]


async def test_crd_with_a_taken_name_is_not_accepted(widgets: TestClient) -> None:
    other = crd(name="gadgets", kind="Widget")
    other["spec"]["names"]["shortNames"] = ["gd"]
    await call(widgets, "POST", CRDS, other, status=201)
    async with asyncio.timeout(5):
        while True:
            got = await call(widgets, "GET", f"{CRDS}/gadgets.{GROUP}")
            conds = {c["type"]: c for c in (got.get("status") or {}).get("conditions", [])}
            if "NamesAccepted" in conds:
                break
            await asyncio.sleep(0.02)
    assert conds["NamesAccepted"]["status"] == "False" and conds["Established"]["status"] == "False"
    await call(widgets, "GET", f"/apis/{GROUP}/v1/namespaces/default/gadgets", status=404)


# -- the CRD's own validation --------------------------------------------------------------
def _mutated(fn: Any) -> dict[str, Any]:
    body = crd()
    fn(body)
    return body


CRD_CASES = [
    (lambda b: b["metadata"].update(name="wrong.kptest.example.com"),
     {"field": "metadata.name", "message": 'Invalid value: "wrong.kptest.example.com": must be spec.names.plural+"."+spec.group'}),
    (lambda b: b["spec"].update(scope="Galaxy"),
     {"field": "spec.scope", "message": 'Unsupported value: "Galaxy": supported values: "Cluster", "Namespaced"'}),
    (lambda b: b["spec"]["versions"][1].update(storage=True),
     {"field": "spec.versions", "reason": "FieldValueInvalid"}),
    (lambda b: b["spec"]["versions"][1].update(name="v1"),
     {"field": "spec.versions[1].name", "message": 'Duplicate value: "v1"'}),
    (lambda b: b["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
     .update(bad={"description": "no type"}),
     {"field": "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[bad].type",
      "message": "Required value: must not be empty for specified object fields"}),
    (lambda b: b["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
     .update({"x-kubernetes-validations": [{"rule": "self.replicas <"}]}),
     {"field": "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"}),
    (lambda b: b["spec"]["versions"][0].pop("schema"),
     {"field": "spec.versions[0].schema.openAPIV3Schema", "message": "Required value: schemas are required"}),
    (lambda b: b["spec"].update(conversion={"strategy": "Webhook"}),
     {"field": "spec.conversion.strategy", "message": 'Unsupported value: "Webhook": supported values: "None"'}),
    (lambda b: b["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
     .update({"x-kubernetes-validations": [{"rule": "true", "messageExpression": "'a' +"}]}),
     {"field": "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].messageExpression"}),
    (lambda b: b["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["replicas"]
     .update(default="one"),
     {"field": "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[replicas].default",
      "message": 'Invalid value: "string": spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[replicas]'
                 '.default in body must be of type integer: "string"'}),
    (lambda b: b["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["image"]
     .update(pattern="(unclosed"),
     {"field": "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[image].pattern"}),
    (lambda b: b["spec"]["names"].update(plural="Widgets"),
     {"field": "spec.names.plural", "reason": "FieldValueInvalid"}),
]


@pytest.mark.parametrize("mutate,cause", CRD_CASES)
async def test_crd_validation(api: TestClient, mutate: Any, cause: dict[str, str]) -> None:
    err = await call(api, "POST", CRDS, _mutated(mutate), status=422)
    assert any(cause.items() <= c.items() for c in err["details"]["causes"]), err["details"]["causes"]


# -- schema validation of custom resources -------------------------------------------------
SCHEMA_CASES = [
    ({"replicas": "three"}, "spec.replicas",
     'Invalid value: "string": spec.replicas in body must be of type integer: "string"'),
    ({"replicas": 11}, "spec.replicas", "Invalid value: 11: spec.replicas in body should be less than or equal to 10"),
    ({"replicas": -1}, "spec.replicas", "Invalid value: -1: spec.replicas in body should be greater than or equal to 0"),
    ({"color": "green"}, "spec.color", 'Unsupported value: "green": supported values: "red", "blue"'),
    ({"image": None}, "spec.image", 'Invalid value: "null": spec.image in body must be of type string: "null"'),
    ({"image": ""}, "spec.image", 'Invalid value: "": spec.image in body should be at least 1 chars long'),
    ({"size": True}, "spec.size",
     'Invalid value: "boolean": spec.size in body must be of type integer,string: "boolean"'),
    ({"ports": [{"name": "a", "port": 1}, {"name": "a", "port": 2}]}, "spec.ports[1]",
     'Duplicate value: map[string]interface {}{"name":"a"}'),
    ({"tags": ["x", "x"]}, "spec.tags[1]", 'Duplicate value: "x"'),
    ({"ports": [{"port": 1}]}, "spec.ports[0].name", "Required value"),
    ({"labels": {"a": 1}}, "spec.labels.a", 'Invalid value: "integer": spec.labels.a in body must be of type string: "integer"'),
    ({"template": {"kind": "Pod"}}, "spec.template.apiVersion", "Required value: must not be empty"),
    ({"replicas": 7, "maxReplicas": 5}, "spec", 'Invalid value: "object": replicas must not exceed maxReplicas'),
    ({"maxReplicas": 200}, "spec.maxReplicas", "Forbidden: maxReplicas is 200"),
]


@pytest.mark.parametrize("spec,field,message", SCHEMA_CASES)
async def test_schema_errors(widgets: TestClient, spec: dict, field: str, message: str) -> None:
    err = await call(widgets, "POST", W1, widget("w", **spec), status=422)
    assert err["reason"] == "Invalid"
    assert {"field": field, "message": message} in [{k: c[k] for k in ("field", "message")}
                                                    for c in err["details"]["causes"]], err
    assert err["message"].startswith(f'Widget.{GROUP} "w" is invalid: ')


async def test_missing_required_and_valid_values(widgets: TestClient) -> None:
    bad = widget("w")
    del bad["spec"]["image"]
    err = await call(widgets, "POST", W1, bad, status=422)
    assert {"reason": "FieldValueRequired", "field": "spec.image", "message": "Required value"} in err["details"]["causes"]
    ok = await call(widgets, "POST", W1, widget("ok", size="50%", note=None, ports=[{"name": "a"}, {"name": "b"}],
                                                template={"apiVersion": "v1", "kind": "Pod", "spec": {"x": 1}}),
                    status=201)
    assert ok["spec"]["size"] == "50%" and ok["spec"]["template"]["spec"] == {"x": 1}
    await call(widgets, "POST", W1, widget("ok2", size=3), status=201)


async def test_defaulting_and_pruning(widgets: TestClient) -> None:
    body = widget("d", unknown="x", extra={"anything": {"goes": 1}})
    body["spare"] = {"top": 1}
    resp = await widgets.post(W1, json=body)
    assert resp.status == 201, await resp.text()
    got = await resp.json()
    assert got["spec"]["replicas"] == 1 and got["spec"]["color"] == "red" and got["spec"]["maxReplicas"] == 5
    assert "unknown" not in got["spec"] and "spare" not in got
    assert got["spec"]["extra"] == {"anything": {"goes": 1}}
    warnings = resp.headers.getall("Warning", [])
    assert any('unknown field \\"spec.unknown\\"' in w or 'unknown field "spec.unknown"' in w for w in warnings), warnings
    strict = await widgets.post(W1, json=widget("s", unknown="x"), params={"fieldValidation": "Strict"})
    assert strict.status == 400 and "spec.unknown" in (await strict.json())["message"]


async def test_transition_rule_uses_old_self(widgets: TestClient) -> None:
    created = await call(widgets, "POST", W1, widget("t"), status=201)
    changed = copy.deepcopy(created)
    changed["spec"]["image"] = "nginx"
    err = await call(widgets, "PUT", f"{W1}/t", changed, status=422)
    assert err["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.image",
                                         "message": 'Invalid value: "string": image is immutable'}]
    same = copy.deepcopy(created)
    same["spec"]["replicas"] = 3
    assert (await call(widgets, "PUT", f"{W1}/t", same))["spec"]["replicas"] == 3


# -- patches, subresources, versions, tables, selectors ------------------------------------
async def test_patch_types(widgets: TestClient) -> None:
    await call(widgets, "POST", W1, widget("p"), status=201)
    merged = await call(widgets, "PATCH", f"{W1}/p", {"spec": {"replicas": 4}},
                        content_type="application/merge-patch+json")
    assert merged["spec"]["replicas"] == 4 and merged["metadata"]["generation"] == 2
    jp = await call(widgets, "PATCH", f"{W1}/p", [{"op": "replace", "path": "/spec/color", "value": "blue"}],
                    content_type="application/json-patch+json")
    assert jp["spec"]["color"] == "blue"
    err = await call(widgets, "PATCH", f"{W1}/p", {"spec": {"replicas": 2}}, status=415,
                     content_type="application/strategic-merge-patch+json")
    assert err["reason"] == "UnsupportedMediaType"
    err = await call(widgets, "PATCH", f"{W1}/p", {"spec": {"replicas": "x"}}, status=422,
                     content_type="application/merge-patch+json")
    assert err["details"]["causes"][0]["field"] == "spec.replicas"


async def test_status_and_scale_subresources(widgets: TestClient) -> None:
    created = await call(widgets, "POST", W1, {**widget("s"), "status": {"replicas": 9}}, status=201)
    assert "status" not in created
    created["status"] = {"replicas": 2, "selector": "app=s"}
    created["spec"]["replicas"] = 8  # ignored: /status writes only status
    written = await call(widgets, "PUT", f"{W1}/s/status", created)
    assert written["status"] == {"replicas": 2, "selector": "app=s"} and written["spec"]["replicas"] == 1
    err = await call(widgets, "PATCH", f"{W1}/s/status", {"status": {"replicas": "two"}}, status=422,
                     content_type="application/merge-patch+json")
    assert err["details"]["causes"][0]["field"] == "status.replicas"
    scale = await call(widgets, "GET", f"{W1}/s/scale")
    assert scale["spec"] == {"replicas": 1} and scale["status"] == {"replicas": 2, "selector": "app=s"}
    scale["spec"]["replicas"] = 4
    assert (await call(widgets, "PUT", f"{W1}/s/scale", scale))["spec"]["replicas"] == 4
    patched = await call(widgets, "PATCH", f"{W1}/s/scale", {"spec": {"replicas": 3}},
                         content_type="application/merge-patch+json")
    assert patched["spec"]["replicas"] == 3
    assert (await call(widgets, "GET", f"{W1}/s"))["spec"]["replicas"] == 3
    err = await call(widgets, "PATCH", f"{W1}/s/scale", {"spec": {"replicas": 50}}, status=422,
                     content_type="application/merge-patch+json")
    assert "should be less than or equal to 10" in err["message"]


async def test_versions_share_objects_with_conversion_none(widgets: TestClient) -> None:
    await call(widgets, "POST", W1B, {**widget("v"), "apiVersion": f"{GROUP}/v1beta1"}, status=201)
    assert (await call(widgets, "GET", f"{W1}/v"))["apiVersion"] == f"{GROUP}/v1"
    assert (await call(widgets, "GET", f"{W1B}/v"))["apiVersion"] == f"{GROUP}/v1beta1"
    listed = await call(widgets, "GET", W1)
    assert listed["kind"] == "WidgetList" and [i["apiVersion"] for i in listed["items"]] == [f"{GROUP}/v1"]


async def test_printer_columns(widgets: TestClient) -> None:
    await call(widgets, "POST", W1, widget("a", replicas=2, color="blue"), status=201)
    resp = await widgets.get(W1, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    table = await resp.json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Replicas", "Color", "Age"]
    assert table["rows"][0]["cells"][:3] == ["a", 2, "blue"] and table["rows"][0]["cells"][3].endswith("s")


async def test_selectors_and_watch(widgets: TestClient) -> None:
    for name, tier in (("a", "web"), ("b", "db")):
        body = widget(name)
        body["metadata"]["labels"] = {"tier": tier}
        await call(widgets, "POST", W1, body, status=201)
    assert [i["metadata"]["name"] for i in (await call(widgets, "GET", W1, labelSelector="tier=db"))["items"]] == ["b"]
    assert [i["metadata"]["name"] for i in
            (await call(widgets, "GET", f"/apis/{GROUP}/v1/widgets", fieldSelector="metadata.name=a"))["items"]] == ["a"]
    assert (await call(widgets, "GET", W1, fieldSelector="metadata.namespace=other"))["items"] == []
    err = await call(widgets, "GET", W1, status=400, fieldSelector="spec.image=x")
    assert "spec.image" in err["message"]
    await call(widgets, "PATCH", f"{W1}/b", {"spec": {"color": "blue"}}, content_type="application/merge-patch+json")
    assert [i["metadata"]["name"] for i in (await call(widgets, "GET", W1, fieldSelector="spec.color=blue"))["items"]] \
        == ["b"]
    assert [i["metadata"]["name"] for i in (await call(widgets, "GET", W1, fieldSelector="spec.color!=blue"))["items"]] \
        == ["a"]
    listed = await call(widgets, "GET", W1)
    rv = listed["metadata"]["resourceVersion"]
    task = asyncio.create_task(watch_events(widgets, W1B, 1, resourceVersion=rv, labelSelector="tier=web"))
    await asyncio.sleep(0.1)
    await call(widgets, "PATCH", f"{W1}/b", {"spec": {"replicas": 2}}, content_type="application/merge-patch+json")
    await call(widgets, "PATCH", f"{W1}/a", {"spec": {"replicas": 3}}, content_type="application/merge-patch+json")
    (ev,) = await task
    assert ev["type"] == "MODIFIED" and ev["object"]["metadata"]["name"] == "a"
    assert ev["object"]["apiVersion"] == f"{GROUP}/v1beta1"


async def test_cluster_scoped_crd(api: TestClient) -> None:
    await call(api, "POST", CRDS, crd(name="planets", kind="Planet", scope="Cluster"), status=201)
    await established(api, f"planets.{GROUP}")
    body = {"apiVersion": f"{GROUP}/v1", "kind": "Planet", "metadata": {"name": "mars"}, "spec": {"image": "x"}}
    await call(api, "POST", f"/apis/{GROUP}/v1/planets", body, status=201)
    assert (await call(api, "GET", f"/apis/{GROUP}/v1/planets/mars"))["metadata"].get("namespace") is None
    await call(api, "GET", f"/apis/{GROUP}/v1/namespaces/default/planets", status=404)


# -- deletion ------------------------------------------------------------------------------
async def test_deleting_a_crd_deletes_its_objects(widgets: TestClient) -> None:
    for name in ("x", "y"):
        await call(widgets, "POST", W1, widget(name), status=201)
    with_fin = widget("held")
    with_fin["metadata"]["finalizers"] = ["kptest.example.com/hold"]
    await call(widgets, "POST", W1, with_fin, status=201)
    deleted = await call(widgets, "DELETE", f"{CRDS}/widgets.{GROUP}")
    assert "customresourcecleanup.apiextensions.k8s.io" in deleted["metadata"]["finalizers"]
    async with asyncio.timeout(5):
        while len((await call(widgets, "GET", W1))["items"]) > 1:
            await asyncio.sleep(0.05)
    crd_now = await call(widgets, "GET", f"{CRDS}/widgets.{GROUP}")
    assert any(c["type"] == "Terminating" and c["status"] == "True" for c in crd_now["status"]["conditions"])
    err = await call(widgets, "POST", W1, widget("late"), status=405)
    assert "terminating" in err["message"]
    await call(widgets, "PATCH", f"{W1}/held", {"metadata": {"finalizers": None}},
               content_type="application/merge-patch+json")
    async with asyncio.timeout(5):
        while (await widgets.get(f"{CRDS}/widgets.{GROUP}")).status != 404:
            await asyncio.sleep(0.05)
    await call(widgets, "GET", W1, status=404)
    res = await call(widgets, "GET", "/apis")
    assert GROUP not in [g["name"] for g in res["groups"]]


async def test_crds_are_served_after_a_restart(tmp_path: Path) -> None:
    async for api in _serve(tmp_path):
        await call(api, "POST", CRDS, crd(), status=201)
        await established(api, f"widgets.{GROUP}")
        created = await call(api, "POST", W1, widget("kept"), status=201)
    async for api in _serve(tmp_path):
        got = await call(api, "GET", f"{W1}/kept")
        assert got["metadata"]["uid"] == created["metadata"]["uid"]
        rv = created["metadata"]["resourceVersion"]
        task = asyncio.create_task(watch_events(api, W1, 1, resourceVersion=rv))
        await asyncio.sleep(0.1)
        await call(api, "PATCH", f"{W1}/kept", {"spec": {"replicas": 2}}, content_type="application/merge-patch+json")
        (ev,) = await task
        assert ev["type"] == "MODIFIED" and ev["object"]["spec"]["replicas"] == 2


async def test_metadata_is_an_object_meta(widgets: TestClient) -> None:
    labels_list = widget("m")
    labels_list["metadata"]["labels"] = ["x"]
    err = await call(widgets, "POST", W1, labels_list, status=400)
    assert err["message"] == ('Widget in version "v1" cannot be handled as a Widget: '
                              "metadata.labels: expected object, got array")
    extra = widget("m")
    extra["metadata"]["bogus"] = 1
    resp = await widgets.post(W1, json=extra)
    assert resp.status == 201 and "bogus" not in (await resp.json())["metadata"]
    assert any("metadata.bogus" in w for w in resp.headers.getall("Warning", []))


async def test_server_side_apply_merges_by_the_crds_list_types(widgets: TestClient) -> None:
    """Two managers apply different items of a `list-type: map` and a `set`: they merge by the
    schema (structured-merge-diff), not as atomic lists that would conflict."""
    import json as _json

    async def apply(manager: str, **spec: Any) -> dict[str, Any]:
        resp = await widgets.patch(f"{W1}/w-ssa", params={"fieldManager": manager},
                                   data=_json.dumps(widget("w-ssa", **spec)),
                                   headers={"Content-Type": "application/apply-patch+yaml"})
        text = await resp.text()
        assert resp.status in (200, 201), text
        return _json.loads(text)

    await apply("a", ports=[{"name": "http", "port": 80}], tags=["x"])
    got = await apply("b", ports=[{"name": "metrics", "port": 9090}], tags=["y"])
    assert sorted(p["name"] for p in got["spec"]["ports"]) == ["http", "metrics"]
    assert sorted(got["spec"]["tags"]) == ["x", "y"]
    owned = {m["manager"]: m["fieldsV1"] for m in got["metadata"]["managedFields"]}
    assert 'k:{"name":"metrics"}' in owned["b"]["f:spec"]["f:ports"]
    assert 'k:{"name":"http"}' in owned["a"]["f:spec"]["f:ports"]


@pytest.mark.parametrize("path, want", [
    (".spec.replicas", [3]),
    (".status.addresses[*].value", ["1.2.3.4", "5.6.7.8"]),
    ('.status.conditions[?(@.type=="Programmed")].status', ["False"]),
    ("{.status.conditions[?(@.type!='Accepted')].type}", ["Programmed"]),
    (".status.conditions[0].reason", ["Ok"]),
    (".spec.tags", [["a", "b"]]),
    (".spec.missing", []),
    ('.status.conditions[?(@.type=="Nope")].status', []),
])
def test_printer_column_json_paths_as_client_go_finds_them(path: str, want: list) -> None:
    from kubepy.kinds.apiextensions.customresource import column_values
    obj = {"spec": {"replicas": 3, "tags": ["a", "b"]},
           "status": {"addresses": [{"value": "1.2.3.4"}, {"value": "5.6.7.8"}],
                      "conditions": [{"type": "Accepted", "status": "True", "reason": "Ok"},
                                     {"type": "Programmed", "status": "False"}]}}
    assert column_values(obj, path) == want
