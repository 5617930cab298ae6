"""The structural types server-side apply merges by: a kind → its type tree.

Server-side apply (``kubepy.api.smd``) needs, for every place in an object,
whether it is a scalar, a map (granular: each key owned on its own; or
atomic: owned and replaced whole) or a list (``atomic``; ``set`` of scalars,
items named by value; ``map`` of objects, items named by their
``x-kubernetes-list-map-keys``). This module answers that from:

* built-in kinds: the ``kubernetes`` Python client's model classes (field
  names and types) with the merge markers of k8s.io/api's Go types
  (``structure_markers``: ``+listType``, ``+listMapKey``, ``+mapType``,
  ``+structType``, else the ``patchStrategy``/``patchMergeKey`` tags, as
  kube-openapi's schema conversion reads them);
* an OpenAPI v3 schema with Kubernetes' extensions (``x-kubernetes-list-type``,
  ``x-kubernetes-list-map-keys``, ``x-kubernetes-map-type``,
  ``x-kubernetes-preserve-unknown-fields``, ``x-kubernetes-int-or-string``):
  :func:`from_openapi_schema`, for custom resources, which
  :func:`register` plugs in by resource;
* anything else: :data:`DEDUCED`, upstream's "deduced" type: maps granular,
  lists atomic, decided by the value itself.

Types resolve lazily (the models are recursive) and are cached per model.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, Callable

from kubepy import kinds
from kubepy.api import patch, protobuf
from kubepy.api.structure_markers import FIELDS as _MARKER_FIELDS, NULLABLE as _MARKER_NULLABLE
from kubepy.api.structure_markers import TYPES as _MARKER_TYPES

__all__ = [
    "Type",
    "ScalarType",
    "MapType",
    "ListType",
    "SCALAR",
    "DEDUCED",
    "resolve",
    "root_type",
    "register",
    "unregister",
    "from_openapi_schema",
]


class Type:
    """A node of the type tree; ``kind`` is scalar, map, list or deduced."""

    kind = "deduced"


class ScalarType(Type):
    kind = "scalar"


class MapType(Type):
    """A map: a struct's declared fields, and/or one type for any other key."""

    kind = "map"

    def __init__(self, *, atomic: bool = False, elem: Type | None = None,
                 fields: dict[str, Type] | None = None) -> None:
        self.atomic = atomic
        self._elem = elem
        self._fields = fields

    def fields(self) -> dict[str, Type]:
        return self._fields or {}

    def field(self, name: str) -> Type:
        t = self.fields().get(name)
        if t is not None:
            return t
        return self._elem if self._elem is not None else DEDUCED

    def declares(self, name: str) -> bool:
        """Whether ``name`` is a named field (a struct's), not just any key."""
        return name in self.fields()

    def present(self) -> dict[str, Any]:
        """Fields that are always there, with their value when unset: a Go
        struct's non-pointer struct fields (``{}``) and its slices, maps and
        pointers without omitempty (null), which Kubernetes' typed objects
        always carry (so an update never "adds" ``.spec`` itself)."""
        return {}


class ListType(Type):
    """A list: ``list_type`` atomic, set or map (``keys`` name a map list's items)."""

    kind = "list"

    def __init__(self, elem: Type, list_type: str = "atomic", keys: tuple[str, ...] = (),
                 key_defaults: dict[str, Any] | None = None) -> None:
        self.elem = elem
        self.list_type = list_type
        self.keys = keys
        self.key_defaults = key_defaults or {}


SCALAR = ScalarType()
DEDUCED = Type()
_DEDUCED_MAP = MapType(elem=DEDUCED)
_DEDUCED_LIST = ListType(DEDUCED, "atomic")


def resolve(t: Type, value: Any) -> Type:
    """The type to walk ``value`` with: a deduced type decided by the value,
    and a value the type cannot hold (a scalar where a map should be) as a leaf."""
    if isinstance(value, dict):
        if t.kind == "map":
            return t
        return _DEDUCED_MAP if t.kind == "deduced" else SCALAR
    if isinstance(value, list):
        if t.kind == "list":
            return t
        return _DEDUCED_LIST if t.kind == "deduced" else SCALAR
    return SCALAR


# -- built-in kinds: the Python client's models + Go markers ------------------
_CLASS_RE = re.compile(r"^(?:[A-Z][a-z]+)?V\d+(?:alpha\d+|beta\d+)?([A-Z]\w*)$")
_LIST_RE = re.compile(r"(?:List|list)\[(.+)\]")
_DICT_RE = re.compile(r"(?:Dict\[str, (.+)\]|dict\(str, (.+)\))")
_SCALARS = {"str", "int", "float", "bool", "bytes", "datetime", "date", "bytearray"}
# Defaults of map-list keys (OpenAPI "default"), used when an item leaves its key out.
_KEY_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("Container", "ports"): {"protocol": "TCP"},
    ("EphemeralContainer", "ports"): {"protocol": "TCP"},
    ("ServiceSpec", "ports"): {"protocol": "TCP"},
}


def _go_name(model: str) -> str:
    m = _CLASS_RE.match(model)
    return m.group(1) if m else model


class _ModelType(MapType):
    """A struct of the Python client, its fields typed on first use."""

    def __init__(self, model: str, atomic: bool) -> None:
        super().__init__(atomic=atomic)
        self.model = model
        self._present: dict[str, Any] | None = None

    def present(self) -> dict[str, Any]:
        if self._present is None:
            go = _go_name(self.model)
            fields = protobuf.SCHEMA.get(go) or {}
            present: dict[str, Any] = {name: None for name in _MARKER_NULLABLE.get(go, ())}
            present.update((f.json, {}) for f in fields.values() if f.kind == "message" and not f.pointer
                           and not f.repeated and f.map_key is None and f.json)
            self._present = present
        return self._present

    def fields(self) -> dict[str, Type]:
        if self._fields is None:
            go = _go_name(self.model)
            self._fields = {name: _field_type(go, name, spec)
                            for name, spec in patch._json_fields(self.model).items()}
        return self._fields


