"""Gateway API on the ingress data plane, pure: GatewayClasses + Gateways + HTTPRoutes → the same proxy
model the Ingresses fill (one nginx), and the status every one of those objects should have.

``build`` runs ``model``'s builder over our Ingresses first, then over the HTTPRoutes attached to our
Gateways, so both kinds land in one ``ProxyConfig`` that ``nginx.render`` turns into one nginx.conf.
Nothing here talks to anything; the controller (``controller``) feeds it from informers and writes the
statuses it returns (``lastTransitionTime`` is the controller's: it keeps a condition's time while its
status stays).

Which objects are ours, as upstream defines it:

- a GatewayClass whose ``spec.controllerName`` is ours (``kubepy.io/gateway``, beside the IngressClass
  controller ``kubepy.io/ingress``): Accepted=True (False, InvalidParameters, when it has a
  ``parametersRef``: there are no parameters to read);
- a Gateway whose ``gatewayClassName`` names an accepted class of ours;
- an HTTPRoute ``parentRef`` naming such a Gateway: only those parents get a ``status.parents`` entry
  from us (another controller's entries are left to it).

How the data plane serves a Gateway: its address is the address of the LoadBalancer Service in front of
every node's nginx (the one the Ingresses' status shows), which answers HTTP on 80 and HTTPS on 443. So
an HTTP listener must be on port 80 and an HTTPS listener on 443 (else Accepted=False, PortUnavailable);
HTTPS terminates TLS with the listener's first certificateRef (a ``kubernetes.io/tls`` Secret in the
Gateway's namespace), chosen by SNI on the listener's hostname; TCP, UDP, TLS listeners and TLS
passthrough are UnsupportedProtocol.  Two listeners of one Gateway on the same port and hostname are
Conflicted (HostnameConflict) and neither is served.

An attached HTTPRoute's hostnames are intersected with the listener's hostname (``*.example.com``
matches any name below example.com); none left is NoMatchingListenerHostname; a route in a namespace the
listener's ``allowedRoutes`` does not admit is NotAllowedByListeners.  Each rule's path matches become
nginx locations exactly as Ingress paths do (``PathPrefix`` = Ingress ``Prefix``, by path element;
``Exact`` = ``location =``), on the server of each hostname (no hostname: the default server, so it
serves the names no Ingress or route claims).  Where an Ingress and a route claim the same host and
path, the Ingress (decided first) wins; between routes, the oldest.  A nginx server listens on both 80
and 443, as for Ingresses: a route attached to an HTTP listener also answers HTTPS with the default
certificate.

Backends: ``backendRefs`` to Services (group "", kind Service) in the route's namespace with a port;
several refs of one rule are one nginx upstream whose servers carry ``weight=`` so that each ref gets
``weight / sum`` of the requests whatever its endpoint count (a ref of weight 0 gets none).  A rule
with no backendRefs, or none that resolve, answers 500 (upstream's rule); refs that do not resolve are
left out of the rest and reported (ResolvedRefs=False: BackendNotFound, InvalidKind, RefNotPermitted).

References across namespaces - a backendRef to a Service, a listener's certificateRef to a Secret - are
followed only where a ReferenceGrant in the referred-to namespace lets the referring kind of the referring
namespace refer to that kind (and name, if the grant names one); else RefNotPermitted.

Header, query-parameter and method matches (``model.Match``): nginx picks a location by path alone, so
each such match is placed in every location a request it takes can land in (its own path's, made if
missing, and longer ones below a prefix), before the location's own backend when its path is at least as
specific, in Gateway API's order: an Exact path, the longer prefix, a method, more headers, more
parameters, the older route, the earlier rule.  ``nginx.render`` turns them into ``if`` tests.  Header
names are case-insensitive; values are compared exactly or, for RegularExpression, matched whole (PCRE).
A header name must be letters, digits and "-", a parameter name letters, digits and "_" (what nginx
variables can name; nginx compares parameter names case-insensitively and values still URL-encoded); an
Exact value cannot hold "$".

Filters of a rule (``model.Filters``, rendered by ``nginx``): RequestHeaderModifier (set, add - appended
to a value the request has, after a comma - and remove), ResponseHeaderModifier, RequestRedirect
(scheme, hostname, port - left out when it is the scheme's own - path by ReplaceFullPath or
ReplacePrefixMatch, 301 or 302) and URLRewrite (hostname as the Host the backend sees, path).  Gateway
API's own rules for them (each type once, RequestRedirect neither with URLRewrite nor with backendRefs,
ReplacePrefixMatch only under PathPrefix matches) and what nginx cannot express (a "$" in a value, a rule
whose matches have headers, parameters or a method) make the route UnsupportedValue.

Not implemented, and so reported, never ignored: RequestMirror and ExtensionRef filters, filters of a
backendRef, RegularExpression paths and timeouts make the whole route Accepted=False, reason
UnsupportedValue, naming the field; such a route is not served.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kubepy.ingress import model
from kubepy.ingress.model import (EXACT, PREFIX, Backend, Choice, Filters, Match, ProxyConfig, Redirect, Upstream,
                                  _Builder, tls_pem)
from kubepy.meta.selectors import label_selector_from_dict

__all__ = ["CONTROLLER", "GROUP", "Statuses", "build", "merge_conditions", "route_parents"]

GROUP = "gateway.networking.k8s.io"
CONTROLLER = "kubepy.io/gateway"
HTTP_PORT, HTTPS_PORT = 80, 443  # what the LoadBalancer in front of the nginx on every node serves

# Condition types and reasons, as upstream's apis/v1 names them.
ACCEPTED, PROGRAMMED, RESOLVED_REFS, CONFLICTED = "Accepted", "Programmed", "ResolvedRefs", "Conflicted"
INVALID_PARAMETERS = "InvalidParameters"
LISTENERS_NOT_VALID, ADDRESS_NOT_ASSIGNED, UNSUPPORTED_ADDRESS, INVALID = ("ListenersNotValid", "AddressNotAssigned",
                                                                         "UnsupportedAddress", "Invalid")
PORT_UNAVAILABLE, UNSUPPORTED_PROTOCOL, HOSTNAME_CONFLICT, NO_CONFLICTS = ("PortUnavailable", "UnsupportedProtocol",
                                                                           "HostnameConflict", "NoConflicts")
INVALID_CERTIFICATE_REF, INVALID_ROUTE_KINDS, REF_NOT_PERMITTED = ("InvalidCertificateRef", "InvalidRouteKinds",
                                                                   "RefNotPermitted")
NOT_ALLOWED_BY_LISTENERS, NO_MATCHING_LISTENER_HOSTNAME, NO_MATCHING_PARENT = (
    "NotAllowedByListeners", "NoMatchingListenerHostname", "NoMatchingParent")
UNSUPPORTED_VALUE, BACKEND_NOT_FOUND, INVALID_KIND = "UnsupportedValue", "BackendNotFound", "InvalidKind"

HTTP_ROUTE_KIND = {"group": GROUP, "kind": "HTTPRoute"}

# What a header or query-parameter match can name and compare in nginx (``$http_<name>``, ``$arg_<name>``;
# an Exact value is a string nginx would interpolate ``$`` in).
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")
_QUERY_NAME = re.compile(r"[A-Za-z0-9_]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOSTNAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")   # Gateway API's, no "*"
_FILTERS = {"RequestHeaderModifier": "requestHeaderModifier", "ResponseHeaderModifier": "responseHeaderModifier",
            "RequestRedirect": "requestRedirect", "URLRewrite": "urlRewrite"}   # type → its field

_d, _l, _meta, _key = model._d, model._l, model._meta, model._key


def condition(type_: str, ok: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason, "message": message,
            "observedGeneration": generation}


def merge_conditions(new: list[dict[str, Any]], old: Iterable[Mapping[str, Any]], now: str) -> list[dict[str, Any]]:
    """``new`` with ``lastTransitionTime``: the old one while a condition's status stays, else ``now``."""
    before = {c.get("type"): c for c in old if isinstance(c, Mapping)}
    out = []
    for c in new:
        prev = before.get(c["type"])
        same = prev is not None and prev.get("status") == c["status"] and prev.get("lastTransitionTime")
        out.append(dict(c, lastTransitionTime=prev["lastTransitionTime"] if same else now))
    return out


