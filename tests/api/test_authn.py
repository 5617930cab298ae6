"""Authentication in process, over real HTTPS with real identities: client certificates
(CN = user, O = groups), service-account JWTs from the TokenRequest API (claims, validation,
binding to a pod, expiry, audiences), OIDC discovery verified with PyJWT from the JWKS alone,
TokenReview, SelfSubjectReview and legacy token Secrets.

The API server runs on its own TLS listener (kubepy.api.main.tls_context) on a free
loopback port; each caller is an aiohttp session with its own TLS context.
"""

from __future__ import annotations

import asyncio

import base64
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web

from kubepy.api import auth, certs, main, tokens
from kubepy.api.listener import ConnectionTimeouts, TimedTCPSite
from kubepy.api.server import APIServer, ServerConfig
from kubepy.store.base import open_store

NS = "default"
SA = f"/api/v1/namespaces/{NS}/serviceaccounts"
PODS = f"/api/v1/namespaces/{NS}/pods"
SSR = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
TR = "/apis/authentication.k8s.io/v1/tokenreviews"
ISSUER = tokens.DEFAULT_ISSUER


class Cluster:
    def __init__(self, base: str, data_dir: Path, server: APIServer) -> None:
        self.base, self.data_dir, self.server = base, data_dir, server
        self.admin_token = auth.token_for(auth.load_or_create_static_tokens(data_dir), group=auth.MASTERS)

    def ssl(self, cert: tuple[bytes, bytes] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.data_dir / "ca.crt"))
        if cert is not None:
            crt, key = self.data_dir / "client.crt", self.data_dir / "client.key"
            crt.write_bytes(cert[0])
            key.write_bytes(cert[1])
            ctx.load_cert_chain(crt, key)
        return ctx

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                   cert: tuple[bytes, bytes] | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as s:
            async with s.request(method, self.base + path, json=body, headers=headers, ssl=self.ssl(cert)) as r:
                try:
                    return r.status, await r.json(content_type=None)
                except ValueError:
                    return r.status, await r.text()

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        code, out = await self.call(method, path, body, token=self.admin_token)
        assert code < 300, (code, out)
        return out

    async def token(self, sa: str = "robot", **spec: Any) -> str:
        out = await self.admin("POST", f"{SA}/{sa}/token", {"apiVersion": "authentication.k8s.io/v1",
                                                            "kind": "TokenRequest", "spec": spec})
        return out["status"]["token"]

    async def whoami(self, **how: Any) -> tuple[int, Any]:
        code, out = await self.call("POST", SSR, {"apiVersion": "authentication.k8s.io/v1",
                                                  "kind": "SelfSubjectReview"}, **how)
        return code, (out.get("status", {}).get("userInfo") if code == 201 else out)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    config = ServerConfig(data_dir=tmp_path, bind_address="127.0.0.1", port=0)
    ctx = main.tls_context(config)
    store = open_store("sqlite", data_dir=str(tmp_path))
    server = APIServer(store, config)
    await server.start()
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = TimedTCPSite(runner, "127.0.0.1", 0, ssl_context=ctx, timeouts=ConnectionTimeouts())
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    c = Cluster(f"https://127.0.0.1:{port}", tmp_path, server)
    await c.admin("POST", SA, {"metadata": {"name": "robot"}})
    try:
        yield c
    finally:
        await runner.cleanup()
        await server.stop()
        await store.close()


def _pod(name: str, sa: str = "robot") -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"serviceAccountName": sa,
                                                 "containers": [{"name": "c", "image": "busybox:1.36"}]}}


# -- client certificates ----------------------------------------------------------

async def test_a_client_certificate_names_the_user_and_its_groups(cluster: Cluster):
    alice = certs.issue_client_cert(cluster.data_dir, user="alice", groups=("devs", "qa"))
    code, info = await cluster.whoami(cert=alice)
    assert code == 201, info
    assert info == {"username": "alice", "groups": ["devs", "qa", "system:authenticated"]}


