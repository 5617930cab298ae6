"""ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1): CEL validations the API server runs itself.

Upstream's ``pkg/registry/admissionregistration/validatingadmissionpolicy``
(defaults, validation in the words of ``pkg/apis/admissionregistration/validation``,
the status subresource, the printer's Validations and ParamKind columns).
Every expression must compile (kubepy.kinds.cel) against the variables a
policy's expressions see: ``object``, ``oldObject``, ``request``, ``params``,
``namespaceObject``, ``authorizer`` and ``variables.<name>`` for the names
the policy declares. ``matchConstraints`` (shared with the
binding's ``matchResources``) is checked here as well.

Enforced by kubepy.api.policyadmission for every binding
(validatingadmissionpolicybinding) that names the policy.
"""

from __future__ import annotations

import datetime as dt
import re

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.kinds.admissionregistration import webhooks

FAILURE_POLICIES = ("Fail", "Ignore")
REASONS = ("Forbidden", "Invalid", "RequestEntityTooLarge", "Unauthorized")
POLICY_VARIABLES = ("object", "oldObject", "request", "params", "namespaceObject", "variables", "authorizer")
MAX_MESSAGE_LENGTH = 1024  # upstream's validation message limit
_CEL_IDENT = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
_VARIABLE_REF = re.compile(r"\bvariables\.([_a-zA-Z][_a-zA-Z0-9]*)")


def default_match_resources(mr: object) -> None:
    if not isinstance(mr, dict):
        return
    mr.setdefault("matchPolicy", "Equivalent")
    if mr.get("namespaceSelector") is None:
        mr["namespaceSelector"] = {}
    if mr.get("objectSelector") is None:
        mr["objectSelector"] = {}
    for key in ("resourceRules", "excludeResourceRules"):
        for rule in v._l(mr.get(key)):
            if isinstance(rule, dict):
                rule.setdefault("scope", "*")


def _default(obj: dict, old: dict | None) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("failurePolicy", "Fail")
    default_match_resources(spec.get("matchConstraints"))


def _prepare_create(obj: dict) -> None:
    obj.pop("status", None)


def validate_match_resources(mr: object, path: str, errs: v.Errs) -> None:
    """Upstream's validateMatchResources (a policy's matchConstraints, a binding's matchResources)."""
    if not isinstance(mr, dict):
        errs.invalid(path, mr, "must be an object")
        return
    errs.enum(f"{path}.matchPolicy", mr.get("matchPolicy"), webhooks.MATCH_POLICIES, required=False)
    for sel in ("namespaceSelector", "objectSelector"):
        if isinstance(mr.get(sel), dict):
            v.validate_label_selector(mr[sel], f"{path}.{sel}", errs)
        elif mr.get(sel) is not None:
            errs.invalid(f"{path}.{sel}", mr[sel], "must be a label selector")
    for key in ("resourceRules", "excludeResourceRules"):
        rules = mr.get(key)
        if rules is not None and not isinstance(rules, list):
            errs.invalid(f"{path}.{key}", rules, "must be a list")
            continue
        for i, rule in enumerate(rules or []):
            rp = f"{path}.{key}[{i}]"
            if not isinstance(rule, dict):
                errs.invalid(rp, rule, "must be an object")
                continue
            webhooks.validate_rule(rule, rp, errs, sent_to="admission policies")
            for j, name in enumerate(v._l(rule.get("resourceNames"))):
                if not isinstance(name, str) or not name:
                    errs.required(f"{rp}.resourceNames[{j}]")


def _validate_expression(expr: object, path: str, errs: v.Errs, declared: list[str], *,
                         required_detail: str = "expression is not specified") -> None:
    if not isinstance(expr, str) or not expr.strip():
        if expr is not None and not isinstance(expr, str):
            errs.invalid(path, expr, "must be a string")
        else:
            errs.required(path, required_detail)
        return
    before = len(errs)
    webhooks.validate_expression(expr, path, errs, variables=POLICY_VARIABLES)
    if len(errs) > before:
        return
    for m in _VARIABLE_REF.finditer(expr):
        if m.group(1) not in declared:
            errs.invalid(path, expr, f"compilation failed: ERROR: <input>:1:{m.start() + 10}: undefined field "
                                     f"'{m.group(1)}'")
            return


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    errs.enum("spec.failurePolicy", spec.get("failurePolicy"), FAILURE_POLICIES)
    pk = spec.get("paramKind")
    if pk is not None:
        if not isinstance(pk, dict):
            errs.invalid("spec.paramKind", pk, "must be an object")
        else:
            api_version = pk.get("apiVersion")
            if not api_version:
                errs.required("spec.paramKind.apiVersion")
            elif not isinstance(api_version, str) or api_version.count("/") > 1:
                errs.invalid("spec.paramKind.apiVersion", api_version, "must be a valid group/version")
            if not pk.get("kind"):
                errs.required("spec.paramKind.kind")
    mc = spec.get("matchConstraints")
    if mc is None:
        errs.required("spec.matchConstraints")
    else:
        validate_match_resources(mc, "spec.matchConstraints", errs)
        if isinstance(mc, dict) and not mc.get("resourceRules"):
            errs.required("spec.matchConstraints.resourceRules")
    declared: list[str] = []
    variables = spec.get("variables")
    for i, var in enumerate(v._l(variables)):
        vp = f"spec.variables[{i}]"
        var = v._d(var)
        name = var.get("name")
        if not name:
            errs.required(f"{vp}.name", "name is not specified")
        elif not isinstance(name, str) or not _CEL_IDENT.fullmatch(name):
            errs.invalid(f"{vp}.name", name, "name is not a valid CEL identifier")
        elif name in declared:  # a list-map keyed by name
            errs.duplicate(f"{vp}.name", name)
        _validate_expression(var.get("expression"), f"{vp}.expression", errs, declared)
        if isinstance(name, str) and name and name not in declared:
            declared.append(name)  # later variables and every validation may use it
    if spec.get("matchConditions") is not None:
        webhooks.validate_match_conditions(spec["matchConditions"], "spec.matchConditions", errs,
                                           variables=POLICY_VARIABLES)
    validations, audits = spec.get("validations"), spec.get("auditAnnotations")
    if not validations and not audits:
        detail = "validations or auditAnnotations must contain at least one item"
        errs.required("spec.validations", detail)
        errs.required("spec.auditAnnotations", detail)
    for i, val in enumerate(v._l(validations)):
        _validate_validation(v._d(val), f"spec.validations[{i}]", errs, declared)
    keys: set[str] = set()
    for i, ann in enumerate(v._l(audits)):
        ap = f"spec.auditAnnotations[{i}]"
        ann = v._d(ann)
        key = ann.get("key")
        if not key:
            errs.required(f"{ap}.key", "key is not specified")
        elif isinstance(key, str):
            errs.each(f"{ap}.key", key, v.is_qualified_name(f"{obj.get('metadata', {}).get('name', '')}/{key}"))
            if key in keys:
                errs.duplicate(f"{ap}.key", key)
            keys.add(key)
        _validate_expression(ann.get("valueExpression"), f"{ap}.valueExpression", errs, declared,
                             required_detail="valueExpression is not specified")


