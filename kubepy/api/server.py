"""The Kubernetes-compatible HTTP API (aiohttp): routing, content
negotiation, authentication and authorization, list/watch, patch,
server-side Tables, discovery and OpenAPI.

Object semantics live in ``storage.py``; watch fan-out in
``watchcache.py``. Only this package talks to the store.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import logging
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import multidict
from aiohttp import web
from cryptography import x509

from kubepy import bootstraptoken, jsonbytes, tlsclientauth
from kubepy.api import (
    admission,
    aggregator,
    auth,
    authz,
    bodies,
    bootstrappolicy,
    certs,
    discovery,
    errors,
    escalation,
    eviction,
    fieldmanager,
    frontproxy,
    httpproxy,
    nodeauth,
    objects,
    openapi,
    openapi_proto,
    patch,
    proxy,
    rbac,
    reviews,
    serviceaccounts,
    tokens,
)
from kubepy.meta import selectors
from kubepy.kinds import Kind, all_kinds, by_plural, lookup, printers, validation
from kubepy.kinds.scheduling.priorityclass import SYSTEM_PRIORITY_CLASSES
from kubepy.api.crds import CustomResourceDefinitions
from kubepy.api.metrics import APIServerMetrics, request_labels
from kubepy.metrics import exposition, new_registry
from kubepy.api.limitranger import LimitRanger
from kubepy.api.policyadmission import ValidatingAdmissionPolicy
from kubepy.api.policystatus import PolicyStatus
from kubepy.api.priority import PriorityAdmission
from kubepy.api.saadmission import ServiceAccountAdmission
from kubepy.api.resourcequota import ResourceQuotaAdmission
from kubepy.api.webhookadmission import MutatingAdmissionWebhook, ValidatingAdmissionWebhook
from kubepy.api.webhookclient import WebhookClient, local_source
from kubepy.api import storagedefaults
from kubepy.api.defaultingressclass import DefaultIngressClass
from kubepy.api.defaultstorageclass import DefaultStorageClass
from kubepy.api import storage as storage_mod
from kubepy.api.endpointreconciler import EndpointReconciler
from kubepy.api.storage import DeleteOptions, Storage, store_error
from kubepy.api.watchcache import StoreSubscription, Subscription, WatchCache
from kubepy.store import CompactedError, KeyExistsError, KeyNotFoundError, Store, StoreError

log = logging.getLogger(__name__)

MAX_BODY = bodies.MAX_BODY
_STREAM_PAGE = 500
BOOKMARK_INTERVAL = 10.0
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NODE_TOKEN_PREFIX = "/registry/kubepy.io/nodetokens/"
# What anonymous callers may read (upstream: system:public-info-viewer, service-account-issuer-discovery).
_OIDC_CONFIG_PATH = "/.well-known/openid-configuration"
_JWKS_PATH = "/openid/v1/jwks"
_PUBLIC_PATHS = {"/healthz", "/livez", "/readyz", "/version", _OIDC_CONFIG_PATH, _JWKS_PATH}
APPLY_PATCH = "application/apply-patch+yaml"
_PATCH_TYPES = {
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    APPLY_PATCH,
}
_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
          "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}

USER_KEY = web.AppKey("user", auth.User)
ATTRS_KEY = web.AppKey("attributes", authz.Attributes)  # the request's authorization attributes, for its metrics


@dataclass
class ServerConfig:
    data_dir: Path
    bind_address: str = "0.0.0.0"
    port: int = 6443
    store_url: str = "sqlite"
    etcd_cafile: str | None = None    # TLS to etcd (upstream's --etcd-cafile/--etcd-certfile/--etcd-keyfile)
    etcd_certfile: str | None = None
    etcd_keyfile: str | None = None
    service_cidr: str = "10.96.0.0/12"
    node_port_range: tuple[int, int] = (30000, 32767)
    advertise_address: str | None = None
    tls_sans: list[str] = field(default_factory=list)
    compaction_interval: float = 300.0
    event_ttl: float = 3600.0
    default_not_ready_toleration_seconds: int = 300
    default_unreachable_toleration_seconds: int = 300
    # Connections that send nothing are closed (see listener.py); Kubernetes: 32 s headers, 90 s idle.
    tls_handshake_timeout: float = 10.0
    request_header_timeout: float = 30.0
    idle_connection_timeout: float = 90.0
    # Service-account tokens (kube-apiserver's --service-account-issuer, --api-audiences (default: the
    # issuer), --service-account-max-token-expiration (0: none)).
    service_account_issuer: str = tokens.DEFAULT_ISSUER
    api_audiences: list[str] = field(default_factory=list)
    service_account_max_token_expiration: int = 0


# -- request parsing -------------------------------------------------------
@dataclass
class Target:
    resource: Kind
    namespace: str | None
    name: str | None
    subresource: str | None
    proxy_path: str = ""  # what follows .../proxy in the request's path ("/" or "" included)


def _split_proxy(parts: list[str], at: int) -> tuple[list[str], str] | None:
    """(parts up to and including "proxy", the rest joined) when parts[at] is "proxy"."""
    if len(parts) > at + 1 and parts[at] == "proxy":
        return parts[:at + 1], "/".join(parts[at + 1:])
    return None


def parse_target(group: str, version: str, parts: list[str]) -> Target:
    """The resource a path under /api/v1 or /apis/<g>/<v> names."""
    def res(plural: str) -> Kind:
        r = lookup(group, version, plural)
        if r is None:
            raise errors.NotFound(f"the server could not find the requested resource ({plural})")
        return r

    if len(parts) == 3 and parts[0] == "namespaces" and lookup(group, version, parts[2]) is None \
            and group == "" and parts[2] in ("status", "finalize"):
        return Target(res("namespaces"), None, parts[1], parts[2])  # a namespace's own subresource
    proxied = _split_proxy(parts, 4 if parts[:1] == ["namespaces"] else 2)
    if proxied is not None:  # .../NAME/proxy/any/path: the path is the proxy's, not ours
        head, rest = proxied
        t = parse_target(group, version, head)  # head ends at "proxy": no recursion
        t.proxy_path = rest
        return t
    if len(parts) >= 3 and parts[0] == "namespaces":
        r = res(parts[2])
        if not r.namespaced:
            raise errors.NotFound(f"the server could not find the requested resource ({parts[2]})")
        name = parts[3] if len(parts) > 3 else None
        sub = parts[4] if len(parts) > 4 else None
        if len(parts) > 5:
            raise errors.NotFound("the server could not find the requested resource")
        return Target(r, parts[1], name, sub)
    if not parts or len(parts) > 3:
        raise errors.NotFound("the server could not find the requested resource")
    r = res(parts[0])
    name = parts[1] if len(parts) > 1 else None
    sub = parts[2] if len(parts) > 2 else None
    if name is not None and r.namespaced:
        raise errors.NotFound(f"the server could not find the requested resource ({parts[0]} is namespaced)")
    return Target(r, None, name, sub)


async def read_body(request: web.Request) -> Any:
    """The request's body, decoded and checked by ``bodies`` (size, depth, aliasing)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise bodies.too_large()
    chunks, size = [], 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_BODY:
            raise bodies.too_large()
        chunks.append(chunk)
    # No Content-Type at all (the official Python client sends none) means JSON.
    ctype = request.content_type if "Content-Type" in request.headers else ""
    return bodies.decode(b"".join(chunks), ctype)


def wants_table(request: web.Request) -> str | None:
    """The meta.k8s.io version of Table the client asked for, if any."""
    for part in request.headers.get("Accept", "").split(","):
        params = dict(p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p)
        if params.get("as") == "Table" and params.get("g", "meta.k8s.io") == "meta.k8s.io":
            return params.get("v", "v1")
    return None


def is_dry_run(request: web.Request) -> bool:
    values = request.query.getall("dryRun", [])
    for v in values:
        if v != "All":
            raise errors.BadRequest(f"unsupported dryRun value {v!r}: only All is supported")
    return bool(values)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # The API server's JSON serializer is Go's json.Encoder, which ends every document with a
    # newline; clients show bodies verbatim (the Python client's FailToCreateError does), so ours do too.
    return web.Response(body=jsonbytes.dumps(body) + b"\n", status=status,
                        content_type="application/json", headers=headers)


