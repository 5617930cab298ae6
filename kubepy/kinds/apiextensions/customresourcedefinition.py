"""CustomResourceDefinition (apiextensions.k8s.io/v1): defaults and upstream's validation.

What a CRD defines is served by ``kubepy.api.crds`` (registering the kinds
``customresource.kinds_for`` builds); this module only checks the CRD
itself, as ``apiextensions-apiserver/pkg/apis/apiextensions/validation``
does: its name, group, names, scope, versions (exactly one storage version),
subresources, printer columns, conversion and that every schema is
structural with CEL rules that compile.
"""

from __future__ import annotations

import re
from typing import Any

from kubepy.kinds import Kind, Printer, Strategy, register
from kubepy.kinds import validation as v
from kubepy.kinds.apiextensions.customresource import CLEANUP_FINALIZER, CELCompileError, compile_rule, default_errors

GROUP = "apiextensions.k8s.io"
SCOPES = ("Cluster", "Namespaced")
_COLUMN_TYPES = ("integer", "number", "string", "boolean", "date")
_SCHEMA_TYPES = ("array", "boolean", "integer", "number", "object", "string")


def default_crd(obj: dict, old: dict | None) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    names = spec.get("names")
    if isinstance(names, dict) and isinstance(names.get("kind"), str):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    conv = spec.setdefault("conversion", {})
    if isinstance(conv, dict):
        conv.setdefault("strategy", "None")


def mark_for_cleanup(marked: dict) -> bool:
    """A CRD being deleted stays, with the cleanup finalizer, until its objects are gone
    (upstream's REST Delete adds it the same way); the API server's CRD controller then removes it."""
    fins = marked["metadata"].setdefault("finalizers", [])
    if CLEANUP_FINALIZER not in fins:
        fins.append(CLEANUP_FINALIZER)
    return True


def _prepare_create(obj: dict) -> None:
    obj.pop("status", None)


def validate_crd(obj: dict, old: dict | None, errs: v.Errs) -> None:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    group = spec.get("group") or ""
    names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
    plural = names.get("plural") or ""
    if meta.get("name") and meta.get("name") != f"{plural}.{group}":
        errs.invalid("metadata.name", meta.get("name"), 'must be spec.names.plural+"."+spec.group')
    if not group:
        errs.required("spec.group")
    else:
        errs.each("spec.group", group, v.is_dns1123_subdomain(group))
        if "." not in group:
            errs.invalid("spec.group", group, "should be a domain with at least one dot")
    scope = spec.get("scope")
    if not scope:
        errs.required("spec.scope")
    elif scope not in SCOPES:
        errs.not_supported("spec.scope", scope, SCOPES)
    _validate_names(names, errs)
    _validate_versions(spec.get("versions"), errs)
    conv = spec.get("conversion") or {}
    strategy = conv.get("strategy") if isinstance(conv, dict) else None
    if strategy not in (None, "None"):
        # Webhook conversion needs a conversion webhook kubepy does not call: refused, not ignored.
        errs.not_supported("spec.conversion.strategy", strategy, ("None",))
    names_served = [ver.get("name") for ver in spec.get("versions") or [] if isinstance(ver, dict)]
    for i, stored in enumerate(((obj.get("status") or {}).get("storedVersions") or []) if old is not None else []):
        if stored not in names_served:
            errs.invalid(f"status.storedVersions[{i}]", stored, "must appear in spec.versions")
    if old is not None:
        old_spec = old.get("spec") or {}
        if old_spec.get("scope") and scope != old_spec.get("scope"):
            errs.invalid("spec.scope", scope, "field is immutable")
        if old_spec.get("group") and group != old_spec.get("group"):
            errs.invalid("spec.group", group, "field is immutable")


def _validate_names(names: dict, errs: v.Errs) -> None:
    for key in ("plural", "singular", "kind", "listKind"):
        value = names.get(key)
        path = f"spec.names.{key}"
        if not value:
            if key in ("plural", "kind", "listKind"):
                errs.required(path)
            continue
        checked = value.lower() if key in ("kind", "listKind") else value
        problems = v.is_dns1035_label(checked)
        if problems:
            errs.invalid(path, value, ",".join(problems))
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        errs.invalid("spec.names.listKind", names.get("listKind"), "kind and listKind may not be the same")
    for i, short in enumerate(names.get("shortNames") or []):
        problems = v.is_dns1035_label(str(short))
        if problems:
            errs.invalid(f"spec.names.shortNames[{i}]", short, ",".join(problems))
    for i, cat in enumerate(names.get("categories") or []):
        problems = v.is_dns1035_label(str(cat))
        if problems:
            errs.invalid(f"spec.names.categories[{i}]", cat, ",".join(problems))


