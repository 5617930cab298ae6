"""Server-side apply in process: the API server's app on a temporary store,
driven over HTTP with ``application/apply-patch+yaml``.

The cases follow Kubernetes' documentation of server-side apply
(https://kubernetes.io/docs/reference/using-api/server-side-apply/):
managed fields, conflicts and forcing, shared ownership, merge strategy by
list and map type, removing fields a manager stops applying, transferring
ownership, and upgrading from client-side apply.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from tests.api.test_semantics import CM, DEPLOYS, PODS, _serve, call

APPLY = "application/apply-patch+yaml"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[TestClient]:
    async for client in _serve(tmp_path):
        yield client


async def apply(api: TestClient, path: str, body: Any, manager: str | None = "kubectl", *, status: int = 200,
                force: bool | None = None, as_yaml: bool = True, **params: Any) -> dict[str, Any]:
    if manager is not None:
        params["fieldManager"] = manager
    if force is not None:
        params["force"] = "true" if force else "false"
    data = yaml.safe_dump(body) if as_yaml else json.dumps(body)
    resp = await api.patch(path, data=data, headers={"Content-Type": APPLY}, params=params)
    text = await resp.text()
    assert resp.status == status, f"PATCH {path}: {resp.status} {text}"
    return json.loads(text)


def entries(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """managedFields by manager (plus subresource, when there is one)."""
    out = {}
    for e in obj["metadata"].get("managedFields") or []:
        name = e["manager"] + (f"/{e['subresource']}" if e.get("subresource") else "")
        out[name] = e
    return out


def fields(obj: dict[str, Any], manager: str) -> dict[str, Any]:
    return entries(obj)[manager]["fieldsV1"]


def deployment(name: str = "nginx", *, replicas: int | None = 3, image: str = "nginx:1.14.2",
               **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "nginx", "image": image}]}}}}
    if replicas is not None:
        body["spec"]["replicas"] = replicas
    body["spec"].update(spec)
    return body


def cm(name: str = "test-cm", **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **fields.pop("metadata", {})},
            **fields}


# -- the documented managedFields example -------------------------------------------
async def test_apply_creates_and_records_the_documented_managed_fields(api):
    body = cm(metadata={"labels": {"test-label": "test"}}, data={"key": "some value"})
    created = await apply(api, f"{CM}/test-cm", body, status=201)
    assert created["data"] == {"key": "some value"}
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    (entry,) = created["metadata"]["managedFields"]
    assert {k: entry[k] for k in ("manager", "operation", "apiVersion", "fieldsType")} == {
        "manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1"}
    assert entry["time"].endswith("Z")
    assert entry["fieldsV1"] == {"f:data": {"f:key": {}}, "f:metadata": {"f:labels": {"f:test-label": {}}}}
    # Applying the same again changes nothing: same resourceVersion, same entries.
    again = await apply(api, f"{CM}/test-cm", body)
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert again["metadata"]["managedFields"] == created["metadata"]["managedFields"]


async def test_json_body_and_get_shows_managed_fields(api):
    await apply(api, f"{CM}/j", cm("j", data={"a": "1"}), as_yaml=False, status=201)
    got = await call(api, "GET", f"{CM}/j")
    assert fields(got, "kubectl") == {"f:data": {"f:a": {}}}


# -- conflicts ----------------------------------------------------------------------
async def test_conflict_names_the_manager_and_field_and_force_takes_ownership(api):
    await apply(api, f"{DEPLOYS}/nginx", deployment(), "manager-a", status=201)
    err = await apply(api, f"{DEPLOYS}/nginx", deployment(replicas=5), "manager-b", status=409)
    assert err["reason"] == "Conflict" and err["code"] == 409
    assert err["message"] == 'Apply failed with 1 conflict: conflict with "manager-a": .spec.replicas'
    assert err["details"]["causes"] == [{"reason": "FieldManagerConflict", "message": 'conflict with "manager-a"',
                                         "field": ".spec.replicas"}]
    # Nothing was written.
    assert (await call(api, "GET", f"{DEPLOYS}/nginx"))["spec"]["replicas"] == 3
    forced = await apply(api, f"{DEPLOYS}/nginx", deployment(replicas=5), "manager-b", force=True)
    assert forced["spec"]["replicas"] == 5
    assert "f:replicas" not in fields(forced, "manager-a")["f:spec"]
    assert "f:replicas" in fields(forced, "manager-b")["f:spec"]


async def test_conflicts_with_an_update_manager_say_its_api_version(api):
    await call(api, "POST", DEPLOYS, deployment("web"), status=201, fieldManager="kubectl-create")
    err = await apply(api, f"{DEPLOYS}/web", deployment("web", replicas=4, image="nginx:2"), status=409)
    assert err["message"] == ('Apply failed with 2 conflicts: conflicts with "kubectl-create" using apps/v1:\n'
                              "- .spec.replicas\n"
                              '- .spec.template.spec.containers[name="nginx"].image')
    assert [c["field"] for c in err["details"]["causes"]] == [
        ".spec.replicas", '.spec.template.spec.containers[name="nginx"].image']
    assert {c["message"] for c in err["details"]["causes"]} == {'conflict with "kubectl-create" using apps/v1'}


async def test_same_value_is_shared_ownership_not_a_conflict(api):
    await apply(api, f"{DEPLOYS}/nginx", deployment(), "manager-a", status=201)
    shared = await apply(api, f"{DEPLOYS}/nginx", deployment(replicas=3), "manager-b")
    assert "f:replicas" in fields(shared, "manager-a")["f:spec"]
    assert "f:replicas" in fields(shared, "manager-b")["f:spec"]


async def test_updates_always_win_and_take_ownership(api):
    await apply(api, f"{DEPLOYS}/nginx", deployment(), "manager-a", status=201)
    patched = await call(api, "PATCH", f"{DEPLOYS}/nginx", {"spec": {"replicas": 7}},
                         content_type="application/merge-patch+json", fieldManager="hpa-like")
    assert patched["spec"]["replicas"] == 7
    assert fields(patched, "hpa-like") == {"f:spec": {"f:replicas": {}}}
    assert entries(patched)["hpa-like"]["operation"] == "Update"
    assert "f:replicas" not in fields(patched, "manager-a")["f:spec"]


# -- removing fields ----------------------------------------------------------------
async def test_fields_no_longer_applied_are_removed_unless_someone_else_owns_them(api):
    await apply(api, f"{CM}/r", cm("r", data={"a": "1", "b": "2", "c": "3"}), "one", status=201)
    await apply(api, f"{CM}/r", cm("r", data={"c": "3"}), "two")  # shares c
    out = await apply(api, f"{CM}/r", cm("r", data={"a": "1"}), "one")
    assert out["data"] == {"a": "1", "c": "3"}
    assert fields(out, "one") == {"f:data": {"f:a": {}}}


async def test_transferring_ownership_of_replicas_to_an_updater(api):
    """The documented hand-over: a controller (an Update) takes .spec.replicas; the applier
    then drops replicas from its configuration and the controller's value stays."""
    await apply(api, f"{DEPLOYS}/nginx", deployment(replicas=3), status=201)
    await call(api, "PATCH", f"{DEPLOYS}/nginx", {"spec": {"replicas": 6}},
               content_type="application/merge-patch+json", fieldManager="autoscaler")
    out = await apply(api, f"{DEPLOYS}/nginx", deployment(replicas=None))
    assert out["spec"]["replicas"] == 6
    assert fields(out, "autoscaler") == {"f:spec": {"f:replicas": {}}}


