"""Client-library tests: fail any test that leaves asyncio tasks running."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture(autouse=True)
async def no_leftover_tasks():
    yield
    await asyncio.sleep(0)  # let just-cancelled tasks finish
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not left, f"tasks left running: {left}"
