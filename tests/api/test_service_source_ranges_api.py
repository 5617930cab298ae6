"""A LoadBalancer's source ranges in process, against the aiohttp app: upstream's paths and messages.

The field ``spec.loadBalancerSourceRanges``, or when it is empty the annotation
``service.beta.kubernetes.io/load-balancer-source-ranges``: only on LoadBalancers, each a CIDR.
"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.api.test_semantics import NS, api, call  # noqa: F401 - api is a fixture

SERVICES = f"/api/v1/namespaces/{NS}/services"
ANNOTATION = "service.beta.kubernetes.io/load-balancer-source-ranges"
CIDR = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
ONLY_LB = "Forbidden: may only be used when `type` is 'LoadBalancer'"


def service(name: str, type_: str = "LoadBalancer", annotations: dict[str, str] | None = None,
            **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"annotations": annotations} if annotations else {})}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"type": type_, "selector": {"app": name}, "ports": [{"port": 80}], **spec}}


def causes(body: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["field"], c["message"]) for c in body["details"]["causes"]}


async def test_invalid_ranges_are_refused_with_upstreams_messages(api: TestClient) -> None:
    body = await call(api, "POST", SERVICES, service(
        "bad", loadBalancerSourceRanges=["10.0.0.0/8", "nope", "10.0.0.1", "10.0.0.0/255.0.0.0", "10.0.0.0/33"]),
        status=422)
    assert body["reason"] == "Invalid" and body["message"].startswith('Service "bad" is invalid: ')
    assert causes(body) == {
        ("spec.LoadBalancerSourceRanges[1]", f'Invalid value: "nope": {CIDR}'),
        ("spec.LoadBalancerSourceRanges[2]", f'Invalid value: "10.0.0.1": {CIDR}'),
        ("spec.LoadBalancerSourceRanges[3]", f'Invalid value: "10.0.0.0/255.0.0.0": {CIDR}'),
        ("spec.LoadBalancerSourceRanges[4]", f'Invalid value: "10.0.0.0/33": {CIDR}'),
    }
    body = await call(api, "POST", SERVICES, service("cip", "ClusterIP", loadBalancerSourceRanges=["10.0.0.0/8"]),
                      status=422)
    assert causes(body) == {("spec.LoadBalancerSourceRanges", ONLY_LB)}
    path = f"metadata.annotations[{ANNOTATION}]"
    body = await call(api, "POST", SERVICES, service("ann", annotations={ANNOTATION: "10.0.0.0/8, 300.1.0.0/16"}),
                      status=422)
    assert causes(body) == {(path, f'Invalid value: "300.1.0.0/16": {CIDR}')}
    body = await call(api, "POST", SERVICES, service("ann-cip", "ClusterIP", annotations={ANNOTATION: ""}),
                      status=422)
    assert causes(body) == {(path, ONLY_LB)}


async def test_valid_ranges_are_kept_as_written(api: TestClient) -> None:
    # Space padding and host bits are tolerated, as upstream (the proxy trims and masks).
    made = await call(api, "POST", SERVICES, service(
        "ok", loadBalancerSourceRanges=[" 10.1.2.3/16", "2001:db8::/64"]), status=201)
    assert made["spec"]["loadBalancerSourceRanges"] == [" 10.1.2.3/16", "2001:db8::/64"]
    # The field set: an annotation beside it is not checked (upstream reads one or the other).
    await call(api, "POST", SERVICES, service("both", annotations={ANNOTATION: "junk"},
                                              loadBalancerSourceRanges=["10.0.0.0/8"]), status=201)
    await call(api, "POST", SERVICES, service("ann-ok", annotations={ANNOTATION: "10.0.0.0/8,192.168.0.0/16"}),
               status=201)
    # An update to an invalid range is refused too.
    body = await call(api, "PATCH", f"{SERVICES}/ok", {"spec": {"loadBalancerSourceRanges": ["x"]}},
                      content_type="application/merge-patch+json", status=422)
    assert causes(body) == {("spec.LoadBalancerSourceRanges[0]", f'Invalid value: "x": {CIDR}')}
