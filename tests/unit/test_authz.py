"""Request attributes as upstream's RequestInfoFactory reads them, and RBAC rule matching (tables)."""

from __future__ import annotations

import pytest

from kubepy.api import authz, rbac

U = authz.Anonymous()


@pytest.mark.parametrize("method,path,query,want", [
    ("GET", "/api", {}, ("get", False, "", "", "", "", "")),
    ("GET", "/apis/apps/v1", {}, ("get", False, "", "", "", "", "")),
    ("GET", "/openapi/v3/apis/apps/v1", {}, ("get", False, "", "", "", "", "")),
    ("POST", "/kubepy/v1/join", {}, ("post", False, "", "", "", "", "")),
    ("GET", "/api/v1/pods", {}, ("list", True, "", "pods", "", "", "")),
    ("GET", "/api/v1/namespaces/a/pods", {"watch": "1"}, ("watch", True, "", "pods", "", "a", "")),
    ("GET", "/api/v1/watch/namespaces/a/pods", {}, ("watch", True, "", "pods", "", "a", "")),
    ("GET", "/api/v1/namespaces/a/secrets", {"fieldSelector": "metadata.name=s"},
     ("list", True, "", "secrets", "", "a", "s")),
    ("GET", "/api/v1/namespaces/a/secrets", {"fieldSelector": "metadata.name!=s"},
     ("list", True, "", "secrets", "", "a", "")),
    ("DELETE", "/api/v1/namespaces/a/pods", {}, ("deletecollection", True, "", "pods", "", "a", "")),
    ("DELETE", "/api/v1/namespaces/a/pods/p", {}, ("delete", True, "", "pods", "", "a", "p")),
    ("GET", "/api/v1/namespaces/a/pods/p/log", {}, ("get", True, "", "pods", "log", "a", "p")),
    ("GET", "/api/v1/namespaces/a/pods/p/exec", {}, ("create", True, "", "pods", "exec", "a", "p")),
    ("GET", "/api/v1/namespaces/a/pods/p/proxy/x/y", {}, ("get", True, "", "pods", "proxy", "a", "p")),
    ("PUT", "/api/v1/namespaces/a/finalize", {}, ("update", True, "", "namespaces", "finalize", "a", "a")),
    ("GET", "/api/v1/namespaces/a", {}, ("get", True, "", "namespaces", "", "a", "a")),
    ("PATCH", "/apis/apps/v1/namespaces/a/deployments/d/scale", {},
     ("patch", True, "apps", "deployments", "scale", "a", "d")),
    ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {},
     ("create", True, "authorization.k8s.io", "selfsubjectaccessreviews", "", "", "")),
])
def test_request_attributes(method, path, query, want) -> None:
    a = authz.request_attributes(U, method, path, query)
    assert (a.verb, a.is_resource, a.api_group, a.resource, a.subresource, a.namespace, a.name) == want


def _attrs(verb: str, resource: str, sub: str = "", group: str = "", name: str = "") -> authz.Attributes:
    return authz.Attributes(U, verb, api_group=group, resource=resource, subresource=sub, name=name)


@pytest.mark.parametrize("rule,attrs,allowed", [
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, _attrs("get", "pods"), True),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, _attrs("get", "pods", "log"), False),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}, _attrs("get", "pods", "log"), True),
    ({"verbs": ["*"], "apiGroups": ["apps"], "resources": ["*/scale"]},
     _attrs("patch", "deployments", "scale", "apps"), True),
    ({"verbs": ["*"], "apiGroups": ["apps"], "resources": ["*/scale"]}, _attrs("patch", "deployments", "", "apps"),
     False),
    ({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*"]}, _attrs("get", "jobs", "", "batch"), True),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]},
     _attrs("get", "pods", name="a"), True),
    ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]}, _attrs("list", "pods"),
     False),
    ({"verbs": ["get"], "nonResourceURLs": ["/logs/*"]},
     authz.Attributes(U, "get", is_resource=False, path="/logs/x/y"), True),
    ({"verbs": ["get"], "nonResourceURLs": ["/logs"]},
     authz.Attributes(U, "get", is_resource=False, path="/logs/x"), False),
    ({"verbs": ["get"], "nonResourceURLs": ["*"]}, _attrs("get", "pods"), False),
])
def test_rule_matching(rule, attrs, allowed) -> None:
    assert rbac.rule_allows(attrs, rule) is allowed


def test_covers_breaks_rules_down() -> None:
    held = [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "configmaps"]},
            {"verbs": ["*"], "apiGroups": ["apps"], "resources": ["*/scale"]}]
    assert rbac.uncovered(held, [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]) == []
    assert rbac.uncovered(held, [{"verbs": ["update"], "apiGroups": ["apps"], "resources": ["deployments/scale"]}]) == []
    assert rbac.uncovered(held, [{"verbs": ["get", "delete"], "apiGroups": [""], "resources": ["pods"]}]) == [
        {"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}]
