"""RBAC escalation prevention: nobody grants rights they do not hold.

Talks to: the authorizer chain and the RBAC index the API server gives it.
As upstream's pkg/registry/rbac ({role,clusterrole}/policybased and
escalation_check.go): writing a Role or ClusterRole whose rules the writer
does not hold is refused unless they may ``escalate`` roles; writing a
binding to a role whose rules they do not hold is refused unless they may
``bind`` that role. system:masters are exempt.
"""

from __future__ import annotations

from typing import Any

from kubepy.api import errors
from kubepy.api.authz import MASTERS, Attributes, Authorizer, effective_groups
from kubepy.api.rbac import GROUP, PolicyIndex, compact_string, uncovered

ROLE_KINDS = {"roles": "Role", "clusterroles": "ClusterRole"}
BINDING_KINDS = {"rolebindings", "clusterrolebindings"}


def _go_strings(values: tuple[str, ...]) -> str:
    return "[" + " ".join(f'"{v}"' for v in values) + "]"


def _compact(rules: list[dict[str, Any]]) -> list[str]:
    """CompactRules then CompactString: rules differing only in verbs become one, sorted."""
    merged: dict[tuple, list[str]] = {}
    order: list[tuple] = []
    for r in rules:
        key = tuple(tuple(r.get(k) or ()) for k in ("apiGroups", "resources", "resourceNames", "nonResourceURLs"))
        if key not in merged:
            merged[key] = []
            order.append(key)
        merged[key] += [v for v in r.get("verbs") or [] if v not in merged[key]]
    out = []
    for key in order:
        groups, resources, names, urls = key
        rule: dict[str, Any] = {"verbs": merged[key]}
        for name, values in (("apiGroups", groups), ("resources", resources), ("resourceNames", names),
                             ("nonResourceURLs", urls)):
            if values:
                rule[name] = list(values)
        out.append(compact_string(rule))
    return sorted(set(out))


def confirm_no_escalation(user: Any, namespace: str, rules: list[dict[str, Any]], policy: PolicyIndex) -> str | None:
    """None when the user's RBAC rules in ``namespace`` cover ``rules``; else upstream's message."""
    groups = effective_groups(user)
    held, resolution_errors = policy.rules_for(user.name, groups, namespace)
    missing = uncovered(held, rules)
    if not missing:
        return None
    msg = (f'user "{user.name}" (groups={_go_strings(groups)}) is attempting to grant RBAC permissions not '
           "currently held:\n" + "\n".join(_compact(missing)))
    if resolution_errors:
        msg += f"; resolution errors: [{', '.join(resolution_errors)}]"
    return msg


def _forbidden(plural: str, name: str, message: str) -> errors.Forbidden:
    return errors.Forbidden(f'{plural}.{GROUP} "{name}" is forbidden: {message}',
                            details={"name": name, "group": GROUP, "kind": plural})


def check(user: Any, plural: str, namespace: str, obj: dict[str, Any], old: dict[str, Any] | None, *,
          authorizer: Authorizer, policy: PolicyIndex) -> None:
    """Raise Forbidden when writing ``obj`` (a role or a binding) would escalate."""
    if plural not in ROLE_KINDS and plural not in BINDING_KINDS:
        return
    if MASTERS in (getattr(user, "groups", ()) or ()):
        return
    name = (obj.get("metadata") or {}).get("name", "")
    if plural in ROLE_KINDS:
        if old is not None and (old.get("rules") or []) == (obj.get("rules") or []):
            return
        may = Attributes(user, "escalate", api_group=GROUP, resource=plural, namespace=namespace, name=name)
        if authorizer.authorize(may).allowed:
            return
        why = confirm_no_escalation(user, namespace, list(obj.get("rules") or []), policy)
        if why:
            raise _forbidden(plural, name, why)
        return
    ref = obj.get("roleRef") or {}
    ref_kind, ref_name = ref.get("kind"), ref.get("name", "")
    ref_plural = "clusterroles" if ref_kind == "ClusterRole" else "roles"
    may = Attributes(user, "bind", api_group=GROUP, resource=ref_plural, namespace=namespace, name=ref_name)
    if authorizer.authorize(may).allowed:
        return
    if ref_kind == "ClusterRole":
        role = policy.clusterroles.get(ref_name)
    else:
        role = policy.roles.get((namespace, ref_name))
    if role is None:
        raise _forbidden(plural, name, f'{ref_kind.lower() if ref_kind else "role"}.{GROUP} "{ref_name}" not found')
    why = confirm_no_escalation(user, namespace, list(role.get("rules") or []), policy)
    if why:
        raise _forbidden(plural, name, why)
