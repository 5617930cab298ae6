"""The routing decision, pure: Ingresses + Services + EndpointSlices + Secrets → a proxy configuration model.

Nothing here talks to anything; ``nginx.render`` turns the model into
nginx.conf text and the controller (``controller``) feeds it from informers.

Which Ingresses are ours: ``spec.ingressClassName`` names an IngressClass
whose ``spec.controller`` is ours; or the legacy ``kubernetes.io/ingress.class``
annotation names such a class; or neither is set and one of our classes is
the default.

Kubernetes' matching rules, and how they become nginx locations:

- host: an exact host is one server; ``*.example.com`` matches exactly one
  more label (``a.example.com``, not ``a.b.example.com`` nor
  ``example.com``), a regex server name; nginx tries exact names before
  regexes, so an exact host beats a wildcard.  Rules without a host, and
  requests for no known host, go to the default server.
- Exact ``/foo`` is ``location = /foo``.  Prefix ``/foo`` (or ``/foo/``)
  matches by path element: ``location = /foo`` and ``location ^~ /foo/``,
  so ``/foo`` and ``/foo/bar`` match and ``/foobar`` does not.  nginx picks
  an exact location first, then the longest prefix: Exact beats Prefix and
  the longest Prefix wins, as Kubernetes defines.  ImplementationSpecific
  is nginx's plain string prefix (``location ^~ /foo``: also ``/foobar``).
- When two Ingresses claim the same host and location, the older one wins
  (creationTimestamp, then namespace/name), as ingress-nginx decides; an
  Exact path wins its ``= /foo`` over a Prefix of another Ingress.
- What no path matches goes to the defaultBackend of the oldest Ingress
  naming that host (for the default server: of the oldest Ingress with one),
  else 404.  A backend without ready endpoints answers 503.
- Backends: the Service port by number or name; upstream servers are the
  ready endpoints' pod IPs with the EndpointSlice port of that Service port
  (as ingress-nginx does: no Service VIP in between).
- TLS: a host listed in ``spec.tls[].hosts`` is served on 443 with that
  Secret's certificate (``kubernetes.io/tls``), chosen by SNI; every other
  server uses the controller's default certificate.  A ``tls`` entry without
  hosts applies to the default server.

What cannot be served is a ``Problem`` (an Event on that Ingress), never an
exception: one Ingress's bad reference never breaks the others.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CONTROLLER", "Backend", "Choice", "Filters", "Location", "Match", "Problem", "ProxyConfig", "Redirect",
           "Server", "Upstream", "build",
           "is_ours", "ours", "tls_pem"]

CONTROLLER = "kubepy.io/ingress"
INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# Event reasons (Warning): what an Ingress refers to and cannot be served.
SERVICE_NOT_FOUND = "ServiceNotFound"
PORT_NOT_FOUND = "ServicePortNotFound"
SECRET_NOT_FOUND = "SecretNotFound"
INVALID_SECRET = "InvalidSecret"
UNSUPPORTED_BACKEND = "UnsupportedBackend"

EXACT, PREFIX = "=", "^~"  # nginx location modifiers


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list:
    return value if isinstance(value, list) else []


def _meta(obj: Mapping[str, Any]) -> dict:
    return _d(obj.get("metadata"))


def _key(obj: Mapping[str, Any]) -> str:
    m = _meta(obj)
    return f"{m.get('namespace')}/{m.get('name')}"


@dataclass(frozen=True)
class Upstream:
    name: str                      # default_web_80: namespace, Service and port (names never hold "_")
    servers: tuple[str, ...]       # "10.244.1.2:8080", sorted
    weights: tuple[int, ...] = ()  # nginx weight of each server (an HTTPRoute rule's backendRefs); () all equal


@dataclass(frozen=True)
class Redirect:
    """An HTTPRoute RequestRedirect: what is not given stays as the request has it."""
    scheme: str = ""
    hostname: str = ""
    port: int = 0
    path: tuple[str, str] | None = None   # ("ReplaceFullPath" | "ReplacePrefixMatch", value)
    status: int = 302


@dataclass(frozen=True)
class Filters:
    """An HTTPRoute rule's filters, as the nginx rendering needs them (kubepy.ingress.gateway)."""
    request_set: tuple[tuple[str, str], ...] = ()    # RequestHeaderModifier: (name, value)
    request_add: tuple[tuple[str, str], ...] = ()
    request_remove: tuple[str, ...] = ()
    response_set: tuple[tuple[str, str], ...] = ()   # ResponseHeaderModifier
    response_add: tuple[tuple[str, str], ...] = ()
    response_remove: tuple[str, ...] = ()
    redirect: Redirect | None = None
    rewrite_host: str = ""                           # URLRewrite
    rewrite_path: tuple[str, str] | None = None      # ("ReplaceFullPath" | "ReplacePrefixMatch", value)
    prefix: str = ""                                 # the PathPrefix matched, without its "/" (ReplacePrefixMatch)


