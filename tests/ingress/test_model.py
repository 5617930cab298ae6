"""model: Ingresses + Services + EndpointSlices + Secrets → ProxyConfig (pure), table-driven.

Each routing case builds the configuration and asks where a request goes, with a small
interpreter of how nginx picks a server (exact name, then the one-label wildcard regex,
then the default server) and a location (an exact ``=`` match, else the longest ``^~``
prefix).  tests/ingress/test_nginx.py runs the same kind of requests through a real nginx."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kubepy.ingress.model import (INVALID_SECRET, PORT_NOT_FOUND, SECRET_NOT_FOUND, SERVICE_NOT_FOUND,
                                  UNSUPPORTED_BACKEND, ProxyConfig, build, server_name)
from tests.ingress.cases import (KUBEPY_CLASS, OTHER_CLASS, backend, endpoint_slice, ingress, path, rule, self_signed,
                                 service, tls_secret)

SERVICES = [service("web", ("http", 80)), service("api", ("http", 80)), service("docs", ("web", 8080)),
            service("empty", ("http", 80)), service("ext", ("http", 80), type_="ExternalName")]
SLICES = [endpoint_slice("web", "http", 8080, "10.244.0.2", "10.244.1.2", not_ready=("10.244.2.9",)),
          endpoint_slice("api", "http", 9090, "10.244.1.3"),
          endpoint_slice("docs", "web", 3000, "10.244.2.4")]


def config(*ingresses: dict[str, Any], secrets: list[dict[str, Any]] | None = None,
           classes: list[dict[str, Any]] | None = None) -> ProxyConfig:
    return build(ingresses, classes=[KUBEPY_CLASS, OTHER_CLASS] if classes is None else classes,
                 services=SERVICES, slices=SLICES, secrets=secrets or [])


def route(cfg: ProxyConfig, host: str, uri: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> str:
    """"default/web:80", or the status code nginx answers with ("404", "503"); ``uri`` may have a query."""
    uri, _, qs = uri.partition("?")
    args = dict(a.partition("=")[::2] for a in qs.split("&") if a)
    have = {k.lower(): v for k, v in (headers or {}).items()}
    server = next((s for s in cfg.servers if s.host == host), None)
    if server is None:
        server = next((s for s in cfg.servers if s.host.startswith("*.")
                       and re.fullmatch(server_name(s.host, s.any_depth)[1:], host)), None)
    if server is None:
        server = next(s for s in cfg.servers if s.host == "")
    exact = [loc for loc in server.locations if loc.modifier == "=" and loc.path == uri]
    prefixes = [loc for loc in server.locations if loc.modifier == "^~" and uri.startswith(loc.path)]
    loc = exact[0] if exact else max(prefixes, key=lambda loc: len(loc.path))

    def holds(got: str | None, kind: str, value: str) -> bool:
        return got is not None and (re.fullmatch(value, got) is not None if kind == "RegularExpression"
                                    else got == value)

    backend = next((c.backend for c in loc.choices
                    if (not c.match.method or c.match.method == method)
                    and all(holds(have.get(n), t, v) for n, t, v in c.match.headers)
                    and all(holds(args.get(n), t, v) for n, t, v in c.match.query)), loc.backend)
    if backend.upstream is None:
        return str(backend.status)
    return backend.service


TWO_BY_PATH = ingress("site", rule("a.example.com", path("/", "web"), path("/api", "api"),
                                   path("/api/v1/exact", "docs", "Exact", "web"),
                                   path("/static/", "docs", "Prefix", 8080)))

ROUTING = [
    # (name, ingresses, host, uri, expected)
    ("prefix / catches all", [TWO_BY_PATH], "a.example.com", "/anything", "default/web:80"),
    ("prefix matches the element itself", [TWO_BY_PATH], "a.example.com", "/api", "default/api:80"),
    ("prefix matches below the element", [TWO_BY_PATH], "a.example.com", "/api/v1/users", "default/api:80"),
    ("prefix is by element, not by string", [TWO_BY_PATH], "a.example.com", "/apix", "default/web:80"),
    ("exact beats prefix", [TWO_BY_PATH], "a.example.com", "/api/v1/exact", "default/docs:web"),
    ("exact is exact", [TWO_BY_PATH], "a.example.com", "/api/v1/exact/more", "default/api:80"),
    ("trailing slash of a prefix is ignored", [TWO_BY_PATH], "a.example.com", "/static", "default/docs:8080"),
    ("longest prefix wins", [ingress("i", rule("h.example.com", path("/a", "web"), path("/a/b", "api")))],
     "h.example.com", "/a/b/c", "default/api:80"),
    ("longest prefix: shorter one for a sibling", [ingress("i", rule("h.example.com", path("/a", "web"),
                                                                     path("/a/b", "api")))],
     "h.example.com", "/a/bc", "default/web:80"),
    ("no path matches and no default backend: 404", [ingress("i", rule("h.example.com", path("/a", "web")))],
     "h.example.com", "/b", "404"),
    ("unknown host: 404", [TWO_BY_PATH], "nobody.example.com", "/", "404"),
    ("wildcard host matches one label", [ingress("i", rule("*.example.com", path("/", "api")))],
     "x.example.com", "/", "default/api:80"),
    ("wildcard host does not match two labels", [ingress("i", rule("*.example.com", path("/", "api")))],
     "x.y.example.com", "/", "404"),
    ("wildcard host does not match the bare domain", [ingress("i", rule("*.example.com", path("/", "api")))],
     "example.com", "/", "404"),
    ("exact host beats wildcard", [ingress("i", rule("*.example.com", path("/", "api")),
                                           rule("a.example.com", path("/", "web")))],
     "a.example.com", "/", "default/web:80"),
    ("rule without host serves every host", [ingress("i", rule(None, path("/", "api")))],
     "whatever.test", "/x", "default/api:80"),
    ("default backend for unknown hosts", [ingress("i", rule("h.example.com", path("/a", "web")),
                                                   default=backend("api"))],
     "other.example.com", "/", "default/api:80"),
    ("default backend for the ingress's hosts' unmatched paths",
     [ingress("i", rule("h.example.com", path("/a", "web")), default=backend("api"))],
     "h.example.com", "/zzz", "default/api:80"),
    ("ImplementationSpecific is a string prefix", [ingress("i", rule("h.example.com",
                                                                     path("/img", "web", "ImplementationSpecific")))],
     "h.example.com", "/imgs/1.png", "default/web:80"),
    ("service port by name", [ingress("i", rule("h.example.com", path("/", "docs", port="web")))],
     "h.example.com", "/", "default/docs:web"),
    ("no ready endpoints: 503", [ingress("i", rule("h.example.com", path("/", "empty")))],
     "h.example.com", "/", "503"),
    ("missing service: 503", [ingress("i", rule("h.example.com", path("/", "gone")))], "h.example.com", "/", "503"),
    ("older ingress wins a conflict", [ingress("new", rule("h.example.com", path("/", "api")), created=10),
                                       ingress("old", rule("h.example.com", path("/", "web")), created=1)],
     "h.example.com", "/", "default/web:80"),
    ("exact of a newer ingress beats prefix of an older", [
        ingress("old", rule("h.example.com", path("/a", "web")), created=1),
        ingress("new", rule("h.example.com", path("/a", "api", "Exact")), created=10)],
     "h.example.com", "/a", "default/api:80"),
    ("paths of two ingresses on one host merge", [ingress("one", rule("h.example.com", path("/a", "web"))),
                                                  ingress("two", rule("h.example.com", path("/b", "api")))],
     "h.example.com", "/b/1", "default/api:80"),
    ("another class's ingress is not served", [ingress("theirs", rule("h.example.com", path("/", "web")),
                                                       cls="other")], "h.example.com", "/", "404"),
    ("a class-less ingress is ours while our class is the default",
     [ingress("none", rule("h.example.com", path("/", "web")), cls=None)], "h.example.com", "/", "default/web:80"),
]


@pytest.mark.parametrize("name,ingresses,host,uri,expected", ROUTING, ids=[c[0] for c in ROUTING])
def test_routing(name: str, ingresses: list[dict[str, Any]], host: str, uri: str, expected: str) -> None:
    assert route(config(*ingresses), host, uri) == expected


def test_upstreams_are_the_ready_pod_ips_with_the_slice_port() -> None:
    cfg = config(TWO_BY_PATH)
    assert {u.name: u.servers for u in cfg.upstreams} == {
        "default_web_80": ("10.244.0.2:8080", "10.244.1.2:8080"),  # 10.244.2.9 is not ready
        "default_api_80": ("10.244.1.3:9090",),
        "default_docs_8080": ("10.244.2.4:3000",),
    }
    assert cfg.ingresses == ("default/site",)
    assert cfg.problems == ()


def test_a_class_less_ingress_is_not_ours_without_a_default_class() -> None:
    plain = {**KUBEPY_CLASS, "metadata": {"name": "kubepy"}}
    cfg = config(ingress("none", rule("h.example.com", path("/", "web")), cls=None), classes=[plain])
    assert cfg.ingresses == ()
    legacy = ingress("legacy", rule("h.example.com", path("/", "web")), cls=None)
    legacy["metadata"]["annotations"] = {"kubernetes.io/ingress.class": "kubepy"}
    assert config(legacy, classes=[plain]).ingresses == ("default/legacy",)


def test_bad_references_are_problems_of_their_ingress_only() -> None:
    good = ingress("good", rule("g.example.com", path("/", "web")))
    bad = ingress("bad", rule("b.example.com", path("/a", "gone"), path("/b", "web", port=81),
                              path("/c", "docs", port="nope"), path("/d", "ext")),
                  tls=[{"hosts": ["b.example.com"], "secretName": "missing"}])
    bad["spec"]["rules"][0]["http"]["paths"].append(
        {"path": "/e", "pathType": "Prefix", "backend": {"resource": {"kind": "Bucket", "name": "b"}}})
    cfg = config(good, bad)
    assert {(p.ingress, p.reason, p.message) for p in cfg.problems} == {
        ("default/bad", SERVICE_NOT_FOUND, 'Service "default/gone" not found'),
        ("default/bad", PORT_NOT_FOUND, 'Service "default/web" has no port 81'),
        ("default/bad", PORT_NOT_FOUND, "Service \"default/docs\" has no port 'nope'"),
        ("default/bad", UNSUPPORTED_BACKEND,
         'Service "default/ext" is of type ExternalName, which kubepy.io/ingress does not proxy to'),
        ("default/bad", UNSUPPORTED_BACKEND,
         "resource backend Bucket/b is not supported by kubepy.io/ingress: only Service backends are"),
        ("default/bad", SECRET_NOT_FOUND,
         'Secret "default/missing" not found: its hosts are served with the default certificate'),
    }
    assert route(cfg, "g.example.com", "/") == "default/web:80"
    assert [route(cfg, "b.example.com", p) for p in ("/a", "/b", "/c", "/d", "/e")] == ["503"] * 5


def test_tls_hosts_get_their_secrets_certificate() -> None:
    cert, key = self_signed("a.example.com", "*.wild.example.com")
    other_cert, other_key = self_signed("b.example.com")
    cfg = config(ingress("site", rule("a.example.com", path("/", "web")), rule("b.example.com", path("/", "web")),
                         rule("x.wild.example.com", path("/", "web")), rule("plain.example.com", path("/", "web")),
                         tls=[{"hosts": ["a.example.com", "x.wild.example.com"], "secretName": "a-tls"},
                              {"hosts": ["b.example.com"], "secretName": "b-tls"},
                              {"hosts": ["c.example.com"], "secretName": "opaque"},
                              {"hosts": ["d.example.com"], "secretName": "mismatched"}]),
                 secrets=[tls_secret("a-tls", cert, key), tls_secret("b-tls", other_cert, other_key),
                          tls_secret("opaque", cert, key, type_="Opaque"),
                          tls_secret("mismatched", cert, other_key)])
    assert {s.host: s.tls_secret for s in cfg.servers} == {
        "": None, "a.example.com": "default/a-tls", "b.example.com": "default/b-tls",
        "x.wild.example.com": "default/a-tls", "plain.example.com": None}
    assert set(cfg.certificates) == {"default/a-tls", "default/b-tls"}
    assert cfg.certificates["default/a-tls"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY-----" in cfg.certificates["default/a-tls"]
    assert {(p.reason, p.message.split(":")[0]) for p in cfg.problems} == {
        (INVALID_SECRET, "Secret \"default/opaque\" is of type 'Opaque', not 'kubernetes.io/tls'"),
        (INVALID_SECRET, 'Secret "default/mismatched" has a private key that does not match its certificate'),
    }


@pytest.mark.parametrize("host,name", [("", "_"), ("a.example.com", "a.example.com"),
                                       ("*.example.com", "~^[^.]+\\.example\\.com$"),
                                       ("*.my-app.example.com", "~^[^.]+\\.my-app\\.example\\.com$")])
def test_server_names(host: str, name: str) -> None:
    assert server_name(host) == name
