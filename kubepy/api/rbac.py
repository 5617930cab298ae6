"""The RBAC authorizer: Roles, ClusterRoles and their bindings, served from memory.

Talks to: nothing but the API server's own watch caches. ``PolicyIndex``
holds every Role, ClusterRole, RoleBinding and ClusterRoleBinding, kept
current from the watch caches of the four kinds (a list at start, then
their events), so a request is decided without reading the store.

Rule matching is upstream's (plugin/pkg/auth/authorizer/rbac/rbac.go and
pkg/apis/rbac/v1/evaluation_helpers.go): ``*`` matches any verb, group,
resource or URL; ``*/scale`` matches the scale subresource of anything;
``pods`` does not match ``pods/log``; resourceNames restrict to names (so
never match a create or a list); a nonResourceURL ending in ``*`` is a
prefix.  ``covers`` is upstream's escalation check (pkg/registry/rbac/
escalation_check.go, validation.Covers): the rules a user holds must cover
every rule they grant.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kubepy.api import errors
from kubepy.api.authz import ALLOWED, NO_OPINION, Attributes, Decision, effective_groups
from kubepy.kinds import Kind, by_plural

log = logging.getLogger(__name__)

GROUP = "rbac.authorization.k8s.io"
SA_PREFIX = "system:serviceaccount:"
Rule = dict[str, Any]


# -- rule matching ------------------------------------------------------------------------------

def _has(values: Iterable[str] | None, want: str) -> bool:
    values = values or ()
    return "*" in values or want in values


def resource_matches(rule: Rule, resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for r in rule.get("resources") or ():
        if r == "*" or r == combined:
            return True
        if subresource and r == "*/" + subresource:
            return True
    return False


def nonresource_matches(rule: Rule, path: str) -> bool:
    for url in rule.get("nonResourceURLs") or ():
        if url == "*" or url == path:
            return True
        if url.endswith("*") and path.startswith(url[:-1]):
            return True
    return False


def rule_allows(attrs: Attributes, rule: Rule) -> bool:
    if attrs.is_resource:
        names = rule.get("resourceNames") or ()
        return (_has(rule.get("verbs"), attrs.verb) and _has(rule.get("apiGroups"), attrs.api_group)
                and resource_matches(rule, attrs.resource, attrs.subresource)
                and (not names or attrs.name in names))
    return _has(rule.get("verbs"), attrs.verb) and nonresource_matches(rule, attrs.path)


def rules_allow(attrs: Attributes, rules: Iterable[Rule]) -> bool:
    return any(rule_allows(attrs, r) for r in rules)


# -- escalation check (validation.Covers) --------------------------------------------------------

def _breakdown(rule: Rule) -> list[Rule]:
    """One rule per verb × group × resource × name (or verb × URL), as BreakdownRule."""
    out = []
    for verb in rule.get("verbs") or ():
        for group in rule.get("apiGroups") or ():
            for res in rule.get("resources") or ():
                names = rule.get("resourceNames") or [None]
                for name in names:
                    r: Rule = {"verbs": [verb], "apiGroups": [group], "resources": [res]}
                    if name is not None:
                        r["resourceNames"] = [name]
                    out.append(r)
        for url in rule.get("nonResourceURLs") or ():
            out.append({"verbs": [verb], "nonResourceURLs": [url]})
    return out


def _covers_one(owner: Rule, req: Rule) -> bool:
    """ruleCovers: does one held rule cover one broken-down requested rule?"""
    def all_in(field_: str, wildcard_ok: bool = True) -> bool:
        have = owner.get(field_) or []
        return all((wildcard_ok and "*" in have) or v in have for v in req.get(field_) or [])

    if not all_in("verbs"):
        return False
    if req.get("nonResourceURLs"):
        have_urls = owner.get("nonResourceURLs") or []
        for url in req["nonResourceURLs"]:
            if not any(h == "*" or h == url or (h.endswith("*") and url.startswith(h[:-1])) for h in have_urls):
                return False
        return True
    if not all_in("apiGroups"):
        return False
    for res in req.get("resources") or []:
        have = owner.get("resources") or []
        sub = res.split("/", 1)[1] if "/" in res else ""
        if not ("*" in have or res in have or (sub and f"*/{sub}" in have)):
            return False
    owner_names = owner.get("resourceNames") or []
    if owner_names:
        req_names = req.get("resourceNames") or []
        if not req_names or not all(n in owner_names for n in req_names):
            return False
    return True


def uncovered(owner_rules: list[Rule], requested: list[Rule]) -> list[Rule]:
    """The broken-down requested rules no held rule covers (empty: covered)."""
    missing = []
    for rule in requested:
        for piece in _breakdown(rule):
            if not any(_covers_one(o, piece) for o in owner_rules):
                missing.append(piece)
    return missing


def compact_string(rule: Rule) -> str:
    """PolicyRule.CompactString: ``{APIGroups:[""], Resources:["pods"], Verbs:["get"]}``."""
    parts = []
    for key, label in (("apiGroups", "APIGroups"), ("resources", "Resources"), ("resourceNames", "ResourceNames"),
                       ("nonResourceURLs", "NonResourceURLs"), ("verbs", "Verbs")):
        values = rule.get(key) or []
        if values:
            parts.append(f"{label}:[" + " ".join(f'"{v}"' for v in values) + "]")
    return "{" + ", ".join(parts) + "}"


# -- the index ------------------------------------------------------------------------------------

def applies_to(subject: dict[str, Any], name: str, groups: tuple[str, ...], binding_namespace: str) -> bool:
    kind, sname = subject.get("kind"), subject.get("name")
    if kind == "User":
        return sname == name
    if kind == "Group":
        return sname in groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        return name == f"{SA_PREFIX}{ns}:{sname}"
    return False


@dataclass
class PolicyIndex:
    """Every RBAC object by key, kept current by the API server's watch caches."""

    roles: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    clusterroles: dict[str, dict[str, Any]] = field(default_factory=dict)
    rolebindings: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # ns → name → binding
    clusterrolebindings: dict[str, dict[str, Any]] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)

    def apply(self, plural: str, obj: dict[str, Any], deleted: bool) -> None:
        m = obj.get("metadata") or {}
        name, ns = m.get("name", ""), m.get("namespace", "")
        if plural == "roles":
            table: dict[Any, Any] = self.roles
            key: Any = (ns, name)
        elif plural == "clusterroles":
            table, key = self.clusterroles, name
        elif plural == "rolebindings":
            table, key = self.rolebindings.setdefault(ns, {}), name
        else:
            table, key = self.clusterrolebindings, name
        if deleted:
            table.pop(key, None)
        else:
            table[key] = obj

    def reset(self, plural: str) -> None:
        if plural == "roles":
            self.roles.clear()
        elif plural == "clusterroles":
            self.clusterroles.clear()
        elif plural == "rolebindings":
            self.rolebindings.clear()
        else:
            self.clusterrolebindings.clear()

    # -- upstream's VisitRulesFor ---------------------------------------------------------------
    def _role_rules(self, ref: dict[str, Any], namespace: str) -> tuple[list[Rule], str | None]:
        kind, name = ref.get("kind"), ref.get("name", "")
        if kind == "ClusterRole":
            role = self.clusterroles.get(name)
            if role is None:
                return [], f'clusterrole.rbac.authorization.k8s.io "{name}" not found'
        else:
            role = self.roles.get((namespace, name))
            if role is None:
                return [], f'role.rbac.authorization.k8s.io "{name}" not found'
        return list(role.get("rules") or []), None

    def visit(self, name: str, groups: tuple[str, ...], namespace: str) -> Iterable[tuple[list[Rule], str | None]]:
        """(rules, error) of every binding that applies to the user, cluster-wide first."""
        for b in self.clusterrolebindings.values():
            if any(applies_to(s, name, groups, "") for s in b.get("subjects") or []):
                yield self._role_rules(b.get("roleRef") or {}, "")
        if namespace:
            for b in (self.rolebindings.get(namespace) or {}).values():
                if any(applies_to(s, name, groups, namespace) for s in b.get("subjects") or []):
                    yield self._role_rules(b.get("roleRef") or {}, namespace)

    def rules_for(self, name: str, groups: tuple[str, ...], namespace: str) -> tuple[list[Rule], list[str]]:
        rules: list[Rule] = []
        errs: list[str] = []
        for r, err in self.visit(name, groups, namespace):
            rules.extend(r)
            if err:
                errs.append(err)
        return rules, errs


