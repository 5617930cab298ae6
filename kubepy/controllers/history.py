"""Revision history in ControllerRevisions, shared by the DaemonSet and StatefulSet controllers.

Kubernetes' ``pkg/controller/history`` and the ``constructHistory`` step both
controllers run on every sync: the owner's pod template, as a strategic-merge
patch (``{"spec": {"template": {..., "$patch": "replace"}}}``), is snapshotted
in a ControllerRevision named ``<owner>-<hash>``, numbered one above the
highest revision so far.  A template seen before gets its old revision
renumbered to the newest (that is how ``kubectl rollout undo`` works: it
patches the owner with an old revision's ``data``, and the controller then
finds that revision again).  Hash collisions with a revision of different
data bump the owner's ``status.collisionCount``.  Old revisions no pod uses
are deleted beyond ``spec.revisionHistoryLimit`` (default 10).

Talks to the API server only through the client it is given.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kubepy.client import AlreadyExistsError, NotFoundError
from kubepy.controllers.ownership import OwnerKind, controller_ref, owner_reference

log = logging.getLogger(__name__)

__all__ = [
    "REVISION_LABEL",
    "History",
    "compute_hash",
    "fnv32a",
    "safe_encode",
    "revision_data",
    "hash_revision",
    "sort_revisions",
    "next_revision",
    "owned_revisions",
    "sync_history",
]

REVISION_LABEL = "controller-revision-hash"  # on pods, naming the revision they were made from
DEFAULT_HISTORY_LIMIT = 10

_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' rand.SafeEncodeString alphabet: no vowels, no 0/1/3
_FNV_OFFSET, _FNV_PRIME = 0x811C9DC5, 0x01000193


# -- hashing -----------------------------------------------------------------------
def fnv32a(data: bytes, h: int = _FNV_OFFSET) -> int:
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    """Kubernetes' SafeEncodeString: each byte to a letter that cannot spell words."""
    return "".join(_ALPHANUMS[b % len(_ALPHANUMS)] for b in text.encode())


def compute_hash(value: Any, collision_count: int | None = None) -> str:
    """fnv32a over ``value`` as canonical JSON (plus the collision count),
    rendered like Kubernetes' ComputeHash: the pod-template-hash, a revision's hash."""
    h = fnv32a(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())
    if collision_count is not None:
        h = fnv32a(int(collision_count).to_bytes(4, "little"), h)
    return safe_encode(str(h))


# -- revisions ---------------------------------------------------------------------
def revision_data(owner: dict[str, Any]) -> dict[str, Any]:
    """What a revision records: the owner's pod template, as a patch that replaces it."""
    template = copy.deepcopy((owner.get("spec") or {}).get("template") or {})
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def hash_revision(data: dict[str, Any], collision_count: int | None) -> str:
    return compute_hash(data, collision_count)


