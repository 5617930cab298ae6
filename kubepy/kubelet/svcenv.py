"""Service environment variables, as the kubelet gives every container.

For each Service of the pod's namespace that has a cluster IP (and the
``kubernetes`` Service of ``default``, which every pod gets), Kubernetes sets

    <NAME>_SERVICE_HOST=10.96.0.12        <NAME>_SERVICE_PORT=80
    <NAME>_SERVICE_PORT_<PORTNAME>=80     (each named port)
    <NAME>_PORT=tcp://10.96.0.12:80       (Docker-link style, first port)
    <NAME>_PORT_80_TCP=tcp://10.96.0.12:80, _PROTO=tcp, _PORT=80, _ADDR=10.96.0.12  (each port)

where NAME is the Service's name upper-cased with ``-`` as ``_``. With
``enableServiceLinks: false`` only the ``kubernetes`` Service's are set.
The container's own ``env``/``envFrom`` win over these, and ``$(VAR)`` may
refer to them. Pure: the kubelet hands in the Services it has cached.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["service_env"]

MASTER_SERVICE = ("default", "kubernetes")


def _has_cluster_ip(svc: dict[str, Any]) -> bool:
    ip = (svc.get("spec") or {}).get("clusterIP") or ""
    return ip not in ("", "None")


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def _vars_for(svc: dict[str, Any]) -> dict[str, str]:
    spec = svc.get("spec") or {}
    ip, ports = spec["clusterIP"], spec.get("ports") or []
    prefix = _env_name(svc["metadata"]["name"])
    out = {f"{prefix}_SERVICE_HOST": ip}
    if not ports:
        return out
    out[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
    for p in ports:
        if p.get("name"):
            out[f"{prefix}_SERVICE_PORT_{_env_name(p['name'])}"] = str(p["port"])
    first = ports[0]
    out[f"{prefix}_PORT"] = f"{(first.get('protocol') or 'TCP').lower()}://{ip}:{first['port']}"
    for p in ports:
        proto = p.get("protocol") or "TCP"
        key = f"{prefix}_PORT_{p['port']}_{proto.upper()}"
        out[key] = f"{proto.lower()}://{ip}:{p['port']}"
        out[key + "_PROTO"] = proto.lower()
        out[key + "_PORT"] = str(p["port"])
        out[key + "_ADDR"] = ip
    return out


def service_env(services: Iterable[dict[str, Any]], *, namespace: str, enable_service_links: bool = True
                ) -> dict[str, str]:
    """The variables a container in ``namespace`` gets from ``services`` (all namespaces may be passed)."""
    chosen: dict[str, dict[str, Any]] = {}
    for svc in services:
        meta = svc.get("metadata") or {}
        if not _has_cluster_ip(svc) or meta.get("deletionTimestamp"):
            continue
        name, ns = meta.get("name", ""), meta.get("namespace", "")
        if (ns, name) == MASTER_SERVICE:
            chosen.setdefault(name, svc)  # a same-named Service of the pod's own namespace wins
        elif ns == namespace and enable_service_links:
            chosen[name] = svc
    env: dict[str, str] = {}
    for name in sorted(chosen):
        env.update(_vars_for(chosen[name]))
    return env
