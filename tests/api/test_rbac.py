"""Authorization in process: RBAC, the node authorizer, NodeRestriction, escalation
prevention, impersonation and the access reviews, each row a real HTTP request to the
API server's aiohttp app with a real identity (static tokens written for the test).
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kubepy.api.server import NODE_TOKEN_PREFIX, APIServer, ServerConfig
from kubepy.controllers.clusterroleaggregation import aggregated_rules
from kubepy.store.base import open_store

RBAC = "/apis/rbac.authorization.k8s.io/v1"
AUTHZ = "/apis/authorization.k8s.io/v1"
G = "rbac.authorization.k8s.io"

USERS = {  # name: groups
    "admin": "system:masters",
    "alice": "", "bob": "", "carol": "", "dave": "", "erin": "", "grace": "", "mallory": "",
    "watcher": "system:monitoring",
    "system:node:n1": "system:nodes",
}


def _token(name: str) -> str:
    return "tok-" + name.replace(":", "-")


class Api:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def call(self, who: str, method: str, path: str, body: Any = None, *, headers: dict | None = None,
                   content_type: str = "application/json", **params: Any) -> tuple[int, dict[str, Any]]:
        h = {"Authorization": f"Bearer {_token(who)}", **(headers or {})}
        if body is not None:
            h["Content-Type"] = content_type
        resp = await self.client.request(method, path, data=None if body is None else json.dumps(body),
                                         headers=h, params=params)
        text = await resp.text()
        try:
            return resp.status, json.loads(text) if text else {}
        except ValueError:
            return resp.status, {"text": text}

    async def expect(self, who: str, method: str, path: str, status: int, body: Any = None, *,
                     timeout: float = 5.0, **kw: Any) -> dict[str, Any]:
        """The answer once it has ``status`` (bindings reach the authorizer through a watch)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            got, out = await self.call(who, method, path, body, **kw)
            if got == status or asyncio.get_running_loop().time() > deadline:
                assert got == status, f"{who} {method} {path}: {got} {out}"
                return out
            await asyncio.sleep(0.05)

    async def admin(self, method: str, path: str, body: Any = None, status: int | tuple = (200, 201)) -> dict:
        got, out = await self.call("admin", method, path, body)
        assert got in (status if isinstance(status, tuple) else (status,)), f"{method} {path}: {got} {out}"
        return out

    async def aggregate(self) -> None:
        """What the aggregation controller does, once (no controller manager runs here)."""
        roles = (await self.admin("GET", f"{RBAC}/clusterroles"))["items"]
        for role in roles:
            if role.get("aggregationRule"):
                role["rules"] = aggregated_rules(role, roles)
                await self.admin("PUT", f"{RBAC}/clusterroles/{role['metadata']['name']}", role)


async def _serve(tmp_path: Path) -> AsyncIterator[Api]:
    with (tmp_path / "tokens.csv").open("w") as f:
        w = csv.writer(f)
        for name, groups in USERS.items():
            w.writerow([_token(name), name, name, groups])
    store = open_store("sqlite", data_dir=str(tmp_path))
    for name in USERS:  # a node's credential is kept in the store (the join endpoint writes it)
        if name.startswith("system:node:"):
            key = NODE_TOKEN_PREFIX + name.rsplit(":", 1)[1]
            if await store.get(key) is None:
                await store.create(key, json.dumps({"token": _token(name)}).encode())
    server = APIServer(store, ServerConfig(data_dir=tmp_path))
    await server.start()
    client = TestClient(TestServer(server.app()))
    await client.start_server()
    try:
        yield Api(client)
    finally:
        await client.close()
        await server.stop()
        await store.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for a in _serve(tmp_path):
        for ns in ("a", "b"):
            await a.admin("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
        yield a


def role(name: str, *rules: dict, namespace: str | None = "a") -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": f"{G}/v1", "kind": "Role" if namespace else "ClusterRole", "metadata": meta,
            "rules": list(rules)}


def rule(verbs: str, resources: str, group: str = "", names: list[str] | None = None) -> dict:
    r = {"verbs": verbs.split(), "apiGroups": [group], "resources": resources.split()}
    if names:
        r["resourceNames"] = names
    return r


def binding(name: str, kind: str, role_name: str, user: str, namespace: str | None = "a") -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": f"{G}/v1", "kind": "RoleBinding" if namespace else "ClusterRoleBinding",
            "metadata": meta, "roleRef": {"apiGroup": G, "kind": kind, "name": role_name},
            "subjects": [{"kind": "User", "apiGroup": G, "name": user}]}


