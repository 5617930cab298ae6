"""Service accounts as identities: JWT authentication, TokenRequest, TokenReview, SelfSubjectReview.

Role: the API server's side of ``kubepy.api.tokens``. It reads the objects
a token names from storage, so a token stops working when its
ServiceAccount, bound Pod/Secret/Node is gone or was recreated (another
uid), as Kubernetes' ``pkg/serviceaccount`` validator does; it answers

* ``POST .../serviceaccounts/NAME/token`` (TokenRequest, authentication.k8s.io/v1):
  ``spec.audiences`` (default: the API server's), ``expirationSeconds``
  (default 3600, at least 600, at most 2^32), ``boundObjectRef`` Pod,
  Secret or Node (uid checked); answers ``status.token`` and
  ``status.expirationTimestamp``;
* TokenReview and SelfSubjectReview creates (nothing is stored);
* legacy ``kubernetes.io/service-account-token`` Secrets: their token,
  ``ca.crt`` and ``namespace`` are filled in when they are created (the
  tokens controller's job upstream; here the API server holds the key).

A service account's user: ``system:serviceaccount:NS:NAME`` in
``system:serviceaccounts``, ``system:serviceaccounts:NS`` (and
``system:authenticated``), uid = the ServiceAccount's uid, extra
``authentication.kubernetes.io/{pod-name,pod-uid,node-name,node-uid,credential-id}``.

Errors: ``kubepy.api.errors`` (401 for a token that does not authenticate,
422/400/404/409 for TokenRequests, as upstream).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from typing import Any

import jwt

from kubepy.api import auth, errors, objects, tokens
from kubepy.api.storage import Storage
from kubepy.kinds import by_plural
from kubepy.kinds.validation import Errs

log = logging.getLogger(__name__)

__all__ = ["ServiceAccountTokens", "SA_TOKEN_TYPE", "self_subject_review", "user_info"]

SA_GROUP = "system:serviceaccounts"
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
SA_UID_ANNOTATION = "kubernetes.io/service-account.uid"
EXTRA_PREFIX = "authentication.kubernetes.io/"
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600
MAX_EXPIRATION = 1 << 32
# A token bound to an object being deleted keeps working this long after the deletion began (upstream).
DELETION_GRACE = dt.timedelta(seconds=60)
AUTH_GROUP_VERSION = "authentication.k8s.io/v1"


def user_info(user: auth.User) -> dict[str, Any]:
    """A user as authentication.k8s.io's UserInfo."""
    info: dict[str, Any] = {"username": user.name}
    if user.uid:
        info["uid"] = user.uid
    if user.groups:
        info["groups"] = list(user.groups)
    if user.extra:
        info["extra"] = user.extra_map
    return info


def self_subject_review(user: auth.User) -> dict[str, Any]:
    return {"kind": "SelfSubjectReview", "apiVersion": AUTH_GROUP_VERSION,
            "metadata": {"creationTimestamp": None}, "status": {"userInfo": user_info(user)}}


