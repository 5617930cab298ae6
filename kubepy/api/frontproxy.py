"""The aggregation layer's credentials: kubeadm's front-proxy CA and the API server's proxy client certificate.

Files in the data dir (made once, reused after): ``front-proxy-ca.crt``/``.key`` (a CA of its own, so
a certificate the cluster CA signed for a user can never pass for the proxy) and
``front-proxy-client.crt``/``.key`` (CN ``front-proxy-client``), which the API server presents to an
aggregated API server together with ``X-Remote-User``/``X-Remote-Group``/``X-Remote-Extra-*`` headers
(kube-apiserver's ``--proxy-client-cert-file`` and ``--requestheader-*`` flags).

Extension API servers learn whom to trust from the ConfigMap ``kube-system/extension-apiserver-authentication``
that the API server keeps (``authentication_configmap``), as upstream's does: ``client-ca-file`` (the
cluster CA), ``requestheader-client-ca-file`` (the front-proxy CA), ``requestheader-allowed-names``,
``requestheader-username-headers``, ``requestheader-group-headers``, ``requestheader-extra-headers-prefix``
(JSON lists, as upstream writes them).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubepy.privatefiles import write_private

__all__ = ["AUTH_CONFIGMAP", "CLIENT_NAME", "authentication_configmap", "ensure_front_proxy"]

CLIENT_NAME = "front-proxy-client"
AUTH_CONFIGMAP = "extension-apiserver-authentication"
USERNAME_HEADERS = ["X-Remote-User"]
GROUP_HEADERS = ["X-Remote-Group"]
EXTRA_PREFIXES = ["X-Remote-Extra-"]
_VALIDITY = dt.timedelta(days=3650)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _ensure_ca(data_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    crt, key = data_dir / "front-proxy-ca.crt", data_dir / "front-proxy-ca.key"
    if crt.exists() and key.exists():
        loaded = serialization.load_pem_private_key(key.read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(crt.read_bytes()), loaded
    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "front-proxy-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pkey.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(pkey, hashes.SHA256()))
    write_private(key, _key_pem(pkey))
    write_private(crt, cert.public_bytes(serialization.Encoding.PEM))
    return cert, pkey


def ensure_front_proxy(data_dir: Path) -> tuple[bytes, tuple[bytes, bytes]]:
    """(front-proxy CA PEM, (client certificate PEM, key PEM)), made on first use."""
    ca_cert, ca_key = _ensure_ca(data_dir)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    crt, key = data_dir / f"{CLIENT_NAME}.crt", data_dir / f"{CLIENT_NAME}.key"
    if crt.exists() and key.exists():
        existing = x509.load_pem_x509_certificate(crt.read_bytes())
        if existing.issuer == ca_cert.subject and existing.not_valid_after_utc > dt.datetime.now(dt.UTC) \
                + dt.timedelta(days=30):
            return ca_pem, (crt.read_bytes(), key.read_bytes())
    pkey = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CLIENT_NAME)]))
            .issuer_name(ca_cert.subject).public_key(pkey.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    write_private(key, _key_pem(pkey))
    write_private(crt, cert.public_bytes(serialization.Encoding.PEM))
    return ca_pem, (crt.read_bytes(), key.read_bytes())


def authentication_configmap(*, client_ca_pem: bytes, front_proxy_ca_pem: bytes) -> dict[str, Any]:
    """``kube-system/extension-apiserver-authentication`` as kube-apiserver writes it."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": AUTH_CONFIGMAP, "namespace": "kube-system"},
            "data": {"client-ca-file": client_ca_pem.decode(),
                     "requestheader-client-ca-file": front_proxy_ca_pem.decode(),
                     "requestheader-allowed-names": json.dumps([CLIENT_NAME]),
                     "requestheader-username-headers": json.dumps(USERNAME_HEADERS),
                     "requestheader-group-headers": json.dumps(GROUP_HEADERS),
                     "requestheader-extra-headers-prefix": json.dumps(EXTRA_PREFIXES),
                     "requestheader-uid-headers": json.dumps([])}}