@dataclass(frozen=True)
class Backend:
    upstream: str | None           # None: nothing to proxy to, answer ``status``
    status: int = 503
    service: str = ""              # "default/web:80", for comments and logs
    filters: Filters | None = None  # an HTTPRoute rule's filters, applied where it is served
    # (weight of an HTTPRoute rule's backendRefs that do not resolve, weight of all): that share of the
    # requests is answered 500, as Gateway API asks; (0, 0) for none.
    failing: tuple[int, int] = (0, 0)


NOT_FOUND = Backend(None, 404)


@dataclass(frozen=True)
class Match:
    """What an HTTPRoute match asks of a request besides its path (all of it, when given)."""
    method: str = ""
    headers: tuple[tuple[str, str, str], ...] = ()   # (name, "Exact" | "RegularExpression", value)
    query: tuple[tuple[str, str, str], ...] = ()     # (name, type, value)

    def precedence(self) -> tuple[int, int, int]:
        """Gateway API's order among matches of one path: a method, then more headers, then more parameters."""
        return (1 if self.method else 0, len(self.headers), len(self.query))


@dataclass(frozen=True)
class Choice:
    match: Match
    backend: Backend
    source: str


@dataclass(frozen=True)
class Location:
    modifier: str                  # "=" exact, "^~" prefix
    path: str
    backend: Backend               # what the location serves when no choice matches
    source: str                    # namespace/name of the Ingress it came from
    choices: tuple[Choice, ...] = ()   # HTTPRoute matches with conditions, the first that matches wins


@dataclass(frozen=True)
class _Conditional:
    """An HTTPRoute match with conditions, before it is placed in the locations it can win."""
    exact: bool                    # an Exact path (else PathPrefix)
    path: str                      # the Exact path, or the prefix without its trailing "/"
    choice: Choice
    order: int                     # route age, then rule and match order


@dataclass(frozen=True)
class Server:
    host: str                      # "" for the default server
    locations: tuple[Location, ...]
    tls_secret: str | None = None  # namespace/name of the Secret whose certificate it serves
    any_depth: bool = False        # a wildcard host of an HTTPRoute: "*." stands for one label or more


@dataclass(frozen=True)
class Problem:
    ingress: str                   # namespace/name
    reason: str
    message: str


@dataclass(frozen=True)
class ProxyConfig:
    servers: tuple[Server, ...]
    upstreams: tuple[Upstream, ...]
    certificates: Mapping[str, str] = field(default_factory=dict)  # secret namespace/name → cert + key PEM
    problems: tuple[Problem, ...] = ()
    ingresses: tuple[str, ...] = ()  # the Ingresses served, namespace/name
    routes: tuple[str, ...] = ()     # the HTTPRoutes served (kubepy.ingress.gateway), namespace/name


def is_ours(ingress: Mapping[str, Any], classes: Mapping[str, Mapping[str, Any]], *,
            controller: str = CONTROLLER) -> bool:
    """``classes``: IngressClasses by name."""
    def mine(name: Any) -> bool:
        cls = classes.get(str(name))
        return cls is not None and _d(cls.get("spec")).get("controller") == controller
    name = _d(ingress.get("spec")).get("ingressClassName")
    if name is not None:
        return mine(name)
    legacy = _d(_meta(ingress).get("annotations")).get(INGRESS_CLASS_ANNOTATION)
    if legacy is not None:
        return mine(legacy)
    return any(mine(n) and _d(_meta(c).get("annotations")).get(DEFAULT_CLASS_ANNOTATION) == "true"
               for n, c in classes.items())


def ours(ingresses: Iterable[Mapping[str, Any]], classes: Iterable[Mapping[str, Any]], *,
         controller: str = CONTROLLER) -> list[Mapping[str, Any]]:
    """Our Ingresses, oldest first (creationTimestamp, then namespace/name): the order conflicts are won in."""
    by_name = {str(_meta(c).get("name")): c for c in classes}
    mine = [i for i in ingresses if not _meta(i).get("deletionTimestamp") and is_ours(i, by_name,
                                                                                       controller=controller)]
    return sorted(mine, key=lambda i: (str(_meta(i).get("creationTimestamp") or ""), _key(i)))