class RBACAuthorizer:
    """Allow when a binding that applies to the user grants a matching rule; else no opinion."""

    def __init__(self, index: PolicyIndex) -> None:
        self.index = index

    def authorize(self, attrs: Attributes) -> Decision:
        groups = effective_groups(attrs.user)
        errs: list[str] = []
        for rules, err in self.index.visit(attrs.user.name, groups, attrs.namespace):
            if err:
                errs.append(err)
            if rules_allow(attrs, rules):
                return ALLOWED
        return Decision(NO_OPINION, f"RBAC: [{', '.join(errs)}]" if len(errs) > 1 else
                        f"RBAC: {errs[0]}" if errs else "")


# -- keeping the index current ---------------------------------------------------------------------

Lister = Callable[[Kind], Awaitable[tuple[list[dict[str, Any]], int]]]


async def follow(kind: Kind, cache: Any, lister: Lister,
                 on_event: Callable[[dict[str, Any], bool], None], on_reset: Callable[[], None],
                 ready: asyncio.Event | None = None) -> None:
    """List ``kind``, then apply its watch cache's events; relist whenever the watch ends."""
    while True:
        try:
            items, revision = await lister(kind)
        except errors.APIError as e:
            log.warning("list to follow failed resource=%s err=%s", kind.plural, e.message)
            await asyncio.sleep(1.0)
            continue
        on_reset()
        for obj in items:
            on_event(obj, False)
        if ready is not None:
            ready.set()
        sub = cache.subscribe(after=revision, matches=lambda o: True)
        if sub is None:
            await asyncio.sleep(0.2)
            continue
        try:
            while (ev := await sub.queue.get()) is not None:
                if ev.type in ("ADDED", "MODIFIED", "DELETED"):
                    on_event(ev.obj, ev.type == "DELETED")
        finally:
            sub.close()


POLICY_KINDS = ("roles", "clusterroles", "rolebindings", "clusterrolebindings")


def policy_kinds() -> list[Kind]:
    return [by_plural(p) for p in POLICY_KINDS]
