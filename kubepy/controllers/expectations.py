"""Expectations: what a controller asked for and has not yet seen in its cache.

Kubernetes' ``ControllerExpectations`` (with the deletion side tracked by
object key, as its ``UIDTrackingControllerExpectations``). After a sync asks
for N creations or deletes some objects, the owner's key is *unsatisfied*
until the informer has shown every one of them; until then a sync must not
act again, or it would create or delete twice what the lagging cache does
not show yet. A record older than ``EXPECTATIONS_TIMEOUT`` counts as
satisfied: a lost watch event must not stall an owner forever.

Pure bookkeeping in memory, one instance per controller; keys are the
owners' "namespace/name", object keys the owned objects'.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

__all__ = ["EXPECTATIONS_TIMEOUT", "ControllerExpectations"]

EXPECTATIONS_TIMEOUT = 300.0  # seconds, as Kubernetes' ExpectationsTimeout (5 minutes)


@dataclass
class _Expected:
    adds: int
    deletes: set[str]  # object keys: a deletion counts once however often it is seen
    since: float


class ControllerExpectations:
    """Expected creations and deletions per owner key."""

    def __init__(self, timeout: float = EXPECTATIONS_TIMEOUT, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self._pending: dict[str, _Expected] = {}

    def satisfied(self, key: str) -> bool:
        """True when nothing is outstanding for ``key``, or its record expired."""
        exp = self._pending.get(key)
        if exp is None or (exp.adds <= 0 and not exp.deletes):
            return True
        if self._clock() - exp.since > self.timeout:
            log.info("expectations timed out key=%s adds=%d deletes=%d", key, exp.adds, len(exp.deletes))
            return True
        return False

    def expect_creations(self, key: str, count: int) -> None:
        """Replace ``key``'s record: ``count`` creations are on their way."""
        self._pending[key] = _Expected(adds=count, deletes=set(), since=self._clock())

    def expect_deletions(self, key: str, object_keys: Iterable[str]) -> None:
        """Replace ``key``'s record: these objects are being deleted."""
        self._pending[key] = _Expected(adds=0, deletes=set(object_keys), since=self._clock())

    def expect(self, key: str, *, creations: int, deletions: Iterable[str]) -> None:
        """Replace ``key``'s record with both at once (a sync that creates and deletes)."""
        self._pending[key] = _Expected(adds=creations, deletes=set(deletions), since=self._clock())

    def creation_observed(self, key: str) -> None:
        exp = self._pending.get(key)
        if exp is not None and exp.adds > 0:
            exp.adds -= 1

    def lower_creations(self, key: str, count: int) -> None:
        """``count`` expected creations will never come (their requests failed)."""
        for _ in range(count):
            self.creation_observed(key)

    def deletion_observed(self, key: str, object_key: str) -> None:
        exp = self._pending.get(key)
        if exp is not None:
            exp.deletes.discard(object_key)

    def forget(self, key: str) -> None:
        """The owner is gone: drop its record."""
        self._pending.pop(key, None)

    def pending(self, key: str) -> tuple[int, int]:
        """(creations, deletions) still expected for ``key``."""
        exp = self._pending.get(key)
        return (exp.adds, len(exp.deletes)) if exp else (0, 0)
