"""The Secrets and ConfigMaps a node's pods use, each watched on its own.

Talks to: the API server, through one single-object informer per
referenced object (``fieldSelector=metadata.name=X`` in its namespace), as
upstream's watch-based secret and configmap managers do: the node
authorizer lets a kubelet read only what its own pods reference and refuses
it a list or watch of every Secret. ``want()`` starts the watches of newly
referenced objects and stops those no pod uses any more; ``synced()`` waits
until the given ones have been read once, so a new pod never starts with a
"not found" that is only a watch not yet answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from kubepy.client import Informer

log = logging.getLogger(__name__)

Ref = tuple[str, str]  # (namespace, name)


class ReferencedObjects:
    def __init__(self, client: Any, resource: str, on_change: Callable[[dict[str, Any]], None]) -> None:
        self.client = client
        self.resource = resource
        self.on_change = on_change
        self._watches: dict[Ref, tuple[Informer, asyncio.Task[None]]] = {}

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        entry = self._watches.get((namespace, name))
        return entry[0].cache.get(f"{namespace}/{name}") if entry else None

    def want(self, refs: Iterable[Ref]) -> None:
        wanted = {r for r in refs if r[1]}
        for ref in wanted - set(self._watches):
            ns, name = ref
            inf = Informer(self.client, self.resource, namespace=ns, field_selector=f"metadata.name={name}")
            inf.add_handler(self.on_change, lambda _old, new: self.on_change(new), self.on_change)
            self._watches[ref] = (inf, asyncio.create_task(inf.run(), name=f"kubelet:{self.resource}:{ns}/{name}"))
        for ref in set(self._watches) - wanted:
            _, task = self._watches.pop(ref)
            task.cancel()

    async def synced(self, refs: Iterable[Ref], timeout: float) -> None:
        waits = [self._watches[r][0].wait_synced() for r in refs if r in self._watches]
        if waits:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), timeout)

    async def stop(self) -> None:
        tasks = [t for _, t in self._watches.values()]
        self._watches.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
