"""Service-account tokens for projected volumes, as Kubernetes' kubelet token manager keeps them.

``TokenManager.get`` asks the API server for a token with the TokenRequest
API (``POST /api/v1/namespaces/NS/serviceaccounts/SA/token``, body a
``authentication.k8s.io/v1`` ``TokenRequest`` bound to the pod) and caches
it per (namespace, service account, audiences, expiration, pod uid). A
cached token is used until it needs a refresh, as upstream's
pkg/kubelet/token/token_manager.go decides: 80% of its TTL has passed, or
it is older than 24 hours (each less a random jitter up to 10 s).
``refresh_in`` tells the pod worker when to come back. ``forget_pod``
drops a pod's tokens when the pod is gone.

A 404 that does not name the service account means the server does not
serve the TokenRequest API: ``TokenError`` says so (the pod gets a
FailedMount event; an empty token is never written).

Talks to: the API server through the kubelet's client (``create(...,
subresource="token")``).
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubepy.client import NotFoundError

__all__ = ["MAX_TTL", "Token", "TokenError", "TokenManager", "requires_refresh"]

MAX_TTL = 24 * 3600.0
MAX_JITTER = 10.0


class TokenError(Exception):
    """A token could not be had (the message is what the FailedMount event says)."""


@dataclass
class Token:
    token: str
    expiration: float          # epoch seconds (status.expirationTimestamp)
    expiration_seconds: int    # what was asked for (spec.expirationSeconds)


def _parse_ts(ts: str) -> float:
    return dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def refresh_at(tok: Token, *, jitter: float = 0.0) -> float:
    """When the token needs a refresh: 80% of its TTL, or 24 h after issue, less ``jitter``."""
    issued = tok.expiration - tok.expiration_seconds
    return min(issued + MAX_TTL - jitter, tok.expiration - tok.expiration_seconds * 20 // 100 - jitter)


def requires_refresh(tok: Token, now: float, *, jitter: float = 0.0) -> bool:
    return now > refresh_at(tok, jitter=jitter)


class TokenManager:
    """Caches TokenRequest answers per pod; see the module docstring."""

    def __init__(self, client: Any, *, clock: Callable[[], float] = time.time,
                 jitter: Callable[[], float] = lambda: random.random() * MAX_JITTER) -> None:
        self.client = client
        self.clock = clock
        self.jitter = jitter
        self._cache: dict[tuple[str, str, tuple[str, ...], int, str], tuple[Token, float]] = {}

    async def get(self, *, namespace: str, service_account: str, audiences: list[str], expiration_seconds: int,
                  pod_name: str, pod_uid: str) -> Token:
        key = (namespace, service_account, tuple(audiences), expiration_seconds, pod_uid)
        cached = self._cache.get(key)
        if cached is not None and not requires_refresh(cached[0], self.clock(), jitter=cached[1]):
            return cached[0]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": list(audiences), "expirationSeconds": expiration_seconds,
                         "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod_name, "uid": pod_uid}}}
        try:
            answer = await self.client.create("serviceaccounts", body, namespace=namespace, subresource="token",
                                              name=service_account)
        except NotFoundError as e:
            if cached is not None and self.clock() < cached[0].expiration:
                return cached[0]   # as upstream: keep using a still-valid token when a refresh fails
            if e.details.get("name") == service_account:
                raise TokenError(f'failed to fetch token: serviceaccounts "{service_account}" not found') from e
            raise TokenError(f"failed to fetch token: the API server does not serve the TokenRequest API "
                             f"(POST /api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token: "
                             f"404 {e.message})") from e
        except Exception as e:  # noqa: BLE001 - any failure keeps a valid token, else is reported
            if cached is not None and self.clock() < cached[0].expiration:
                return cached[0]
            raise TokenError(f"failed to fetch token: {e}") from e
        status = (answer or {}).get("status") or {}
        if not status.get("token") or not status.get("expirationTimestamp"):
            raise TokenError("failed to fetch token: the TokenRequest answer has no status.token")
        granted = int(((answer or {}).get("spec") or {}).get("expirationSeconds") or expiration_seconds)
        tok = Token(status["token"], _parse_ts(status["expirationTimestamp"]), granted)
        self._cache[key] = (tok, self.jitter())
        return tok

    def refresh_in(self, pod_uid: str) -> float | None:
        """Seconds until the first of the pod's tokens needs a refresh (None: it has none)."""
        ats = [refresh_at(t, jitter=j) for k, (t, j) in self._cache.items() if k[4] == pod_uid]
        return max(0.0, min(ats) - self.clock()) if ats else None

    def forget_pod(self, pod_uid: str) -> None:
        for k in [k for k in self._cache if k[4] == pod_uid]:
            del self._cache[k]