@cache
def _model_type(model: str) -> MapType:
    markers = _MARKER_TYPES.get(_go_name(model), {})
    atomic = "atomic" in (markers.get("structType"), markers.get("mapType"))
    return _ModelType(model, atomic)


def _spec_type(spec: str) -> Type:
    if m := _LIST_RE.fullmatch(spec):
        return ListType(_spec_type(m.group(1)))
    if m := _DICT_RE.fullmatch(spec):
        return MapType(elem=_spec_type(m.group(1) or m.group(2)))
    if spec in _SCALARS:
        return SCALAR
    if spec == "object":
        return DEDUCED  # IntOrString, RawExtension, free-form JSON
    try:
        patch._json_fields(spec)
    except AttributeError:
        return DEDUCED
    return _model_type(spec)


def _field_type(go: str, name: str, spec: str) -> Type:
    t = _spec_type(spec)
    m = _MARKER_FIELDS.get((go, name), {})
    if isinstance(t, ListType):
        list_type = m.get("listType")
        keys: tuple[str, ...] = tuple(m.get("keys") or ())
        if list_type is None and "merge" in (m.get("patchStrategy") or "").split(","):
            # kube-openapi: a merge patch strategy without a list type is an associative list.
            merge_key = m.get("patchMergeKey")
            list_type, keys = ("map", (merge_key,)) if merge_key else ("set", ())
        if list_type == "map" and not keys:
            list_type = "atomic"
        return ListType(t.elem, list_type or "atomic", keys, _KEY_DEFAULTS.get((go, name)))
    if "atomic" in (m.get("mapType"), m.get("structType")) and isinstance(t, MapType):
        if isinstance(t, _ModelType):
            return _AtomicView(t)
        return MapType(atomic=True, elem=t._elem)
    return t


class _AtomicView(MapType):
    """A struct type used atomically at one field (``+structType=atomic`` on the field)."""

    def __init__(self, inner: MapType) -> None:
        super().__init__(atomic=True)
        self.inner = inner

    def fields(self) -> dict[str, Type]:
        return self.inner.fields()


# -- OpenAPI v3 schemas (custom resources) -------------------------------------
def from_openapi_schema(schema: dict[str, Any], *, metadata: bool = True) -> Type:
    """The type of an (structural) OpenAPI v3 schema; at the root, ``metadata``
    takes ObjectMeta's built-in type, as Kubernetes does for custom resources."""
    t = _from_schema(schema)
    if metadata and isinstance(t, MapType):
        fields = dict(t.fields())
        fields["metadata"] = _model_type("V1ObjectMeta")
        fields.setdefault("apiVersion", SCALAR)
        fields.setdefault("kind", SCALAR)
        return MapType(atomic=t.atomic, elem=t._elem, fields=fields)
    return t


def _from_schema(s: Any) -> Type:
    if not isinstance(s, dict):
        return DEDUCED
    if s.get("x-kubernetes-int-or-string"):
        return SCALAR
    typ = s.get("type")
    if typ == "array":
        elem = _from_schema(s.get("items"))
        list_type = s.get("x-kubernetes-list-type") or "atomic"
        keys = tuple(s.get("x-kubernetes-list-map-keys") or ())
        props = (s.get("items") or {}).get("properties") or {} if isinstance(s.get("items"), dict) else {}
        defaults = {k: props[k]["default"] for k in keys if isinstance(props.get(k), dict) and "default" in props[k]}
        if list_type == "map" and not keys:
            list_type = "atomic"
        return ListType(elem, list_type, keys, defaults)
    if typ == "object" or "properties" in s:
        fields = {name: _from_schema(sub) for name, sub in (s.get("properties") or {}).items()}
        extra = s.get("additionalProperties")
        elem: Type | None = _from_schema(extra) if isinstance(extra, dict) else None
        if s.get("x-kubernetes-preserve-unknown-fields") or extra is True:
            elem = DEDUCED
        if s.get("x-kubernetes-embedded-resource"):
            fields.setdefault("apiVersion", SCALAR)
            fields.setdefault("kind", SCALAR)
            fields.setdefault("metadata", _model_type("V1ObjectMeta"))
        atomic = s.get("x-kubernetes-map-type") == "atomic"
        if not fields and elem is None:
            elem = DEDUCED
        return MapType(atomic=atomic, elem=elem, fields=fields)
    if typ in ("string", "integer", "number", "boolean"):
        return SCALAR
    return DEDUCED


# -- the lookup ------------------------------------------------------------------
# Other sources of types, by a resource's qualified plural (``widgets.example.com``):
# custom resources register theirs here when their definition is established.
_registered: dict[str, Callable[[], Type]] = {}


def register(qualified: str, source: Callable[[], Type]) -> None:
    """``source()`` gives the root type of the resource ``qualified`` from now on."""
    _registered[qualified] = source


def unregister(qualified: str) -> None:
    _registered.pop(qualified, None)


def root_type(res: kinds.Kind) -> Type:
    """The type of a whole object of the kind ``res``; DEDUCED if nothing is known."""
    source = _registered.get(res.qualified)
    if source is not None:
        return source()
    if res.model:
        try:
            return _model_type(res.model)
        except AttributeError:
            return DEDUCED
    return DEDUCED
