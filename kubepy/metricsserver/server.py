"""``kubepy metrics-server``: scrape every kubelet, serve ``metrics.k8s.io/v1beta1``.

Talks to: the API server (its own identity, ``system:metrics-server``: nodes and pods
list/watch, ``nodes/metrics`` on the kubelets, TokenReviews and SubjectAccessReviews for
the requests it serves, and the ``kube-system/extension-apiserver-authentication``
ConfigMap), every node's kubelet (``GET https://<InternalIP>:<kubelet port>/metrics/resource``,
the kubelet's serving certificate verified against the cluster CA for the node's name,
our client certificate presented), and the API server's aggregation layer, which proxies
``/apis/metrics.k8s.io/...`` here.

Every ``--metric-resolution`` (15 s, as upstream) all nodes are scraped at once (each
within ``--kubelet-request-timeout``); ``kubepy.metricsserver.samples`` keeps the last two
samples of each node and container and computes CPU rates. Served:

    GET /apis, /apis/metrics.k8s.io, /apis/metrics.k8s.io/v1beta1        discovery
    GET /apis/metrics.k8s.io/v1beta1/nodes[/NAME]                        NodeMetrics(List)
    GET /apis/metrics.k8s.io/v1beta1[/namespaces/NS]/pods[/NAME]         PodMetrics(List)
        ?labelSelector=…  ?fieldSelector=metadata.name=…,metadata.namespace=…
    GET /healthz /livez /readyz                                          no authentication

Who asks (upstream's delegated authentication): a client certificate signed by the
request-header CA whose CN is an allowed name makes ``X-Remote-User``/``X-Remote-Group``
the caller (the API server's front proxy); else a certificate by the cluster CA (CN, O),
else a bearer token (TokenReview); nobody is 401. What they may (delegated
authorization): a SubjectAccessReview per request (cached 10 s), 403 with upstream's
message when refused. Watch is refused (405), as upstream serves no watch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509

from kubepy import tlsclientauth
from kubepy.client import Client, ClientConfig
from kubepy.client.informer import Informer
from kubepy.meta.selectors import parse_label_selector
from kubepy.meta.userextra import unescape_extra_key
from kubepy.metricsserver.samples import (
    Storage,
    format_cpu,
    format_memory,
    format_window,
    parse_scrape,
    pod_summary,
)

log = logging.getLogger(__name__)

__all__ = ["MetricsServer", "MetricsServerConfig", "run_metrics_server"]

GROUP, VERSION = "metrics.k8s.io", "v1beta1"
GV = f"{GROUP}/{VERSION}"
AUTH_CONFIGMAP = ("kube-system", "extension-apiserver-authentication")
DECISION_TTL = 10.0
_PUBLIC = {"/healthz", "/livez", "/readyz"}


@dataclass
class MetricsServerConfig:
    kubeconfig: str
    bind_address: str = "0.0.0.0"
    secure_port: int = 4443
    tls_cert_file: Path | None = None
    tls_private_key_file: Path | None = None
    metric_resolution: float = 15.0
    kubelet_request_timeout: float = 10.0
    kubelet_insecure_tls: bool = False


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return web.json_response(body, status=code)


def _rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Caller:
    name: str
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


class RequestHeaderAuth:
    """Delegated authentication settings, from the API server's ConfigMap."""

    def __init__(self, data: dict[str, str]) -> None:
        def certs(pem: str) -> list[x509.Certificate]:
            return x509.load_pem_x509_certificates(pem.encode()) if pem.strip() else []

        def names(key: str) -> list[str]:
            raw = data.get(key) or "[]"
            value = json.loads(raw)
            return [str(v) for v in value] if isinstance(value, list) else []

        self.client_cas = certs(data.get("client-ca-file") or "")
        self.proxy_cas = certs(data.get("requestheader-client-ca-file") or "")
        self.allowed_names = names("requestheader-allowed-names")
        self.username_headers = names("requestheader-username-headers")
        self.group_headers = names("requestheader-group-headers")
        self.extra_prefixes = names("requestheader-extra-headers-prefix")

    def pem(self) -> str:
        from cryptography.hazmat.primitives import serialization

        return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in self.proxy_cas + self.client_cas)

    @staticmethod
    def _verify(der: bytes, cas: list[x509.Certificate]) -> tuple[str, tuple[str, ...]] | None:
        for ca in cas:
            try:
                return tlsclientauth.verify_client_certificate(der, ca)
            except tlsclientauth.CertificateRefused:
                continue
        return None

    def from_proxy(self, der: bytes, headers: Any) -> Caller | None:
        """The caller the front proxy names, if ``der`` is the front proxy's certificate."""
        verified = self._verify(der, self.proxy_cas)
        if verified is None or (self.allowed_names and verified[0] not in self.allowed_names):
            return None
        user = next((headers.get(h) for h in self.username_headers if headers.get(h)), None)
        if not user:
            return None
        groups = tuple(g for h in self.group_headers for g in headers.getall(h, []))
        extra: dict[str, list[str]] = {}
        for k, v in headers.items():
            for prefix in self.extra_prefixes:
                if k.lower().startswith(prefix.lower()):
                    extra.setdefault(unescape_extra_key(k[len(prefix):]), []).append(v)
        return Caller(user, groups, tuple(sorted((k, tuple(v)) for k, v in extra.items())))

    def from_client_cert(self, der: bytes) -> Caller | None:
        verified = self._verify(der, self.client_cas)
        return Caller(verified[0], verified[1]) if verified else None


