"""Authorization: what a request asks to do, who decides, and the 403 that says no.

Talks to: nothing (pure functions and small classes); the API server builds
an ``Authorizer`` chain from kubepy.api.{nodeauth,rbac} and calls it for
every request, resource or not.

- ``request_attributes`` reads a request as upstream's RequestInfoFactory
  does (staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go):
  ``/api``, ``/apis/G/V`` and everything outside them are non-resource
  paths whose verb is the lower-cased method; under them the verb is
  get/list/watch/create/update/patch/delete/deletecollection (``watch`` for
  ``?watch=1`` and ``/watch/`` paths), with group, resource, subresource,
  namespace and name (a list or watch naming one object by
  ``fieldSelector=metadata.name=X`` carries X as its name).
- ``Chain``: the first authorizer with an opinion decides (system:masters
  are allowed first, as upstream's privileged-group authorizer).
- ``forbidden``: upstream's message (responsewriters.forbiddenMessage) in a
  ``Status`` naming the group and resource.
- ``impersonate``: the Impersonate-User/-Group/-Uid/-Extra-* headers, each
  checked with the ``impersonate`` verb on users, groups, serviceaccounts,
  uids and userextras/<key>
  (staging/src/k8s.io/apiserver/pkg/endpoints/filters/impersonation.go).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubepy.api import errors
from kubepy.meta.userextra import unescape_extra_key

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = "system:anonymous"
SA_PREFIX = "system:serviceaccount:"
SA_GROUP_PREFIX = "system:serviceaccounts"

ALLOW, DENY, NO_OPINION = "Allow", "Deny", "NoOpinion"

_NAMESPACE_SUBRESOURCES = {"status", "finalize"}
_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch",
                 "DELETE": "delete"}
# The WebSocket GET of exec/attach/portforward is checked as "create", as Kubernetes 1.31+ does.
_CREATE_SUBRESOURCES = {"exec", "attach", "portforward"}


class UserInfo(Protocol):
    name: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Anonymous:
    name: str = ANONYMOUS
    groups: tuple[str, ...] = (UNAUTHENTICATED,)


def effective_groups(user: Any) -> tuple[str, ...]:
    """The user's groups plus system:authenticated (for anyone but the anonymous user)."""
    groups = tuple(getattr(user, "groups", ()) or ())
    if getattr(user, "as_given", False):
        return groups
    if user.name != ANONYMOUS and AUTHENTICATED not in groups and UNAUTHENTICATED not in groups:
        groups += (AUTHENTICATED,)
    return groups


@dataclass(frozen=True)
class Attributes:
    """What one request asks to do (upstream's authorizer.Attributes)."""

    user: Any
    verb: str
    is_resource: bool = True
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def qualified_resource(self) -> str:
        return f"{self.resource}.{self.api_group}" if self.api_group else self.resource


@dataclass(frozen=True)
class Decision:
    verdict: str
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict == ALLOW


ALLOWED = Decision(ALLOW)


def _truthy(value: str | None) -> bool:
    return value in ("1", "true", "True", "TRUE", "t", "T")


def _field_name(selector: str | None) -> str:
    """X from a field selector that requires metadata.name=X (or ==X) and nothing else about the name."""
    if not selector:
        return ""
    for term in selector.split(","):
        for op in ("==", "="):
            key, sep, value = term.partition(op)
            if sep and key.strip() == "metadata.name" and "!" not in key:
                value = value.strip()
                return value if value not in (".", "..") and "/" not in value and "%" not in value else ""
    return ""