def _validate_versions(versions: Any, errs: v.Errs) -> None:
    if not isinstance(versions, list) or not versions:
        errs.invalid_shown("spec.versions", "[]", "must have exactly one version marked as storage version")
        return
    seen: set[str] = set()
    storage = 0
    for i, ver in enumerate(versions):
        path = f"spec.versions[{i}]"
        if not isinstance(ver, dict):
            errs.invalid(path, ver, "must be an object")
            continue
        name = ver.get("name") or ""
        if not name:
            errs.required(f"{path}.name")
        else:
            errs.each(f"{path}.name", name, v.is_dns1035_label(name))
            if name in seen:
                errs.duplicate(f"{path}.name", name)
            seen.add(name)
        storage += bool(ver.get("storage"))
        schema = (ver.get("schema") or {}).get("openAPIV3Schema") if isinstance(ver.get("schema"), dict) else None
        spath = f"{path}.schema.openAPIV3Schema"
        if schema is None:
            errs.required(spath, "schemas are required")
        else:
            if schema.get("type") != "object":
                if not schema.get("type"):
                    errs.required(f"{spath}.type", "must not be empty at the root")
                else:
                    errs.invalid(f"{spath}.type", schema.get("type"), "must be object at the root")
            _validate_structural(schema, spath, errs, root=True)
        subs = ver.get("subresources") or {}
        scale = subs.get("scale") if isinstance(subs, dict) else None
        if isinstance(scale, dict):
            sp = f"{path}.subresources.scale"
            spec_path = scale.get("specReplicasPath") or ""
            status_path = scale.get("statusReplicasPath") or ""
            if not spec_path:
                errs.required(f"{sp}.specReplicasPath")
            elif not spec_path.startswith(".spec."):
                errs.invalid(f"{sp}.specReplicasPath", spec_path, "should be a json path under .spec")
            if not status_path:
                errs.required(f"{sp}.statusReplicasPath")
            elif not status_path.startswith(".status."):
                errs.invalid(f"{sp}.statusReplicasPath", status_path, "should be a json path under .status")
            sel = scale.get("labelSelectorPath")
            if sel and not sel.startswith((".spec.", ".status.")):
                errs.invalid(f"{sp}.labelSelectorPath", sel, "should be a json path under either .spec or .status")
        selectable = ver.get("selectableFields") or []
        if isinstance(selectable, list) and len(selectable) > 8:
            errs.invalid_shown(f"{path}.selectableFields", str(len(selectable)), "must have at most 8 items")
        for j, sel in enumerate(selectable if isinstance(selectable, list) else []):
            jp = sel.get("jsonPath") if isinstance(sel, dict) else None
            if not jp:
                errs.required(f"{path}.selectableFields[{j}].jsonPath")
            elif not str(jp).startswith(".") or str(jp).startswith(".metadata."):
                errs.invalid(f"{path}.selectableFields[{j}].jsonPath", jp,
                             "must be a simple JSON path under .spec or .status (metadata fields are always selectable)")
        for j, col in enumerate(ver.get("additionalPrinterColumns") or []):
            cp = f"{path}.additionalPrinterColumns[{j}]"
            if not isinstance(col, dict):
                continue
            if not col.get("name"):
                errs.required(f"{cp}.name")
            if not col.get("type"):
                errs.required(f"{cp}.type")
            elif col["type"] not in _COLUMN_TYPES:
                errs.not_supported(f"{cp}.type", col["type"], _COLUMN_TYPES)
            if not col.get("jsonPath"):
                errs.required(f"{cp}.JSONPath")
    if storage != 1:
        errs.invalid_shown("spec.versions", f"[]apiextensions.CustomResourceDefinitionVersion{{{len(versions)} items}}",
                           "must have exactly one version marked as storage version")