async def test_the_admin_kubeconfig_carries_a_kubeadm_style_admin_certificate(cluster: Cluster):
    config = ServerConfig(data_dir=cluster.data_dir, bind_address="127.0.0.1", port=6443)
    path = main.write_admin_kubeconfig(config)
    assert path.stat().st_mode & 0o777 == 0o600
    import yaml
    kc = yaml.safe_load(path.read_text())
    user = kc["users"][0]
    assert user["name"] == "kubernetes-admin" and kc["current-context"] == "kubernetes-admin@kubepy"
    cert = (base64.b64decode(user["user"]["client-certificate-data"]),
            base64.b64decode(user["user"]["client-key-data"]))
    code, info = await cluster.whoami(cert=cert)
    assert info == {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]}
    # an admin by certificate may do what an admin may
    code, out = await cluster.call("GET", "/api/v1/namespaces/kube-system/secrets", cert=cert)
    assert code == 200, out
    # the certificate is reused across restarts, not re-issued
    main.write_admin_kubeconfig(config)
    assert yaml.safe_load(path.read_text())["users"][0]["user"]["client-certificate-data"] == \
        user["user"]["client-certificate-data"]


async def test_the_scheduler_and_controller_manager_have_their_own_certificates(cluster: Cluster):
    """kubeadm's scheduler.conf and controller-manager.conf: each component's own client certificate,
    no token, not system:masters; the kubepy client presents the certificate."""
    import dataclasses
    import yaml
    from kubepy.client import Client, ClientConfig, ForbiddenError
    config = ServerConfig(data_dir=cluster.data_dir, bind_address="127.0.0.1", port=6443)
    main.write_admin_kubeconfig(config)
    for stem, user in (("scheduler", "system:kube-scheduler"),
                       ("controller-manager", "system:kube-controller-manager")):
        path = cluster.data_dir / f"{stem}.kubeconfig"
        assert path.stat().st_mode & 0o777 == 0o600
        kc = yaml.safe_load(path.read_text())
        assert kc["users"][0]["name"] == user and "token" not in kc["users"][0]["user"]
        cfg = dataclasses.replace(ClientConfig.from_kubeconfig(path), server=cluster.base)
        async with Client(cfg) as client:
            review = await client.create("selfsubjectreviews", {"apiVersion": "authentication.k8s.io/v1",
                                                                "kind": "SelfSubjectReview"})
            assert review["status"]["userInfo"] == {"username": user, "groups": ["system:authenticated"]}
            with pytest.raises(ForbiddenError):
                await client.create("pods", _pod("by-" + stem), namespace=NS)
            with pytest.raises(ForbiddenError):  # only the controllers' own identities write workloads
                await client.delete("serviceaccounts", "robot", namespace=NS)


async def test_a_certificate_from_another_ca_is_refused(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory):
    # Refused by the authenticator, as upstream: 401 with a Status body, not a failed TLS handshake.
    other = tmp_path_factory.mktemp("other-ca")
    mallory = certs.issue_client_cert(other, user="kubernetes-admin", groups=("system:masters",))
    for path in (SSR, "/api/v1/namespaces/kube-system/secrets", "/healthz"):
        code, out = await cluster.call("POST" if path == SSR else "GET", path, cert=mallory,
                                       body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
                                       if path == SSR else None)
        assert code == 401, (path, out)
        assert out["kind"] == "Status" and out["reason"] == "Unauthorized" and out["code"] == 401, out
    # a valid token beside the bad certificate still authenticates (the union of authenticators)
    code, info = await cluster.whoami(cert=mallory, token=cluster.admin_token)
    assert code == 201 and info["username"] == "admin", info


async def test_an_expired_certificate_is_refused(cluster: Cluster):
    import datetime as dt
    old = certs.issue_client_cert(cluster.data_dir, user="alice", groups=(), validity=dt.timedelta(minutes=-1))
    code, out = await cluster.whoami(cert=old)
    assert code == 401 and out["reason"] == "Unauthorized", out
    fresh = certs.issue_client_cert(cluster.data_dir, user="alice", groups=())
    code, info = await cluster.whoami(cert=fresh)
    assert code == 201 and info["username"] == "alice", info


def test_certificate_verification_reasons(tmp_path: Path) -> None:
    import datetime as dt
    from cryptography import x509
    from kubepy.tlsclientauth import CertificateRefused, verify_client_certificate
    ca, _ = certs.ensure_ca(tmp_path / "a") if (tmp_path / "a").mkdir() is None else (None, None)
    other = tmp_path / "b"
    other.mkdir()

    def der(pem: bytes) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding
        return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)

    good = der(certs.issue_client_cert(tmp_path / "a", user="u", groups=("g1", "g2"))[0])
    assert verify_client_certificate(good, ca) == ("u", ("g1", "g2"))
    stranger = der(certs.issue_client_cert(other, user="u", groups=())[0])
    with pytest.raises(CertificateRefused, match="signed by unknown authority"):
        verify_client_certificate(stranger, ca)
    with pytest.raises(CertificateRefused, match="expired or is not yet valid: current time .* is after"):
        verify_client_certificate(good, ca, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=400))
    with pytest.raises(CertificateRefused, match="malformed"):
        verify_client_certificate(b"junk", ca)