async def grant(api: Api, user: str, *rules: dict, ns: str = "a", name: str | None = None) -> None:
    name = name or f"{user}-role"
    await api.admin("POST", f"{RBAC}/namespaces/{ns}/roles", role(name, *rules, namespace=ns))
    await api.admin("POST", f"{RBAC}/namespaces/{ns}/rolebindings", binding(name, "Role", name, user, ns))


# -- RBAC -----------------------------------------------------------------------------------------

async def test_a_namespaced_role_allows_in_its_namespace_only(api: Api) -> None:
    await grant(api, "alice", rule("get list watch", "pods"))
    await api.expect("alice", "GET", "/api/v1/namespaces/a/pods", 200)
    await api.expect("alice", "GET", "/api/v1/namespaces/a/pods", 200, watch="1", timeoutSeconds="1")
    body = await api.expect("alice", "GET", "/api/v1/namespaces/b/pods", 403)
    assert body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Forbidden",
        "code": 403, "details": {"kind": "pods"},
        "message": 'pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "b"'}
    body = await api.expect("alice", "DELETE", "/api/v1/namespaces/a/pods/x", 403)
    assert body["message"] == ('pods "x" is forbidden: User "alice" cannot delete resource "pods" in API group "" '
                               'in the namespace "a"')
    body = await api.expect("alice", "GET", "/api/v1/nodes", 403)
    assert body["message"] == ('nodes is forbidden: User "alice" cannot list resource "nodes" in API group "" '
                               'at the cluster scope')
    body = await api.expect("alice", "GET", f"{RBAC}/namespaces/a/roles", 403)
    assert body["message"].startswith('roles.rbac.authorization.k8s.io is forbidden: User "alice" cannot list '
                                      'resource "roles" in API group "rbac.authorization.k8s.io"')
    # discovery and OpenAPI are non-resource requests every authenticated user may make
    for path in ("/api", "/apis", "/api/v1", f"{RBAC}", "/version", "/openapi/v2", "/openapi/v3"):
        await api.expect("alice", "GET", path, 200)


