"""Service vocabulary the API server's validation and kube-proxy share: which source ranges
restrict a LoadBalancer's clients, and how a CIDR is read.

As upstream's ``pkg/api/v1/service`` (``GetLoadBalancerSourceRanges``): the ranges are
``spec.loadBalancerSourceRanges``, or, when that is empty, the comma list in the
``service.beta.kubernetes.io/load-balancer-source-ranges`` annotation. CIDRs are read as
Go's ``netutils.ParseCIDRSloppy`` does: a prefix length is required (a bare address is
not a CIDR), host bits may be set, IPv4 octets may carry leading zeros.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["CIDR_MESSAGE", "SOURCE_RANGES_ANNOTATION", "parse_cidr", "source_ranges"]

SOURCE_RANGES_ANNOTATION = "service.beta.kubernetes.io/load-balancer-source-ranges"
CIDR_MESSAGE = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"

_DOTTED = re.compile(r"[0-9]+(\.[0-9]+){3}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_cidr(text: Any) -> Network | None:
    """The network ``text`` names (host bits cleared), or None when it is not a CIDR."""
    if not isinstance(text, str) or text.count("/") != 1:
        return None
    address, bits = text.split("/")
    if not (bits.isascii() and bits.isdigit()):  # Python would also take a netmask here; Go does not
        return None
    if _DOTTED.fullmatch(address):  # ParseCIDRSloppy: "010.1.2.3" is 10.1.2.3
        octets = [int(o) for o in address.split(".")]
        if any(o > 255 for o in octets):
            return None
        address = ".".join(map(str, octets))
    try:
        return ipaddress.ip_network(f"{address}/{int(bits)}", strict=False)
    except ValueError:
        return None


def source_ranges(service: Mapping[str, Any]) -> list[str] | None:
    """The ranges that restrict a LoadBalancer's clients as written (trimmed), or None when none do.

    An annotation that is empty or only spaces restricts nothing (upstream reads it as 0.0.0.0/0)."""
    spec = service.get("spec") or {}
    field = spec.get("loadBalancerSourceRanges")
    if isinstance(field, list) and field:
        return [str(r).strip() for r in field]
    annotations = (service.get("metadata") or {}).get("annotations") or {}
    value = str(annotations.get(SOURCE_RANGES_ANNOTATION) or "").strip()
    return [r.strip() for r in value.split(",")] if value else None