class ServiceAccountTokens:
    """Issues and checks service-account JWTs against the objects in storage."""

    def __init__(self, storage: Storage, key: tokens.SigningKey, *, issuer: str = tokens.DEFAULT_ISSUER,
                 audiences: list[str] | None = None, ca_pem: bytes = b"",
                 max_expiration: int = 0) -> None:
        self.storage = storage
        self.key = key
        self.issuer = issuer
        self.audiences = list(audiences or [issuer])  # kube-apiserver's --api-audiences default to the issuer
        self.ca_pem = ca_pem
        self.max_expiration = max_expiration  # --service-account-max-token-expiration; 0: none

    # -- authentication ------------------------------------------------------
    def is_ours(self, token: str) -> bool:
        """A JWT this server's issuer (or the legacy issuer) wrote: only those are ours to accept or refuse."""
        if token.count(".") != 2:
            return False
        try:
            iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            return False
        return iss in (self.issuer, tokens.LEGACY_ISSUER)

    async def authenticate(self, token: str | None) -> auth.User | None:
        """The token's user; None when it is not one of our JWTs; 401 when it is but does not hold."""
        if not token or not self.is_ours(token):
            return None
        try:
            user, _ = await self.review(token, self.audiences)
        except tokens.TokenInvalid as e:
            log.info("refused service account token reason=%r", str(e))
            raise errors.Unauthorized("Unauthorized") from None
        return user

    async def review(self, token: str, audiences: list[str]) -> tuple[auth.User, list[str]]:
        """(user, the audiences that matched), or TokenInvalid."""
        v = tokens.verify(token, self.key, issuers=[self.issuer], audiences=audiences)
        deleted_before = objects.now() - DELETION_GRACE
        sa = await self._live("serviceaccounts", v.namespace, v.sa, deleted_before, "service account")
        extra: list[tuple[str, tuple[str, ...]]] = []
        if v.legacy:
            secret = await self._get("secrets", v.namespace, v.secret.name if v.secret else "")
            data = (secret or {}).get("data") or {}
            if secret is None or _b64(data.get("token")) != token:
                raise tokens.TokenInvalid(f"token secret {v.namespace}/{v.secret.name if v.secret else ''} "
                                          "no longer holds this token")
        else:
            if v.pod is not None:
                await self._live("pods", v.namespace, v.pod, deleted_before, "pod")
                extra += [(EXTRA_PREFIX + "pod-name", (v.pod.name,)), (EXTRA_PREFIX + "pod-uid", (v.pod.uid,))]
            if v.secret is not None:
                await self._live("secrets", v.namespace, v.secret, deleted_before, "secret")
            if v.node is not None:
                if v.pod is None:  # a pod-bound token names its pod's node for information only
                    await self._live("nodes", None, v.node, deleted_before, "node")
                extra += [(EXTRA_PREFIX + "node-name", (v.node.name,)), (EXTRA_PREFIX + "node-uid", (v.node.uid,))]
            if v.jti:
                extra.append((EXTRA_PREFIX + "credential-id", (f"JTI={v.jti}",)))
        user = auth.User(tokens.service_account_username(v.namespace, v.sa.name),
                         (SA_GROUP, f"{SA_GROUP}:{v.namespace}", auth.AUTHENTICATED),
                         uid=(sa.get("metadata") or {}).get("uid", ""), extra=tuple(sorted(extra)))
        return user, list(v.audiences)

    async def _get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return await self.storage.get(by_plural(plural), namespace, name)
        except errors.NotFound:
            return None

    async def _live(self, plural: str, namespace: str | None, ref: tokens.BoundRef, deleted_before: dt.datetime,
                    what: str) -> dict[str, Any]:
        obj = await self._get(plural, namespace, ref.name)
        where = f"{namespace}/{ref.name}" if namespace else ref.name
        if obj is None:
            raise tokens.TokenInvalid(f"{what} {where} has been deleted")
        meta = obj.get("metadata") or {}
        if meta.get("uid") != ref.uid:
            raise tokens.TokenInvalid(f"{what} UID ({meta.get('uid')}) does not match claim ({ref.uid})")
        stamp = meta.get("deletionTimestamp")
        if stamp and objects.parse_time(stamp) < deleted_before:
            raise tokens.TokenInvalid(f"{what} {where} has been deleted")
        return obj

    # -- TokenRequest --------------------------------------------------------------
    async def token_request(self, namespace: str, name: str, body: Any) -> tuple[dict[str, Any], list[str]]:
        """(the TokenRequest answered, warnings) for ``POST serviceaccounts/NAME/token``."""
        if not isinstance(body, dict):
            raise errors.BadRequest("the body must be a TokenRequest object")
        if body.get("kind") not in (None, "", "TokenRequest") or \
                body.get("apiVersion") not in (None, "", AUTH_GROUP_VERSION):
            raise errors.BadRequest(f"the body must be a TokenRequest ({AUTH_GROUP_VERSION}), "
                                    f"not {body.get('kind')} ({body.get('apiVersion')})")
        if not isinstance(body.get("spec") or {}, dict) or not isinstance(body.get("metadata") or {}, dict):
            raise errors.BadRequest('TokenRequest in version "v1" cannot be handled as a TokenRequest: '
                                    'spec and metadata must be objects')
        spec = dict(body.get("spec") or {})
        exp = spec.get("expirationSeconds")
        if exp is None:
            exp = spec["expirationSeconds"] = DEFAULT_EXPIRATION
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise errors.BadRequest(f'TokenRequest in version "v1" cannot be handled as a TokenRequest: '
                                    f'spec.expirationSeconds: expected an integer, got {exp!r}')
        errs = Errs()
        if exp < MIN_EXPIRATION:
            errs.invalid("spec.expirationSeconds", exp, "may not specify a duration less than 10 minutes")
        if exp > MAX_EXPIRATION:
            errs.invalid("spec.expirationSeconds", exp, "may not specify a duration larger than 2^32 seconds")
        audiences = spec.get("audiences") or []
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise errors.BadRequest("spec.audiences must be a list of strings")
        if errs:
            err = errors.Invalid("TokenRequest", name, list(errs), group="authentication.k8s.io")
            err.message = err.message.replace("TokenRequest ", "TokenRequest.authentication.k8s.io ", 1)  # GroupKind
            raise err

        sa = await self.storage.get(by_plural("serviceaccounts"), namespace, name)
        sa_ref = tokens.BoundRef(name, sa["metadata"]["uid"])
        pod_ref = secret_ref = node_ref = None
        ref = spec.get("boundObjectRef")
        if ref is not None and (not isinstance(ref, dict) or
                                not all(isinstance(v, str) for v in ref.values())):
            raise errors.BadRequest('TokenRequest in version "v1" cannot be handled as a TokenRequest: '
                                    'spec.boundObjectRef must be an object of strings')
        if ref:
            kind, api_version, ref_name = ref.get("kind"), ref.get("apiVersion") or "v1", ref.get("name") or ""
            if api_version != "v1" or kind not in ("Pod", "Secret", "Node"):
                raise errors.BadRequest(f"cannot bind token for serviceaccount {name!r} to object of kind "
                                        f"{kind!r} (apiVersion {api_version!r})")
            obj = await self.storage.get(by_plural(kind.lower() + "s"), None if kind == "Node" else namespace,
                                         ref_name)
            uid = obj["metadata"]["uid"]
            if ref.get("uid") and ref["uid"] != uid:
                raise errors.Conflict(
                    f'Operation cannot be fulfilled on {kind} "{ref_name}": the UID in the bound object reference '
                    f'({ref["uid"]}) does not match the UID in record ({uid}). The object might have been deleted '
                    f'and then recreated')
            spec["boundObjectRef"] = {**ref, "apiVersion": api_version, "uid": uid}
            if kind == "Pod":
                pod_sa = (obj.get("spec") or {}).get("serviceAccountName") or "default"
                if pod_sa != name:
                    raise errors.BadRequest(f"cannot bind token for serviceaccount {name!r} to pod running with "
                                            f"serviceaccount {pod_sa!r}")
                pod_ref = tokens.BoundRef(ref_name, uid)
                node_name = (obj.get("spec") or {}).get("nodeName")
                node = await self._get("nodes", None, node_name) if node_name else None
                if node is not None:
                    node_ref = tokens.BoundRef(node_name, node["metadata"]["uid"])
            elif kind == "Secret":
                secret_ref = tokens.BoundRef(ref_name, uid)
            else:
                node_ref = tokens.BoundRef(ref_name, uid)
        warnings = []
        if self.max_expiration and exp > self.max_expiration:
            warnings.append(f"requested expiration of {exp} seconds shortened to {self.max_expiration} seconds")
            exp = spec["expirationSeconds"] = self.max_expiration
        if not audiences:
            audiences = spec["audiences"] = list(self.audiences)
        claims = tokens.bound_claims(issuer=self.issuer, audiences=audiences, namespace=namespace, sa=sa_ref,
                                     expiration_seconds=exp, pod=pod_ref, secret=secret_ref, node=node_ref)
        token = self.key.sign(claims)
        log.info("issued service account token sa=%s/%s jti=%s exp=%ds bound=%s", namespace, name, claims["jti"],
                 exp, f"{ref.get('kind')}/{ref.get('name')}" if ref else "-")
        meta = dict(body.get("metadata") or {})
        meta.update({"name": name, "namespace": namespace, "creationTimestamp": None})
        out = {"kind": "TokenRequest", "apiVersion": AUTH_GROUP_VERSION, "metadata": meta, "spec": spec,
               "status": {"token": token, "expirationTimestamp": objects.rfc3339(
                   dt.datetime.fromtimestamp(claims["exp"], dt.UTC))}}
        return out, warnings

    # -- TokenReview --------------------------------------------------------------
    async def token_review(self, body: dict[str, Any], authn: Any) -> dict[str, Any]:
        """Answers a TokenReview. ``authn(token)`` is the API server's own chain for non-JWT tokens."""
        spec = body.get("spec") or {}
        token = spec.get("token") if isinstance(spec, dict) else None
        if not token or not isinstance(token, str):
            raise errors.BadRequest("token is required for TokenReview in authentication")
        wanted = [a for a in spec.get("audiences") or [] if isinstance(a, str)]
        audiences = list(wanted) or list(self.audiences)
        status: dict[str, Any] = {"user": {}}
        try:
            if self.is_ours(token):
                user, matched = await self.review(token, audiences)
            else:
                found = await authn(token)
                if found is None:
                    raise tokens.TokenInvalid("invalid bearer token")
                # Tokens that are not JWTs carry no audience: they are good for the API server's own.
                if not set(audiences) & set(self.audiences):
                    raise tokens.TokenInvalid("token audiences is invalid for the target audiences")
                user, matched = auth.with_authenticated_group(found), [a for a in audiences if a in self.audiences]
            status = {"authenticated": True, "user": user_info(user)}
            if wanted:
                status["audiences"] = matched
            else:
                status["audiences"] = list(self.audiences)
        except (tokens.TokenInvalid, errors.Unauthorized) as e:
            status["error"] = f"[invalid bearer token, {e}]" if isinstance(e, tokens.TokenInvalid) and \
                str(e) != "invalid bearer token" else "[invalid bearer token]"
        meta = dict(body.get("metadata") or {})
        meta.setdefault("creationTimestamp", None)
        return {"kind": "TokenReview", "apiVersion": AUTH_GROUP_VERSION, "metadata": meta,
                "spec": spec, "status": status}

    # -- legacy Secret tokens --------------------------------------------------------
    async def fill_legacy_secret(self, namespace: str, secret: dict[str, Any]) -> dict[str, Any]:
        """A new ``kubernetes.io/service-account-token`` Secret naming an existing ServiceAccount gets
        its token, ``ca.crt`` and ``namespace`` (and the account's uid annotation), as upstream's
        tokens controller writes them; any other Secret is returned as it is."""
        if secret.get("type") != SA_TOKEN_TYPE:
            return secret
        meta = secret.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        sa_name = annotations.get(SA_NAME_ANNOTATION)
        data = secret.get("data") or {}
        if not sa_name or not meta.get("name") or data.get("token"):
            return secret
        sa = await self._get("serviceaccounts", namespace, sa_name)
        if sa is None:
            return secret
        sa_ref = tokens.BoundRef(sa_name, sa["metadata"]["uid"])
        token = self.key.sign(tokens.legacy_claims(namespace=namespace, sa=sa_ref, secret_name=meta["name"]))
        out = dict(secret)
        out["metadata"] = {**meta, "annotations": {**annotations, SA_UID_ANNOTATION: sa_ref.uid}}
        out["data"] = {**data, "token": _enc(token.encode()), "namespace": _enc(namespace.encode()),
                       "ca.crt": _enc(self.ca_pem)}
        log.info("filled service account token secret=%s/%s sa=%s", namespace, meta["name"], sa_name)
        return out

    # -- OIDC discovery --------------------------------------------------------------
    def openid_configuration(self, host: str) -> dict[str, Any]:
        return tokens.openid_configuration(issuer=self.issuer, jwks_uri=f"https://{host}/openid/v1/jwks")

    def jwks(self) -> dict[str, Any]:
        return tokens.jwks(self.key)


def _enc(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _b64(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value).decode()
    except ValueError:
        return None
