"""Answers to the ``authorization.k8s.io/v1`` reviews (nothing is stored).

Talks to: the API server's authorizer chain and RBAC index, given by the
caller. SelfSubjectAccessReview and SelfSubjectRulesReview ask about the
caller (after impersonation, so ``kubectl auth can-i --as`` works);
SubjectAccessReview and LocalSubjectAccessReview about the user and groups
in their spec (as upstream, the review's user is taken as given: no
system:authenticated is added to it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from kubepy.api import errors
from kubepy.api.authz import ALLOW, DENY, Attributes, Authorizer, effective_groups
from kubepy.api.nodeauth import node_name_of
from kubepy.api.rbac import PolicyIndex
from kubepy.kinds import Kind
from kubepy.kinds import validation as v

GROUP = "authorization.k8s.io"
PLURALS = ("selfsubjectaccessreviews", "subjectaccessreviews", "localsubjectaccessreviews",
           "selfsubjectrulesreviews")


@dataclass(frozen=True)
class ReviewUser:
    name: str
    groups: tuple[str, ...]
    uid: str = ""
    as_given: bool = True  # a SubjectAccessReview's groups are the spec's: no system:authenticated added


def _validate(res: Kind, obj: dict[str, Any]) -> None:
    errs = v.Errs()
    res.strategy.validate(obj, None, errs)
    if errs:
        raise errors.Invalid(res.kind, (obj.get("metadata") or {}).get("name", ""), list(errs), group=GROUP)


def _attributes(user: Any, spec: dict[str, Any]) -> Attributes:
    res = spec.get("resourceAttributes")
    if isinstance(res, dict):
        return Attributes(user, str(res.get("verb") or ""), api_group=str(res.get("group") or ""),
                          api_version=str(res.get("version") or ""), resource=str(res.get("resource") or ""),
                          subresource=str(res.get("subresource") or ""), namespace=str(res.get("namespace") or ""),
                          name=str(res.get("name") or ""))
    non = spec.get("nonResourceAttributes") or {}
    return Attributes(user, str(non.get("verb") or ""), is_resource=False, path=str(non.get("path") or ""))


def _access_status(authorizer: Authorizer, attrs: Attributes) -> dict[str, Any]:
    d = authorizer.authorize(attrs)
    status: dict[str, Any] = {"allowed": d.verdict == ALLOW}
    if d.verdict == DENY:
        status["denied"] = True
    if d.reason:
        status["reason"] = d.reason
    return status


def review(res: Kind, namespace: str | None, body: dict[str, Any], caller: Any, *,
           authorizer: Authorizer, policy: PolicyIndex) -> dict[str, Any]:
    """The review with its ``status`` filled in (the 201 body)."""
    obj = copy.deepcopy(body)
    obj["apiVersion"], obj["kind"] = res.api_version, res.kind
    meta = obj.setdefault("metadata", {})
    meta.setdefault("creationTimestamp", None)
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        raise errors.BadRequest("spec must be an object")
    _validate(res, obj)
    if res.plural == "selfsubjectrulesreviews":
        obj["status"] = rules_status(caller, str(spec.get("namespace") or ""), policy)
        return obj
    if res.plural in ("subjectaccessreviews", "localsubjectaccessreviews"):
        user = ReviewUser(str(spec.get("user") or ""), tuple(spec.get("groups") or ()), str(spec.get("uid") or ""))
    else:
        user = caller
    if res.plural == "localsubjectaccessreviews":
        ra = spec.get("resourceAttributes") or {}
        if ra.get("namespace") not in (None, "", namespace):
            raise errors.BadRequest(f"spec.resourceAttributes.namespace must match namespace: {namespace}")
        spec["resourceAttributes"] = {**ra, "namespace": namespace}
    obj["status"] = _access_status(authorizer, _attributes(user, spec))
    return obj


def rules_status(user: Any, namespace: str, policy: PolicyIndex) -> dict[str, Any]:
    """SubjectRulesReviewStatus: the RBAC rules that apply in ``namespace`` (all of them for system:masters)."""
    resource_rules: list[dict[str, Any]] = []
    non_resource: list[dict[str, Any]] = []
    groups = effective_groups(user)
    if "system:masters" in groups:
        resource_rules.append({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
        non_resource.append({"verbs": ["*"], "nonResourceURLs": ["*"]})
    rules, errs = policy.rules_for(user.name, groups, namespace)
    for r in rules:
        if r.get("nonResourceURLs"):
            non_resource.append({"verbs": list(r.get("verbs") or []), "nonResourceURLs": list(r["nonResourceURLs"])})
        else:
            rr = {"verbs": list(r.get("verbs") or []), "apiGroups": list(r.get("apiGroups") or []),
                  "resources": list(r.get("resources") or [])}
            if r.get("resourceNames"):
                rr["resourceNames"] = list(r["resourceNames"])
            resource_rules.append(rr)
    status: dict[str, Any] = {"resourceRules": resource_rules, "nonResourceRules": non_resource,
                              "incomplete": False}
    if node_name_of(user) is not None:
        status["incomplete"] = True
        errs = [*errs, "node authorizer does not support user rule resolution"]
    if errs:
        status["evaluationError"] = ", ".join(errs)
    return status


def is_review(res: Kind) -> bool:
    return res.group == GROUP and res.plural in PLURALS

