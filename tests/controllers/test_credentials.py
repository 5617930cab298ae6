"""--use-service-account-credentials: a controller's client carries its service account's
TokenRequest token, creates the account when missing, and swaps the token before it expires
(kubepy.controllers.credentials)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from kubepy.client import Client, ClientConfig, NotFoundError
from kubepy.controllers import credentials


class _Root:
    """The controller manager's own client, as far as credentials use it."""

    def __init__(self, *, lifetime: float) -> None:
        self.config = ClientConfig(server="https://127.0.0.1:1", token=None, client_cert=b"C", client_key=b"K")
        self.lifetime = lifetime
        self.accounts: set[str] = set()
        self.requests: list[str] = []
        self.expiries: list[float] = []   # loop time at which each issued token expires

    async def get(self, resource: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        assert (resource, namespace) == ("serviceaccounts", "kube-system")
        if name not in self.accounts:
            raise NotFoundError(404, "NotFound", f"serviceaccounts \"{name}\" not found")
        return {"metadata": {"name": name}}

    async def create(self, resource: str, obj: dict[str, Any], *, namespace: str | None = None,
                     subresource: str | None = None, name: str | None = None) -> dict[str, Any]:
        if subresource is None:
            self.accounts.add(obj["metadata"]["name"])
            return obj
        assert (subresource, obj["kind"]) == ("token", "TokenRequest")
        assert name in self.accounts
        self.requests.append(name)
        self.expiries.append(asyncio.get_running_loop().time() + self.lifetime)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.lifetime)
        return {"status": {"token": f"{name}-{len(self.requests)}",
                           "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}


async def test_a_controller_client_has_its_own_token_refreshed_before_expiry() -> None:
    root = _Root(lifetime=3.0)
    creds = credentials.ServiceAccountCredentials(root)  # type: ignore[arg-type]
    try:
        client = await creds.client_for("job-controller", user_agent="t")
        assert isinstance(client, Client)
        assert root.accounts == {"job-controller"}
        # the token, not the manager's certificate: the API server would take the certificate first
        assert (client.config.client_cert, client.config.client_key) == (None, None)
        assert client.config.bearer_token() == "job-controller-1"
        assert await creds.client_for("job-controller", user_agent="t") is client  # one per account
        # refreshed at 80% of its life, before it expired (polled: a loaded host runs timers late)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while client.config.bearer_token() == "job-controller-1" and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert client.config.bearer_token() == "job-controller-2"
        assert root.expiries[1] - root.expiries[0] < root.lifetime, "the first token expired before its refresh"
        assert root.requests == ["job-controller", "job-controller"]
    finally:
        await creds.close()