async def test_anonymous_callers_reach_only_health_version_and_oidc_discovery(cluster: Cluster):
    for path in ("/healthz", "/livez", "/readyz", "/version", "/.well-known/openid-configuration",
                 "/openid/v1/jwks"):
        code, _ = await cluster.call("GET", path)
        assert code == 200, path
    for path in ("/api/v1/namespaces", "/api", SA):
        code, out = await cluster.call("GET", path)
        assert code == 401 and out["reason"] == "Unauthorized", path
    code, _ = await cluster.whoami()
    assert code == 401


# -- TokenRequest and service-account JWTs ------------------------------------------

async def test_a_requested_token_carries_kubernetes_claims(cluster: Cluster):
    sa = await cluster.admin("GET", f"{SA}/robot")
    out = await cluster.admin("POST", f"{SA}/robot/token", {"spec": {"audiences": ["vault", ISSUER],
                                                                     "expirationSeconds": 1200}})
    assert out["kind"] == "TokenRequest" and out["apiVersion"] == "authentication.k8s.io/v1"
    token = out["status"]["token"]
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "RS256" and header["kid"] == cluster.server.sa_tokens.key.kid
    assert claims["iss"] == ISSUER and claims["aud"] == ["vault", ISSUER]
    assert claims["sub"] == "system:serviceaccount:default:robot"
    assert claims["exp"] - claims["iat"] == 1200 and claims["nbf"] == claims["iat"] and claims["jti"]
    assert claims["kubernetes.io"] == {"namespace": "default",
                                       "serviceaccount": {"name": "robot", "uid": sa["metadata"]["uid"]}}
    expires = dt.datetime.fromisoformat(out["status"]["expirationTimestamp"].replace("Z", "+00:00"))
    assert int(expires.timestamp()) == claims["exp"]
    # the default: an hour, for the API server's own audience
    claims = jwt.decode(await cluster.token(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600 and claims["aud"] == [ISSUER]


async def test_a_service_account_token_authenticates_as_the_service_account(cluster: Cluster):
    sa = await cluster.admin("GET", f"{SA}/robot")
    token = await cluster.token()
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    code, info = await cluster.whoami(token=token)
    assert code == 201
    assert info == {"username": "system:serviceaccount:default:robot", "uid": sa["metadata"]["uid"],
                    "groups": ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"],
                    "extra": {"authentication.kubernetes.io/credential-id": [f"JTI={jti}"]}}


async def test_token_request_validation(cluster: Cluster):
    code, out = await cluster.call("POST", f"{SA}/robot/token", {"spec": {"expirationSeconds": 60}},
                                   token=cluster.admin_token)
    assert code == 422 and out["reason"] == "Invalid"
    assert out["message"] == ('TokenRequest.authentication.k8s.io "robot" is invalid: spec.expirationSeconds: '
                              'Invalid value: 60: may not specify a duration less than 10 minutes')
    assert out["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.expirationSeconds",
                                         "message": "Invalid value: 60: may not specify a duration less than "
                                                    "10 minutes"}]
    code, out = await cluster.call("POST", f"{SA}/robot/token", {"spec": {"expirationSeconds": (1 << 32) + 1}},
                                   token=cluster.admin_token)
    assert code == 422 and "may not specify a duration larger than 2^32 seconds" in out["message"]
    code, out = await cluster.call("POST", f"{SA}/nobody/token", {"spec": {}}, token=cluster.admin_token)
    assert code == 404 and out["message"] == 'serviceaccounts "nobody" not found'
    code, out = await cluster.call("POST", f"{SA}/robot/token", {"spec": {"boundObjectRef": {
        "kind": "ConfigMap", "apiVersion": "v1", "name": "x"}}}, token=cluster.admin_token)
    assert code == 400, out
    await cluster.admin("POST", PODS, _pod("p"))
    code, out = await cluster.call("POST", f"{SA}/robot/token", {"spec": {"boundObjectRef": {
        "kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "not-its-uid"}}}, token=cluster.admin_token)
    assert code == 409 and "does not match the UID in record" in out["message"]
    await cluster.admin("POST", SA, {"metadata": {"name": "other"}})
    code, out = await cluster.call("POST", f"{SA}/other/token", {"spec": {"boundObjectRef": {
        "kind": "Pod", "apiVersion": "v1", "name": "p"}}}, token=cluster.admin_token)
    assert code == 400 and out["message"] == ("cannot bind token for serviceaccount 'other' to pod running "
                                              "with serviceaccount 'robot'")


async def test_a_pod_bound_token_stops_working_when_the_pod_is_deleted(cluster: Cluster):
    pod = await cluster.admin("POST", PODS, _pod("worker"))
    token = await cluster.token(boundObjectRef={"kind": "Pod", "apiVersion": "v1", "name": "worker"})
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["kubernetes.io"]["pod"] == {"name": "worker", "uid": pod["metadata"]["uid"]}
    code, info = await cluster.whoami(token=token)
    assert code == 201
    assert info["extra"]["authentication.kubernetes.io/pod-name"] == ["worker"]
    assert info["extra"]["authentication.kubernetes.io/pod-uid"] == [pod["metadata"]["uid"]]
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}"  # the account may list pods (RBAC)
    await cluster.admin("POST", f"{rbac}/roles", {"metadata": {"name": "lister"}, "rules": [
        {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}]})
    await cluster.admin("POST", f"{rbac}/rolebindings", {"metadata": {"name": "robot-lister"}, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lister"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": NS}]})
    for _ in range(100):  # the binding reaches the authorizer through a watch
        code, _ = await cluster.call("GET", PODS, token=token)
        if code == 200:
            break
        await asyncio.sleep(0.05)
    assert code == 200
    await cluster.admin("DELETE", f"{PODS}/worker")
    code, out = await cluster.call("GET", PODS, token=token)
    assert code == 401 and out["reason"] == "Unauthorized"
    # a new pod of the same name is another pod
    await cluster.admin("POST", PODS, _pod("worker"))
    code, _ = await cluster.call("GET", PODS, token=token)
    assert code == 401


async def test_a_token_of_a_deleted_or_recreated_service_account_is_refused(cluster: Cluster):
    token = await cluster.token()
    await cluster.admin("DELETE", f"{SA}/robot")
    code, _ = await cluster.whoami(token=token)
    assert code == 401
    await cluster.admin("POST", SA, {"metadata": {"name": "robot"}})
    code, _ = await cluster.whoami(token=token)
    assert code == 401
    code, _ = await cluster.whoami(token=await cluster.token())
    assert code == 201


async def test_an_expired_token_is_refused(cluster: Cluster):
    sa = await cluster.admin("GET", f"{SA}/robot")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    claims = tokens.bound_claims(issuer=ISSUER, audiences=[ISSUER], namespace=NS,
                                 sa=tokens.BoundRef("robot", sa["metadata"]["uid"]), expiration_seconds=3600, now=past)
    code, out = await cluster.whoami(token=cluster.server.sa_tokens.key.sign(claims))
    assert code == 401 and out["message"] == "Unauthorized"
    fresh = tokens.bound_claims(issuer=ISSUER, audiences=[ISSUER], namespace=NS,
                                sa=tokens.BoundRef("robot", sa["metadata"]["uid"]), expiration_seconds=3600)
    code, _ = await cluster.whoami(token=cluster.server.sa_tokens.key.sign(fresh))
    assert code == 201


async def test_a_token_for_another_audience_is_refused(cluster: Cluster):
    token = await cluster.token(audiences=["vault"])
    code, _ = await cluster.whoami(token=token)
    assert code == 401


async def test_a_token_signed_by_another_key_is_refused(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory):
    sa = await cluster.admin("GET", f"{SA}/robot")
    other = tokens.ensure_signing_key(tmp_path_factory.mktemp("other-key"))
    claims = tokens.bound_claims(issuer=ISSUER, audiences=[ISSUER], namespace=NS,
                                 sa=tokens.BoundRef("robot", sa["metadata"]["uid"]), expiration_seconds=3600)
    code, _ = await cluster.whoami(token=other.sign(claims))
    assert code == 401


# -- OIDC discovery -----------------------------------------------------------------

async def test_another_system_verifies_a_token_with_the_jwks_alone(cluster: Cluster):
    token = await cluster.token(audiences=["vault"])
    code, config = await cluster.call("GET", "/.well-known/openid-configuration")
    assert code == 200
    assert config == {"issuer": ISSUER, "jwks_uri": f"{cluster.base.replace('https://', 'https://')}/openid/v1/jwks",
                      "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
                      "id_token_signing_alg_values_supported": ["RS256"]}
    code, keys = await cluster.call("GET", "/openid/v1/jwks")
    assert code == 200 and [k["kid"] for k in keys["keys"]] == [jwt.get_unverified_header(token)["kid"]]
    jwk_set = jwt.PyJWKSet.from_dict(keys)
    key = next(k for k in jwk_set.keys if k.key_id == jwt.get_unverified_header(token)["kid"])
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience="vault", issuer=config["issuer"])
    assert claims["sub"] == "system:serviceaccount:default:robot"
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key.key, algorithms=["RS256"], audience="someone-else")


