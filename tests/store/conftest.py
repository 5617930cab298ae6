"""Fixtures for the store contract suite: one ``store`` per backend.

The etcd backend runs against a real etcd process started once per session
on loopback (random free ports, throwaway data dir).  A missing etcd binary
fails those tests instead of skipping them: CI installs etcd, and a silently
skipped backend would look like a passing one.
"""

from __future__ import annotations

import logging
import uuid
from typing import Callable, Iterator

import pytest

from kubepy.store.base import Store
from kubepy.store.etcd import EtcdStore
from kubepy.store.sqlite import SQLiteStore
from tests.etcd import running_etcd

log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def etcd_endpoint() -> Iterator[str]:
    with running_etcd() as endpoint:
        yield endpoint


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("etcd", marks=[pytest.mark.etcd, pytest.mark.slow]),
    ]
)
def store_factory(request: pytest.FixtureRequest, tmp_path) -> Callable[[], Store]:
    """Builds a store of the parametrized backend (a factory so reopen tests
    can make a second one)."""
    if request.param == "sqlite":
        path = str(tmp_path / "state.db")
        return lambda: SQLiteStore(path)
    endpoint = request.getfixturevalue("etcd_endpoint")
    return lambda: EtcdStore([endpoint])


@pytest.fixture
async def store(store_factory: Callable[[], Store]):
    s = store_factory()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses (the etcd server is shared)."""
    return f"/test/{uuid.uuid4().hex[:12]}/"
