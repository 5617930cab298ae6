"""kubepy.meta.services: CIDRs read as Go's ParseCIDRSloppy, and which ranges restrict a LoadBalancer."""

from __future__ import annotations

import pytest

from kubepy.meta.services import SOURCE_RANGES_ANNOTATION, parse_cidr, source_ranges


@pytest.mark.parametrize(("text", "network"), [
    ("10.0.0.0/8", "10.0.0.0/8"),
    ("10.1.2.3/8", "10.0.0.0/8"),  # host bits allowed, cleared
    ("010.001.0.0/16", "10.1.0.0/16"),  # sloppy: leading zeros
    ("10.0.0.0/08", "10.0.0.0/8"),
    ("2001:db8::1/64", "2001:db8::/64"),
    ("0.0.0.0/0", "0.0.0.0/0"),
    ("10.0.0.1", None),  # an address is not a CIDR
    ("10.0.0.0/255.0.0.0", None),  # no netmask form
    ("10.0.0.0/33", None),
    ("10.0.0.0/+8", None),
    ("256.0.0.0/8", None),
    ("10.0.0.0/8/8", None),
    ("", None),
    (None, None),
])
def test_parse_cidr(text, network) -> None:
    got = parse_cidr(text)
    assert (str(got) if got is not None else None) == network


def test_the_field_then_the_annotation() -> None:
    def svc(ranges=None, annotation=None):
        meta = {"annotations": {SOURCE_RANGES_ANNOTATION: annotation}} if annotation is not None else {}
        return {"metadata": meta, "spec": {"loadBalancerSourceRanges": ranges} if ranges is not None else {}}

    assert source_ranges(svc([" 10.0.0.0/8 "], "192.168.0.0/16")) == ["10.0.0.0/8"]
    assert source_ranges(svc([], "192.168.0.0/16, 10.0.0.0/8")) == ["192.168.0.0/16", "10.0.0.0/8"]
    assert source_ranges(svc(None, " ")) is None
    assert source_ranges(svc()) is None
