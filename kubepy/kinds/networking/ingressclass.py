"""IngressClass (networking.k8s.io/v1, cluster-scoped): which controller serves Ingresses of a class.

The class annotated ``ingressclass.kubernetes.io/is-default-class: "true"``
is the one an Ingress created without a class gets (admission:
``kubepy.api.defaultingressclass``).  kubepy's own controller is
``kubepy.io/ingress`` (class ``kubepy``, made by ``kubepy up`` and the
Vagrant provisioning).

Defaults as upstream's SetDefaults_IngressClass (``parameters.scope``
Cluster); validation as ValidateIngressClass/Update: ``spec.controller`` a
domain-prefixed path of at most 250 characters that never changes,
``parameters`` naming a kind and a name, Cluster scope without a namespace
and Namespace scope with one.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.kinds.networking.ingress import validate_typed_local_object_reference

__all__ = ["DEFAULT_CLASS_ANNOTATION", "INGRESSCLASS", "is_default_class"]

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
MAX_CONTROLLER_LEN = 250
SCOPES = ("Cluster", "Namespace")
_PATH_RE = re.compile(r"[A-Za-z0-9/\-._~%!$&'()*+,;=:]+")


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def is_default_class(obj: dict) -> bool:
    return _d(_d(obj.get("metadata")).get("annotations")).get(DEFAULT_CLASS_ANNOTATION) == "true"


def _default(obj: dict, old: dict | None) -> None:
    params = _d(obj.get("spec")).get("parameters")
    if isinstance(params, dict) and params.get("scope") is None:
        params["scope"] = "Cluster"


def _validate_controller(value: Any, errs: v.Errs) -> None:
    """apimachinery's IsDomainPrefixedPath, after the length check."""
    path = "spec.controller"
    if not value:
        errs.required(path)
        return
    value = str(value)
    if len(value) > MAX_CONTROLLER_LEN:
        errs.too_long(path, MAX_CONTROLLER_LEN)
    host, sep, rest = value.partition("/")
    if not sep or not host or not rest:
        errs.invalid(path, value, 'must be a domain-prefixed path (such as "acme.io/foo")')
        return
    errs.each(path, host, v.is_dns1123_subdomain(host))
    if not _PATH_RE.fullmatch(rest):
        errs.invalid(path, rest, f"Invalid path: {rest}")


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    spec = _d(obj.get("spec"))
    _validate_controller(spec.get("controller"), errs)
    params = spec.get("parameters")
    if params is not None:
        params = _d(params)
        validate_typed_local_object_reference(params, "spec.parameters", errs)
        scope, namespace = params.get("scope"), params.get("namespace")
        if scope is None:
            errs.required("spec.parameters.scope")
        elif scope not in SCOPES:
            errs.not_supported("spec.parameters.scope", scope, SCOPES)
        elif scope == "Namespace":
            if not namespace:
                errs.required("spec.parameters.namespace", "`parameters.scope` is set to 'Namespace'")
            else:
                errs.each("spec.parameters.namespace", namespace, v.is_dns1123_label(str(namespace)))
        elif namespace:
            errs.forbidden("spec.parameters.namespace", "`parameters.scope` is set to 'Cluster'")
    if old is not None and spec.get("controller") != _d(old.get("spec")).get("controller"):
        errs.invalid("spec.controller", spec.get("controller"), "field is immutable")


def _parameters(spec: dict) -> str:
    params = _d(spec.get("parameters"))
    if not params:
        return "<none>"
    kind = str(params.get("kind") or "")
    group = params.get("apiGroup")
    return f"{kind}.{group}/{params.get('name')}" if group else f"{kind}/{params.get('name')}"


def _cells(obj: dict, now: dt.datetime) -> list:
    spec = _d(obj.get("spec"))
    return [printers.name_cell(obj), spec.get("controller") or "", _parameters(spec), printers.age_cell(obj, now)]


_COLUMNS = (
    printers.name_column(),
    printers.column("Controller", "Controller that is responsible for handling this class"),
    printers.column("Parameters", "A reference to a resource with additional parameters"),
    printers.age_column(),
)

INGRESSCLASS = register(Kind(
    "networking.k8s.io", "v1", "IngressClass", "ingressclasses", namespaced=False,
    has_spec_generation=True, model="V1IngressClass", proto="IngressClass",
    proto_schema="""
IngressClass
    1 metadata                         ObjectMeta
    2 spec                             IngressClassSpec
IngressClassSpec
    1 controller                       string
    2 parameters                       *IngressClassParametersReference
IngressClassParametersReference
    1 apiGroup                         *string
    2 kind                             string
    3 name                             string
    4 scope                            *string
    5 namespace                        *string
""",
    api_types=("IngressClass", "IngressClassList", "IngressClassSpec", "IngressClassParametersReference"),
    strategy=Strategy(default=_default, validate=_validate),
    printer=Printer(_COLUMNS, _cells),
))
