"""Slow-start batches: many similar API calls, without flooding a failing server.

Kubernetes' ``slowStartBatch`` (``pkg/controller/replicaset``): call in
batches of 1, 2, 4, … and stop after the first batch with a failure, so a
quota or admission error costs one request, not hundreds. Pure asyncio;
the calls themselves are the caller's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["slow_start_batch"]


async def slow_start_batch(count: int, fn: Callable[[], Awaitable[object]], *,
                           initial_batch: int = 1) -> tuple[int, BaseException | None]:
    """Call ``fn`` ``count`` times in batches of 1, 2, 4, …; stop after the
    first batch with a failure. Returns (successes, first error)."""
    remaining, successes = count, 0
    batch = min(remaining, initial_batch)
    while batch > 0:
        results = await asyncio.gather(*(fn() for _ in range(batch)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        successes += batch - len(errors)
        if errors:
            return successes, errors[0]
        remaining -= batch
        batch = min(2 * batch, remaining)
    return successes, None
