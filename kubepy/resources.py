"""The kinds kubepy serves: names, scope, subresources, store keys.

Pure data shared by the API server and the client library: everything
that needs to know "is pods namespaced", "what is the list kind of
deployments", "what is the URL of a service" or "which store prefix holds
services" asks this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = False  # status is written only through /status
    has_spec_generation: bool = False  # metadata.generation bumps on spec change
    singular: str = field(default="")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def prefix(self) -> str:
        return f"/registry/{self.plural}/"

    def key(self, namespace: str | None, name: str) -> str:
        if self.namespaced:
            return f"{self.prefix}{namespace}/{name}"
        return f"{self.prefix}{name}"

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The URL path of a collection, an object or a subresource."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base

    def list_prefix(self, namespace: str | None) -> str:
        if self.namespaced and namespace:
            return f"{self.prefix}{namespace}/"
        return self.prefix


RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "Namespace", "namespaces", False, ("ns",), ("status", "finalize"), has_status=True),
    Resource("", "v1", "Node", "nodes", False, ("no",), ("status", "proxy"), has_status=True),
    Resource("", "v1", "Pod", "pods", True, ("po",),
             ("status", "binding", "log", "exec", "attach", "portforward", "proxy", "ephemeralcontainers"), ("all",),
             has_status=True),
    Resource("", "v1", "Service", "services", True, ("svc",), ("status", "proxy"), ("all",), has_status=True),
    Resource("", "v1", "Endpoints", "endpoints", True, ("ep",)),
    Resource("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    Resource("", "v1", "Secret", "secrets", True),
    Resource("", "v1", "Event", "events", True, ("ev",)),
    Resource("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",)),
    Resource("apps", "v1", "Deployment", "deployments", True, ("deploy",), ("status", "scale"), ("all",),
             has_status=True, has_spec_generation=True),
    Resource("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), ("status", "scale"), ("all",),
             has_status=True, has_spec_generation=True),
    Resource("coordination.k8s.io", "v1", "Lease", "leases", True),
)

_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
_BY_KIND = {(r.group, r.kind): r for r in RESOURCES}


def lookup(group: str, version: str, plural: str) -> Resource | None:
    return _BY_PATH.get((group, version, plural))


def by_kind(group: str, kind: str) -> Resource | None:
    return _BY_KIND.get((group, kind))


def by_plural(plural: str) -> Resource:
    for r in RESOURCES:
        if r.plural == plural:
            return r
    raise KeyError(plural)


def group_versions() -> dict[str, list[str]]:
    """{group: [versions]} for the named groups (not the core group)."""
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        if r.group and r.version not in out.setdefault(r.group, []):
            out[r.group].append(r.version)
    return out
