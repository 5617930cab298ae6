"""Service-account tokens: signed JWTs with Kubernetes' claims, and the key that signs them.

Role: pure token logic for the API server (``serviceaccounts.py`` drives
it): the RSA signing key made once in the data dir (``sa.key``, 0600, as
kubeadm names it), claims as ``pkg/serviceaccount/claims.go`` writes them,
issuing (RS256, ``kid`` = base64url SHA-256 of the DER public key, as
upstream), verifying signature/issuer/expiry/audience, and the OIDC
discovery documents (``/.well-known/openid-configuration``,
``/openid/v1/jwks``) other systems verify tokens with.

Two token shapes are accepted, as Kubernetes does:

* bound tokens (TokenRequest, projected volumes): ``iss`` = the issuer,
  ``aud``, ``exp``/``iat``/``nbf``/``jti``, ``kubernetes.io`` {namespace,
  serviceaccount, pod|secret|node};
* legacy Secret tokens (``kubernetes.io/service-account-token``): ``iss`` =
  ``kubernetes/serviceaccount``, flat ``kubernetes.io/serviceaccount/*``
  claims, no audience, no expiry.

Verification here stops at what the token says; whether the objects it
names still exist with those uids is ``serviceaccounts.py``'s business.
Errors: ``TokenInvalid(reason)`` (the caller answers 401).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kubepy.privatefiles import write_private

__all__ = [
    "DEFAULT_ISSUER",
    "LEGACY_ISSUER",
    "SA_PREFIX",
    "BoundRef",
    "SigningKey",
    "TokenInvalid",
    "Verified",
    "bound_claims",
    "ensure_signing_key",
    "jwks",
    "key_id",
    "legacy_claims",
    "openid_configuration",
    "service_account_username",
    "verify",
]

DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
LEGACY_ISSUER = "kubernetes/serviceaccount"
SA_PREFIX = "system:serviceaccount:"
LEEWAY = 60  # seconds of clock skew tolerated on exp/nbf/iat (upstream: one minute)
KEY_FILE = "sa.key"


class TokenInvalid(Exception):
    """A token that must not authenticate; ``str()`` says why (for logs and TokenReview)."""


@dataclass(frozen=True)
class SigningKey:
    private: rsa.RSAPrivateKey

    @property
    def public(self) -> rsa.RSAPublicKey:
        return self.private.public_key()

    @property
    def kid(self) -> str:
        return key_id(self.public)

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": self.kid})


def ensure_signing_key(data_dir: Path) -> SigningKey:
    """The API server's service-account signing key, created (RSA 2048, 0600) on first start."""
    path = data_dir / KEY_FILE
    if path.exists():
        loaded = serialization.load_pem_private_key(path.read_bytes(), None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError(f"{path} is not an RSA private key")
        return SigningKey(loaded)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()))
    return SigningKey(key)


def key_id(public: rsa.RSAPublicKey) -> str:
    """Upstream's keyIDFromPublicKey: unpadded base64url of SHA-256 over the PKIX DER public key."""
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def service_account_username(namespace: str, name: str) -> str:
    return f"{SA_PREFIX}{namespace}:{name}"


@dataclass(frozen=True)
class BoundRef:
    """An object a token is bound to (name, uid), from the store at issue time."""
    name: str
    uid: str


