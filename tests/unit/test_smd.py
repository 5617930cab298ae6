"""Structured merge and diff (kubepy.api.smd), field paths (fieldpath) and types
(structure) as pure functions: the merge rules of server-side apply by type."""

from __future__ import annotations

import pytest

from kubepy.api import fieldpath, smd, structure
from kubepy.api.structure import DEDUCED, from_openapi_schema

F = fieldpath.field


def paths(*dotted: str) -> frozenset:
    return frozenset(tuple(F(p) for p in d.split(".")) for d in dotted)


# -- FieldsV1 ------------------------------------------------------------------------------
FIELDS_V1 = {
    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
    "f:spec": {"f:containers": {'k:{"name":"a"}': {".": {}, "f:image": {}, "f:name": {}}},
               "f:finalizers": {'v:"x"': {}}, "f:items": {"i:0": {}}},
}


def test_fields_v1_round_trip_and_spelling():
    s = fieldpath.from_fields_v1(FIELDS_V1)
    assert fieldpath.to_fields_v1(s) == FIELDS_V1
    spelled = sorted(fieldpath.path_string(p) for p in s)
    assert '.spec.containers[name="a"].image' in spelled
    assert '.spec.finalizers[="x"]' in spelled and ".spec.items[0]" in spelled and ".metadata.labels" in spelled


@pytest.mark.parametrize("bad", [{"x:1": {}}, {"f:a": 1}, {"k:[1]": {}}, []])
def test_malformed_fields_v1_is_refused(bad):
    with pytest.raises(fieldpath.FieldsError):
        fieldpath.from_fields_v1(bad)


def test_keys_print_sorted_with_json_values():
    pe = smd._item_element(structure.ListType(structure.SCALAR, "map", ("port", "protocol")),
                           {"protocol": "UDP", "port": 53}, 0, ())
    assert fieldpath.element_string(pe) == 'k:{"port":53,"protocol":"UDP"}'
    assert fieldpath.path_string((pe,)) == '[port=53,protocol="UDP"]'


# -- deduced types: maps granular, lists atomic ----------------------------------------------
def test_deduced_maps_merge_by_key_and_lists_are_atomic():
    live = {"a": {"x": 1, "y": 2}, "l": [1, 2]}
    config = {"a": {"y": 3, "z": 4}, "l": [9]}
    assert smd.merge(live, config, DEDUCED) == {"a": {"x": 1, "y": 3, "z": 4}, "l": [9]}
    assert smd.to_field_set(config, DEDUCED) == paths("a", "a.y", "a.z", "l")


def test_updater_conflict_force_and_prune_with_deduced_type():
    u = smd.Updater(DEDUCED)
    obj, m = u.apply({}, {"a": 1, "b": 2}, {}, "one", "v1", force=False)
    with pytest.raises(smd.Conflicts) as err:
        u.apply(obj, {"a": 5}, m, "two", "v1", force=False)
    assert err.value.pairs() == [("one", (F("a"),))]
    obj, m = u.apply(obj, {"a": 5}, m, "two", "v1", force=True)
    assert obj == {"a": 5, "b": 2} and m["one"].fields == paths("b")
    obj, m = u.apply(obj, {}, m, "one", "v1", force=False)  # "one" no longer applies b: it goes
    assert obj == {"a": 5} and "one" not in m


def test_update_takes_changed_fields_from_their_owners():
    u = smd.Updater(DEDUCED)
    _, m = u.apply({}, {"a": 1, "b": 2}, {}, "applier", "v1", force=False)
    m = u.update({"a": 1, "b": 2}, {"a": 7, "b": 2}, m, "controller", "v1")
    assert m["controller"].fields == paths("a") and m["applier"].fields == paths("b")


# -- typed lists from an OpenAPI schema (what custom resources plug in) -----------------------
SCHEMA = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
    "ports": {"type": "array", "x-kubernetes-list-type": "map",
              "x-kubernetes-list-map-keys": ["port", "protocol"],
              "items": {"type": "object", "properties": {
                  "port": {"type": "integer"}, "protocol": {"type": "string", "default": "TCP"},
                  "name": {"type": "string"}}}},
    "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
    "args": {"type": "array", "items": {"type": "string"}},
    "selector": {"type": "object", "x-kubernetes-map-type": "atomic",
                 "additionalProperties": {"type": "string"}},
    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}


