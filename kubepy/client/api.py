"""``Client``: the one way kubepy components talk to the API server.

Thin async REST over aiohttp: one keep-alive HTTPS session per client
(created lazily inside the running loop), bearer-token auth, typed errors
from ``Status`` bodies (see ``errors``), and ``watch`` as an async iterator
of event dicts. No retries here except one transparent reconnect for an
idempotent GET whose pooled connection was reset; informers and work
queues own the retry policy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any, Self

import aiohttp

from kubepy import jsonbytes
from kubepy.client.config import ClientConfig
from kubepy.client.errors import TransportError, error_from_status
from kubepy.kinds import Kind, by_plural
from kubepy.tcp import dead_peer_socket

log = logging.getLogger(__name__)
_RECONNECT_PAUSE = 0.2   # seconds before the one retry of a connection that was never made

PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}
LIST_PAGE_SIZE = 500
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10)
# With several API servers a connect that hangs (a host gone without a reset) moves on sooner.
FAILOVER_CONNECT = 3.0


class Client:
    def __init__(self, config: ClientConfig, *, user_agent: str = "kubepy") -> None:
        self.config = config
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._at = 0  # which of config.servers requests go to

    @classmethod
    def from_kubeconfig(cls, path: str, *, user_agent: str = "kubepy") -> Client:
        return cls(ClientConfig.from_kubeconfig(path), user_agent=user_agent)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- verbs ----------------------------------------------------------------
    async def get(self, resource: str | Kind, name: str, *, namespace: str | None = None,
                  subresource: str | None = None) -> dict[str, Any]:
        res = _resource(resource)
        return await self._request("GET", res.path(_ns(res, namespace), name, subresource))

    async def list(self, resource: str | Kind, *, namespace: str | None = None, label_selector: str | None = None,
                   field_selector: str | None = None, limit: int | None = None, continue_: str | None = None,
                   resource_version: str | None = None) -> dict[str, Any]:
        res = _resource(resource)
        params = _params(labelSelector=label_selector, fieldSelector=field_selector, limit=limit,
                         resourceVersion=resource_version)
        if continue_:
            params["continue"] = continue_
        return await self._request("GET", res.path(_ns(res, namespace)), params=params)

    async def list_all(self, resource: str | Kind, *, namespace: str | None = None, label_selector: str | None = None,
                       field_selector: str | None = None,
                       resource_version: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """Every item, fetched in pages; the resourceVersion is the list's
        snapshot (a continued list keeps the first page's snapshot)."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        rv = ""
        while True:
            page = await self.list(resource, namespace=namespace, label_selector=label_selector,
                                   field_selector=field_selector, limit=LIST_PAGE_SIZE, continue_=token,
                                   resource_version=None if token else resource_version)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            rv = rv or meta.get("resourceVersion", "")
            token = meta.get("continue") or None
            if not token:
                return items, rv

    async def create(self, resource: str | Kind, obj: dict[str, Any], *, namespace: str | None = None,
                     subresource: str | None = None, name: str | None = None,
                     dry_run: bool = False) -> dict[str, Any]:
        res = _resource(resource)
        namespace = namespace or (obj.get("metadata") or {}).get("namespace")
        path = res.path(_ns(res, namespace), name if subresource else None, subresource)
        return await self._request("POST", path, params=_params(dryRun="All" if dry_run else None), body=obj)

    async def update(self, resource: str | Kind, obj: dict[str, Any], *, subresource: str | None = None) -> dict[str, Any]:
        res = _resource(resource)
        meta = obj.get("metadata") or {}
        return await self._request("PUT", res.path(_ns(res, meta.get("namespace")), meta["name"], subresource),
                                   body=obj)

    async def patch(self, resource: str | Kind, name: str, patch: Any, *, namespace: str | None = None,
                    subresource: str | None = None, patch_type: str = "merge") -> dict[str, Any]:
        res = _resource(resource)
        try:
            content_type = PATCH_CONTENT_TYPES[patch_type]
        except KeyError:
            raise ValueError(f"patch_type must be one of {sorted(PATCH_CONTENT_TYPES)}, not {patch_type!r}") from None
        return await self._request("PATCH", res.path(_ns(res, namespace), name, subresource), body=patch,
                                   content_type=content_type)

    async def delete(self, resource: str | Kind, name: str, *, namespace: str | None = None,
                     grace_period_seconds: int | None = None, propagation_policy: str | None = None,
                     preconditions: dict[str, Any] | None = None) -> dict[str, Any] | None:
        res = _resource(resource)
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if preconditions:
            options["preconditions"] = preconditions
        return await self._request("DELETE", res.path(_ns(res, namespace), name), body=options) or None

    async def get_path(self, path: str, *, params: dict[str, str] | None = None) -> Any:
        """GET a path that is not a kind of the local registry: an aggregated API
        (``/apis/metrics.k8s.io/v1beta1/...``), discovery, a custom resource's ``/scale``."""
        return await self._request("GET", path, params=params)

    async def put_path(self, path: str, body: Any) -> Any:
        """PUT to such a path (a custom resource's ``/scale``)."""
        return await self._request("PUT", path, body=body)

    async def post(self, path: str, body: Any) -> Any:
        """POST to a path that is not a resource (kubepy's own endpoints, e.g. the kubelet's serving
        certificate); the answer's JSON."""
        return await self._request("POST", path, body=body)

    async def watch(self, resource: str, *, namespace: str | None = None, resource_version: str,
                    label_selector: str | None = None, field_selector: str | None = None,
                    timeout_seconds: int | None = None,
                    allow_bookmarks: bool = True) -> AsyncIterator[dict[str, Any]]:
        """Yield ``{"type", "object"}`` events until the server ends the stream.

        Raises GoneError when ``resource_version`` is too old (re-list), another
        APIStatusError for other ERROR events, TransportError when the
        connection breaks mid-stream."""
        res = _resource(resource)
        params = _params(watch="true", resourceVersion=resource_version, labelSelector=label_selector,
                         fieldSelector=field_selector, timeoutSeconds=timeout_seconds,
                         allowWatchBookmarks="true" if allow_bookmarks else None)
        # A stream may be quiet for as long as the server keeps it open.
        several = len(self.config.servers) > 1
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=FAILOVER_CONNECT if several else None,
                                        sock_read=timeout_seconds + 30 if timeout_seconds else None)
        session = self._get_session()
        server = self.server
        try:
            async with session.get(server + res.path(_ns(res, namespace)), params=params, timeout=timeout,
                                   headers=self._auth_headers()) as resp:
                if resp.status >= 400:
                    raise await _error(resp)
                buffer = b""
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield _event(line)
                if buffer.strip():
                    yield _event(buffer)
        except (aiohttp.ClientError, TimeoutError) as e:
            # The caller watches again (an informer does): on the next API server if this one is gone.
            if isinstance(e, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError,
                              aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)) \
                    and not isinstance(e, aiohttp.ClientSSLError):
                self._fail_over(server, e)
            raise TransportError(f"watch {resource}: {type(e).__name__}: {e}") from e

    # -- transport ------------------------------------------------------------
    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            ssl_arg: ssl.SSLContext | bool = True
            if self.config.insecure:
                ssl_arg = False
            elif self.config.ca_data:
                ssl_arg = ssl.create_default_context(cadata=self.config.ca_data.decode())
            if self.config.client_cert and self.config.client_key:
                if not isinstance(ssl_arg, ssl.SSLContext):
                    ssl_arg = ssl.create_default_context()
                    if self.config.insecure:
                        ssl_arg.check_hostname, ssl_arg.verify_mode = False, ssl.CERT_NONE
                load_client_cert(ssl_arg, self.config.client_cert, self.config.client_key)
            headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
            several = len(self.config.servers) > 1
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=REQUEST_TIMEOUT,
                connector=aiohttp.TCPConnector(ssl=ssl_arg, socket_factory=dead_peer_socket if several else None))
        return self._session

    def _auth_headers(self) -> dict[str, str]:
        token = self.config.bearer_token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    @property
    def server(self) -> str:
        """The API server requests go to now (one of ``config.servers``)."""
        servers = self.config.servers or [self.config.server]
        return servers[self._at % len(servers)]

    def _url(self, path: str) -> str:
        return self.server.rstrip("/") + path

    def _fail_over(self, failed: str, err: BaseException) -> bool:
        """Moves to the next API server if ``failed`` is still the current one; whether
        there is another to move to."""
        servers = self.config.servers or [self.config.server]
        if len(servers) < 2:
            return False
        if self.server == failed:
            self._at = (self._at + 1) % len(servers)
            log.warning("API server unreachable, failing over from=%s to=%s err=%s", failed, self.server,
                        type(err).__name__)
        return True

    async def _request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                       body: Any = None, content_type: str = "application/json") -> Any:
        data = None if body is None else jsonbytes.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        headers.update(self._auth_headers())
        # Two failures are worth a second try. A pooled keep-alive connection the
        # server closed shows up as a reset on first use: only a GET is safe to send
        # again. A connection that was never made (refused, timed out, or reset during
        # the TLS handshake by a busy server) carried no request: any method is tried
        # again - on the next API server when there are several, else after a pause.
        # A certificate the client rejects is not retried.
        several = len(self.config.servers) > 1
        timeout = aiohttp.ClientTimeout(total=60, connect=10, sock_connect=FAILOVER_CONNECT) if several else None
        attempts = len(self.config.servers) + 1 if several else 2
        for attempt in range(attempts):
            last = attempt == attempts - 1
            url = self._url(path)
            try:
                async with self._get_session().request(method, url, params=params, data=data,
                                                       headers=headers, timeout=timeout or REQUEST_TIMEOUT) as resp:
                    if resp.status >= 400:
                        raise await _error(resp)
                    raw = await resp.read()
                    if not raw:
                        return None
                    # Only a few subresources (pods/log) answer with plain text.
                    return jsonbytes.loads(raw) if "json" in resp.content_type else await resp.text()
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
                if not last and not isinstance(e, aiohttp.ClientSSLError):
                    if self._fail_over(url.removesuffix(path), e):
                        continue
                    log.debug("retrying after a failed connect method=%s path=%s err=%s", method, path, e)
                    await asyncio.sleep(_RECONNECT_PAUSE)
                    continue
                raise TransportError(f"{method} {path}: {type(e).__name__}: {e}") from e
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
                if attempt == 0 and method == "GET":
                    log.debug("retrying after reset method=%s path=%s err=%s", method, path, e)
                    continue
                raise TransportError(f"{method} {path}: {type(e).__name__}: {e}") from e
            except (aiohttp.ClientError, TimeoutError) as e:
                raise TransportError(f"{method} {path}: {type(e).__name__}: {e}") from e
        raise AssertionError("unreachable")