def _validate_validation(val: dict, path: str, errs: v.Errs, declared: list[str]) -> None:
    _validate_expression(val.get("expression"), f"{path}.expression", errs, declared)
    message, message_expr = val.get("message"), val.get("messageExpression")
    if message_expr is not None:
        if not isinstance(message_expr, str) or not message_expr.strip():
            errs.required(f"{path}.messageExpression", "messageExpression must be non-empty if specified")
        else:
            _validate_expression(message_expr, f"{path}.messageExpression", errs, declared)
    if isinstance(message, str) and message:
        trimmed = message.strip()
        if not trimmed:
            errs.invalid(f"{path}.message", message, "message must be non-empty if specified")
        elif "\n" in trimmed:
            errs.invalid(f"{path}.message", message, "message must not contain line breaks")
        elif len(trimmed) > MAX_MESSAGE_LENGTH:
            errs.too_long(f"{path}.message", MAX_MESSAGE_LENGTH)
    reason = val.get("reason")
    if reason is not None and reason not in REASONS:
        errs.not_supported(f"{path}.reason", reason, REASONS)


def _cells(obj: dict, now: dt.datetime) -> list:
    spec = v._d(obj.get("spec"))
    pk = spec.get("paramKind")
    param_kind = f"{v._d(pk).get('apiVersion', '')}/{v._d(pk).get('kind', '')}" if pk else "<unset>"
    return [printers.name_cell(obj), len(v._l(spec.get("validations"))), param_kind, printers.age_cell(obj, now)]


_COLUMNS = (
    printers.name_column(),
    printers.column("Validations", "Validations indicates the number of validation rules defined in this "
                    "configuration", type_="integer"),
    printers.column("ParamKind", "ParamKind specifies the kind of resources used to parameterize this policy"),
    printers.age_column(),
)

# generated.proto of admissionregistration/v1, in kubepy.api.protobuf's form (the binding uses these too;
# RuleWithOperations and MatchCondition come with the webhook configurations).
PROTO_POLICY_COMMON = """
ParamKind
    1 apiVersion                       *string
    2 kind                             *string
MatchResources
    1 namespaceSelector                *LabelSelector
    2 objectSelector                   *LabelSelector
    3 resourceRules                    []NamedRuleWithOperations
    4 excludeResourceRules             []NamedRuleWithOperations
    7 matchPolicy                      *string
NamedRuleWithOperations
    1 resourceNames                    []string
    2 (inline)                         RuleWithOperations
"""

VALIDATINGADMISSIONPOLICY = register(Kind(
    "admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies",
    namespaced=False, categories=("api-extensions",), subresources=("status",), has_status=True,
    has_spec_generation=True, model="V1ValidatingAdmissionPolicy", proto="ValidatingAdmissionPolicy",
    proto_schema=PROTO_POLICY_COMMON + """
ValidatingAdmissionPolicy
    1 metadata                         ObjectMeta
    2 spec                             ValidatingAdmissionPolicySpec
    3 status                           ValidatingAdmissionPolicyStatus
ValidatingAdmissionPolicySpec
    1 paramKind                        *ParamKind
    2 matchConstraints                 *MatchResources
    3 validations                      []Validation
    4 failurePolicy                    *string
    5 auditAnnotations                 []AuditAnnotation
    6 matchConditions                  []MatchCondition
    7 variables                        []Variable
Validation
    1 expression                       string
    2 message                          string
    3 reason                           *string
    4 messageExpression                string
AuditAnnotation
    1 key                              string
    2 valueExpression                  string
Variable
    1 name                             string
    2 expression                       string
ValidatingAdmissionPolicyStatus
    1 observedGeneration               int64
    2 typeChecking                     *TypeChecking
    3 conditions                       []Condition
TypeChecking
    1 expressionWarnings               []ExpressionWarning
ExpressionWarning
    2 fieldRef                         string
    3 warning                          string
""",
    api_types=("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyList", "ValidatingAdmissionPolicySpec",
               "ValidatingAdmissionPolicyStatus", "ParamKind", "MatchResources", "NamedRuleWithOperations",
               "Validation", "AuditAnnotation", "Variable", "TypeChecking", "ExpressionWarning", "MatchCondition"),
    strategy=Strategy(default=_default, validate=_validate, prepare_create=_prepare_create),
    printer=Printer(_COLUMNS, _cells),
))
