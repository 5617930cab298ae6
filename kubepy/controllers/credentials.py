"""Each controller on its own identity: ``--use-service-account-credentials``.

Talks to: the API server, as the controller manager itself (``system:kube-controller-manager``):
reads/creates the ServiceAccount ``kube-system/<name>`` of a controller and asks the
TokenRequest API (``serviceaccounts/<name>/token``) for a token; the controller's client
then sends that token, so RBAC sees ``system:serviceaccount:kube-system:<name>`` and grants
only the ``system:controller:<name>`` role (upstream's SAControllerClientBuilder).

A token lives ``EXPIRATION`` seconds and is replaced once ``REFRESH_AT`` of its life has
passed; a failed refresh is retried every ``RETRY`` seconds while the old token still works.
The shared informers keep the controller manager's own identity (it may list and watch
everything, as upstream's ``system:kube-controller-manager``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import replace

from kubepy.client import Client, NotFoundError
from kubepy.client.errors import AlreadyExistsError

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"
EXPIRATION = 3600     # seconds, upstream's client builder asks for an hour
REFRESH_AT = 0.8      # of a token's life
RETRY = 10.0          # seconds between refresh attempts that failed


class _Token:
    """The current token of one service account; ``value`` is what the client sends."""

    def __init__(self, value: str, expires: float) -> None:
        self.value = value
        self.expires = expires  # time.time()

    def current(self) -> str:
        return self.value


class ServiceAccountCredentials:
    """One client per service account, its token refreshed in the background."""

    def __init__(self, root: Client, *, namespace: str = NAMESPACE, expiration: int = EXPIRATION) -> None:
        self.root = root
        self.namespace = namespace
        self.expiration = expiration
        self._clients: dict[str, Client] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def client_for(self, name: str, *, user_agent: str) -> Client:
        client = self._clients.get(name)
        if client is not None:
            return client
        await self._ensure_service_account(name)
        token = _Token(*await self._request(name))
        # No client certificate: the API server would take it before the token.
        config = replace(self.root.config, token=None, client_cert=None, client_key=None, token_source=token.current)
        client = Client(config, user_agent=f"{user_agent}/{name}")
        self._clients[name] = client
        self._tasks.append(asyncio.create_task(self._refresh(name, token), name=f"token-refresh:{name}"))
        log.info("using service account credentials controller_sa=%s/%s expires_in=%ds", self.namespace, name,
                 int(token.expires - time.time()))
        return client

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def _ensure_service_account(self, name: str) -> None:
        try:
            await self.root.get("serviceaccounts", name, namespace=self.namespace)
            return
        except NotFoundError:
            pass
        try:
            await self.root.create("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                                       "metadata": {"name": name, "namespace": self.namespace}},
                                   namespace=self.namespace)
            log.info("created service account sa=%s/%s reason=ControllerCredentials", self.namespace, name)
        except AlreadyExistsError:
            pass

    async def _request(self, name: str) -> tuple[str, float]:
        """(token, expiry as time.time()) from the TokenRequest API."""
        answer = await self.root.create("serviceaccounts", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": self.expiration}},
            namespace=self.namespace, subresource="token", name=name)
        status = answer.get("status") or {}
        token = status.get("token")
        if not token:
            raise ValueError(f"the TokenRequest for {self.namespace}/{name} was answered without status.token")
        try:
            expires = dt.datetime.fromisoformat(str(status["expirationTimestamp"]).replace("Z", "+00:00")).timestamp()
        except (KeyError, ValueError):
            expires = time.time() + self.expiration
        return token, expires

    async def _refresh(self, name: str, token: _Token) -> None:
        issued = time.time()
        while True:
            await asyncio.sleep(max(0.0, issued + (token.expires - issued) * REFRESH_AT - time.time()))
            while True:
                try:
                    await self._ensure_service_account(name)  # deleted by someone: its tokens died with it
                    token.value, token.expires = await self._request(name)
                    issued = time.time()
                    log.info("refreshed token controller_sa=%s/%s expires_in=%ds", self.namespace, name,
                             int(token.expires - issued))
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - keep the old token while it lasts, try again
                    log.warning("token refresh failed controller_sa=%s/%s err=%s retry_in=%gs", self.namespace,
                                name, e, RETRY)
                    await asyncio.sleep(RETRY)
