"""Request bodies → plain JSON values, within limits: the API server's decoder.

Every object a client sends comes through :func:`decode` (JSON, YAML or
Kubernetes protobuf) and every object a patch produces through
:func:`check_value`, so nothing past this point meets input that its
recursive code (deepcopy, the patchers, validation, ``json.dumps``) or its
memory cannot take. What is refused, and why:

* nesting deeper than :data:`MAX_DEPTH` levels. Kubernetes' JSON decoder
  stops at 10,000; ours stops far sooner because the server's recursive code
  spends up to two Python frames per level (``copy.deepcopy``, the strategic
  merge) under CPython's default limit of 1,000 frames, with the aiohttp stack
  already below it. 200 levels then need at most ~460 frames: safe with room
  to spare, and ten times deeper than the deepest built-in object (a pod
  template's affinity terms nest about 15 levels);
* strings that are not Unicode: a lone UTF-16 surrogate (``"\\ud800"``) can be
  decoded from JSON but never encoded as UTF-8 again;
* numbers JSON cannot carry: ``NaN``/``Infinity`` (Python's decoder accepts
  them, Go's does not), floats that overflow (``1e400``) and integers too big
  for a float64, as Go's decoder refuses them;
* YAML whose aliases expand too much (a "billion laughs" document: 388 bytes
  that expand to millions of nodes), refused with go-yaml's own rule and
  message (``yaml: document contains excessive aliasing``), and YAML whose
  expanded size is over :data:`MAX_BODY`, as if it had been sent as JSON;
* YAML values JSON has no type for (``!!set``); timestamps stay the strings
  they were, as ``sigs.k8s.io/yaml`` keeps them.

Errors are :mod:`kubepy.api.errors`: 400 ``BadRequest`` for what cannot be
decoded, 413 ``RequestEntityTooLarge`` for what is too big, 415 for unknown
content types.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import yaml

from kubepy.api import errors, protobuf

__all__ = [
    "MAX_BODY",
    "MAX_DEPTH",
    "decode",
    "check_value",
    "decode_json",
    "decode_yaml",
    "is_json",
    "is_yaml",
]

MAX_BODY = 3 * 1024 * 1024  # Kubernetes' MaxRequestBodyBytes: 3 MiB
MAX_DEPTH = 200
_JSON_TYPES = {"application/json", ""}
_APPLY = "application/apply-patch+yaml"  # server-side apply: YAML (or JSON, which YAML reads)
_YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", _APPLY}

# go-yaml (yaml.v2 ≥ 2.2.8, yaml.v3), decode.go: aliases may make up 99 % of
# the nodes of a document of up to 400,000 nodes, falling to 10 % at 4,000,000.
_ALIAS_RATIO_LOW = 400_000
_ALIAS_RATIO_HIGH = 4_000_000


def too_large(what: str = "Request entity") -> errors.RequestTooLarge:
    """Kubernetes' 413 for a request body over the limit."""
    return errors.RequestTooLarge(f"{what} too large: limit is {MAX_BODY}")


def is_json(content_type: str) -> bool:
    return content_type in _JSON_TYPES or content_type.endswith("+json")


def is_yaml(content_type: str) -> bool:
    return content_type in _YAML_TYPES


def decode(raw: bytes, content_type: str) -> Any:
    """The value a request body of this content type holds, checked by
    :func:`check_value`. No Content-Type at all (``""``) means JSON."""
    if not raw.strip():
        raise errors.BadRequest("the request body is empty")
    if content_type == _APPLY and raw.lstrip()[:1] == b"{":
        # Most appliers send JSON (kubectl, client libraries): read it as JSON, which
        # YAML would read the same, much faster; what is not JSON is read as YAML.
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict):
            return decode_json(raw)
    if is_yaml(content_type):
        return decode_yaml(raw)
    if is_json(content_type):
        return decode_json(raw)
    if protobuf.is_protobuf(content_type):
        # kubectl's typed commands (create namespace/deployment/secret...) send protobuf.
        try:
            value = protobuf.decode_k8s_protobuf(raw)
        except protobuf.ProtobufError as e:
            raise errors.BadRequest(f"cannot decode the protobuf body ({e}); send application/json instead") from e
        check_value(value, "the body")
        return value
    raise errors.UnsupportedMedia(f"the content type {content_type!r} is not supported")


