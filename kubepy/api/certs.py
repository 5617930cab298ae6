"""TLS material and the admin kubeconfig, made once on the API server's first start.

Files in the data dir: ``ca.crt``/``ca.key`` (the cluster CA),
``apiserver.crt``/``apiserver.key`` (serving certificate signed by it),
``admin.crt``/``admin.key`` (the admin's client certificate: CN = user,
O = groups, as kubeadm writes ``admin.conf``), ``admin.kubeconfig``; the
scheduler's and the controller manager's own certificates and kubeconfigs
(``scheduler.crt``/``.key``/``.kubeconfig``: CN ``system:kube-scheduler``;
``controller-manager.*``: CN ``system:kube-controller-manager``; no groups, as
kubeadm's ``scheduler.conf`` and ``controller-manager.conf``); the node
add-ons' (``proxy.*``: CN ``system:kube-proxy``; ``dns.*``: ``system:kubepy-dns``;
``netpol.*``: ``system:kubepy-netpol``), copied to every node; the API
server's client certificate for the kubelets (``apiserver-kubelet-client.*``).
Existing files are reused, so restarts keep trust.
All are written mode 0600 (``kubepy.privatefiles``), in the 0700 data dir.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubepy.privatefiles import write_private

_VALIDITY = dt.timedelta(days=3650)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ensure_ca(data_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    crt, key = data_dir / "ca.crt", data_dir / "ca.key"
    if crt.exists() and key.exists():
        loaded = serialization.load_pem_private_key(key.read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(crt.read_bytes()), loaded
    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubepy-ca")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(pkey, hashes.SHA256())
    )
    write_private(key, _key_pem(pkey))
    write_private(crt, cert.public_bytes(serialization.Encoding.PEM))
    return cert, pkey


def _sans(extra: list[str]) -> list[x509.GeneralName]:
    names = {"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local", socket.gethostname()}
    ips = {"127.0.0.1", "::1"}
    for item in extra:
        try:
            ipaddress.ip_address(item)
            ips.add(item)
        except ValueError:
            names.add(item)
    out: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(names)]
    out += [x509.IPAddress(ipaddress.ip_address(i)) for i in sorted(ips)]
    return out


def ensure_serving_cert(data_dir: Path, sans: list[str], *, name: str = "apiserver",
                        common_name: str = "kube-apiserver") -> tuple[Path, Path]:
    """Serving cert ``NAME.crt``/``.key`` for every name in ``sans`` (plus the usual ones). Re-issued
    when a requested SAN is missing from the existing certificate."""
    crt, key = data_dir / f"{name}.crt", data_dir / f"{name}.key"
    wanted = _sans(sans)
    if crt.exists() and key.exists():
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if all(n in have for n in wanted):
            return crt, key
    ca_cert, ca_key = ensure_ca(data_dir)
    pkey = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(wanted), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_private(key, _key_pem(pkey))
    write_private(crt, cert.public_bytes(serialization.Encoding.PEM))
    return crt, key


_CLIENT_VALIDITY = dt.timedelta(days=365)  # kubeadm's client certificates last a year
_RENEW_BEFORE = dt.timedelta(days=30)


def issue_client_cert(data_dir: Path, *, user: str, groups: tuple[str, ...],
                      validity: dt.timedelta = _CLIENT_VALIDITY) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a client certificate the API server accepts as ``user`` in
    ``groups``: CN = user, one O per group, clientAuth, signed by the cluster CA."""
    ca_cert, ca_key = ensure_ca(data_dir)
    pkey = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(pkey)


def ensure_admin_cert(data_dir: Path, *, user: str, groups: tuple[str, ...]) -> tuple[bytes, bytes]:
    """The admin's client certificate (``admin.crt``/``admin.key``)."""
    return ensure_client_cert(data_dir, "admin", user=user, groups=groups)


def ensure_client_cert(data_dir: Path, name: str, *, user: str, groups: tuple[str, ...]) -> tuple[bytes, bytes]:
    """The client certificate ``NAME.crt``/``NAME.key`` for ``user`` in ``groups``, re-issued when it
    names another user, was signed by another CA or ends within 30 days."""
    crt, key = data_dir / f"{name}.crt", data_dir / f"{name}.key"
    if crt.exists() and key.exists():
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        ca_cert, _ = ensure_ca(data_dir)
        cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        orgs = tuple(a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
        if cn == [user] and orgs == groups and cert.issuer == ca_cert.subject \
                and cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) > _RENEW_BEFORE:
            try:
                cert.verify_directly_issued_by(ca_cert)
                return crt.read_bytes(), key.read_bytes()
            except (ValueError, TypeError, InvalidSignature):
                pass
    cert_pem, key_pem = issue_client_cert(data_dir, user=user, groups=groups)
    write_private(key, key_pem)
    write_private(crt, cert_pem)
    return cert_pem, key_pem


