"""Field paths and field sets of server-side apply, and their wire form (FieldsV1).

A *path* names one place in an object: a tuple of path elements, each

* ``("f", name)``   a field of a map (``.spec``),
* ``("k", ((key, value), ...))`` an item of a list-type=map list, by its keys
  sorted by name (``[name="nginx"]``),
* ``("v", value)``  an item of a list-type=set list, by its value (``[="a"]``),
* ``("i", index)``  an item of any other granular list, by position (``[0]``).

A *field set* is a ``frozenset`` of paths: the fields a manager owns
(sigs.k8s.io/structured-merge-diff's ``fieldpath.Set``; a path's prefixes are
not members unless inserted themselves). ``metadata.managedFields[].fieldsV1``
holds a set as a trie: ``{"f:spec": {"f:replicas": {}}, ...}``, where a key
``"."`` marks a node that is itself a member and has children too.
:func:`to_fields_v1` / :func:`from_fields_v1` convert, :func:`path_string`
spells a path as conflicts name it (``.spec.containers[name="nginx"].image``).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Iterable

__all__ = [
    "Path",
    "FieldSet",
    "FieldsError",
    "field",
    "key",
    "to_fields_v1",
    "from_fields_v1",
    "path_string",
    "with_prefix",
    "recursive_difference",
]

PathElement = tuple[str, Any]
Path = tuple[PathElement, ...]
FieldSet = frozenset[Path]


class FieldsError(ValueError):
    """A FieldsV1 document that does not decode (its text says where)."""


def field(name: str) -> PathElement:
    return ("f", name)


def key(item: dict[str, Any]) -> PathElement:
    return ("k", tuple(sorted(item.items())))


def _hashable(value: Any) -> Any:
    """A set item's value as a hashable element (lists/maps by their JSON text)."""
    if isinstance(value, (dict, list)):
        return ("json", json.dumps(value, sort_keys=True, separators=(",", ":")))
    return value


def value_element(value: Any) -> PathElement:
    return ("v", _hashable(value))


def _plain(value: Any) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "json":
        return json.loads(value[1])
    return value


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# -- FieldsV1 ---------------------------------------------------------------
@lru_cache(maxsize=4096)
def element_string(pe: PathElement) -> str:
    """A path element as a FieldsV1 key: ``f:name``, ``k:{...}``, ``v:...``, ``i:N``."""
    kind, v = pe
    if kind == "f":
        return "f:" + v
    if kind == "k":
        return "k:" + _json({name: _plain(val) for name, val in v})
    if kind == "v":
        return "v:" + _json(_plain(v))
    return f"i:{v}"


@lru_cache(maxsize=4096)
def parse_element(text: str) -> PathElement:
    kind, sep, rest = text.partition(":")
    if not sep:
        raise FieldsError(f"unknown path element {text!r}: expected f:, k:, v: or i:")
    if kind == "f":
        return ("f", rest)
    try:
        if kind == "k":
            fields = json.loads(rest)
            if not isinstance(fields, dict):
                raise FieldsError(f"the key of {text!r} is not an object")
            return ("k", tuple(sorted((k, _hashable(v)) for k, v in fields.items())))
        if kind == "v":
            return ("v", _hashable(json.loads(rest)))
        if kind == "i":
            return ("i", int(rest))
    except ValueError as e:
        raise FieldsError(f"invalid path element {text!r}: {e}") from None
    raise FieldsError(f"unknown path element {text!r}: expected f:, k:, v: or i:")


_KIND_ORDER = {"f": 0, "k": 1, "v": 2, "i": 3}


def _value_order(v: Any) -> tuple[int, Any]:
    if v is None:
        return (0, 0)
    if isinstance(v, bool):
        return (1, int(v))
    if isinstance(v, (int, float)):
        return (2, v)
    if isinstance(v, str):
        return (3, v)
    return (4, str(v))


@lru_cache(maxsize=4096)
def _element_order(pe: PathElement) -> tuple[Any, ...]:
    kind, v = pe
    if kind == "k":
        return (1, tuple((n, _value_order(x)) for n, x in v))
    if kind == "v":
        return (2, _value_order(v))
    return (_KIND_ORDER[kind], v)


