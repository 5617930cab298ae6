"""PATCH bodies: JSON patch, JSON merge patch and strategic merge patch.

The API server's PATCH handler reads the stored object, calls one of the
three ``apply_*`` functions according to the request's Content-Type, then
validates and stores the result like an update:

* ``application/json-patch+json``           → :func:`apply_json_patch` (RFC 6902)
* ``application/merge-patch+json``          → :func:`apply_merge_patch` (RFC 7386)
* ``application/strategic-merge-patch+json`` → :func:`apply_strategic_merge_patch`

Strategic merge patch is Kubernetes' own dialect, and the one ``kubectl
apply``, ``kubectl patch`` and ``kubectl edit`` send.  It differs from a
merge patch in that lists with a *merge key* (containers by ``name``, ports
by ``containerPort``...) are merged element by element instead of replaced,
and that the patch may carry directives:

* ``$patch: delete`` — in a list element, delete the element with that key;
  in a map, delete the map;
* ``$patch: replace`` — replace the map, or (as a list element) the list;
* ``$patch: merge`` — the default; accepted and ignored;
* ``$retainKeys: [...]`` — drop the map's keys not listed (union types such
  as a Deployment's ``strategy``);
* ``$deleteFromPrimitiveList/<field>: [...]`` — remove values from a merged
  list of scalars (finalizers);
* ``$setElementOrder/<field>: [...]`` — the order the merged list must have.

The merge key and strategy of each list come from Kubernetes' Go struct tags
(``patchStrategy`` / ``patchMergeKey``), kept here in :data:`PATCH_STRATEGIES`
keyed by the Python client's model class name, so the OpenAPI generator can
publish the same ``x-kubernetes-patch-*`` extensions.  The shape of an object
(which field holds which model) is walked with the ``kubernetes`` Python
client's ``openapi_types`` / ``attribute_map``.  Kinds we know no model for
are patched with merge-patch semantics for maps and replacement for lists.

Every function returns a new object; its inputs are never modified.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import jsonpatch
import jsonpointer

from kubepy import kinds

__all__ = [
    "PatchError",
    "PATCH_STRATEGIES",
    "model_for",
    "apply_json_patch",
    "apply_merge_patch",
    "apply_strategic_merge_patch",
    "patch_meta",
]


class PatchError(Exception):
    """A patch that is malformed (``code`` 400) or cannot be applied (``code`` 422).

    Kubernetes answers 400 BadRequest when the patch document itself cannot
    be understood and 422 when it is well formed but does not apply (a failed
    JSON-patch ``test``, a path that does not exist, an element without its
    merge key).  The server turns this into a ``Status`` with that code.
    """

    def __init__(self, message: str, *, code: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# ---------------------------------------------------------------------------
# RFC 6902 JSON patch
# ---------------------------------------------------------------------------


def _decode(patch: Any, what: str) -> Any:
    if isinstance(patch, (bytes, bytearray)):
        patch = patch.decode("utf-8", errors="replace")
    if isinstance(patch, str):
        try:
            return json.loads(patch)
        except ValueError as e:
            raise PatchError(f"invalid {what}: {e}", code=400) from e
    return patch


def apply_json_patch(obj: dict, patch: Any) -> Any:
    """Apply an RFC 6902 patch (a list of operations, or its JSON text).

    Returns the patched document (normally a dict; an operation on the root
    path may replace it with anything, which the caller's validation rejects).
    """
    patch = _decode(patch, "JSON patch")
    if not isinstance(patch, list):
        raise PatchError("a JSON patch must be a list of operations", code=400)
    try:
        ops = jsonpatch.JsonPatch(patch)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, AttributeError) as e:
        raise PatchError(f"invalid JSON patch: {e}", code=400) from e
    try:
        return ops.apply(obj, in_place=False)
    except jsonpatch.JsonPatchTestFailed as e:
        raise PatchError(f"the JSON patch test operation failed: {e}") from e
    except jsonpatch.InvalidJsonPatch as e:
        # Raised lazily for operations missing "value", "from", or "path".
        raise PatchError(f"invalid JSON patch: {e}", code=400) from e
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, KeyError, IndexError, TypeError) as e:
        raise PatchError(f"the JSON patch could not be applied: {e}") from e


# ---------------------------------------------------------------------------
# RFC 7386 JSON merge patch
# ---------------------------------------------------------------------------


def _merge_patch_into(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch_into(result.get(key), value)
    return result


def apply_merge_patch(obj: dict, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch: maps merge recursively, ``null`` deletes
    a key, anything that is not an object (lists included) replaces."""
    if isinstance(patch, (bytes, bytearray)):
        # Only raw bytes are decoded: a str is itself a valid merge patch value.
        patch = _decode(patch, "merge patch")
    return _merge_patch_into(copy.deepcopy(obj), copy.deepcopy(patch))


# ---------------------------------------------------------------------------
# strategic merge patch: type information
# ---------------------------------------------------------------------------

# (model class, JSON field) → (patchStrategy, patchMergeKey), transcribed from
# the patchStrategy/patchMergeKey struct tags of k8s.io/api (core/v1, apps/v1,
# batch/v1, meta/v1).  A list absent from this table is atomic: replaced.
_CONTAINER_LISTS = {
    "env": ("merge", "name"),
    "ports": ("merge", "containerPort"),
    "volumeMounts": ("merge", "mountPath"),
    "volumeDevices": ("merge", "devicePath"),
}
PATCH_STRATEGIES: dict[tuple[str, str], tuple[str, str | None]] = {
    # meta/v1 ObjectMeta
    ("V1ObjectMeta", "finalizers"): ("merge", None),
    ("V1ObjectMeta", "ownerReferences"): ("merge", "uid"),
    # core/v1 PodSpec
    ("V1PodSpec", "volumes"): ("merge,retainKeys", "name"),
    ("V1PodSpec", "initContainers"): ("merge", "name"),
    ("V1PodSpec", "containers"): ("merge", "name"),
    ("V1PodSpec", "ephemeralContainers"): ("merge", "name"),
    ("V1PodSpec", "imagePullSecrets"): ("merge", "name"),
    ("V1PodSpec", "hostAliases"): ("merge", "ip"),
    ("V1PodSpec", "topologySpreadConstraints"): ("merge", "topologyKey"),
    ("V1PodSpec", "schedulingGates"): ("merge", "name"),
    ("V1PodSpec", "resourceClaims"): ("merge,retainKeys", "name"),
    ("V1PodSpec", "evictionResponders"): ("merge", "name"),
    **{("V1Container", f): s for f, s in _CONTAINER_LISTS.items()},
    **{("V1EphemeralContainer", f): s for f, s in _CONTAINER_LISTS.items()},
    # core/v1 PodStatus
    ("V1PodStatus", "conditions"): ("merge", "type"),
    ("V1PodStatus", "podIPs"): ("merge", "ip"),
    ("V1PodStatus", "hostIPs"): ("merge", "ip"),
    ("V1PodStatus", "resourceClaimStatuses"): ("merge,retainKeys", "name"),
    ("V1PodStatus", "nodeAllocatableResourceClaimStatuses"): ("merge", "resourceClaimName"),
    ("V1NodeAllocatableResourceClaimStatus", "mapping"): ("merge", "name"),
    ("V1NodeAllocatableResourceClaimStatus", "overhead"): ("merge", "name"),
    ("V1ContainerStatus", "volumeMounts"): ("merge", "mountPath"),
    ("V1ContainerStatus", "allocatedResourcesStatus"): ("merge", "name"),
    # core/v1 Node, Namespace, Service, ServiceAccount, ReplicationController
    ("V1NodeSpec", "podCIDRs"): ("merge", None),
    ("V1NodeStatus", "addresses"): ("merge", "type"),
    ("V1NodeStatus", "conditions"): ("merge", "type"),
    ("V1NamespaceStatus", "conditions"): ("merge", "type"),
    ("V1ServiceSpec", "ports"): ("merge", "port"),
    ("V1ServiceStatus", "conditions"): ("merge", "type"),
    ("V1ServiceAccount", "secrets"): ("merge", "name"),
    ("V1ReplicationControllerStatus", "conditions"): ("merge", "type"),
    ("V1PersistentVolumeClaimStatus", "conditions"): ("merge", "type"),
    # apps/v1, batch/v1
    ("V1DeploymentSpec", "strategy"): ("retainKeys", None),
    ("V1DeploymentStatus", "conditions"): ("merge", "type"),
    ("V1ReplicaSetStatus", "conditions"): ("merge", "type"),
    ("V1StatefulSetStatus", "conditions"): ("merge", "type"),
    ("V1DaemonSetStatus", "conditions"): ("merge", "type"),
    ("V1JobStatus", "conditions"): ("merge", "type"),
}

# Root model classes (the Python client's) of kinds a patch may target that are not
# served kinds themselves; a served kind names its own (``Kind.model``).
_OTHER_MODELS: dict[tuple[str, str], str] = {
    ("autoscaling/v1", "Scale"): "V1Scale",
}


def model_for(api_version: str, kind: str) -> str | None:
    """The Python client's model class of a kind, None if unknown."""
    k = kinds.by_api_version(api_version, kind)
    return k.model if k is not None and k.model else _OTHER_MODELS.get((api_version, kind))


@dataclass(frozen=True)
class _Type:
    """What we know about a JSON value's schema.

    ``kind`` is ``struct`` (a model class with named fields), ``list``,
    ``map`` (free-form keys, e.g. labels), ``scalar`` or ``unknown``.
    """

    kind: str
    model: str | None = None
    elem: _Type | None = None


_UNKNOWN = _Type("unknown")
_SCALAR = _Type("scalar")
# The client spells containers "List[X]"/"Dict[str, X]" (older releases
# "list[X]"/"dict(str, X)"); accept both.
_LIST_RE = re.compile(r"(?:List|list)\[(.+)\]")
_DICT_RE = re.compile(r"(?:Dict\[str, (.+)\]|dict\(str, (.+)\))")
_SCALARS = {"str", "int", "float", "bool", "bytes", "datetime", "date"}


def _models() -> Any:
    # Imported lazily: loading every model costs a noticeable fraction of a second.
    import kubernetes.client.models as models

    return models


@cache
def _parse_type(spec: str) -> _Type:
    if m := _LIST_RE.fullmatch(spec):
        return _Type("list", elem=_parse_type(m.group(1)))
    if m := _DICT_RE.fullmatch(spec):
        return _Type("map", elem=_parse_type(m.group(1) or m.group(2)))
    if spec in _SCALARS:
        return _SCALAR
    cls = getattr(_models(), spec, None)
    if cls is not None and hasattr(cls, "openapi_types"):
        return _Type("struct", model=spec)
    return _UNKNOWN


@cache
def _json_fields(model: str) -> dict[str, str]:
    """JSON field name → type spec for a model class."""
    cls = getattr(_models(), model)
    return {cls.attribute_map[attr]: spec for attr, spec in cls.openapi_types.items()}


def _root_type(api_version: str, kind: str) -> _Type:
    model = model_for(api_version, kind)
    return _Type("struct", model=model) if model else _UNKNOWN


def patch_meta(model: str, field: str) -> tuple[frozenset[str], str | None]:
    """``(strategies, merge key)`` for a model's field; empty strategies = atomic."""
    strategy, merge_key = PATCH_STRATEGIES.get((model, field), ("", None))
    return frozenset(s for s in strategy.split(",") if s), merge_key


def _field(parent: _Type, key: str) -> tuple[_Type, frozenset[str], str | None]:
    """Type, strategies and merge key of ``parent[key]``."""
    if parent.kind == "struct" and parent.model:
        spec = _json_fields(parent.model).get(key)
        strategies, merge_key = patch_meta(parent.model, key)
        return (_parse_type(spec) if spec else _UNKNOWN), strategies, merge_key
    if parent.kind == "map" and parent.elem is not None:
        return parent.elem, frozenset(), None
    return _UNKNOWN, frozenset(), None


def _elem(t: _Type) -> _Type:
    return t.elem if t.kind == "list" and t.elem is not None else _UNKNOWN


# ---------------------------------------------------------------------------
# strategic merge patch: the merge
# ---------------------------------------------------------------------------

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList/"
_SET_ELEMENT_ORDER = "$setElementOrder/"


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return self.name


_ABSENT = _Sentinel("ABSENT")
# Returned by _merge_map for "$patch: delete": the parent drops the key.
_DELETED = _Sentinel("DELETED")


def apply_strategic_merge_patch(obj: dict, patch: dict, *, api_version: str, kind: str) -> dict:
    """Apply a Kubernetes strategic merge patch to *obj* of the given kind.

    Raises :class:`PatchError` for malformed patches and directives.
    """
    patch = _decode(patch, "strategic merge patch")
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object", code=400)
    original = copy.deepcopy(obj) if isinstance(obj, dict) else {}
    result = _merge_map(original, copy.deepcopy(patch), _root_type(api_version, kind))
    return {} if result is _DELETED else result


def _merge_map(original: dict, patch: dict, t: _Type) -> Any:
    """Merge *patch* into *original* (both owned by us, mutated in place)."""
    directive = patch.pop(_DIRECTIVE, None)
    if directive == "delete":
        return _DELETED
    if directive == "replace":
        # The patch is the new value; merging it into {} strips its directives and nulls.
        return _merge_map({}, patch, t)
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch type {directive!r} in a map: expected replace, delete or merge", code=400)
    _apply_retain_keys(original, patch)
    _apply_element_orders(original, patch, t)
    for key, value in patch.items():
        if key.startswith(_DELETE_FROM_PRIMITIVE_LIST):
            _delete_from_primitive_list(original, key, value)
            continue
        if value is None:
            original.pop(key, None)
            continue
        ftype, strategies, merge_key = _field(t, key)
        merged = _merge_value(original.get(key, _ABSENT), value, ftype, strategies, merge_key)
        if merged is _DELETED:
            original.pop(key, None)
        else:
            original[key] = merged
    return original


def _merge_value(original: Any, value: Any, t: _Type, strategies: frozenset[str], merge_key: str | None) -> Any:
    """Merge one field's patch *value* into its *original* value (or _ABSENT)."""
    if isinstance(value, dict):
        if isinstance(original, dict) and "replace" not in strategies:
            return _merge_map(original, value, t)
        # New key, type change or replace strategy: the patch value wins, cleaned.
        return _merge_map({}, value, t)
    if isinstance(value, list):
        if "merge" in strategies:
            return _merge_list(original if isinstance(original, list) else [], value, _elem(t), merge_key)
        return _replace_list(value, _elem(t))
    return value


def _replace_list(value: list, elem: _Type) -> list:
    """An atomic list's new value, with directives and nulls removed."""
    result = []
    for item in value:
        if isinstance(item, dict):
            if _DIRECTIVE in item:
                # The whole list is replaced anyway: a "$patch: replace" marker is
                # redundant and a "$patch: delete" element has nothing to delete.
                continue
            item = _merge_map({}, item, elem)
        result.append(item)
    return result


def _merge_list(original: list, patch: list, elem: _Type, merge_key: str | None) -> list:
    """Merge lists with ``patchStrategy: merge``: scalars by value, maps by merge key."""
    if not any(isinstance(x, dict) for x in original + patch):
        if any(isinstance(x, list) for x in original + patch):
            raise PatchError("strategic merge patch does not support lists of lists")
        merged = _dedupe(original + patch)
        return _order(merged, patch, original, None)
    if not all(isinstance(x, dict) for x in original + patch):
        raise PatchError("list elements are not all objects: cannot merge them")
    if not merge_key:
        raise PatchError("cannot merge lists of objects without a merge key")

    plain: list[dict] = []
    replace = False
    for item in patch:
        directive = item.get(_DIRECTIVE)
        if directive is None:
            plain.append(item)
        elif directive == "delete":
            if merge_key not in item:
                raise PatchError(f"the $patch: delete element {item} does not contain the merge key {merge_key!r}")
            original = [o for o in original if not _same_key(o, item, merge_key)]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            # Merging is what happens anyway; keep the element's content, if any.
            rest = {k: v for k, v in item.items() if k != _DIRECTIVE}
            if rest:
                plain.append(rest)
        else:
            raise PatchError(f"unknown patch type {directive!r} in a list element", code=400)
    if replace:
        return _replace_list(plain, elem)

    merged = list(original)
    for item in plain:
        if merge_key not in item:
            raise PatchError(f"list element {item} does not contain the merge key {merge_key!r}")
        at = next((i for i, o in enumerate(merged) if _same_key(o, item, merge_key)), None)
        if at is None:
            merged.append(_merge_map({}, item, elem))
        else:
            merged[at] = _merge_map(merged[at], item, elem)
    return _order(merged, plain, original, merge_key)


def _same_key(a: dict, b: dict, merge_key: str) -> bool:
    return merge_key in a and merge_key in b and a[merge_key] == b[merge_key]


def _dedupe(values: list) -> list:
    out: list = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _index(items: list, item: Any, merge_key: str | None) -> int:
    """Position of *item* in *items*, matched by merge key (maps) or value; -1 if absent."""
    for i, candidate in enumerate(items):
        if merge_key and isinstance(item, dict) and isinstance(candidate, dict):
            if _same_key(candidate, item, merge_key):
                return i
        elif candidate == item:
            return i
    return -1


def _order(merged: list, patch_order: list, server_order: list, merge_key: str | None) -> list:
    """Order a merged list the way Kubernetes does.

    Items named in *patch_order* keep that relative order; the others keep
    their relative order from *server_order* (the live list).  The two runs
    are then interleaved: a server-only item goes before a patch item only
    when both were in the live list and it came first there — so a new item
    lands before the server-only items that follow it.
    """

    def rank(order: list):  # type: ignore[no-untyped-def]
        def key(item: Any) -> int:
            i = _index(order, item, merge_key)
            return i if i >= 0 else len(order)

        return key

    in_patch = [x for x in merged if _index(patch_order, x, merge_key) >= 0]
    server_only = [x for x in merged if _index(patch_order, x, merge_key) < 0]
    in_patch.sort(key=rank(patch_order))
    server_only.sort(key=rank(server_order))

    result: list = []
    i = j = 0
    while i < len(server_only) or j < len(in_patch):
        if j >= len(in_patch):
            result.append(server_only[i])
            i += 1
        elif i >= len(server_only):
            result.append(in_patch[j])
            j += 1
        else:
            left = _index(server_order, server_only[i], merge_key)
            right = _index(server_order, in_patch[j], merge_key)
            if left >= 0 and right >= 0 and left < right:
                result.append(server_only[i])
                i += 1
            else:
                result.append(in_patch[j])
                j += 1
    return result


def _apply_retain_keys(original: dict, patch: dict) -> None:
    """``$retainKeys``: clear the original's keys not listed (union types)."""
    keys = patch.pop(_RETAIN_KEYS, _ABSENT)
    if keys is _ABSENT:
        return
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise PatchError("$retainKeys must be a list of field names", code=400)
    retained = set(keys)
    for key, value in patch.items():
        if value is None or key.startswith((_DELETE_FROM_PRIMITIVE_LIST, _SET_ELEMENT_ORDER)):
            continue
        if key not in retained:
            raise PatchError(f"the patch sets {key!r}, which its $retainKeys list does not name")
    for key in list(original):
        if key not in retained:
            del original[key]


def _delete_from_primitive_list(original: dict, directive_key: str, values: Any) -> None:
    field = directive_key[len(_DELETE_FROM_PRIMITIVE_LIST):]
    if not field or not isinstance(values, list):
        raise PatchError(f"{directive_key} must name a field and hold a list of values", code=400)
    current = original.get(field)
    if isinstance(current, list):
        original[field] = [v for v in current if v not in values]


def _apply_element_orders(original: dict, patch: dict, t: _Type) -> None:
    """Handle ``$setElementOrder/<field>``: merge that list now, then order it.

    The merged list is removed from *patch* so the main loop does not merge it
    a second time.
    """
    for directive_key in [k for k in patch if k.startswith(_SET_ELEMENT_ORDER)]:
        order = patch.pop(directive_key)
        field = directive_key[len(_SET_ELEMENT_ORDER):]
        if not field or not isinstance(order, list):
            raise PatchError(f"{directive_key} must name a field and hold a list", code=400)
        value = patch.get(field, _ABSENT)
        current = original.get(field, _ABSENT)
        if value is None or (value is not _ABSENT and not isinstance(value, list)):
            continue  # deleted or retyped by the patch: ordering does not apply
        if value is _ABSENT and not isinstance(current, list):
            continue
        ftype, strategies, merge_key = _field(t, field)
        server = current if isinstance(current, list) else []
        merged = server if value is _ABSENT else _merge_value(server, patch.pop(field), ftype, strategies, merge_key)
        original[field] = _order(merged, order, server, merge_key)