def sort_revisions(revisions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Oldest first: by revision, then creation time, then name (upstream's byRevision)."""
    return sorted(revisions, key=lambda r: (int(r.get("revision") or 0),
                                            (r.get("metadata") or {}).get("creationTimestamp") or "",
                                            (r.get("metadata") or {}).get("name") or ""))


def next_revision(revisions: Iterable[dict[str, Any]]) -> int:
    return max((int(r.get("revision") or 0) for r in revisions), default=0) + 1


def owned_revisions(owner: dict[str, Any], revisions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The revisions whose controller reference is ``owner`` (by UID), oldest first."""
    uid = owner["metadata"]["uid"]
    return sort_revisions(r for r in revisions if (controller_ref(r) or {}).get("uid") == uid)


@dataclass
class History:
    """The outcome of a sync: every owned revision (oldest first), the one the
    owner's pods run now (``current``: status.currentRevision's, or the update
    one when there is none) and the one its template asks for (``update``)."""

    revisions: list[dict[str, Any]]
    current: dict[str, Any]
    update: dict[str, Any]
    collision_count: int


async def sync_history(client: Any, owner: dict[str, Any], kind: OwnerKind, revisions: list[dict[str, Any]], *,
                       current_name: str | None = None) -> History:
    """Find or make the revision of ``owner``'s template (constructHistory).

    ``revisions`` are the owner's own ControllerRevisions (``owned_revisions``);
    ``current_name`` the revision status says its pods run.  Creates or
    renumbers at most one revision; the caller writes ``collision_count`` and
    the revision names to the owner's status.
    """
    meta = owner["metadata"]
    ns = meta["namespace"]
    collision = int((owner.get("status") or {}).get("collisionCount") or 0)
    data = revision_data(owner)
    revisions = sort_revisions(revisions)
    equal = [r for r in revisions if r.get("data") == data]
    latest = revisions[-1] if revisions else None
    if equal and latest is not None and equal[-1]["metadata"]["name"] == latest["metadata"]["name"]:
        update = equal[-1]
    elif equal:
        # A template seen before (a rollback): its revision becomes the newest.
        update = await client.patch("controllerrevisions", equal[-1]["metadata"]["name"],
                                    {"revision": next_revision(revisions)}, namespace=ns)
        log.info("revision renumbered owner=%s/%s revision=%s number=%s", ns, meta["name"],
                 update["metadata"]["name"], update.get("revision"))
        revisions = sort_revisions([r for r in revisions if r["metadata"]["name"] != update["metadata"]["name"]]
                                   + [update])
    else:
        update, collision = await _create_revision(client, owner, kind, data, next_revision(revisions), collision)
        revisions = sort_revisions(revisions + [update])
    current = next((r for r in revisions if r["metadata"]["name"] == current_name), update)
    return History(revisions=revisions, current=current, update=update, collision_count=collision)


async def _create_revision(client: Any, owner: dict[str, Any], kind: OwnerKind, data: dict[str, Any],
                           number: int, collision: int) -> tuple[dict[str, Any], int]:
    """Create the revision; a name taken by other data bumps the collision count and tries again."""
    meta = owner["metadata"]
    ns = meta["namespace"]
    labels = dict(((owner.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {})
    while True:
        h = hash_revision(data, collision or None)
        name = f"{meta['name']}-{h}"
        rev = {
            "apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": name, "namespace": ns, "labels": {**labels, REVISION_LABEL: h},
                         "ownerReferences": [owner_reference(owner, kind)]},
            "data": data, "revision": number,
        }
        if meta.get("annotations"):
            # As upstream: the owner's annotations go along (kubectl rollout history's CHANGE-CAUSE).
            rev["metadata"]["annotations"] = dict(meta["annotations"])
        try:
            created = await client.create("controllerrevisions", rev, namespace=ns)
            log.info("revision created owner=%s/%s revision=%s number=%d", ns, meta["name"], name, number)
            return created, collision
        except AlreadyExistsError:
            try:
                existing = await client.get("controllerrevisions", name, namespace=ns)
            except NotFoundError:
                continue  # deleted in between: create it again
            if existing.get("data") == data and (controller_ref(existing) or {}).get("uid") == meta["uid"]:
                return existing, collision
            collision += 1
            log.info("revision hash collision owner=%s/%s name=%s collisionCount=%d", ns, meta["name"], name,
                     collision)


async def truncate_history(client: Any, owner: dict[str, Any], history: History, live: set[str]) -> list[str]:
    """Delete the oldest revisions beyond ``spec.revisionHistoryLimit`` that are
    neither current, nor the update, nor used by a live pod (``live``: names).
    Returns the names deleted."""
    limit = (owner.get("spec") or {}).get("revisionHistoryLimit")
    limit = DEFAULT_HISTORY_LIMIT if limit is None else int(limit)
    keep = live | {history.current["metadata"]["name"], history.update["metadata"]["name"]}
    old = [r for r in history.revisions if r["metadata"]["name"] not in keep]
    deleted = []
    for r in old[:max(len(old) - limit, 0)]:
        name = r["metadata"]["name"]
        try:
            await client.delete("controllerrevisions", name, namespace=owner["metadata"]["namespace"])
        except NotFoundError:
            pass
        deleted.append(name)
        log.info("revision deleted owner=%s/%s revision=%s reason=history-limit", owner["metadata"]["namespace"],
                 owner["metadata"]["name"], name)
    return deleted