def request_attributes(method: str, path: str, query: Any) -> dict[str, Any]:
    """The SubjectAccessReview attributes of a request here (resource or non-resource)."""
    verb = "get" if method in ("GET", "HEAD") else method.lower()
    parts = [p for p in path.split("/") if p]
    if len(parts) < 4 or parts[:3] != ["apis", GROUP, VERSION]:
        return {"nonResourceAttributes": {"path": path, "verb": verb}}
    rest, namespace = parts[3:], ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource, name = rest[0], rest[1] if len(rest) > 1 else ""
    if not name and verb == "get":
        verb = "watch" if query.get("watch") in ("1", "true") else "list"
    attrs = {"verb": verb, "group": GROUP, "version": VERSION, "resource": resource, "namespace": namespace}
    if name:
        attrs["name"] = name
    return {"resourceAttributes": attrs}


def forbidden_message(caller: Caller, attrs: dict[str, Any]) -> str:
    """Upstream's wording of a 403."""
    if "nonResourceAttributes" in attrs:
        n = attrs["nonResourceAttributes"]
        return f'forbidden: User "{caller.name}" cannot {n["verb"]} path "{n["path"]}"'
    r = attrs["resourceAttributes"]
    what = f'{r["resource"]}.{GROUP}'
    name = f' "{r["name"]}"' if r.get("name") else ""
    scope = f' in the namespace "{r["namespace"]}"' if r.get("namespace") else " at the cluster scope"
    return (f'{what}{name} is forbidden: User "{caller.name}" cannot {r["verb"]} resource "{r["resource"]}" '
            f'in API group "{GROUP}"{scope}')


def _field_selector(text: str) -> dict[str, str]:
    """Only metadata.name and metadata.namespace equality, as upstream's metrics API supports."""
    out: dict[str, str] = {}
    for part in [p for p in text.split(",") if p]:
        key, op, value = part.partition("==") if "==" in part else part.partition("=")
        if not op or key.strip() not in ("metadata.name", "metadata.namespace") or value.startswith("="):
            raise ValueError(f'field label not supported: {key.strip() or part}')
        out[key.strip()] = value.strip()
    return out