async def test_view_reads_but_not_secrets_and_edit_cannot_bind(api: Api) -> None:
    await api.aggregate()
    await api.admin("POST", f"{RBAC}/namespaces/a/rolebindings", binding("bob-view", "ClusterRole", "view", "bob"))
    await api.admin("POST", f"{RBAC}/namespaces/a/rolebindings", binding("carol-edit", "ClusterRole", "edit", "carol"))
    await api.admin("POST", "/api/v1/namespaces/a/secrets", {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    await api.expect("bob", "GET", "/api/v1/namespaces/a/configmaps", 200)
    await api.expect("bob", "GET", "/apis/apps/v1/namespaces/a/deployments", 200)
    body = await api.expect("bob", "GET", "/api/v1/namespaces/a/secrets/s", 403)
    assert body["message"] == ('secrets "s" is forbidden: User "bob" cannot get resource "secrets" in API group "" '
                               'in the namespace "a"')
    await api.expect("carol", "GET", "/api/v1/namespaces/a/secrets/s", 200)
    await api.expect("carol", "POST", "/api/v1/namespaces/a/configmaps", 201, {"metadata": {"name": "c"}})
    body = await api.expect("carol", "POST", f"{RBAC}/namespaces/a/rolebindings", 403,
                            binding("x", "ClusterRole", "view", "mallory"))
    assert "cannot create resource \"rolebindings\"" in body["message"]


async def test_resource_names_and_subresources(api: Api) -> None:
    await grant(api, "erin", rule("get", "configmaps", names=["open"]))
    for name in ("open", "closed"):
        await api.admin("POST", "/api/v1/namespaces/a/configmaps", {"metadata": {"name": name}})
    await api.expect("erin", "GET", "/api/v1/namespaces/a/configmaps/open", 200)
    await api.expect("erin", "GET", "/api/v1/namespaces/a/configmaps/closed", 403)
    await api.expect("erin", "GET", "/api/v1/namespaces/a/configmaps", 403)
    await grant(api, "grace", rule("get list", "pods"), rule("get", "deployments/scale", "apps"))
    body = await api.expect("grace", "GET", "/api/v1/namespaces/a/pods/p/log", 403)
    assert body["message"] == ('pods "p" is forbidden: User "grace" cannot get resource "pods/log" in API group "" '
                               'in the namespace "a"')
    body = await api.expect("grace", "POST", "/api/v1/namespaces/a/pods/p/exec", 403)
    assert 'cannot create resource "pods/exec"' in body["message"]
    # deployments/scale grants the scale subresource, not the deployment
    await api.expect("grace", "GET", "/apis/apps/v1/namespaces/a/deployments/d/scale", 404)
    await api.expect("grace", "GET", "/apis/apps/v1/namespaces/a/deployments/d", 403)


async def test_non_resource_urls(api: Api) -> None:
    # /metrics is granted to system:monitoring (tests/api/test_apiserver_metrics.py reads what it serves)
    await api.expect("watcher", "GET", "/metrics", 200)
    body = await api.expect("alice", "GET", "/metrics", 403)
    assert body["message"] == 'forbidden: User "alice" cannot get path "/metrics"'
    await api.admin("POST", f"{RBAC}/clusterroles", role("logs", {"verbs": ["get"], "nonResourceURLs": ["/logs/*"]},
                                                          namespace=None))
    await api.admin("POST", f"{RBAC}/clusterrolebindings", binding("logs", "ClusterRole", "logs", "alice", None))

    async def can(path: str) -> bool:
        out = await api.admin("POST", f"{AUTHZ}/subjectaccessreviews", {
            "spec": {"user": "alice", "nonResourceAttributes": {"path": path, "verb": "get"}}})
        return out["status"]["allowed"]

    for _ in range(100):
        if await can("/logs/kubelet.log"):
            break
        await asyncio.sleep(0.05)
    assert await can("/logs/kubelet.log") and await can("/logs/") and not await can("/logsx")


# -- escalation -----------------------------------------------------------------------------------

async def test_escalation_is_refused_unless_escalate_or_bind(api: Api) -> None:
    await grant(api, "dave", rule("get list create update", "roles rolebindings", G), rule("get", "pods"))
    await api.expect("dave", "POST", f"{RBAC}/namespaces/a/roles", 201, role("pod-getter", rule("get", "pods")))
    body = await api.expect("dave", "POST", f"{RBAC}/namespaces/a/roles", 403,
                            role("secret-getter", rule("get list", "secrets")))
    assert body["message"] == (
        'roles.rbac.authorization.k8s.io "secret-getter" is forbidden: user "dave" '
        '(groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held:\n'
        '{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}')
    # a binding to a role holding more than dave is refused too, and to one he holds allowed
    await api.admin("POST", f"{RBAC}/namespaces/a/roles", role("secret-reader", rule("get", "secrets")))
    body = await api.expect("dave", "POST", f"{RBAC}/namespaces/a/rolebindings", 403,
                            binding("m", "Role", "secret-reader", "mallory"))
    assert "is attempting to grant RBAC permissions not currently held" in body["message"]
    await api.expect("dave", "POST", f"{RBAC}/namespaces/a/rolebindings", 201,
                     binding("m2", "Role", "pod-getter", "mallory"))
    # bind on that one role allows binding it; escalate on roles allows writing any role
    await grant(api, "dave", rule("bind", "roles", G, names=["secret-reader"]), name="dave-bind")
    await api.expect("dave", "POST", f"{RBAC}/namespaces/a/rolebindings", 201,
                     binding("m", "Role", "secret-reader", "mallory"))
    await grant(api, "dave", rule("escalate", "roles", G), name="dave-escalate")
    await api.expect("dave", "POST", f"{RBAC}/namespaces/a/roles", 201,
                     role("secret-getter", rule("get list", "secrets")))


async def test_role_binding_validation(api: Api) -> None:
    await api.admin("POST", f"{RBAC}/namespaces/a/rolebindings", binding("rb", "ClusterRole", "view", "alice"))
    rb = await api.admin("GET", f"{RBAC}/namespaces/a/rolebindings/rb")
    rb["roleRef"]["name"] = "edit"
    got, body = await api.call("admin", "PUT", f"{RBAC}/namespaces/a/rolebindings/rb", rb)
    assert got == 422
    assert body["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "roleRef", "message":
                                          'Invalid value: rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", '
                                          'Kind:"ClusterRole", Name:"edit"}: cannot change roleRef'}]
    bad = binding("bad", "Deployment", "x", "alice")
    bad["subjects"] = [{"kind": "Robot", "name": "r"}, {"kind": "ServiceAccount", "name": "sa", "apiGroup": G}]
    got, body = await api.call("admin", "POST", f"{RBAC}/namespaces/a/rolebindings", bad)
    assert got == 422
    assert [c["field"] for c in body["details"]["causes"]] == ["roleRef.kind", "subjects[0].kind",
                                                               "subjects[1].apiGroup"]
    got, body = await api.call("admin", "POST", f"{RBAC}/namespaces/a/roles",
                               role("r", {"verbs": ["get"], "nonResourceURLs": ["/x"]}))
    assert got == 422 and body["details"]["causes"][0]["message"] == \
        'Invalid value: ["/x"]: namespaced rules cannot apply to non-resource URLs'


# -- nodes ----------------------------------------------------------------------------------------

async def _node_setup(api: Api) -> None:
    for n in ("n1", "n2"):
        await api.admin("POST", "/api/v1/nodes", {"metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}}})
    for s in ("used", "unused"):
        await api.admin("POST", "/api/v1/namespaces/a/secrets", {"metadata": {"name": s}, "stringData": {"k": "v"}})
    await api.admin("POST", "/api/v1/namespaces/a/configmaps", {"metadata": {"name": "cm"}})
    await api.admin("POST", "/api/v1/namespaces/a/pods", {"metadata": {"name": "p1"}, "spec": {
        "nodeName": "n1", "volumes": [{"name": "c", "configMap": {"name": "cm"}}],
        "containers": [{"name": "c", "image": "busybox:1.36", "env": [
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "used", "key": "k"}}}]}]}})
    await api.admin("POST", "/api/v1/namespaces/a/pods", {"metadata": {"name": "p2"}, "spec": {
        "nodeName": "n2", "containers": [{"name": "c", "image": "busybox:1.36"}]}})