# -- JSON -------------------------------------------------------------------
class _NotJSON(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotJSON(f"the number {text} is out of range for a float64")
    return value


def decode_json(raw: bytes) -> Any:
    try:
        # orjson reads what is plain JSON, fast; it refuses NaN, Infinity and numbers past a double
        # as the slow path below does, and leaves what it cannot read to it (for its error message).
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = _decode_json_slowly(raw)
    check_value(value, "the body")
    return value


def _decode_json_slowly(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise _too_deep("the body") from None
    except (ValueError, UnicodeDecodeError) as e:  # _NotJSON and JSONDecodeError are ValueErrors
        raise errors.BadRequest(f"the body is not valid JSON: {e}") from e


# -- YAML -------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, with the scalars JSON cannot hold kept as the text
    they were written as (as ``sigs.k8s.io/yaml`` converts YAML to JSON)."""

    def construct_yaml_str_of(self, node: yaml.Node) -> str:
        return str(self.construct_scalar(node))  # type: ignore[arg-type]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # JSON keys are strings: YAML's numbers, booleans and null keys become
        # their JSON text, as sigs.k8s.io/yaml turns them into strings. Done key
        # by key, so that 1 and true (equal in Python) stay two keys.
        self.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found a key of type {type(key).__name__}: keys must be strings", key_node.start_mark)
            mapping[_key_text(key)] = self.construct_object(value_node, deep=deep)  # type: ignore[no-untyped-call]
        return mapping


def _key_text(key: Any) -> Any:
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    return key


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_str_of)
_Loader.add_constructor("tag:yaml.org,2002:binary", _Loader.construct_yaml_str_of)


def decode_yaml(raw: bytes) -> Any:
    loader = _Loader(raw)
    try:
        node = loader.get_single_node()
        if node is None:
            raise errors.BadRequest("the request body is empty")
        check_yaml_aliasing(node)
        value = loader.construct_document(node)
    except RecursionError:
        raise _too_deep("the body") from None
    except yaml.YAMLError as e:
        raise errors.BadRequest(f"the body is not valid YAML: {e}") from e
    finally:
        loader.dispose()
    check_value(value, "the body")
    return value


def allowed_alias_ratio(decode_count: int) -> float:
    """go-yaml's ``allowedAliasRatio``: the share of a document's nodes that may
    come from alias expansion."""
    if decode_count <= _ALIAS_RATIO_LOW:
        return 0.99
    if decode_count >= _ALIAS_RATIO_HIGH:
        return 0.10
    span = _ALIAS_RATIO_HIGH - _ALIAS_RATIO_LOW
    return 0.99 - 0.89 * (decode_count - _ALIAS_RATIO_LOW) / span


def yaml_expansion(root: yaml.Node) -> tuple[int, int, int]:
    """``(distinct nodes, nodes once aliases are expanded, JSON bytes once
    expanded)`` of a composed YAML document, without expanding it.

    PyYAML's composer makes an alias the very node it names, so a document
    is a graph; each node's expanded count and size are computed once
    (iteratively, post-order) and multiplied by its references. A node that
    contains itself (``&a [*a]``) can never be expanded: BadRequest.
    """
    count: dict[int, int] = {}
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _yaml_children(node)
        if done:
            on_path.discard(key)
            count[key] = 1 + sum(count[id(c)] for c in children)
            if isinstance(node, yaml.ScalarNode):
                size[key] = len(node.value) + 3  # quotes and a separator
            else:
                size[key] = 2 + sum(size[id(c)] for c in children)
            continue
        if key in count:
            continue
        if key in on_path:
            raise errors.BadRequest("the body is not valid YAML: an anchor's value contains an alias to itself")
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise errors.BadRequest("the body is not valid YAML: an anchor's value contains an alias to itself")
            if id(child) not in count:
                stack.append((child, False))
    return len(count), count[id(root)], size[id(root)]


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def check_yaml_aliasing(root: yaml.Node) -> None:
    distinct, expanded, size = yaml_expansion(root)
    aliased = expanded - distinct
    if aliased > 100 and expanded > 1000 and aliased / expanded > allowed_alias_ratio(expanded):
        raise errors.BadRequest("yaml: document contains excessive aliasing")
    if size > MAX_BODY:
        raise too_large()


# -- every decoded value --------------------------------------------------------
def check_value(value: Any, what: str) -> None:
    """Refuse a decoded value the rest of the server cannot handle (see the
    module docstring); *what* names it in the message ("body", "the patched
    object"). Iterative, so depth itself cannot break it."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            if depth > MAX_DEPTH:
                raise _too_deep(what)
            for k, item in v.items():
                if not isinstance(k, str):
                    where = _path_of(value, v) or "."
                    raise errors.BadRequest(f"{what} holds the key {k!r} at {where}: keys must be strings")
                if not k.isascii():
                    _check_text(k, value, what)
                if isinstance(item, (dict, list)):
                    stack.append((item, depth + 1))
                else:
                    _check_scalar(item, value, what)
        elif isinstance(v, list):
            if depth > MAX_DEPTH:
                raise _too_deep(what)
            for item in v:
                if isinstance(item, (dict, list)):
                    stack.append((item, depth + 1))
                else:
                    _check_scalar(item, value, what)
        else:
            _check_scalar(v, value, what)


def _check_scalar(v: Any, root: Any, what: str) -> None:
    if v is None or isinstance(v, bool):
        return
    if isinstance(v, str):
        if not v.isascii():
            _check_text(v, root, what)
    elif isinstance(v, int):
        if v.bit_length() > 1024:
            where = _path_of(root, v) or "."
            raise errors.BadRequest(f"{what} holds a number at {where} that is out of range for a float64")
    elif isinstance(v, float):
        if not math.isfinite(v):
            where = _path_of(root, v) or "."
            raise errors.BadRequest(f"{what} holds the number {v} at {where}, which is not a finite float64")
    else:
        raise errors.BadRequest(f"{what} holds a {type(v).__name__} at {_path_of(root, v) or '.'}, "
                                "which JSON cannot represent")


def _check_text(s: str, root: Any, what: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = s[e.start:e.end].encode("unicode_escape").decode()
        raise errors.BadRequest(f"{what} holds a lone UTF-16 surrogate ({bad}) at {_path_of(root, s) or '.'}: "
                                "it is not a Unicode character") from None


def _too_deep(what: str) -> errors.BadRequest:
    return errors.BadRequest(f"{what} is nested too deeply: more than {MAX_DEPTH} levels "
                             f"(the limit for any object)")


def _path_of(root: Any, target: Any) -> str:
    """JSON path of *target* (found by identity, or as a key) inside *root*;
    only computed for error messages."""
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        v, path = stack.pop()
        if isinstance(v, dict):
            for k, item in v.items():
                if k is target:
                    return f"{path}.{k}" if isinstance(k, str) and k.isascii() else path or "."
                if item is target:
                    return f"{path}.{k}"
                stack.append((item, f"{path}.{k}"))
        elif isinstance(v, list):
            for i, item in enumerate(v):
                if item is target:
                    return f"{path}[{i}]"
                stack.append((item, f"{path}[{i}]"))
        elif v is target:
            return path
    return ""
