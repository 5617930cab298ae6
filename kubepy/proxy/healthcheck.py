"""kube-proxy's HTTP health answers: the proxy's own ``/healthz`` and each Service's health-check node port.

- ``/healthz`` and ``/livez`` on ``0.0.0.0:10256`` (upstream's
  ``--healthz-bind-address``): 200 while rules were synced recently, 503
  otherwise, with upstream's JSON ``{"lastUpdated", "currentTime",
  "nodeEligible"}``. Peers probe it to decide which nodes are live
  (``announce.PeerProbe``).
- every ``externalTrafficPolicy: Local`` LoadBalancer Service's
  ``healthCheckNodePort``: 200 when this node has local endpoints of it, 503
  when not, with upstream's body ``{"service": {"namespace", "name"},
  "localEndpoints": N, "serviceProxyHealthy": …}`` and the
  ``X-Load-Balancing-Endpoint-Weight: N`` header, so a load balancer in
  front only sends to nodes that will not drop the traffic.

One aiohttp runner; a site per port, opened and closed as Services come and go.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Mapping

from aiohttp import web

from kubepy.proxy.rules import ServicePort

log = logging.getLogger(__name__)

__all__ = ["HealthServer", "service_health", "local_endpoint_counts"]


def local_endpoint_counts(ports: Mapping[str, ServicePort]) -> dict[int, tuple[str, str, int]]:
    """healthCheckNodePort -> (namespace, name, local endpoints) over the Service's ports."""
    out: dict[int, tuple[str, str, set[str]]] = {}
    for sp in ports.values():
        if sp.health_check_node_port:
            _, _, ips = out.setdefault(sp.health_check_node_port, (sp.namespace, sp.name, set()))
            ips.update(ep.ip for ep in sp.local_endpoints)
    return {port: (ns, name, len(ips)) for port, (ns, name, ips) in out.items()}


def service_health(namespace: str, name: str, count: int, *, proxy_healthy: bool) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of a health-check node port, as upstream's healthcheck server writes them."""
    body = json.dumps({"service": {"namespace": namespace, "name": name}, "localEndpoints": count,
                       "serviceProxyHealthy": proxy_healthy}, indent=2)
    headers = {"Content-Type": "application/json", "X-Content-Type-Options": "nosniff",
               "X-Load-Balancing-Endpoint-Weight": str(count)}
    return (200 if count and proxy_healthy else 503), headers, body


def _stamp(t: float | None) -> str:
    if t is None:
        return ""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class HealthServer:
    """The proxy's health answers; ``last_synced`` is a wall-clock time the proxier updates."""

    def __init__(self, *, bind: str = "0.0.0.0", healthz_port: int = 10256, max_age: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.bind, self.healthz_port, self.max_age, self.clock = bind, healthz_port, max_age, clock
        self.last_synced: float | None = None
        self._services: dict[int, tuple[str, str, int]] = {}
        self._sites: dict[int, web.TCPSite] = {}
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)

    def healthy(self) -> bool:
        return self.last_synced is not None and self.clock() - self.last_synced <= self.max_age

    async def start(self) -> None:
        await self._runner.setup()
        if self.healthz_port:
            site = web.TCPSite(self._runner, self.bind, self.healthz_port, reuse_address=True)
            try:
                await site.start()
            except OSError as e:
                # Services must still be proxied; only this node's part in load balancing suffers
                # (peers will not see it live, so it is not chosen to announce addresses).
                log.error("healthz not served address=%s:%d err=%s", self.bind, self.healthz_port, e)
                return
            self._sites[self.healthz_port] = site

    async def stop(self) -> None:
        await self._runner.cleanup()
        self._sites.clear()

    async def sync_services(self, counts: dict[int, tuple[str, str, int]]) -> None:
        """Listen on exactly the health-check node ports in ``counts``."""
        self._services = dict(counts)
        for port in sorted(set(self._sites) - set(counts) - {self.healthz_port}):
            await self._sites.pop(port).stop()
            log.info("health check port closed port=%d", port)
        for port in sorted(set(counts) - set(self._sites)):
            site = web.TCPSite(self._runner, self.bind, port, reuse_address=True)
            try:
                await site.start()
            except OSError as e:  # e.g. taken by something else on the node: retried next sync
                log.warning("health check port not opened port=%d service=%s/%s err=%s", port,
                            counts[port][0], counts[port][1], e)
                continue
            self._sites[port] = site
            log.info("health check port opened port=%d service=%s/%s", port, counts[port][0], counts[port][1])

    async def _handle(self, request: web.Request) -> web.Response:
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        port = sock[1] if sock else 0
        if port == self.healthz_port:
            if request.path in ("/healthz", "/livez"):
                return await self._healthz(request)
            return web.Response(status=404, text="404 page not found\n")
        return await self._service(port)

    async def _healthz(self, request: web.Request) -> web.Response:
        now = self.clock()
        body = {"lastUpdated": _stamp(self.last_synced), "currentTime": _stamp(now), "nodeEligible": True}
        return web.json_response(body, status=200 if self.healthy() else 503)

    async def _service(self, port: int) -> web.Response:
        entry = self._services.get(port)
        if entry is None:
            return web.Response(status=404, text="404 page not found\n")
        status, headers, body = service_health(*entry, proxy_healthy=self.healthy())
        return web.Response(status=status, headers=headers, text=body)