def to_fields_v1(fields: FieldSet) -> dict[str, Any]:
    """The FieldsV1 trie of a set, children in upstream's order (fields, keys, values, indexes).

    Objects of one shape (the pods of a ReplicaSet, say) own equal sets, so the
    rendering is cached by set (as JSON text: every caller gets its own dict)."""
    return json.loads(_fields_v1_text(frozenset(fields)))


@lru_cache(maxsize=1024)
def _fields_v1_text(fields: FieldSet) -> str:
    return json.dumps(_render_fields_v1(fields), separators=(",", ":"), ensure_ascii=False)


def _render_fields_v1(fields: FieldSet) -> dict[str, Any]:
    # A trie of [children, is-member] nodes.
    root: list[Any] = [{}, False]
    for p in fields:
        node = root
        for pe in p:
            children = node[0]
            node = children.get(pe)
            if node is None:
                node = children[pe] = [{}, False]
        node[1] = True

    def render(node: list[Any]) -> dict[str, Any]:
        children = node[0]
        out: dict[str, Any] = {".": {}} if node[1] and children else {}
        if len(children) < 2:
            order: Iterable[PathElement] = children
        elif all(pe[0] == "f" for pe in children):
            order = sorted(children)  # field names only (most nodes): plain tuple order is upstream's
        else:
            order = sorted(children, key=_element_order)
        for pe in order:
            out[element_string(pe)] = render(children[pe])
        return out

    out = render(root)
    out.pop(".", None)
    return out


def from_fields_v1(doc: Any) -> FieldSet:
    """The set a FieldsV1 trie holds; FieldsError if it is malformed.

    Every write decodes the object's entries: cached by their JSON text, which
    C code writes much faster than the trie is walked."""
    if not isinstance(doc, dict):
        raise FieldsError("fieldsV1 must be an object")
    try:
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise FieldsError(f"fieldsV1 is not JSON: {e}") from None
    return _from_fields_v1_text(text)


@lru_cache(maxsize=1024)
def _from_fields_v1_text(text: str) -> FieldSet:
    return _decode_fields_v1(json.loads(text))


def _decode_fields_v1(doc: dict[str, Any]) -> FieldSet:
    out: set[Path] = set()

    def walk(node: dict[str, Any], prefix: Path) -> None:
        for text, child in node.items():
            if text == ".":
                if prefix:
                    out.add(prefix)
                continue
            if not isinstance(child, dict):
                raise FieldsError(f"the value of {text!r} must be an object")
            path = prefix + (parse_element(text),)
            if not child:
                out.add(path)
            else:
                walk(child, path)

    walk(doc, ())
    return frozenset(out)


# -- conflicts' spelling ----------------------------------------------------
def _to_string(v: Any) -> str:
    """structured-merge-diff's value.ToString: strings quoted, the rest as JSON."""
    v = _plain(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return _json(v)


def path_string(path: Path) -> str:
    parts = []
    for kind, v in path:
        if kind == "f":
            parts.append("." + v)
        elif kind == "k":
            parts.append("[" + ",".join(f"{n}={_to_string(x)}" for n, x in v) + "]")
        elif kind == "v":
            parts.append(f"[={_to_string(v)}]")
        else:
            parts.append(f"[{v}]")
    return "".join(parts)


def sort_paths(paths: Iterable[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: tuple(_element_order(pe) for pe in p))


# -- set helpers --------------------------------------------------------------
def with_prefix(fields: Iterable[Path], pe: PathElement) -> FieldSet:
    """The paths below ``pe``, without it (fieldpath.Set.WithPrefix)."""
    return frozenset(p[1:] for p in fields if len(p) > 1 and p[0] == pe)


def recursive_difference(fields: FieldSet, exclude: Iterable[Path]) -> FieldSet:
    """``fields`` without any path equal to or below a path of ``exclude``."""
    ex = tuple(exclude)
    if not ex:
        return fields
    if all(len(e) == 1 for e in ex):  # the usual case: whole top-level fields (status, spec)
        firsts = {e[0] for e in ex}
        return frozenset(p for p in fields if not p or p[0] not in firsts)
    return frozenset(p for p in fields if not any(p[:len(e)] == e for e in ex))