def _validate_structural(schema: dict, path: str, errs: v.Errs, *, root: bool = False, where: str = "") -> None:
    """Upstream's structural-schema rules that matter for pruning and defaulting, and CEL compilation."""
    if not isinstance(schema, dict):
        errs.invalid(path, schema, "must be an object")
        return
    typ = schema.get("type")
    int_or_string = schema.get("x-kubernetes-int-or-string")
    preserve = schema.get("x-kubernetes-preserve-unknown-fields")
    if typ and typ not in _SCHEMA_TYPES:
        errs.not_supported(f"{path}.type", typ, _SCHEMA_TYPES)
    if not typ and where and not int_or_string and not preserve:
        errs.required(f"{path}.type", f"must not be empty for specified {where}")
    if int_or_string and typ:
        errs.invalid(f"{path}.type", typ, "must be empty if x-kubernetes-int-or-string is true")
    if preserve is False:
        errs.invalid(f"{path}.x-kubernetes-preserve-unknown-fields", False, "must be true or undefined")
    if typ == "array" and not isinstance(schema.get("items"), dict):
        errs.required(f"{path}.items", "must be specified")
    if schema.get("x-kubernetes-embedded-resource") and typ != "object":
        errs.invalid(f"{path}.type", typ or "", "must be object if x-kubernetes-embedded-resource is true")
    list_type = schema.get("x-kubernetes-list-type")
    if list_type is not None:
        if list_type not in ("atomic", "set", "map"):
            errs.not_supported(f"{path}.x-kubernetes-list-type", list_type, ("atomic", "set", "map"))
        if typ != "array":
            errs.invalid(f"{path}.type", typ or "", "must be array if x-kubernetes-list-type is specified")
        if list_type == "map" and not schema.get("x-kubernetes-list-map-keys"):
            errs.required(f"{path}.x-kubernetes-list-map-keys",
                          "must not be empty if x-kubernetes-list-type is map")
    if "pattern" in schema:
        try:
            re.compile(str(schema["pattern"]))
        except re.error as e:
            errs.invalid(f"{path}.pattern", schema["pattern"], f"must be a valid regular expression, but isn't: {e}")
    if "default" in schema and not errs_below(schema):
        # A default must itself be valid by the schema it defaults (upstream validates defaults the same way).
        errs.extend(default_errors(schema, f"{path}.default"))
    for key in ("allOf", "anyOf", "oneOf", "not"):
        if key in schema and _has_forbidden_in_junctor(schema[key]):
            errs.forbidden(f"{path}.{key}", "must not specify type, default, nullable or "
                           "x-kubernetes-* extensions inside a logical junctor (structural schema)")
    if "properties" in schema and isinstance(schema.get("additionalProperties"), dict):
        errs.forbidden(f"{path}.additionalProperties", "additionalProperties and properties are mutual exclusive")
    if root and isinstance(schema.get("properties"), dict):
        meta = schema["properties"].get("metadata")
        if isinstance(meta, dict) and set(meta) - {"type", "properties", "description"}:
            errs.forbidden(f"{path}.properties[metadata]",
                           "must not specify anything other than name and generateName, but metadata is implicitly specified")
    for i, rule in enumerate(schema.get("x-kubernetes-validations") or []):
        rp = f"{path}.x-kubernetes-validations[{i}]"
        if not isinstance(rule, dict) or not rule.get("rule"):
            errs.required(f"{rp}.rule")
            continue
        try:
            compile_rule({"rule": rule["rule"]})
        except CELCompileError as e:
            errs.invalid(f"{rp}.rule", rule["rule"], str(e))
        if rule.get("messageExpression"):
            try:
                compile_rule({"rule": rule["messageExpression"]})
            except CELCompileError as e:
                errs.invalid(f"{rp}.messageExpression", rule["messageExpression"], str(e))
        reason = rule.get("reason")
        allowed = ("FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate")
        if reason and reason not in allowed:
            errs.not_supported(f"{rp}.reason", reason, allowed)
    props = schema.get("properties")
    for name, sub in (props.items() if isinstance(props, dict) else ()):
        _validate_structural(sub, f"{path}.properties[{name}]", errs, where="object fields")
    if isinstance(schema.get("items"), dict):
        _validate_structural(schema["items"], f"{path}.items", errs, where="array items")
    if isinstance(schema.get("additionalProperties"), dict):
        _validate_structural(schema["additionalProperties"], f"{path}.additionalProperties", errs,
                             where="additionalProperties")


def errs_below(schema: dict) -> bool:
    """Whether the schema is too broken to check a default against (bad types, bad patterns)."""
    try:
        for node in _nodes(schema):
            if "pattern" in node:
                re.compile(str(node["pattern"]))
            if node.get("type") not in (None, *_SCHEMA_TYPES):
                return True
    except re.error:
        return True
    return False


def _nodes(schema: Any) -> Any:
    if isinstance(schema, dict):
        yield schema
        props = schema.get("properties")
        for sub in (props.values() if isinstance(props, dict) else ()):
            yield from _nodes(sub)
        for key in ("items", "additionalProperties"):
            yield from _nodes(schema.get(key))


def _has_forbidden_in_junctor(node: Any) -> bool:
    nodes = node if isinstance(node, list) else [node]
    return any(isinstance(n, dict) and (set(n) & {"type", "default", "nullable", "additionalProperties"}
                                        or any(k.startswith("x-kubernetes-") for k in n)) for n in nodes)


def _cells(obj: dict, now: Any) -> list:
    created = (obj.get("metadata") or {}).get("creationTimestamp")
    return [(obj.get("metadata") or {}).get("name", ""), created]


_COLUMNS = (
    {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.",
     "priority": 0},
    {"name": "Created At", "type": "date", "format": "",
     "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
     "priority": 0},
)

CUSTOMRESOURCEDEFINITION = register(Kind(
    GROUP, "v1", "CustomResourceDefinition", "customresourcedefinitions", namespaced=False,
    short_names=("crd", "crds"), categories=("api-extensions",), subresources=("status",), has_status=True,
    has_spec_generation=True, model="V1CustomResourceDefinition", proto=None,
    api_types=("CustomResourceDefinition", "CustomResourceDefinitionList", "CustomResourceDefinitionSpec",
               "CustomResourceDefinitionStatus", "CustomResourceDefinitionCondition",
               "CustomResourceDefinitionNames", "CustomResourceDefinitionVersion", "CustomResourceConversion",
               "CustomResourceValidation", "CustomResourceSubresources", "CustomResourceSubresourceScale",
               "CustomResourceColumnDefinition", "JSONSchemaProps", "ExternalDocumentation", "ValidationRule",
               "WebhookConversion", "WebhookClientConfig", "ServiceReference", "SelectableField"),
    strategy=Strategy(default=default_crd, validate=validate_crd, prepare_create=_prepare_create,
                      on_delete=mark_for_cleanup),
    printer=Printer(_COLUMNS, _cells),
))
