"""ValidatingAdmissionPolicyBinding (admissionregistration.k8s.io/v1): where a policy applies, with what params.

Upstream's ``pkg/registry/admissionregistration/validatingadmissionpolicybinding``:
the policy's name, an optional ``paramRef`` (a name or a selector, and what
to do when nothing is found), optional ``matchResources`` narrowing the
policy's own constraints, and the ``validationActions`` a failed validation
takes (Deny, Warn, Audit; Deny and Warn together are refused, as upstream
refuses them). Validated in upstream's words; printed with upstream's
PolicyName and ParamRef columns. Enforced by kubepy.api.policyadmission.
"""

from __future__ import annotations

import datetime as dt

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.kinds.admissionregistration.validatingadmissionpolicy import (
    default_match_resources,
    validate_match_resources,
)

VALIDATION_ACTIONS = ("Audit", "Deny", "Warn")
PARAMETER_NOT_FOUND_ACTIONS = ("Allow", "Deny")
DENY_AND_WARN = ("must not contain both Deny and Warn (repeating the same validation failure information in the API "
                 "response and headers serves no purpose)")


def _default(obj: dict, old: dict | None) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        default_match_resources(spec.get("matchResources"))


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    policy = spec.get("policyName")
    if not policy:
        errs.required("spec.policyName")
    elif not isinstance(policy, str):
        errs.invalid("spec.policyName", policy, "must be a string")
    else:
        errs.each("spec.policyName", policy, v.is_dns1123_subdomain(policy))
    if spec.get("paramRef") is not None:
        _validate_param_ref(spec["paramRef"], "spec.paramRef", errs)
    if spec.get("matchResources") is not None:
        validate_match_resources(spec["matchResources"], "spec.matchResources", errs)
    _validate_actions(spec.get("validationActions"), "spec.validationActions", errs)


def _validate_param_ref(ref: object, path: str, errs: v.Errs) -> None:
    if not isinstance(ref, dict):
        errs.invalid(path, ref, "must be an object")
        return
    name, selector, namespace = ref.get("name"), ref.get("selector"), ref.get("namespace")
    if name and selector is not None:
        errs.forbidden(f"{path}.name", "name and selector are mutually exclusive")
        errs.forbidden(f"{path}.selector", "name and selector are mutually exclusive")
    elif not name and selector is None:
        errs.required(path, "one of name or selector must be specified")
    if name:
        if not isinstance(name, str):
            errs.invalid(f"{path}.name", name, "must be a string")
        elif name in (".", "..") or "/" in name or "%" in name:
            errs.invalid(f"{path}.name", name, "may not be '.' or '..' or contain '/' or '%'")
    if namespace:
        if not isinstance(namespace, str):
            errs.invalid(f"{path}.namespace", namespace, "must be a string")
        else:
            errs.each(f"{path}.namespace", namespace, v.is_dns1123_label(namespace))
    if selector is not None:
        if isinstance(selector, dict):
            v.validate_label_selector(selector, f"{path}.selector", errs)
        else:
            errs.invalid(f"{path}.selector", selector, "must be a label selector")
    action = ref.get("parameterNotFoundAction")
    if action is None:
        errs.required(f"{path}.parameterNotFoundAction")
    elif action not in PARAMETER_NOT_FOUND_ACTIONS:
        errs.not_supported(f"{path}.parameterNotFoundAction", action, PARAMETER_NOT_FOUND_ACTIONS)


def _validate_actions(actions: object, path: str, errs: v.Errs) -> None:
    if not actions:
        errs.required(path, "at least one validation action is required")
        return
    if not isinstance(actions, list):
        errs.invalid(path, actions, "must be a list")
        return
    seen: set[str] = set()
    for i, action in enumerate(actions):
        if action not in VALIDATION_ACTIONS:
            errs.not_supported(f"{path}[{i}]", action, VALIDATION_ACTIONS)
        elif action in seen:
            errs.duplicate(f"{path}[{i}]", action)
        if isinstance(action, str):
            seen.add(action)
    if {"Deny", "Warn"} <= seen:
        errs.invalid(path, actions, DENY_AND_WARN)


def _param_ref_cell(ref: object) -> str:
    """Upstream's printer: ns/name, */name when no namespace is given, else the selector."""
    if not isinstance(ref, dict):
        return "<unset>"
    if ref.get("name"):
        return f"{ref['namespace']}/{ref['name']}" if ref.get("namespace") else f"*/{ref['name']}"
    if ref.get("selector") is not None:
        return printers.format_label_selector(ref["selector"])
    return "<unset>"


def _cells(obj: dict, now: dt.datetime) -> list:
    spec = v._d(obj.get("spec"))
    return [printers.name_cell(obj), spec.get("policyName", ""), _param_ref_cell(spec.get("paramRef")),
            printers.age_cell(obj, now)]


_COLUMNS = (
    printers.name_column(),
    printers.column("PolicyName", "PolicyName indicates the policy definition which the policy binding binded to"),
    printers.column("ParamRef", "ParamRef indicates the param resource which sets the configration param"),
    printers.age_column(),
)

VALIDATINGADMISSIONPOLICYBINDING = register(Kind(
    "admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings",
    namespaced=False, categories=("api-extensions",), has_spec_generation=True,
    model="V1ValidatingAdmissionPolicyBinding", proto="ValidatingAdmissionPolicyBinding",
    proto_schema="""
ValidatingAdmissionPolicyBinding
    1 metadata                         ObjectMeta
    2 spec                             ValidatingAdmissionPolicyBindingSpec
ValidatingAdmissionPolicyBindingSpec
    1 policyName                       string
    2 paramRef                         *ParamRef
    3 matchResources                   *MatchResources
    4 validationActions                []string
ParamRef
    1 name                             string
    2 namespace                        string
    3 selector                         *LabelSelector
    4 parameterNotFoundAction          *string
""",
    api_types=("ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicyBindingList",
               "ValidatingAdmissionPolicyBindingSpec", "ParamRef"),
    strategy=Strategy(default=_default, validate=_validate),
    printer=Printer(_COLUMNS, _cells),
))