# -- reviews ------------------------------------------------------------------------

async def test_token_review_answers_who_a_token_is(cluster: Cluster):
    token = await cluster.token(audiences=["vault"])
    out = await cluster.admin("POST", TR, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                           "spec": {"token": token, "audiences": ["vault"]}})
    assert out["kind"] == "TokenReview" and out["status"]["authenticated"] is True
    assert out["status"]["user"]["username"] == "system:serviceaccount:default:robot"
    assert out["status"]["audiences"] == ["vault"]
    # for the API server's audience, that token is no good
    out = await cluster.admin("POST", TR, {"spec": {"token": token}})
    assert not out["status"].get("authenticated") and "invalid bearer token" in out["status"]["error"]
    out = await cluster.admin("POST", TR, {"spec": {"token": "nonsense"}})
    assert not out["status"].get("authenticated") and out["status"]["error"]
    # the static admin token is reviewed too
    out = await cluster.admin("POST", TR, {"spec": {"token": cluster.admin_token}})
    assert out["status"]["authenticated"] and out["status"]["user"]["username"] == "admin"
    code, out = await cluster.call("POST", TR, {"spec": {}}, token=cluster.admin_token)
    assert code == 400 and out["message"] == "token is required for TokenReview in authentication"
    # nothing is stored: reviews cannot be listed or read
    code, _ = await cluster.call("GET", TR, token=cluster.admin_token)
    assert code == 405


