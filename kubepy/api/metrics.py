"""The API server's metrics, with kube-apiserver's names and labels (k8s.io/apiserver/pkg/endpoints/metrics).

- ``apiserver_request_total{verb,dry_run,group,version,resource,subresource,scope,component,code}``
- ``apiserver_request_duration_seconds{verb,dry_run,group,version,resource,subresource,scope,component}``
  (not for WATCH and CONNECT: their duration is the connection's lifetime)
- ``apiserver_longrunning_requests{verb,group,version,resource,subresource,scope,component}`` - watches
  and connections (exec, attach, port-forward, proxy) open now
- ``apiserver_registered_watchers{group,version,kind}`` - watchers of each watch cache, read when scraped
- ``apiserver_storage_objects{resource}`` - objects in the store per resource, counted at most every
  ``STORAGE_COUNT_INTERVAL`` seconds (upstream counts every minute)

Only resources the server serves (and their subresources) are named in labels: anything else in
a URL is counted with empty group, version and resource, so no caller can grow the series without
bound. Upstream's vocabulary: verbs ``GET LIST WATCH POST PUT PATCH APPLY DELETE DELETECOLLECTION CONNECT``;
scope ``resource`` (one named object, or a create), ``namespace``, ``cluster``, or empty for
non-resource paths (``/healthz``, ``/openapi/v2``: verb is the HTTP method there).

This sits on every request's path: recording is two dictionary look-ups for the label children,
one counter increment and one histogram observation (bench/apiserver.py measures the cost).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from kubepy.kinds import lookup
from kubepy.metrics import REQUEST_DURATION_BUCKETS, CollectorRegistry, GaugeCallback

__all__ = ["APIServerMetrics", "request_labels"]

COMPONENT = "apiserver"
STORAGE_COUNT_INTERVAL = 30.0
_VERBS = {"get": "GET", "list": "LIST", "watch": "WATCH", "create": "POST", "update": "PUT", "patch": "PATCH",
          "delete": "DELETE", "deletecollection": "DELETECOLLECTION", "proxy": "CONNECT"}
_CONNECT_SUBRESOURCES = frozenset({"exec", "attach", "portforward", "proxy"})
APPLY_PATCH = "application/apply-patch+yaml"

# (verb, group, version, resource, subresource, scope)
Labels = tuple[str, str, str, str, str, str]


def request_labels(attrs: Any, method: str, content_type: str) -> Labels:
    """Upstream's labels for one request, from its authorization attributes (``kubepy.api.authz``)."""
    if not attrs.is_resource:
        return method.upper(), "", "", "", "", ""
    verb = _VERBS.get(attrs.verb, attrs.verb.upper())
    if verb == "PATCH" and content_type == APPLY_PATCH:
        verb = "APPLY"
    elif attrs.subresource in _CONNECT_SUBRESOURCES:
        verb = "CONNECT"
    if attrs.name or attrs.verb == "create":
        scope = "resource"
    elif attrs.namespace:
        scope = "namespace"
    else:
        scope = "cluster"
    kind = lookup(attrs.api_group, attrs.api_version, attrs.resource)
    if kind is None:
        # Label values come from the URL: a resource the server does not serve would let any caller
        # (anonymous ones too) add series without end. They are counted together, unnamed.
        return verb, "", "", "", "", scope
    subresource = attrs.subresource if attrs.subresource in kind.subresources else ""
    return verb, attrs.api_group, attrs.api_version, attrs.resource, subresource, scope


class APIServerMetrics:
    def __init__(self, registry: CollectorRegistry, *,
                 watchers: Callable[[], Iterable[tuple[tuple[str, str, str], int]]] = tuple,
                 count_objects: Callable[[], Awaitable[dict[str, int]]] | None = None) -> None:
        self.requests = Counter(
            "apiserver_request", "Counter of apiserver requests broken out for each verb, dry run value, group, "
            "version, resource, scope, component, and HTTP response code.",
            ["verb", "dry_run", "group", "version", "resource", "subresource", "scope", "component", "code"],
            registry=registry)
        self.durations = Histogram(
            "apiserver_request_duration_seconds", "Response latency distribution in seconds for each verb, dry run "
            "value, group, version, resource, subresource, scope and component.",
            ["verb", "dry_run", "group", "version", "resource", "subresource", "scope", "component"],
            buckets=REQUEST_DURATION_BUCKETS, registry=registry)
        self.longrunning = Gauge(
            "apiserver_longrunning_requests", "Gauge of all active long-running apiserver requests broken out by "
            "verb, group, version, resource, scope and component. Not all requests are tracked this way.",
            ["verb", "group", "version", "resource", "subresource", "scope", "component"], registry=registry)
        GaugeCallback("apiserver_registered_watchers", "Number of currently registered watchers for a given "
                      "resources", ["group", "version", "kind"], watchers, registry=registry)
        self._objects: dict[str, int] = {}
        self._counted_at = float("-inf")
        self._count_objects = count_objects
        GaugeCallback("apiserver_storage_objects", "Number of stored objects at the time of last check split by "
                      "kind.", ["resource"], lambda: [((r,), n) for r, n in self._objects.items()], registry=registry)
        # Label children by their values: .labels() parses its arguments on every call.
        self._counters: dict[tuple[str, ...], Any] = {}
        self._histograms: dict[tuple[str, ...], Any] = {}

    def observe(self, labels: Labels, dry_run: str, code: int, seconds: float) -> None:
        verb, group, version, resource, subresource, scope = labels
        key = (verb, dry_run, group, version, resource, subresource, scope, COMPONENT, str(code))
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.requests.labels(*key)
        counter.inc()
        if verb in ("WATCH", "CONNECT"):
            return
        hkey = key[:-1]
        histogram = self._histograms.get(hkey)
        if histogram is None:
            histogram = self._histograms[hkey] = self.durations.labels(*hkey)
        histogram.observe(seconds)

    def longrunning_gauge(self, labels: Labels) -> Any:
        """The gauge child a watch or connection increments while it is open."""
        return self.longrunning.labels(*labels, COMPONENT)

    async def refresh_storage_objects(self) -> None:
        """Count the stored objects again if the last count is older than STORAGE_COUNT_INTERVAL."""
        now = time.monotonic()
        if self._count_objects is None or now - self._counted_at < STORAGE_COUNT_INTERVAL:
            return
        self._counted_at = now
        self._objects = await self._count_objects()
