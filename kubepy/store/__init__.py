"""The state store: one interface with etcd's semantics, two backends.

Only the API server imports this package. Keys are strings, values bytes.
Every write bumps one global revision; a key's ``mod_revision`` is the
revision of its last write. ``resourceVersion`` in the API *is* that
revision.

Error tree::

    StoreError
    ├── KeyExistsError        create of a key that exists
    ├── KeyNotFoundError      update/delete of a key that does not exist
    ├── ConflictError         update/delete guarded by a stale revision
    ├── CompactedError        read/watch from a revision compaction removed
    └── StoreUnavailableError backend unreachable or broken
"""

from kubepy.store.base import (
    CompactedError,
    ConflictError,
    Event,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    RangeResult,
    Store,
    StoreError,
    StoreUnavailableError,
    open_store,
)

__all__ = [
    "CompactedError",
    "ConflictError",
    "Event",
    "KeyExistsError",
    "KeyNotFoundError",
    "KeyValue",
    "RangeResult",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "open_store",
]
