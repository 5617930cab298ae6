"""The kubelet's serving certificate, signed by the cluster CA so the API server can verify it.

Talks to: the API server, as this node, at ``/kubepy/v1/kubeletservingcertificate``
(kubepy's stand-in for a ``kubernetes.io/kubelet-serving`` CertificateSigningRequest):
a certificate request for this node's name (the only DNS name the signer allows) and
addresses goes in, a certificate signed by the cluster CA comes back.

Files in the kubelet's pki dir: ``kubelet-server.key`` (made once) and
``kubelet-server.crt``, reused while signed by the CA the kubelet trusts, naming what it
must, and more than 30 days from its end; else a new one is asked for.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubepy.privatefiles import private_dir, write_private

log = logging.getLogger(__name__)

PATH = "/kubepy/v1/kubeletservingcertificate"
RENEW_BEFORE = dt.timedelta(days=30)


def _wanted(node_name: str, address: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(node_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        ip = ipaddress.ip_address(address)
        if not ip.is_unspecified and not ip.is_loopback:
            names.append(x509.IPAddress(ip))
    except ValueError:
        pass
    return names


def is_usable(crt: Path, ca_pem: bytes, wanted: list[x509.GeneralName], *, now: dt.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert.verify_directly_issued_by(ca)
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    return all(n in have for n in wanted) and cert.not_valid_after_utc - now > RENEW_BEFORE


async def ensure_serving_cert(client: Any, cert_dir: Path, *, node_name: str, address: str,
                              ca_pem: bytes) -> tuple[Path, Path]:
    """(crt, key) of a serving certificate the cluster CA signed; asks the API server when needed."""
    private_dir(cert_dir)
    crt, key_path = cert_dir / "kubelet-server.crt", cert_dir / "kubelet-server.key"
    wanted = _wanted(node_name, address)
    if key_path.exists() and is_usable(crt, ca_pem, wanted, now=dt.datetime.now(dt.UTC)):
        return crt, key_path
    if key_path.exists():
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        key = loaded
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                                    x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node_name}")]))
           .add_extension(x509.SubjectAlternativeName(wanted), critical=False)
           .sign(key, hashes.SHA256()))
    answer = await client.post(PATH, {"csr": csr.public_bytes(serialization.Encoding.PEM).decode()})
    write_private(crt, str(answer["certificate"]).encode())
    log.info("serving certificate signed node=%s names=%s", node_name,
             ",".join(str(getattr(n, "value", n)) for n in wanted))
    return crt, key_path
