"""Admission: what runs on a write between defaulting and the store, as in Kubernetes.

The order is upstream's: the kind's defaults, then every plugin's ``admit``
(mutating: LimitRanger fills in container resources), then the kind's
validation, then every plugin's ``validate`` (ResourceQuota charges the
write, or refuses it). A plugin refuses with an ``errors.APIError``
(Kubernetes answers 403 Forbidden: ``pods "x" is forbidden: …``).

Plugins see CREATE and UPDATE (subresource writes too: a plugin that
only cares for the main resource checks ``a.subresource``); a plugin that
also wants DELETE says so in its ``operations``, as the webhook plugins do.
Who asks (``REQUEST_USER``) and the warnings a plugin adds for the client
(``warn``, sent as ``Warning`` headers) travel in context variables the
API server sets per request, so the storage layer needn't carry them.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubepy.api import errors
from kubepy.kinds import Kind

CREATE, UPDATE, DELETE = "CREATE", "UPDATE", "DELETE"
WRITES = frozenset({CREATE, UPDATE})

# The authenticated caller of the request being admitted (a kubepy.api.auth.User), None inside the server.
REQUEST_USER: ContextVar[Any] = ContextVar("admission_request_user", default=None)
# Warnings for the client of the request being admitted; None where nobody would read them.
REQUEST_WARNINGS: ContextVar[list[str] | None] = ContextVar("admission_request_warnings", default=None)


def warn(message: str) -> None:
    """Tell the client of the current request (a ``Warning: 299 - "…"`` header)."""
    warnings = REQUEST_WARNINGS.get()
    if warnings is not None and message not in warnings:
        warnings.append(message)


@dataclass
class Attributes:
    res: Kind
    namespace: str | None
    obj: dict[str, Any]
    old: dict[str, Any] | None
    operation: str
    subresource: str | None = None
    dry_run: bool = False
    # One admission request, however many webhooks it meets (AdmissionReview's request.uid).
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    user: Any = field(default_factory=REQUEST_USER.get)
    mutated: bool = False  # a plugin changed ``obj`` on an UPDATE (the storage layer validates again)

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name") or "")

    def forbidden(self, message: str) -> errors.Forbidden:
        """Kubernetes' admission.NewForbidden: ``pods "x" is forbidden: <why>``."""
        res = self.res
        qual = f"{res.plural}.{res.group}" if res.group else res.plural
        return errors.Forbidden(f'{qual} "{self.name}" is forbidden: {message}',
                                details={"name": self.name, "group": res.group, "kind": res.plural})


class Plugin(Protocol):
    name: str

    async def admit(self, a: Attributes) -> None: ...

    async def validate(self, a: Attributes) -> None: ...


class Chain:
    def __init__(self, plugins: list[Any] | None = None) -> None:
        self.plugins: list[Any] = list(plugins or [])

    async def admit(self, a: Attributes) -> None:
        for p in self.plugins:
            if a.operation in getattr(p, "operations", WRITES):
                await p.admit(a)

    async def validate(self, a: Attributes) -> None:
        for p in self.plugins:
            if a.operation in getattr(p, "operations", WRITES):
                await p.validate(a)

    async def stop(self) -> None:
        for p in self.plugins:
            stop = getattr(p, "stop", None)
            if stop is not None:
                await stop()
