"""kubepy proxy: Services as iptables or nftables NAT rules in kube-proxy's layouts, one proxier per node.

Layers, each importing only those above it::

    rules       pure: Services + Endpoints → iptables-restore text
    iptables    adapter: iptables-restore / iptables-save (+ a fake)
    nftables    the same models → one nft -f script (kube-proxy's nftables layout); adapter + fake
    netlink     adapter (pyroute2): service route, hairpin, UDP conntrack
    proxier     informers + rate-limited sync runner; run_proxy, cleanup_all
"""

from kubepy.proxy.iptables import FakeIPTables, IPTablesError, RealIPTables
from kubepy.proxy.netlink import NodeNetlink, UDPFlow
from kubepy.proxy.nftables import FakeNFTables, NFTablesError, RealNFTables, render_nft_full, render_nft_partial
from kubepy.proxy.proxier import Proxier, ProxyConfig, cleanup_all, run_proxy
from kubepy.proxy.rules import (
    NodeConfig,
    ServicePort,
    render_full,
    render_partial,
    service_ports,
)

__all__ = [
    "FakeIPTables",
    "FakeNFTables",
    "IPTablesError",
    "NFTablesError",
    "NodeConfig",
    "NodeNetlink",
    "Proxier",
    "ProxyConfig",
    "RealIPTables",
    "RealNFTables",
    "ServicePort",
    "UDPFlow",
    "cleanup_all",
    "render_full",
    "render_nft_full",
    "render_nft_partial",
    "render_partial",
    "run_proxy",
    "service_ports",
]
