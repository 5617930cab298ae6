"""CEL in admission: the variables an expression sees, and matchConditions, as upstream evaluates them.

Upstream's ``apiserver/pkg/admission/plugin/cel`` (the activation: ``object``,
``oldObject``, ``request``, ``params``, ``namespaceObject``, ``variables``)
and ``webhook/matchconditions`` (every condition evaluated; any false →
no match; otherwise any error → the failure policy decides). Used by the
webhook plugins (kubepy.api.webhookadmission) and ValidatingAdmissionPolicy
(kubepy.api.policyadmission). Compiled programs are cached by their text.
Pure apart from that cache: no HTTP, no store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubepy.api import webhookrules
from kubepy.api.admission import CREATE, DELETE, Attributes
from kubepy.kinds import cel

__all__ = ["program", "request_of", "activation", "MatchResult", "match", "evaluation_error"]

_PROGRAMS: dict[str, cel.Program] = {}
_MAX_CACHED = 4096


def program(text: str) -> cel.Program:
    """The compiled ``text`` (validation made sure it compiles; CELCompileError if it no longer does)."""
    got = _PROGRAMS.get(text)
    if got is None:
        if len(_PROGRAMS) >= _MAX_CACHED:
            _PROGRAMS.clear()
        got = _PROGRAMS[text] = cel.compile_expression(text)
    return got


def request_of(a: Attributes) -> dict[str, Any]:
    """The ``request`` variable: the AdmissionRequest without its objects (upstream's CreateAdmissionRequest)."""
    review = webhookrules.admission_review(
        version="v1", uid=a.uid, res=a.res, subresource=a.subresource or "", operation=a.operation,
        namespace=a.namespace, name=a.name, obj=None, old=None, dry_run=a.dry_run, user=a.user)
    req = review["request"]
    req.pop("object", None)
    req.pop("oldObject", None)
    return req


def activation(a: Attributes, *, request: dict[str, Any] | None = None, params: Any = None,
               namespace_object: dict[str, Any] | None = None) -> dict[str, Any]:
    """The variables every admission expression may use (``variables`` is added by the policy plugin)."""
    return {
        "object": cel.to_cel(a.obj if a.operation != DELETE else None),
        "oldObject": cel.to_cel(a.old if a.operation != CREATE else None),
        "request": cel.to_cel(request if request is not None else request_of(a)),
        "params": cel.to_cel(params),
        "namespaceObject": cel.to_cel(namespace_object),
    }


def evaluation_error(text: str, e: Exception) -> str:
    """Upstream's wording of an expression that failed at run time."""
    return f"expression '{text}' resulted in error: {e}"


@dataclass(frozen=True)
class MatchResult:
    matches: bool
    error: str = ""  # set only when the conditions errored, none was false and the policy is Fail
    failed_condition: str = ""


def match(conditions: list[dict[str, Any]], variables: dict[str, Any], *, failure_policy: str) -> MatchResult:
    """Upstream's matchconditions.Matcher.Match."""
    errors: list[str] = []
    for cond in conditions:
        text = str(cond.get("expression") or "")
        try:
            value = program(text).evaluate(variables)
        except (cel.CELEvalError, cel.CELCompileError) as e:
            errors.append(evaluation_error(text, e))
            continue
        verdict = cel.as_bool(value)
        if verdict is None:
            errors.append(evaluation_error(text, ValueError(f"expected a bool, got {type(value).__name__}")))
        elif not verdict:
            return MatchResult(False, failed_condition=str(cond.get("name") or ""))
    if errors:
        if failure_policy == "Ignore":
            return MatchResult(False)
        return MatchResult(False, error=errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
    return MatchResult(True)