async def test_node_reads_only_what_its_pods_use(api: Api) -> None:
    await _node_setup(api)
    node = "system:node:n1"
    await api.expect(node, "GET", "/api/v1/namespaces/a/secrets/used", 200)
    await api.expect(node, "GET", "/api/v1/namespaces/a/configmaps/cm", 200)
    await api.expect(node, "GET", "/api/v1/namespaces/a/secrets", 200, fieldSelector="metadata.name=used")
    body = await api.expect(node, "GET", "/api/v1/namespaces/a/secrets/unused", 403)
    assert body["message"] == ('secrets "unused" is forbidden: User "system:node:n1" cannot get resource "secrets" '
                               'in API group "" in the namespace "a": no relationship found between node \'n1\' '
                               'and this object')
    await api.expect(node, "GET", "/api/v1/namespaces/a/secrets", 403)
    await api.expect(node, "GET", "/api/v1/secrets", 403)
    # reads the kubelet needs; kube-proxy's and DNS's (endpoints, EndpointSlices, namespaces) are theirs, not
    # the node's (upstream's system:node: endpoints get only)
    for path in ("/api/v1/nodes", "/api/v1/pods", "/api/v1/services"):
        await api.expect(node, "GET", path, 200)
    for path in ("/api/v1/endpoints", "/api/v1/namespaces", "/apis/discovery.k8s.io/v1/endpointslices"):
        await api.expect(node, "GET", path, 403)
    # its pods: status and deletion; not others'
    patch = {"status": {"phase": "Running"}}
    mp = "application/merge-patch+json"
    await api.expect(node, "PATCH", "/api/v1/namespaces/a/pods/p1/status", 200, patch, content_type=mp)
    body = await api.expect(node, "PATCH", "/api/v1/namespaces/a/pods/p2/status", 403, patch, content_type=mp)
    assert body["message"] == ('pods "p2" is forbidden: node "n1" can only update pod status for pods with '
                               'spec.nodeName set to itself')
    await api.expect(node, "DELETE", "/api/v1/namespaces/a/pods/p2", 403)
    await api.expect(node, "POST", "/api/v1/namespaces/a/pods", 403,
                     {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    await api.expect(node, "PATCH", "/api/v1/namespaces/a/pods/p1", 403, {"metadata": {"labels": {"x": "y"}}},
                     content_type=mp)


async def test_node_restriction_on_nodes_and_leases(api: Api) -> None:
    await _node_setup(api)
    node, mp = "system:node:n1", "application/merge-patch+json"
    body = await api.expect(node, "PATCH", "/api/v1/nodes/n2", 403, {"metadata": {"labels": {"x": "y"}}},
                            content_type=mp)
    assert body["message"] == 'nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2"'
    await api.expect(node, "PATCH", "/api/v1/nodes/n1", 200, {"metadata": {"labels": {"mine": "yes",
                     "node.kubernetes.io/exclude-from-external-load-balancers": "true"}}}, content_type=mp)
    body = await api.expect(node, "PATCH", "/api/v1/nodes/n1", 403, {"metadata": {"labels": {
        "node-restriction.kubernetes.io/trusted": "yes"}}}, content_type=mp)
    assert body["message"] == ('nodes "n1" is forbidden: is not allowed to modify labels: '
                               'node-restriction.kubernetes.io/trusted')
    body = await api.expect(node, "PATCH", "/api/v1/nodes/n1", 403, {"metadata": {"labels": {
        "node-role.kubernetes.io/control-plane": ""}}}, content_type=mp)
    assert "node-role.kubernetes.io/control-plane" in body["message"]
    got, _ = await api.call("admin", "PATCH", "/api/v1/nodes/n1", {"spec": {"taints": [
        {"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}}, content_type=mp)
    assert got == 200
    body = await api.expect(node, "PATCH", "/api/v1/nodes/n1", 403, {"spec": {"taints": None}}, content_type=mp)
    assert body["message"] == 'nodes "n1" is forbidden: node "n1" is not allowed to modify taints'
    lease = {"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}}
    await api.expect(node, "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", 201, lease)
    await api.expect(node, "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", 403,
                     {**lease, "metadata": {"name": "n2"}})
    await api.expect(node, "GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2", 403)
    await api.expect(node, "POST", "/api/v1/namespaces/a/events", 201, {
        "metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "a"}, "reason": "Test",
        "message": "m", "type": "Normal"})


# -- impersonation and reviews ------------------------------------------------------------------

async def test_impersonation(api: Api) -> None:
    await grant(api, "alice", rule("list", "pods"))
    await api.expect("admin", "GET", "/api/v1/namespaces/a/pods", 200, headers={"Impersonate-User": "alice"})
    body = await api.expect("admin", "GET", "/api/v1/namespaces/b/pods", 403, headers={"Impersonate-User": "alice"})
    assert 'User "alice" cannot list' in body["message"]
    # a group that is bound gives its rights
    await api.expect("admin", "GET", "/api/v1/namespaces/b/pods", 200,
                     headers={"Impersonate-User": "x", "Impersonate-Group": "system:masters"})
    body = await api.expect("alice", "GET", "/api/v1/namespaces/a/pods", 403, headers={"Impersonate-User": "bob"})
    assert body["message"] == ('users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API '
                               'group "" at the cluster scope')
    await grant(api, "alice", rule("impersonate", "serviceaccounts"), name="alice-imp")
    got, body = await api.call("alice", "GET", "/api/v1/namespaces/a/pods",
                               headers={"Impersonate-User": "system:serviceaccount:a:builder"})
    assert got == 403 and "system:serviceaccount:a:builder" in body["message"]


async def test_access_reviews(api: Api) -> None:
    await grant(api, "alice", rule("get list", "pods"), rule("get", "configmaps", names=["one"]))

    async def ssar(who: str, verb: str, resource: str, ns: str = "a", **kw: Any) -> dict:
        return (await api.expect(who, "POST", f"{AUTHZ}/selfsubjectaccessreviews", 201, {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": verb, "resource": resource, "namespace": ns, **kw}}}))["status"]

    for _ in range(100):
        if (await ssar("alice", "list", "pods"))["allowed"]:
            break
        await asyncio.sleep(0.05)
    assert (await ssar("alice", "list", "pods"))["allowed"] is True
    assert (await ssar("alice", "list", "pods", ns="b"))["allowed"] is False
    assert (await ssar("alice", "create", "pods"))["allowed"] is False
    assert (await ssar("alice", "get", "configmaps", name="one"))["allowed"] is True
    assert (await ssar("admin", "delete", "nodes", ns=""))["allowed"] is True
    sar = await api.expect("admin", "POST", f"{AUTHZ}/subjectaccessreviews", 201, {"spec": {
        "user": "alice", "resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "a"}}})
    assert sar["status"] == {"allowed": True}
    await api.expect("alice", "POST", f"{AUTHZ}/subjectaccessreviews", 403, {"spec": {
        "user": "bob", "resourceAttributes": {"verb": "get", "resource": "pods"}}})
    lsar = await api.expect("admin", "POST", f"{AUTHZ}/namespaces/b/localsubjectaccessreviews", 201, {"spec": {
        "user": "alice", "resourceAttributes": {"verb": "get", "resource": "pods"}}})
    assert lsar["status"]["allowed"] is False and lsar["spec"]["resourceAttributes"]["namespace"] == "b"
    got, body = await api.call("admin", "POST", f"{AUTHZ}/subjectaccessreviews", {"spec": {"user": "x"}})
    assert got == 422
    await api.expect("admin", "GET", f"{AUTHZ}/selfsubjectaccessreviews", 405)
    await api.expect("alice", "GET", f"{AUTHZ}/selfsubjectaccessreviews", 403)
    rules = (await api.expect("alice", "POST", f"{AUTHZ}/selfsubjectrulesreviews", 201,
                              {"spec": {"namespace": "a"}}))["status"]
    assert {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]} in rules["resourceRules"]
    assert {"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["one"]} \
        in rules["resourceRules"]
    assert {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]} in rules["resourceRules"]
    assert any("/api/*" in r["nonResourceURLs"] for r in rules["nonResourceRules"])
    assert rules["incomplete"] is False
    other = (await api.expect("alice", "POST", f"{AUTHZ}/selfsubjectrulesreviews", 201,
                              {"spec": {"namespace": "b"}}))["status"]
    assert not any("pods" in r["resources"] for r in other["resourceRules"])


# -- default policy -------------------------------------------------------------------------------

async def test_default_roles_are_created_and_reconciled_after_tampering(tmp_path: Path) -> None:
    async for api in _serve(tmp_path):
        crb = await api.admin("GET", f"{RBAC}/clusterrolebindings/cluster-admin")
        assert crb["subjects"] == [{"kind": "Group", "apiGroup": G, "name": "system:masters"}]
        assert crb["metadata"]["labels"] == {"kubernetes.io/bootstrapping": "rbac-defaults"}
        assert crb["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] == "true"
        view = await api.admin("GET", f"{RBAC}/clusterroles/view")
        assert view["aggregationRule"] == {"clusterRoleSelectors": [
            {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}
        # tamper: strip system:discovery, drop the public-info binding, add a subject to cluster-admin
        disc = await api.admin("GET", f"{RBAC}/clusterroles/system:discovery")
        disc["rules"] = [{"verbs": ["get"], "nonResourceURLs": ["/version"]}]
        await api.admin("PUT", f"{RBAC}/clusterroles/system:discovery", disc)
        await api.admin("DELETE", f"{RBAC}/clusterrolebindings/system:public-info-viewer")
        crb["subjects"].append({"kind": "User", "apiGroup": G, "name": "mallory"})
        await api.admin("PUT", f"{RBAC}/clusterrolebindings/cluster-admin", crb)
        await api.expect("alice", "GET", "/api", 403)
    async for api in _serve(tmp_path):  # a restart reconciles
        await api.expect("alice", "GET", "/api", 200)
        await api.admin("GET", f"{RBAC}/clusterrolebindings/system:public-info-viewer")
        crb = await api.admin("GET", f"{RBAC}/clusterrolebindings/cluster-admin")
        assert [s["name"] for s in crb["subjects"]] == ["system:masters", "mallory"]  # additions are kept
        # only system:masters is bound to cluster-admin by default
        crbs = (await api.admin("GET", f"{RBAC}/clusterrolebindings"))["items"]
        assert [b["metadata"]["name"] for b in crbs if b["roleRef"]["name"] == "cluster-admin"] == ["cluster-admin"]


async def test_tables_as_kubectl_shows_them(api: Api) -> None:
    await api.admin("POST", f"{RBAC}/namespaces/a/rolebindings", {**binding("rb", "ClusterRole", "view", "alice"),
                    "subjects": [{"kind": "User", "apiGroup": G, "name": "alice"},
                                 {"kind": "Group", "apiGroup": G, "name": "devs"},
                                 {"kind": "ServiceAccount", "name": "ci", "namespace": "a"}]})
    got, table = await api.call("admin", "GET", f"{RBAC}/namespaces/a/rolebindings", headers={
        "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Role", "Age", "Users", "Groups",
                                                               "ServiceAccounts"]
    assert table["rows"][0]["cells"][:2] == ["rb", "ClusterRole/view"]
    assert table["rows"][0]["cells"][3:] == ["alice", "devs", "a/ci"]
    got, table = await api.call("admin", "GET", f"{RBAC}/clusterroles/view", headers={
        "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Created At"]
