"""CEL in admission: the variables an expression sees, and matchConditions, as upstream evaluates them.

Upstream's ``apiserver/pkg/admission/plugin/cel`` (the activation: ``object``,
``oldObject``, ``request``, ``params``, ``namespaceObject``, ``variables``,
``authorizer``), ``apiserver/pkg/cel/library/authz.go`` (``authorizer.group('apps')
.resource('deployments').namespace('x').name('y').check('create').allowed()``,
``authorizer.serviceAccount(ns, name)``, ``authorizer.path('/healthz')``,
``authorizer.requestResource``; asked of the server's own authorizer chain
for the requesting user) and ``webhook/matchconditions`` (every condition evaluated; any false →
no match; otherwise any error → the failure policy decides). Used by the
webhook plugins (kubepy.api.webhookadmission) and ValidatingAdmissionPolicy
(kubepy.api.policyadmission). Compiled programs are cached by their text.
Pure apart from that cache: no HTTP, no store.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import celpy

from kubepy.api import authz, webhookrules
from kubepy.api.admission import CREATE, DELETE, Attributes
from kubepy.kinds import cel

__all__ = ["program", "request_of", "activation", "MatchResult", "match", "evaluation_error", "authorizer_value"]


# -- the authorizer library ----------------------------------------------------------------------
class _Authorizer(celpy.celtypes.MapType):
    """The ``authorizer`` variable: a map (for ``.requestResource``) that also carries who asks and who decides."""

    def __init__(self, decider: authz.Authorizer, user: Any, request_resource: _ResourceCheck) -> None:
        super().__init__({celpy.celtypes.StringType("requestResource"): request_resource})
        self.decider, self.user = decider, user


@dataclass(frozen=True)
class _ResourceCheck:
    decider: Any
    user: Any
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


@dataclass(frozen=True)
class _PathCheck:
    decider: Any
    user: Any
    path: str


@dataclass(frozen=True)
class _Decision:
    decision: authz.Decision | None
    error: str = ""


def _check(target: Any, verb: Any) -> _Decision:
    if isinstance(target, _ResourceCheck):
        attrs = authz.Attributes(user=target.user, verb=str(verb), api_group=target.group, resource=target.resource,
                                 subresource=target.subresource, namespace=target.namespace, name=target.name)
    elif isinstance(target, _PathCheck):
        attrs = authz.Attributes(user=target.user, verb=str(verb), is_resource=False, path=target.path)
    else:
        raise TypeError("check() needs a resource or path check")
    try:
        return _Decision(target.decider.authorize(attrs))
    except Exception as e:  # an authorizer failure is the expression's error, as upstream's errored()
        return _Decision(None, str(e))


def _set(field: str) -> Any:
    def method(target: Any, value: Any) -> Any:
        if not isinstance(target, _ResourceCheck):
            raise TypeError(f"{field}() needs a resource check")
        return dataclasses.replace(target, **{field: str(value)})
    return method


def _start(target: Any) -> _Authorizer:
    if not isinstance(target, _Authorizer):
        raise TypeError("needs the authorizer")
    return target


_AUTHZ_FUNCTIONS: dict[str, Any] = {
    "group": lambda a, g: _ResourceCheck(_start(a).decider, a.user, group=str(g)),
    "serviceAccount": lambda a, ns, n: _ResourceCheck(_start(a).decider, a.user, resource="serviceaccounts",
                                                      namespace=str(ns), name=str(n)),
    "path": lambda a, p: _PathCheck(_start(a).decider, a.user, str(p)),
    "resource": _set("resource"),
    "subresource": _set("subresource"),
    "namespace": _set("namespace"),
    "name": _set("name"),
    "check": _check,
    "allowed": lambda d: celpy.celtypes.BoolType(d.decision is not None and d.decision.allowed),
    "reason": lambda d: celpy.celtypes.StringType(d.decision.reason if d.decision is not None else ""),
    "errored": lambda d: celpy.celtypes.BoolType(bool(d.error)),
    "error": lambda d: celpy.celtypes.StringType(d.error),
}


def authorizer_value(decider: authz.Authorizer, a: Attributes) -> _Authorizer:
    """The ``authorizer`` variable for the user of request ``a``."""
    request_resource = _ResourceCheck(decider, a.user, group=a.res.group, resource=a.res.plural,
                                      subresource=a.subresource or "", namespace=a.namespace or "", name=a.name)
    return _Authorizer(decider, a.user, request_resource)

_PROGRAMS: dict[str, cel.Program] = {}
_MAX_CACHED = 4096


def program(text: str) -> cel.Program:
    """The compiled ``text`` (validation made sure it compiles; CELCompileError if it no longer does)."""
    got = _PROGRAMS.get(text)
    if got is None:
        if len(_PROGRAMS) >= _MAX_CACHED:
            _PROGRAMS.clear()
        got = _PROGRAMS[text] = cel.compile_expression(text, functions=_AUTHZ_FUNCTIONS)
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
               namespace_object: dict[str, Any] | None = None,
               authorizer: authz.Authorizer | None = None) -> dict[str, Any]:
    """The variables every admission expression may use (``variables`` is added by the policy plugin).
    Without an authorizer (a server still starting) ``authorizer`` is absent: using it is an evaluation error."""
    out = {
        "object": cel.to_cel(a.obj if a.operation != DELETE else None),
        "oldObject": cel.to_cel(a.old if a.operation != CREATE else None),
        "request": cel.to_cel(request if request is not None else request_of(a)),
        "params": cel.to_cel(params),
        "namespaceObject": cel.to_cel(namespace_object),
    }
    if authorizer is not None:
        out["authorizer"] = authorizer_value(authorizer, a)
    return out


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