async def test_removing_a_field_only_this_applier_owned_drops_it_to_its_default(api):
    await apply(api, f"{DEPLOYS}/nginx", deployment(replicas=4), status=201)
    out = await apply(api, f"{DEPLOYS}/nginx", deployment(replicas=None))
    assert out["spec"]["replicas"] == 1  # removed, then defaulted


# -- merge strategy: lists and maps ---------------------------------------------------
def _pod(containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": containers, **spec}}


def _template(containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """A Deployment whose pod template holds ``containers`` (a pod's own may not change)."""
    body = deployment("t", replicas=None)
    body["spec"]["template"]["spec"] = {"containers": containers, **spec}
    return body


@pytest.mark.parametrize("first,second,conflict,expect", [
    # list-type=map (containers by name): each manager owns its own item.
    pytest.param(_template([{"name": "a", "image": "img:1"}]), _template([{"name": "b", "image": "img:2"}]), None,
                 lambda d: [c["name"] for c in d["spec"]["template"]["spec"]["containers"]] == ["a", "b"],
                 id="map-list-items-merge"),
    pytest.param(_pod([{"name": "a", "image": "img:1"}]), _pod([{"name": "a", "image": "img:2"}]),
                 '.spec.containers[name="a"].image', None, id="map-list-same-item-conflicts"),
    # list-type=atomic (tolerations): the whole list is one field.
    pytest.param(_pod([{"name": "a", "image": "i"}], tolerations=[{"key": "x", "operator": "Exists"}]),
                 _pod([{"name": "a", "image": "i"}], tolerations=[{"key": "y", "operator": "Exists"}]),
                 ".spec.tolerations", None, id="atomic-list-conflicts"),
    # granular map (nodeSelector is atomic; labels are granular).
    pytest.param(_pod([{"name": "a", "image": "i"}], nodeSelector={"x": "1"}),
                 _pod([{"name": "a", "image": "i"}], nodeSelector={"y": "1"}),
                 ".spec.nodeSelector", None, id="atomic-map-conflicts"),
])
async def test_list_and_map_types(api, first, second, conflict, expect):
    path = f"{DEPLOYS}/t" if first["kind"] == "Deployment" else f"{PODS}/p"
    await apply(api, path, first, "one", status=201)
    if conflict is not None:
        err = await apply(api, path, second, "two", status=409)
        assert err["details"]["causes"][0]["field"] == conflict, err
        return
    out = await apply(api, path, second, "two")
    assert expect(out), out["spec"]


async def test_set_lists_merge_by_value_and_granular_maps_by_key(api):
    await apply(api, f"{CM}/s", cm("s", metadata={"finalizers": ["example.com/a"], "labels": {"a": "1"}}), "one",
                status=201)
    out = await apply(api, f"{CM}/s", cm("s", metadata={"finalizers": ["example.com/b"], "labels": {"b": "2"}}),
                      "two")
    assert out["metadata"]["finalizers"] == ["example.com/a", "example.com/b"]
    assert out["metadata"]["labels"] == {"a": "1", "b": "2"}
    assert fields(out, "two") == {"f:metadata": {"f:finalizers": {'v:"example.com/b"': {}},
                                                 "f:labels": {"f:b": {}}}}
    out = await apply(api, f"{CM}/s", cm("s"), "one")  # "one" stops applying its finalizer and label
    assert out["metadata"]["finalizers"] == ["example.com/b"]
    assert out["metadata"]["labels"] == {"b": "2"}
    await call(api, "PATCH", f"{CM}/s", {"metadata": {"finalizers": None}},
               content_type="application/merge-patch+json")


async def test_map_list_keys_include_defaulted_keys(api):
    """Container ports are keyed by containerPort and protocol (TCP when left out)."""
    pod = _pod([{"name": "a", "image": "i", "ports": [{"containerPort": 80}]}])
    out = await apply(api, f"{PODS}/p", pod, status=201)
    ports = fields(out, "kubectl")["f:spec"]["f:containers"]['k:{"name":"a"}']["f:ports"]
    assert ports == {'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}}


async def test_new_items_of_a_map_list_land_where_the_applier_puts_them(api):
    one = [{"name": "a", "image": "i"}, {"name": "c", "image": "i"}]
    await apply(api, f"{DEPLOYS}/t", _template(one), "one", status=201)
    out = await apply(api, f"{DEPLOYS}/t", _template([{"name": "b", "image": "i"}, {"name": "c", "image": "i"}]),
                      "two")
    assert [c["name"] for c in out["spec"]["template"]["spec"]["containers"]] == ["a", "b", "c"]


# -- managed fields on every write -----------------------------------------------------
async def test_updates_are_recorded_with_their_manager_or_user_agent(api):
    resp = await api.post(CM, data=json.dumps(cm("u", data={"a": "1"})),
                          headers={"Content-Type": "application/json",
                                   "User-Agent": "kube-controller-manager/v1.34.0 (linux/amd64) kubernetes/abc"})
    created = await resp.json()
    assert resp.status == 201
    (entry,) = created["metadata"]["managedFields"]
    assert entry["manager"] == "kube-controller-manager" and entry["operation"] == "Update"
    assert entry["apiVersion"] == "v1" and entry["fieldsV1"] == {"f:data": {".": {}, "f:a": {}}}
    put = {**created, "data": {"a": "1", "b": "2"}}
    put["metadata"] = {k: v for k, v in created["metadata"].items() if k != "managedFields"}
    updated = await call(api, "PUT", f"{CM}/u", put, fieldManager="kubectl-edit")
    assert fields(updated, "kubectl-edit") == {"f:data": {"f:b": {}}}
    assert set(entries(updated)) == {"kube-controller-manager", "kubectl-edit"}
    # A write that changes nothing keeps the object, its resourceVersion and its entries.
    same = await call(api, "PUT", f"{CM}/u", {**put, "metadata": updated["metadata"]}, fieldManager="other")
    assert same["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]
    assert same["metadata"]["managedFields"] == updated["metadata"]["managedFields"]


async def test_create_by_update_matches_upstream_shape(api):
    created = await call(api, "POST", DEPLOYS, deployment("shape"), status=201, fieldManager="kubectl-create")
    f = fields(created, "kubectl-create")
    spec = f["f:spec"]
    # Non-pointer structs (spec, template, its spec) are never "added" themselves; maps are.
    assert "." not in spec and "." not in spec["f:template"] and "." not in spec["f:template"]["f:spec"]
    assert spec["f:selector"] == {}  # a LabelSelector is atomic
    container = spec["f:template"]["f:spec"]["f:containers"]['k:{"name":"nginx"}']
    assert container["."] == {} and "f:image" in container and "f:resources" in container
    # Defaulted fields belong to the writer, as upstream's typed defaults do.
    assert "f:revisionHistoryLimit" in spec and "f:progressDeadlineSeconds" in spec
    assert spec["f:template"]["f:metadata"]["f:labels"] == {".": {}, "f:app": {}}


async def test_status_writes_are_recorded_with_their_subresource(api):
    created = await call(api, "POST", DEPLOYS, deployment("st"), status=201, fieldManager="creator")
    body = {**created, "status": {"replicas": 0, "observedGeneration": 1, "conditions": [
        {"type": "Available", "status": "False", "reason": "Testing", "message": "m"}]}}
    out = await call(api, "PUT", f"{DEPLOYS}/st/status", body, fieldManager="controller")
    entry = entries(out)["controller/status"]
    assert entry["subresource"] == "status" and entry["operation"] == "Update"
    assert set(entry["fieldsV1"]) == {"f:status"}
    assert 'k:{"type":"Available"}' in entry["fieldsV1"]["f:status"]["f:conditions"]
    # Status applied through the subresource.
    applied = await apply(api, f"{DEPLOYS}/st/status", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "st"},
        "status": {"conditions": [{"type": "Progressing", "status": "True", "reason": "R", "message": "m"}]}},
        "status-applier")
    assert [c["type"] for c in applied["status"]["conditions"]] == ["Available", "Progressing"]
    assert entries(applied)["status-applier/status"]["operation"] == "Apply"


async def test_status_in_an_apply_to_the_main_resource_is_not_owned(api):
    body = deployment("ign")
    body["status"] = {"replicas": 9}
    out = await apply(api, f"{DEPLOYS}/ign", body, status=201)
    assert "f:status" not in fields(out, "kubectl")
    assert (out.get("status") or {}).get("replicas") != 9


async def test_managed_fields_reset_by_an_update(api):
    created = await call(api, "POST", CM, cm("z", data={"a": "1"}), status=201, fieldManager="a")
    body = {**created, "metadata": {**created["metadata"], "managedFields": [{}]}, "data": {"a": "2"}}
    out = await call(api, "PUT", f"{CM}/z", body, fieldManager="b")
    assert "managedFields" not in out["metadata"]  # reset, and not tracked again until an apply


async def test_objects_without_managed_fields_start_tracking_at_first_apply(api):
    """An object from before managed fields were kept (none stored): updates do not
    start tracking it; its first apply gives the existing fields to before-first-apply."""
    created = await call(api, "POST", CM, cm("old", data={"a": "1", "b": "2"}), status=201,
                         fieldManager="creator")
    body = {**created, "metadata": {**created["metadata"], "managedFields": []}}
    cleared = await call(api, "PUT", f"{CM}/old", body, fieldManager="x")
    assert "managedFields" not in cleared["metadata"]
    still = await call(api, "PATCH", f"{CM}/old", {"data": {"c": "3"}},
                       content_type="application/merge-patch+json", fieldManager="y")
    assert "managedFields" not in still["metadata"]
    out = await apply(api, f"{CM}/old", cm("old", data={"a": "1", "d": "4"}), "applier")
    assert out["data"] == {"a": "1", "b": "2", "c": "3", "d": "4"}
    assert fields(out, "before-first-apply") == {"f:data": {".": {}, "f:a": {}, "f:b": {}, "f:c": {}}}
    assert fields(out, "applier") == {"f:data": {"f:a": {}, "f:d": {}}}
    # Those fields are owned now: changing one conflicts, as on Kubernetes.
    err = await apply(api, f"{CM}/old", cm("old", data={"b": "0"}), "applier", status=409)
    assert err["message"] == 'Apply failed with 1 conflict: conflict with "before-first-apply" using v1: .data.b'


# -- client-side apply → server-side apply -----------------------------------------------
async def test_upgrade_from_client_side_apply(api):
    """kubectl apply (client side) made the object; kubectl apply --server-side takes
    over without conflicts where the live value is still the last-applied one."""
    config = deployment("csa")
    last = json.dumps(config)
    body = json.loads(last)
    body["metadata"]["annotations"] = {LAST_APPLIED: last + "\n"}
    await call(api, "POST", DEPLOYS, body, status=201, fieldManager="kubectl-client-side-apply")
    changed = deployment("csa", replicas=5, image="nginx:1.16")
    out = await apply(api, f"{DEPLOYS}/csa", changed)
    assert out["spec"]["replicas"] == 5
    assert out["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.16"
    assert "f:replicas" in fields(out, "kubectl")["f:spec"]
    assert "f:replicas" not in fields(out, "kubectl-client-side-apply")["f:spec"]
    # The annotation follows what was applied.
    assert json.loads(out["metadata"]["annotations"][LAST_APPLIED])["spec"]["replicas"] == 5


async def test_upgrade_still_conflicts_where_someone_else_changed_the_field(api):
    config = deployment("csa2")
    body = json.loads(json.dumps(config))
    body["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(config) + "\n"}
    await call(api, "POST", DEPLOYS, body, status=201, fieldManager="kubectl-client-side-apply")
    await call(api, "PATCH", f"{DEPLOYS}/csa2", {"spec": {"replicas": 8}},
               content_type="application/strategic-merge-patch+json", fieldManager="kubectl-edit")
    err = await apply(api, f"{DEPLOYS}/csa2", deployment("csa2", replicas=5), status=409)
    assert err["message"] == 'Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: .spec.replicas'
    # Another manager name is not upgraded: it conflicts with the client-side applier.
    err = await apply(api, f"{DEPLOYS}/csa2", deployment("csa2", replicas=8, image="x:1"), "someone", status=409)
    assert 'conflict with "kubectl-client-side-apply" using apps/v1' in err["message"]


# -- options and bad input ----------------------------------------------------------------
async def test_field_manager_is_required_and_force_only_for_apply(api):
    err = await apply(api, f"{CM}/x", cm("x"), manager=None, status=422)
    assert err["message"] == 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: ' \
                             'is required for apply patch'
    assert err["details"]["causes"] == [{"reason": "FieldValueRequired", "field": "fieldManager",
                                         "message": "Required value: is required for apply patch"}]
    await call(api, "POST", CM, cm("x"), status=201)
    err = await call(api, "PATCH", f"{CM}/x", {"data": {"a": "1"}}, status=422, force="true",
                     content_type="application/merge-patch+json")
    assert err["message"].endswith("force: Forbidden: may not be specified for non-apply patch")
    err = await call(api, "POST", CM, cm("y"), status=422, fieldManager="a" * 129)
    assert err["details"]["kind"] == "CreateOptions" and err["details"]["causes"][0]["field"] == "fieldManager"


@pytest.mark.parametrize("body,message", [
    ({**cm("b"), "apiVersion": "v2"}, "Incorrect version specified in apply patch. Specified patch version: v2, "
                                      "expected: v1"),
    ({**cm("b"), "kind": "Secret"}, "invalid object type: /v1, Kind=Secret"),
    (cm("b", metadata={"managedFields": [{"manager": "x"}]}), "metadata.managedFields must be nil"),
    (cm("other"), "the name of the object (other) does not match the name on the URL (b)"),
    ("just text", "the apply patch must be a YAML or JSON object"),
])
async def test_bad_apply_bodies_are_400(api, body, message):
    err = await apply(api, f"{CM}/b", body, status=400)
    assert err["message"] == message


async def test_map_list_item_without_its_key_is_refused_with_the_path(api):
    err = await apply(api, f"{PODS}/p", _pod([{"image": "i"}]), status=400)
    assert '.spec.containers: element 0: associative list with keys has an element that omits key field "name"' \
        in err["message"]


async def test_duplicate_applied_items_are_refused(api):
    err = await apply(api, f"{PODS}/p", _pod([{"name": "a", "image": "i"}, {"name": "a", "image": "j"}]),
                      status=400)
    assert 'duplicate entries for key [name="a"]' in err["message"]


async def test_dry_run_apply_changes_nothing(api):
    await apply(api, f"{CM}/d", cm("d", data={"a": "1"}), status=201)
    out = await apply(api, f"{CM}/d", cm("d", data={"a": "2"}), dryRun="All")
    assert out["data"] == {"a": "2"}
    assert (await call(api, "GET", f"{CM}/d"))["data"] == {"a": "1"}
    await apply(api, f"{CM}/dry-new", cm("dry-new"), dryRun="All", status=201)
    await call(api, "GET", f"{CM}/dry-new", status=404)


async def test_apply_to_the_status_of_a_missing_object_is_404(api):
    await apply(api, f"{DEPLOYS}/nope/status", deployment("nope"), status=404)


async def test_scale_writes_take_replicas_as_the_scale_subresource(api):
    """kubectl scale through /scale takes .spec.replicas; the applier then conflicts with it."""
    await apply(api, f"{DEPLOYS}/nginx", deployment(replicas=2), status=201)
    await call(api, "PATCH", f"{DEPLOYS}/nginx/scale", {"spec": {"replicas": 4}},
               content_type="application/merge-patch+json", fieldManager="kubectl-scale")
    got = await call(api, "GET", f"{DEPLOYS}/nginx")
    entry = entries(got)["kubectl-scale/scale"]
    assert entry["subresource"] == "scale" and entry["apiVersion"] == "apps/v1"
    assert entry["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    err = await apply(api, f"{DEPLOYS}/nginx", deployment(replicas=3), status=409)
    assert err["message"] == ('Apply failed with 1 conflict: conflict with "kubectl-scale" with subresource "scale" '
                              "using apps/v1: .spec.replicas")
    await apply(api, f"{DEPLOYS}/scale-ssa", deployment("scale-ssa"), status=201)
    resp = await api.patch(f"{DEPLOYS}/scale-ssa/scale", data="{}", params={"fieldManager": "x"},
                           headers={"Content-Type": APPLY})
    assert resp.status == 415  # apply through /scale is not served (yet): said, not ignored


async def test_services_apply_merges_ports_by_port_and_protocol(api):
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
    created = await apply(api, "/api/v1/namespaces/default/services/web", svc, status=201)
    assert created["spec"]["clusterIP"]
    same = await apply(api, "/api/v1/namespaces/default/services/web", svc)
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    other = {**svc, "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}}
    out = await apply(api, "/api/v1/namespaces/default/services/web", other, "dns-owner")
    assert [(p["port"], p["protocol"]) for p in out["spec"]["ports"]] == [(80, "TCP"), (53, "UDP")]
    assert out["spec"]["clusterIP"] == created["spec"]["clusterIP"]


@pytest.mark.parametrize("validation", ["Strict", "Warn", "Ignore"])
async def test_unknown_fields_in_an_applied_configuration_are_refused(api, validation):
    body = cm("u", data={"a": "1"})
    body["bogus"] = 1
    err = await apply(api, f"{CM}/u", body, status=400, fieldValidation=validation)
    assert err["message"] == 'failed to create typed patch object (/u; /v1, Kind=ConfigMap): ' \
                             '.bogus: field not declared in schema'
    await call(api, "GET", f"{CM}/u", status=404)


async def test_a_resource_version_in_the_configuration_is_a_precondition(api):
    created = await apply(api, f"{CM}/rv", cm("rv", data={"a": "1"}), status=201)
    stale = cm("rv", data={"a": "2"}, metadata={"resourceVersion": "1"})
    err = await apply(api, f"{CM}/rv", stale, status=409)
    assert "the object has been modified" in err["message"]
    fresh = cm("rv", data={"a": "2"}, metadata={"resourceVersion": created["metadata"]["resourceVersion"]})
    assert (await apply(api, f"{CM}/rv", fresh))["data"] == {"a": "2"}


async def test_cluster_scoped_kinds_apply(api):
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kptest-ssa-ns", "labels": {"team": "a"}}}
    created = await apply(api, "/api/v1/namespaces/kptest-ssa-ns", ns, status=201)
    assert created["metadata"]["labels"]["team"] == "a"
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "kptest-ssa"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
    path = "/apis/rbac.authorization.k8s.io/v1/clusterroles/kptest-ssa"
    await apply(api, path, role, "one", status=201)
    other = {**role, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}
    err = await apply(api, path, other, "two", status=409)  # rules are an atomic list
    assert err["details"]["causes"][0]["field"] == ".rules"


async def test_what_admission_adds_to_a_created_pod_is_nobodys_field(api):
    """Upstream's create handler records managedFields before admission: the writer owns what it
    sent and its defaults (dnsPolicy...), not the token volume and its mounts that ServiceAccount
    admission added. (kubepy still applies that plugin's serviceAccountName and
    DefaultTolerationSeconds' tolerations with the defaults, so the writer owns those two.)"""
    await call(api, "POST", "/api/v1/namespaces/default/serviceaccounts",
               {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}},
               status=201)   # what the service-account controller would have made
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "run", "labels": {"run": "run"}},
           "spec": {"containers": [{"name": "run", "image": "busybox:1.36"}]}}
    created = await call(api, "POST", PODS, pod, status=201, fieldManager="kubectl-run")
    spec = created["spec"]
    assert any(v["name"].startswith("kube-api-access-") for v in spec["volumes"]), spec
    assert spec["serviceAccountName"] == "default" and spec["tolerations"], spec
    owned = fields(created, "kubectl-run")["f:spec"]
    assert "f:dnsPolicy" in owned and "f:restartPolicy" in owned and 'k:{"name":"run"}' in owned["f:containers"]
    assert "f:volumes" not in owned, owned
    mount_owned = owned["f:containers"]['k:{"name":"run"}']
    assert "f:volumeMounts" not in mount_owned, mount_owned
