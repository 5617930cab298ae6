"""Where the API server is and how to prove who we are: ``ClientConfig``.

Read from a kubeconfig file (the current context's cluster and user), the
same file kubectl uses. Talks to nothing; the ``Client`` consumes it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ClientConfig:
    server: str
    token: str | None
    ca_data: bytes | None = None  # PEM of the CA that signed the serving certificate
    insecure: bool = False  # skip TLS verification (insecure-skip-tls-verify)

    @classmethod
    def from_kubeconfig(cls, path: str | Path) -> ClientConfig:
        path = Path(path)
        doc: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
        contexts = {c["name"]: c.get("context") or {} for c in doc.get("contexts") or []}
        current = doc.get("current-context") or (next(iter(contexts)) if contexts else "")
        context = contexts.get(current)
        if context is None:
            raise ValueError(f"{path}: no context {current!r}")
        cluster = _named(doc, "clusters", "cluster", context.get("cluster"), path)
        user = _named(doc, "users", "user", context.get("user"), path) if context.get("user") else {}

        ca_data: bytes | None = None
        if cluster.get("certificate-authority-data"):
            ca_data = base64.b64decode(cluster["certificate-authority-data"])
        elif cluster.get("certificate-authority"):
            ca_data = _relative(path, cluster["certificate-authority"]).read_bytes()

        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = _relative(path, user["tokenFile"]).read_text().strip()
        return cls(server=cluster["server"].rstrip("/"), token=token, ca_data=ca_data,
                   insecure=bool(cluster.get("insecure-skip-tls-verify", False)))


def _named(doc: dict[str, Any], section: str, field: str, name: str | None, path: Path) -> dict[str, Any]:
    for entry in doc.get(section) or []:
        if entry.get("name") == name:
            return entry.get(field) or {}
    raise ValueError(f"{path}: no {section[:-1]} named {name!r}")


def _relative(kubeconfig: Path, file: str) -> Path:
    """kubectl resolves relative file references against the kubeconfig's directory."""
    p = Path(file).expanduser()
    return p if p.is_absolute() else kubeconfig.parent / p