def tls_pem(secret: Mapping[str, Any] | None) -> tuple[str | None, str]:
    """(cert + key PEM, "") for a usable kubernetes.io/tls Secret, else (None, why)."""
    if secret is None:
        return None, "not found"
    if secret.get("type") != "kubernetes.io/tls":
        return None, f"is of type {secret.get('type') or 'Opaque'!r}, not 'kubernetes.io/tls'"
    data = _d(secret.get("data"))
    try:
        crt = base64.b64decode(str(data.get("tls.crt") or ""), validate=True).decode()
        key = base64.b64decode(str(data.get("tls.key") or ""), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None, "has tls.crt or tls.key that is not base64 PEM"
    if "-----BEGIN CERTIFICATE-----" not in crt or "PRIVATE KEY-----" not in key:
        return None, "has no PEM certificate in tls.crt or no PEM private key in tls.key"
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    try:
        cert = x509.load_pem_x509_certificate(crt.encode())
        private = serialization.load_pem_private_key(key.encode(), password=None)
    except ValueError as e:
        return None, f"has a certificate or key that cannot be read: {e}"
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.PEM, public) != \
            private.public_key().public_bytes(serialization.Encoding.PEM, public):
        return None, "has a private key that does not match its certificate"
    return crt.rstrip("\n") + "\n" + key.rstrip("\n") + "\n", ""


