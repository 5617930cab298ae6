"""The kubelet's HTTPS API (:10250) asks the real API server who a caller is (TokenReview) and
whether it may (SubjectAccessReview on nodes/proxy, nodes/log, nodes/stats, ...), as upstream's
kubelet with webhook authentication and authorization; client certificates are judged against
the cluster CA. The kubelet runs in process with its node's own credential; the API server is
the real one (aiohttp test server)."""

from __future__ import annotations

import asyncio
import csv
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from kubepy.api import certs
from kubepy.api.server import NODE_TOKEN_PREFIX, APIServer, ServerConfig
from kubepy.client import Client, ClientConfig
from kubepy.kubelet.auth import KubeletAuth, request_attributes
from kubepy.kubelet.server import KubeletServer
from kubepy.kubelet.servingcert import ensure_serving_cert
from kubepy.store.base import open_store

NODE = "n1"
RBAC = "/apis/rbac.authorization.k8s.io/v1"


@pytest.mark.parametrize(("method", "path", "verb", "sub"), [
    ("GET", "/containerLogs/ns/p/c", "get", "proxy"),
    ("GET", "/exec/ns/p/c", "get", "proxy"),
    ("POST", "/exec/ns/p/c", "create", "proxy"),
    ("GET", "/portForward/ns/p", "get", "proxy"),
    ("GET", "/healthz", "get", "proxy"),
    ("GET", "/stats/summary", "get", "stats"),
    ("GET", "/stats", "get", "stats"),
    ("GET", "/statsx", "get", "proxy"),
    ("GET", "/metrics/cadvisor", "get", "metrics"),
    ("GET", "/logs/syslog", "get", "log"),
    ("GET", "/spec/", "get", "spec"),
    ("PUT", "/proxy/http/ns/p/80/", "update", "proxy"),
    ("DELETE", "/proxy/http/ns/p/80/", "delete", "proxy"),
    ("PATCH", "/proxy/http/ns/p/80/", "patch", "proxy"),
    ("HEAD", "/healthz", "get", "proxy"),
])
def test_request_attributes_follow_upstream(method: str, path: str, verb: str, sub: str) -> None:
    assert request_attributes(method, path, NODE) == {"verb": verb, "resource": "nodes", "subresource": sub,
                                                       "name": NODE, "group": "", "version": "v1", "namespace": ""}


class _Locator:
    runtime: Any = None

    def locate(self, namespace: str, pod: str, container: str | None, *, previous: bool = False) -> Any:
        raise LookupError(f'pod "{pod}" not found on this node')

    def pod_netns(self, namespace: str, pod: str) -> Any:
        return None

    def pod_ip(self, namespace: str, pod: str) -> Any:
        return None


