"""The store contract every backend implements (see package docstring)."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import AsyncIterator, Literal


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    """One change. For DELETE, ``kv.value`` is the value that was deleted and
    ``kv.mod_revision`` is the revision of the delete itself."""

    type: Literal["PUT", "DELETE"]
    kv: KeyValue
    prev: KeyValue | None  # the key's previous state, None for a create


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KeyValue]
    revision: int  # the store revision this read saw
    more: bool  # True when ``limit`` cut the result short


class StoreError(Exception):
    pass


class KeyExistsError(StoreError):
    pass


class KeyNotFoundError(StoreError):
    pass


class ConflictError(StoreError):
    def __init__(self, message: str, current: KeyValue | None = None) -> None:
        super().__init__(message)
        self.current = current


class CompactedError(StoreError):
    def __init__(self, message: str, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class StoreUnavailableError(StoreError):
    pass


class Store(abc.ABC):
    """etcd semantics. All methods are coroutines except ``watch``."""

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    async def range(
        self, prefix: str, *, start: str | None = None, limit: int = 0, revision: int = 0
    ) -> RangeResult:
        """Keys starting with ``prefix`` and >= ``start`` (when given), sorted
        by key, as of ``revision`` (0: latest). ``limit`` 0 means all.
        Raises CompactedError when ``revision`` was compacted away."""

    async def range_all(self, prefix: str, *, page: int = 500) -> list[KeyValue]:
        """Every key under ``prefix``, read ``page`` keys at a time (the latest revision of each page)."""
        out: list[KeyValue] = []
        start: str | None = None
        while True:
            result = await self.range(prefix, start=start, limit=page)
            out.extend(result.kvs)
            if not result.more or not result.kvs:
                return out
            start = result.kvs[-1].key + "\x00"

    @abc.abstractmethod
    async def create(self, key: str, value: bytes) -> KeyValue:
        """Raises KeyExistsError."""

    @abc.abstractmethod
    async def update(self, key: str, value: bytes, *, revision: int) -> KeyValue:
        """Write only if the key's mod_revision is still ``revision``.
        Raises KeyNotFoundError, or ConflictError carrying the current kv."""

    @abc.abstractmethod
    async def delete(self, key: str, *, revision: int | None = None) -> KeyValue:
        """Delete (guarded by ``revision`` when given); returns the deleted kv
        with mod_revision set to the revision of the delete."""

    @abc.abstractmethod
    def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[Event]:
        """Every event on keys under ``prefix`` with revision >= start_revision,
        in revision order, then live events until the iterator is closed.
        Raises CompactedError (on first iteration) when start_revision is at
        or below the compacted revision."""

    @abc.abstractmethod
    async def current_revision(self) -> int: ...

    async def prefix_revisions(self, prefix: str) -> tuple[int, int] | None:
        """(a revision at or after the newest write, delete included, of any key under ``prefix``,
        the store's revision), both as of one instant; None when this store can't say cheaply.
        ``prefix`` ends in "/". A watch cache that has applied the first holds what a read of the
        prefix returns at any revision from there to the second (``WatchCache.snapshot``)."""
        return None

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Forget history older than ``revision`` (current values stay)."""

    @abc.abstractmethod
    async def close(self) -> None: ...


def open_store(url: str, *, data_dir: str, etcd_ca: str | None = None, etcd_cert: str | None = None,
               etcd_key: str | None = None) -> Store:
    """``sqlite`` (file in data_dir), ``sqlite:///path.db`` or ``etcd://h:p,h:p`` (over TLS when
    ``etcd_ca`` or a client certificate is given)."""
    if url == "sqlite" or url.startswith("sqlite:"):
        from kubepy.store.sqlite import SQLiteStore
        import os

        path = url[len("sqlite://"):] if url.startswith("sqlite://") else os.path.join(data_dir, "state.db")
        return SQLiteStore(path)
    if url.startswith("etcd://"):
        from kubepy.store.etcd import EtcdStore

        scheme = "https" if etcd_ca or etcd_cert else "http"
        endpoints = [f"{scheme}://{hp}" for hp in url[len("etcd://"):].split(",") if hp]
        if not endpoints:
            raise ValueError(f"no etcd endpoints in {url!r}")
        return EtcdStore(endpoints, ca_file=etcd_ca, cert_file=etcd_cert, key_file=etcd_key)
    if etcd_ca or etcd_cert:
        raise ValueError("--etcd-cafile/--etcd-certfile/--etcd-keyfile need an etcd:// store")
    raise ValueError(f"unknown store {url!r}: use sqlite or etcd://HOST:PORT[,HOST:PORT]")
