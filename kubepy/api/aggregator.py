"""The aggregation layer (kube-aggregator): API groups served by other servers, behind this one.

Role: an ``apiregistration.k8s.io/v1`` APIService with a ``service`` says
"``/apis/<group>/<version>`` is served by that Service". For those, the API
server (after authenticating and authorizing the request as it does every
request) proxies the request to one ready endpoint of the Service, as
upstream's proxy handler does:

- TLS to the backend is verified against the APIService's ``caBundle`` for
  the name ``<service>.<namespace>.svc`` (or not at all with
  ``insecureSkipTLSVerify``); the API server presents its front-proxy
  client certificate (``kubepy.api.frontproxy``) and says who asks in
  ``X-Remote-User``, ``X-Remote-Group`` (one per group) and
  ``X-Remote-Extra-<key>`` (the key percent-encoded: ``kubepy.meta.userextra``);
  the caller's own ``Authorization`` and impersonation headers are never
  passed on.
- An APIService that is not Available answers 503 ``service unavailable``.
- Discovery is merged: ``/apis`` lists the group (versions by
  ``versionPriority``), ``/apis/<group>`` is answered here, ``/apis/<group>/
  <version>`` is the backend's own APIResourceList (so ``kubectl
  api-resources`` shows its resources).

The availability controller checks every APIService now and then (and at
once when one changes, or the endpoints of its Service do), calling up to
``CHECK_ATTEMPTS`` endpoints at once as upstream does (one answer is
enough), and writes its ``Available`` condition with
upstream's reasons: ``Local``, ``ServiceNotFound``, ``ServicePortError``,
``EndpointsNotFound``, ``MissingEndpoints``, ``FailedDiscoveryCheck``,
``Passed``. Several API servers each write the same verdicts; a write
happens only when the condition changes.

Talks to: the store (through ``Storage``: APIServices, Services,
Endpoints) and, over HTTPS with aiohttp, the backends.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import os
import random
import ssl
import tempfile
from typing import Any

import aiohttp
from aiohttp import web

from kubepy.api import errors
from kubepy.kinds import by_plural
from kubepy.meta.userextra import escape_extra_key

log = logging.getLogger(__name__)

__all__ = ["Aggregator", "Unavailable"]

CHECK_PERIOD = 10.0      # upstream re-checks every 30 s; faster here, the checks are cheap
UNAVAILABLE_PERIOD = 1.0  # while one is not Available: a backend that is starting is seen within a second
CHECK_TIMEOUT = 5.0
CHECK_ATTEMPTS = 5        # discovery calls per check, at once (upstream's attempts)
PROXY_CONNECT_TIMEOUT = 5.0
# Hop-by-hop (RFC 7230 6.1) and what the API server sets itself.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "authorization", "content-length"}
_STRIPPED_PREFIXES = ("impersonate-", "x-remote-")


class Unavailable(Exception):
    """Why an APIService's backend cannot be reached: (reason, message) as upstream's condition says."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    status = obj.get("status")
    conds = status.get("conditions") if isinstance(status, dict) else None
    return [c for c in conds if isinstance(c, dict)] if isinstance(conds, list) else []


