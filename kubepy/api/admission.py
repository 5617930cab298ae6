"""Admission: what runs on a write between defaulting and the store, as in Kubernetes.

The order is upstream's: the kind's defaults, then every plugin's ``admit``
(mutating: LimitRanger fills in container resources), then the kind's
validation, then every plugin's ``validate`` (ResourceQuota charges the
write, or refuses it). A plugin refuses with an ``errors.APIError``
(Kubernetes answers 403 Forbidden: ``pods "x" is forbidden: …``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from kubepy.api import errors
from kubepy.kinds import Kind

CREATE, UPDATE = "CREATE", "UPDATE"


@dataclass
class Attributes:
    res: Kind
    namespace: str | None
    obj: dict[str, Any]
    old: dict[str, Any] | None
    operation: str
    subresource: str | None = None
    dry_run: bool = False

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
            await p.admit(a)

    async def validate(self, a: Attributes) -> None:
        for p in self.plugins:
            await p.validate(a)

    async def stop(self) -> None:
        for p in self.plugins:
            stop = getattr(p, "stop", None)
            if stop is not None:
                await stop()