class Setup:
    def __init__(self, api: TestClient, kubelet: KubeletServer, data_dir: Path) -> None:
        self.api, self.kubelet, self.data_dir = api, kubelet, data_dir

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        resp = await self.api.request(method, path, json=body, headers={"Authorization": "Bearer tok-admin"})
        out = await resp.json()
        assert resp.status < 300, (method, path, resp.status, out)
        return out

    async def sa_token(self, name: str) -> str:
        await self.admin("POST", "/api/v1/namespaces/default/serviceaccounts", {"metadata": {"name": name}})
        out = await self.admin("POST", f"/api/v1/namespaces/default/serviceaccounts/{name}/token",
                               {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
        return out["status"]["token"]

    async def grant(self, sa: str, *resources: str) -> None:
        role = {"metadata": {"name": f"{sa}-kubelet"},
                "rules": [{"verbs": ["get", "create"], "apiGroups": [""], "resources": list(resources)}]}
        await self.admin("POST", f"{RBAC}/clusterroles", role)
        await self.admin("POST", f"{RBAC}/clusterrolebindings", {
            "metadata": {"name": f"{sa}-kubelet"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{sa}-kubelet"},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": "default"}]})

    async def call(self, path: str, *, token: str | None = None, cert: tuple[bytes, bytes] | None = None,
                   method: str = "GET") -> tuple[int, Any]:
        ctx = ssl.create_default_context(cafile=str(self.data_dir / "ca.crt"))
        if cert is not None:
            pem = self.data_dir / "caller.pem"
            pem.write_bytes(cert[0] + cert[1])
            ctx.load_cert_chain(pem)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as s, s.request(
                method, f"https://127.0.0.1:{self.kubelet.port}{path}", ssl=ctx, server_hostname=NODE,
                headers=headers) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    with (tmp_path / "tokens.csv").open("w") as f:
        csv.writer(f).writerow(["tok-admin", "admin", "admin", "system:masters"])
    certs.ensure_ca(tmp_path)
    store = open_store("sqlite", data_dir=str(tmp_path))
    await store.create(NODE_TOKEN_PREFIX + NODE, json.dumps({"token": "tok-node"}).encode())
    server = APIServer(store, ServerConfig(data_dir=tmp_path))
    await server.start()
    api = TestClient(TestServer(server.app()))
    await api.start_server()
    ca = (tmp_path / "ca.crt").read_bytes()
    node_client = Client(ClientConfig(server=str(api.make_url("")).rstrip("/"), token="tok-node", ca_data=ca))
    # The kubelet has its serving certificate signed for its name, as kubepy.kubelet.kubelet does.
    serving = await ensure_serving_cert(node_client, tmp_path / "pki", node_name=NODE, address="127.0.0.1", ca_pem=ca)
    kubelet = KubeletServer(_Locator(), node_name=NODE, auth=KubeletAuth(node_client, node_name=NODE, ca_pem=ca),
                            cert_dir=tmp_path / "pki", address="127.0.0.1", port=0, client_ca=ca, serving_cert=serving)
    await kubelet.start()
    try:
        yield Setup(api, kubelet, tmp_path)
    finally:
        await kubelet.stop()
        await node_client.close()
        await api.close()
        await server.stop()
        await store.close()


async def test_anonymous_is_401_and_a_token_without_nodes_proxy_is_403(setup: Setup) -> None:
    code, out = await setup.call("/healthz")
    assert code == 401 and out["kind"] == "Status" and out["reason"] == "Unauthorized", out
    code, out = await setup.call("/healthz", token="not-a-token")
    assert code == 401, out
    token = await setup.sa_token("nobody")
    code, out = await setup.call("/containerLogs/default/p/c", token=token)
    assert code == 403 and out["reason"] == "Forbidden", out
    assert out["message"] == ("Forbidden (user=system:serviceaccount:default:nobody, verb=get, resource=nodes, "
                              "subresource=proxy)")
    code, out = await setup.call("/stats/summary", token=token)
    assert code == 403 and out["message"].endswith("subresource=stats)"), out


async def test_a_token_with_nodes_proxy_is_served(setup: Setup) -> None:
    token = await setup.sa_token("debugger")
    await setup.grant("debugger", "nodes/proxy")
    deadline = asyncio.get_running_loop().time() + 5
    while True:  # the binding reaches the API server's authorizer through a watch
        code, out = await setup.call("/healthz", token=token)
        if code == 200 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert (code, out) == (200, "ok")
    code, out = await setup.call("/containerLogs/default/p/c", token=token)
    assert code == 404 and 'pod "p" not found' in out["message"], out   # authorized; no such pod here
    # nodes/proxy is not nodes/log: /logs needs its own right (authorized would be a 404 here)
    code, out = await setup.call("/logs/", token=token)
    assert code == 403 and out["message"].endswith("subresource=log)"), out


async def test_client_certificates_are_judged_against_the_cluster_ca(setup: Setup, tmp_path_factory) -> None:
    # The API server's own kubelet client: bound to system:kubelet-api-admin by the bootstrap policy.
    apiserver = certs.issue_client_cert(setup.data_dir, user=certs.KUBELET_CLIENT_USER, groups=())
    assert await setup.call("/healthz", cert=apiserver) == (200, "ok")
    code, out = await setup.call("/exec/default/p/c?command=ls", cert=apiserver, method="POST")
    assert code != 403, out
    somebody = certs.issue_client_cert(setup.data_dir, user="alice", groups=())
    code, out = await setup.call("/healthz", cert=somebody)
    assert code == 403 and "user=alice" in out["message"], out
    stranger = certs.issue_client_cert(tmp_path_factory.mktemp("other-ca"), user=certs.KUBELET_CLIENT_USER,
                                       groups=("system:masters",))
    code, out = await setup.call("/healthz", cert=stranger)
    assert code == 401 and out["reason"] == "Unauthorized", out


async def test_a_node_may_only_have_its_own_name_signed(setup: Setup) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("n2")]), False).sign(key, hashes.SHA256()))
    body = {"csr": csr.public_bytes(serialization.Encoding.PEM).decode()}
    resp = await setup.api.post("/kubepy/v1/kubeletservingcertificate", json=body,
                                headers={"Authorization": "Bearer tok-node"})
    out = await resp.json()
    assert resp.status == 400 and "other than the node's own (n1)" in out["message"], out
    token = await setup.sa_token("notanode")
    resp = await setup.api.post("/kubepy/v1/kubeletservingcertificate", json=body,
                                headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 403, await resp.text()
