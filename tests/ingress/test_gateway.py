"""gateway: GatewayClasses + Gateways + HTTPRoutes → the Ingresses' ProxyConfig and nginx.conf, and the statuses
(pure, table-driven).  Where a request goes is asked with test_model's small interpreter of nginx's choice."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepy.ingress.gateway import build, merge_conditions, route_parents
from kubepy.ingress.model import ProxyConfig
from kubepy.ingress.nginx import render
from kubepy.kinds import validation as v
from kubepy.kinds.apiextensions.customresource import CustomResourceSchema
from kubepy.kinds.apiextensions.customresourcedefinition import default_crd, validate_crd
from tests.ingress.cases import (KUBEPY_CLASS, NS, endpoint_slice, ingress, path, rule, self_signed, service,
                                 tls_secret)
from tests.ingress.test_model import SERVICES, SLICES, route

G = "gateway.networking.k8s.io"
GWAPI = Path(__file__).resolve().parents[2] / "kubepy" / "ingress" / "gatewayapi"
CLASS = {"metadata": {"name": "kubepy", "generation": 1}, "spec": {"controllerName": "kubepy.io/gateway"}}
OTHER = {"metadata": {"name": "other", "generation": 1}, "spec": {"controllerName": "example.com/gateway"}}
LB = [{"ip": "192.168.50.240"}]
NAMESPACES = [{"metadata": {"name": NS}}, {"metadata": {"name": "team", "labels": {"shared": "yes"}}}]


def gateway(*listeners: dict[str, Any], name: str = "gw", cls: str = "kubepy", namespace: str = NS,
            **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "generation": 2,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"gatewayClassName": cls, "listeners": list(listeners), **spec}}


def listener(name: str = "http", protocol: str = "HTTP", port: int = 80, hostname: str | None = None,
             **extra: Any) -> dict[str, Any]:
    out = {"name": name, "protocol": protocol, "port": port, **extra}
    if hostname:
        out["hostname"] = hostname
    return out


def ref(name: str, port: int = 80, **extra: Any) -> dict[str, Any]:
    return {"name": name, "port": port, **extra}


def http_route(name: str, *rules: dict[str, Any], hostnames: list[str] | None = None, parents: list | None = None,
               namespace: str = NS, created: int = 0) -> dict[str, Any]:
    spec: dict[str, Any] = {"parentRefs": parents if parents is not None else [{"name": "gw"}], "rules": list(rules)}
    if hostnames:
        spec["hostnames"] = hostnames
    return {"metadata": {"name": name, "namespace": namespace, "generation": 3,
                         "creationTimestamp": f"2026-01-01T00:00:{created:02d}Z"}, "spec": spec}


def match(value: str, kind: str = "PathPrefix", **extra: Any) -> dict[str, Any]:
    return {"path": {"type": kind, "value": value}, **extra}


def rule_(*matches: dict[str, Any], backends: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"matches": list(matches), "backendRefs": backends or [], **extra}


def decide(*objs: dict[str, Any], ingresses: tuple = (), addresses: list | None = None, secrets: list | None = None,
           services: list | None = None, slices: list | None = None, classes: list | None = None,
           grants: tuple = ()):
    gws = [o for o in objs if "gatewayClassName" in o["spec"]]
    routes = [o for o in objs if "parentRefs" in o["spec"]]
    return build(ingresses, classes=[KUBEPY_CLASS], services=services or SERVICES, slices=slices or SLICES,
                 secrets=secrets or [], gateway_classes=[CLASS, OTHER] if classes is None else classes,
                 gateways=gws, routes=routes, namespaces=NAMESPACES, grants=grants,
                 addresses=LB if addresses is None else addresses)


def grant(namespace: str, frm: list[tuple[str, str, str]], to: list[tuple[str, str, str | None]],
          name: str = "g") -> dict[str, Any]:
    """A ReferenceGrant in ``namespace``: from (group, kind, namespace) to (group, kind, name or None)."""
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"from": [{"group": g, "kind": k, "namespace": n} for g, k, n in frm],
                     "to": [{"group": g, "kind": k, **({"name": n} if n else {})} for g, k, n in to]}}


def conds(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in obj["conditions"]}


TWO_PATHS = http_route("site", rule_(match("/api"), backends=[ref("api")]),
                       rule_(match("/docs/index.html", "Exact"), backends=[ref("docs", 8080)]),
                       hostnames=["a.example.com"])


def test_an_httproute_with_two_paths_to_two_services():
    cfg, st = decide(gateway(listener()), TWO_PATHS)
    assert cfg.routes == ("default/site",)
    cases = [("a.example.com", "/api", "default/api:80"), ("a.example.com", "/api/v1", "default/api:80"),
             ("a.example.com", "/apix", "404"),                    # PathPrefix is by path element
             ("a.example.com", "/docs/index.html", "default/docs:8080"), ("a.example.com", "/docs/index.htm", "404"),
             ("b.example.com", "/api", "404")]                     # only the route's hostname
    assert [(h, u, route(cfg, h, u)) for h, u, _ in cases] == cases
    assert st.classes == {"kubepy": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                                     "message": "Handled by kubepy.io/gateway",
                                                     "observedGeneration": 1}]}}   # not the other controller's
    gw = st.gateways["default/gw"]
    assert gw["addresses"] == [{"type": "IPAddress", "value": "192.168.50.240"}]
    assert conds(gw) == {"Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed")}
    assert gw["conditions"][0]["observedGeneration"] == 2
    [ls] = gw["listeners"]
    assert (ls["name"], ls["attachedRoutes"], ls["supportedKinds"]) == ("http", 1, [{"group": G, "kind": "HTTPRoute"}])
    assert conds(ls) == {"Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed"),
                         "ResolvedRefs": ("True", "ResolvedRefs"), "Conflicted": ("False", "NoConflicts")}
    [parent] = st.routes["default/site"]
    assert parent["parentRef"] == {"name": "gw"} and parent["controllerName"] == "kubepy.io/gateway"
    assert conds(parent) == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}
    assert parent["conditions"][0]["observedGeneration"] == 3


def test_the_same_nginx_serves_ingresses_and_routes_and_an_ingress_keeps_its_path():
    ing = ingress("site", rule("a.example.com", path("/api", "web")))
    cfg, _ = decide(gateway(listener()), TWO_PATHS, ingresses=(ing,))
    assert cfg.ingresses == ("default/site",) and cfg.routes == ("default/site",)
    assert route(cfg, "a.example.com", "/api/v1") == "default/web:80"            # the Ingress was decided first
    assert route(cfg, "a.example.com", "/docs/index.html") == "default/docs:8080"  # the route's other path
    text = render(cfg, state_dir=Path("/state"), cert_files={})
    assert "1 Ingresses (default/site), 1 HTTPRoutes (default/site)" in text
    assert 'location = "/docs/index.html" {  # HTTPRoute default/site → default/docs:8080' in text


def test_a_route_without_hostnames_takes_the_listeners_and_without_matches_all_paths():
    cfg, _ = decide(gateway(listener(hostname="gw.example.com")), http_route("r", {"backendRefs": [ref("web")]}))
    assert route(cfg, "gw.example.com", "/anything") == "default/web:80"
    cfg, _ = decide(gateway(listener()), http_route("r", {"backendRefs": [ref("web")]}))
    assert route(cfg, "whatever.example.com", "/x") == "default/web:80"          # the default server


@pytest.mark.parametrize("listener_host, route_hosts, want", [
    ("*.example.com", ["a.example.com", "other.org"], ["a.example.com"]),
    ("*.example.com", ["*.example.com"], ["*.example.com"]),
    ("a.example.com", ["*.example.com"], ["a.example.com"]),
    ("*.example.com", ["a.b.example.com"], ["a.b.example.com"]),   # Gateway API wildcards span labels
    ("*.example.com", ["example.com"], None),
    ("a.example.com", ["b.example.com"], None),
])
def test_hostnames_are_intersected_with_the_listeners(listener_host, route_hosts, want):
    cfg, st = decide(gateway(listener(hostname=listener_host)),
                     http_route("r", rule_(match("/"), backends=[ref("web")]), hostnames=route_hosts))
    [parent] = st.routes["default/r"]
    if want is None:
        assert conds(parent)["Accepted"] == ("False", "NoMatchingListenerHostname")
        assert cfg.routes == () and st.gateways["default/gw"]["listeners"][0]["attachedRoutes"] == 0
    else:
        assert conds(parent)["Accepted"] == ("True", "Accepted")
        assert sorted(s.host for s in cfg.servers if s.host) == want


@pytest.mark.parametrize("rules, field", [
    ([rule_(match("/"), backends=[ref("web")], filters=[{"type": "RequestMirror"}])], "spec.rules[0].filters[0].type"),
    ([rule_(match("/"), filters=[{"type": "RequestRedirect", "requestRedirect": {}},
                                 {"type": "URLRewrite", "urlRewrite": {}}])], "spec.rules[0].filters"),
    ([rule_(match("/"), backends=[ref("web")], filters=[{"type": "RequestRedirect", "requestRedirect": {}}])],
     "spec.rules[0].filters"),
    ([rule_(match("/"), backends=[ref("web")], filters=[{"type": "URLRewrite", "urlRewrite": {}}] * 2)],
     "spec.rules[0].filters[1]"),
    ([rule_(match("/", headers=[{"name": "x", "value": "1"}]), backends=[ref("web")],
            filters=[{"type": "URLRewrite", "urlRewrite": {"hostname": "a.example.com"}}])], "spec.rules[0].filters"),
    ([rule_(match("/a", "Exact"), backends=[ref("web")], filters=[{"type": "URLRewrite", "urlRewrite": {
        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"}}}])],
     "spec.rules[0].filters[0].urlRewrite.path"),
    ([rule_(match("/"), backends=[ref("web")], filters=[{"type": "RequestHeaderModifier", "requestHeaderModifier": {
        "set": [{"name": "x", "value": "a$b"}]}}])], "spec.rules[0].filters[0].requestHeaderModifier.set[0].value"),
    ([rule_(match("foo", headers=[{"name": "a", "value": "1"}]), backends=[ref("web")])],
     "spec.rules[0].matches[0].path.value"),
    ([rule_(match("foo", "Exact"), backends=[ref("web")])], "spec.rules[0].matches[0].path.value"),
    ([rule_(match("/", headers=[{"name": "x", "value": "\\u00e9", "type": "RegularExpression"}]),
            backends=[ref("web")])], "spec.rules[0].matches[0].headers[0].value"),     # PCRE has no \u
    ([rule_(match("/", headers=[{"name": "x", "value": "(?x) a b  # c", "type": "RegularExpression"}]),
            backends=[ref("web")])], "spec.rules[0].matches[0].headers[0].value"),
    ([rule_(match("/", queryParams=[{"name": "x", "value": "(dev|stage)?", "type": "RegularExpression"}]),
            backends=[ref("web")])], "spec.rules[0].matches[0].queryParams[0].value"),  # would take "no x"
    ([rule_(match("/"), filters=[{"type": "RequestRedirect", "requestRedirect": {"statusCode": 999}}])],
     "spec.rules[0].filters[0].requestRedirect.statusCode"),
    ([rule_(match("/"), filters=[{"type": "RequestRedirect", "requestRedirect": {"hostname": "a b"}}])],
     "spec.rules[0].filters[0].requestRedirect.hostname"),
    ([rule_(match("/"), backends=[ref("web")], filters=[{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
        "remove": ["a b"]}}])], "spec.rules[0].filters[0].responseHeaderModifier.remove[0]"),
    ([rule_(match("/", headers=[{"name": "x.y", "value": "1"}]), backends=[ref("web")])],
     "spec.rules[0].matches[0].headers[0].name"),
    ([rule_(match("/", queryParams=[{"name": "a-b", "value": "1"}]), backends=[ref("web")])],
     "spec.rules[0].matches[0].queryParams[0].name"),
    ([rule_(match("/", headers=[{"name": "x", "value": "a$b"}]), backends=[ref("web")])],
     "spec.rules[0].matches[0].headers[0].value"),
    ([rule_(match("/", headers=[{"name": "x", "value": "a(", "type": "RegularExpression"}]), backends=[ref("web")])],
     "spec.rules[0].matches[0].headers[0].value"),
    ([rule_(match("/", queryParams=[{"name": "x", "value": "1", "type": "Prefix"}]), backends=[ref("web")])],
     "spec.rules[0].matches[0].queryParams[0].type"),
    ([rule_(match("/"), backends=[ref("web")]), rule_(match("/a.*", "RegularExpression"), backends=[ref("web")])],
     "spec.rules[1].matches[0].path.type"),
    ([rule_(match("/"), backends=[ref("web", filters=[{"type": "URLRewrite"}])])], "spec.rules[0].backendRefs[0].filters"),
    ([rule_(match("/"), backends=[ref("web")], timeouts={"request": "1s"})], "spec.rules[0].timeouts"),
])
def test_what_is_not_implemented_is_unsupported_value_and_not_served(rules, field):
    cfg, st = decide(gateway(listener()), http_route("r", *rules))
    [parent] = st.routes["default/r"]
    assert conds(parent)["Accepted"] == ("False", "UnsupportedValue")
    assert parent["conditions"][0]["message"].startswith(field + ":")
    assert cfg.routes == () and route(cfg, "x.example.com", "/") == "404"


def matching_route(docs_port: int = 8080) -> dict[str, Any]:
    """Header, query-parameter and method matches beside plain paths, for the precedence cases below."""
    hdr = lambda name, value, kind="Exact": {"name": name, "value": value, "type": kind}  # noqa: E731
    docs = [ref("docs", docs_port)]
    return http_route(
        "m",
        rule_(match("/api", headers=[hdr("X-Version", "2")]), backends=[ref("api")]),
        rule_(match("/api"), backends=[ref("web")]),
        rule_(match("/", headers=[hdr("x-canary", "yes")]), backends=docs),
        rule_(match("/api/v1/exact", "Exact", method="POST"), backends=docs),
        rule_(match("/multi", headers=[hdr("a", "1")]), backends=[ref("api")]),
        rule_(match("/multi", headers=[hdr("a", "1"), hdr("b", "2")]), backends=docs),
        rule_(match("/m", headers=[hdr("h", "1")]), backends=[ref("api")]),
        rule_(match("/m", method="GET"), backends=docs),
        rule_(match("/q", queryParams=[{"name": "x", "value": "1"}]), match("/q", headers=[hdr("or", "this")]),
              backends=[ref("api")]),
        rule_(match("/re", headers=[hdr("x-user", "v[0-9]+", "RegularExpression")]), backends=[ref("api")]),
        rule_(match("/dup", headers=[hdr("X-A", "1"), hdr("x-a", "2")]), backends=[ref("api")]),  # the first counts
        hostnames=["m.example.com"])


# (method, uri, headers, the backend that answers or the status)
MATCH_CASES = [
    ("GET", "/api/x", {"X-Version": "2"}, "api"),
    ("GET", "/api/x", {"x-version": "2"}, "api"),          # header names are case-insensitive
    ("GET", "/api", {"X-Version": "2"}, "api"),            # the prefix's element itself
    ("GET", "/api/x", {"X-Version": "3"}, "web"),          # falls back to the rule without conditions
    ("GET", "/api/x", {}, "web"),
    ("GET", "/api/x", {"x-canary": "yes"}, "web"),         # the longer path beats the headers of "/"
    ("GET", "/other", {"x-canary": "yes"}, "docs"),
    ("GET", "/other", {}, "404"),                          # nothing matches "/" without the header
    ("POST", "/api/v1/exact", {}, "docs"),                 # an Exact path beats every prefix
    ("GET", "/api/v1/exact", {}, "web"),                   # not its method: the /api prefix takes it
    ("GET", "/multi", {"a": "1", "b": "2"}, "docs"),       # more headers first
    ("GET", "/multi", {"a": "1"}, "api"),
    ("GET", "/multi", {"b": "2"}, "404"),
    ("GET", "/m", {"h": "1"}, "docs"),                     # a method before headers
    ("POST", "/m", {"h": "1"}, "api"),
    ("GET", "/q?x=1", {}, "api"),                          # a query parameter ...
    ("GET", "/q?x=2", {}, "404"),
    ("GET", "/q", {"or": "this"}, "api"),                  # ... or the rule's other match
    ("GET", "/re", {"x-user": "v12"}, "api"),              # a regular expression matches the whole value
    ("GET", "/re", {"x-user": "v12x"}, "404"),
    ("GET", "/dup", {"X-A": "1"}, "api"),
    ("GET", "/dup", {"X-A": "2"}, "404"),
]


@pytest.mark.parametrize("method, uri, headers, want", MATCH_CASES)
def test_header_query_and_method_matches_in_gateway_api_precedence(method, uri, headers, want):
    cfg, st = decide(gateway(listener()), matching_route())
    assert conds(st.routes["default/m"][0]) == {"Accepted": ("True", "Accepted"),
                                                "ResolvedRefs": ("True", "ResolvedRefs")}
    got = route(cfg, "m.example.com", uri, method=method, headers=headers)
    assert (got.partition("/")[2].partition(":")[0] if "/" in got else got) == want


def test_a_routes_wildcard_host_spans_labels_an_ingresses_does_not():
    cfg, _ = decide(gateway(listener()), http_route("r", rule_(match("/"), backends=[ref("api")]),
                                                    hostnames=["*.gw.example.com"]),
                    ingresses=(ingress("i", rule("*.ing.example.com", path("/", "web"))),))
    assert route(cfg, "a.gw.example.com", "/") == "default/api:80"
    assert route(cfg, "a.b.gw.example.com", "/") == "default/api:80"       # Gateway API: any depth
    assert route(cfg, "gw.example.com", "/") == "404"
    assert route(cfg, "a.ing.example.com", "/") == "default/web:80"
    assert route(cfg, "a.b.ing.example.com", "/") == "404"                  # Ingress: one label
    text = render(cfg, state_dir=Path("/state"), cert_files={})
    assert "server_name ~^.+\\.gw\\.example\\.com$;" in text and "server_name ~^[^.]+\\.ing\\.example\\.com$;" in text


def test_a_refs_share_that_does_not_resolve_answers_500():
    """Gateway API: requests that would have gone to an invalid backendRef get 500, the rest still go."""
    cfg, st = decide(gateway(listener()), http_route("r", rule_(match("/"), backends=[
        ref("web", weight=3), ref("nowhere", weight=1)])))
    assert conds(st.routes["default/r"][0])["ResolvedRefs"] == ("False", "BackendNotFound")
    loc = next(loc for s in cfg.servers for loc in s.locations if loc.path == "/")
    assert (loc.backend.upstream, loc.backend.failing) == ("default_web_80", (1, 4))
    text = render(cfg, state_dir=Path("/state"), cert_files={})
    assert 'split_clients "$request_id" $kp_fail_0 {\n        25.00% "y";\n        * "";' in text
    assert "if ($kp_fail_0) { return 500; }\n            proxy_pass http://default_web_80;" in text


def test_one_value_per_request_header_whatever_the_filters_say():
    headers = {"type": "RequestHeaderModifier", "requestHeaderModifier": {
        "set": [{"name": "Host", "value": "a.example.com"}, {"name": "X-A", "value": "1"}],
        "add": [{"name": "x-a", "value": "2"}]}}
    cfg, st = decide(gateway(listener()), http_route("r", rule_(match("/"), backends=[ref("web")], filters=[
        headers, {"type": "URLRewrite", "urlRewrite": {"hostname": "b.example.com"}}])))
    assert conds(st.routes["default/r"][0])["Accepted"] == ("True", "Accepted")
    text = render(cfg, state_dir=Path("/state"), cert_files={})
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("proxy_set_header")]
    location = [line for line in lines if "X-Real-IP" in line]
    assert len(location) == 2                  # the http block's and the location's own
    own = lines[lines.index(location[1]) - 1:]
    assert [line for line in own if line.lower().startswith("proxy_set_header host ")] == \
        ['proxy_set_header Host "b.example.com";']
    assert [line for line in own if line.lower().startswith("proxy_set_header x-a ")] == ['proxy_set_header X-A "1,2";']


def test_conditional_matches_render_as_nginx_conditions():
    cfg, _ = decide(gateway(listener()), matching_route())
    text = render(cfg, state_dir=Path("/state"), cert_files={})
    api = text[text.index('location ^~ "/api/"'):]
    api = api[:api.index("\n        }")]
    assert '$http_x_version = "2"' in api and "proxy_pass http://default_api_80;" in api
    assert api.rstrip().endswith("proxy_pass http://default_web_80;")   # the rule without conditions last
    assert '$http_x_user ~ "^(?:v[0-9]+)$"' in text and '$arg_x = "1"' in text and '$request_method = "POST"' in text


@pytest.mark.parametrize("backends, reason, message", [
    ([ref("nowhere")], "BackendNotFound", 'Service "default/nowhere" not found'),
    ([ref("web", 81)], "BackendNotFound", 'Service "default/web" has no port 81'),
    ([ref("web", namespace="team")], "RefNotPermitted", 'backendRef to Service "team/web" is not permitted by any '
                                                        'ReferenceGrant in namespace "team"'),
    ([ref("web", group="example.com", kind="Bucket")], "InvalidKind", "backendRef example.com/Bucket web is not a Service"),
])
def test_a_backend_that_does_not_resolve_is_reported_and_answers_500(backends, reason, message):
    cfg, st = decide(gateway(listener()), http_route("r", rule_(match("/"), backends=backends)))
    [parent] = st.routes["default/r"]
    assert parent["conditions"][1] == {"type": "ResolvedRefs", "status": "False", "reason": reason,
                                       "message": message, "observedGeneration": 3}
    assert conds(parent)["Accepted"] == ("True", "Accepted")                 # the route is still attached
    assert route(cfg, "x.example.com", "/") == "500"


def test_a_rule_without_backends_answers_500_and_one_without_ready_endpoints_503():
    cfg, _ = decide(gateway(listener()), http_route("r", rule_(match("/none")), rule_(match("/empty"),
                                                                                      backends=[ref("empty")])))
    assert (route(cfg, "x", "/none"), route(cfg, "x", "/empty")) == ("500", "503")


def test_weights_split_requests_per_backend_ref_not_per_endpoint():
    # web has two ready endpoints, api one: weights 1 and 3 mean 1/4 and 3/4 of the requests.
    cfg, _ = decide(gateway(listener()), http_route("r", rule_(match("/"), backends=[
        ref("web", weight=1), ref("api", weight=3), ref("docs", 8080, weight=0)])))
    [up] = [u for u in cfg.upstreams if u.name == "default_r_rule0"]
    assert dict(zip(up.servers, up.weights, strict=True)) == {"10.244.0.2:8080": 1, "10.244.1.2:8080": 1,
                                                              "10.244.1.3:9090": 6}
    text = render(cfg, state_dir=Path("/state"), cert_files={})
    assert "        server 10.244.1.3:9090 weight=6 max_fails=0;" in text
    assert route(cfg, "x", "/") == "default/web:80*1,default/api:80*3"


@pytest.mark.parametrize("lst, accepted, reason", [
    (listener(port=8080), ("False", "PortUnavailable"), "kubepy.io/gateway serves HTTP on port 80 only, not 8080"),
    (listener(protocol="TCP", port=80), ("False", "UnsupportedProtocol"), None),
    (listener(protocol="HTTPS", port=443, tls={"mode": "Passthrough"}), ("False", "UnsupportedProtocol"), None),
    (listener(protocol="HTTPS", port=443, tls={"certificateRefs": [{"name": "gone"}]}), ("True", "Accepted"),
     'Secret "default/gone" not found'),
    (listener(allowedRoutes={"kinds": [{"kind": "GRPCRoute"}]}), ("True", "Accepted"), None),
])
def test_invalid_listeners_are_reported_and_a_gateway_without_valid_ones_is_not_accepted(lst, accepted, reason):
    _, st = decide(gateway(lst))
    gw = st.gateways["default/gw"]
    [ls] = gw["listeners"]
    assert conds(ls)["Accepted"] == accepted and conds(ls)["Programmed"] == ("False", "Invalid")
    if reason:
        assert reason in ls["conditions"][1]["message"]
    assert conds(gw) == {"Accepted": ("False", "ListenersNotValid"), "Programmed": ("False", "Invalid")}
    assert gw["addresses"] == []


def test_conflicted_listeners_serve_nothing_and_others_do():
    _, st = decide(gateway(listener("a", hostname="x.example.com"), listener("b", hostname="x.example.com"),
                           listener("c")))
    gw = st.gateways["default/gw"]
    assert [(ls["name"], conds(ls)["Conflicted"], conds(ls)["Programmed"][0]) for ls in gw["listeners"]] == [
        ("a", ("True", "HostnameConflict"), "False"), ("b", ("True", "HostnameConflict"), "False"),
        ("c", ("False", "NoConflicts"), "True")]
    assert conds(gw)["Accepted"] == ("True", "Accepted")


TEAM_SERVICES = SERVICES + [service("shop", ("http", 80), namespace="team")]
TEAM_SLICES = SLICES + [endpoint_slice("shop", "http", 8080, "10.244.3.7", namespace="team")]
FROM_ROUTES = (G, "HTTPRoute", NS)


@pytest.mark.parametrize("grants, allowed", [
    ((), False),
    ((grant("team", [FROM_ROUTES], [("", "Service", None)]),), True),            # every Service of team
    ((grant("team", [FROM_ROUTES], [("", "Service", "shop")]),), True),          # this one by name
    ((grant("team", [FROM_ROUTES], [("", "Service", "other")]),), False),        # another one by name
    ((grant(NS, [FROM_ROUTES], [("", "Service", None)]),), False),               # a grant in the wrong namespace
    ((grant("team", [(G, "HTTPRoute", "elsewhere")], [("", "Service", None)]),), False),  # for another namespace
    ((grant("team", [(G, "Gateway", NS)], [("", "Service", None)]),), False),    # for another kind
    ((grant("team", [FROM_ROUTES], [("", "Secret", None)]),), False),            # to another kind
    ((grant("team", [(G, "Gateway", NS)], [("", "Secret", None)], name="a"),
      grant("team", [(G, "Gateway", NS), FROM_ROUTES], [("", "Secret", None), ("", "Service", "shop")], name="b")),
     True),                                                                      # any grant, any of its entries
])
def test_a_backend_in_another_namespace_needs_a_reference_grant_there(grants, allowed):
    cfg, st = decide(gateway(listener()), http_route("r", rule_(match("/"), backends=[ref("shop", namespace="team")])),
                     services=TEAM_SERVICES, slices=TEAM_SLICES, grants=grants)
    [parent] = st.routes["default/r"]
    assert conds(parent)["Accepted"] == ("True", "Accepted")
    if allowed:
        assert conds(parent)["ResolvedRefs"] == ("True", "ResolvedRefs")
        assert route(cfg, "x.example.com", "/") == "team/shop:80"
    else:
        assert parent["conditions"][1]["reason"] == "RefNotPermitted"
        assert parent["conditions"][1]["message"] == ('backendRef to Service "team/shop" is not permitted by any '
                                                      'ReferenceGrant in namespace "team"')
        assert route(cfg, "x.example.com", "/") == "500"


def test_a_certificate_in_another_namespace_needs_a_reference_grant_there():
    cert, key = self_signed("secure.example.com")
    secrets = [tls_secret("tls", cert, key, namespace="team")]
    gw = gateway(listener("https", "HTTPS", 443, hostname="secure.example.com",
                          tls={"certificateRefs": [{"name": "tls", "namespace": "team"}]}))
    r = http_route("r", rule_(match("/"), backends=[ref("web")]))
    cfg, st = decide(gw, r, secrets=secrets)
    [ls] = st.gateways["default/gw"]["listeners"]
    assert conds(ls)["ResolvedRefs"] == ("False", "RefNotPermitted")
    assert [c["message"] for c in ls["conditions"] if c["type"] == "ResolvedRefs"] == [
        'certificateRef to Secret "team/tls" is not permitted by any ReferenceGrant in namespace "team"']
    assert not any(s.host == "secure.example.com" for s in cfg.servers)
    cfg, st = decide(gw, r, secrets=secrets, grants=(grant("team", [(G, "Gateway", NS)], [("", "Secret", "tls")]),))
    assert conds(st.gateways["default/gw"]["listeners"][0])["ResolvedRefs"] == ("True", "ResolvedRefs")
    server = next(s for s in cfg.servers if s.host == "secure.example.com")
    assert server.tls_secret == "team/tls" and "team/tls" in cfg.certificates


def test_https_listener_terminates_with_the_secrets_certificate():
    cert, key = self_signed("secure.example.com")
    cfg, st = decide(gateway(listener("https", "HTTPS", 443, hostname="secure.example.com",
                                      tls={"certificateRefs": [{"name": "tls"}]})),
                     http_route("r", rule_(match("/"), backends=[ref("web")])), secrets=[tls_secret("tls", cert, key)])
    assert conds(st.gateways["default/gw"]["listeners"][0])["ResolvedRefs"] == ("True", "ResolvedRefs")
    server = next(s for s in cfg.servers if s.host == "secure.example.com")
    assert server.tls_secret == "default/tls" and "default/tls" in cfg.certificates


def test_requested_addresses_are_unsupported_and_nothing_of_that_gateway_is_served():
    cfg, st = decide(gateway(listener(), addresses=[{"type": "IPAddress", "value": "10.0.0.1"}]),
                     http_route("r", rule_(match("/"), backends=[ref("web")])))
    gw = st.gateways["default/gw"]
    assert conds(gw) == {"Accepted": ("False", "UnsupportedAddress"), "Programmed": ("False", "Invalid")}
    assert conds(gw["listeners"][0])["Programmed"] == ("False", "Invalid")
    assert conds(st.routes["default/r"][0])["Accepted"] == ("False", "NotAllowedByListeners")
    assert cfg.routes == ()


def test_an_unsupported_route_still_reports_its_references():
    _, st = decide(gateway(listener()), http_route("r", rule_(match("/"), filters=[{"type": "RequestMirror"}],
                                                             backends=[ref("nowhere")])))
    assert conds(st.routes["default/r"][0]) == {"Accepted": ("False", "UnsupportedValue"),
                                                "ResolvedRefs": ("False", "BackendNotFound")}


def test_without_an_address_the_gateway_is_accepted_but_not_programmed():
    _, st = decide(gateway(listener()), addresses=[])
    assert conds(st.gateways["default/gw"]) == {"Accepted": ("True", "Accepted"),
                                                "Programmed": ("False", "AddressNotAssigned")}


def test_gateways_of_other_classes_and_parents_of_other_controllers_get_nothing_from_us():
    cfg, st = decide(gateway(listener(), cls="other"), http_route("r", rule_(match("/"), backends=[ref("web")])))
    assert st.gateways == {} and st.routes == {} and cfg.routes == ()
    _, st = decide(gateway(listener()), classes=[dict(CLASS, spec={"controllerName": "kubepy.io/gateway",
                                                                   "parametersRef": {"group": "", "kind": "ConfigMap",
                                                                                     "name": "p"}})])
    assert conds(st.classes["kubepy"])["Accepted"] == ("False", "InvalidParameters") and st.gateways == {}


@pytest.mark.parametrize("allowed, namespace, accepted", [
    (None, "team", ("False", "NotAllowedByListeners")),               # Same, the default
    ({"namespaces": {"from": "All"}}, "team", ("True", "Accepted")),
    ({"namespaces": {"from": "Selector", "selector": {"matchLabels": {"shared": "yes"}}}}, "team", ("True", "Accepted")),
    ({"namespaces": {"from": "Selector", "selector": {"matchLabels": {"shared": "no"}}}}, "team",
     ("False", "NotAllowedByListeners")),
])
def test_allowed_routes_namespaces(allowed, namespace, accepted):
    lst = listener(**({"allowedRoutes": allowed} if allowed else {}))
    services = [*SERVICES, service("web", ("http", 80), namespace="team")]
    slices = [*SLICES, endpoint_slice("web", "http", 8080, "10.244.3.3", namespace="team")]
    _, st = decide(gateway(lst), http_route("r", rule_(match("/"), backends=[ref("web")]), namespace=namespace,
                                            parents=[{"name": "gw", "namespace": NS}]),
                   services=services, slices=slices)
    assert conds(st.routes["team/r"][0])["Accepted"] == accepted


def test_section_name_and_port_pick_listeners():
    gw = gateway(listener("one", hostname="one.example.com"), listener("two", hostname="two.example.com"))
    cfg, st = decide(gw, http_route("r", rule_(match("/"), backends=[ref("web")]),
                                    parents=[{"name": "gw", "sectionName": "two"}, {"name": "gw", "sectionName": "no"}]))
    assert [conds(p)["Accepted"] for p in st.routes["default/r"]] == [("True", "Accepted"),
                                                                       ("False", "NoMatchingParent")]
    assert [s.host for s in cfg.servers if s.host] == ["two.example.com"]
    assert [ls["attachedRoutes"] for ls in st.gateways["default/gw"]["listeners"]] == [0, 1]


def test_the_older_route_wins_a_path_both_claim():
    older = http_route("older", rule_(match("/"), backends=[ref("api")]), created=1)
    newer = http_route("newer", rule_(match("/"), backends=[ref("web")]), created=2)
    cfg, _ = decide(gateway(listener()), newer, older)
    assert route(cfg, "x", "/a") == "default/api:80"


def test_condition_times_stay_while_the_status_does_and_other_controllers_parents_stay():
    old = [{"type": "Accepted", "status": "True", "lastTransitionTime": "T0"},
           {"type": "ResolvedRefs", "status": "True", "lastTransitionTime": "T0"}]
    new = [{"type": "Accepted", "status": "True"}, {"type": "ResolvedRefs", "status": "False"}]
    assert [c["lastTransitionTime"] for c in merge_conditions(new, old, "T1")] == ["T0", "T1"]
    theirs = {"controllerName": "example.com/gateway", "parentRef": {"name": "x"}}
    mine = {"controllerName": "kubepy.io/gateway", "parentRef": {"name": "gw"}}
    assert route_parents([mine], [theirs, dict(mine, conditions=[])]) == [theirs, mine]


# -- the CRDs ------------------------------------------------------------------

def crds() -> dict[str, dict[str, Any]]:
    return {d["spec"]["names"]["kind"]: d for d in yaml.safe_load_all((GWAPI / "crds.yaml").read_text())}


def test_the_crds_are_valid_and_structural():
    got = crds()
    assert sorted(got) == ["Gateway", "GatewayClass", "HTTPRoute", "ReferenceGrant"]
    for crd in got.values():
        served = [("v1beta1", True, True, None)] if crd["spec"]["names"]["kind"] == "ReferenceGrant" else \
            [("v1", True, True, {"status": {}})]
        crd = copy.deepcopy(crd)
        default_crd(crd, None)
        errs = v.Errs()
        validate_crd(crd, None, errs)
        assert errs == [], crd["metadata"]["name"]
        assert [(x["name"], x["served"], x["storage"], x.get("subresources")) for x in crd["spec"]["versions"]] == \
            served
        assert crd["spec"]["group"] == G


def _schema(kind: str) -> CustomResourceSchema:
    return CustomResourceSchema(crds()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_the_schemas_default_as_upstream_does():
    route_obj = {"apiVersion": f"{G}/v1", "kind": "HTTPRoute", "metadata": {"name": "r"},
                 "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}
    schema = _schema("HTTPRoute")
    schema.default(route_obj)
    spec = route_obj["spec"]
    assert spec["parentRefs"] == [{"group": G, "kind": "Gateway", "name": "gw"}]
    assert spec["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert spec["rules"][0]["backendRefs"] == [{"group": "", "kind": "Service", "name": "web", "port": 80, "weight": 1}]
    assert schema.validate(route_obj, None) == []
    gw = {"apiVersion": f"{G}/v1", "kind": "Gateway", "metadata": {"name": "gw"},
          "spec": {"gatewayClassName": "kubepy", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}}
    schema = _schema("Gateway")
    schema.default(gw)
    assert gw["spec"]["listeners"][0]["allowedRoutes"] == {"namespaces": {"from": "Same"}}
    assert schema.validate(gw, None) == []
    bad = copy.deepcopy(gw)
    bad["spec"]["listeners"][0]["port"] = 0
    assert schema.validate(bad, None) != []


def test_the_gatewayclass_manifest_names_our_controller():
    gc = yaml.safe_load((GWAPI / "gatewayclass.yaml").read_text())
    assert (gc["apiVersion"], gc["kind"], gc["metadata"]["name"], gc["spec"]["controllerName"]) == \
        (f"{G}/v1", "GatewayClass", "kubepy", "kubepy.io/gateway")
    assert isinstance(decide()[0], ProxyConfig)


def test_a_gatewayclass_controller_name_is_immutable():
    schema = _schema("GatewayClass")
    old = {"apiVersion": f"{G}/v1", "kind": "GatewayClass", "metadata": {"name": "x"},
           "spec": {"controllerName": "kubepy.io/gateway"}}
    new = copy.deepcopy(old)
    new["spec"]["controllerName"] = "example.com/other"
    assert schema.validate(old, None) == [] and schema.validate(copy.deepcopy(old), old) == []
    assert [e["field"] for e in schema.validate(new, old)] == ["spec.controllerName"]


def test_kubectl_get_gateway_shows_class_address_and_programmed():
    import datetime as dt

    from kubepy.kinds.apiextensions.customresource import kinds_for
    crd = crds()["Gateway"]
    default_crd(crd, None)
    [kind] = kinds_for(crd)
    _, st = decide(gateway(listener()))
    obj = dict(gateway(listener()), status=st.gateways["default/gw"])
    now = dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC)
    assert [c["name"] for c in kind.printer.columns] == ["Name", "Class", "Address", "Programmed", "Age"]
    assert kind.printer.cells(obj, now) == ["gw", "kubepy", "192.168.50.240", "True", "60s"]
