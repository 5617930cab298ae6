"""What makes the API server send ``/apis/metrics.k8s.io`` to a metrics server: upstream's manifests,
for a metrics server that runs beside the control plane (not as a pod).

- Service ``kube-system/metrics-server`` without a selector, port 443 named ``https``, and its
  Endpoints naming the metrics server's address and port (several control planes: every one's
  address, each added by its own supervisor; an address nothing answers on any more is dropped
  then, so a control plane that is gone does not stay an endpoint).
- APIService ``v1beta1.metrics.k8s.io`` for that Service, trusting its serving certificate by the
  cluster CA (``caBundle``; the certificate is issued for ``metrics-server.kube-system.svc``),
  groupPriorityMinimum 100, versionPriority 100, as upstream's manifest.

``apply`` writes them with the caller's client (the control plane's admin); it is idempotent.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from kubepy.client.errors import APIStatusError

__all__ = ["NAME", "NAMESPACE", "SERVICE_DNS", "apiservice", "apply", "endpoints", "service"]

NAME, NAMESPACE = "metrics-server", "kube-system"
SERVICE_DNS = f"{NAME}.{NAMESPACE}.svc"
LABELS = {"k8s-app": "metrics-server"}
APISERVICE_NAME = "v1beta1.metrics.k8s.io"


def service() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)},
            "spec": {"type": "ClusterIP", "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                                     "targetPort": "https"}]}}


def endpoints(addresses: list[str], port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)},
            "subsets": [{"addresses": [{"ip": a} for a in sorted(set(addresses))],
                         "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}


def apiservice(ca_pem: bytes) -> dict[str, Any]:
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": APISERVICE_NAME, "labels": dict(LABELS)},
            "spec": {"group": "metrics.k8s.io", "version": "v1beta1",
                     "service": {"name": NAME, "namespace": NAMESPACE, "port": 443},
                     "caBundle": base64.b64encode(ca_pem).decode(),
                     "groupPriorityMinimum": 100, "versionPriority": 100}}


async def _put(client: Any, resource: str, want: dict[str, Any], *, namespace: str | None) -> bool:
    """Create or update ``want`` (its resourceVersion kept: a concurrent writer gets a 409); True if written."""
    try:
        have = await client.get(resource, want["metadata"]["name"], namespace=namespace)
    except APIStatusError as e:
        if e.status != 404:
            raise
        await client.create(resource, want, namespace=namespace)
        return True
    # What we say over what is stored: fields the API server defaulted (a Service's clusterIP,
    # sessionAffinity, ipFamilies, ...) are kept, or every refresh would rewrite the object.
    merged = _over(have, {k: v for k, v in want.items() if k != "metadata"})
    merged["metadata"] = {**have["metadata"], "labels": {**(have["metadata"].get("labels") or {}),
                                                         **want["metadata"]["labels"]}}
    if merged != have:
        await client.update(resource, merged)
        return True
    return False


def _over(have: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """``have`` with ``want`` laid over it: maps merged key by key, anything else replaced."""
    out = dict(have)
    for key, value in want.items():
        old = have.get(key)
        out[key] = _over(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


async def _answers(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def apply(client: Any, *, address: str, port: int, ca_pem: bytes) -> tuple[list[str], bool]:
    """The endpoint addresses now registered, and whether anything was written."""
    changed = await _put(client, "services", service(), namespace=NAMESPACE)
    try:
        have = await client.get("endpoints", NAME, namespace=NAMESPACE)
        others = [a["ip"] for s in have.get("subsets") or [] for a in s.get("addresses") or []
                  if a.get("ip") != address and any(p.get("port") == port for p in s.get("ports") or [])]
        others = [ip for ip in others if await _answers(ip, port)]
    except APIStatusError as e:
        if e.status != 404:
            raise
        others = []
    addresses = sorted({*others, address})
    changed = await _put(client, "endpoints", endpoints(addresses, port), namespace=NAMESPACE) or changed
    changed = await _put(client, "apiservices", apiservice(ca_pem), namespace=None) or changed
    return addresses, changed