def success_status(details: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details:
        body["details"] = details
    return body


def _int_param(request: web.Request, name: str) -> int | None:
    v = request.query.get(name)
    if v in (None, ""):
        return None
    try:
        return int(v)
    except ValueError:
        raise errors.BadRequest(f"{name} must be an integer, got {v!r}") from None


# -- the server ------------------------------------------------------------
class APIServer:
    def __init__(self, store: Store, config: ServerConfig) -> None:
        self.store = store
        self.config = config
        self._ca_cache: tuple[int, x509.Certificate] | None = None  # (ca.crt's mtime, the CA)
        self._kubelet_tls: proxy.KubeletTLS | None = None
        self.storage = Storage(store, service_cidr=config.service_cidr, node_port_range=config.node_port_range)
        # The kubernetes Service's endpoints: every live API server (kubepy.api.endpointreconciler).
        self.endpoints = EndpointReconciler(self.storage, config.advertise_address, config.port) \
            if config.advertise_address else None
        hooks = WebhookClient(store, source=config.advertise_address)
        # Upstream's order: the built-in mutating plugins, then mutating webhooks, ValidatingAdmissionPolicy,
        # validating webhooks, quota last so a write a policy or webhook refuses is never charged.
        self.storage.admission.plugins += [ServiceAccountAdmission(store), PriorityAdmission(store), LimitRanger(store),
                                           DefaultStorageClass(store), DefaultIngressClass(store),
                                           MutatingAdmissionWebhook(store, client=hooks),
                                           ValidatingAdmissionPolicy(store),
                                           ValidatingAdmissionWebhook(store, client=hooks),
                                           ResourceQuotaAdmission(store)]
        self.authn = auth.TokenAuthenticator()
        ca = config.data_dir / "ca.crt"
        self.sa_tokens = serviceaccounts.ServiceAccountTokens(
            self.storage, tokens.ensure_signing_key(config.data_dir), issuer=config.service_account_issuer,
            audiences=config.api_audiences, ca_pem=ca.read_bytes() if ca.exists() else b"",
            max_expiration=config.service_account_max_token_expiration)
        self.caches: dict[str, WatchCache] = {r.plural: WatchCache(store, r.prefix) for r in all_kinds()
                                               if not r.virtual}
        self.storage.list_cache = self._list_cache
        self._tasks: list[asyncio.Task[None]] = []
        self._openapi_warm: asyncio.Task[None] | None = None
        # CustomResourceDefinitions: the kinds they define are registered while the server runs.
        self.crds = CustomResourceDefinitions(self.storage, on_removed=self._drop_cache)
        self._store_subs: set[StoreSubscription] = set()  # watches older than the caches hold
        # Answers of other create-only kinds (Kind.virtual), by qualified plural: (request, target, body) -> object.
        self.virtual_creates: dict[str, Any] = {}
        for plural in reviews.PLURALS:
            self.virtual_creates[f"{plural}.{reviews.GROUP}"] = self._access_review
        # The aggregation layer (kubepy.api.aggregator): APIServices proxied to their Services.
        self.aggregator: aggregator.Aggregator | None = None
        self.ready = False
        # /metrics (kubepy.api.metrics): this server's own registry, never the process-global one.
        self.registry = new_registry()
        self.metrics = APIServerMetrics(self.registry, watchers=self._watcher_counts,
                                        count_objects=self._count_objects)
        # Authorization (kubepy.api.authz): masters, bootstrap joins, the node authorizer, RBAC.
        self.policy = rbac.PolicyIndex()
        self.node_graph = nodeauth.NodeGraph()
        self.authorizer = authz.Chain([
            authz.PrivilegedGroups(),
            authz.PathsFor(auth.BOOTSTRAPPERS, frozenset({("post", auth.JOIN_PATH)})),
            authz.PathsFor(auth.NODES, frozenset({("post", auth.SERVING_CERT_PATH)})),
            nodeauth.NodeAuthorizer(self.node_graph),
            rbac.RBACAuthorizer(self.policy),
        ])
        for plugin in self.storage.admission.plugins:  # CEL's authorizer asks the same chain
            if hasattr(plugin, "authorizer"):
                plugin.authorizer = self.authorizer

    # -- lifecycle --------------------------------------------------------
    async def start(self) -> None:
        # The OpenAPI documents (about 2 s of CPU) are built on a thread while the server starts; readiness
        # does not wait for them, requests that need them do (_errors_mw), without blocking the loop.
        self._openapi_warm = asyncio.create_task(self._warm_openapi())
        self._tasks.append(self._openapi_warm)
        validation.set_default_toleration_seconds(not_ready=self.config.default_not_ready_toleration_seconds,
                                                  unreachable=self.config.default_unreachable_toleration_seconds)
        for token, user in auth.load_or_create_static_tokens(self.config.data_dir).items():
            self.authn.add(token, user)
        revision = await self._load_node_credentials()
        await self.storage.load_allocations()
        for cache in self.caches.values():
            await cache.start()
        await self._bootstrap_objects()
        await self.crds.start(self.caches["customresourcedefinitions"])
        await self._ensure_authentication_configmap()
        _, proxy_cert = frontproxy.ensure_front_proxy(self.config.data_dir)
        # Backends are called from the advertised address, as webhooks are (a lab host routes by source).
        self.aggregator = aggregator.Aggregator(self.storage, front_proxy_cert=proxy_cert,
                                                source=local_source(self.config.advertise_address))
        await self.aggregator.start(self.caches["apiservices"], self.caches["endpoints"])
        await self._start_authorization()
        self._tasks.append(asyncio.create_task(self._compactor()))
        self._tasks.append(asyncio.create_task(self._event_reaper()))
        self._tasks.append(asyncio.create_task(self._observe_services()))
        self._tasks.append(asyncio.create_task(self._follow_open_namespaces()))
        self._tasks.append(asyncio.create_task(self._repair_allocations()))
        if self.endpoints is not None:
            self._tasks.append(asyncio.create_task(self.endpoints.run()))
        self._tasks.append(asyncio.create_task(self._follow_node_credentials(revision)))
        self._tasks.append(asyncio.create_task(self._revoke_deleted_nodes()))
        self._tasks.append(asyncio.create_task(
            PolicyStatus(self.storage).run(self.caches["validatingadmissionpolicies"])))
        self.ready = True

    @staticmethod
    async def _warm_openapi() -> None:
        started = time.monotonic()
        try:
            await asyncio.get_running_loop().run_in_executor(None, openapi.warm)
        except Exception:  # a request that needs them builds them again and answers the error itself
            log.exception("openapi documents not built")
            return
        log.info("openapi documents built ms=%.0f", (time.monotonic() - started) * 1000)

    async def stop(self) -> None:
        self.ready = False
        if self.endpoints is not None:
            try:
                await asyncio.wait_for(self.endpoints.remove(), 5)
            except (asyncio.TimeoutError, errors.APIError) as e:
                log.warning("kubernetes endpoints not updated on stop err=%s", e)
        await self.crds.stop()
        if self.aggregator is not None:
            await self.aggregator.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        for cache in self.caches.values():
            await cache.stop()
        for sub in list(self._store_subs):
            sub.end()
        await self.storage.admission.stop()

    async def _cache(self, res: Kind) -> WatchCache:
        """The watch cache of a kind; one registered after start gets its own on first watch
        (custom resources by store prefix: every version of a CRD shares one)."""
        key = res.plural if res.custom is None else res.prefix
        cache = self.caches.get(key)
        if cache is None:
            cache = self.caches[key] = WatchCache(self.store, res.prefix)
            await cache.start()
        return cache

    def _list_cache(self, res: Kind) -> WatchCache | None:
        """The kind's watch cache if it runs (a custom resource's starts at its first watch)."""
        return self.caches.get(res.plural if res.custom is None else res.prefix)

    def _drop_cache(self, res: Kind) -> None:
        """A CRD's kinds are gone: so is their watch cache (its watchers are ended)."""
        cache = self.caches.pop(res.prefix, None)
        if cache is not None:
            self._tasks.append(asyncio.create_task(cache.stop()))

    async def _bootstrap_objects(self) -> None:
        """Default namespaces and the ``kubernetes`` Service, as a fresh cluster has."""
        ns = by_plural("namespaces")
        for name in DEFAULT_NAMESPACES:
            try:
                await self.storage.create(ns, None, {"metadata": {"name": name}})
                log.info("created namespace=%s reason=bootstrap", name)
            except errors.AlreadyExists:
                pass
        pcs = by_plural("priorityclasses")
        for name, (value, description) in SYSTEM_PRIORITY_CLASSES.items():
            try:
                await self.storage.create(pcs, None, {"metadata": {"name": name}, "value": value,
                                                      "description": description})
                log.info("created priorityclass=%s value=%d reason=bootstrap", name, value)
            except errors.AlreadyExists:
                pass
        svc = by_plural("services")
        try:
            await self.storage.create(svc, "default", {
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"clusterIP": self.storage.allocator.first_ip, "type": "ClusterIP",
                         "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                    "targetPort": self.config.port}]},
            })
        except errors.AlreadyExists:
            pass
        await storagedefaults.ensure_default_storage_class(self.storage)
        if self.endpoints is not None:  # this server's address in the kubernetes Endpoints before it is ready
            try:
                await self.endpoints.reconcile()
            except errors.APIError as e:
                log.error("kubernetes endpoints not written address=%s err=%s", self.config.advertise_address,
                          e.message)

    async def _ensure_authentication_configmap(self) -> None:
        """``kube-system/extension-apiserver-authentication``: whom aggregated API servers trust (kubepy.api.frontproxy)."""
        front_ca, _ = frontproxy.ensure_front_proxy(self.config.data_dir)
        ca = self.config.data_dir / "ca.crt"
        want = frontproxy.authentication_configmap(client_ca_pem=ca.read_bytes() if ca.exists() else b"",
                                                   front_proxy_ca_pem=front_ca)
        cms = by_plural("configmaps")
        try:
            await self.storage.create(cms, "kube-system", copy.deepcopy(want))
            log.info("created configmap=kube-system/%s reason=bootstrap", frontproxy.AUTH_CONFIGMAP)
        except errors.AlreadyExists:
            have = await self.storage.get(cms, "kube-system", frontproxy.AUTH_CONFIGMAP)
            if have.get("data") != want["data"]:
                await self.storage.update(cms, "kube-system", frontproxy.AUTH_CONFIGMAP,
                                          lambda o: {**o, "data": want["data"]})
                log.info("updated configmap=kube-system/%s reason=bootstrap", frontproxy.AUTH_CONFIGMAP)

    async def _list_kind(self, kind: Kind) -> tuple[list[dict[str, Any]], int]:
        """Every object of ``kind`` and the revision read at (what ``rbac.follow`` starts from)."""
        items, revision, _ = await self.storage.list(kind, None)
        return items, revision

    async def _start_authorization(self) -> None:
        """RBAC index and node graph from the watch caches, then the default roles (reconciled)."""
        waits = []
        for kind in rbac.policy_kinds():
            ready = asyncio.Event()
            waits.append(ready.wait())
            self._tasks.append(asyncio.create_task(rbac.follow(
                kind, await self._cache(kind), self._list_kind,
                lambda obj, deleted, p=kind.plural: self.policy.apply(p, obj, deleted),
                lambda p=kind.plural: self.policy.reset(p), ready)))
        pods = by_plural("pods")
        ready = asyncio.Event()
        waits.append(ready.wait())
        self._tasks.append(asyncio.create_task(rbac.follow(
            pods, await self._cache(pods), self._list_kind, self.node_graph.apply, self.node_graph.reset, ready)))
        await asyncio.gather(*waits)
        await bootstrappolicy.ensure(self.storage)

    # -- node credentials -------------------------------------------------
    # The store holds one record per node name (its token); every API server follows that prefix, so a
    # credential issued or revoked through one is known to all of them.
    def _apply_node_credential(self, key: str, value: bytes | None) -> None:
        name = key[len(NODE_TOKEN_PREFIX):]
        self.authn.remove_user(auth.NODE_PREFIX + name)
        if value is None:
            return
        try:
            record = json.loads(value)
            digest = auth.token_digest(record["token"])
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignored node credential node=%s reason=Malformed", name)
            return
        self.authn.add_digest(digest, _node_user(name))

    async def _load_node_credentials(self) -> int:
        """Every stored credential; any the authenticator knows that the store lost are dropped."""
        page = await self.store.range(NODE_TOKEN_PREFIX)
        stored = set()
        for kv in page.kvs:
            self._apply_node_credential(kv.key, kv.value)
            stored.add(kv.key[len(NODE_TOKEN_PREFIX):])
        for user in self.authn.users():
            if user.node_name and user.node_name not in stored:
                self.authn.remove_user(user.name)
        return page.revision

    async def _follow_node_credentials(self, revision: int) -> None:
        while True:
            try:
                async for ev in self.store.watch(NODE_TOKEN_PREFIX, start_revision=revision + 1):
                    self._apply_node_credential(ev.kv.key, None if ev.type == "DELETE" else ev.kv.value)
                    revision = ev.kv.mod_revision
            except CompactedError:
                log.info("node credentials watch compacted; reloading")
                try:
                    revision = await self._load_node_credentials()
                except StoreError as e:
                    log.warning("node credentials reload failed err=%s", e)
            except StoreError as e:
                log.warning("node credentials watch failed err=%s", e)
            await asyncio.sleep(1.0)

    async def _revoke_deleted_nodes(self) -> None:
        """Deleting a Node revokes its credential (so the name may join again, as after kubeadm reset)."""
        nodes = self.caches["nodes"]
        while True:
            sub = nodes.subscribe(after=nodes.last_revision, matches=lambda o: True)
            assert sub is not None
            try:
                while (ev := await sub.queue.get()) is not None:
                    if ev.type == "DELETED":
                        await self._revoke_with_retries(ev.obj["metadata"]["name"])
            finally:
                sub.close()

    async def _revoke_with_retries(self, name: str) -> None:
        for attempt in range(5):
            try:
                await self._revoke_node_credential(name, reason="NodeDeleted")
                return
            except errors.APIError:
                await asyncio.sleep(2 ** attempt)
        log.error("node credential not revoked node=%s reason=StoreUnavailable "
                  "(revoke it: DELETE %s%s)", name, auth.CREDENTIALS_PATH, name)

    async def _revoke_node_credential(self, name: str, *, reason: str) -> bool:
        try:
            await self.store.delete(NODE_TOKEN_PREFIX + name)
        except KeyNotFoundError:
            return False
        except StoreError as e:
            log.warning("node credential revocation failed node=%s err=%s", name, e)
            raise store_error(e) from e
        self.authn.remove_user(auth.NODE_PREFIX + name)
        log.info("revoked node credential node=%s reason=%s", name, reason)
        return True

    async def _compactor(self) -> None:
        """Keeps about one interval of history, as Kubernetes does."""
        previous = await self.store.current_revision()
        while True:
            await asyncio.sleep(self.config.compaction_interval)
            try:
                current = await self.store.current_revision()
                if previous > 0:
                    await self.store.compact(previous)
                    for cache in self.caches.values():
                        cache.compacted(previous)
                    log.info("compacted revision=%d", previous)
                previous = current
            except StoreError as e:
                log.warning("compaction failed err=%s", e)

    async def _event_reaper(self) -> None:
        """Events expire after --event-ttl, as in Kubernetes."""
        events = by_plural("events")
        while True:
            await asyncio.sleep(min(60.0, self.config.event_ttl))
            cutoff = objects.now().timestamp() - self.config.event_ttl
            try:
                items, _, _ = await self.storage.list(events, None)
                for ev in items:
                    stamp = ev.get("lastTimestamp") or ev.get("eventTime") or ev["metadata"].get("creationTimestamp")
                    if stamp and objects.parse_time(stamp).timestamp() < cutoff:
                        try:
                            await self.storage.delete(events, ev["metadata"]["namespace"], ev["metadata"]["name"],
                                                      DeleteOptions())
                        except errors.NotFound:
                            pass
            except errors.APIError as e:
                log.warning("event expiry failed err=%s", e.message)

    async def _repair_allocations(self, period: float = 60.0) -> None:
        """Drops ClusterIP/node-port reservations a crashed write left behind (see kubepy.api.reservations)."""
        while True:
            await asyncio.sleep(period)
            await self.storage.repair_allocations()

    async def _observe_services(self) -> None:
        """Keeps the allocator's view current with writes it did not make."""
        sub = self.caches["services"].subscribe(after=self.caches["services"].last_revision, matches=lambda o: True)
        assert sub is not None
        try:
            while True:
                ev = await sub.queue.get()
                if ev is None:
                    await self.storage.load_allocations()
                    sub = self.caches["services"].subscribe(after=self.caches["services"].last_revision,
                                                            matches=lambda o: True)
                    assert sub is not None
                    continue
                m = ev.obj["metadata"]
                key = by_plural("services").key(m.get("namespace"), m["name"])
                self.storage.allocator.observe(key, None if ev.type == "DELETED" else ev.obj)
        finally:
            sub.close()

    async def _follow_open_namespaces(self) -> None:
        """Keeps ``storage.open_namespaces`` from a list and the namespaces watch (``rbac.follow``,
        as the RBAC index is kept), so a create checks its namespace in memory instead of reading
        it from the store each time."""
        known: set[str] = set()

        def apply(obj: dict[str, Any], deleted: bool) -> None:
            m = obj["metadata"]
            if deleted or m.get("deletionTimestamp"):
                known.discard(m["name"])
            else:
                known.add(m["name"])

        self.storage.open_namespaces = known
        await rbac.follow(by_plural("namespaces"), self.caches["namespaces"], self._list_kind, apply, known.clear)

    # -- aiohttp wiring ---------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors_mw, self._auth_mw, self._authz_mw], client_max_size=MAX_BODY)
        r = app.router
        r.add_get("/healthz", self.health)
        r.add_get("/livez", self.health)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.serve_metrics)
        r.add_get("/version", lambda req: _json_async(discovery.version_info()))
        r.add_get("/api", self.api_versions)
        r.add_get("/apis", self.api_groups)
        r.add_get("/openapi/v2", self.openapi_v2)
        r.add_get("/swagger-2.0.0.pb-v1", self.openapi_v2)  # the legacy path of the protobuf form
        r.add_get("/openapi/v3", self.openapi_v3)
        r.add_get("/openapi/v3/{path:.+}", self.openapi_v3)
        r.add_get(_OIDC_CONFIG_PATH, self.openid_configuration)
        r.add_get(_JWKS_PATH, self.openid_jwks)
        r.add_post(auth.JOIN_PATH, self.join)
        r.add_post(auth.SERVING_CERT_PATH, self.sign_kubelet_serving_cert)
        r.add_delete(auth.CREDENTIALS_PATH + "{name}", self.revoke_node_credential)
        r.add_route("*", "/api/{version}", self.core_root)
        r.add_route("*", "/api/{version}/{tail:.*}", self.core)
        r.add_route("*", "/apis/{group}", self.group_root)
        r.add_route("*", "/apis/{group}/{version}", self.group_version_root)
        r.add_route("*", "/apis/{group}/{version}/{tail:.*}", self.grouped)
        return app

    @web.middleware
    async def _errors_mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.monotonic()
        admission_warnings: list[str] = []  # what admission webhooks said to this request's client
        warnings_token = admission.REQUEST_WARNINGS.set(admission_warnings)
        try:
            warm = self._openapi_warm
            if warm is not None and not warm.done() and (request.method != "GET" or request.path.startswith("/openapi")):
                await asyncio.shield(warm)   # writes validate fields against the documents
            resp = await handler(request)
        except errors.APIError as e:
            resp = json_response(e.status(), e.code)
        except web.HTTPException as e:
            if e.status == 404:
                err: errors.APIError = errors.NotFound("the server could not find the requested resource")
            elif e.status == 405:
                err = errors.MethodNotAllowed("the server does not allow this method on the requested resource")
            elif e.status == 413:
                err = bodies.too_large()
            else:
                raise
            resp = json_response(err.status(), err.code)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("internal error method=%s path=%s", request.method, request.path)
            err = errors.InternalError("an internal error occurred; see the API server log")
            resp = json_response(err.status(), err.code)
        admission.REQUEST_WARNINGS.reset(warnings_token)
        if admission_warnings and not resp.prepared:
            for header in _fitting_warnings(admission_warnings):
                resp.headers.add("Warning", header)
        self._observe(request, resp.status, time.monotonic() - started)
        if request.method != "GET" or resp.status >= 400:
            user = request.get(USER_KEY)
            log.info("request method=%s path=%s status=%d user=%s ms=%.1f", request.method, request.path,
                     resp.status, user.name if user else "-", (time.monotonic() - started) * 1000)
        return resp

    @web.middleware
    async def _auth_mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        user = await self.authenticate(request)
        if user is None:
            if request.path in _PUBLIC_PATHS:
                return await handler(request)
            raise errors.Unauthorized("Unauthorized")
        request[USER_KEY] = user
        if user.is_bootstrap and request.path not in (auth.JOIN_PATH, "/version", "/api", "/apis"):
            raise errors.Forbidden(f'User "{user.name}" may only join nodes')
        token = admission.REQUEST_USER.set(user)  # who admission webhooks are told asks
        try:
            return await handler(request)
        finally:
            admission.REQUEST_USER.reset(token)

    async def authenticate(self, request: web.Request) -> auth.User | None:
        """The caller, as Kubernetes' union authenticator finds it: a verified client certificate,
        then a bearer token (static/node, bootstrap, service-account JWT); None when anonymous."""
        user, refused = self._certificate_user(request), None
        if isinstance(user, tlsclientauth.CertificateRefused):
            user, refused = None, user
        if user is None:
            user = await self._token_user(auth.bearer_token(request.headers.get("Authorization")))
        if user is None and refused is not None:
            # As upstream's union authenticator with FailOnError: a failed authenticator and no
            # other that succeeds is a 401 (never anonymous), with the reason in the log only.
            log.info("refused client certificate path=%s reason=%s", request.path, refused)
            raise errors.Unauthorized("Unauthorized")
        return auth.with_authenticated_group(user) if user is not None else None

    def _certificate_user(self, request: web.Request) -> auth.User | tlsclientauth.CertificateRefused | None:
        """The user a client certificate names once verified here against the cluster CA (the TLS
        layer takes any certificate: kubepy.tlsclientauth); None without one."""
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return None
        try:
            name, groups = tlsclientauth.verify_client_certificate(der, self._client_ca())
        except tlsclientauth.CertificateRefused as e:
            return e
        return auth.User(name, groups)

    def _client_ca(self) -> x509.Certificate:
        path = self.config.data_dir / "ca.crt"
        stamp = path.stat().st_mtime_ns
        if self._ca_cache is None or self._ca_cache[0] != stamp:
            self._ca_cache = (stamp, x509.load_pem_x509_certificate(path.read_bytes()))
        return self._ca_cache[1]

    async def _token_user(self, token: str | None) -> auth.User | None:
        if not token:
            return None
        return (self.authn.authenticate(f"Bearer {token}") or await self._bootstrap_user(token)
                or await self.sa_tokens.authenticate(token))

    @web.middleware
    async def _authz_mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Impersonation, then every request (resource or not) through the authorizer chain."""
        user = request.get(USER_KEY)
        if user is None:
            subject: Any = authz.Anonymous()
        else:
            subject = authz.impersonate(user, request.headers, lambda h: request.headers.getall(h, []), self.authorizer)
            if subject is not user:
                request[USER_KEY] = subject
                admission.REQUEST_USER.set(subject)
        attrs = authz.request_attributes(subject, request.method, request.path, request.query)
        decision = self.authorizer.authorize(attrs)
        if not decision.allowed:
            log.info("forbidden user=%s verb=%s resource=%s namespace=%s name=%s path=%s reason=%s", subject.name,
                     attrs.verb, attrs.resource + ("/" + attrs.subresource if attrs.subresource else ""),
                     attrs.namespace, attrs.name, attrs.path, decision.reason or "-")
            raise authz.forbidden(attrs, decision.reason)
        request[ATTRS_KEY] = attrs
        if attrs.verb in ("watch", "proxy") or attrs.subresource in ("exec", "attach", "portforward", "proxy"):
            gauge = self.metrics.longrunning_gauge(request_labels(attrs, request.method, request.content_type))
            gauge.inc()
            try:
                return await handler(request)
            finally:
                gauge.dec()
        return await handler(request)

    def _observe(self, request: web.Request, code: int, seconds: float) -> None:
        attrs = request.get(ATTRS_KEY)
        if attrs is None:  # refused before authorization (401), or not a path it knows
            try:
                attrs = authz.request_attributes(None, request.method, request.path, request.query)
            except errors.APIError:
                attrs = authz.Attributes(None, request.method.lower(), is_resource=False, path=request.path)
        self.metrics.observe(request_labels(attrs, request.method, request.content_type),
                             "All" if request.query.get("dryRun") else "", code, seconds)

    async def _bootstrap_user(self, token: str | None) -> auth.User | None:
        """The bootstrap token's user, read from its Secret; 401 with the reason for an expired one."""
        parsed = bootstraptoken.parse(token) if token else None
        if parsed is None:
            return None
        token_id, token_secret = parsed
        try:
            secret = await self.storage.get(by_plural("secrets"), bootstraptoken.NAMESPACE,
                                            bootstraptoken.secret_name(token_id))
        except errors.NotFound:
            secret = None
        verdict = bootstraptoken.check(token_id, token_secret, secret, now=dt.datetime.now(dt.UTC))
        if verdict.user is None:
            if verdict.reason != "Unauthorized":
                log.info("refused bootstrap token id=%s reason=%s", token_id, verdict.reason)
                raise errors.Unauthorized(verdict.reason)
            return None
        return auth.User(verdict.user, verdict.groups)

    # -- simple endpoints -------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def serve_metrics(self, request: web.Request) -> web.Response:
        """GET /metrics: the non-resource URL that system:monitoring grants."""
        await self.metrics.refresh_storage_objects()
        body, content_type = exposition(self.registry, request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    def _watcher_counts(self) -> list[tuple[tuple[str, str, str], int]]:
        kinds = {r.plural if r.custom is None else r.prefix: r for r in all_kinds()}
        counts = []
        for key, cache in list(self.caches.items()):
            kind = kinds.get(key)
            if kind is not None:
                counts.append(((kind.group, kind.version, kind.kind), len(cache.subscribers)))
        return counts

    async def _count_objects(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        seen: set[str] = set()
        for kind in all_kinds():
            if kind.virtual or kind.prefix in seen:
                continue
            seen.add(kind.prefix)
            resource = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
            try:
                counts[resource] = len((await self.store.range(kind.prefix)).kvs)
            except StoreError as e:
                log.warning("storage objects not counted resource=%s err=%s", resource, e)
        return counts

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.Response(text="not ready: starting", status=503)
        try:
            await self.store.current_revision()
        except StoreError as e:
            return web.Response(text=f"not ready: store: {e}", status=503)
        return web.Response(text="ok")

    async def api_versions(self, request: web.Request) -> web.Response:
        host = request.host or f"{self.config.bind_address}:{self.config.port}"
        return json_response(discovery.api_versions(host))

    async def openapi_v2(self, request: web.Request) -> web.Response:
        accept = request.headers.get("Accept", "*/*")
        wants_proto = request.path.startswith("/swagger-2.0.0.pb-v1") or any(
            t in accept for t in openapi_proto.ACCEPTED)
        if not wants_proto and "json" not in accept and "*/*" not in accept:
            raise errors.NotAcceptable(f"/openapi/v2 is served as application/json or {openapi_proto.CONTENT_TYPE}")
        body, etag = openapi.openapi_v2_proto() if wants_proto else openapi.openapi_v2_json()
        headers = {"ETag": f'"{etag}"', "Vary": "Accept"}
        if request.headers.get("If-None-Match", "").strip('"') == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type=openapi_proto.CONTENT_TYPE if wants_proto else "application/json",
                            headers=headers)

    async def openapi_v3(self, request: web.Request) -> web.Response:
        path = request.match_info.get("path")
        if not path:
            return json_response(openapi.openapi_v3_index())
        found = openapi.openapi_v3_json(path)
        if found is None:
            raise errors.NotFound(f"no OpenAPI document for {path}")
        body, digest = found
        headers = {"ETag": f'"{digest}"'}
        if request.query.get("hash") == digest:
            headers["Cache-Control"] = "public, immutable"
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def openid_configuration(self, request: web.Request) -> web.Response:
        host = request.host or f"{self.config.bind_address}:{self.config.port}"
        return json_response(self.sa_tokens.openid_configuration(host),
                             headers={"Cache-Control": "public, max-age=3600"})

    async def openid_jwks(self, request: web.Request) -> web.Response:
        resp = json_response(self.sa_tokens.jwks(), headers={"Cache-Control": "public, max-age=3600"})
        resp.content_type = "application/jwk-set+json"
        return resp

    async def sign_kubelet_serving_cert(self, request: web.Request) -> web.Response:
        """A node's kubelet sends a certificate request (``{"csr": PEM}``) and gets its serving
        certificate signed by the cluster CA (``{"certificate": PEM, "ca": PEM}``), so the API
        server can verify the kubelet it connects to (kubepy.api.proxy checks the node's name)."""
        user = request[USER_KEY]
        node = user.node_name
        if node is None:
            raise errors.Forbidden(f'User "{user.name}" is not a node: only a node\'s kubelet may have its '
                                   "serving certificate signed")
        body = await read_body(request)
        csr = body.get("csr") if isinstance(body, dict) else None
        if not isinstance(csr, str):
            raise errors.BadRequest("the body must be {\"csr\": \"<PEM certificate request>\"}")
        try:
            cert = certs.sign_kubelet_serving_cert(self.config.data_dir, csr.encode(), node_name=node)
        except certs.CSRRefused as e:
            raise errors.BadRequest(f"refused to sign the serving certificate of node {node}: {e}") from e
        log.info("signed kubelet serving certificate node=%s", node)
        return json_response({"certificate": cert.decode(),
                              "ca": (self.config.data_dir / "ca.crt").read_text()}, 201)

    async def join(self, request: web.Request) -> web.Response:
        """Issues a new node's token in exchange for a bootstrap token: once per node name."""
        user = request[USER_KEY]
        if not (user.is_bootstrap or user.is_admin):
            raise errors.Forbidden(f'User "{user.name}" cannot join nodes')
        body = await read_body(request)
        name = body.get("nodeName") if isinstance(body, dict) else None
        if not isinstance(name, str) or validation.is_dns1123_subdomain(name):
            raise errors.BadRequest("nodeName must be a valid DNS-1123 subdomain")
        key = NODE_TOKEN_PREFIX + name
        try:
            await self.storage.get(by_plural("nodes"), None, name)
            node_exists = True
        except errors.NotFound:
            node_exists = False
        try:
            credential_exists = await self.store.get(key) is not None
        except StoreError as e:
            raise store_error(e) from e
        decision = auth.decide_join(user, name, node_exists=node_exists, credential_exists=credential_exists)
        if not decision.allowed:
            log.info("refused join node=%s by=%s code=%d", name, user.name, decision.code)
            raise (errors.Forbidden if decision.code == 403 else errors.Conflict)(decision.message)
        token = auth.new_token()
        # The token is kept (in the 0600 store): the authenticator loads node tokens from there.
        record = {"token": token, "issued": objects.rfc3339(objects.now()), "by": user.name}
        try:
            # Create, never overwrite: of two joins racing for one name, exactly one gets a token.
            await self.store.create(key, json.dumps(record).encode())
        except KeyExistsError:
            log.info("refused join node=%s by=%s code=409 reason=Race", name, user.name)
            raise errors.Conflict(auth.decide_join(user, name, node_exists=False, credential_exists=True).message)
        except StoreError as e:
            raise store_error(e) from e
        self.authn.add(token, _node_user(name))
        log.info("issued node token node=%s by=%s", name, user.name)
        return json_response({"kind": "NodeToken", "apiVersion": "kubepy.io/v1", "nodeName": name,
                              "user": auth.NODE_PREFIX + name, "token": token}, 201)

    async def revoke_node_credential(self, request: web.Request) -> web.Response:
        """An admin revokes the credential issued to a node name (``kubectl delete --raw``)."""
        user = request[USER_KEY]
        name = request.match_info["name"]
        if not user.is_admin:
            raise errors.Forbidden(f'User "{user.name}" cannot revoke node credentials')
        if not await self._revoke_node_credential(name, reason=f"RevokedBy:{user.name}"):
            raise errors.NotFound(f'node "{name}" has no credential')
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "details": {"name": name, "kind": "nodecredentials"}})

    async def core_root(self, request: web.Request) -> web.Response:
        doc = discovery.api_resource_list("", request.match_info["version"])
        if doc is None or request.method != "GET":
            raise errors.NotFound("the server could not find the requested resource")
        return json_response(doc)

    async def api_groups(self, request: web.Request) -> web.Response:
        extra = self.aggregator.remote_groups() if self.aggregator is not None else {}
        return json_response(discovery.api_group_list(extra))

    def _remote(self, request: web.Request) -> dict[str, Any] | None:
        """The APIService that serves this /apis/<group>/<version> path elsewhere, if one does."""
        if self.aggregator is None:
            return None
        group, version = request.match_info["group"], request.match_info["version"]
        if lookup_served(group, version):
            return None  # what this server serves is never proxied (a CRD made after the APIService, say)
        return self.aggregator.remote(group, version)

    async def group_root(self, request: web.Request) -> web.Response:
        group = request.match_info["group"]
        if self.aggregator is not None and request.method == "GET" and discovery.api_group(group) is None:
            versions = self.aggregator.remote_groups().get(group)
            if versions:
                return json_response(discovery.api_group_doc(group, versions))
        doc = discovery.api_group(request.match_info["group"])
        if doc is None or request.method != "GET":
            raise errors.NotFound("the server could not find the requested resource")
        return json_response(doc)

    async def group_version_root(self, request: web.Request) -> web.StreamResponse:
        remote = self._remote(request)
        if remote is not None:
            return await self.aggregator.proxy(request, remote, request[USER_KEY])  # type: ignore[union-attr]
        doc = discovery.api_resource_list(request.match_info["group"], request.match_info["version"])
        if doc is None or request.method != "GET":
            raise errors.NotFound("the server could not find the requested resource")
        return json_response(doc)

    async def core(self, request: web.Request) -> web.StreamResponse:
        return await self.dispatch(request, "", request.match_info["version"])

    async def grouped(self, request: web.Request) -> web.StreamResponse:
        remote = self._remote(request)
        if remote is not None:
            return await self.aggregator.proxy(request, remote, request[USER_KEY])  # type: ignore[union-attr]
        return await self.dispatch(request, request.match_info["group"], request.match_info["version"])

    # -- resource dispatch ------------------------------------------------
    async def dispatch(self, request: web.Request, group: str, version: str) -> web.StreamResponse:
        parts = [p for p in request.match_info["tail"].split("/") if p]
        if parts and parts[0] == "watch":  # legacy /watch/ paths
            parts = parts[1:]
            request = request.clone(rel_url=request.rel_url.update_query({"watch": "true"}))
        t = parse_target(group, version, parts)
        m = request.method
        if t.resource.virtual and (m != "POST" or t.name is not None):
            raise errors.MethodNotAllowed("the server does not allow this method on the requested resource")
        if t.subresource:
            return await self.subresource(request, t)
        if t.name is None:
            if m == "GET":
                if request.query.get("watch") in ("1", "true", "True"):
                    return await self.watch(request, t)
                return await self.list(request, t)
            if m == "POST":
                return await self.create(request, t)
            if m == "DELETE":
                return await self.delete_collection(request, t)
        else:
            if m == "GET":
                return await self.get(request, t)
            if m == "PUT":
                return await self.update(request, t)
            if m == "PATCH":
                return await self.patch(request, t)
            if m == "DELETE":
                return await self.delete(request, t)
        raise errors.MethodNotAllowed(f"{m} is not supported on this path")

    def authorize(self, request: web.Request, verb: str, t: Target, *, name: str | None = None,
                  existing: dict[str, Any] | None = None, new: dict[str, Any] | None = None) -> None:
        """Admission that needs the objects (the request itself was authorized by ``_authz_mw``):
        NodeRestriction (``existing`` is the stored object, ``new`` what a write makes of it)
        and RBAC escalation prevention."""
        user = request[USER_KEY]
        attrs = authz.Attributes(user, verb, api_group=t.resource.group, api_version=t.resource.version,
                                 resource=t.resource.plural, subresource=t.subresource or "",
                                 namespace=t.namespace or "", name=(name if name is not None else t.name) or "")
        nodeauth.admit(attrs, old=existing, new=new, graph=self.node_graph)
        if new is not None and not t.subresource:
            escalation.check(user, t.resource.plural, t.namespace or "", new, existing,
                             authorizer=self.authorizer, policy=self.policy)

    def _admitted(self, request: web.Request, verb: str, t: Target, old: dict[str, Any],
                  new: dict[str, Any]) -> dict[str, Any]:
        """``new`` once admission allows the change from ``old`` (called inside a write's mutator)."""
        self.authorize(request, verb, t, existing=old, new=new)
        return new

    def _respond(self, request: web.Request, t: Target, obj: dict[str, Any], status: int = 200,
                 warnings: list[str] | None = None) -> web.Response:
        headers = None
        if warnings:
            headers = multidict.CIMultiDict(("Warning", h) for h in _fitting_warnings(warnings))
        obj = _as_version(t.resource, obj)
        tv = wants_table(request)
        if tv:
            return json_response(self._table(t.resource, [obj], tv, request, {"resourceVersion": obj["metadata"].get("resourceVersion", "")}), status, headers)
        return json_response(obj, status, headers)

    def _table(self, res: Kind, items: list[dict[str, Any]], version: str, request: web.Request,
               list_meta: dict[str, Any]) -> dict[str, Any]:
        include = request.query.get("includeObject", "Metadata")
        now = objects.now()
        printer = printers.printer_for(res)
        rows = []
        for o in items:
            row: dict[str, Any] = {"cells": printer.cells(o, now)}
            if include == "Object":
                row["object"] = o
            elif include != "None":
                row["object"] = objects.partial_metadata(o, f"meta.k8s.io/{version}")
            rows.append(row)
        return {"kind": "Table", "apiVersion": f"meta.k8s.io/{version}", "metadata": list_meta,
                "columnDefinitions": [dict(c) for c in printer.columns], "rows": rows}

    def _matcher(self, request: web.Request, t: Target, *, check_namespace: bool = False) -> Any:
        """A predicate from labelSelector/fieldSelector, or None. Lists read only
        the namespace's key prefix; a watch shares its resource's cache with
        every namespace, so it also checks the namespace (``check_namespace``)."""
        ls_text, fs_text = request.query.get("labelSelector", ""), request.query.get("fieldSelector", "")
        try:
            ls = selectors.parse_label_selector(ls_text) if ls_text.strip() else None
            allowed = t.resource.selectable_fields
            fs = selectors.parse_field_selector(fs_text, allowed=allowed) if fs_text.strip() else None
        except selectors.SelectorError as e:
            raise errors.BadRequest(str(e)) from e
        ns = t.namespace if check_namespace else None
        fields = t.resource.fields
        if ls is None and fs is None and not ns:
            return None

        def matches(obj: dict[str, Any]) -> bool:
            m = obj.get("metadata") or {}
            if ns and m.get("namespace") != ns:
                return False
            if ls is not None and not ls.matches(m.get("labels") or {}):
                return False
            return fs is None or fs.matches(fields(obj))
        return matches

    # -- verbs ------------------------------------------------------------
    async def get(self, request: web.Request, t: Target) -> web.Response:
        self.authorize(request, "get", t)
        obj = await self.storage.get(t.resource, t.namespace, t.name or "")
        return self._respond(request, t, obj)

    async def list(self, request: web.Request, t: Target) -> web.Response:
        self.authorize(request, "list", t)
        matches = self._matcher(request, t)
        # The namespace is already the key prefix; selectors filter the rest.
        limit = _int_param(request, "limit") or 0
        rv = request.query.get("resourceVersion", "")
        revision = 0
        if rv and request.query.get("resourceVersionMatch") == "Exact":
            revision = _parse_rv(rv)
        tv = wants_table(request)
        cont = request.query.get("continue") or None
        if not tv and not limit:
            return await self._stream_list(request, t, matches, cont, revision)
        items, read_rev, token = await self.storage.list(
            t.resource, t.namespace, matches=matches, limit=limit, continue_token=cont, revision=revision, raw=not tv)
        list_meta: dict[str, Any] = {"resourceVersion": str(read_rev)}
        if token:
            list_meta["continue"] = token
        items = [_as_version(t.resource, o) for o in items] if tv else _raw_as_version(t.resource, items)
        if tv:
            return json_response(self._table(t.resource, items, tv, request, list_meta))
        return web.Response(body=self._list_head(t, list_meta) + b",".join(items) + b"]}\n",
                            content_type="application/json")

    def _list_head(self, t: Target, list_meta: dict[str, Any]) -> bytes:
        head = json.dumps({"kind": t.resource.list_kind, "apiVersion": t.resource.api_version,
                           "metadata": list_meta}, separators=(",", ":")).encode()
        return head[:-1] + b',"items":['

    async def _stream_list(self, request: web.Request, t: Target, matches: Any, cont: str | None,
                           revision: int) -> web.StreamResponse:
        """A whole list, read and sent a page at a time from one snapshot, so a
        10,000-pod list never holds all 10,000 objects in memory at once."""
        cached = None if cont or revision else await self.storage.list_cached(t.resource, t.namespace, matches=matches)
        if cached is not None:
            # The watch cache's bytes, already in memory: sent a page at a time all the same.
            items, read_rev, _ = cached
            pages = [_raw_as_version(t.resource, items[i:i + _STREAM_PAGE])
                     for i in range(0, len(items), _STREAM_PAGE)] or [[]]
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await resp.write(self._list_head(t, {"resourceVersion": str(read_rev)}) + b",".join(pages[0]))
            for page in pages[1:]:
                await resp.write(b",".join([b"", *page]))   # the leading comma without a second copy
            await resp.write(b"]}\n")
            await resp.write_eof()
            return resp
        items, read_rev, token = await self.storage.list(t.resource, t.namespace, matches=matches, limit=_STREAM_PAGE,
                                                         continue_token=cont, revision=revision, raw=True)
        items = _raw_as_version(t.resource, items)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(self._list_head(t, {"resourceVersion": str(read_rev)}) + b",".join(items))
        sent = bool(items)
        while token:
            try:
                items, _, token = await self.storage.list(t.resource, t.namespace, matches=matches,
                                                          limit=_STREAM_PAGE, continue_token=token, raw=True)
            except errors.APIError as e:
                # Too late for a Status: cut the response so the client sees a failed list.
                log.warning("list aborted mid-stream resource=%s err=%s", t.resource.plural, e.message)
                raise ConnectionResetError("list aborted") from e
            items = _raw_as_version(t.resource, items)
            if items:
                await resp.write((b"," if sent else b"") + b",".join(items))
                sent = True
        await resp.write(b"]}\n")
        await resp.write_eof()
        return resp

    async def create(self, request: web.Request, t: Target) -> web.Response:
        body = await read_body(request)
        obj = self._check_body(t, body)
        if t.resource.qualified == "selfsubjectreviews.authentication.k8s.io":
            # Every authenticated user may ask who they are (upstream: RBAC's system:basic-user).
            return await self._review(request, t, obj)
        self.authorize(request, "create", t, name=(obj.get("metadata") or {}).get("name"), new=obj)
        warnings = self._field_validation(request, t, obj)
        if t.resource.virtual:
            return await self._review(request, t, obj)
        if self.crds.is_terminating(t.resource):
            raise errors.MethodNotAllowed(
                "create not allowed while custom resource definition is terminating")
        if t.resource.plural == "secrets" and t.namespace and not is_dry_run(request):
            obj = await self.sa_tokens.fill_legacy_secret(t.namespace, obj)
        created = await self.storage.create(t.resource, t.namespace, obj, dry_run=is_dry_run(request),
                                            managed=self._managed_fields(request, t, "CreateOptions"))
        return self._respond(request, t, created, 201, warnings)

    async def _review(self, request: web.Request, t: Target, obj: dict[str, Any]) -> web.Response:
        """A create-only kind's answer (nothing is stored): 201 with the object and its status."""
        plural = t.resource.qualified
        if plural == "tokenreviews.authentication.k8s.io":
            return json_response(await self.sa_tokens.token_review(obj, self._token_user), 201)
        if plural == "selfsubjectreviews.authentication.k8s.io":
            return json_response(serviceaccounts.self_subject_review(request[USER_KEY]), 201)
        handler = self.virtual_creates.get(plural)
        if handler is None:
            raise errors.MethodNotAllowed(f"{plural} cannot be created on this server")
        return json_response(await handler(request, t, obj), 201)

    async def _access_review(self, request: web.Request, t: Target, obj: dict[str, Any]) -> dict[str, Any]:
        return reviews.review(t.resource, t.namespace, obj, request[USER_KEY], authorizer=self.authorizer,
                              policy=self.policy)

    def _check_body(self, t: Target, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.BadRequest("the body must be a JSON or YAML object")
        res = t.resource
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if kind not in (None, "", res.kind):
            raise errors.BadRequest(f"the kind of the object ({kind}) does not match the URL ({res.kind})")
        if api_version not in (None, "", res.api_version):
            raise errors.BadRequest(
                f"the apiVersion of the object ({api_version}) does not match the URL ({res.api_version})")
        meta = body.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise errors.BadRequest("metadata must be an object")
        if res.namespaced and isinstance(meta, dict) and meta.get("namespace") not in (None, "", t.namespace):
            raise errors.BadRequest("the namespace of the provided object does not match the namespace sent on the request")
        if res.namespaced and not t.namespace:
            raise errors.NotFound(f"{res.plural} must be created in a namespace (use /namespaces/<ns>/{res.plural})")
        return body

    def _field_validation(self, request: web.Request, t: Target, obj: dict[str, Any], *,
                          patched: bool = False) -> list[str]:
        """Kubernetes' decoder on *obj*: numbers and types the schema cannot hold
        are refused whatever the mode; unknown fields are refused
        (fieldValidation=Strict), or dropped with a warning (Warn, the
        default) or silently (Ignore). Returns the warnings; drops in place."""
        mode = request.query.get("fieldValidation", "Warn")
        if mode not in ("Strict", "Warn", "Ignore"):
            raise errors.BadRequest(f"fieldValidation must be one of Strict, Warn, Ignore (got {mode!r})")
        res = t.resource
        if res.custom is not None:
            # A custom resource's types are its schema's to check (422s) and unknown fields are pruned;
            # its metadata is an ObjectMeta like any object's.
            bad_types, unknown = openapi.metadata_problems(obj, drop=mode != "Strict")
            unknown += res.custom.schema.prune(obj)
        else:
            bad_types = openapi.type_errors(res.api_version, res.kind, obj)
        if bad_types:
            # Kubernetes' decoder refuses these before validation, whatever the mode.
            raise errors.BadRequest(f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                                    + "; ".join(bad_types))
        if res.custom is None:
            unknown = openapi.unknown_fields(res.api_version, res.kind, obj, drop=mode != "Strict")
        if not unknown:
            return []
        user = request.get(USER_KEY)
        log.info("unknown fields resource=%s name=%s user=%s fieldValidation=%s action=%s fields=%s",
                 res.plural, (obj.get("metadata") or {}).get("name") if isinstance(obj.get("metadata"), dict) else "",
                 user.name if user else "-", mode, "refused" if mode == "Strict" else "dropped",
                 json.dumps([p.lstrip(".") for p in unknown[:5]]) + ("..." if len(unknown) > 5 else ""))
        if mode == "Ignore":
            return []
        if mode == "Warn":
            return openapi.unknown_field_warnings(unknown)
        if patched:
            # What Kubernetes answers for a patch whose result has unknown fields.
            raise errors.Invalid("", "", [{"reason": "FieldValueInvalid", "field": "patch",
                                           "message": openapi.strict_decoding_error(unknown)}])
        raise errors.BadRequest(openapi.strict_decoding_message(res.kind, res.version, unknown))

    async def update(self, request: web.Request, t: Target) -> web.Response:
        body = await read_body(request)
        obj = self._check_body(t, body)
        name = t.name or ""
        existing = await self.storage.get(t.resource, t.namespace, name)
        self.authorize(request, "update", t, existing=existing)
        warnings = self._field_validation(request, t, obj)
        rv = (obj.get("metadata") or {}).get("resourceVersion") or None
        updated = await self.storage.update(
            t.resource, t.namespace, name, lambda old: self._admitted(request, "update", t, old, copy.deepcopy(obj)),
            precondition_rv=rv, dry_run=is_dry_run(request),
            managed=self._managed_fields(request, t, "UpdateOptions"))
        return self._respond(request, t, updated, 200, warnings)

    async def patch(self, request: web.Request, t: Target, *, subresource: str | None = None) -> web.Response:
        ctype = request.content_type
        if ctype not in _PATCH_TYPES:
            raise errors.UnsupportedMedia(f"the patch content type {ctype!r} is not supported; use one of "
                                          + ", ".join(sorted(_PATCH_TYPES)))
        if ctype == "application/strategic-merge-patch+json" and t.resource.custom is not None:
            # Upstream: custom resources have no Go struct to carry patch strategies.
            raise errors.UnsupportedMedia(
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")
        force = _patch_options(request, ctype)
        if ctype == APPLY_PATCH:
            return await self.apply(request, t, subresource=subresource, force=force)
        body = await read_body(request)
        name = t.name or ""
        existing = await self.storage.get(t.resource, t.namespace, name)
        self.authorize(request, "patch", t, existing=existing)
        res = t.resource
        rv = body.get("metadata", {}).get("resourceVersion") if isinstance(body, dict) and isinstance(body.get("metadata"), dict) else None
        warnings: list[str] = []

        def mutate(old: dict[str, Any]) -> dict[str, Any]:
            new = _apply_patch(ctype, old, body, res)
            warnings[:] = self._field_validation(request, t, new, patched=True)
            return self._admitted(request, "patch", t, old, new)

        updated = await self.storage.update(res, t.namespace, name, mutate, precondition_rv=rv,
                                            subresource=subresource, dry_run=is_dry_run(request),
                                            managed=self._managed_fields(request, t, "PatchOptions", subresource))
        return self._respond(request, t, updated, 200, warnings)

    def _managed_fields(self, request: web.Request, t: Target, options: str,
                        subresource: str | None = None) -> storage_mod.ManagedFields:
        """Records the request's manager (``fieldManager``, else its User-Agent's
        product) as an Update in a write's managedFields."""
        param = request.query.get("fieldManager")
        causes = fieldmanager.validate_manager(param or "")
        if causes:
            raise errors.Invalid(options, "", causes, group="meta.k8s.io")
        manager = fieldmanager.manager_name(param, request.headers.get("User-Agent", ""))
        fm = fieldmanager.FieldManager(t.resource, subresource or "")
        return lambda old, new: fm.update(old, new, manager)

    async def apply(self, request: web.Request, t: Target, *, subresource: str | None,
                    force: bool) -> web.Response:
        """Server-side apply (kubepy.api.fieldmanager): merges the applied
        configuration, creating the object if it does not exist."""
        res, name = t.resource, t.name or ""
        body = await read_body(request)
        if not isinstance(body, dict):
            raise errors.BadRequest("the apply patch must be a YAML or JSON object")
        meta = body.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise errors.BadRequest("metadata must be an object")
        meta = meta or {}
        if meta.get("name") not in (None, "", name):
            raise errors.BadRequest(f"the name of the object ({meta.get('name')}) does not match the name on "
                                    f"the URL ({name})")
        if res.namespaced and meta.get("namespace") not in (None, "", t.namespace):
            raise errors.BadRequest("the namespace of the provided object does not match the namespace sent "
                                    "on the request")
        manager = request.query.get("fieldManager", "")
        fm = fieldmanager.FieldManager(res, subresource or "")
        warnings: list[str] = []
        self._apply_validation(request, t, body)
        dry_run = is_dry_run(request)
        try:
            existing = await self.storage.get(res, t.namespace, name)
        except errors.NotFound:
            if subresource:
                raise
            existing = None
        if existing is None:
            self.authorize(request, "patch", t, new=body)
            obj = fm.apply({}, body, manager, force=force)
            obj.setdefault("metadata", {})["name"] = name
            entries = obj["metadata"].get("managedFields")
            created = await self.storage.create(res, t.namespace, obj, dry_run=dry_run,
                                                managed=lambda old, new: _set_managed(new, entries))
            log.info("applied resource=%s namespace=%s name=%s manager=%s created=true dryRun=%s", res.plural,
                     t.namespace or "", name, manager, dry_run)
            return self._respond(request, t, created, 201, warnings)
        self.authorize(request, "patch", t, existing=existing)
        applied: list[Any] = [None]

        def mutate(old: dict[str, Any]) -> dict[str, Any]:
            new = fm.apply(old, body, manager, force=force)
            applied[0] = new["metadata"].get("managedFields")
            return self._admitted(request, "patch", t, old, new)

        # A resourceVersion in the configuration is a precondition, as for any write.
        rv = meta.get("resourceVersion") or None
        updated = await self.storage.update(res, t.namespace, name, mutate, subresource=subresource,
                                            precondition_rv=rv, dry_run=dry_run,
                                            managed=lambda old, new: _set_managed(new, applied[0]))
        log.info("applied resource=%s namespace=%s name=%s manager=%s force=%s dryRun=%s", res.plural,
                 t.namespace or "", name, manager, force, dry_run)
        return self._respond(request, t, updated, 200, warnings)

    def _apply_validation(self, request: web.Request, t: Target, body: dict[str, Any]) -> None:
        """An applied configuration must fit the kind's schema whatever fieldValidation
        says: Kubernetes answers an unknown field with the error of its typed
        conversion ("field not declared in schema"), never drops it. Upstream sends
        that as a 500 (kubernetes#139253, fix pending as a 400); bad input is a 400 here."""
        mode = request.query.get("fieldValidation", "Warn")
        if mode not in ("Strict", "Warn", "Ignore"):
            raise errors.BadRequest(f"fieldValidation must be one of Strict, Warn, Ignore (got {mode!r})")
        res = t.resource
        bad_types = openapi.type_errors(res.api_version, res.kind, body)
        if bad_types:
            raise errors.BadRequest(f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                                    + "; ".join(bad_types))
        unknown = openapi.unknown_fields(res.api_version, res.kind, copy.deepcopy(body))
        if unknown:
            meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
            problems = [f"{p}: field not declared in schema" for p in unknown]
            text = problems[0] if len(problems) == 1 else "errors:\n  " + "\n  ".join(problems)
            log.info("apply refused resource=%s name=%s reason=UnknownFields fields=%s", res.plural,
                     meta.get("name", ""), json.dumps(unknown[:5]))
            raise errors.BadRequest(
                f"failed to create typed patch object ({meta.get('namespace') or ''}/{meta.get('name') or ''}; "
                f"{res.group}/{res.version}, Kind={res.kind}): {text}")

    async def delete(self, request: web.Request, t: Target) -> web.Response:
        name = t.name or ""
        existing = await self.storage.get(t.resource, t.namespace, name)
        self.authorize(request, "delete", t, existing=existing)
        opts = await self._delete_options(request)
        obj = await self.storage.delete(t.resource, t.namespace, name, opts)
        return json_response(_as_version(t.resource, obj), 200)

    async def _delete_options(self, request: web.Request) -> DeleteOptions:
        body: dict[str, Any] = {}
        if request.can_read_body and request.content_length != 0:
            parsed = await read_body(request) if await _has_body(request) else {}
            if not isinstance(parsed, dict):
                raise errors.BadRequest("DeleteOptions must be an object")
            body = parsed
        grace = body.get("gracePeriodSeconds")
        if grace is None:
            grace = _int_param(request, "gracePeriodSeconds")
        policy = body.get("propagationPolicy") or request.query.get("propagationPolicy")
        if body.get("orphanDependents") is True or request.query.get("orphanDependents") == "true":
            policy = policy or "Orphan"
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise errors.BadRequest(f"propagationPolicy must be Background, Foreground or Orphan (got {policy!r})")
        pre = body.get("preconditions") or {}
        dry = body.get("dryRun") or request.query.getall("dryRun", [])
        if dry and dry != ["All"]:
            raise errors.BadRequest("unsupported dryRun value: only All is supported")
        try:
            grace = int(grace) if grace is not None else None
        except (TypeError, ValueError):
            raise errors.BadRequest("gracePeriodSeconds must be an integer") from None
        return DeleteOptions(grace_period=grace, propagation=policy, precondition_uid=pre.get("uid"),
                             precondition_rv=pre.get("resourceVersion"), dry_run=bool(dry))

    async def delete_collection(self, request: web.Request, t: Target) -> web.Response:
        self.authorize(request, "deletecollection", t)
        opts = await self._delete_options(request)
        items, _, _ = await self.storage.list(t.resource, t.namespace, matches=self._matcher(request, t))
        deleted = []
        for obj in items:
            m = obj["metadata"]
            try:
                deleted.append(await self.storage.delete(t.resource, m.get("namespace"), m["name"], opts))
            except errors.NotFound:
                pass
        cur = await self.store.current_revision()
        return json_response({"kind": t.resource.list_kind, "apiVersion": t.resource.api_version,
                              "metadata": {"resourceVersion": str(cur)}, "items": deleted})

    # -- subresources -----------------------------------------------------
    async def subresource(self, request: web.Request, t: Target) -> web.StreamResponse:
        sub, res, m = t.subresource, t.resource, request.method
        if sub not in res.subresources:
            raise errors.NotFound(f"the server could not find the requested resource ({res.plural}/{sub})")
        name = t.name or ""
        if sub in ("status", "ephemeralcontainers"):
            # Both answer with the whole object; a write through one changes only its part of it
            # (Storage._merge_update), pods/ephemeralcontainers only spec.ephemeralContainers.
            if m == "GET":
                self.authorize(request, "get", t)
                return self._respond(request, t, await self.storage.get(res, t.namespace, name))
            if m == "PUT":
                body = self._check_body(t, await read_body(request))
                existing = await self.storage.get(res, t.namespace, name)
                self.authorize(request, "update", t, existing=existing)
                self._field_validation(request, t, body)
                rv = (body.get("metadata") or {}).get("resourceVersion") or None
                updated = await self.storage.update(res, t.namespace, name,
                                                    lambda old: self._admitted(request, "update", t, old,
                                                                               copy.deepcopy(body)),
                                                    precondition_rv=rv, subresource=sub,
                                                    dry_run=is_dry_run(request),
                                                    managed=self._managed_fields(request, t, "UpdateOptions", sub))
                return json_response(_as_version(res, updated))
            if m == "PATCH":
                return await self.patch(request, t, subresource=sub)
        elif sub == "binding" and m == "POST":
            return await self.bind(request, t)
        elif sub == "token" and m == "POST":
            body = await read_body(request)
            self.authorize(request, "create", t, new=body if isinstance(body, dict) else None)
            out, warnings = await self.sa_tokens.token_request(t.namespace or "", name, body)
            headers = multidict.CIMultiDict(("Warning", h) for h in _fitting_warnings(warnings)) if warnings else None
            return json_response(out, 201, headers)
        elif sub == "scale":
            return await self.scale(request, t)
        elif sub == "eviction" and m == "POST":
            self.authorize(request, "create", t, existing=await self.storage.get(res, t.namespace, name))
            code, status = await eviction.evict(self.storage, t.namespace or "", t.name or "",
                                                await read_body(request), dry_run_query=is_dry_run(request))
            return json_response(status, code)
        elif sub == "finalize" and m == "PUT":
            return await self.finalize_namespace(request, t)
        elif sub == "proxy":
            verb = {"GET": "get", "HEAD": "get", "OPTIONS": "get", "POST": "create", "PUT": "update",
                    "PATCH": "patch", "DELETE": "delete"}.get(m, "get")
            self.authorize(request, verb, t)
            return await self._proxy_http(request, t)
        elif sub in ("log", "exec", "attach", "portforward"):
            # Kubernetes checks "create" on pods/exec, pods/attach and pods/portforward even for the
            # WebSocket GET.
            self.authorize(request, "get" if sub == "log" else "create", t)
            return await self._proxy_to_kubelet(request, t, sub)
        raise errors.MethodNotAllowed(f"{m} is not supported on {res.plural}/{sub}")

    async def _proxy_to_kubelet(self, request: web.Request, t: Target, sub: str) -> web.StreamResponse:
        """pods/log, pods/exec and pods/attach are served by the pod's kubelet; we relay them,
        authenticating to the kubelet with the API server's own client certificate."""
        pod = await self.storage.get(t.resource, t.namespace, t.name or "")
        node_name = (pod.get("spec") or {}).get("nodeName")
        node = None
        if node_name:
            try:
                node = await self.storage.get(by_plural("nodes"), None, node_name)
            except errors.NotFound:
                pass
        return await proxy.proxy_pod_subresource(request, sub=sub, pod=pod, node=node, kubelet=self.kubelet_tls())

    def kubelet_tls(self) -> proxy.KubeletTLS:
        """The API server's side of kubelet connections (upstream's --kubelet-client-certificate
        and --kubelet-certificate-authority), made on first use."""
        if self._kubelet_tls is None:
            cert = certs.ensure_client_cert(self.config.data_dir, "apiserver-kubelet-client",
                                            user=certs.KUBELET_CLIENT_USER, groups=())
            self._kubelet_tls = proxy.kubelet_tls(ca_pem=(self.config.data_dir / "ca.crt").read_bytes(),
                                                  client_cert=cert)
        return self._kubelet_tls

    async def _node(self, node_name: str) -> dict[str, Any]:
        try:
            return await self.storage.get(by_plural("nodes"), None, node_name)
        except errors.NotFound:
            raise errors.ServiceUnavailable(f'node "{node_name}" not found') from None

    async def _proxy_http(self, request: web.Request, t: Target) -> web.StreamResponse:
        """pods/proxy, services/proxy, nodes/proxy (kubepy.api.httpproxy)."""
        scheme, name, port = httpproxy.parse_proxy_name(t.name or "")
        plural = t.resource.plural
        ns_part = f"/namespaces/{t.namespace}" if t.namespace else ""
        prefix = f"/api/v1{ns_part}/{plural}/{t.name}/proxy"
        # From the raw path: it keeps a trailing slash and the client's own escaping.
        raw = request.raw_path.split("?", 1)[0]
        marker = f"/{urllib.parse.quote(t.name or '', safe=':')}/proxy"
        at = raw.find(marker)
        tail = raw[at + len(marker):].lstrip("/") if at >= 0 else t.proxy_path
        if plural == "nodes":
            node = await self._node(name)
            if port and port != str(httpproxy.kubelet_port(node)):
                raise errors.BadRequest(f"nodes/proxy reaches the kubelet only (port {httpproxy.kubelet_port(node)})")
            return await httpproxy.proxy_to_kubelet(request, node=node, kubelet=self.kubelet_tls(),
                                                    kubelet_path="/" + tail,
                                                    prefix=prefix, backend_host="")
        if plural == "pods":
            pod = await self.storage.get(t.resource, t.namespace, name)
            pod_ns, pod_name, target_port = t.namespace or "", name, httpproxy.pod_port(pod, port)
        else:
            svc = await self.storage.get(t.resource, t.namespace, name)
            try:
                eps = await self.storage.get(by_plural("endpoints"), t.namespace, name)
            except errors.NotFound:
                eps = None
            pod_ns, pod_name, target_port = httpproxy.service_backend(svc, eps, port)
            pod = await self.storage.get(by_plural("pods"), pod_ns, pod_name)
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            raise errors.ServiceUnavailable(f'pod "{pod_name}" is not running on a node')
        node = await self._node(node_name)
        backend = f"{(pod.get('status') or {}).get('podIP', '')}:{target_port}"
        path = f"/proxy/{scheme}/{pod_ns}/{pod_name}/{target_port}/{tail}"
        return await httpproxy.proxy_to_kubelet(request, node=node, kubelet=self.kubelet_tls(), kubelet_path=path,
                                                prefix=prefix, backend_host=backend)

    async def bind(self, request: web.Request, t: Target) -> web.Response:
        body = await read_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("target"), dict) or not body["target"].get("name"):
            raise errors.Invalid("Binding", t.name or "", [
                {"reason": "FieldValueRequired", "message": "Required value", "field": "target.name"}])
        self.authorize(request, "create", t)
        node = body["target"]["name"]
        name = t.name or ""

        def assign(pod: dict[str, Any]) -> dict[str, Any]:
            spec = pod.setdefault("spec", {})
            if pod["metadata"].get("deletionTimestamp"):
                raise errors.Conflict(f"pod {name} is being deleted, cannot be assigned to a host")
            if spec.get("nodeName"):
                raise errors.Conflict(f"pod {name} is already assigned to node \"{spec['nodeName']}\"")
            spec["nodeName"] = node
            conds = [c for c in (pod.get("status") or {}).get("conditions", []) if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": objects.rfc3339(objects.now())})
            pod.setdefault("status", {})["conditions"] = conds
            return pod

        # Binding writes spec and status together, which no other path may do.
        await self.storage.update(t.resource, t.namespace, name, assign, subresource="binding",
                                  dry_run=is_dry_run(request))
        log.info("bound pod=%s/%s node=%s", t.namespace, name, node)
        return json_response(success_status(), 201)

    async def scale(self, request: web.Request, t: Target) -> web.Response:
        res, name, m = t.resource, t.name or "", request.method
        obj = await self.storage.get(res, t.namespace, name)
        scale_of = res.custom.scale_of if res.custom is not None else _scale_of
        if m == "GET":
            self.authorize(request, "get", t)
            return json_response(scale_of(obj))
        if m not in ("PUT", "PATCH"):
            raise errors.MethodNotAllowed(f"{m} is not supported on {res.plural}/scale")
        self.authorize(request, "update" if m == "PUT" else "patch", t, existing=obj)
        ctype = request.content_type
        body = await read_body(request)
        if m == "PATCH" and (ctype not in _PATCH_TYPES or ctype == APPLY_PATCH):
            raise errors.UnsupportedMedia(f"the patch content type {ctype!r} is not supported on {res.plural}/scale")
        rv = body.get("metadata", {}).get("resourceVersion") if isinstance(body, dict) and isinstance(body.get("metadata"), dict) else None

        def set_replicas(cur: dict[str, Any]) -> dict[str, Any]:
            scale = scale_of(cur)
            new_scale = body if m == "PUT" else _apply_patch(ctype, scale, body, None)
            bad_types = openapi.type_errors("autoscaling/v1", "Scale", new_scale) if isinstance(new_scale, dict) else []
            if bad_types:
                raise errors.BadRequest('Scale in version "v1" cannot be handled as a Scale: ' + "; ".join(bad_types))
            replicas = (new_scale.get("spec") or {}).get("replicas", 0) if isinstance(new_scale, dict) else None
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise errors.Invalid("Scale", name, [{"reason": "FieldValueInvalid", "field": "spec.replicas",
                                                      "message": f"Invalid value: {replicas!r}: must be greater than or equal to 0"}])
            if res.custom is not None:
                res.custom.set_replicas(cur, replicas)
            else:
                cur.setdefault("spec", {})["replicas"] = replicas
            return cur

        # The parent records the writer as an Update of its subresource "scale" (owning
        # .spec.replicas), as Kubernetes' scale handler maps the Scale's fields back.
        updated = await self.storage.update(res, t.namespace, name, set_replicas, precondition_rv=rv,
                                            dry_run=is_dry_run(request),
                                            managed=self._managed_fields(
                                                request, t, "UpdateOptions" if m == "PUT" else "PatchOptions",
                                                "scale"))
        return json_response(scale_of(updated))

    async def finalize_namespace(self, request: web.Request, t: Target) -> web.Response:
        body = self._check_body(t, await read_body(request))
        self.authorize(request, "update", t)
        finalizers = (body.get("spec") or {}).get("finalizers") or []
        name = t.name or ""

        def set_finalizers(cur: dict[str, Any]) -> dict[str, Any]:
            cur.setdefault("spec", {})["finalizers"] = finalizers
            return cur

        ns = await self.storage.update(t.resource, None, name, set_finalizers)
        if not finalizers and ns["metadata"].get("deletionTimestamp") and not ns["metadata"].get("finalizers"):
            # The last spec finalizer of a terminating namespace is gone: so is the namespace.
            await self.storage.delete(t.resource, None, name, DeleteOptions())
            log.info("deleted namespace=%s reason=finalized", name)
        return json_response(ns)

    # -- watch ------------------------------------------------------------
    async def watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        self.authorize(request, "watch", t)
        matches = self._matcher(request, t, check_namespace=True) or (lambda o: True)
        rv = request.query.get("resourceVersion", "")
        send_initial = request.query.get("sendInitialEvents") == "true"
        bookmarks = request.query.get("allowWatchBookmarks") == "true"
        timeout = _int_param(request, "timeoutSeconds")
        tv = wants_table(request)
        cache = await self._cache(t.resource)

        initial: list[dict[str, Any]] = []
        if rv in ("", "0") or send_initial:
            # Kubernetes: no RV (or 0) means "the current state, then changes".
            initial, after, _ = await self.storage.list(t.resource, t.namespace, matches=matches,
                                                        revision=0 if rv in ("", "0") else _parse_rv(rv))
        else:
            after = _parse_rv(rv)
        sub: Subscription | None = cache.subscribe(after=after, matches=matches)
        if sub is None:
            sub = StoreSubscription(self.store, t.resource.list_prefix(t.namespace), after=after, matches=matches)
            self._store_subs.add(sub)

        resp = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-cache"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        deadline = time.monotonic() + timeout if timeout else None
        first_table = True

        def frame(kind: str, obj: dict[str, Any]) -> bytes:
            nonlocal first_table
            if tv and kind != "ERROR" and kind != "BOOKMARK":
                table = self._table(t.resource, [obj], tv, request, {"resourceVersion": obj["metadata"].get("resourceVersion", "")})
                if not first_table:
                    table["columnDefinitions"] = []
                first_table = False
                obj = table
            return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"

        def bookmark(rev: int, extra: dict[str, str] | None = None) -> bytes:
            meta: dict[str, Any] = {"resourceVersion": str(rev)}
            if extra:
                meta["annotations"] = extra
            return frame("BOOKMARK", {"kind": t.resource.kind, "apiVersion": t.resource.api_version, "metadata": meta})

        try:
            for obj in initial:
                await resp.write(frame("ADDED", _as_version(t.resource, obj)))
            if send_initial and bookmarks:
                await resp.write(bookmark(after, {"k8s.io/initial-events-end": "true"}))
            last_sent = after
            while True:
                wait = BOOKMARK_INTERVAL if bookmarks else None
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    wait = min(wait, left) if wait else left
                try:
                    ev = await asyncio.wait_for(sub.queue.get(), wait) if wait else await sub.queue.get()
                except asyncio.TimeoutError:
                    if bookmarks and sub.queue.empty() and isinstance(sub, Subscription) and not isinstance(sub, StoreSubscription):
                        rev = max(cache.last_revision, last_sent)
                        await resp.write(bookmark(rev))
                    continue
                if ev is None:
                    gone = errors.Gone(f"too old resource version: {after} ({cache.complete_from - 1})"
                                       if getattr(sub, "compacted", True) else "the watch was ended; re-list")
                    await resp.write(json.dumps({"type": "ERROR", "object": gone.status()}).encode() + b"\n")
                    break
                last_sent = ev.revision
                if tv or (_converts(t.resource) and ev.obj.get("apiVersion") != t.resource.api_version):
                    await resp.write(frame(ev.type, _as_version(t.resource, ev.obj)))
                else:
                    await resp.write(ev.json_line())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            sub.close()
            self._store_subs.discard(sub)  # type: ignore[arg-type]
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return resp


# -- helpers ---------------------------------------------------------------
async def _has_body(request: web.Request) -> bool:
    """True unless the body is empty (DELETE often carries none)."""
    if request.content_length is not None:
        return request.content_length > 0
    chunk = await request.content.read(1)
    if not chunk:
        return False
    request.content.unread_data(chunk)
    return True


def lookup_served(group: str, version: str) -> bool:
    return any(k.group == group and k.version == version for k in all_kinds())


def _node_user(name: str) -> auth.User:
    return auth.User(auth.NODE_PREFIX + name, (auth.NODES,))


async def _json_async(body: Any) -> web.Response:
    return json_response(body)


MAX_WARNING_BYTES = 4096  # Kubernetes' budget for a response's Warning headers
MAX_WARNINGS = 50  # Python's http.client refuses a response with over 100 headers


def _fitting_warnings(warnings: list[str]) -> list[str]:
    """Warning header values, as many as fit in MAX_WARNING_BYTES and
    MAX_WARNINGS (10,000 unknown fields must not make 10,000 headers), the
    last one saying how many were left out."""
    out: list[str] = []
    size = 0
    for i, w in enumerate(warnings):
        header = openapi.warning_header(w)
        if size + len(header) > MAX_WARNING_BYTES or i == MAX_WARNINGS:
            out.append(openapi.warning_header(f"{len(warnings) - i} more warnings were dropped"))
            break
        out.append(header)
        size += len(header)
    return out


def _converts(res: Kind) -> bool:
    """Whether stored objects of ``res`` may be in another version than the one it serves."""
    return res.custom is not None or res.conversion is not None


def _as_version(res: Kind, obj: dict[str, Any]) -> dict[str, Any]:
    """A stored object as the version asked for: a built-in kind served by conversion
    (``Kind.conversion``) converts; every version of a CRD shares its objects and
    conversion "None" changes only apiVersion (upstream's nopConverter)."""
    if not _converts(res) or obj.get("apiVersion") == res.api_version:
        return obj
    if res.conversion is not None:
        return res.conversion.from_storage(obj)
    return {**obj, "apiVersion": res.api_version}


def _raw_as_version(res: Kind, items: list[Any]) -> list[Any]:
    if not _converts(res):
        return items
    # Stored objects lead with their apiVersion (kubepy.api.objects); "in" would also match a
    # managedFields entry written through the other version.
    marker = f'{{"apiVersion":"{res.api_version}"'.encode()
    return [b if b.startswith(marker) else json.dumps(_as_version(res, json.loads(b)), separators=(",", ":")).encode()
            for b in items]


def _parse_rv(rv: str) -> int:
    try:
        value = int(rv)
    except ValueError:
        raise errors.BadRequest(f"invalid resource version {rv!r}") from None
    if value < 0:
        raise errors.BadRequest(f"invalid resource version {rv!r}")
    return value


def _patch_options(request: web.Request, ctype: str) -> bool:
    """``force`` of a PATCH, checked as upstream's ValidatePatchOptions (422 PatchOptions)."""
    raw = request.query.get("force")
    causes = []
    if ctype != APPLY_PATCH:
        if raw is not None:
            causes.append({"reason": "FieldValueForbidden", "field": "force",
                           "message": "Forbidden: may not be specified for non-apply patch"})
    elif not request.query.get("fieldManager"):
        causes.append({"reason": "FieldValueRequired", "field": "fieldManager",
                       "message": "Required value: is required for apply patch"})
    causes += fieldmanager.validate_manager(request.query.get("fieldManager", ""))
    if causes:
        raise errors.Invalid("PatchOptions", "", causes, group="meta.k8s.io")
    if raw is None or raw == "":
        return False
    if raw not in _BOOLS:
        raise errors.BadRequest(f"force must be true or false, got {raw!r}")
    return _BOOLS[raw]


def _set_managed(obj: dict[str, Any], entries: Any) -> None:
    if entries:
        obj["metadata"]["managedFields"] = entries
    else:
        obj["metadata"].pop("managedFields", None)


def _apply_patch(ctype: str, obj: dict[str, Any], body: Any, res: Kind | None) -> dict[str, Any]:
    try:
        if ctype == "application/json-patch+json":
            out = patch.apply_json_patch(obj, body)
        elif ctype == "application/merge-patch+json":
            out = patch.apply_merge_patch(obj, body)
        else:
            if not isinstance(body, dict):
                raise errors.BadRequest("a strategic merge patch must be a JSON object")
            api_version = res.api_version if res else "autoscaling/v1"
            kind = res.kind if res else "Scale"
            out = patch.apply_strategic_merge_patch(obj, body, api_version=api_version, kind=kind)
    except patch.PatchError as e:
        if e.code == 400:
            raise errors.BadRequest(f"the patch is malformed: {e.message}") from e
        raise errors.Invalid(res.kind if res else "Scale", obj.get("metadata", {}).get("name", ""), [
            {"reason": "FieldValueInvalid", "message": e.message, "field": "patch"}]) from e
    if not isinstance(out, dict):
        raise errors.BadRequest("the patch did not produce an object")
    # Each input is within the limits, but a JSON patch can nest one deep value
    # inside another: the result must be within them too before it is stored.
    bodies.check_value(out, "the patched object")
    return out


def _scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    m = obj["metadata"]
    selector = (obj.get("spec") or {}).get("selector")
    if selector and all(isinstance(v, str) for v in selector.values()):
        selector = {"matchLabels": selector}  # a ReplicationController's plain label map
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: m[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in m},
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                   "selector": objects.label_selector_string(selector)},
    }