def bound_claims(*, issuer: str, audiences: list[str], namespace: str, sa: BoundRef, expiration_seconds: int,
                 pod: BoundRef | None = None, secret: BoundRef | None = None, node: BoundRef | None = None,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    """The claims of a bound token, as upstream's ``serviceaccount.Claims``."""
    now = now or dt.datetime.now(dt.UTC)
    iat = int(now.timestamp())
    k8s: dict[str, Any] = {"namespace": namespace, "serviceaccount": {"name": sa.name, "uid": sa.uid}}
    for key, ref in (("pod", pod), ("secret", secret), ("node", node)):
        if ref is not None:
            k8s[key] = {"name": ref.name, "uid": ref.uid}
    return {
        "aud": list(audiences),
        "exp": iat + int(expiration_seconds),
        "iat": iat,
        "iss": issuer,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": k8s,
        "nbf": iat,
        "sub": service_account_username(namespace, sa.name),
    }


def legacy_claims(*, namespace: str, sa: BoundRef, secret_name: str) -> dict[str, Any]:
    """What a legacy ``kubernetes.io/service-account-token`` Secret's token says (no expiry, no audience)."""
    return {
        "iss": LEGACY_ISSUER,
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/secret.name": secret_name,
        "kubernetes.io/serviceaccount/service-account.name": sa.name,
        "kubernetes.io/serviceaccount/service-account.uid": sa.uid,
        "sub": service_account_username(namespace, sa.name),
    }


@dataclass(frozen=True)
class Verified:
    """A token whose signature, issuer, times and audience are good; the objects it names are still to check."""
    namespace: str
    sa: BoundRef
    pod: BoundRef | None = None
    secret: BoundRef | None = None
    node: BoundRef | None = None
    jti: str = ""
    audiences: tuple[str, ...] = ()
    legacy: bool = False


def _ref(value: Any, what: str) -> BoundRef:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not isinstance(value.get("uid"), str):
        raise TokenInvalid(f"service account token claims are malformed ({what})")
    return BoundRef(value["name"], value["uid"])


def verify(token: str, key: SigningKey, *, issuers: list[str], audiences: list[str],
           now: dt.datetime | None = None) -> Verified:
    """Checks a token's signature and claims; raises TokenInvalid. ``audiences``: the
    API server's (or a TokenReview's); the answer carries the ones that matched."""
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as e:
        raise TokenInvalid(f"not a JWT: {e}") from None
    iss = unverified.get("iss")
    if iss == LEGACY_ISSUER:
        return _verify_legacy(token, key)
    if iss not in issuers:
        raise TokenInvalid(f"unknown issuer {iss!r}")
    if header.get("kid") not in (None, "", key.kid):
        raise TokenInvalid("the token was signed by a key this server does not know")
    try:
        claims = jwt.decode(token, key.public, algorithms=["RS256"], issuer=iss, leeway=LEEWAY,
                            options={"require": ["exp", "iat", "nbf", "sub"], "verify_aud": False})
    except jwt.ExpiredSignatureError:
        raise TokenInvalid("service account token has expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenInvalid("service account token is not valid yet") from None
    except jwt.PyJWTError as e:
        raise TokenInvalid(f"invalid service account token: {e}") from None
    aud = claims.get("aud")
    token_auds = [aud] if isinstance(aud, str) else list(aud or [])
    matched = tuple(a for a in audiences if a in token_auds)
    if not matched:
        raise TokenInvalid("token audiences " + repr(token_auds) + " is invalid for the target audiences "
                           + repr(list(audiences)))
    k8s = claims.get("kubernetes.io")
    if not isinstance(k8s, dict) or not isinstance(k8s.get("namespace"), str):
        raise TokenInvalid("service account token claims are malformed (kubernetes.io)")
    v = Verified(namespace=k8s["namespace"], sa=_ref(k8s.get("serviceaccount"), "serviceaccount"),
                 pod=_ref(k8s["pod"], "pod") if "pod" in k8s else None,
                 secret=_ref(k8s["secret"], "secret") if "secret" in k8s else None,
                 node=_ref(k8s["node"], "node") if "node" in k8s else None,
                 jti=str(claims.get("jti") or ""), audiences=matched)
    if claims["sub"] != service_account_username(v.namespace, v.sa.name):
        raise TokenInvalid("service account token subject does not match its claims")
    return v


def _verify_legacy(token: str, key: SigningKey) -> Verified:
    try:
        claims = jwt.decode(token, key.public, algorithms=["RS256"], issuer=LEGACY_ISSUER,
                            options={"verify_aud": False, "require": ["sub"]})
    except jwt.PyJWTError as e:
        raise TokenInvalid(f"invalid service account token: {e}") from None
    p = "kubernetes.io/serviceaccount/"
    try:
        ns, secret_name = claims[p + "namespace"], claims[p + "secret.name"]
        sa = BoundRef(claims[p + "service-account.name"], claims[p + "service-account.uid"])
    except KeyError:
        raise TokenInvalid("service account token claims are malformed (legacy)") from None
    if claims["sub"] != service_account_username(ns, sa.name):
        raise TokenInvalid("service account token subject does not match its claims")
    return Verified(namespace=ns, sa=sa, secret=BoundRef(secret_name, ""), legacy=True)


def openid_configuration(*, issuer: str, jwks_uri: str) -> dict[str, Any]:
    """``/.well-known/openid-configuration``, with the fields Kubernetes serves."""
    return {
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }


def jwks(key: SigningKey) -> dict[str, Any]:
    """``/openid/v1/jwks``: the public signing key as a JSON Web Key Set."""
    nums = key.public.public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    return {"keys": [{"use": "sig", "kty": "RSA", "kid": key.kid, "alg": "RS256", "n": b64(nums.n),
                      "e": b64(nums.e)}]}
