"""Who is calling (client certificates, bearer tokens); what they may do is kubepy.api.authz's
(RBAC, the node authorizer and NodeRestriction).

Authenticators, in the order the API server asks them (as Kubernetes'
union authenticator): a client certificate verified by the cluster CA
(``kubepy.tlsclientauth``: CN = user, O = groups, as kubeadm's ``admin.conf``),
static and node tokens (``TokenAuthenticator``), bootstrap tokens, then
service-account JWTs (``kubepy.api.serviceaccounts``). Every user so
found is also in ``system:authenticated``.

Identities:
- admin: group ``system:masters``, may do everything;
- ``system:node:<name>`` (group ``system:nodes``): the node authorizer's
  rules (kubepy.api.nodeauth): reads only the Secrets and ConfigMaps its
  pods use, writes only its own Node, its own Lease (kube-node-lease), the
  pods bound to it (status, deletion) and Events; for its local-path
  storage, its own CSIStorageCapacity and the PersistentVolumes it provisioned;
- ``system:bootstrap:<id>`` (group ``system:bootstrappers``): may only call
  the join endpoint that issues a node token; bootstrap tokens are Secrets
  with an expiry (``kubepy.bootstraptoken``), checked by the server;
- no token: 401, except the health and version endpoints.

Static tokens live in ``DATA/tokens.csv`` (Kubernetes' static token file
shape: ``token,user,uid,"group1,group2"``; only the admin's, mode 0600). A
row for ``system:bootstrappers`` (older kubepy wrote one that never
expired) is ignored with a warning. Node tokens are issued by the join
endpoint, once per node name (``decide_join``), and kept in the store (every
API server learns them from there); the authenticator keeps
and looks tokens up by their SHA-256.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from kubepy.privatefiles import narrow_file, write_private

log = logging.getLogger(__name__)

MASTERS = "system:masters"
NODES = "system:nodes"
BOOTSTRAPPERS = "system:bootstrappers"
NODE_PREFIX = "system:node:"
AUTHENTICATED = "system:authenticated"
ADMIN_CERT_USER = "kubernetes-admin"  # kubeadm's admin.conf user
SCHEDULER_USER = "system:kube-scheduler"                    # kubeadm's scheduler.conf
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"  # kubeadm's controller-manager.conf
# The node add-ons, host daemons on every node: each its own user, none in system:nodes.
KUBE_PROXY_USER = "system:kube-proxy"     # upstream's user.KubeProxy, bound to system:node-proxier
DNS_USER = "system:kubepy-dns"            # cluster DNS (upstream's runs as a pod's ServiceAccount)
NETPOL_USER = "system:kubepy-netpol"      # the network-policy agent
INGRESS_CONTROLLER_USER = "kubepy:ingress-controller"       # kubepy ingress (ingress.kubeconfig)
METRICS_SERVER_USER = "system:metrics-server"               # kubepy metrics-server (kubepy.metricsserver)
NODE_LEASE_NAMESPACE = "kube-node-lease"
JOIN_PATH = "/kubepy/v1/join"
CREDENTIALS_PATH = "/kubepy/v1/nodecredentials/"
SERVING_CERT_PATH = "/kubepy/v1/kubeletservingcertificate"  # a node's kubelet has its serving certificate signed


@dataclass(frozen=True)
class User:
    """An authenticated identity, as Kubernetes' user.Info: name, uid, groups, extra.

    ``extra`` is a tuple of (key, values) pairs so a User stays hashable;
    ``extra_map`` gives it as the ``map[string][]string`` the API shows."""
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def extra_map(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.extra}

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


def with_authenticated_group(user: User) -> User:
    """Every authenticated user is also in ``system:authenticated`` (upstream's group adder)."""
    if AUTHENTICATED in user.groups:
        return user
    return User(user.name, (*user.groups, AUTHENTICATED), user.uid, user.extra)


def new_token() -> str:
    return secrets.token_hex(24)


def token_digest(token: str) -> str:
    """What is kept of a token: its SHA-256 (hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(header: str | None) -> str | None:
    if not header or not header.lower().startswith("bearer "):
        return None
    return header[7:].strip() or None


class TokenAuthenticator:
    """Tokens by their SHA-256: a lookup never compares secrets byte by byte."""

    def __init__(self) -> None:
        self._users: dict[str, User] = {}

    def add(self, token: str, user: User) -> None:
        self._users[token_digest(token)] = user

    def add_digest(self, digest: str, user: User) -> None:
        self._users[digest] = user

    def remove_user(self, name: str) -> None:
        for d, u in list(self._users.items()):
            if u.name == name:
                del self._users[d]

    def users(self) -> list[User]:
        return list(self._users.values())

    def authenticate(self, header: str | None) -> User | None:
        token = bearer_token(header)
        return self._users.get(token_digest(token)) if token else None


def load_or_create_static_tokens(data_dir: Path) -> dict[str, User]:
    """Returns {token: user}; creates the admin token on first start (bootstrap tokens are Secrets)."""
    path = data_dir / "tokens.csv"
    if not path.exists():
        buf = io.StringIO()
        csv.writer(buf).writerow([new_token(), "admin", "admin", MASTERS])
        write_private(path, buf.getvalue())
    narrow_file(path)
    out: dict[str, User] = {}
    with path.open() as f:
        for row in csv.reader(f):
            if len(row) < 2 or row[0].startswith("#"):
                continue
            groups = tuple(g for g in (row[3].split(",") if len(row) > 3 else []) if g)
            if BOOTSTRAPPERS in groups:
                log.warning("ignored static bootstrap token user=%s file=%s reason=NoExpiry "
                            "(use kubepy token create)", row[1], path)
                continue
            out[row[0]] = User(row[1], groups)
    return out


def token_for(tokens: dict[str, User], *, group: str) -> str:
    for t, u in tokens.items():
        if group in u.groups:
            return t
    raise KeyError(group)


# -- joining ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JoinDecision:
    """Issue a new node credential (``code`` 0), or refuse with an HTTP code and a message."""
    code: int = 0
    message: str = ""

    @property
    def allowed(self) -> bool:
        return self.code == 0


def decide_join(user: User, node_name: str, *, node_exists: bool, credential_exists: bool) -> JoinDecision:
    """May ``user`` obtain a credential for node ``node_name``?

    Only for a name nobody holds yet: no Node object and no credential
    issued. An existing node's token is never handed out again (it would
    let anyone with a bootstrap token become that node); the node keeps
    the credential it saved when it joined. Deleting the Node revokes its
    credential, so a rebuilt machine can join again under the same name;
    an admin revokes one without a Node with ``DELETE CREDENTIALS_PATH<name>``."""
    if not (user.is_bootstrap or user.is_admin):
        return JoinDecision(403, f'User "{user.name}" cannot join nodes')
    if node_exists:
        return JoinDecision(409, f'node "{node_name}" is already registered and keeps the credential it was '
                                 f'issued when it joined; to join another machine as "{node_name}", delete '
                                 f'the Node first (kubectl delete node {node_name})')
    if credential_exists:
        return JoinDecision(409, f'node "{node_name}" was already issued a credential (its Node is not '
                                 f'registered yet); to join another machine as "{node_name}", revoke it first '
                                 f'(kubectl delete --raw {CREDENTIALS_PATH}{node_name})')
    return JoinDecision()