# -- helpers ------------------------------------------------------------------
def load_client_cert(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """``SSLContext.load_cert_chain`` reads only files: the PEMs go through a private temporary
    file that is gone again before this returns."""
    import os
    import tempfile

    fd, name = tempfile.mkstemp(prefix="kubepy-client-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(cert_pem.rstrip(b"\n") + b"\n" + key_pem)
        ctx.load_cert_chain(name)
    finally:
        os.unlink(name)


def _resource(plural: str | Kind) -> Kind:
    """A kind by plural, or a Kind the caller built (a custom resource's, from its CRD)."""
    if isinstance(plural, Kind):
        return plural
    try:
        return by_plural(plural)
    except KeyError:
        raise ValueError(f"unknown resource {plural!r}") from None


def _ns(res: Kind, namespace: str | None) -> str | None:
    return namespace if res.namespaced else None


def _params(**values: Any) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v is not None and v != ""}


async def _error(resp: aiohttp.ClientResponse) -> Exception:
    text = await resp.text()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    return error_from_status(resp.status, body, text.strip())


def _event(line: bytes) -> dict[str, Any]:
    try:
        event: dict[str, Any] = jsonbytes.loads(line)
    except ValueError as e:
        raise TransportError(f"malformed watch event: {line[:200]!r}") from e
    if event.get("type") == "ERROR":
        status = event.get("object") or {}
        raise error_from_status(int(status.get("code") or 500), status)  # 410 -> GoneError
    return event
