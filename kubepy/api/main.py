"""``kubepy apiserver``: open the store, serve HTTPS, write the admin kubeconfig.

Everything in the data dir is a secret or sits next to one (the store holds
every Secret; ``ca.key``, ``apiserver.key``, ``tokens.csv``,
``admin.kubeconfig``): the dir is 0700 and the files 0600 from creation
(the process umask is 077 and ``kubepy.privatefiles`` writes them). Modes
that older versions left wider are narrowed at start.
"""

from __future__ import annotations

import asyncio
import logging
import ipaddress
import signal
import socket
import ssl
from pathlib import Path

from aiohttp import web

from kubepy import tlsclientauth
from kubepy.api import auth, certs
from kubepy.api.listener import ConnectionTimeouts, TimedTCPSite
from kubepy.privatefiles import narrow_file, private_dir
from kubepy.api.server import APIServer, ServerConfig
from kubepy.store import open_store

log = logging.getLogger(__name__)


def client_address(config: ServerConfig) -> str:
    """The address a client on this host should use."""
    if config.advertise_address:
        return config.advertise_address
    if config.bind_address in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return config.bind_address


# The control plane's own components, each on its own identity (kubeadm's scheduler.conf and
# controller-manager.conf), and the node add-ons' (the lab and vagrant/controlplane.sh hand these to
# every node): file stem -> user. No groups: RBAC binds the users by name, and none is system:masters.
COMPONENT_IDENTITIES = {"scheduler": auth.SCHEDULER_USER, "controller-manager": auth.CONTROLLER_MANAGER_USER,
                        "proxy": auth.KUBE_PROXY_USER, "dns": auth.DNS_USER, "netpol": auth.NETPOL_USER,
                        "ingress": auth.INGRESS_CONTROLLER_USER,
                        "metrics-server": auth.METRICS_SERVER_USER}


def write_admin_kubeconfig(config: ServerConfig) -> Path:
    """Writes the components' kubeconfigs, then the admin's (written last: a supervisor that waits
    for ``admin.kubeconfig`` finds the others there too)."""
    tokens = auth.load_or_create_static_tokens(config.data_dir)
    host = client_address(config)
    server = f"https://{'[' + host + ']' if ':' in host else host}:{config.port}"
    ca_pem = (config.data_dir / "ca.crt").read_bytes()
    for stem, user in COMPONENT_IDENTITIES.items():
        cert = certs.ensure_client_cert(config.data_dir, stem, user=user, groups=())
        certs.write_kubeconfig(config.data_dir / f"{stem}.kubeconfig",
                               certs.kubeconfig(server=server, ca_pem=ca_pem, user=user, token=None,
                                                client_cert=cert))
    path = config.data_dir / "admin.kubeconfig"
    # As kubeadm's admin.conf: a client certificate (CN=kubernetes-admin, O=system:masters); the static
    # token stays beside it for the components and tools that still read it from this file.
    client_cert = certs.ensure_admin_cert(config.data_dir, user=auth.ADMIN_CERT_USER, groups=(auth.MASTERS,))
    certs.write_kubeconfig(path, certs.kubeconfig(server=server, ca_pem=ca_pem, user=auth.ADMIN_CERT_USER,
                                                  token=auth.token_for(tokens, group=auth.MASTERS),
                                                  client_cert=client_cert))
    return path


def tls_context(config: ServerConfig) -> ssl.SSLContext:
    # The ``kubernetes`` Service's ClusterIP too: pods reach the API server there.
    service_ip = str(ipaddress.ip_network(config.service_cidr, strict=False)[1])
    sans = [client_address(config), socket.getfqdn(), service_ip, *config.tls_sans]
    if config.bind_address not in ("0.0.0.0", "::", ""):
        sans.append(config.bind_address)
    crt, key = certs.ensure_serving_cert(config.data_dir, sans)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)
    # Client certificates are asked for, not required (tokens and anonymous health checks go on
    # working); the CA list is what the handshake offers clients to choose a certificate by.
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cafile=str(config.data_dir / "ca.crt"))
    # ... and, as Go's RequestClientCert, any certificate is taken: the authenticator verifies it, so a
    # bad one is a 401 with a Status body rather than a failed handshake (kubepy.tlsclientauth).
    tlsclientauth.request_client_certificates(ctx)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


# Files of the data dir that hold secrets (the store's own files are narrowed by the store).
PRIVATE_FILES = ("ca.key", "apiserver.key", "tokens.csv", "admin.kubeconfig", "admin.key", "sa.key",
                 "apiserver-kubelet-client.key", "front-proxy-ca.key", "front-proxy-client.key",
                 *(f"{stem}.{ext}" for stem in COMPONENT_IDENTITIES for ext in ("key", "kubeconfig")))


def secure_data_dir(data_dir: Path) -> None:
    """The data dir 0700 and its secret files 0600, whatever an older version left."""
    private_dir(data_dir)
    for name in PRIVATE_FILES:
        narrow_file(data_dir / name)


async def serve(config: ServerConfig, *, stop: asyncio.Event | None = None) -> None:
    timeouts = ConnectionTimeouts(tls_handshake=config.tls_handshake_timeout,
                                  request_header=config.request_header_timeout, idle=config.idle_connection_timeout)
    secure_data_dir(config.data_dir)
    ctx = tls_context(config)
    store = open_store(config.store_url, data_dir=str(config.data_dir), etcd_ca=config.etcd_cafile,
                       etcd_cert=config.etcd_certfile, etcd_key=config.etcd_keyfile)
    server = APIServer(store, config)
    await server.start()
    kubeconfig = write_admin_kubeconfig(config)
    # Watches are ended by server.stop(); nothing else should hold shutdown up for long.
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    site = TimedTCPSite(runner, config.bind_address, config.port, ssl_context=ctx, timeouts=timeouts, backlog=1024,
                        reuse_address=True)
    await site.start()
    log.info("serving address=%s port=%d store=%s kubeconfig=%s tls_handshake_timeout=%gs "
             "request_header_timeout=%gs idle_connection_timeout=%gs", config.bind_address, config.port,
             config.store_url, kubeconfig, timeouts.tls_handshake, timeouts.request_header, timeouts.idle)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await server.stop()
        await runner.cleanup()
        await store.close()
