"""ValidatingAdmissionPolicy's decisions: which requests a policy or binding matches, and what its CEL says.

Pure functions (upstream's ``policy/generic`` matcher and ``policy/validating``
validator): ``matches_resources`` for a policy's ``matchConstraints`` and a
binding's ``matchResources``; ``evaluate`` for one policy against one request
and one param: its ``matchConditions``, then its ``variables`` in order (each
sees the ones before it), then its ``validations`` (message from
``messageExpression``, else ``message``, else ``failed expression: …``) and
``auditAnnotations``, with the policy's failurePolicy deciding what an
expression that fails at run time does. The plugin around them
(kubepy.api.policyadmission) finds the policies, bindings and params and turns
decisions into answers. No HTTP, no store.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import celpy

from kubepy.api import admissioncel, webhookrules
from kubepy.api.admission import DELETE, Attributes
from kubepy.kinds import cel

log = logging.getLogger(__name__)

__all__ = ["Decision", "matches_resources", "evaluate"]

MAX_MESSAGE_EXPRESSION_BYTES = 5 * 1024  # upstream's MaxEvaluatedMessageExpressionSizeBytes
MAX_AUDIT_ANNOTATION_VALUE = 10 * 1024


@dataclass
class Decision:
    deny: bool
    message: str = ""
    reason: str = ""
    index: int = 0  # the validation's index, for the Audit annotation


def _matches_rules(rules: list[dict[str, Any]], a: Attributes) -> bool:
    for rule in rules:
        if not webhookrules.rules_match({"rules": [rule]}, operation=a.operation, res=a.res,
                                        subresource=a.subresource or ""):
            continue
        names = rule.get("resourceNames") or []
        if names and a.name not in names:
            continue
        return True
    return False


def matches_resources(mr: dict[str, Any], a: Attributes, *, namespace_labels: dict[str, str] | None,
                      require_rules: bool) -> bool:
    """Upstream's generic Matcher.Matches: namespace and object selectors, then exclusions, then rules.
    A binding's matchResources without resourceRules does not constrain resources (``require_rules`` False)."""
    if not webhookrules.namespace_selector_matches(mr, res=a.res, namespace=a.namespace, obj=a.obj,
                                                   namespace_labels=namespace_labels):
        return False
    if not webhookrules.object_selector_matches(mr, a.obj if a.operation != DELETE else None, a.old):
        return False
    if _matches_rules(mr.get("excludeResourceRules") or [], a):
        return False
    rules = mr.get("resourceRules") or []
    if not rules:
        return not require_rules
    return _matches_rules(rules, a)


def _message_of(validation: dict[str, Any], variables: dict[str, Any]) -> str:
    """messageExpression's string if it gives a usable one, else message, else ``failed expression: …``."""
    text = validation.get("messageExpression")
    if text:
        try:
            value = admissioncel.program(text).evaluate(variables)
        except (cel.CELEvalError, cel.CELCompileError) as e:
            log.info("messageExpression failed expression=%r err=%s", text, e)
            value = None
        if isinstance(value, str):
            value = value.strip()
            if value and "\n" not in value and len(value.encode()) <= MAX_MESSAGE_EXPRESSION_BYTES:
                return value
    if (validation.get("message") or "").strip():
        return str(validation["message"]).strip()
    return f"failed expression: {str(validation.get('expression') or '').strip()}"


def evaluate(spec: dict[str, Any], variables: dict[str, Any]) -> tuple[list[Decision], dict[str, str]]:
    """One policy against one request and one param: the denials, and the audit annotations to publish.

    ``variables`` holds object, oldObject, request, params, namespaceObject; ``variables`` (the policy's
    own) is added here. Pure apart from the program cache."""
    fail = (spec.get("failurePolicy") or "Fail") != "Ignore"
    conditions = spec.get("matchConditions") or []
    if conditions:
        result = admissioncel.match(conditions, variables, failure_policy="Fail" if fail else "Ignore")
        if result.error:
            return [Decision(True, result.error)], {}
        if not result.matches:
            return [], {}
    composed: dict[str, Any] = {}
    failed: dict[str, str] = {}
    scope = dict(variables)
    for var in spec.get("variables") or []:
        name, text = str(var.get("name") or ""), str(var.get("expression") or "")
        scope["variables"] = _cel_map(composed)  # the ones before it
        try:
            _uses_failed_variable(text, failed)
            composed[name] = admissioncel.program(text).evaluate(scope)
        except (cel.CELEvalError, cel.CELCompileError) as e:
            failed[name] = str(e)
    scope["variables"] = _cel_map(composed)
    decisions: list[Decision] = []
    for i, validation in enumerate(spec.get("validations") or []):
        text = str(validation.get("expression") or "")
        try:
            _uses_failed_variable(text, failed)
            verdict = cel.as_bool(admissioncel.program(text).evaluate(scope))
            if verdict is None:
                raise cel.CELEvalError("expected a bool result")
        except (cel.CELEvalError, cel.CELCompileError) as e:
            if fail:
                decisions.append(Decision(True, admissioncel.evaluation_error(text, e), index=i))
            continue
        if not verdict:
            decisions.append(Decision(True, _message_of(validation, scope), str(validation.get("reason") or
                                                                                  "Invalid"), index=i))
    annotations: dict[str, str] = {}
    for ann in spec.get("auditAnnotations") or []:
        text = str(ann.get("valueExpression") or "")
        try:
            _uses_failed_variable(text, failed)
            value = admissioncel.program(text).evaluate(scope)
        except (cel.CELEvalError, cel.CELCompileError) as e:
            if fail:
                decisions.append(Decision(True, admissioncel.evaluation_error(text, e)))
            continue
        if isinstance(value, str):
            annotations[str(ann.get("key"))] = value[:MAX_AUDIT_ANNOTATION_VALUE]
        elif value is not None:  # null: no annotation
            if fail:
                decisions.append(Decision(True, admissioncel.evaluation_error(
                    text, ValueError("valueExpression must evaluate to a string or null"))))
    return decisions, annotations


def _cel_map(values: dict[str, Any]) -> Any:
    """The ``variables`` map (its values are CEL values already)."""
    return celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in values.items()})


def _uses_failed_variable(text: str, failed: dict[str, str]) -> None:
    """Upstream evaluates variables lazily: an expression using one that failed fails with its error."""
    for name, err in failed.items():
        if re.search(rf"\bvariables\.{re.escape(name)}\b", text):
            raise cel.CELEvalError(f'composited variable "{name}" fails to evaluate: {err}')
