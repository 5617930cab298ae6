"""The pure parts of pods/services/nodes proxy: names, endpoints, rewriting."""

from __future__ import annotations

import random

import pytest

from kubepy.api import errors
from kubepy.api.httpproxy import parse_proxy_name, pod_port, rewrite_html, rewrite_location, service_backend


@pytest.mark.parametrize("raw,want", [
    ("web", ("http", "web", "")), ("web:80", ("http", "web", "80")), ("web:http", ("http", "web", "http")),
    ("https:web:8443", ("https", "web", "8443")), ("https:web", ("https", "web", "")),
])
def test_parse_proxy_name(raw, want):
    assert parse_proxy_name(raw) == want


def test_parse_proxy_name_refuses():
    for raw in ("ftp:web:21", "a:b:c:d"):
        with pytest.raises(errors.BadRequest):
            parse_proxy_name(raw)


POD = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "ports": [
    {"name": "http", "containerPort": 8080}]}]}}


def test_pod_port():
    assert pod_port(POD, "") == 80 and pod_port(POD, "9000") == 9000 and pod_port(POD, "http") == 8080
    with pytest.raises(errors.BadRequest, match='no port named "grpc"'):
        pod_port(POD, "grpc")


SVC = {"metadata": {"name": "web", "namespace": "shop"},
       "spec": {"ports": [{"name": "http", "port": 80}, {"name": "admin", "port": 9000}]}}
EPS = {"subsets": [{"addresses": [{"ip": "10.244.1.2", "targetRef": {"kind": "Pod", "name": "web-a",
                                                                     "namespace": "shop"}}],
                    "notReadyAddresses": [{"ip": "10.244.2.2", "targetRef": {"kind": "Pod", "name": "web-b"}}],
                    "ports": [{"name": "http", "port": 8080}, {"name": "admin", "port": 9090}]}]}


def test_service_backend():
    rng = random.Random(1)
    assert service_backend(SVC, EPS, "http", rng) == ("shop", "web-a", 8080)
    assert service_backend(SVC, EPS, "9000", rng) == ("shop", "web-a", 9090)   # by service port number
    with pytest.raises(errors.BadRequest, match="several ports"):
        service_backend(SVC, EPS, "", rng)
    with pytest.raises(errors.NotFound):
        service_backend(SVC, EPS, "nope", rng)
    with pytest.raises(errors.ServiceUnavailable, match='no endpoints available for service "web"'):
        service_backend(SVC, {"subsets": [{"notReadyAddresses": EPS["subsets"][0]["notReadyAddresses"],
                                           "ports": EPS["subsets"][0]["ports"]}]}, "http", rng)


def test_rewrite_html_and_location():
    prefix = "/api/v1/namespaces/shop/services/web:80/proxy"
    html = ('<a href="/docs">d</a> <img src=\'/i.png\'> <a href="rel">r</a> <a href="//cdn/x">c</a> '
            '<form action=/post>')
    assert rewrite_html(html, prefix) == (
        f'<a href="{prefix}/docs">d</a> <img src=\'{prefix}/i.png\'> <a href="rel">r</a> '
        f'<a href="//cdn/x">c</a> <form action={prefix}/post>')
    assert rewrite_location("/login?next=/", prefix, "10.244.1.2:8080") == f"{prefix}/login?next=/"
    assert rewrite_location("http://10.244.1.2:8080/a", prefix, "10.244.1.2:8080") == f"{prefix}/a"
    assert rewrite_location("https://example.org/a", prefix, "10.244.1.2:8080") == "https://example.org/a"