def request_attributes(user: Any, method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """RequestInfoFactory.NewRequestInfo, then the attributes the authorizers see."""
    parts = [p for p in path.split("/") if p]
    non_resource = Attributes(user, method.lower(), is_resource=False, path=path)
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return non_resource
    prefix, rest = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(rest) < 3:
            return non_resource
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    verb = _METHOD_VERBS.get(method.upper(), "")
    if rest[0] in ("watch", "proxy"):
        if len(rest) < 2:
            raise errors.NotFound("the server could not find the requested resource")
        verb, rest = rest[0], rest[1:]
    namespace = ""
    if rest[0] == "namespaces":
        if len(rest) > 1:
            namespace = rest[1]
            if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
                rest = rest[2:]
    resource, name, subresource = rest[0], "", ""
    if len(rest) >= 2:
        name = rest[1]
    if len(rest) >= 3 and verb != "proxy":
        subresource = rest[2]
    if not name and verb == "get":
        verb = "watch" if _truthy(query.get("watch")) else "list"
        name = _field_name(query.get("fieldSelector"))
    if not name and verb == "delete":
        verb = "deletecollection"
    if subresource in _CREATE_SUBRESOURCES and verb == "get":
        verb = "create"
    return Attributes(user, verb, api_group=group, api_version=version, resource=resource,
                      subresource=subresource, namespace=namespace, name=name, path=path)


# -- deciding ------------------------------------------------------------------------------------

class Authorizer(Protocol):
    def authorize(self, attrs: Attributes) -> Decision: ...


class PrivilegedGroups:
    """system:masters may do anything (upstream's authorizerfactory privileged groups)."""

    def authorize(self, attrs: Attributes) -> Decision:
        return ALLOWED if MASTERS in (getattr(attrs.user, "groups", ()) or ()) else Decision(NO_OPINION)


@dataclass
class Chain:
    """The union authorizer: the first Allow or Deny wins; reasons of the others are kept."""

    authorizers: list[Authorizer] = field(default_factory=list)

    def authorize(self, attrs: Attributes) -> Decision:
        reasons = []
        for a in self.authorizers:
            d = a.authorize(attrs)
            if d.verdict == ALLOW:
                return d
            if d.reason:
                reasons.append(d.reason)
            if d.verdict == DENY:
                return Decision(DENY, ", ".join(reasons))
        return Decision(NO_OPINION, ", ".join(reasons))


def forbidden_message(attrs: Attributes) -> str:
    """responsewriters.forbiddenMessage."""
    user = attrs.user.name
    if not attrs.is_resource:
        return f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    if attrs.namespace:
        return (f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" '
                f'in the namespace "{attrs.namespace}"')
    return f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" at the cluster scope'


def forbidden(attrs: Attributes, reason: str = "") -> errors.Forbidden:
    """apierrors.NewForbidden(group resource, name, message[: reason])."""
    msg = forbidden_message(attrs) + (f": {reason}" if reason else "")
    if not attrs.is_resource or not attrs.resource:
        return errors.Forbidden(f"forbidden: {msg}")
    what = f'{attrs.qualified_resource} "{attrs.name}"' if attrs.name else attrs.qualified_resource
    return errors.Forbidden(f"{what} is forbidden: {msg}",
                            details={"name": attrs.name, "group": attrs.api_group, "kind": attrs.resource})


# -- impersonation ----------------------------------------------------------------------------

IMPERSONATE_USER = "Impersonate-User"
IMPERSONATE_GROUP = "Impersonate-Group"
IMPERSONATE_UID = "Impersonate-Uid"
IMPERSONATE_EXTRA = "Impersonate-Extra-"


def _with(user_type: type, name: str, groups: Iterable[str], uid: str, extra: dict[str, list[str]]) -> Any:
    """An instance of the server's User type with what fields it has (uid and extra are newer)."""
    fields = {f.name for f in dataclasses.fields(user_type)} if dataclasses.is_dataclass(user_type) else set()
    kwargs: dict[str, Any] = {"name": name, "groups": tuple(groups)}
    if "uid" in fields:
        kwargs["uid"] = uid
    if "extra" in fields:
        kwargs["extra"] = extra if not isinstance(getattr(user_type, "extra", None), tuple) else tuple(
            (k, tuple(v)) for k, v in extra.items())
    return user_type(**kwargs)


def impersonate(user: Any, headers: Mapping[str, str], getall: Any, authorizer: Authorizer) -> Any:
    """The impersonated user, or ``user`` when no Impersonate-* header is set; 403 when not allowed.

    ``getall(name)`` gives every value of a header (groups may repeat)."""
    target = headers.get(IMPERSONATE_USER)
    groups = list(getall(IMPERSONATE_GROUP))
    uid = headers.get(IMPERSONATE_UID, "")
    extra: dict[str, list[str]] = {}
    for h in headers:
        if h.lower().startswith(IMPERSONATE_EXTRA.lower()):
            key = unescape_extra_key(h[len(IMPERSONATE_EXTRA):])
            extra.setdefault(key, []).extend(getall(h))
    if target is None:
        if groups or uid or extra:
            raise errors.InternalError("requested impersonation of groups, uid or extra without a user")
        return user

    def check(resource: str, name: str, *, namespace: str = "", group: str = "", subresource: str = "") -> None:
        attrs = Attributes(user, "impersonate", api_group=group, resource=resource, subresource=subresource,
                           namespace=namespace, name=name)
        if not authorizer.authorize(attrs).allowed:
            msg = forbidden_message(attrs)
            raise errors.Forbidden(f'{attrs.qualified_resource} "{name}" is forbidden: {msg}',
                                   details={"name": name, "group": group, "kind": resource})

    for g in groups:
        check("groups", g)
    if target.startswith(SA_PREFIX) and target.count(":") == 3:
        ns, sa = target[len(SA_PREFIX):].split(":", 1)
        check("serviceaccounts", sa, namespace=ns)
        if not groups:  # a service account's own groups come with it, unchecked (as upstream)
            groups = [SA_GROUP_PREFIX, f"{SA_GROUP_PREFIX}:{ns}"]
    else:
        check("users", target)
    if uid:
        check("uids", uid, group="authentication.k8s.io")
    for key, values in extra.items():
        for v in values:
            check("userextras", v, group="authentication.k8s.io", subresource=key)
    if target != ANONYMOUS and AUTHENTICATED not in groups:
        groups.append(AUTHENTICATED)
    elif target == ANONYMOUS and UNAUTHENTICATED not in groups:
        groups.append(UNAUTHENTICATED)
    return _with(type(user), target, groups, uid, extra)


@dataclass
class PathsFor:
    """A group may use exactly these (verb, path) pairs: bootstrap tokens may only join nodes."""

    group: str
    allowed: frozenset[tuple[str, str]]

    def authorize(self, attrs: Attributes) -> Decision:
        if self.group not in (getattr(attrs.user, "groups", ()) or ()):
            return Decision(NO_OPINION)
        if not attrs.is_resource and (attrs.verb, attrs.path) in self.allowed:
            return ALLOWED
        return Decision(NO_OPINION)
