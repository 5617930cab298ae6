"""EndpointSlice (discovery.k8s.io/v1): defaults, validation and ``kubectl get`` cells, as upstream's."""

from __future__ import annotations

import datetime as dt

import pytest

from kubepy.kinds import by_kind
from kubepy.kinds.validation import Errs

KIND = by_kind("discovery.k8s.io", "EndpointSlice")


def check(obj, old=None):
    errs = Errs()
    KIND.strategy.default(obj, old)
    KIND.strategy.validate(obj, old, errs)
    return [(e["field"], e["message"]) for e in errs]


def good(**over):
    return {"metadata": {"name": "web-abc"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.2"], "conditions": {"ready": True}, "nodeName": "n1"}],
            "ports": [{"name": "http", "port": 80}], **over}


def test_defaults_and_a_valid_slice():
    obj = good()
    assert check(obj) == []
    assert obj["ports"] == [{"name": "http", "port": 80, "protocol": "TCP"}]


@pytest.mark.parametrize("obj, field, message", [
    (good(addressType=None), "addressType", "Required value"),
    (good(addressType="IPv5"), "addressType", 'Unsupported value: "IPv5": supported values: "FQDN", "IPv4", "IPv6"'),
    (good(endpoints=[{"addresses": []}]), "endpoints[0].addresses", "Required value: must contain at least 1 address"),
    (good(endpoints=[{"addresses": ["fd00::1"]}]), "endpoints[0].addresses[0]",
     'Invalid value: "fd00::1": must be a valid IPv4 address'),
    (good(endpoints=[{"addresses": ["127.0.0.1"]}]), "endpoints[0].addresses[0]",
     'Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)'),
    (good(endpoints=[{"addresses": [f"10.0.0.{i}" for i in range(1, 102)]}]), "endpoints[0].addresses",
     "Too many: 101: must have at most 100 items"),
    (good(ports=[{"name": "a", "protocol": "TCP"}, {"name": "a", "protocol": "UDP"}]), "ports[1].name",
     'Duplicate value: "a"'),
    (good(ports=[{"name": "Bad_Name"}]), "ports[0].name", None),
    (good(ports=[{"protocol": "ICMP"}]), "ports[0].protocol", None),
    (good(endpoints=[{"addresses": ["10.0.0.1"], "hostname": "Not A Label"}]), "endpoints[0].hostname", None),
    (good(endpoints=[{"addresses": [10]}]), "endpoints[0].addresses[0]", "Invalid value: 10: must be a string"),
    (good(ports=[{"name": 5}]), "ports[0].name", "Invalid value: 5: must be a string"),
    (good(endpoints=[{"addresses": ["10.0.0.1"], "nodeName": ["n1"]}]), "endpoints[0].nodeName", None),
])
def test_invalid(obj, field, message):
    problems = check(obj)
    assert field in [f for f, _ in problems], problems
    if message is not None:
        assert message in [m for f, m in problems if f == field]


def test_address_type_is_immutable():
    old = good()
    assert ("addressType", 'Invalid value: "IPv6": field is immutable') in check(good(addressType="IPv6",
                                                                                     endpoints=[]), old)


def test_printer_cells_like_kubectl():
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    obj = good(endpoints=[{"addresses": [f"10.0.0.{i}"]} for i in range(1, 6)],
               ports=[{"name": "a", "port": 80}, {"name": "b"}])
    obj["metadata"]["creationTimestamp"] = "2023-12-31T23:59:00Z"
    assert KIND.printer.cells(obj, now) == ["web-abc", "IPv4", "80,b", "10.0.0.1,10.0.0.2,10.0.0.3 + 2 more...", "60s"]
    assert KIND.printer.cells(good(endpoints=[], ports=[]), now)[2:4] == ["<unset>", "<unset>"]
    assert [c["name"] for c in KIND.printer.columns] == ["Name", "AddressType", "Ports", "Endpoints", "Age"]