class MetricsServer:
    def __init__(self, client: Client, config: MetricsServerConfig, *, ca_pem: bytes | None,
                 client_cert: tuple[bytes, bytes] | None) -> None:
        self.client = client
        self.config = config
        self.store = Storage()
        self.nodes = Informer(client, "nodes")
        self.pods = Informer(client, "pods")
        self.auth: RequestHeaderAuth | None = None
        self._decisions: dict[Any, tuple[float, bool]] = {}
        self._tokens: dict[str, tuple[float, Caller | None]] = {}
        self._runner: web.AppRunner | None = None
        self.port = config.secure_port
        self.scraped_once = asyncio.Event()
        ctx = ssl.create_default_context(cadata=ca_pem.decode()) if ca_pem else ssl.create_default_context()
        if config.kubelet_insecure_tls:
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        if client_cert:
            from kubepy.client.api import load_client_cert

            load_client_cert(ctx, *client_cert)
        self._kubelet_ssl = ctx
        self._session: aiohttp.ClientSession | None = None

    # -- scraping ---------------------------------------------------------------------
    async def scrape_node(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        status = node.get("status") or {}
        address = next((a.get("address") for a in status.get("addresses") or [] if a.get("type") == "InternalIP"),
                       None)
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or 10250
        if not address:
            log.info("scrape skipped node=%s reason=NoInternalIP", name)
            return
        host = f"[{address}]" if ":" in address else address
        url = f"https://{host}:{port}/metrics/resource"
        assert self._session is not None
        kwargs: dict[str, Any] = {"ssl": self._kubelet_ssl}
        if not self.config.kubelet_insecure_tls:
            kwargs["server_hostname"] = name
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.config.kubelet_request_timeout):
                async with self._session.get(url, **kwargs) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        log.warning("scrape failed node=%s url=%s status=%d body=%r", name, url, resp.status,
                                    text[:200])
                        return
            scrape = parse_scrape(text, now=time.time())
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            log.warning("scrape failed node=%s url=%s err=%s", name, url, e or type(e).__name__)
            return
        self.store.store(name, scrape)
        log.debug("scraped node=%s pods=%d ms=%.1f", name, len(scrape.pods), (time.monotonic() - started) * 1000)

    async def scrape_all(self) -> None:
        nodes = self.nodes.cache.list()
        self.store.forget_nodes(n["metadata"]["name"] for n in nodes)
        await asyncio.gather(*(self.scrape_node(n) for n in nodes))
        self.scraped_once.set()

    async def _scrape_loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.scrape_all()
            except Exception:  # one bad round must not stop the next
                log.exception("scrape round crashed")
            await asyncio.sleep(max(0.0, self.config.metric_resolution - (time.monotonic() - started)))

    # -- metrics objects ----------------------------------------------------------------
    def node_metrics(self, node: dict[str, Any]) -> dict[str, Any] | None:
        name = node["metadata"]["name"]
        rate = self.store.node_rate(name)
        if rate is None:
            return None
        return {"kind": "NodeMetrics", "apiVersion": GV,
                "metadata": {"name": name, "creationTimestamp": _rfc3339(time.time()),
                             "labels": (node.get("metadata") or {}).get("labels") or {}},
                "timestamp": _rfc3339(rate.time), "window": format_window(rate.window),
                "usage": {"cpu": format_cpu(rate.nano_cores), "memory": format_memory(rate.memory)}}

    def pod_metrics(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        meta = pod.get("metadata") or {}
        rates = self.store.pod_rates(meta.get("namespace") or "", meta.get("name") or "")
        if not rates:
            return None
        whole = pod_summary(rates)
        return {"kind": "PodMetrics", "apiVersion": GV,
                "metadata": {"name": meta["name"], "namespace": meta.get("namespace"),
                             "creationTimestamp": _rfc3339(time.time()), "labels": meta.get("labels") or {}},
                "timestamp": _rfc3339(whole.time), "window": format_window(whole.window),
                "containers": [{"name": n, "usage": {"cpu": format_cpu(r.nano_cores),
                                                     "memory": format_memory(r.memory)}}
                               for n, r in sorted(rates.items())]}

    # -- HTTP -----------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth_mw])
        r = app.router
        for path in _PUBLIC:
            r.add_get(path, self.health)
        r.add_get("/apis", self.api_groups)
        r.add_get(f"/apis/{GROUP}", self.api_group)
        r.add_get(f"/apis/{GV}", self.api_resources)
        r.add_get(f"/apis/{GV}/nodes", self.list_nodes)
        r.add_get(f"/apis/{GV}/nodes/{{name}}", self.get_node)
        r.add_get(f"/apis/{GV}/pods", self.list_pods)
        r.add_get(f"/apis/{GV}/namespaces/{{namespace}}/pods", self.list_pods)
        r.add_get(f"/apis/{GV}/namespaces/{{namespace}}/pods/{{name}}", self.get_pod)
        return app

    async def health(self, request: web.Request) -> web.Response:
        if request.path == "/readyz" and not self.scraped_once.is_set():
            return web.Response(status=503, text="not ready: no scrape finished yet")
        return web.Response(text="ok")

    @web.middleware
    async def _auth_mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in _PUBLIC:
            return await handler(request)
        try:
            caller = await self.authenticate(request)
        except Exception as e:  # noqa: BLE001 - the API server is unreachable: not the caller's fault
            log.warning("authentication failed path=%s err=%s", request.path, e)
            return _status(503, "ServiceUnavailable", f"cannot authenticate the request: {e}")
        if caller is None:
            return _status(401, "Unauthorized", "Unauthorized")
        attrs = request_attributes(request.method, request.path, request.query)
        try:
            allowed = await self.authorize(caller, attrs)
        except Exception as e:  # noqa: BLE001
            log.warning("authorization failed user=%s path=%s err=%s", caller.name, request.path, e)
            return _status(503, "ServiceUnavailable", f"cannot authorize the request: {e}")
        if not allowed:
            log.info("forbidden user=%s path=%s", caller.name, request.path)
            return _status(403, "Forbidden", forbidden_message(caller, attrs))
        if request.method not in ("GET", "HEAD"):
            return _status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if request.query.get("watch") in ("1", "true"):
            return _status(405, "MethodNotAllowed", "watch is not supported on metrics.k8s.io resources")
        result: web.StreamResponse = await handler(request)
        return result

    async def authenticate(self, request: web.Request) -> Caller | None:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        auth = self.auth
        if der and auth is not None:
            caller = auth.from_proxy(der, request.headers) or auth.from_client_cert(der)
            if caller is not None:
                return caller
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        key = hashlib.sha256(token.strip().encode()).hexdigest()
        hit = self._tokens.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        review = await self.client.create("tokenreviews", {"apiVersion": "authentication.k8s.io/v1",
                                                           "kind": "TokenReview", "spec": {"token": token.strip()}})
        status = review.get("status") or {}
        user = status.get("user") or {}
        caller = Caller(user["username"], tuple(user.get("groups") or ())) \
            if status.get("authenticated") and user.get("username") else None
        if len(self._tokens) > 4096:
            self._tokens.clear()
        self._tokens[key] = (time.monotonic() + DECISION_TTL, caller)
        return caller

    async def authorize(self, caller: Caller, attrs: dict[str, Any]) -> bool:
        if "system:masters" in caller.groups:
            return True  # as upstream's delegating authorizer: always-allow for system:masters
        key = (caller, json.dumps(attrs, sort_keys=True))
        hit = self._decisions.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        spec: dict[str, Any] = {"user": caller.name, "groups": list(caller.groups), **attrs}
        if caller.extra:
            spec["extra"] = {k: list(v) for k, v in caller.extra}
        review = await self.client.create("subjectaccessreviews", {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec})
        allowed = bool((review.get("status") or {}).get("allowed"))
        if len(self._decisions) > 4096:
            self._decisions.clear()
        self._decisions[key] = (time.monotonic() + DECISION_TTL, allowed)
        return allowed

    async def api_groups(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": [self._group()]})

    @staticmethod
    def _group() -> dict[str, Any]:
        gv = {"groupVersion": GV, "version": VERSION}
        return {"name": GROUP, "versions": [gv], "preferredVersion": gv}

    async def api_group(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroup", "apiVersion": "v1", **self._group()})

    async def api_resources(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GV, "resources": [
            {"name": "nodes", "singularName": "", "namespaced": False, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": True, "kind": "PodMetrics", "verbs": ["get", "list"]},
        ]})

    @staticmethod
    def _selectors(request: web.Request) -> tuple[Any, dict[str, str]] | web.Response:
        try:
            labels = parse_label_selector(request.query.get("labelSelector", ""))
            fields = _field_selector(request.query.get("fieldSelector", ""))
        except ValueError as e:
            return _status(400, "BadRequest", str(e))
        return labels, fields

    async def list_nodes(self, request: web.Request) -> web.Response:
        sel = self._selectors(request)
        if isinstance(sel, web.Response):
            return sel
        labels, fields = sel
        items = []
        for node in sorted(self.nodes.cache.list(), key=lambda n: n["metadata"]["name"]):
            meta = node["metadata"]
            if not labels.matches(meta.get("labels") or {}):
                continue
            if "metadata.name" in fields and fields["metadata.name"] != meta["name"]:
                continue
            m = self.node_metrics(node)
            if m is not None:
                items.append(m)
        return web.json_response({"kind": "NodeMetricsList", "apiVersion": GV, "metadata": {}, "items": items})

    async def get_node(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        node = self.nodes.cache.get(name)
        m = self.node_metrics(node) if node is not None else None
        if m is None:
            return _status(404, "NotFound", f'nodemetrics.metrics.k8s.io "{name}" not found',
                           {"name": name, "group": GROUP, "kind": "nodemetrics"})
        return web.json_response(m)

    async def list_pods(self, request: web.Request) -> web.Response:
        sel = self._selectors(request)
        if isinstance(sel, web.Response):
            return sel
        labels, fields = sel
        namespace = request.match_info.get("namespace") or fields.get("metadata.namespace")
        if namespace and fields.get("metadata.namespace", namespace) != namespace:
            return web.json_response({"kind": "PodMetricsList", "apiVersion": GV, "metadata": {}, "items": []})
        items = []
        pods = self.pods.cache.list()
        for pod in sorted(pods, key=lambda p: (p["metadata"].get("namespace") or "", p["metadata"]["name"])):
            meta = pod["metadata"]
            if namespace and meta.get("namespace") != namespace:
                continue
            if "metadata.name" in fields and fields["metadata.name"] != meta["name"]:
                continue
            if not labels.matches(meta.get("labels") or {}):
                continue
            m = self.pod_metrics(pod)
            if m is not None:
                items.append(m)
        return web.json_response({"kind": "PodMetricsList", "apiVersion": GV, "metadata": {}, "items": items})

    async def get_pod(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        pod = self.pods.cache.get(f"{ns}/{name}")
        m = self.pod_metrics(pod) if pod is not None else None
        if m is None:
            return _status(404, "NotFound", f'podmetrics.metrics.k8s.io "{ns}/{name}" not found',
                           {"name": name, "group": GROUP, "kind": "podmetrics"})
        return web.json_response(m)

    # -- lifecycle ----------------------------------------------------------------------
    async def load_authentication(self) -> None:
        ns, name = AUTH_CONFIGMAP
        cm = await self.client.get("configmaps", name, namespace=ns)
        self.auth = RequestHeaderAuth(cm.get("data") or {})
        log.info("authentication loaded configmap=%s/%s allowed_names=%s", ns, name, ",".join(self.auth.allowed_names))

    def tls_context(self) -> ssl.SSLContext:
        if self.config.tls_cert_file is None or self.config.tls_private_key_file is None:
            raise ValueError("--tls-cert-file and --tls-private-key-file are required")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.config.tls_cert_file, self.config.tls_private_key_file)
        assert self.auth is not None
        pem = self.auth.pem()
        if pem:
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.load_verify_locations(cadata=pem)
            tlsclientauth.request_client_certificates(ctx)
        return ctx

    async def start(self) -> None:
        await self.load_authentication()
        ctx = self.tls_context()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._tasks = [asyncio.create_task(self.nodes.run()), asyncio.create_task(self.pods.run())]
        await self.nodes.wait_synced()
        await self.pods.wait_synced()
        self._tasks.append(asyncio.create_task(self._scrape_loop()))
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.bind_address, self.config.secure_port, ssl_context=ctx)
        await site.start()
        server = getattr(site, "_server", None)
        if self.config.secure_port == 0 and server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        log.info("metrics server listening address=%s port=%d resolution=%gs", self.config.bind_address, self.port,
                 self.config.metric_resolution)

    async def stop(self) -> None:
        for t in getattr(self, "_tasks", []):
            t.cancel()
        for t in getattr(self, "_tasks", []):
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None


async def run_metrics_server(config: MetricsServerConfig) -> None:
    cc = ClientConfig.from_kubeconfig(config.kubeconfig)
    client_cert = (cc.client_cert, cc.client_key) if cc.client_cert and cc.client_key else None
    async with Client(cc, user_agent="kubepy-metrics-server") as client:
        server = MetricsServer(client, config, ca_pem=cc.ca_data, client_cert=client_cert)
        await server.start()
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()
