"""Custom resources: the ``Kind`` a CustomResourceDefinition version serves.

Role: from one CRD (a plain dict) build one ``Kind`` per served version, with
the strategy Kubernetes' apiextensions-apiserver gives custom resources:
unknown fields pruned (unless ``x-kubernetes-preserve-unknown-fields``),
defaults from ``default``, validation of the ``openAPIV3Schema`` by the
``jsonschema`` library (Draft 4, the dialect OpenAPI 3.0 schemas are written
in, extended with the ``x-kubernetes-*`` keywords and ``nullable``), and the
``x-kubernetes-validations`` CEL rules (kubepy.kinds.cel, cel-python).  Also the
server-side Table from ``additionalPrinterColumns`` and the scale paths.

Problems are Status causes worded as upstream's
``apiextensions-apiserver/pkg/apiserver/validation`` words them
(``spec.replicas: Invalid value: "string": spec.replicas in body must be of
type integer: "string"``).  Pure: no HTTP, no store.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema import ValidationError, validators

from kubepy.kinds import Kind, Printer, Strategy, printers
from kubepy.kinds.cel import CELCompileError, compile_expression, to_cel
from kubepy.kinds.validation import _show
from kubepy.meta.selectors import generic_fields

__all__ = ["CLEANUP_FINALIZER", "CustomResourceSchema", "kinds_for", "store_prefix", "compile_rule",
           "CELCompileError", "default_errors"]

CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
_META_KEYS = ("apiVersion", "kind", "metadata")


def store_prefix(group: str, plural: str) -> str:
    """Where upstream keeps custom resources: ``/registry/<group>/<plural>/`` (all versions share it)."""
    return f"/registry/{group}/{plural}/"


# ---------------------------------------------------------------------------
# JSON Schema: the openAPIV3Schema as jsonschema's Draft 4 with Kubernetes' keywords
# ---------------------------------------------------------------------------

_D4 = jsonschema.Draft4Validator.VALIDATORS


def _json_type(value: Any) -> str:
    """go-openapi's name of a value's type, as its messages print it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type(validator: Any, types: Any, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if instance is None and schema.get("nullable"):
        return
    if schema.get("x-kubernetes-int-or-string"):
        return
    # Kubernetes decodes JSON numbers; 1.0 is an integer to it.
    if types == "integer" and isinstance(instance, float) and instance.is_integer():
        return
    yield from _D4["type"](validator, types, instance, schema)


def _skip_null(keyword: str) -> Any:
    def check(validator: Any, value: Any, instance: Any, schema: dict) -> Iterator[ValidationError]:
        if instance is None and schema.get("nullable"):
            return
        yield from _D4[keyword](validator, value, instance, schema)
    return check


def _int_or_string(validator: Any, on: Any, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if on and not (instance is None and schema.get("nullable")) and (
            isinstance(instance, bool) or not isinstance(instance, (int, str))):
        yield ValidationError("int-or-string", validator="x-kubernetes-int-or-string", instance=instance)


def _list_type(validator: Any, list_type: Any, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if not isinstance(instance, list) or list_type not in ("set", "map"):
        return
    seen: set[str] = set()
    keys = schema.get("x-kubernetes-list-map-keys") or []
    for i, item in enumerate(instance):
        if list_type == "set":
            ident, shown = json.dumps(item, sort_keys=True), _show(item)
        else:
            if not isinstance(item, dict):
                continue
            key = {k: item.get(k) for k in keys}
            ident = json.dumps(key, sort_keys=True)
            shown = "map[string]interface {}{" + ", ".join(f"{json.dumps(k)}:{_go_value(v)}"
                                                            for k, v in key.items()) + "}"
        if ident in seen:
            yield ValidationError(f"Duplicate value: {shown}", validator="x-kubernetes-list-type", path=[i],
                                  instance=item)
        seen.add(ident)


def _go_value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, str) else "<nil>" if v is None else _show(v)


def _embedded(validator: Any, on: Any, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if not on or not isinstance(instance, dict):
        return
    for key in ("apiVersion", "kind"):
        if not instance.get(key):
            yield ValidationError("Required value: must not be empty", validator="x-kubernetes-embedded-resource",
                                  path=[key], instance=instance)


def _defaulting_properties(validator: Any, properties: dict, instance: Any, schema: dict) -> Iterator[ValidationError]:
    """jsonschema's documented way to fill defaults: set them before the properties are validated."""
    if isinstance(instance, dict):
        for name, sub in properties.items():
            if isinstance(sub, dict) and "default" in sub and (
                    name not in instance or (instance[name] is None and not sub.get("nullable"))):
                instance[name] = copy.deepcopy(sub["default"])
    yield from _D4["properties"](validator, properties, instance, schema)


_KEYWORDS = {
    "type": _type,
    "enum": _skip_null("enum"),
    "x-kubernetes-int-or-string": _int_or_string,
    "x-kubernetes-list-type": _list_type,
    "x-kubernetes-embedded-resource": _embedded,
}
ValidatorClass = validators.extend(jsonschema.Draft4Validator, _KEYWORDS)
DefaultingClass = validators.extend(jsonschema.Draft4Validator, {"properties": _defaulting_properties},
                                    type_checker=jsonschema.Draft4Validator.TYPE_CHECKER)
# Defaulting only fills in; what it finds wrong is the validator's to report.
DefaultingClass.VALIDATORS = {k: v for k, v in DefaultingClass.VALIDATORS.items()
                              if k in ("properties", "items", "additionalProperties")}


def _field_path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _cause(err: ValidationError, at: str = "") -> dict[str, str]:
    """One jsonschema error as upstream's field error (kubeOpenAPIResultToFieldErrors); ``at`` is
    where the validated value sits (a CRD's default), prefixed to every path."""
    path = _field_path(err.absolute_path)
    if at:
        path = at + ("." + path if path and not path.startswith("[") else path)
    kw, value = err.validator, err.instance
    name = path or "body"
    if kw == "required":
        missing = re.match(r"'(.*)' is a required property", err.message)
        field = f"{path}.{missing.group(1)}" if missing and path else (missing.group(1) if missing else path)
        return {"reason": "FieldValueRequired", "field": field, "message": "Required value"}
    if kw == "type":
        want = err.validator_value
        return {"reason": "FieldValueTypeInvalid", "field": path, "message":
                f'Invalid value: "{_json_type(value)}": {name} in body must be of type {want}: "{_json_type(value)}"'}
    if kw == "x-kubernetes-int-or-string":
        return {"reason": "FieldValueTypeInvalid", "field": path, "message":
                f'Invalid value: "{_json_type(value)}": {name} in body must be of type integer,string: '
                f'"{_json_type(value)}"'}
    if kw == "enum":
        supported = ", ".join(json.dumps(v) if isinstance(v, str) else _show(v) for v in err.validator_value)
        return {"reason": "FieldValueNotSupported", "field": path,
                "message": f"Unsupported value: {_show(value)}: supported values: {supported}"}
    if kw == "x-kubernetes-list-type":
        return {"reason": "FieldValueDuplicate", "field": path, "message": err.message}
    if kw == "x-kubernetes-embedded-resource":
        return {"reason": "FieldValueRequired", "field": path, "message": err.message}
    if kw == "maxLength":
        return {"reason": "FieldValueTooLong", "field": path,
                "message": f"Too long: may not be more than {err.validator_value} bytes"}
    if kw == "maxItems":
        return {"reason": "FieldValueTooMany", "field": path,
                "message": f"Too many: {len(value)}: must have at most {err.validator_value} items"}
    if kw == "maxProperties":
        return {"reason": "FieldValueTooMany", "field": path,
                "message": f"Too many: {len(value)}: must have at most {err.validator_value} items"}
    v = err.validator_value
    exclusive = err.schema.get("exclusiveMaximum" if kw == "maximum" else "exclusiveMinimum")
    detail = {
        "maximum": f"should be less than {'' if exclusive else 'or equal to '}{_num(v)}",
        "minimum": f"should be greater than {'' if exclusive else 'or equal to '}{_num(v)}",
        "minLength": f"should be at least {v} chars long",
        "pattern": f"should match '{v}'",
        "minItems": f"should have at least {v} items",
        "uniqueItems": "shouldn't contain duplicates",
        "multipleOf": f"should be a multiple of {_num(v)}",
        "minProperties": f"should have at least {v} properties",
        "additionalProperties": "must not have additional properties",
    }.get(str(kw), err.message)
    return {"reason": "FieldValueInvalid", "field": path, "message": f"Invalid value: {_show(value)}: {name} in body {detail}"}


def default_errors(schema: dict, at: str) -> list[dict[str, str]]:
    """What is wrong with a schema node's ``default`` (at path ``at``) by that node's own schema."""
    own = {k: v for k, v in schema.items() if k not in ("default", "x-kubernetes-validations")}
    try:
        return [_cause(e, at) for e in ValidatorClass(own).iter_errors(schema["default"])]
    except Exception as e:  # a schema jsonschema cannot use: say so rather than crash
        return [{"reason": "FieldValueInvalid", "field": at, "message": f"Invalid value: the default cannot be checked: {e}"}]


def _num(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


# ---------------------------------------------------------------------------
# CEL (x-kubernetes-validations)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Rule:
    rule: str
    program: Any
    message: str
    reason: str
    field_path: str
    transition: bool  # uses oldSelf: checked only on update, where an old value exists
    message_program: Any = None  # messageExpression, compiled


def compile_rule(rule: dict) -> _Rule:
    text = str(rule.get("rule") or "")
    program = _compile(text)
    message_expr = str(rule.get("messageExpression") or "")
    return _Rule(text, program, str(rule.get("message") or ""), str(rule.get("reason") or "FieldValueInvalid"),
                 str(rule.get("fieldPath") or ""), bool(re.search(r"\boldSelf\b", text)),
                 _compile(message_expr) if message_expr else None)


def _compile(text: str) -> Any:
    return compile_expression(text)  # kubepy.kinds.cel: shared with admission's CEL


_CEL_MESSAGE = {"FieldValueForbidden": "Forbidden: {m}", "FieldValueRequired": "Required value: {m}",
                "FieldValueDuplicate": "Duplicate value: {v}: {m}"}


def _message(r: _Rule, activation: dict) -> str:
    """messageExpression's string when it gives one (upstream falls back as below when it fails or is empty)."""
    if r.message_program is not None:
        try:
            text = r.message_program.evaluate(activation)
        except Exception:
            text = None
        if isinstance(text, str) and text.strip():
            return str(text)
    return r.message or f"failed rule: {r.rule}"


def _rule_cause(r: _Rule, path: str, value: Any, detail: str) -> dict[str, str]:
    field = path + r.field_path if r.field_path.startswith((".", "[")) else (path + "." + r.field_path if r.field_path else path)
    shown = f'"{_json_type(value)}"'
    text = _CEL_MESSAGE.get(r.reason, "Invalid value: {v}: {m}").format(v=shown, m=detail)
    return {"reason": r.reason, "field": field.lstrip("."), "message": text}


# ---------------------------------------------------------------------------
# The schema of one version
# ---------------------------------------------------------------------------


class CustomResourceSchema:
    """One version's ``openAPIV3Schema``: prune, default, validate (schema, then CEL)."""

    def __init__(self, schema: dict) -> None:
        self.schema = copy.deepcopy(schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
        self._validator = ValidatorClass(self._for_validation(self.schema))
        self._defaulter = DefaultingClass(self.schema)
        self._rules: dict[int, list[_Rule]] = {}
        self._with_rules: set[int] = set()  # schema nodes with a rule at or below them: the CEL walk visits only these
        self._compile(self.schema)

    def _for_validation(self, schema: dict) -> dict:
        """The root keeps apiVersion/kind/metadata out of the user's schema (ObjectMeta is the server's)."""
        root = copy.deepcopy(schema)
        props = root.setdefault("properties", {}) if "properties" in root or not root.get(
            "x-kubernetes-preserve-unknown-fields") else None
        if props is not None:
            props.pop("metadata", None)
        return root

    def _compile(self, node: Any) -> bool:
        if not isinstance(node, dict):
            return False
        rules = node.get("x-kubernetes-validations")
        if rules:
            self._rules[id(node)] = [compile_rule(r) for r in rules]
        below = [self._compile(sub) for sub in (node.get("properties") or {}).values()]
        below += [self._compile(node.get(key)) for key in ("items", "additionalProperties")]
        if rules or any(below):
            self._with_rules.add(id(node))
            return True
        return False

    # -- pruning ----------------------------------------------------------
    def prune(self, obj: dict) -> list[str]:
        """Drop fields the schema does not know (upstream's structural pruning); their JSON paths."""
        out: list[str] = []
        for k in list(obj):
            if k in _META_KEYS:
                continue
            sub = (self.schema.get("properties") or {}).get(k)
            if sub is None:
                if not self.schema.get("x-kubernetes-preserve-unknown-fields"):
                    out.append(f".{k}")
                    del obj[k]
            else:
                _prune(sub, obj[k], f".{k}", out)
        return out

    # -- defaulting and validation ----------------------------------------
    def default(self, obj: dict) -> None:
        for _ in self._defaulter.iter_errors(obj):
            pass

    def validate(self, obj: dict, old: dict | None) -> list[dict[str, str]]:
        causes = [_cause(e) for e in sorted(self._validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]
        if not causes and self._rules:
            self._cel(self.schema, obj, old, "", causes, root=True)
        return causes

    def _cel(self, schema: dict, value: Any, old: Any, path: str, out: list, *, root: bool = False) -> None:
        if value is None or id(schema) not in self._with_rules:
            return
        for r in self._rules.get(id(schema), ()):
            if r.transition and old is None:
                continue
            self_value = {k: v for k, v in value.items() if k != "metadata"} if root and isinstance(value, dict) else value
            activation = {"self": to_cel(self_value)}
            if r.transition:
                activation["oldSelf"] = to_cel(old)
            try:
                result = r.program.evaluate(activation)
            except Exception as e:  # an evaluation error (no such key, overflow) refuses the object
                out.append(_rule_cause(r, path, value, f"Internal error occurred: {e.args[0] if e.args else e}"))
                continue
            if not bool(result):
                out.append(_rule_cause(r, path, value, _message(r, activation)))
        if isinstance(value, dict):
            props = schema.get("properties") or {}
            extra = schema.get("additionalProperties")
            for k, v in value.items():
                sub = props.get(k) if props else (extra if isinstance(extra, dict) else None)
                if isinstance(sub, dict) and (not root or k not in _META_KEYS):
                    self._cel(sub, v, old.get(k) if isinstance(old, dict) else None, f"{path}.{k}" if path else k, out)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            items = schema["items"]
            old_by_key = _correlate(schema, old)
            for i, v in enumerate(value):
                self._cel(items, v, old_by_key(v), f"{path}[{i}]", out)


def _correlate(schema: dict, old: Any) -> Any:
    """Old list items that correlate with new ones: map lists by their keys, sets by value (as upstream)."""
    kind = schema.get("x-kubernetes-list-type")
    if not isinstance(old, list) or kind not in ("map", "set"):
        return lambda v: None
    if kind == "set":
        return lambda v: v if v in old else None
    keys = schema.get("x-kubernetes-list-map-keys") or []
    index = {json.dumps([o.get(k) for k in keys]): o for o in old if isinstance(o, dict)}
    return lambda v: index.get(json.dumps([v.get(k) for k in keys])) if isinstance(v, dict) else None


def _prune(schema: dict, value: Any, path: str, out: list[str]) -> None:
    if schema.get("x-kubernetes-embedded-resource") and isinstance(value, dict):
        keep = set(_META_KEYS)
    else:
        keep = set()
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for k in list(value):
            if props is not None and k in props:
                _prune(props[k], value[k], f"{path}.{k}", out)
            elif isinstance(extra, dict):
                _prune(extra, value[k], f"{path}.{k}", out)
            elif k in keep or schema.get("x-kubernetes-preserve-unknown-fields") or extra is True:
                continue
            elif props is not None or not schema.get("x-kubernetes-preserve-unknown-fields"):
                out.append(f"{path}.{k}")
                del value[k]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            _prune(schema["items"], v, f"{path}[{i}]", out)


# ---------------------------------------------------------------------------
# Printer columns and scale
# ---------------------------------------------------------------------------

_PATH_TOKEN = re.compile(r"\.([A-Za-z0-9_\-/]+)|\[(\d+)\]|\['([^']+)'\]")


def json_path(obj: Any, path: str) -> Any:
    """The value at a simple JSONPath (``.spec.replicas``, ``.status.conditions[0].type``), None when absent."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if text.startswith("$"):
        text = text[1:]
    pos, cur = 0, obj
    while pos < len(text):
        m = _PATH_TOKEN.match(text, pos)
        if m is None:
            return None
        pos = m.end()
        if m.group(2) is not None:
            i = int(m.group(2))
            cur = cur[i] if isinstance(cur, list) and i < len(cur) else None
        else:
            key = m.group(1) or m.group(3)
            cur = cur.get(key) if isinstance(cur, dict) else None
        if cur is None:
            return None
    return cur


# What printer columns' JSONPaths may also hold, as upstream's CRDs use them (Gateway API, cert-manager):
# ``[*]`` (every item) and a filter ``[?(@.type=="Ready")]`` (== or != against a quoted string).
_COLUMN_TOKEN = re.compile(r"\.([A-Za-z0-9_\-/]+)|\[(\d+)\]|\['([^']+)'\]|\[(\*)\]"
                           r"|\[\?\(@((?:\.[A-Za-z0-9_\-/]+)+)\s*(==|!=)\s*(?:\"([^\"]*)\"|'([^']*)')\)\]")


def column_values(obj: Any, path: str) -> list[Any]:
    """Every value a printer column's JSONPath finds (client-go's jsonpath: each step maps over all results)."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if text.startswith("$"):
        text = text[1:]
    pos, cur = 0, [obj]
    while pos < len(text) and cur:
        m = _COLUMN_TOKEN.match(text, pos)
        if m is None:
            return []
        pos = m.end()
        key, index, quoted, star, field_path, op = m.group(1, 2, 3, 4, 5, 6)
        if index is not None:
            cur = [c[int(index)] for c in cur if isinstance(c, list) and int(index) < len(c)]
        elif star is not None:
            cur = [x for c in cur for x in (c if isinstance(c, list) else c.values() if isinstance(c, dict) else [])]
        elif field_path is not None:
            want = m.group(7) if m.group(7) is not None else m.group(8)
            items = [x for c in cur for x in (c if isinstance(c, list) else [])]
            cur = [x for x in items if (json_path(x, field_path) == want) == (op == "==")]
        else:
            name = key or quoted
            cur = [c[name] for c in cur if isinstance(c, dict) and c.get(name) is not None]
    return cur


def set_json_path(obj: dict, path: str, value: Any) -> None:
    keys = [m.group(1) or m.group(3) for m in _PATH_TOKEN.finditer(path)]
    cur = obj
    for k in keys[:-1]:
        nxt = cur.get(k)
        if not isinstance(nxt, dict):
            nxt = cur[k] = {}
        cur = nxt
    cur[keys[-1]] = value


_NAME_COL = {"name": "Name", "type": "string", "format": "name",
             "description": "Name must be unique within a namespace. Is required when creating resources, although "
                            "some resources may allow a client to request the generation of an appropriate name "
                            "automatically. Name is primarily intended for creation idempotence and configuration "
                            "definition. Cannot be updated. More info: "
                            "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
             "priority": 0}


def _printer(columns: list[dict]) -> Printer | None:
    if not columns:
        return None  # upstream's default: Name and Age (printers.DEFAULT)
    cols = tuple([_NAME_COL] + [{"name": c.get("name", ""), "type": c.get("type", "string"),
                                 "format": c.get("format", ""), "description": c.get("description", ""),
                                 "priority": int(c.get("priority") or 0)} for c in columns])

    def cells(obj: dict, now: dt.datetime) -> list:
        row: list[Any] = [(obj.get("metadata") or {}).get("name", "")]
        for c in columns:
            found = column_values(obj, str(c.get("jsonPath", "")))
            # One value keeps its type; several print space-separated (upstream's jsonpath PrintResults).
            v = found[0] if len(found) == 1 else " ".join(
                x if isinstance(x, str) else json.dumps(x, separators=(",", ":")) for x in found) if found else None
            if v is not None and c.get("type") == "date" and isinstance(v, str):
                try:
                    when = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
                    v = printers.human_duration((now - when).total_seconds())
                except ValueError:
                    pass
            elif isinstance(v, (dict, list)):
                v = json.dumps(v, separators=(",", ":"))
            row.append(v)
        return row
    return Printer(cols, cells)


# ---------------------------------------------------------------------------
# Kinds of a CRD
# ---------------------------------------------------------------------------


def kinds_for(crd: dict) -> list[Kind]:
    """One ``Kind`` per served version of *crd* (a valid CustomResourceDefinition)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec["group"]
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served"):
            continue
        out.append(_kind(crd, group, names, spec.get("scope") == "Namespaced", version))
    return out


def _kind(crd: dict, group: str, names: dict, namespaced: bool, version: dict) -> Kind:
    schema_doc = (version.get("schema") or {}).get("openAPIV3Schema") or {}
    schema = CustomResourceSchema(schema_doc)
    subs = version.get("subresources") or {}
    has_status = "status" in subs
    scale = subs.get("scale")
    kind_name = names["kind"]

    def validate(obj: dict, old: dict | None, errs: list) -> None:
        errs.extend(schema.validate(obj, old))

    def default(obj: dict, old: dict | None) -> None:
        schema.default(obj)

    def prepare_create(obj: dict) -> None:
        if has_status:
            obj.pop("status", None)

    selectable = [str(f.get("jsonPath") or "") for f in version.get("selectableFields") or [] if isinstance(f, dict)]

    def fields(obj: dict) -> dict[str, str]:
        """metadata.name/namespace, and the version's selectableFields (``.spec.color`` selects as spec.color)."""
        out = generic_fields(obj)
        for path in selectable:
            value = json_path(obj, path)
            out[path.lstrip(".")] = "" if value is None else (
                ("true" if value else "false") if isinstance(value, bool) else str(value))
        return out

    strategy = Strategy(default=default, validate=validate, prepare_create=prepare_create, kind=kind_name, group=group)
    sub_strategies = {"status": strategy} if has_status else {}
    if scale:
        sub_strategies["scale"] = Strategy(kind="Scale", group="autoscaling")
    return Kind(
        group, version["name"], kind_name, names["plural"], namespaced,
        short_names=tuple(names.get("shortNames") or ()),
        subresources=tuple(s for s, on in (("status", has_status), ("scale", bool(scale))) if on),
        categories=tuple(names.get("categories") or ()),
        has_status=has_status, has_spec_generation=True,
        strategy=strategy, subresource_strategies=sub_strategies,
        printer=_printer(version.get("additionalPrinterColumns") or []),
        store_prefix=store_prefix(group, names["plural"]), fields=fields,
        custom=CustomResource(schema=schema, schema_doc=schema_doc, crd_name=crd["metadata"]["name"],
                              singular=names.get("singular") or kind_name.lower(),
                              scale=(scale.get("specReplicasPath", ""), scale.get("statusReplicasPath", ""),
                                     scale.get("labelSelectorPath") or "") if scale else None,
                              storage=bool(version.get("storage"))),
    )


@dataclass(frozen=True, eq=False)
class CustomResource:
    """What a custom resource's ``Kind`` carries beyond a built-in's: its schema and CRD."""

    schema: CustomResourceSchema
    schema_doc: dict
    crd_name: str
    singular: str
    scale: tuple[str, str, str] | None
    storage: bool

    def scale_of(self, obj: dict) -> dict:
        """The autoscaling/v1 Scale of *obj*, read through the CRD's scale paths."""
        assert self.scale is not None
        spec_path, status_path, selector_path = self.scale
        m = obj["metadata"]
        selector = json_path(obj, selector_path) if selector_path else None
        return {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: m[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in m},
            "spec": {"replicas": json_path(obj, spec_path) or 0},
            "status": {"replicas": json_path(obj, status_path) or 0,
                       **({"selector": selector} if isinstance(selector, str) and selector else {})},
        }

    def set_replicas(self, obj: dict, replicas: int) -> None:
        assert self.scale is not None
        set_json_path(obj, self.scale[0], replicas)
