"""TCP connections that notice a peer gone without a word.

A server whose host is cut off (link down, partition) sends no reset: a
pooled connection or a long watch to it just goes quiet, and a client waits
on it for minutes. ``dead_peer_socket`` (an aiohttp ``socket_factory``) turns
on TCP keepalive probes after 5 s idle and gives up on unacknowledged data
after 15 s, so such a connection fails within ~15 s and the caller moves to
another server (client-go pings its HTTP/2 connections for the same reason).
"""

from __future__ import annotations

import socket

__all__ = ["dead_peer_socket"]

KEEPALIVE = (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", 15000))


def dead_peer_socket(addr_info) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in KEEPALIVE:
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
    return sock
