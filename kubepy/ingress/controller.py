"""The ingress controller: Ingresses of our class → this node's nginx, kept in step; status and Events.

``kubepy ingress`` runs one per node, on the node's network (ports 80 and
443 on every address of the node, k3s's way of serving Traefik through
ServiceLB on every node), as its own identity (``kubepy:ingress-controller``;
Secrets are read cluster-wide, as every ingress controller must).  Five
informers (Ingresses, IngressClasses, Services, EndpointSlices, TLS Secrets)
feed caches; their handlers only set a dirty flag.  One runner owns every
sync: it waits for the flag (or ``sync_period``), never starts two syncs
closer than ``min_sync_period`` (a burst of changes becomes one reload),
decides the whole configuration (``model.build``), renders it
(``nginx.render``) and, if the text changed, has nginx check and load it
(``Nginx.apply``).  Then it writes ``status.loadBalancer.ingress``: the
address of the ``--publish-service`` LoadBalancer in front of every node's
nginx (the lab's kube-system/kubepy-ingress), else the
``--publish-status-address`` list; the same on every node, so controllers
never fight over it and records Events: Warning for a reference that cannot
be served (once per problem while it lasts), Normal ``Sync`` when an
Ingress generation is first loaded, Warning ``RELOAD`` when nginx refused a
configuration (the last good one keeps serving; retried on the next change
or resync).  nginx is restarted if it died.

Gateway API (``gateway``): GatewayClasses, Gateways, HTTPRoutes, ReferenceGrants (custom resources, informers that wait
for their CRDs without holding up the Ingresses) and Namespaces feed the same decision; after a sync
the controller writes their statuses (the same on every node, written only when they differ, each
condition's lastTransitionTime kept while its status stays).

Errors: a failed sync is logged (one line) and retried after
``min_sync_period``; nothing here raises out of the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kubepy.client import Client, Informer
from kubepy.client.errors import AlreadyExistsError
from kubepy.client.events import EventRecorder
from kubepy.ingress import gateway
from kubepy.ingress.model import CONTROLLER, DEFAULT_CLASS_ANNOTATION, ProxyConfig
from kubepy.ingress.nginx import Nginx, NginxError, render
from kubepy.kinds import Kind

__all__ = ["Controller", "ControllerConfig", "Proxy", "run_controller"]

log = logging.getLogger(__name__)

SYNC = "Sync"          # ingress-nginx's reason when an Ingress is loaded
RELOAD = "RELOAD"      # ingress-nginx's reason when nginx refused a configuration

# Gateway API kinds (custom resources: kubepy/ingress/gatewayapi/crds.yaml), as this client addresses them.
GATEWAY_CLASSES = Kind(gateway.GROUP, "v1", "GatewayClass", "gatewayclasses", namespaced=False, has_status=True)
GATEWAYS = Kind(gateway.GROUP, "v1", "Gateway", "gateways", namespaced=True, has_status=True)
HTTP_ROUTES = Kind(gateway.GROUP, "v1", "HTTPRoute", "httproutes", namespaced=True, has_status=True)
REFERENCE_GRANTS = Kind(gateway.GROUP, "v1beta1", "ReferenceGrant", "referencegrants", namespaced=True,
                        has_status=False)


class Proxy(Protocol):
    """What the controller needs of its proxy (``nginx.Nginx``; tests pass a recording fake)."""

    def prepare(self) -> None: ...

    def write_certificates(self, certs: dict[str, str]) -> dict[str, str]: ...

    def prune_certificates(self, keep: set[str]) -> None: ...

    def pid(self) -> int | None: ...

    async def apply(self, text: str) -> str: ...

    async def stop(self) -> None: ...


def _key(obj: dict[str, Any]) -> str:
    m = obj.get("metadata") or {}
    return f"{m.get('namespace')}/{m.get('name')}"


class Controller:
    def __init__(self, client: Any, *, state_dir: Path, publish: list[str], node: str = "",
                 controller: str = CONTROLLER, http_port: int | str = 80, https_port: int | str = 443,
                 nginx: Proxy | None = None, min_sync_period: float = 0.1, sync_period: float = 30.0,
                 ingress_class: str = "", publish_service: str = "",
                 gateway_controller: str = gateway.CONTROLLER) -> None:
        self.client = client
        self.publish_service = publish_service
        self.ingress_class = ingress_class
        self.state_dir = Path(state_dir)
        self.publish = publish
        self.node = node
        self.controller = controller
        self.gateway_controller = gateway_controller
        self.http_port, self.https_port = http_port, https_port
        self.nginx: Proxy = nginx or Nginx(self.state_dir)
        self.min_sync_period, self.sync_period = min_sync_period, sync_period
        self.events = EventRecorder(client, component="kubepy-ingress", host=node or None)
        self.ingresses = Informer(client, "ingresses")
        self.classes = Informer(client, "ingressclasses")
        self.services = Informer(client, "services")
        self.slices = Informer(client, "endpointslices")
        self.secrets = Informer(client, "secrets", field_selector="type=kubernetes.io/tls")
        # Gateway API: custom resources that may not be installed (yet). Their informers retry until the CRDs
        # are served and never hold up the Ingresses; until one has listed, its objects count as none and
        # no status of its kind is written.
        self.gateway_classes = Informer(client, GATEWAY_CLASSES)  # type: ignore[arg-type]
        self.gateways = Informer(client, GATEWAYS)  # type: ignore[arg-type]
        self.routes = Informer(client, HTTP_ROUTES)  # type: ignore[arg-type]
        self.grants = Informer(client, REFERENCE_GRANTS)  # type: ignore[arg-type]
        self.namespaces = Informer(client, "namespaces")  # allowedRoutes.namespaces.selector
        for informer in self.informers + self.gateway_informers:
            informer.add_handler(self._on_change, lambda _old, _new: self._on_change(_new), self._on_change)
        self._dirty = asyncio.Event()
        self._last_sync = float("-inf")
        self._last_full = float("-inf")
        self._text = ""              # the configuration nginx runs
        self._rejected = ""          # the last text nginx -t refused (not retried until something changes)
        self._start_backoff = 0.0    # while nginx will not start: seconds until the next try (doubling to 30)
        self._start_retry_at = float("-inf")
        self._reported: set[tuple[str, str, str]] = set()
        self._synced_generations: dict[str, tuple[str, int]] = {}
        self.syncs = 0
        self.failures = 0

    @property
    def informers(self) -> tuple[Informer, ...]:
        return (self.ingresses, self.classes, self.services, self.slices, self.secrets)

    @property
    def gateway_informers(self) -> tuple[Informer, ...]:
        return (self.gateway_classes, self.gateways, self.routes, self.grants, self.namespaces)

    def _on_change(self, _obj: dict[str, Any]) -> None:
        self._dirty.set()

    async def ensure_class(self) -> None:
        """Create our IngressClass, as the default class, when no class of that name exists (as k3s's Traefik
        chart installs its own); one that exists is left as it is, whoever changed it."""
        body = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": self.ingress_class, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
                "spec": {"controller": self.controller}}
        delay = 0.2
        while True:
            try:
                await self.client.create("ingressclasses", body)
                log.info("ingress class created name=%s controller=%s default=true", self.ingress_class,
                         self.controller)
                return
            except AlreadyExistsError:
                return
            except Exception as e:  # noqa: BLE001 - the API server may not be up yet
                log.warning("ingress class not created name=%s err=%s retry_in=%.1fs", self.ingress_class, e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def run(self) -> None:
        self.nginx.prepare()
        if self.ingress_class:
            await self.ensure_class()
        tasks = [asyncio.create_task(i.run(), name=f"ingress-informer-{getattr(i.resource, 'plural', i.resource)}")
                 for i in self.informers + self.gateway_informers]
        try:
            for informer in self.informers:
                await informer.wait_synced()
            log.info("ingress caches synced node=%s controller=%s publish=%s state_dir=%s", self.node or "-",
                     self.controller, ",".join(self.publish) or "-", self.state_dir)
            await self.sync_loop()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await self.events.stop()

    async def sync_loop(self) -> None:
        self._dirty.set()
        while True:
            until_full = self._last_full + self.sync_period - time.monotonic()
            with contextlib.suppress(TimeoutError):
                # Wake at least every second: a dead nginx is started again within one.
                await asyncio.wait_for(self._dirty.wait(), max(0.0, min(until_full, 1.0)))
            if not self._dirty.is_set():
                now = time.monotonic()
                if now < self._last_full + self.sync_period and (self.nginx.pid() is not None
                                                                 or now < self._start_retry_at):
                    continue
                self._rejected = ""
            wait = self._last_sync + self.min_sync_period - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._dirty.clear()
            try:
                await self.sync()
            except Exception:  # a bug met by some object must not end the loop: the next change tries again
                self.failures += 1
                log.exception("ingress sync crashed node=%s (the last good configuration keeps serving)",
                              self.node or "-")

    def config(self) -> ProxyConfig:
        return self.decide()[0]

    def decide(self) -> tuple[ProxyConfig, gateway.Statuses]:
        """The proxy configuration and the Gateway API statuses, from the caches (Ingresses first)."""
        return gateway.build(self.ingresses.cache.list(), classes=self.classes.cache.list(),
                             services=self.services.cache.list(), slices=self.slices.cache.list(),
                             secrets=self.secrets.cache.list(), gateway_classes=self.gateway_classes.cache.list(),
                             gateways=self.gateways.cache.list(), routes=self.routes.cache.list(),
                             namespaces=self.namespaces.cache.list(), grants=self.grants.cache.list(),
                             addresses=self.addresses(),
                             controller=self.controller, gateway_controller=self.gateway_controller)

    async def sync(self) -> bool:
        start = time.monotonic()
        self._last_sync = start
        cfg, statuses = self.decide()
        self._report(cfg)
        names = self.nginx.write_certificates(dict(cfg.certificates))
        text = render(cfg, state_dir=self.state_dir, cert_files=names, node=self.node, http_port=self.http_port,
                      https_port=self.https_port)
        result = "unchanged"
        running = self.nginx.pid() is not None
        if (text != self._text or not running) and text != self._rejected:
            try:
                result = await self.nginx.apply(text)
            except (NginxError, OSError) as e:
                self.failures += 1
                self._rejected = text
                if self.nginx.pid() is None:  # not even the last good configuration runs: try again, backing off
                    self._start_backoff = min(max(self._start_backoff * 2, 1.0), 30.0)
                    self._start_retry_at = time.monotonic() + self._start_backoff
                log.error("ingress sync failed node=%s ingresses=%d nginx_running=%s retry_in=%s err=%s",
                          self.node or "-", len(cfg.ingresses), self.nginx.pid() is not None,
                          f"{self._start_backoff:.0f}s" if self.nginx.pid() is None else "next-change", e)
                for obj in self._served(cfg):
                    self.events.event(obj, "Warning", RELOAD,
                                      f"Error reloading NGINX (the last good configuration keeps serving): {e}")
                return False
            self._text, self._rejected, self._start_backoff = text, "", 0.0
            self.nginx.prune_certificates(set(names.values()))
        self.syncs += 1
        self._last_full = start
        await self._write_status(cfg)
        await self._write_gateway_status(statuses)
        self._announce_synced(cfg)
        if result != "unchanged":
            log.info("ingress sync node=%s nginx=%s ingresses=%d httproutes=%d servers=%d upstreams=%d endpoints=%d "
                     "tls=%d problems=%d ms=%.1f", self.node or "-", result, len(cfg.ingresses), len(cfg.routes),
                     len(cfg.servers), len(cfg.upstreams), sum(len(u.servers) for u in cfg.upstreams),
                     len(cfg.certificates),
                     len(cfg.problems), (time.monotonic() - start) * 1000)
        return True

    def _served(self, cfg: ProxyConfig) -> list[dict[str, Any]]:
        out = []
        for key in cfg.ingresses:
            obj = self.ingresses.cache.get(key)
            if obj is not None:
                out.append(obj)
        return out

    def _report(self, cfg: ProxyConfig) -> None:
        """A Warning Event for each problem when it first appears (again, if it went away and came back)."""
        now = {(p.ingress, p.reason, p.message) for p in cfg.problems}
        for ingress, reason, message in sorted(now - self._reported):
            obj = self.ingresses.cache.get(ingress)
            log.warning("ingress problem ingress=%s reason=%s message=%r", ingress, reason, message)
            if obj is not None:
                self.events.event(obj, "Warning", reason, message)
        self._reported = now

    def _announce_synced(self, cfg: ProxyConfig) -> None:
        seen = {}
        for obj in self._served(cfg):
            meta = obj["metadata"]
            mark = (str(meta.get("uid")), int(meta.get("generation") or 0))
            seen[_key(obj)] = mark
            if self._synced_generations.get(_key(obj)) != mark:
                self.events.event(obj, "Normal", SYNC, "Scheduled for sync")
        self._synced_generations = seen

    def addresses(self) -> list[dict[str, str]]:
        """What status.loadBalancer.ingress says: the ``publish_service``'s load-balancer addresses
        (ingress-nginx's --publish-service), else the ``publish`` list."""
        if self.publish_service:
            svc = self.services.cache.get(self.publish_service) or {}
            found = [{k: str(i[k]) for k in ("ip", "hostname") if i.get(k)}
                     for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]
            if [f for f in found if f]:
                return [f for f in found if f]
        return [{"ip": a} for a in self.publish]

    async def _write_status(self, cfg: ProxyConfig) -> None:
        """Our addresses on the Ingresses we serve; taken off one we no longer serve (its class changed),
        as ingress-nginx does, but only while they are exactly ours (another controller's stay)."""
        want = self.addresses()
        served = set(cfg.ingresses)
        for obj in self.ingresses.cache.list():
            have = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if _key(obj) in served:
                target = want
            elif have and have == want:
                target = []
            else:
                continue
            if have == target:
                continue
            meta = obj["metadata"]
            try:
                await self.client.patch("ingresses", meta["name"], {"status": {"loadBalancer": {"ingress": target}}},
                                        namespace=meta.get("namespace"), subresource="status")
                log.info("ingress status ingress=%s address=%s", _key(obj),
                         ",".join(a.get("ip") or a.get("hostname", "") for a in target) or "-")
            except Exception as e:  # noqa: BLE001 - retried on the next sync
                log.warning("ingress status failed ingress=%s err=%s retry=next-sync", _key(obj), e)

    async def _write_gateway_status(self, statuses: gateway.Statuses) -> None:
        """Our GatewayClasses', Gateways' and HTTPRoute parents' status, written when it differs from what the
        object says (every node decides the same, so the first node's write makes the others' a no-op)."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.gateway_classes.has_synced:
            for name, want in statuses.classes.items():
                obj = self.gateway_classes.cache.get(name)
                if obj is not None:
                    have = obj.get("status") or {}
                    status = dict(have, conditions=gateway.merge_conditions(want["conditions"],
                                                                            have.get("conditions") or [], now))
                    await self._patch_status(GATEWAY_CLASSES, obj, status, have)
        if self.gateways.has_synced:
            for key, want in statuses.gateways.items():
                obj = self.gateways.cache.get(key)
                if obj is None:
                    continue
                have = obj.get("status") or {}
                old_listeners = {ls.get("name"): ls for ls in have.get("listeners") or []}
                status = dict(want, conditions=gateway.merge_conditions(want["conditions"],
                                                                        have.get("conditions") or [], now),
                              listeners=[dict(ls, conditions=gateway.merge_conditions(
                                  ls["conditions"], (old_listeners.get(ls["name"]) or {}).get("conditions") or [], now))
                                  for ls in want["listeners"]])
                await self._patch_status(GATEWAYS, obj, status, have)
        if self.routes.has_synced:
            for obj in self.routes.cache.list():
                key = _key(obj)
                have = obj.get("status") or {}
                old = {json.dumps(p.get("parentRef"), sort_keys=True): p for p in have.get("parents") or []
                       if p.get("controllerName") == self.gateway_controller}
                ours = [dict(p, conditions=gateway.merge_conditions(
                    p["conditions"], (old.get(json.dumps(p["parentRef"], sort_keys=True)) or {}).get("conditions")
                    or [], now)) for p in statuses.routes.get(key, [])]
                status = dict(have, parents=gateway.route_parents(ours, have.get("parents") or [],
                                                                   self.gateway_controller))
                if status["parents"] or have.get("parents"):
                    await self._patch_status(HTTP_ROUTES, obj, status, have)

    async def _patch_status(self, kind: Kind, obj: dict[str, Any], status: dict[str, Any],
                            have: dict[str, Any]) -> None:
        if status == have:
            return
        meta = obj["metadata"]
        try:
            # A merge patch replaces lists whole, so the conditions, listeners and parents are exactly ours.
            await self.client.patch(kind, meta["name"], {"status": status}, namespace=meta.get("namespace"),
                                    subresource="status")
            log.info("gateway status kind=%s object=%s %s", kind.kind,
                     _key(obj) if meta.get("namespace") else meta["name"],
                     " ".join(f"{c['type']}={c['status']}" for c in status.get("conditions") or []) or
                     f"parents={len(status.get('parents') or [])}")
        except Exception as e:  # noqa: BLE001 - retried on the next sync
            log.warning("gateway status failed kind=%s object=%s err=%s retry=next-sync", kind.kind, meta.get("name"),
                        e)


@dataclass
class ControllerConfig:
    kubeconfig: str
    state_dir: str
    publish_status_address: list[str] = field(default_factory=list)
    node: str = ""
    controller: str = CONTROLLER
    ingress_class: str = "kubepy"
    publish_service: str = ""
    http_port: int = 80
    https_port: int = 443
    min_sync_period: float = 0.1
    sync_period: float = 30.0


async def run_controller(config: ControllerConfig) -> None:
    async with Client.from_kubeconfig(config.kubeconfig, user_agent="kubepy-ingress") as client:
        controller = Controller(client, state_dir=Path(config.state_dir), publish=config.publish_status_address,
                                node=config.node, controller=config.controller, http_port=config.http_port,
                                https_port=config.https_port, min_sync_period=config.min_sync_period,
                                sync_period=config.sync_period, ingress_class=config.ingress_class,
                                publish_service=config.publish_service)
        try:
            await controller.run()
        finally:
            await controller.nginx.stop()
