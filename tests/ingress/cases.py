"""Objects for the ingress tests: Ingresses, classes, Services, EndpointSlices, TLS Secrets as the API serves them."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NS = "default"
KUBEPY_CLASS = {"metadata": {"name": "kubepy", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
                "spec": {"controller": "kubepy.io/ingress"}}
OTHER_CLASS = {"metadata": {"name": "other"}, "spec": {"controller": "example.com/other"}}


def backend(service: str, port: int | str = 80) -> dict[str, Any]:
    return {"service": {"name": service, "port": {"name": port} if isinstance(port, str) else {"number": port}}}


def path(p: str, service: str, kind: str = "Prefix", port: int | str = 80) -> dict[str, Any]:
    return {"path": p, "pathType": kind, "backend": backend(service, port)}


def rule(host: str | None, *paths: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"http": {"paths": list(paths)}}
    if host:
        out["host"] = host
    return out


def ingress(name: str, *rules: dict[str, Any], created: int = 0, cls: str | None = "kubepy",
            default: dict[str, Any] | None = None, tls: list[dict[str, Any]] | None = None,
            namespace: str = NS) -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": list(rules)}
    if cls is not None:
        spec["ingressClassName"] = cls
    if default is not None:
        spec["defaultBackend"] = default
    if tls is not None:
        spec["tls"] = tls
    stamp = (dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=created)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1,
                         "creationTimestamp": stamp}, "spec": spec, "status": {"loadBalancer": {}}}


def service(name: str, *ports: tuple[str, int], namespace: str = NS, type_: str = "ClusterIP") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"type": type_, "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports]}}


def endpoint_slice(svc: str, port_name: str, port: int, *ips: str, not_ready: tuple[str, ...] = (),
                   namespace: str = NS) -> dict[str, Any]:
    eps = [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips]
    eps += [{"addresses": [ip], "conditions": {"ready": False}} for ip in not_ready]
    return {"metadata": {"name": f"{svc}-abcde", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": port_name, "port": port, "protocol": "TCP"}], "endpoints": eps}


def self_signed(*hosts: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for ``hosts``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def tls_secret(name: str, cert: bytes, key: bytes, namespace: str = NS, type_: str = "kubernetes.io/tls") -> dict:
    return {"metadata": {"name": name, "namespace": namespace}, "type": type_,
            "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()}}
