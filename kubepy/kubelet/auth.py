"""Who may call the kubelet's HTTPS API, and for what: upstream's kubelet authentication
(``--client-ca-file``, ``authentication.webhook``) and authorization (``mode: Webhook``).

Talks to: the API server, as this node (``system:node:<name>``), for
``authentication.k8s.io/v1`` TokenReviews and ``authorization.k8s.io/v1``
SubjectAccessReviews. Everything else here is pure.

- A caller is who a client certificate signed by the cluster CA names (CN = user, O =
  groups, verified here: ``kubepy.tlsclientauth``), else who its bearer token is according
  to a TokenReview; neither is ``401 Unauthorized`` (no anonymous access, as kubeadm sets
  ``anonymous.enabled: false``).
- What a request needs is upstream's mapping (pkg/kubelet/server/auth.go): the ``nodes``
  resource named after this node, verb from the HTTP method, subresource from the path:
  ``/stats`` → ``stats``, ``/metrics`` → ``metrics``, ``/logs`` → ``log``, ``/spec`` →
  ``spec``, anything else (container logs, exec, attach, port-forward, pod proxy, healthz)
  → ``proxy``. A SubjectAccessReview decides; refused is ``403 Forbidden`` with upstream's
  message.
- Answers are cached briefly, as the kubelet's webhook defaults: tokens 2 minutes when
  authenticated, 10 seconds when not; decisions 5 minutes when allowed, 30 seconds when not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from cryptography import x509

from kubepy.tlsclientauth import CertificateRefused, verify_client_certificate

log = logging.getLogger(__name__)

__all__ = ["Caller", "KubeletAuth", "RequestAuth", "request_attributes"]

TOKEN_TTL, TOKEN_FAILURE_TTL = 120.0, 10.0
ALLOWED_TTL, DENIED_TTL = 300.0, 30.0
_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_SUBRESOURCES = (("/stats", "stats"), ("/metrics", "metrics"), ("/logs", "log"), ("/spec", "spec"))


@dataclass(frozen=True)
class Caller:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


class RequestAuth(Protocol):
    """What the kubelet server asks of every request: None to serve it, else (code, reason, message)."""

    async def check(self, request: web.Request) -> tuple[int, str, str] | None: ...


def _is_subpath(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def request_attributes(method: str, path: str, node_name: str) -> dict[str, str]:
    """The SubjectAccessReview resourceAttributes a kubelet request needs (upstream's mapping)."""
    sub = next((s for prefix, s in _SUBRESOURCES if _is_subpath(path, prefix)), "proxy")
    return {"verb": _VERBS.get(method.upper(), "*"), "resource": "nodes", "subresource": sub, "name": node_name,
            "group": "", "version": "v1", "namespace": ""}


class _TTLCache:
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._items: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        hit = self._items.get(key)
        if hit is None or hit[0] < self._now():
            self._items.pop(key, None)
            return None
        return hit[1]

    def put(self, key: Any, value: Any, ttl: float) -> None:
        if len(self._items) > 4096:  # bounded: drop what has expired, then the oldest
            now = self._now()
            self._items = {k: v for k, v in self._items.items() if v[0] >= now} or {}
            while len(self._items) > 4096:
                self._items.pop(next(iter(self._items)))
        self._items[key] = (self._now() + ttl, value)


Refusal = tuple[int, str, str]  # (HTTP code, Status reason, message)


def _status(code: int, reason: str, message: str) -> Refusal:
    return code, reason, message


class KubeletAuth:
    """The real thing: client certificates by the cluster CA, tokens and decisions by the API server."""

    def __init__(self, client: Any, *, node_name: str, ca_pem: bytes | None,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.node_name = node_name
        self.ca = x509.load_pem_x509_certificate(ca_pem) if ca_pem else None
        self._tokens = _TTLCache(now)
        self._decisions = _TTLCache(now)

    async def check(self, request: web.Request) -> Refusal | None:
        try:
            caller = await self.authenticate(request)
        except Exception as e:  # noqa: BLE001 - the API server is unreachable: not the caller's fault
            log.warning("authentication failed path=%s err=%s", request.path, e)
            return _status(503, "ServiceUnavailable", f"cannot authenticate the request: {e}")
        if caller is None:
            return _status(401, "Unauthorized", "Unauthorized")
        attrs = request_attributes(request.method, request.path, self.node_name)
        try:
            allowed, reason = await self.authorize(caller, attrs)
        except Exception as e:  # noqa: BLE001
            log.warning("authorization failed user=%s path=%s err=%s", caller.name, request.path, e)
            return _status(503, "ServiceUnavailable", f"cannot authorize the request: {e}")
        if not allowed:
            log.info("forbidden user=%s verb=%s resource=nodes/%s path=%s reason=%s", caller.name, attrs["verb"],
                     attrs["subresource"], request.path, reason or "-")
            return _status(403, "Forbidden", f"Forbidden (user={caller.name}, verb={attrs['verb']}, "
                                             f"resource=nodes, subresource={attrs['subresource']})")
        return None

    async def authenticate(self, request: web.Request) -> Caller | None:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        refused = None
        if der and self.ca is not None:
            try:
                name, groups = verify_client_certificate(der, self.ca, now=dt.datetime.now(dt.UTC))
                return Caller(name, groups)
            except CertificateRefused as e:
                refused = e
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        caller = await self.review_token(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if caller is None and refused is not None:
            log.info("refused client certificate path=%s reason=%s", request.path, refused)
        return caller

    async def review_token(self, token: str) -> Caller | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._tokens.get(key)
        if cached is not None:
            return cached or None
        review = await self.client.create("tokenreviews", {"apiVersion": "authentication.k8s.io/v1",
                                                           "kind": "TokenReview", "spec": {"token": token}})
        status = review.get("status") or {}
        info = status.get("user") or {}
        if not status.get("authenticated") or not info.get("username"):
            self._tokens.put(key, False, TOKEN_FAILURE_TTL)
            return None
        caller = Caller(info["username"], tuple(info.get("groups") or ()), info.get("uid") or "",
                        tuple(sorted((k, tuple(v)) for k, v in (info.get("extra") or {}).items())))
        self._tokens.put(key, caller, TOKEN_TTL)
        return caller

    async def authorize(self, caller: Caller, attrs: dict[str, str]) -> tuple[bool, str]:
        key = (caller, tuple(sorted(attrs.items())))
        cached = self._decisions.get(key)
        if cached is not None:
            return cached
        spec: dict[str, Any] = {"user": caller.name, "groups": list(caller.groups), "resourceAttributes": attrs}
        if caller.uid:
            spec["uid"] = caller.uid
        if caller.extra:
            spec["extra"] = {k: list(v) for k, v in caller.extra}
        review = await self.client.create("subjectaccessreviews", {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec})
        status = review.get("status") or {}
        decision = (bool(status.get("allowed")), str(status.get("reason") or ""))
        self._decisions.put(key, decision, ALLOWED_TTL if decision[0] else DENIED_TTL)
        return decision