def kubeconfig(*, server: str, ca_pem: bytes, token: str | None, user: str = "admin", cluster: str = "kubepy",
               client_cert: tuple[bytes, bytes] | None = None) -> dict:
    """A kubeconfig as kubeadm writes one (context ``USER@CLUSTER`` when a client certificate is
    given), with the bearer token as well when ``token`` is given."""
    import base64

    creds: dict[str, str] = {}
    if client_cert is not None:
        creds["client-certificate-data"] = base64.b64encode(client_cert[0]).decode()
        creds["client-key-data"] = base64.b64encode(client_cert[1]).decode()
    if token:
        creds["token"] = token
    context = f"{user}@{cluster}" if client_cert is not None else cluster
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {
            "server": server,
            "certificate-authority-data": base64.b64encode(ca_pem).decode(),
        }}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
    }


def write_kubeconfig(path: Path, config: dict) -> None:
    write_private(path, yaml.safe_dump(config, sort_keys=False).encode())


KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"  # kubeadm's apiserver-kubelet-client.crt


class CSRRefused(ValueError):
    """A certificate request the API server will not sign; ``str()`` says why."""


def sign_kubelet_serving_cert(data_dir: Path, csr_pem: bytes, *, node_name: str,
                              validity: dt.timedelta = _CLIENT_VALIDITY) -> bytes:
    """A serving certificate for node ``node_name``'s kubelet, as the ``kubernetes.io/kubelet-serving``
    signer makes them: CN ``system:node:NAME``, O ``system:nodes``, serverAuth, the request's
    IP addresses, and DNS names limited to the node's own name (the API server checks that
    name when it connects, so a node cannot pass for another)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as e:
        raise CSRRefused(f"not a PEM certificate request: {e}") from None
    if not csr.is_signature_valid:
        raise CSRRefused("the certificate request's signature does not verify")
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CSRRefused("the certificate request names no subjectAltNames") from None
    dns = sans.get_values_for_type(x509.DNSName)
    ips = sans.get_values_for_type(x509.IPAddress)
    if [d for d in dns if d != node_name]:
        raise CSRRefused(f"DNS names other than the node's own ({node_name}) are not allowed: "
                         f"{', '.join(d for d in dns if d != node_name)}")
    if node_name not in dns:
        raise CSRRefused(f"the certificate request must name the node ({node_name}) as a DNS name")
    ca_cert, ca_key = ensure_ca(data_dir)
    now = dt.datetime.now(dt.timezone.utc)
    names: list[x509.GeneralName] = [x509.DNSName(node_name), *(x509.IPAddress(i) for i in ips)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node_name}")]))
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


ETCD_CLIENT_USER = "kube-apiserver-etcd-client"  # kubeadm's apiserver-etcd-client.crt


def issue_etcd_member(data_dir: Path, out_dir: Path, *, name: str, ips: list[str]) -> dict[str, Path]:
    """An etcd member's serving and peer certificates (``server.crt``/``.key``, ``peer.crt``/``.key``),
    the cluster CA (``ca.crt``), and the API server's etcd client certificate
    (``apiserver-etcd-client.crt``/``.key``), signed by the cluster CA, into ``out_dir``.
    Both member certificates carry serverAuth and clientAuth (peers dial each other, and
    etcd's JSON gateway dials its own gRPC port with the serving certificate), with SANs
    ``name``, localhost, 127.0.0.1 and ``ips`` - as kubeadm's etcd/server and etcd/peer."""
    ca_cert, ca_key = ensure_ca(data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sans: list[x509.GeneralName] = [x509.DNSName(name), x509.DNSName("localhost"),
                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                    *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips if ip != "127.0.0.1")]
    usages = x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                    x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH])
    now = dt.datetime.now(dt.timezone.utc)
    out: dict[str, Path] = {}
    for kind in ("server", "peer"):
        pkey = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(pkey.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _CLIENT_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(usages, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        write_private(out_dir / f"{kind}.key", _key_pem(pkey))
        write_private(out_dir / f"{kind}.crt", cert.public_bytes(serialization.Encoding.PEM))
        out[kind + "_cert"], out[kind + "_key"] = out_dir / f"{kind}.crt", out_dir / f"{kind}.key"
    client_cert, client_key = issue_client_cert(data_dir, user=ETCD_CLIENT_USER, groups=())
    write_private(out_dir / "apiserver-etcd-client.key", client_key)
    write_private(out_dir / "apiserver-etcd-client.crt", client_cert)
    write_private(out_dir / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
    out.update(client_cert=out_dir / "apiserver-etcd-client.crt", client_key=out_dir / "apiserver-etcd-client.key",
               ca=out_dir / "ca.crt")
    return out