def is_available(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Available" and c.get("status") == "True" for c in _conditions(obj))


class Aggregator:
    def __init__(self, storage: Any, *, front_proxy_cert: tuple[bytes, bytes], source: str | None = None) -> None:
        self.storage = storage
        self.front_proxy_cert = front_proxy_cert
        self.source = source                          # local address backend connections are made from
        self.apiservices: dict[str, dict[str, Any]] = {}  # name -> object, as the watch cache has it
        self._contexts: dict[tuple[str, bool], ssl.SSLContext] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------
    async def start(self, cache: Any, endpoints: Any = None) -> None:
        """Follow the APIServices in ``cache`` and (given the Endpoints' watch cache) the endpoints of
        their Services, which are checked again as soon as those change, as upstream's controller does."""
        kind = by_plural("apiservices")
        items, revision, _ = await self.storage.list(kind, None)
        self.apiservices = {o["metadata"]["name"]: o for o in items}
        self._tasks = [asyncio.create_task(self._follow(cache, revision)),
                       asyncio.create_task(self._availability_loop())]
        if endpoints is not None:
            self._tasks.append(asyncio.create_task(self._follow_endpoints(endpoints)))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _follow(self, cache: Any, revision: int) -> None:
        kind = by_plural("apiservices")
        sub = cache.subscribe(after=revision, matches=lambda o: True) or \
            cache.subscribe(after=cache.last_revision, matches=lambda o: True)
        try:
            while True:
                ev = await sub.queue.get()
                if ev is None:  # fell behind: read them all again
                    sub.close()
                    items, revision, _ = await self.storage.list(kind, None)
                    self.apiservices = {o["metadata"]["name"]: o for o in items}
                    sub = cache.subscribe(after=revision, matches=lambda o: True) or \
                        cache.subscribe(after=cache.last_revision, matches=lambda o: True)
                elif ev.type == "DELETED":
                    self.apiservices.pop(ev.obj["metadata"]["name"], None)
                else:
                    old = self.apiservices.get(ev.obj["metadata"]["name"])
                    self.apiservices[ev.obj["metadata"]["name"]] = ev.obj
                    if old is None or _spec(old) != _spec(ev.obj):
                        self._changed.set()
        finally:
            sub.close()

    def _backs(self, namespace: str, name: str) -> bool:
        """Whether the Service ``namespace/name`` is behind some APIService."""
        return any((ref := _spec(o).get("service") or {}).get("namespace") == namespace and ref.get("name") == name
                   for o in self.apiservices.values())

    async def _follow_endpoints(self, cache: Any) -> None:
        def matches(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata") or {}
            return self._backs(meta.get("namespace") or "", meta.get("name") or "")

        sub = cache.subscribe(after=cache.last_revision, matches=matches)
        try:
            while True:
                ev = await sub.queue.get()
                if ev is None:   # fell behind: check everything again, follow from now
                    sub.close()
                    sub = cache.subscribe(after=cache.last_revision, matches=matches)
                self._changed.set()
        finally:
            sub.close()

    # -- what is aggregated -------------------------------------------------------------
    def remote(self, group: str, version: str) -> dict[str, Any] | None:
        """The APIService that sends ``/apis/group/version`` elsewhere, if one does."""
        for obj in self.apiservices.values():
            spec = _spec(obj)
            if spec.get("group") == group and spec.get("version") == version and spec.get("service"):
                return obj
        return None

    def is_remote_group(self, group: str) -> bool:
        return any(_spec(o).get("group") == group and _spec(o).get("service") for o in self.apiservices.values())

    def remote_groups(self) -> dict[str, list[str]]:
        """{group: versions, highest versionPriority first} of the groups served elsewhere."""
        by_group: dict[str, list[tuple[int, str]]] = {}
        for obj in self.apiservices.values():
            spec = _spec(obj)
            if spec.get("service") and spec.get("group"):
                priority = spec.get("versionPriority")
                by_group.setdefault(spec["group"], []).append((-(priority if isinstance(priority, int) else 0),
                                                               str(spec.get("version") or "")))
        return {g: [v for _, v in sorted(vs)] for g, vs in sorted(by_group.items())}

    # -- finding and reaching the backend ----------------------------------------------
    async def resolve(self, obj: dict[str, Any]) -> tuple[str, int]:
        """(address, port) of one ready endpoint behind the APIService's Service, as upstream's
        ResolveEndpoint picks it; Unavailable with the availability controller's reason if none."""
        return random.choice(await self.resolve_all(obj))

    async def resolve_all(self, obj: dict[str, Any]) -> list[tuple[str, int]]:
        """Every ready (address, port) behind the APIService's Service, in no set order; Unavailable
        with the availability controller's reason if there is none."""
        ref = _spec(obj).get("service") or {}
        ns, name, port = ref.get("namespace") or "", ref.get("name") or "", int(ref.get("port") or 443)
        try:
            svc = await self.storage.get(by_plural("services"), ns, name)
        except errors.NotFound:
            raise Unavailable("ServiceNotFound", f'service/{name} in "{ns}" is not present') from None
        svc_port = next((p for p in (svc.get("spec") or {}).get("ports") or [] if p.get("port") == port), None)
        if svc_port is None:
            raise Unavailable("ServicePortError", f'service/{name} in "{ns}" is not listening on port {port}')
        try:
            eps = await self.storage.get(by_plural("endpoints"), ns, name)
        except errors.NotFound:
            raise Unavailable("EndpointsNotFound", f'cannot find endpoints for service/{name} in "{ns}"') from None
        port_name = svc_port.get("name") or ""
        choices = [(a["ip"], int(p["port"])) for s in eps.get("subsets") or [] for a in s.get("addresses") or []
                   for p in s.get("ports") or [] if (p.get("name") or "") == port_name and a.get("ip")]
        if not choices:
            raise Unavailable("MissingEndpoints", f'endpoints for service/{name} in "{ns}" have no addresses with '
                                                  f'port name "{port_name}"')
        return list(dict.fromkeys(choices))

    def _ssl(self, obj: dict[str, Any]) -> ssl.SSLContext:
        spec = _spec(obj)
        ca, insecure = spec.get("caBundle") or "", bool(spec.get("insecureSkipTLSVerify"))
        ctx = self._contexts.get((ca, insecure))
        if ctx is None:
            if insecure:
                ctx = ssl.create_default_context()
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            elif ca:
                ctx = ssl.create_default_context(cadata=base64.b64decode(ca).decode())
            else:
                ctx = ssl.create_default_context()
            fd, path = tempfile.mkstemp(prefix="kubepy-front-proxy-", suffix=".pem")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(self.front_proxy_cert[0].rstrip(b"\n") + b"\n" + self.front_proxy_cert[1])
                ctx.load_cert_chain(path)
            finally:
                os.unlink(path)
            if len(self._contexts) > 64:
                self._contexts.clear()
            self._contexts[(ca, insecure)] = ctx
        return ctx

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(local_addr=(self.source, 0) if self.source else None)
            self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=PROXY_CONNECT_TIMEOUT))
        return self._session

    def _target(self, obj: dict[str, Any], address: str, port: int, path_qs: str) -> tuple[str, dict[str, Any]]:
        ref = _spec(obj).get("service") or {}
        host = f"[{address}]" if ":" in address else address
        kwargs: dict[str, Any] = {"ssl": self._ssl(obj)}
        if not _spec(obj).get("insecureSkipTLSVerify"):
            kwargs["server_hostname"] = f"{ref.get('name')}.{ref.get('namespace')}.svc"
        return f"https://{host}:{port}{path_qs}", kwargs

    # -- proxying -----------------------------------------------------------------------
    async def proxy(self, request: web.Request, obj: dict[str, Any], user: Any) -> web.StreamResponse:
        name = obj["metadata"]["name"]
        if not is_available(obj):
            log.info("aggregated request refused apiservice=%s path=%s reason=NotAvailable", name, request.path)
            raise errors.ServiceUnavailable("service unavailable")
        try:
            address, port = await self.resolve(obj)
        except Unavailable as e:
            log.info("aggregated request refused apiservice=%s path=%s reason=%s", name, request.path, e.reason)
            raise errors.ServiceUnavailable("service unavailable") from None
        url, kwargs = self._target(obj, address, port, request.raw_path)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in _HOP and not k.lower().startswith(_STRIPPED_PREFIXES)}
        out = [(k, v) for k, v in headers.items()]
        out.append(("X-Remote-User", user.name))
        out += [("X-Remote-Group", g) for g in user.groups]
        out += [(f"X-Remote-Extra-{escape_extra_key(k)}", v)
                for k, vs in getattr(user, "extra", ()) for v in vs]
        body = await request.read() if request.can_read_body else None
        try:
            async with self._client().request(request.method, url, headers=out, data=body,
                                              allow_redirects=False, **kwargs) as resp:
                answer = web.StreamResponse(status=resp.status, reason=resp.reason)
                for k, v in resp.headers.items():
                    if k.lower() not in _HOP and k.lower() != "content-encoding":
                        answer.headers.add(k, v)
                await answer.prepare(request)
                async for chunk in resp.content.iter_any():
                    await answer.write(chunk)
                await answer.write_eof()
                return answer
        except (aiohttp.ClientError, OSError) as e:
            log.warning("aggregated request failed apiservice=%s url=%s err=%s", name, url, e)
            raise errors.ServiceUnavailable(f"error trying to reach service: {e}") from None

    # -- availability -------------------------------------------------------------------
    async def check(self, obj: dict[str, Any]) -> tuple[str, str, str]:
        """(status, reason, message) of the Available condition, as upstream's controller decides it."""
        spec = _spec(obj)
        if not spec.get("service"):
            return "True", "Local", "Local APIServices are always available"
        try:
            choices = await self.resolve_all(obj)
        except Unavailable as e:
            return "False", e.reason, e.message
        # As upstream: several discovery calls at once, each to an endpoint of its own here, and one answer is
        # enough - an endpoint that just went away (its node cut off, the Endpoints not yet updated) does not
        # make the group unavailable while the others answer.
        random.shuffle(choices)
        results = await asyncio.gather(*(self._discover(obj, a, p) for a, p in choices[:CHECK_ATTEMPTS]))
        return next((r for r in results if r[0] == "True"), results[-1])

    async def _discover(self, obj: dict[str, Any], address: str, port: int) -> tuple[str, str, str]:
        """One discovery call to one endpoint: the Available condition it alone would give."""
        spec = _spec(obj)
        url, kwargs = self._target(obj, address, port, f"/apis/{spec.get('group')}/{spec.get('version')}")
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                async with self._client().get(url, headers={"X-Remote-User": "system:kube-aggregator",
                                                            "X-Remote-Group": "system:masters"},
                                              **kwargs) as resp:
                    await resp.read()
                    ok = 200 <= resp.status < 300 or resp.status in (401, 403)  # upstream: any non-error answer
                    if not ok:
                        return "False", "FailedDiscoveryCheck", (f"failing or missing response from {url}: bad "
                                                                 f"status from {url}: {resp.status}")
        except TimeoutError:
            return "False", "FailedDiscoveryCheck", (f"failing or missing response from {url}: Get \"{url}\": "
                                                     "context deadline exceeded")
        except (aiohttp.ClientError, OSError, ssl.SSLError) as e:
            return "False", "FailedDiscoveryCheck", f'failing or missing response from {url}: Get "{url}": {e}'
        return "True", "Passed", "all checks passed"

    async def reconcile(self, name: str) -> None:
        """Check one APIService and write its Available condition if that changed."""
        obj = self.apiservices.get(name)
        if obj is None:
            return
        status, reason, message = await self.check(obj)
        old = next((c for c in _conditions(obj) if c.get("type") == "Available"), {})
        if (old.get("status"), old.get("reason"), old.get("message")) == (status, reason, message):
            return

        def write(cur: dict[str, Any]) -> dict[str, Any]:
            conds = [c for c in _conditions(cur) if c.get("type") != "Available"]
            prev = next((c for c in _conditions(cur) if c.get("type") == "Available"), {})
            since = prev.get("lastTransitionTime") if prev.get("status") == status else None
            conds.append({"type": "Available", "status": status, "lastTransitionTime": since or _now(),
                          "reason": reason, "message": message})
            cur["status"] = {**(cur.get("status") if isinstance(cur.get("status"), dict) else {}),
                             "conditions": conds}
            return cur

        try:
            await self.storage.update(by_plural("apiservices"), None, name, write, subresource="status")
        except errors.NotFound:
            return
        log.info("apiservice availability apiservice=%s available=%s reason=%s message=%r", name, status, reason,
                 message)

    async def _availability_loop(self) -> None:
        while True:
            for name in sorted(self.apiservices):
                try:
                    await self.reconcile(name)
                except errors.APIError as e:
                    log.warning("apiservice availability not written apiservice=%s err=%s", name, e.message)
                except Exception:  # one APIService must not stop the others being checked
                    log.exception("apiservice availability check crashed apiservice=%s", name)
            self._changed.clear()
            waiting = any(_spec(o).get("service") and not is_available(o) for o in self.apiservices.values())
            try:
                await asyncio.wait_for(self._changed.wait(), UNAVAILABLE_PERIOD if waiting else CHECK_PERIOD)
            except TimeoutError:
                pass
