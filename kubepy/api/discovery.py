"""Discovery documents: /version, /api, /api/v1, /apis, /apis/<group>[/<version>]."""

from __future__ import annotations

from typing import Any

from kubepy.version import version_info  # noqa: F401 - served at /version
from kubepy.kinds import Kind, all_kinds, group_versions

def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group_doc(group: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list(extra: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Every group this server serves, then ``extra`` ({group: versions}: the aggregated ones)."""
    local = group_versions()
    remote = {g: vs for g, vs in (extra or {}).items() if g not in local}
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_doc(g, vs) for g, vs in {**local, **remote}.items()],
    }


def api_group_doc(group: str, versions: list[str]) -> dict[str, Any]:
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group, versions)}


def api_group(group: str) -> dict[str, Any] | None:
    versions = group_versions().get(group)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group, versions)}


_SUBRESOURCE = {
    # name: (kind, group, version, verbs)
    "status": (None, None, None, ["get", "patch", "update"]),
    "scale": ("Scale", "autoscaling", "v1", ["get", "patch", "update"]),
    "binding": ("Binding", None, None, ["create"]),
    "eviction": ("Eviction", "policy", "v1", ["create"]),
    "log": (None, None, None, ["get"]),
    "exec": ("PodExecOptions", None, None, ["create", "get"]),
    "attach": ("PodAttachOptions", None, None, ["create", "get"]),
    "portforward": ("PodPortForwardOptions", None, None, ["create", "get"]),
    "proxy": (None, None, None, ["create", "delete", "get", "patch", "update"]),
    "finalize": (None, None, None, ["update"]),
    "ephemeralcontainers": (None, None, None, ["get", "patch", "update"]),
    "token": ("TokenRequest", "authentication.k8s.io", "v1", ["create"]),
}


def _resource_entries(r: Kind) -> list[dict[str, Any]]:
    main: dict[str, Any] = {
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs,
    }
    if r.short_names:
        main["shortNames"] = list(r.short_names)
    if r.categories:
        main["categories"] = list(r.categories)
    out = [main]
    for sub in r.subresources:
        kind, group, version, verbs = _SUBRESOURCE[sub]
        entry: dict[str, Any] = {"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced,
                                 "kind": kind or r.kind, "verbs": verbs}
        if group:
            entry["group"], entry["version"] = group, version
        out.append(entry)
    return out


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    rs = [r for r in all_kinds() if r.group == group and r.version == version]
    if not rs:
        return None
    gv = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": [e for r in rs for e in _resource_entries(r)],
    }