async def test_reviews_are_discovered_as_create_only(cluster: Cluster):
    doc = await cluster.admin("GET", "/apis/authentication.k8s.io/v1")
    by_name = {r["name"]: r for r in doc["resources"]}
    assert by_name["tokenreviews"]["verbs"] == ["create"] and by_name["selfsubjectreviews"]["verbs"] == ["create"]
    assert by_name["tokenreviews"]["namespaced"] is False
    core = await cluster.admin("GET", "/api/v1")
    token = next(r for r in core["resources"] if r["name"] == "serviceaccounts/token")
    assert token == {"name": "serviceaccounts/token", "singularName": "", "namespaced": True,
                     "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest",
                     "verbs": ["create"]}


async def test_a_legacy_token_secret_is_filled_and_authenticates(cluster: Cluster):
    sa = await cluster.admin("GET", f"{SA}/robot")
    secret = await cluster.admin("POST", f"/api/v1/namespaces/{NS}/secrets", {
        "metadata": {"name": "robot-token", "annotations": {"kubernetes.io/service-account.name": "robot"}},
        "type": "kubernetes.io/service-account-token"})
    assert secret["metadata"]["annotations"]["kubernetes.io/service-account.uid"] == sa["metadata"]["uid"]
    assert base64.b64decode(secret["data"]["namespace"]) == b"default"
    assert base64.b64decode(secret["data"]["ca.crt"]) == (cluster.data_dir / "ca.crt").read_bytes()
    token = base64.b64decode(secret["data"]["token"]).decode()
    code, info = await cluster.whoami(token=token)
    assert code == 201 and info["username"] == "system:serviceaccount:default:robot"
    await cluster.admin("DELETE", f"/api/v1/namespaces/{NS}/secrets/robot-token")
    code, _ = await cluster.whoami(token=token)
    assert code == 401


async def test_malformed_token_requests_and_reviews_are_bad_requests(cluster: Cluster):
    for body in ({"spec": "x"}, {"spec": {"boundObjectRef": "p"}}, {"spec": {"boundObjectRef": {"name": 1}}},
                 {"spec": {"expirationSeconds": "ten"}}, {"spec": {"audiences": "x"}}, [1]):
        code, out = await cluster.call("POST", f"{SA}/robot/token", body, token=cluster.admin_token)
        assert code == 400, (body, code, out)
    for body in ({"spec": "x"}, {"spec": {"token": 5}}):
        code, out = await cluster.call("POST", TR, body, token=cluster.admin_token)
        assert code == 400, (body, code, out)