@pytest.mark.parametrize("live,config,expect", [
    ({"ports": [{"port": 80, "name": "a"}]}, {"ports": [{"port": 80, "protocol": "TCP", "name": "b"}]},
     {"ports": [{"port": 80, "name": "b", "protocol": "TCP"}]}),
    ({"ports": [{"port": 80}]}, {"ports": [{"port": 53, "protocol": "UDP"}]},
     {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}),
    ({"tags": ["a", "b"]}, {"tags": ["c", "a"]}, {"tags": ["c", "a", "b"]}),
    ({"args": ["a", "b"]}, {"args": ["c"]}, {"args": ["c"]}),
    ({"selector": {"a": "1"}}, {"selector": {"b": "2"}}, {"selector": {"b": "2"}}),
    ({"free": {"x": {"y": 1}}}, {"free": {"x": {"z": 2}}}, {"free": {"x": {"y": 1, "z": 2}}}),
], ids=["map-list-same-key-merges", "map-list-new-key-appends", "set-merges", "atomic-list-replaces",
        "atomic-map-replaces", "preserve-unknown-granular"])
def test_openapi_schema_list_and_map_types(live, config, expect):
    t = from_openapi_schema(SCHEMA)
    assert smd.merge({"spec": live}, {"spec": config}, t) == {"spec": expect}


def test_openapi_schema_field_sets():
    t = from_openapi_schema(SCHEMA)
    s = smd.to_field_set({"spec": {"selector": {"a": "1"}, "tags": ["x"], "ports": [{"port": 1}]}}, t)
    spelled = sorted(fieldpath.path_string(p) for p in s)
    assert spelled == ['.spec.ports[port=1,protocol="TCP"]', '.spec.ports[port=1,protocol="TCP"].port',
                       ".spec.selector", '.spec.tags[="x"]']


def test_registered_types_take_precedence_over_the_model():
    class FakeKind:
        qualified = "widgets.example.com"
        model = None

    assert structure.root_type(FakeKind) is DEDUCED  # type: ignore[arg-type]
    t = from_openapi_schema(SCHEMA)
    structure.register("widgets.example.com", lambda: t)
    try:
        assert structure.root_type(FakeKind) is t  # type: ignore[arg-type]
    finally:
        structure.unregister("widgets.example.com")


def test_openapi_publishes_the_merge_markers():
    from kubepy.api import openapi

    defs = openapi.openapi_v2()["definitions"]
    container = defs["io.k8s.api.core.v1.Container"]["properties"]
    assert container["ports"]["x-kubernetes-list-type"] == "map"
    assert container["ports"]["x-kubernetes-list-map-keys"] == ["containerPort", "protocol"]
    assert container["args"]["x-kubernetes-list-type"] == "atomic"
    assert defs["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]["x-kubernetes-map-type"] == "atomic"
    assert defs["io.k8s.api.core.v1.PodSpec"]["properties"]["nodeSelector"]["x-kubernetes-map-type"] == "atomic"


def test_every_served_kind_has_a_type_tree_that_resolves():
    """Each built-in kind's structure resolves all the way down (models, markers, skeletons)."""
    from kubepy.kinds import all_kinds

    seen: set[int] = set()

    def walk(t: structure.Type, depth: int) -> None:
        if id(t) in seen or depth > 30:
            return
        seen.add(id(t))
        if isinstance(t, structure.MapType):
            t.present()
            for sub in t.fields().values():
                walk(sub, depth + 1)
        elif isinstance(t, structure.ListType):
            assert t.list_type in ("atomic", "set", "map")
            assert (t.list_type == "map") == bool(t.keys)
            walk(t.elem, depth + 1)

    for kind in all_kinds():
        root = structure.root_type(kind)
        if kind.model:
            assert isinstance(root, structure.MapType), kind.plural
            assert "metadata" in root.fields(), kind.plural
        walk(root, 0)