class _Builder:
    def __init__(self, services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]],
                 secrets: Iterable[Mapping[str, Any]]) -> None:
        self.services = {_key(s): s for s in services}
        self.slices: dict[str, list[Mapping[str, Any]]] = {}
        for s in slices:
            owner = _d(_meta(s).get("labels")).get(SERVICE_NAME_LABEL)
            if owner:
                self.slices.setdefault(f"{_meta(s).get('namespace')}/{owner}", []).append(s)
        self.secrets = {_key(s): s for s in secrets}
        self.upstreams: dict[str, Upstream] = {}
        self.problems: list[Problem] = []
        self.certificates: dict[str, str] = {}
        # host → {(modifier, path): (location, from_exact)}, host → fallback, host → tls secret
        self.locations: dict[str, dict[tuple[str, str], tuple[Location, bool]]] = {}
        self.fallback: dict[str, Backend] = {}
        self.tls: dict[str, str] = {}
        self.conditional: dict[str, list[_Conditional]] = {}   # host → HTTPRoute matches with conditions
        self.any_depth: set[str] = set()   # wildcard hosts of HTTPRoutes (Gateway API's wildcards span labels)

    def problem(self, ingress: str, reason: str, message: str) -> None:
        p = Problem(ingress, reason, message)
        if p not in self.problems:
            self.problems.append(p)

    def backend(self, ing: str, namespace: str, backend: Mapping[str, Any]) -> Backend:
        if backend.get("resource") is not None:
            ref = _d(backend["resource"])
            self.problem(ing, UNSUPPORTED_BACKEND, f"resource backend {ref.get('kind')}/{ref.get('name')} is not "
                         f"supported by {CONTROLLER}: only Service backends are")
            return Backend(None, 503, f"{ref.get('kind')}/{ref.get('name')}")
        svc_ref = _d(backend.get("service"))
        name, port_ref = str(svc_ref.get("name") or ""), _d(svc_ref.get("port"))
        wanted = port_ref.get("name") or port_ref.get("number")
        label = f"{namespace}/{name}:{wanted}"
        svc = self.services.get(f"{namespace}/{name}")
        if svc is None:
            self.problem(ing, SERVICE_NOT_FOUND, f'Service "{namespace}/{name}" not found')
            return Backend(None, 503, label)
        spec = _d(svc.get("spec"))
        if spec.get("type") == "ExternalName":
            self.problem(ing, UNSUPPORTED_BACKEND, f'Service "{namespace}/{name}" is of type ExternalName, which '
                         f"{CONTROLLER} does not proxy to")
            return Backend(None, 503, label)
        port = next((p for p in map(_d, _l(spec.get("ports")))
                     if (port_ref.get("name") and p.get("name") == port_ref["name"])
                     or (port_ref.get("number") and p.get("port") == port_ref["number"])), None)
        if port is None:
            self.problem(ing, PORT_NOT_FOUND, f'Service "{namespace}/{name}" has no port {wanted!r}' if
                         port_ref.get("name") else f'Service "{namespace}/{name}" has no port {wanted}')
            return Backend(None, 503, label)
        upstream = f"{namespace}_{name}_{port.get('port')}"
        if upstream not in self.upstreams:
            self.upstreams[upstream] = Upstream(upstream, self.endpoints(namespace, name, port))
        if not self.upstreams[upstream].servers:
            return Backend(None, 503, label)
        return Backend(upstream, 0, label)

    def endpoints(self, namespace: str, service: str, port: Mapping[str, Any]) -> tuple[str, ...]:
        """Ready endpoints of the Service's port, as ip:port (kube-proxy's reading of EndpointSlices)."""
        out = set()
        port_name = port.get("name") or ""
        for s in self.slices.get(f"{namespace}/{service}", []):
            if s.get("addressType") not in (None, "IPv4"):
                continue
            number = next((p.get("port") for p in map(_d, _l(s.get("ports")))
                           if (p.get("name") or "") == port_name and (p.get("protocol") or "TCP") == "TCP"), None)
            if not number:
                continue
            for ep in map(_d, _l(s.get("endpoints"))):
                if _d(ep.get("conditions")).get("ready") is False:
                    continue
                out.update(f"{a}:{number}" for a in _l(ep.get("addresses")))
        return tuple(sorted(out))

    def add(self, host: str, modifier: str, path: str, backend: Backend, ing: str, *, exact: bool) -> None:
        locs = self.locations.setdefault(host, {})
        held = locs.get((modifier, path))
        if held is None or (exact and not held[1]):
            locs[(modifier, path)] = (Location(modifier, path, backend, ing), exact)

    def add_conditional(self, host: str, exact: bool, path: str, choice: Choice) -> None:
        entries = self.conditional.setdefault(host, [])
        entries.append(_Conditional(exact, path if exact else path.rstrip("/"), choice, len(entries)))

    def _place_conditionals(self, host: str, locs: dict[tuple[str, str], Location],
                            rank: dict[tuple[str, str], tuple[int, int]]) -> None:
        """Put each conditional match into every location where it can win, in Gateway API's order.

        A location is chosen by path alone, so a match is added to its own path's locations (made if
        missing: a request it does not take goes where it went before) and to every longer-path
        location a request it matches can land in. There it comes before the location's own backend when
        its path is at least as specific (an Exact path; else the longer prefix), then by its method,
        header and parameter counts, then by age."""
        entries = self.conditional.get(host) or []
        if not entries:
            return
        prefixes = sorted((p for m, p in locs if m == PREFIX), key=len, reverse=True)

        def nginx_pick(uri: str) -> tuple[str, str]:   # the prefix location nginx chooses for uri
            return PREFIX, next((p for p in prefixes if uri.startswith(p)), "/")

        for e in entries:
            wanted = [(EXACT, e.path)] if e.exact else [(EXACT, e.path), (PREFIX, e.path + "/")] if e.path else \
                [(PREFIX, "/")]
            for key in wanted:
                if key not in locs:
                    under = nginx_pick(key[1])
                    locs[key] = Location(key[0], key[1], locs[under].backend, locs[under].source)
                    rank[key] = rank[under]
                    if key[0] == PREFIX:
                        prefixes = sorted({*prefixes, key[1]}, key=len, reverse=True)

        def covers(e: _Conditional, modifier: str, path: str) -> bool:
            if e.exact:
                return modifier == EXACT and path == e.path
            if not e.path:
                return True
            element = path if modifier == EXACT else path.rstrip("/") if path.endswith("/") else None
            return element is not None and (element == e.path or element.startswith(e.path + "/"))

        for key, loc in list(locs.items()):
            here = [e for e in entries if covers(e, *key)]
            ranked = [(((2, 0) if e.exact else (1, len(e.path))), e) for e in here]
            ranked = [(r, e) for r, e in ranked if r >= rank[key]]
            if not ranked:
                continue
            ranked.sort(key=lambda re_: (re_[0], re_[1].choice.match.precedence(), -re_[1].order), reverse=True)
            locs[key] = Location(loc.modifier, loc.path, loc.backend, loc.source,
                                 tuple(e.choice for _, e in ranked))

    def ingress(self, obj: Mapping[str, Any]) -> None:
        ing, namespace = _key(obj), str(_meta(obj).get("namespace"))
        spec = _d(obj.get("spec"))
        for tls in map(_d, _l(spec.get("tls"))):
            secret_name = tls.get("secretName")
            if not secret_name:
                continue
            secret_key = f"{namespace}/{secret_name}"
            pem, why = tls_pem(self.secrets.get(secret_key))
            if pem is None:
                self.problem(ing, SECRET_NOT_FOUND if why == "not found" else INVALID_SECRET,
                             f'Secret "{secret_key}" {why}: its hosts are served with the default certificate')
                continue
            self.certificates[secret_key] = pem
            for host in [str(h) for h in _l(tls.get("hosts"))] or [""]:
                self.tls.setdefault(host, secret_key)
        default = spec.get("defaultBackend")
        default_backend = self.backend(ing, namespace, _d(default)) if default is not None else None
        hosts = set()
        for rule in map(_d, _l(spec.get("rules"))):
            host = str(rule.get("host") or "")
            hosts.add(host)
            self.locations.setdefault(host, {})
            for item in map(_d, _l(_d(rule.get("http")).get("paths"))):
                backend = self.backend(ing, namespace, _d(item.get("backend")))
                path, kind = str(item.get("path") or "/"), item.get("pathType")
                if kind == "Exact":
                    self.add(host, EXACT, path, backend, ing, exact=True)
                elif kind == "Prefix":
                    trimmed = path.rstrip("/")
                    if trimmed:
                        self.add(host, EXACT, trimmed, backend, ing, exact=False)
                    self.add(host, PREFIX, trimmed + "/", backend, ing, exact=False)
                else:  # ImplementationSpecific: nginx's own string prefix
                    self.add(host, PREFIX, path, backend, ing, exact=False)
        if default_backend is not None:
            for host in hosts | {""}:
                self.fallback.setdefault(host, default_backend)

    def config(self, served: list[str], routes: Iterable[str] = ()) -> ProxyConfig:
        servers = []
        for host in sorted(set(self.locations) | {""}):
            held = self.locations.get(host, {})
            locs = {k: loc for k, (loc, _) in held.items()}
            # How specific each location's own backend is, as Gateway API ranks paths: an Exact path, else the
            # length of the prefix; what no rule matches ranks below everything.
            rank = {k: (2, 0) if k[0] == EXACT and exact else (1, len(k[1].rstrip("/")) if k[0] == PREFIX
                                                                 else len(k[1]))
                    for k, (_, exact) in held.items()}
            if (PREFIX, "/") not in locs:
                locs[(PREFIX, "/")] = Location(PREFIX, "/", self.fallback.get(host, NOT_FOUND), "")
                rank[(PREFIX, "/")] = (0, 0)
            self._place_conditionals(host, locs, rank)
            ordered = tuple(locs[k] for k in sorted(locs, key=lambda k: (k[1], k[0])))
            servers.append(Server(host, ordered, self.tls.get(host), host in self.any_depth))
        used = {b.upstream for s in servers for loc in s.locations
                for b in (loc.backend, *(c.backend for c in loc.choices))}
        upstreams = tuple(u for n, u in sorted(self.upstreams.items()) if n in used and u.servers)
        certs = {s.tls_secret: self.certificates[s.tls_secret] for s in servers if s.tls_secret}
        return ProxyConfig(tuple(servers), upstreams, certs, tuple(self.problems), tuple(served), tuple(routes))


def build(ingresses: Iterable[Mapping[str, Any]], *, classes: Iterable[Mapping[str, Any]],
          services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]],
          secrets: Iterable[Mapping[str, Any]], controller: str = CONTROLLER) -> ProxyConfig:
    """The whole proxy configuration for our Ingresses."""
    builder = _Builder(services, slices, secrets)
    mine = ours(ingresses, classes, controller=controller)
    for obj in mine:
        builder.ingress(obj)
    return builder.config([_key(i) for i in mine])


_WILDCARD = re.compile(r"\*\.(.+)")


def server_name(host: str, any_depth: bool = False) -> str:
    """nginx's server_name for a Kubernetes host: an Ingress's ``*.example.com`` matches exactly one more
    label, Gateway API's (``any_depth``) one or more."""
    if not host:
        return "_"
    m = _WILDCARD.fullmatch(host)
    if m:
        return ("~^.+\\." if any_depth else "~^[^.]+\\.") + re.escape(m.group(1)).replace("\\-", "-") + "$"
    return host
