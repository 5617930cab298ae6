"""Where the API server is and how to prove who we are: ``ClientConfig``.

Read from a kubeconfig file (the current context's cluster and user), the
same file kubectl uses. Talks to nothing; the ``Client`` consumes it.

Who we are: a client certificate (``client-certificate-data``/``client-key-data``
or the file forms, as kubeadm's ``scheduler.conf``), a bearer token
(``token``/``tokenFile``), or a ``token_source`` a component sets itself (the
controller manager's per-controller service-account tokens, refreshed before
they expire). A token is read per request, so a refreshed one is used at once.

Where: ``server``, and, with several API servers, ``servers`` - every one of
them, tried in turn when one cannot be reached (the ``Client`` fails over, as
k3s's agent load balancer does). A kubeconfig lists them in its cluster's
``extensions`` under ``kubepy.io/servers`` (kubectl ignores what it doesn't
know and uses ``server``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml


@dataclass
class ClientConfig:
    server: str
    token: str | None
    ca_data: bytes | None = None  # PEM of the CA that signed the serving certificate
    insecure: bool = False  # skip TLS verification (insecure-skip-tls-verify)
    client_cert: bytes | None = None  # PEM of a client certificate (CN = user, O = groups)
    client_key: bytes | None = None   # PEM of its private key
    token_source: Callable[[], str | None] | None = field(default=None, compare=False, repr=False)
    servers: list[str] = field(default_factory=list)  # every API server's URL, ``server`` first

    def __post_init__(self) -> None:
        urls = [u.rstrip("/") for u in [self.server, *self.servers] if u]
        self.servers = list(dict.fromkeys(urls))
        self.server = self.servers[0] if self.servers else self.server

    def bearer_token(self) -> str | None:
        """The token to send now: the source's, else the fixed one."""
        return self.token_source() if self.token_source is not None else self.token

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
        cert = _data_or_file(user, "client-certificate", path)
        key = _data_or_file(user, "client-key", path)
        if (cert is None) != (key is None):
            raise ValueError(f"{path}: user {context.get('user')!r} has a client certificate without its key "
                             "or a key without its certificate")
        more: list[str] = []
        for ext in cluster.get("extensions") or []:
            if ext.get("name") == SERVERS_EXTENSION:
                more = [str(u) for u in (ext.get("extension") or {}).get("servers") or []]
        return cls(server=cluster["server"].rstrip("/"), token=token, ca_data=ca_data,
                   insecure=bool(cluster.get("insecure-skip-tls-verify", False)), client_cert=cert, client_key=key,
                   servers=more)


SERVERS_EXTENSION = "kubepy.io/servers"


def servers_extension(servers: list[str]) -> list[dict[str, Any]]:
    """A kubeconfig cluster's ``extensions`` naming every API server (for ``ClientConfig.servers``)."""
    return [{"name": SERVERS_EXTENSION, "extension": {"servers": list(servers)}}]


def _data_or_file(user: dict[str, Any], field_name: str, path: Path) -> bytes | None:
    if user.get(f"{field_name}-data"):
        return base64.b64decode(user[f"{field_name}-data"])
    if user.get(field_name):
        return _relative(path, user[field_name]).read_bytes()
    return None


def _named(doc: dict[str, Any], section: str, field: str, name: str | None, path: Path) -> dict[str, Any]:
    for entry in doc.get(section) or []:
        if entry.get("name") == name:
            return entry.get(field) or {}
    raise ValueError(f"{path}: no {section[:-1]} named {name!r}")


def _relative(kubeconfig: Path, file: str) -> Path:
    """kubectl resolves relative file references against the kubeconfig's directory."""
    p = Path(file).expanduser()
    return p if p.is_absolute() else kubeconfig.parent / p
