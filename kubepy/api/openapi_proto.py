"""``/openapi/v2`` in protobuf: the Swagger document as gnostic's ``openapi.v2.Document``.

kubectl (validation, ``explain --output plaintext-openapiv2``) and Helm 3 ask
for ``application/com.github.proto-openapi.spec.v2@v1.0+protobuf`` and
nothing else; the answer is typed ``...spec.v2.v1.0+protobuf``. The message schema is the published one
(``openapiv2/OpenAPIv2.proto`` of google/gnostic-models, kept beside its
generated module in ``kubepy/api/openapiv2/``); the official ``protobuf``
library encodes it. This module only maps the JSON document onto it, as
gnostic's own compiler does: maps become lists of ``Named*`` pairs, a
parameter becomes a body or a typed non-body parameter, free-form values
(defaults, enums, examples, ``x-`` extensions) become ``Any`` holding YAML.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from kubepy.api.openapiv2 import OpenAPIv2_pb2 as pb

__all__ = ["CONTENT_TYPE", "document_bytes", "to_document"]

# Asked for with "@v1.0" (clients' old spelling) or ".v1.0"; answered with ".v1.0", the
# spelling Go's mime parser accepts ("@" is not a token character).
CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
ACCEPTED = (CONTENT_TYPE, "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")

_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")


def _snake(name: str) -> str:
    return _SNAKE.sub("_", name).lower()


def _any(value: Any) -> pb.Any:
    text = yaml.safe_dump(value, default_flow_style=False, sort_keys=False, allow_unicode=True)
    return pb.Any(yaml=text.removesuffix("...\n"))


def _extensions(d: dict[str, Any]) -> list[pb.NamedAny]:
    return [pb.NamedAny(name=k, value=_any(v)) for k, v in d.items() if k.startswith("x-")]


def _fill(msg: Any, d: dict[str, Any], *, skip: tuple[str, ...] = ()) -> Any:
    """Copy the scalar and string-list fields whose proto name is the snake_case of the JSON key."""
    fields = msg.DESCRIPTOR.fields_by_name
    for key, value in d.items():
        if key in skip or key.startswith("x-"):
            continue
        name = "_ref" if key == "$ref" else _snake(key)
        f = fields.get(name)
        if f is None:
            continue
        if f.message_type is not None:
            if f.message_type.name == "Any":
                if f.is_repeated:
                    getattr(msg, name).extend(_any(v) for v in value)
                else:
                    getattr(msg, name).CopyFrom(_any(value))
            elif f.message_type.name == "ExternalDocs":
                getattr(msg, name).CopyFrom(_fill(pb.ExternalDocs(), value))
            elif f.message_type.name == "PrimitivesItems":
                getattr(msg, name).CopyFrom(_primitives(value))
            continue  # other messages: the caller builds them
        if f.is_repeated:
            getattr(msg, name).extend(value)
        elif f.type == f.TYPE_DOUBLE:
            setattr(msg, name, float(value))
        elif f.type == f.TYPE_INT64:
            setattr(msg, name, int(value))
        else:
            setattr(msg, name, value)
    if "vendor_extension" in fields:
        msg.vendor_extension.extend(_extensions(d))
    return msg


def _primitives(d: dict[str, Any]) -> pb.PrimitivesItems:
    return _fill(pb.PrimitivesItems(), d)


def _schema(d: dict[str, Any]) -> pb.Schema:
    s = _fill(pb.Schema(), d, skip=("type", "items", "allOf", "properties", "additionalProperties", "xml"))
    if "type" in d:
        s.type.value.extend(d["type"] if isinstance(d["type"], list) else [d["type"]])
    if "items" in d:
        items = d["items"] if isinstance(d["items"], list) else [d["items"]]
        s.items.schema.extend(_schema(i) for i in items)
    s.all_of.extend(_schema(i) for i in d.get("allOf") or [])
    if "properties" in d:
        s.properties.additional_properties.extend(
            pb.NamedSchema(name=k, value=_schema(v)) for k, v in d["properties"].items())
    if "additionalProperties" in d:
        ap = d["additionalProperties"]
        if isinstance(ap, bool):
            s.additional_properties.boolean = ap
        else:
            s.additional_properties.schema.CopyFrom(_schema(ap))
    if "xml" in d:
        s.xml.CopyFrom(_fill(pb.Xml(), d["xml"]))
    return s


_NON_BODY = {"header": ("header_parameter_sub_schema", pb.HeaderParameterSubSchema),
             "formData": ("form_data_parameter_sub_schema", pb.FormDataParameterSubSchema),
             "query": ("query_parameter_sub_schema", pb.QueryParameterSubSchema),
             "path": ("path_parameter_sub_schema", pb.PathParameterSubSchema)}


def _parameter(d: dict[str, Any]) -> pb.Parameter:
    if d.get("in") == "body":
        body = _fill(pb.BodyParameter(), d, skip=("schema",))
        if "schema" in d:
            body.schema.CopyFrom(_schema(d["schema"]))
        return pb.Parameter(body_parameter=body)
    field, cls = _NON_BODY[d["in"]]
    return pb.Parameter(non_body_parameter=pb.NonBodyParameter(**{field: _fill(cls(), d)}))


def _parameters_item(d: dict[str, Any]) -> pb.ParametersItem:
    if "$ref" in d:
        return pb.ParametersItem(json_reference=pb.JsonReference(_ref=d["$ref"]))
    return pb.ParametersItem(parameter=_parameter(d))


def _response(d: dict[str, Any]) -> pb.Response:
    r = _fill(pb.Response(), d, skip=("schema", "headers", "examples"))
    if "schema" in d:
        r.schema.schema.CopyFrom(_schema(d["schema"]))
    for name, h in (d.get("headers") or {}).items():
        r.headers.additional_properties.append(pb.NamedHeader(name=name, value=_fill(pb.Header(), h)))
    for name, ex in (d.get("examples") or {}).items():
        r.examples.additional_properties.append(pb.NamedAny(name=name, value=_any(ex)))
    return r


def _responses(d: dict[str, Any]) -> pb.Responses:
    out = pb.Responses(vendor_extension=_extensions(d))
    for code, r in d.items():
        if code.startswith("x-"):
            continue
        value = (pb.ResponseValue(json_reference=pb.JsonReference(_ref=r["$ref"])) if "$ref" in r
                 else pb.ResponseValue(response=_response(r)))
        out.response_code.append(pb.NamedResponseValue(name=code, value=value))
    return out


def _security(reqs: list[dict[str, list[str]]]) -> list[pb.SecurityRequirement]:
    return [pb.SecurityRequirement(additional_properties=[
        pb.NamedStringArray(name=k, value=pb.StringArray(value=v)) for k, v in req.items()]) for req in reqs]


def _operation(d: dict[str, Any]) -> pb.Operation:
    op = _fill(pb.Operation(), d, skip=("parameters", "responses", "security"))
    op.parameters.extend(_parameters_item(p) for p in d.get("parameters") or [])
    if "responses" in d:
        op.responses.CopyFrom(_responses(d["responses"]))
    op.security.extend(_security(d.get("security") or []))
    return op


def _path_item(d: dict[str, Any]) -> pb.PathItem:
    item = _fill(pb.PathItem(), d, skip=("get", "put", "post", "delete", "options", "head", "patch", "parameters"))
    for method in ("get", "put", "post", "delete", "options", "head", "patch"):
        if method in d:
            getattr(item, method).CopyFrom(_operation(d[method]))
    item.parameters.extend(_parameters_item(p) for p in d.get("parameters") or [])
    return item


_SECURITY = {"basic": ("basic_authentication_security", pb.BasicAuthenticationSecurity),
             "apiKey": ("api_key_security", pb.ApiKeySecurity)}
_OAUTH2 = {"implicit": ("oauth2_implicit_security", pb.Oauth2ImplicitSecurity),
           "password": ("oauth2_password_security", pb.Oauth2PasswordSecurity),
           "application": ("oauth2_application_security", pb.Oauth2ApplicationSecurity),
           "accessCode": ("oauth2_access_code_security", pb.Oauth2AccessCodeSecurity)}


def _security_definition(d: dict[str, Any]) -> pb.SecurityDefinitionsItem:
    field, cls = _OAUTH2[d.get("flow", "")] if d.get("type") == "oauth2" else _SECURITY[d["type"]]
    msg = _fill(cls(), d, skip=("scopes",))
    if "scopes" in d:
        msg.scopes.additional_properties.extend(pb.NamedString(name=k, value=v) for k, v in d["scopes"].items())
    return pb.SecurityDefinitionsItem(**{field: msg})


def to_document(doc: dict[str, Any]) -> pb.Document:
    """The gnostic Document for a Swagger 2.0 dict."""
    out = _fill(pb.Document(), doc, skip=("info", "paths", "definitions", "parameters", "responses", "security",
                                          "securityDefinitions", "tags"))
    if "info" in doc:
        info = _fill(pb.Info(), doc["info"], skip=("contact", "license"))
        if "contact" in doc["info"]:
            info.contact.CopyFrom(_fill(pb.Contact(), doc["info"]["contact"]))
        if "license" in doc["info"]:
            info.license.CopyFrom(_fill(pb.License(), doc["info"]["license"]))
        out.info.CopyFrom(info)
    paths = doc.get("paths") or {}
    out.paths.vendor_extension.extend(_extensions(paths))
    out.paths.path.extend(pb.NamedPathItem(name=p, value=_path_item(item))
                          for p, item in paths.items() if not p.startswith("x-"))
    out.definitions.additional_properties.extend(
        pb.NamedSchema(name=k, value=_schema(v)) for k, v in (doc.get("definitions") or {}).items())
    if doc.get("parameters"):
        out.parameters.additional_properties.extend(
            pb.NamedParameter(name=k, value=_parameter(v)) for k, v in doc["parameters"].items())
    if doc.get("responses"):
        out.responses.additional_properties.extend(
            pb.NamedResponse(name=k, value=_response(v)) for k, v in doc["responses"].items())
    out.security.extend(_security(doc.get("security") or []))
    for name, sd in (doc.get("securityDefinitions") or {}).items():
        out.security_definitions.additional_properties.append(
            pb.NamedSecurityDefinitionsItem(name=name, value=_security_definition(sd)))
    out.tags.extend(_fill(pb.Tag(), t) for t in doc.get("tags") or [])
    return out


def document_bytes(doc: dict[str, Any]) -> bytes:
    return to_document(doc).SerializeToString(deterministic=True)
