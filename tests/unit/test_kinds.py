"""The kind registry: every kind says everything the server derives from it,
and adding or removing a kind at runtime is seen by discovery, OpenAPI, routing
and the client's URLs."""

from __future__ import annotations

import datetime as dt

import kubernetes.client.models as models
import pytest

from kubepy import kinds
from kubepy.api import discovery, openapi, protobuf
from kubepy.api.protobuf import SCHEMA
from kubepy.kinds import printers, validation


_JSON_ONLY = {"customresourcedefinitions.apiextensions.k8s.io"}


@pytest.mark.parametrize("k", kinds.all_kinds(), ids=lambda k: f"{k.api_version}/{k.kind}")
def test_every_kind_is_fully_described(k: kinds.Kind):
    assert hasattr(models, k.model), f"{k.kind}: no schema (model {k.model!r} is not a client model)"
    if k.virtual:  # create-only, never stored: no list, table, protobuf or field selectors
        assert k.verbs == ["create"]
        assert openapi.definition_for(k.api_version, k.kind) is not None, f"{k.kind}: not in the OpenAPI document"
        return
    assert hasattr(models, k.list_model), f"{k.kind}: no list schema {k.list_model!r}"
    # CRDs are JSON-only in kubepy (their JSONSchemaProps carry raw JSON inside protobuf, which the decoder
    # does not model); a protobuf body for one is refused with a 400 naming application/json.
    assert k.proto in SCHEMA or k.qualified in _JSON_ONLY, f"{k.kind}: no protobuf root"
    assert k.printer is not None and k.printer.columns, f"{k.kind}: no printer"
    assert k.strategy is not None
    assert {"metadata.name"} <= k.selectable_fields
    assert openapi.definition_for(k.api_version, k.kind) is not None, f"{k.kind}: not in the OpenAPI document"
    # the printer gives one cell per column, for a bare object too
    cells = k.printer.cells({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"}},
                            dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    assert len(cells) == len(k.printer.columns)
    # a kind named by plural, kind or short name resolves to itself
    for name in (k.plural, k.singular, *k.short_names):
        assert printers.printer_for(f"{name}.{k.group}" if k.group else name) is k.printer


def test_names_are_unique():
    seen: dict[tuple[str, str, str], kinds.Kind] = {}
    for k in kinds.all_kinds():
        assert (k.group, k.version, k.plural) not in seen
        seen[(k.group, k.version, k.plural)] = k
    shorts = [s for k in kinds.all_kinds() for s in k.short_names]
    assert len(shorts) == len(set(shorts))


def _widget() -> kinds.Kind:
    return kinds.Kind("example.kubepy.test", "v1", "Widget", "widgets", namespaced=True, short_names=("wdg",),
                      model="V1ConfigMap", strategy=kinds.Strategy(validate=_no_blue))


def _no_blue(obj: dict, old: dict | None, errs: validation.Errs) -> None:
    if obj.get("data", {}).get("color") == "blue":
        errs.invalid("data.color", "blue", "no blue widgets")


def test_a_kind_registered_at_runtime_is_served_everywhere():
    w = kinds.register(_widget())
    try:
        assert kinds.lookup("example.kubepy.test", "v1", "widgets") is w
        assert kinds.by_kind("example.kubepy.test", "Widget") is w
        assert "example.kubepy.test" in kinds.group_versions()
        assert discovery.api_group("example.kubepy.test") is not None
        names = [r["name"] for r in discovery.api_resource_list("example.kubepy.test", "v1")["resources"]]
        assert names == ["widgets"]
        assert w.path("ns", "a") == "/apis/example.kubepy.test/v1/namespaces/ns/widgets/a"
        assert "/apis/example.kubepy.test/v1/namespaces/{namespace}/widgets" in openapi.openapi_v2()["paths"]
        with pytest.raises(kinds.Invalid) as info:
            validation.validate_object(w, {"metadata": {"name": "a"}, "data": {"color": "blue"}})
        assert info.value.causes[0]["field"] == "data.color"
        validation.validate_object("widgets.example.kubepy.test", {"metadata": {"name": "a"}, "data": {}})
        assert printers.table_columns("wdg")[0]["name"] == "Name"  # no printer: Name + Age
    finally:
        kinds.unregister(w)
    assert kinds.lookup("example.kubepy.test", "v1", "widgets") is None
    assert "example.kubepy.test" not in kinds.group_versions()
    assert "/apis/example.kubepy.test/v1/namespaces/{namespace}/widgets" not in openapi.openapi_v2()["paths"]


def test_the_same_resource_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        kinds.register(kinds.Kind("", "v1", "Pod", "pods", namespaced=True))


def test_protobuf_roots_come_from_the_kinds():
    roots = protobuf.roots()
    for k in kinds.all_kinds():
        if k.qualified in _JSON_ONLY:
            assert (k.api_version, k.kind) not in roots
            continue
        if k.virtual:
            continue
        assert roots[(k.api_version, k.kind)] == k.proto


def test_invalid_names_the_group_and_lists_several_problems_as_kubernetes_does():
    from kubepy.kinds.validation import validate_object
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"},
           "spec": {"parallelism": -1, "template": {"spec": {"restartPolicy": "Always",
                                                                   "containers": [{"name": "c", "image": "i"}]}}}}
    with pytest.raises(kinds.Invalid) as e:
        validate_object(kinds.lookup("batch", "v1", "jobs"), job)
    msg = str(e.value)
    assert msg.startswith('Job.batch "x" is invalid: [') and msg.endswith("]"), msg
    assert "spec.parallelism: Invalid value: -1" in msg and ", spec.template.spec.restartPolicy" in msg, msg
    one = kinds.invalid_message("Pod", "p", [{"field": "spec.x", "message": "Required value"}])
    assert one == 'Pod "p" is invalid: spec.x: Required value'
