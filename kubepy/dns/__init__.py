"""Cluster DNS: CoreDNS's ``kubernetes`` plugin semantics over a small asyncio server.

Layers, each importing only those above it::

    records     ClusterRecords: Services + EndpointSlices -> answers (pure)
    server      DNSServer (UDP + TCP, forwarding); run_dns: informers -> records -> server
"""

from kubepy.dns.records import ClusterRecords, Lookup, render_service
from kubepy.dns.server import (
    CLUSTER_DNS_ADDRESS,
    DNSConfig,
    DNSServer,
    parse_address,
    parse_resolv_conf,
    run_dns,
)

__all__ = [
    "CLUSTER_DNS_ADDRESS",
    "ClusterRecords",
    "DNSConfig",
    "DNSServer",
    "Lookup",
    "parse_address",
    "parse_resolv_conf",
    "render_service",
    "run_dns",
]
