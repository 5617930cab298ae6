"""``rbac.authorization.k8s.io/v1``: Role, ClusterRole, RoleBinding, ClusterRoleBinding.

What the four kinds share lives here, as upstream's
``pkg/apis/rbac/validation`` and ``pkg/printers`` hold it once: policy rule
and subject validation, the binding defaults, and the printers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubepy.kinds import printers
from kubepy.kinds import validation as v

GROUP = "rbac.authorization.k8s.io"

# pkg/apis/rbac/v1 generated.proto (field numbers as upstream).
PROTO_COMMON = """
PolicyRule
    1 verbs                            []string
    2 apiGroups                        []string
    3 resources                        []string
    4 resourceNames                    []string
    5 nonResourceURLs                  []string
Subject
    1 kind                             string
    2 apiGroup                         string
    3 name                             string
    4 namespace                        string
RoleRef
    1 apiGroup                         string
    2 kind                             string
    3 name                             string
AggregationRule
    1 clusterRoleSelectors             []LabelSelector
"""


def _l(value: Any) -> list:
    return value if isinstance(value, list) else []


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def path_segment_name(name: str) -> list[str]:
    """path.IsValidPathSegmentName: what a role's (and a binding's) name must be."""
    if name in (".", ".."):
        return [f"may not be '{name}'"]
    return [f"may not contain '{c}'" for c in "/%" if c in name]


def validate_rules(obj: dict, errs: v.Errs, *, namespaced: bool) -> None:
    for i, rule in enumerate(_l(obj.get("rules"))):
        validate_rule(_d(rule), f"rules[{i}]", errs, namespaced=namespaced)


def validate_rule(rule: dict, path: str, errs: v.Errs, *, namespaced: bool) -> None:
    """ValidatePolicyRule."""
    if not _l(rule.get("verbs")):
        errs.required(f"{path}.verbs", "verbs must contain at least one value")
    urls = _l(rule.get("nonResourceURLs"))
    if urls:
        if namespaced:
            errs.invalid(f"{path}.nonResourceURLs", urls, "namespaced rules cannot apply to non-resource URLs")
        if _l(rule.get("apiGroups")) or _l(rule.get("resources")):
            errs.invalid(f"{path}.nonResourceURLs", urls,
                         "rules cannot apply to both regular resources and non-resource URLs")
        return
    if not _l(rule.get("apiGroups")):
        errs.required(f"{path}.apiGroups", "resource rules must supply at least one api group")
    if not _l(rule.get("resources")):
        errs.required(f"{path}.resources", "resource rules must supply at least one resource")


def _go_role_ref(ref: dict) -> str:
    return (f'rbac.RoleRef{{APIGroup:"{ref.get("apiGroup", "")}", Kind:"{ref.get("kind", "")}", '
            f'Name:"{ref.get("name", "")}"}}')


def validate_binding(obj: dict, old: dict | None, errs: v.Errs, *, namespaced: bool) -> None:
    """ValidateRoleBinding / ValidateClusterRoleBinding (+ their Update: roleRef is immutable)."""
    ref = _d(obj.get("roleRef"))
    if ref.get("apiGroup") != GROUP:
        errs.not_supported("roleRef.apiGroup", ref.get("apiGroup", ""), [GROUP])
    kinds = ("Role", "ClusterRole") if namespaced else ("ClusterRole",)
    if ref.get("kind") not in kinds:
        errs.not_supported("roleRef.kind", ref.get("kind", ""), kinds)
    name = ref.get("name") or ""
    if not name:
        errs.required("roleRef.name")
    else:
        errs.each("roleRef.name", name, path_segment_name(str(name)))
    for i, s in enumerate(_l(obj.get("subjects"))):
        validate_subject(_d(s), f"subjects[{i}]", errs, namespaced=namespaced)
    if old is not None and _d(old.get("roleRef")) != ref:
        errs.invalid_shown("roleRef", _go_role_ref(ref), "cannot change roleRef")


def validate_subject(s: dict, path: str, errs: v.Errs, *, namespaced: bool) -> None:
    """ValidateRoleBindingSubject."""
    name = s.get("name") or ""
    if not name:
        errs.required(f"{path}.name")
    kind = s.get("kind")
    if kind == "ServiceAccount":
        if name:
            errs.each(f"{path}.name", name, v.is_dns1123_subdomain(str(name)))
        if s.get("apiGroup"):
            errs.not_supported(f"{path}.apiGroup", s.get("apiGroup"), [""])
        if not namespaced and not s.get("namespace"):
            errs.required(f"{path}.namespace")
    elif kind in ("User", "Group"):
        if s.get("apiGroup") != GROUP:
            errs.not_supported(f"{path}.apiGroup", s.get("apiGroup", ""), [GROUP])
    else:
        errs.not_supported(f"{path}.kind", kind or "", ["ServiceAccount", "User", "Group"])


def default_binding(obj: dict, old: dict | None) -> None:
    """SetDefaults_RoleBinding / _Subject: the rbac group where it is left out."""
    ref = obj.get("roleRef")
    if isinstance(ref, dict) and not ref.get("apiGroup"):
        ref["apiGroup"] = GROUP
    for s in _l(obj.get("subjects")):
        if isinstance(s, dict) and not s.get("apiGroup") and s.get("kind") in ("User", "Group"):
            s["apiGroup"] = GROUP


# -- printers (pkg/printers/internalversion: printRole, printRoleBinding) --------------------------

_CREATED_DOC = printers.age_column()["description"]
ROLE_COLUMNS = (
    printers.name_column(),
    printers.column("Created At", _CREATED_DOC, type_="date"),
)
BINDING_COLUMNS = (
    printers.name_column(),
    printers.column("Role", "RoleRef can reference a Role in the current namespace or a ClusterRole in the global "
                            "namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. "
                            "This field is immutable."),
    printers.age_column(),
    printers.column("Users", "Users in the roleBinding", priority=1),
    printers.column("Groups", "Groups in the roleBinding", priority=1),
    printers.column("ServiceAccounts", "ServiceAccounts in the roleBinding", priority=1),
)


def role_cells(obj: dict, now: dt.datetime) -> list:
    return [printers.name_cell(obj), _d(obj.get("metadata")).get("creationTimestamp") or ""]


def subjects_strings(subjects: Any) -> tuple[list[str], list[str], list[str]]:
    users, groups, sas = [], [], []
    for s in _l(subjects):
        s = _d(s)
        kind, name = s.get("kind"), str(s.get("name", ""))
        if kind == "User":
            users.append(name)
        elif kind == "Group":
            groups.append(name)
        elif kind == "ServiceAccount":
            sas.append(f"{s['namespace']}/{name}" if s.get("namespace") else name)
    return users, groups, sas


def binding_cells(obj: dict, now: dt.datetime) -> list:
    ref = _d(obj.get("roleRef"))
    users, groups, sas = subjects_strings(obj.get("subjects"))
    return [printers.name_cell(obj), f"{ref.get('kind', '')}/{ref.get('name', '')}", printers.age_cell(obj, now),
            ", ".join(users), ", ".join(groups), ", ".join(sas)]
