"""NetworkPolicy in process, against the aiohttp app: upstream's defaults, messages and table columns."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.api.test_semantics import NS, api, call  # noqa: F401 - api is a fixture

NETPOLS = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"


def netpol(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name},
            "spec": spec}


async def test_policy_types_and_protocols_are_defaulted_as_upstream(api: TestClient) -> None:
    ingress_only = await call(api, "POST", NETPOLS, netpol("deny"), status=201)
    assert ingress_only["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    both = await call(api, "POST", NETPOLS, netpol(
        "both", podSelector={"matchLabels": {"app": "web"}},
        ingress=[{"ports": [{"port": 80}]}], egress=[{"ports": [{"port": 53, "protocol": "UDP"}]}]), status=201)
    assert both["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert both["spec"]["ingress"][0]["ports"] == [{"port": 80, "protocol": "TCP"}]
    egress_only = await call(api, "POST", NETPOLS, netpol("eg", podSelector={}, policyTypes=["Egress"]), status=201)
    assert egress_only["spec"]["policyTypes"] == ["Egress"]


async def test_bad_policies_are_refused_with_upstreams_messages(api: TestClient) -> None:
    body = await call(api, "POST", NETPOLS, netpol(
        "bad", podSelector={},
        ingress=[{"from": [{}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16", "10.0.0.0/8"]},
                                "podSelector": {}}],
                  "ports": [{"protocol": "ICMP"}, {"port": 0}, {"port": 80, "endPort": 79},
                            {"port": "http", "endPort": 90}, {"endPort": 90}]}],
        egress=[{"to": [{"ipBlock": {"cidr": "nope"}}]}],
        policyTypes=["Ingress", "Sideways"]), status=422)
    causes = {(c["field"], c["message"]) for c in body["details"]["causes"]}
    assert causes == {
        ("spec.ingress[0].ports[0].protocol", 'Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"'),
        ("spec.ingress[0].ports[1].port", "Invalid value: 0: must be between 1 and 65535, inclusive"),
        ("spec.ingress[0].ports[2].endPort", "Invalid value: 80: must be greater than or equal to `port`"),
        ("spec.ingress[0].ports[3].endPort", "Invalid value: 90: may not be specified when `port` is non-numeric"),
        ("spec.ingress[0].ports[4].endPort", "Invalid value: 90: may not be specified when `port` is not specified"),
        ("spec.ingress[0].from[0]", "Required value: must specify a peer"),
        ("spec.ingress[0].from[1].ipBlock.except[0]", 'Invalid value: "11.0.0.0/16": must be a strict subset of `cidr`'),
        ("spec.ingress[0].from[1].ipBlock.except[1]", 'Invalid value: "10.0.0.0/8": must be a strict subset of `cidr`'),
        ("spec.ingress[0].from[1]", "Forbidden: may not specify both ipBlock and another peer"),
        ("spec.egress[0].to[0].ipBlock.cidr",
         'Invalid value: "nope": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)'),
        ("spec.policyTypes[1]", 'Unsupported value: "Sideways": supported values: "Ingress", "Egress"'),
    }
    assert body["message"].startswith('NetworkPolicy.networking.k8s.io "bad" is invalid: ')
    too_many = await call(api, "POST", NETPOLS, netpol("many", podSelector={},
                                                       policyTypes=["Ingress", "Egress", "Ingress"]), status=422)
    assert too_many["details"]["causes"][0]["field"] == "spec.policyTypes"


async def test_kubectl_get_netpol_columns(api: TestClient) -> None:
    await call(api, "POST", NETPOLS, netpol("web", podSelector={"matchLabels": {"app": "web"}}), status=201)
    await call(api, "POST", NETPOLS, netpol("all"), status=201)
    resp = await api.get(NETPOLS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    table = await resp.json()
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Pod-Selector", "Age"]
    assert {r["cells"][0]: r["cells"][1] for r in table["rows"]} == {"web": "app=web", "all": "<none>"}
