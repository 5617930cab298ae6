"""Who is calling (bearer tokens) and may they do this (admin / node / bootstrap).

Identities:
- admin: group ``system:masters``, may do everything;
- ``system:node:<name>`` (group ``system:nodes``): reads everything, writes
  only its own Node, its own Lease (kube-node-lease), the pods bound to it
  (status, deletion) and Events;
- ``system:bootstrap:<id>`` (group ``system:bootstrappers``): may only call
  the join endpoint that hands out a node token;
- no token: 401, except the health and version endpoints.

Static tokens live in ``DATA/tokens.csv`` (Kubernetes' static token file
shape: ``token,user,uid,"group1,group2"``); node tokens are issued by the
join endpoint and kept in the store by the server.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

MASTERS = "system:masters"
NODES = "system:nodes"
BOOTSTRAPPERS = "system:bootstrappers"
NODE_PREFIX = "system:node:"
NODE_LEASE_NAMESPACE = "kube-node-lease"


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return MASTERS in self.groups

    @property
    def node_name(self) -> str | None:
        if NODES in self.groups and self.name.startswith(NODE_PREFIX):
            return self.name[len(NODE_PREFIX):]
        return None

    @property
    def is_bootstrap(self) -> bool:
        return BOOTSTRAPPERS in self.groups


def new_token() -> str:
    return secrets.token_hex(24)


class TokenAuthenticator:
    def __init__(self) -> None:
        self._tokens: dict[str, User] = {}

    def add(self, token: str, user: User) -> None:
        self._tokens[token] = user

    def remove_user(self, name: str) -> None:
        for t, u in list(self._tokens.items()):
            if u.name == name:
                del self._tokens[t]

    def authenticate(self, header: str | None) -> User | None:
        if not header or not header.lower().startswith("bearer "):
            return None
        token = header[7:].strip()
        return self._tokens.get(token)


def load_or_create_static_tokens(data_dir: Path) -> dict[str, User]:
    """Returns {token: user}; creates an admin and a bootstrap token on first start."""
    path = data_dir / "tokens.csv"
    if not path.exists():
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([new_token(), "admin", "admin", MASTERS])
        w.writerow([f"{secrets.token_hex(3)}.{secrets.token_hex(8)}", "system:bootstrap:kubepy", "bootstrap", BOOTSTRAPPERS])
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    out: dict[str, User] = {}
    with path.open() as f:
        for row in csv.reader(f):
            if len(row) < 2 or row[0].startswith("#"):
                continue
            groups = tuple(g for g in (row[3].split(",") if len(row) > 3 else []) if g)
            out[row[0]] = User(row[1], groups)
    return out


def token_for(tokens: dict[str, User], *, group: str) -> str:
    for t, u in tokens.items():
        if group in u.groups:
            return t
    raise KeyError(group)


def authorize(user: User, *, verb: str, resource: str, namespace: str | None, name: str | None,
              subresource: str | None, existing: dict | None = None) -> str | None:
    """None when allowed, else the reason it is not (for a 403).

    For a create, ``name`` is the name in the body. ``existing`` is the
    stored object for writes to one object, so the node rule can check
    ``spec.nodeName`` of a pod."""
    if user.is_admin:
        return None
    if verb in ("get", "list", "watch") and (user.node_name or not user.is_bootstrap):
        return None
    node = user.node_name
    if node is None:
        return f'User "{user.name}" cannot {verb} resource "{resource}"'
    if resource == "events" and verb in ("create", "update", "patch"):
        return None
    if resource == "nodes" and name == node and verb in ("create", "update", "patch", "get"):
        return None
    if resource == "leases" and namespace == NODE_LEASE_NAMESPACE and name == node:
        return None
    if resource == "pods" and existing is not None and (existing.get("spec") or {}).get("nodeName") == node:
        if verb in ("update", "patch", "delete"):
            return None
    return f'node "{node}" cannot {verb} {resource}{"/" + subresource if subresource else ""} {namespace + "/" if namespace else ""}{name or ""}'.rstrip()
