"""Bootstrap tokens: kubeadm's shape, as pure functions (the API server, the CLI, the lab and the kubelet share them).

A token is ``<id>.<secret>`` (``[a-z0-9]{6}.[a-z0-9]{16}``). It lives in the
store as kubeadm keeps it: a Secret ``bootstrap-token-<id>`` of type
``bootstrap.kubernetes.io/token`` in ``kube-system`` with ``token-id``,
``token-secret``, ``expiration`` (RFC 3339), ``usage-bootstrap-authentication``
and ``description``. The API server authenticates a token shaped like one
by reading that Secret (``check``): the caller becomes
``system:bootstrap:<id>`` in group ``system:bootstrappers``, which may only
join a node. Kept in the store (not a file of one API server) so every API
server of the cluster agrees, ``kubectl -n kube-system delete secret
bootstrap-token-<id>`` revokes one, and ``kubepy token create|list|delete``
(``kubepy.tokencli``) manage them through the API, as ``kubeadm token`` does.

Every token expires (24 h unless ``--ttl`` says otherwise); an expired one
is refused with a message naming its id and when it expired.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubepy.durations import parse_seconds

__all__ = [
    "DEFAULT_TTL", "NAMESPACE", "SECRET_TYPE", "TokenCheck", "TokenRow", "check", "describe",
    "expiration_after", "format_ttl", "generate", "parse", "parse_ttl", "read_token_file", "secret_for",
    "secret_name",
]

NAMESPACE = "kube-system"
SECRET_TYPE = "bootstrap.kubernetes.io/token"
SECRET_PREFIX = "bootstrap-token-"
USER_PREFIX = "system:bootstrap:"
GROUP = "system:bootstrappers"
DEFAULT_TTL = dt.timedelta(hours=24)
TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
_ALPHABET = string.ascii_lowercase + string.digits


def generate() -> str:
    """A new random token, ``[a-z0-9]{6}.[a-z0-9]{16}``."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(6)) + "." + \
        "".join(secrets.choice(_ALPHABET) for _ in range(16))


def parse(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token, else None."""
    m = TOKEN_RE.match(token)
    return (m.group(1), m.group(2)) if m else None


def secret_name(token_id: str) -> str:
    return SECRET_PREFIX + token_id


def parse_ttl(text: str) -> dt.timedelta:
    """A Go-style duration (``24h``, ``1h30m``, ``90s``) or plain seconds; more than zero.

    Raises ValueError with a message for a person: a token that never
    expires (kubeadm's ``--ttl 0``) is not offered."""
    text = text.strip()
    seconds = parse_seconds(text, examples="24h, 1h30m, 15m")
    if seconds <= 0:
        raise ValueError(f"a bootstrap token must expire: the TTL must be more than 0, got {text!r}")
    if seconds > 366 * 24 * 3600:
        raise ValueError(f"TTL {text!r} is more than a year; use a shorter one and create another when needed")
    return dt.timedelta(seconds=seconds)


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else None  # an expiry without a zone is ambiguous: refused


def expiration_after(now: dt.datetime, ttl: dt.timedelta) -> str:
    return _rfc3339(now + ttl)


def secret_for(token: str, *, now: dt.datetime, ttl: dt.timedelta = DEFAULT_TTL,
               description: str = "") -> dict[str, Any]:
    """The Secret that makes ``token`` valid until ``now + ttl`` (kubeadm's layout)."""
    parsed = parse(token)
    if parsed is None:
        raise ValueError("a bootstrap token is [a-z0-9]{6}.[a-z0-9]{16}")
    token_id, token_secret = parsed
    data = {"token-id": token_id, "token-secret": token_secret, "expiration": expiration_after(now, ttl),
            "usage-bootstrap-authentication": "true"}
    if description:
        data["description"] = description
    return {"apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
            "metadata": {"name": secret_name(token_id), "namespace": NAMESPACE},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def _data(secret: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in (secret.get("data") or {}).items():
        try:
            out[k] = base64.b64decode(v).decode()
        except (ValueError, TypeError):
            continue
    return out


@dataclass(frozen=True)
class TokenCheck:
    """The verdict on a presented token: a user, or why not (for the 401's message)."""
    user: str | None
    groups: tuple[str, ...] = ()
    reason: str = ""


def check(token_id: str, token_secret: str, secret: dict[str, Any] | None, *, now: dt.datetime) -> TokenCheck:
    """Is ``<token_id>.<token_secret>`` valid, given its Secret (None: there is none)?

    Only a caller who knows the secret learns that the token expired; any
    other failure reads the same, so a guess reveals nothing."""
    unknown = TokenCheck(None, reason="Unauthorized")
    if secret is None or secret.get("type") != SECRET_TYPE:
        return unknown
    data = _data(secret)
    if data.get("token-id") != token_id or not hmac.compare_digest(data.get("token-secret", ""), token_secret):
        return unknown
    if data.get("usage-bootstrap-authentication") != "true":
        return TokenCheck(None, reason=f"bootstrap token {token_id} may not be used for authentication")
    if (secret.get("metadata") or {}).get("deletionTimestamp"):
        return TokenCheck(None, reason=f"bootstrap token {token_id} is being deleted")
    expires = _parse_time(data.get("expiration", ""))
    if expires is None:
        return TokenCheck(None, reason=f"bootstrap token {token_id} has no valid expiration")
    if expires <= now:
        return TokenCheck(None, reason=f"bootstrap token {token_id} expired at {_rfc3339(expires)}")
    extra = tuple(g.strip() for g in data.get("auth-extra-groups", "").split(",")
                  if g.strip().startswith("system:bootstrappers:"))
    return TokenCheck(USER_PREFIX + token_id, (GROUP, *extra))


@dataclass(frozen=True)
class TokenRow:
    """One line of ``kubepy token list`` (kubeadm token list's columns)."""
    token: str
    ttl: str
    expires: str
    usages: str
    description: str


def format_ttl(left: dt.timedelta) -> str:
    """kubeadm's TTL column: ``23h``, ``59m``, ``42s``, ``<invalid>`` once expired."""
    seconds = int(left.total_seconds())
    if seconds <= 0:
        return "<invalid>"
    if seconds >= 3600:
        return f"{seconds // 3600}h"
    if seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def describe(secret: dict[str, Any], *, now: dt.datetime) -> TokenRow | None:
    """The list row of a bootstrap token Secret (None for any other Secret)."""
    if secret.get("type") != SECRET_TYPE:
        return None
    data = _data(secret)
    if not data.get("token-id"):
        return None
    expires = _parse_time(data.get("expiration", ""))
    usages = ",".join(k.removeprefix("usage-bootstrap-") for k, v in sorted(data.items())
                      if k.startswith("usage-bootstrap-") and v == "true")
    return TokenRow(token=f"{data['token-id']}.{data.get('token-secret', '')}",
                    ttl=format_ttl(expires - now) if expires else "<invalid>",
                    expires=_rfc3339(expires) if expires else "<none>",
                    usages=usages or "<none>", description=data.get("description", "<none>"))


def read_token_file(path: Path) -> str:
    """The token in ``path`` (surrounding white space ignored); ValueError saying what is wrong."""
    try:
        text = Path(path).read_text().strip()
    except FileNotFoundError:
        raise ValueError(f"bootstrap token file {path} does not exist") from None
    except OSError as e:
        raise ValueError(f"cannot read bootstrap token file {path}: {e.strerror}") from None
    if parse(text) is None:
        raise ValueError(f"{path} does not hold a bootstrap token ([a-z0-9]{{6}}.[a-z0-9]{{16}})")
    return text
