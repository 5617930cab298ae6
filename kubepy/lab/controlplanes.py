"""``kubepy up --control-planes N``: N control-plane nodes on a three-or-more-member etcd.

::

    host: HAProxy on 172.30.K.1:PORT and 127.0.0.1:PORT ──> cp1 172.30.K.2:6443
          (the one address kubectl uses; /readyz-checked)  ──> cp2 172.30.K.3:6443 …

Each control-plane node is a network namespace on the lab bridge
(``<name>-cp<j>``) running what a kubeadm control-plane node runs: an etcd
member (the distribution's etcd, client and peer TLS with certificates from
the cluster CA, ``kubepy etcd certs``'s) and ``kubepy controlplane`` (API
server, scheduler and controller manager, the latter two with
``--leader-elect``). The first node's data dir is the cluster's
``controlplane/``; the others join with a copy of its CA, service-account
key and static tokens, as ``kubeadm join --control-plane`` copies the
shared certificates. Kubelets are given every API server (``--server
a,b,c``) and fail over between them; kubectl goes through HAProxy (the
distribution's), which stops sending to a server whose /readyz fails.
"""

from __future__ import annotations

import shutil
import ssl
import urllib.request
from pathlib import Path

from kubepy.lab.network import LabNetwork

__all__ = ["API_PORT", "ETCD_CLIENT_PORT", "ETCD_PEER_PORT", "SHARED_FILES", "etcd_argv", "haproxy_config",
           "member_ready"]

API_PORT = 6443
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
# What a joining control-plane node copies from the first (kubeadm's shared certificates and keys).
# The front proxy's CA too (as kubeadm shares it on a control-plane join): every aggregator's client
# certificate must be trusted by every extension API server (metrics server), which reads one CA from
# the extension-apiserver-authentication ConfigMap all API servers write.
SHARED_FILES = ("ca.crt", "ca.key", "sa.key", "tokens.csv", "front-proxy-ca.crt", "front-proxy-ca.key")
# Faster than upstream's 15/10/2 s: a lab on one host, where a dead leader is noticed at once.
LEADER_ELECTION = ["--leader-elect", "--leader-elect-lease-duration", "8s", "--leader-elect-renew-deadline", "6s",
                   "--leader-elect-retry-period", "1s"]


def etcd_urls(net: LabNetwork, count: int, first: int = 1) -> str:
    """Every member's client address, member ``first`` (the API server's own node's) first."""
    order = [first, *(j for j in range(1, count + 1) if j != first)]
    return ",".join(f"{net.cp_ip(j)}:{ETCD_CLIENT_PORT}" for j in order)


def etcd_argv(net: LabNetwork, cluster: str, j: int, count: int, data_dir: Path, pki: Path) -> list[str]:
    """Member ``j``'s etcd command line (run inside its control-plane netns)."""
    ip = net.cp_ip(j)
    initial = ",".join(f"{cluster}-cp{k}=https://{net.cp_ip(k)}:{ETCD_PEER_PORT}" for k in range(1, count + 1))
    return [
        "etcd", f"--name={cluster}-cp{j}", f"--data-dir={data_dir}",
        f"--listen-client-urls=https://{ip}:{ETCD_CLIENT_PORT},https://127.0.0.1:{ETCD_CLIENT_PORT}",
        f"--advertise-client-urls=https://{ip}:{ETCD_CLIENT_PORT}",
        f"--listen-peer-urls=https://{ip}:{ETCD_PEER_PORT}",
        f"--initial-advertise-peer-urls=https://{ip}:{ETCD_PEER_PORT}",
        f"--initial-cluster={initial}", "--initial-cluster-state=new", f"--initial-cluster-token={cluster}",
        f"--cert-file={pki / 'server.crt'}", f"--key-file={pki / 'server.key'}",
        f"--trusted-ca-file={pki / 'ca.crt'}", "--client-cert-auth",
        f"--peer-cert-file={pki / 'peer.crt'}", f"--peer-key-file={pki / 'peer.key'}",
        f"--peer-trusted-ca-file={pki / 'ca.crt'}", "--peer-client-cert-auth",
        "--heartbeat-interval=100", "--election-timeout=1000", "--log-level=warn"]


def copy_shared(first: Path, joining: Path) -> None:
    """The first control plane's CA, service-account key and tokens into a joining one's data dir."""
    joining.mkdir(parents=True, exist_ok=True)
    joining.chmod(0o700)
    for name in SHARED_FILES:
        if (first / name).exists() and not (joining / name).exists():
            shutil.copy2(first / name, joining / name)


def haproxy_config(net: LabNetwork, count: int, port: int, dashboard_port: int | None = None) -> str:
    """HAProxy in TCP mode (TLS passes through to the API servers), each checked on /readyz; with
    ``dashboard_port``, the control planes' dashboards behind the same address (TLS passes through:
    each dashboard's certificate names the shared address), each checked by a TLS handshake."""
    servers = "\n".join(
        f"    server cp{j} {net.cp_ip(j)}:{API_PORT} check check-ssl verify none inter 1s fall 2 rise 2"
        for j in range(1, count + 1))
    return f"""# Written by kubepy up: the lab's stable API server address.
global
    log stderr format short local0 info
    maxconn 4096

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 3s
    timeout client 1h
    timeout server 1h

frontend apiserver
    bind {net.gateway}:{port}
    bind 127.0.0.1:{port}
    default_backend apiservers

backend apiservers
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    default-server on-marked-down shutdown-sessions
{servers}
""" + (_dashboard_section(net, count, dashboard_port) if dashboard_port else "")


def _dashboard_section(net: LabNetwork, count: int, port: int) -> str:
    servers = "\n".join(f"    server cp{j} {net.cp_ip(j)}:{port} check check-ssl verify none inter 2s fall 2 rise 2"
                        for j in range(1, count + 1))
    return f"""
frontend dashboard
    bind {net.gateway}:{port}
    default_backend dashboards

backend dashboards
    default-server on-marked-down shutdown-sessions
{servers}
"""


def member_ready(net: LabNetwork, j: int, ca: Path) -> bool:
    """Control-plane node ``j``'s API server answers /readyz."""
    if not ca.exists():
        return False
    try:
        ctx = ssl.create_default_context(cafile=str(ca))
        with urllib.request.urlopen(f"https://{net.cp_ip(j)}:{API_PORT}/readyz", context=ctx, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