@dataclass(frozen=True)
class Statuses:
    """What each of our objects' status should say (conditions without lastTransitionTime)."""
    classes: Mapping[str, dict[str, Any]] = field(default_factory=dict)    # GatewayClass name → status
    gateways: Mapping[str, dict[str, Any]] = field(default_factory=dict)   # namespace/name → status
    routes: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)  # namespace/name → our parents


def route_parents(ours: list[dict[str, Any]], have: Iterable[Mapping[str, Any]], controller: str = CONTROLLER
                  ) -> list[dict[str, Any]]:
    """A route's status.parents: other controllers' entries as they are, ours replaced by ``ours``."""
    return [dict(p) for p in have if isinstance(p, Mapping) and p.get("controllerName") != controller] + ours


@dataclass
class _Listener:
    gateway: str                     # namespace/name
    namespace: str
    name: str
    port: int
    protocol: str
    hostname: str                    # "" for any
    allowed: Mapping[str, Any]       # allowedRoutes
    conditions: list[dict[str, Any]]
    valid: bool
    supported: list[dict[str, str]]  # supportedKinds
    attached: int = 0


def _oldest_first(objs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    live = [o for o in objs if not _meta(o).get("deletionTimestamp")]
    return sorted(live, key=lambda o: (str(_meta(o).get("creationTimestamp") or ""), _key(o)))


def _generation(obj: Mapping[str, Any]) -> int:
    return int(_meta(obj).get("generation") or 0)


def _host_matches(pattern: str, host: str) -> bool:
    """Gateway API's wildcard: ``*.example.com`` matches any name below example.com, not example.com."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern == host


def intersect(listener: str, route: list[str]) -> list[str] | None:
    """The hostnames a route serves on a listener ([""]: any), None when they do not meet."""
    if not route:
        return [listener]
    if not listener:
        return route
    out = []
    for h in route:
        if _host_matches(listener, h):
            out.append(h)
        elif _host_matches(h, listener) or h == listener:
            out.append(listener)
    return sorted(set(out)) or None


class _Gateways:
    def __init__(self, builder: _Builder, *, namespaces: Iterable[Mapping[str, Any]], addresses: list[dict[str, str]],
                 controller: str, grants: Iterable[Mapping[str, Any]] = ()) -> None:
        self.b = builder
        self.grants = list(grants)
        self.namespaces = {str(_meta(n).get("name")): _d(_meta(n).get("labels")) for n in namespaces}
        self.addresses = [{"type": "IPAddress", "value": a["ip"]} if a.get("ip") else
                          {"type": "Hostname", "value": a["hostname"]} for a in addresses if a.get("ip") or
                          a.get("hostname")]
        self.controller = controller
        self.classes: dict[str, dict[str, Any]] = {}
        self.accepted: set[str] = set()
        self.gateways: dict[str, Mapping[str, Any]] = {}
        self.listeners: dict[str, list[_Listener]] = {}
        self.routes: dict[str, list[dict[str, Any]]] = {}
        self.served: list[str] = []

    def permitted(self, kind: str, namespace: str, to_kind: str, to_namespace: str, to_name: str) -> bool:
        """Whether a ReferenceGrant in ``to_namespace`` lets a ``kind`` (of this API group) in ``namespace``
        refer to the core ``to_kind`` named ``to_name`` (upstream's rule: same namespace needs none)."""
        if namespace == to_namespace:
            return True
        for grant in self.grants:
            if _meta(grant).get("namespace") != to_namespace:
                continue
            spec = _d(grant.get("spec"))
            if any((f.get("group"), f.get("kind"), f.get("namespace")) == (GROUP, kind, namespace)
                   for f in map(_d, _l(spec.get("from")))) and \
                    any((t.get("group") or "", t.get("kind")) == ("", to_kind) and t.get("name") in (None, "", to_name)
                        for t in map(_d, _l(spec.get("to")))):
                return True
        return False

    # -- GatewayClasses ------------------------------------------------------
    def gateway_class(self, obj: Mapping[str, Any]) -> None:
        if _d(obj.get("spec")).get("controllerName") != self.controller:
            return
        name, gen = str(_meta(obj).get("name")), _generation(obj)
        if _d(obj.get("spec")).get("parametersRef") is not None:
            cond = condition(ACCEPTED, False, INVALID_PARAMETERS,
                             f"parametersRef is not supported by {self.controller}: it has no parameters", gen)
        else:
            cond = condition(ACCEPTED, True, ACCEPTED, f"Handled by {self.controller}", gen)
            self.accepted.add(name)
        self.classes[name] = {"conditions": [cond]}

    # -- Gateways ------------------------------------------------------------
    def gateway(self, obj: Mapping[str, Any]) -> None:
        spec = _d(obj.get("spec"))
        if spec.get("gatewayClassName") not in self.accepted:
            return
        key, namespace, gen = _key(obj), str(_meta(obj).get("namespace")), _generation(obj)
        self.gateways[key] = obj
        listeners = [self.listener(key, namespace, _d(item), gen) for item in _l(spec.get("listeners"))]
        by_place: dict[tuple[int, str], list[_Listener]] = {}
        for ls in listeners:
            by_place.setdefault((ls.port, ls.hostname), []).append(ls)
        for (port, hostname), same in by_place.items():
            if len(same) < 2:
                continue
            message = (f"listeners {', '.join(repr(x.name) for x in same)} share port {port} and hostname "
                       f"{hostname or '(any)'!r}")
            for x in same:
                x.valid = False
                x.conditions = [condition(CONFLICTED, True, HOSTNAME_CONFLICT, message, gen) if c["type"] == CONFLICTED
                                else condition(PROGRAMMED, False, INVALID, message, gen) if c["type"] == PROGRAMMED
                                else c for c in x.conditions]
        if _l(spec.get("addresses")):  # the Gateway is not accepted (UnsupportedAddress): nothing of it is served
            for ls in listeners:
                ls.valid = False
                ls.conditions = [condition(PROGRAMMED, False, INVALID, "the Gateway is not accepted", gen)
                                 if c["type"] == PROGRAMMED else c for c in ls.conditions]
        self.listeners[key] = listeners

    def listener(self, gateway: str, namespace: str, spec: Mapping[str, Any], gen: int) -> _Listener:
        name, port, protocol = str(spec.get("name") or ""), int(spec.get("port") or 0), str(spec.get("protocol") or "")
        hostname = str(spec.get("hostname") or "")
        problem: tuple[str, str, str] | None = None  # (condition type, reason, message)
        if protocol not in ("HTTP", "HTTPS"):
            problem = (ACCEPTED, UNSUPPORTED_PROTOCOL, f"protocol {protocol!r} is not supported by {self.controller}: "
                       "only HTTP and HTTPS are")
        elif port != (HTTP_PORT if protocol == "HTTP" else HTTPS_PORT):
            problem = (ACCEPTED, PORT_UNAVAILABLE, f"{self.controller} serves {protocol} on port "
                       f"{HTTP_PORT if protocol == 'HTTP' else HTTPS_PORT} only, not {port}")
        elif protocol == "HTTPS":
            problem = self.certificate(namespace, hostname, _d(spec.get("tls")))
        kinds = _l(_d(spec.get("allowedRoutes")).get("kinds"))
        bad_kinds = [k for k in map(_d, kinds) if (k.get("group", GROUP), k.get("kind")) != (GROUP, "HTTPRoute")]
        if problem is None and bad_kinds:
            problem = (RESOLVED_REFS, INVALID_ROUTE_KINDS, "route kinds not supported: " + ", ".join(
                f"{k.get('group', GROUP)}/{k.get('kind')}" for k in bad_kinds))
        supported = [] if kinds and len(bad_kinds) == len(kinds) else [dict(HTTP_ROUTE_KIND)]
        if problem is None:
            conds = [condition(ACCEPTED, True, ACCEPTED, "Listener is accepted", gen),
                     condition(PROGRAMMED, True, PROGRAMMED, "Listener is programmed", gen),
                     condition(RESOLVED_REFS, True, RESOLVED_REFS, "All references are resolved", gen),
                     condition(CONFLICTED, False, NO_CONFLICTS, "No conflicts", gen)]
        else:
            type_, reason, message = problem
            conds = [condition(ACCEPTED, type_ != ACCEPTED, reason if type_ == ACCEPTED else ACCEPTED,
                               message if type_ == ACCEPTED else "Listener is accepted", gen),
                     condition(PROGRAMMED, False, INVALID, message, gen),
                     condition(RESOLVED_REFS, type_ != RESOLVED_REFS, reason if type_ == RESOLVED_REFS
                               else RESOLVED_REFS, message if type_ == RESOLVED_REFS else
                               "All references are resolved", gen),
                     condition(CONFLICTED, False, NO_CONFLICTS, "No conflicts", gen)]
        return _Listener(gateway, namespace, name, port, protocol, hostname, _d(spec.get("allowedRoutes")), conds,
                         problem is None, supported)

    def certificate(self, namespace: str, hostname: str, tls: Mapping[str, Any]) -> tuple[str, str, str] | None:
        if (tls.get("mode") or "Terminate") != "Terminate":
            return (ACCEPTED, UNSUPPORTED_PROTOCOL, f"tls.mode {tls.get('mode')!r} is not supported by "
                    f"{self.controller}: only Terminate is")
        refs = [_d(r) for r in _l(tls.get("certificateRefs"))]
        if not refs:
            return (RESOLVED_REFS, INVALID_CERTIFICATE_REF, "an HTTPS listener needs a certificateRef")
        ref = refs[0]
        if (ref.get("group") or "", ref.get("kind") or "Secret") != ("", "Secret"):
            return (RESOLVED_REFS, INVALID_CERTIFICATE_REF, f"certificateRef {ref.get('kind')}/{ref.get('name')} is "
                    "not a Secret")
        ns = str(ref.get("namespace") or namespace)
        if not self.permitted("Gateway", namespace, "Secret", ns, str(ref.get("name"))):
            return (RESOLVED_REFS, REF_NOT_PERMITTED, f'certificateRef to Secret "{ns}/{ref.get("name")}" is not '
                    f'permitted by any ReferenceGrant in namespace "{ns}"')
        secret = f"{ns}/{ref.get('name')}"
        pem, why = tls_pem(self.b.secrets.get(secret))
        if pem is None:
            return (RESOLVED_REFS, INVALID_CERTIFICATE_REF, f'Secret "{secret}" {why}')
        self.b.certificates[secret] = pem
        self.b.tls.setdefault(hostname, secret)
        return None

    def gateway_statuses(self) -> dict[str, dict[str, Any]]:
        out = {}
        for key, obj in self.gateways.items():
            gen, listeners = _generation(obj), self.listeners[key]
            valid = any(ls.valid for ls in listeners)
            if _l(_d(obj.get("spec")).get("addresses")):
                accepted = condition(ACCEPTED, False, UNSUPPORTED_ADDRESS, "spec.addresses is not supported by "
                                     f"{self.controller}: the address is the ingress LoadBalancer's", gen)
            elif valid:
                accepted = condition(ACCEPTED, True, ACCEPTED, "Gateway is accepted", gen)
            else:
                accepted = condition(ACCEPTED, False, LISTENERS_NOT_VALID, "no listener is valid", gen)
            if accepted["status"] != "True":
                programmed = condition(PROGRAMMED, False, INVALID, accepted["message"], gen)
            elif not self.addresses:
                programmed = condition(PROGRAMMED, False, ADDRESS_NOT_ASSIGNED, "the ingress LoadBalancer has no "
                                       "address yet", gen)
            else:
                programmed = condition(PROGRAMMED, True, PROGRAMMED, "Gateway is programmed", gen)
            out[key] = {"addresses": list(self.addresses) if programmed["status"] == "True" else [],
                        "conditions": [accepted, programmed],
                        "listeners": [{"name": ls.name, "supportedKinds": ls.supported,
                                       "attachedRoutes": ls.attached, "conditions": ls.conditions}
                                      for ls in listeners]}
        return out

    # -- HTTPRoutes ----------------------------------------------------------
    def allows(self, ls: _Listener, route_namespace: str) -> bool:
        ns = _d(ls.allowed.get("namespaces"))
        frm = ns.get("from") or "Same"
        if frm == "All":
            return True
        if frm == "Selector":
            try:
                selector = label_selector_from_dict(_d(ns.get("selector")))
            except ValueError:
                return False
            return selector.matches(self.namespaces.get(route_namespace, {}))
        return route_namespace == ls.namespace

    def unsupported_filters(self, at: str, rule: Mapping[str, Any]) -> str | None:
        filters = [_d(f) for f in _l(rule.get("filters"))]
        if not filters:
            return None
        types = [str(f.get("type") or "") for f in filters]
        for k, t in enumerate(types):
            if t not in _FILTERS:
                return f'{at}.filters[{k}].type: Unsupported value: "{t}": supported values: ' + \
                    ", ".join(f'"{x}"' for x in _FILTERS)
            if types.index(t) != k:
                return f"{at}.filters[{k}]: {t} may appear only once in a rule"
        if "RequestRedirect" in types and "URLRewrite" in types:
            return f"{at}.filters: RequestRedirect and URLRewrite cannot both be used in a rule"
        if "RequestRedirect" in types and _l(rule.get("backendRefs")):
            return f"{at}.filters: RequestRedirect cannot be used in a rule with backendRefs"
        matches = [_d(m) for m in _l(rule.get("matches"))]
        if any(m.get("headers") or m.get("queryParams") or m.get("method") for m in matches):
            return f"{at}.filters: {self.controller} does not apply filters to a rule whose matches have " \
                   "headers, queryParams or method"
        for k, f in enumerate(filters):
            body = _d(f.get(_FILTERS[f["type"]]))
            place = f"{at}.filters[{k}].{_FILTERS[f['type']]}"
            for verb in ("set", "add", "remove"):
                for h, item in enumerate(_l(body.get(verb)) if "HeaderModifier" in f["type"] else []):
                    name = str(item) if verb == "remove" else str(_d(item).get("name") or "")
                    if not _HEADER_NAME.fullmatch(name):
                        return f"{place}.{verb}[{h}]: {self.controller} modifies a header name of letters, " \
                               "digits and '-' only"
                    value = "" if verb == "remove" else str(_d(item).get("value") or "")
                    if "$" in value or _CONTROL.search(value):
                        return f"{place}.{verb}[{h}].value: {self.controller} cannot send a value with '$' or " \
                               "a control character"
            if body.get("hostname") is not None and not _HOSTNAME.fullmatch(str(body["hostname"])):
                return f"{place}.hostname: {str(body['hostname'])!r} is not a hostname"
            if f["type"] == "RequestRedirect":
                if body.get("scheme") not in (None, "http", "https"):
                    return f'{place}.scheme: Unsupported value: "{body["scheme"]}": supported values: "http", "https"'
                if body.get("statusCode") not in (None, 301, 302):
                    return f'{place}.statusCode: Unsupported value: {body["statusCode"]}: supported values: 301, 302'
                port = body.get("port")
                if port is not None and not (isinstance(port, int) and 1 <= port <= 65535):
                    return f"{place}.port: {port!r} is not a port number"
            path = _d(body.get("path"))
            if path:
                kind = path.get("type")
                if kind not in ("ReplaceFullPath", "ReplacePrefixMatch"):
                    return f'{place}.path.type: Unsupported value: "{kind}": supported values: "ReplaceFullPath", ' \
                           '"ReplacePrefixMatch"'
                field_ = "replaceFullPath" if kind == "ReplaceFullPath" else "replacePrefixMatch"
                if kind == "ReplaceFullPath" and path.get(field_) is None:
                    return f"{place}.path.replaceFullPath: Required value"
                value = str(path.get(field_) or "")
                if (value or kind == "ReplaceFullPath") and not value.startswith("/") or "$" in value or \
                        _CONTROL.search(value) or " " in value:
                    return f"{place}.path.{field_}: {value!r} is not an absolute path {self.controller} can write"
                if kind == "ReplacePrefixMatch" and any((_d(m.get("path")).get("type") or "PathPrefix") != "PathPrefix"
                                                        for m in matches):
                    return f"{place}.path: ReplacePrefixMatch needs every match of the rule to be a PathPrefix"
        return None

    def unsupported(self, spec: Mapping[str, Any]) -> str | None:
        """The first field the route uses that we do not implement, as a message."""
        for i, rule in enumerate(map(_d, _l(spec.get("rules")))):
            at = f"spec.rules[{i}]"
            problem = self.unsupported_filters(at, rule)
            if problem is not None:
                return problem
            if rule.get("timeouts"):
                return f"{at}.timeouts: timeouts are not supported by {self.controller}"
            for j, ref in enumerate(map(_d, _l(rule.get("backendRefs")))):
                if _l(ref.get("filters")):
                    return f"{at}.backendRefs[{j}].filters: filters are not supported by {self.controller}"
            for j, match in enumerate(map(_d, _l(rule.get("matches")))):
                for fld, name_re, what in (("headers", _HEADER_NAME, "a header name of letters, digits and '-'"),
                                           ("queryParams", _QUERY_NAME, "a parameter name of letters, digits and "
                                                                        "'_'")):
                    for k, cond in enumerate(map(_d, _l(match.get(fld)))):
                        place = f"{at}.matches[{j}].{fld}[{k}]"
                        if (cond.get("type") or "Exact") not in ("Exact", "RegularExpression"):
                            return f'{place}.type: Unsupported value: "{cond.get("type")}": supported values: ' \
                                   '"Exact", "RegularExpression"'
                        if not name_re.fullmatch(str(cond.get("name") or "")):
                            return f"{place}.name: {self.controller} matches {what} only"
                        value = str(cond.get("value") or "")
                        if not value:
                            return f"{place}.value: Required value"
                        if _CONTROL.search(value):
                            return f"{place}.value: a control character cannot be matched by {self.controller}"
                        if (cond.get("type") or "Exact") == "Exact" and "$" in value:
                            return f"{place}.value: {self.controller} cannot match a value with '$' exactly " \
                                   "(a RegularExpression can)"
                        if cond.get("type") == "RegularExpression":
                            problem = _regex_problem(value)
                            if problem:
                                return f"{place}.value: {problem}"
                path = _d(match.get("path"))
                kind = path.get("type") or "PathPrefix"
                if kind not in ("PathPrefix", "Exact"):
                    return f'{at}.matches[{j}].path.type: Unsupported value: "{kind}": supported values: ' \
                           '"Exact", "PathPrefix"'
                value = str(path.get("value") or "/")
                if not value.startswith("/") or _CONTROL.search(value):
                    return f"{at}.matches[{j}].path.value: must be an absolute path"
        return None

    def backends(self, key: str, namespace: str,
                 spec: Mapping[str, Any]) -> tuple[list[Backend], list[tuple[str, str]]]:
        """Each rule's backend, and the refs that did not resolve as (reason, message)."""
        out, problems = [], []
        name = key.partition("/")[2]
        for i, rule in enumerate(map(_d, _l(spec.get("rules")))):
            picked: list[tuple[Upstream, int, str]] = []
            failed = 0   # the weight of the refs that do not resolve: that share of the requests gets 500
            for ref in map(_d, _l(rule.get("backendRefs"))):
                upstream, detail = self.backend_ref(namespace, ref)
                if upstream is None:
                    problems.append(detail)
                    failed += max(0, int(ref.get("weight", 1)))
                    continue
                if int(ref.get("weight", 1)) > 0:
                    picked.append((upstream, int(ref.get("weight", 1)), detail[1]))
            if not picked:
                out.append(Backend(None, 500, "no backend"))
                continue
            live = [(u, w, label) for u, w, label in picked if u.servers]
            failing = (failed, failed + sum(w for _, w, _ in live)) if failed and live else (0, 0)
            if not live:
                out.append(Backend(None, 503, ",".join(label for _, _, label in picked)))
            elif len(live) == 1:
                out.append(Backend(live[0][0].name, 0, live[0][2], failing=failing))
            else:
                up = _weighted(f"{namespace}_{name}_rule{i}", live)
                self.b.upstreams[up.name] = up
                out.append(Backend(up.name, 0, ",".join(f"{label}*{w}" for _, w, label in live), failing=failing))
        return out, problems

    def backend_ref(self, namespace: str, ref: Mapping[str, Any]) -> tuple[Upstream | None, tuple[str, str]]:
        """(Upstream, ("", label)) of a Service port, or (None, (reason, message)) why not."""
        group, kind, name = ref.get("group") or "", ref.get("kind") or "Service", str(ref.get("name") or "")
        if (group, kind) != ("", "Service"):
            return None, (INVALID_KIND, f"backendRef {group or 'core'}/{kind} {name} is not a Service")
        ns = str(ref.get("namespace") or namespace)
        if not self.permitted("HTTPRoute", namespace, "Service", ns, name):
            return None, (REF_NOT_PERMITTED, f'backendRef to Service "{ns}/{name}" is not permitted by any '
                                             f'ReferenceGrant in namespace "{ns}"')
        svc = self.b.services.get(f"{ns}/{name}")
        if svc is None:
            return None, (BACKEND_NOT_FOUND, f'Service "{ns}/{name}" not found')
        spec = _d(svc.get("spec"))
        if spec.get("type") == "ExternalName":
            return None, (UNSUPPORTED_VALUE, f'Service "{ns}/{name}" is of type ExternalName, which '
                                             f"{self.controller} does not proxy to")
        port = next((p for p in map(_d, _l(spec.get("ports"))) if p.get("port") == ref.get("port")), None)
        if port is None:
            return None, (BACKEND_NOT_FOUND, f'Service "{ns}/{name}" has no port {ref.get("port")}')
        upstream = f"{ns}_{name}_{port.get('port')}"
        if upstream not in self.b.upstreams:
            self.b.upstreams[upstream] = Upstream(upstream, self.b.endpoints(ns, name, port))
        return self.b.upstreams[upstream], ("", f"{ns}/{name}:{port.get('port')}")

    def route(self, obj: Mapping[str, Any]) -> None:
        key, namespace, gen = _key(obj), str(_meta(obj).get("namespace")), _generation(obj)
        spec = _d(obj.get("spec"))
        parents: list[dict[str, Any]] = []
        attached: list[tuple[_Listener, list[str]]] = []
        unsupported = self.unsupported(spec)
        backends, problems = self.backends(key, namespace, spec)
        resolved = condition(RESOLVED_REFS, not problems, problems[0][0] if problems else RESOLVED_REFS,
                             "; ".join(m for _, m in problems) if problems else "All references are resolved", gen)
        for ref in map(_d, _l(spec.get("parentRefs"))):
            if (ref.get("group", GROUP), ref.get("kind") or "Gateway") != (GROUP, "Gateway"):
                continue
            gw = f"{ref.get('namespace') or namespace}/{ref.get('name')}"
            if gw not in self.gateways:
                continue
            candidates = [ls for ls in self.listeners[gw] if (not ref.get("sectionName") or
                                                               ls.name == ref["sectionName"])
                          and (not ref.get("port") or ls.port == ref["port"])]
            here: list[tuple[_Listener, list[str]]] = []
            if not candidates:
                accepted = condition(ACCEPTED, False, NO_MATCHING_PARENT, "no listener of the Gateway matches "
                                     "sectionName/port", gen)
            elif unsupported is not None:
                accepted = condition(ACCEPTED, False, UNSUPPORTED_VALUE, unsupported, gen)
            else:
                allowed = [ls for ls in candidates if ls.valid and self.allows(ls, namespace)]
                for ls in allowed:
                    hosts = intersect(ls.hostname, [str(h) for h in _l(spec.get("hostnames"))])
                    if hosts is not None:
                        here.append((ls, hosts))
                if not allowed:
                    accepted = condition(ACCEPTED, False, NOT_ALLOWED_BY_LISTENERS, "no listener of the Gateway "
                                         "admits routes from this namespace", gen)
                elif not here:
                    accepted = condition(ACCEPTED, False, NO_MATCHING_LISTENER_HOSTNAME, "no hostname of the route "
                                         "matches a listener's hostname", gen)
                else:
                    accepted = condition(ACCEPTED, True, ACCEPTED, "Route is accepted", gen)
            attached += here
            parents.append({"parentRef": {k: ref[k] for k in ("group", "kind", "namespace", "name", "sectionName",
                                                                "port") if k in ref},
                            "controllerName": self.controller, "conditions": [accepted, resolved]})
        if not parents:
            return
        self.routes[key] = parents
        if not attached:
            return
        for ls in {id(ls): ls for ls, _ in attached}.values():
            ls.attached += 1
        hosts = sorted({h for _, hs in attached for h in hs})
        for rule, backend in zip(map(_d, _l(spec.get("rules"))), backends, strict=True):
            for match in map(_d, _l(rule.get("matches")) or [{}]):
                path = _d(match.get("path"))
                value, kind = str(path.get("value") or "/"), path.get("type") or "PathPrefix"
                conditions = Match(str(match.get("method") or ""), _conditions(match.get("headers"), lower=True),
                                   _conditions(match.get("queryParams")))
                served = replace(backend, filters=_filters(rule, prefix=value.rstrip("/"))) \
                    if rule.get("filters") else backend
                for host in hosts:
                    self.b.locations.setdefault(host, {})
                    if host.startswith("*."):
                        self.b.any_depth.add(host)
                    if conditions != Match():
                        self.b.add_conditional(host, kind == "Exact", value, Choice(conditions, served,
                                                                                    f"HTTPRoute {key}"))
                    elif kind == "Exact":
                        self.b.add(host, EXACT, value, served, f"HTTPRoute {key}", exact=True)
                    else:
                        trimmed = value.rstrip("/")
                        if trimmed:
                            self.b.add(host, EXACT, trimmed, served, f"HTTPRoute {key}", exact=False)
                        self.b.add(host, PREFIX, trimmed + "/", served, f"HTTPRoute {key}", exact=False)
        self.served.append(key)


def _regex_problem(value: str) -> str | None:
    """Why nginx (PCRE) cannot take ``value`` as a whole-value match, or None. Python's ``re`` stands in for
    PCRE: what it refuses is refused, and so are the escapes it knows and PCRE does not."""
    if re.search(r"\\[uUN]", value):
        return r"\u, \U and \N{...} escapes are not supported by nginx's PCRE"
    try:
        whole = re.compile(f"^(?:{value})$")
    except re.error as e:
        return f"invalid regular expression: {e}"
    if whole.match(""):
        # nginx sees a missing header or parameter as an empty one: such a match would take requests without it.
        return "a regular expression that matches the empty value cannot be told from a missing one by nginx"
    return None


def _filters(rule: Mapping[str, Any], *, prefix: str) -> Filters:
    """A rule's filters (checked by ``unsupported_filters``) for the match of ``prefix``."""
    out: dict[str, Any] = {"prefix": prefix}
    for f in map(_d, _l(rule.get("filters"))):
        kind = str(f.get("type"))
        body = _d(f.get(_FILTERS[kind]))
        path = _d(body.get("path"))
        replace_path = (str(path.get("type")), str(path.get("replaceFullPath" if path.get("type") == "ReplaceFullPath"
                                                            else "replacePrefixMatch") or "")) if path else None
        if kind.endswith("HeaderModifier"):
            side = "request" if kind.startswith("Request") else "response"
            out[f"{side}_set"] = tuple((str(_d(h).get("name")), str(_d(h).get("value") or ""))
                                       for h in _l(body.get("set")))
            out[f"{side}_add"] = tuple((str(_d(h).get("name")), str(_d(h).get("value") or ""))
                                       for h in _l(body.get("add")))
            out[f"{side}_remove"] = tuple(str(h) for h in _l(body.get("remove")))
        elif kind == "RequestRedirect":
            out["redirect"] = Redirect(str(body.get("scheme") or ""), str(body.get("hostname") or ""),
                                       int(body.get("port") or 0), replace_path, int(body.get("statusCode") or 302))
        elif kind == "URLRewrite":
            out["rewrite_host"], out["rewrite_path"] = str(body.get("hostname") or ""), replace_path
    return Filters(**out)


def _conditions(items: Any, *, lower: bool = False) -> tuple[tuple[str, str, str], ...]:
    """(name, type, value) of each header or query-parameter match; header names are case-insensitive. Of
    several entries with one name only the first counts, as Gateway API says."""
    out: dict[str, tuple[str, str, str]] = {}
    for c in map(_d, _l(items)):
        name = str(c.get("name") or "").lower() if lower else str(c.get("name") or "")
        out.setdefault(name, (name, str(c.get("type") or "Exact"), str(c.get("value") or "")))
    return tuple(out.values())


def _weighted(name: str, refs: list[tuple[Upstream, int, str]]) -> Upstream:
    """One upstream for several backendRefs: endpoint weights such that each ref gets weight/sum of the
    requests, however many endpoints it has (nginx weighs servers, not groups of them)."""
    common = math.lcm(*(len(u.servers) for u, _, _ in refs))
    servers: dict[str, int] = {}
    for u, w, _ in refs:
        for s in u.servers:
            servers[s] = servers.get(s, 0) + w * common // len(u.servers)
    g = math.gcd(*servers.values())
    names = sorted(servers)
    return Upstream(name, tuple(names), tuple(servers[s] // g for s in names))


def build(ingresses: Iterable[Mapping[str, Any]], *, classes: Iterable[Mapping[str, Any]],
          services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]],
          secrets: Iterable[Mapping[str, Any]], gateway_classes: Iterable[Mapping[str, Any]] = (),
          gateways: Iterable[Mapping[str, Any]] = (), routes: Iterable[Mapping[str, Any]] = (),
          namespaces: Iterable[Mapping[str, Any]] = (), grants: Iterable[Mapping[str, Any]] = (),
          addresses: list[dict[str, str]] | None = None,
          controller: str = model.CONTROLLER, gateway_controller: str = CONTROLLER) -> tuple[ProxyConfig, Statuses]:
    """The whole proxy configuration (our Ingresses, then our HTTPRoutes) and our Gateway API statuses."""
    builder = _Builder(services, slices, secrets)
    mine = model.ours(ingresses, classes, controller=controller)
    for obj in mine:
        builder.ingress(obj)
    gw = _Gateways(builder, namespaces=namespaces, addresses=addresses or [], controller=gateway_controller,
                   grants=grants)
    for obj in _oldest_first(gateway_classes):
        gw.gateway_class(obj)
    for obj in _oldest_first(gateways):
        gw.gateway(obj)
    for obj in _oldest_first(routes):
        gw.route(obj)
    cfg = builder.config([_key(i) for i in mine], gw.served)
    return cfg, Statuses(gw.classes, gw.gateway_statuses(), gw.routes)
