"""Controller references: which owner controls an object, and claiming objects for one.

Kubernetes' ``pkg/controller/controller_ref_manager.go`` for any owner kind
and any owned resource. An owner (a ReplicaSet, a Deployment, a StatefulSet,
a Job, ...) *claims* the objects of its namespace that it controls:

* owned by someone else: ignored;
* owned by this owner and matching its selector: claimed (even while the
  owner is being deleted: keeping costs no write);
* owned but no longer matching: released, unless the owner is being deleted;
* an orphan that matches: adopted, unless the owner or the orphan is being
  deleted, and only after a fresh read of the owner shows the same UID and
  no deletionTimestamp (a cached owner may already be gone: adopting for it
  would hand the object to the garbage collector).

Event handlers use ``resolve_controller_ref`` (which cached owner does this
object's controller reference name?) and ``owners_selecting`` (which owners
would adopt this orphan?) to decide what to enqueue.

Talks to the API server only through the client it is given: one GET of the
owner before the first adoption, and strategic-merge patches of the owned
objects' ``metadata.ownerReferences``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubepy.meta.selectors import LabelSelector, label_selector_from_dict
from kubepy.client import Cache, NotFoundError, object_key

log = logging.getLogger(__name__)

__all__ = [
    "ControllerRefManager",
    "OwnerKind",
    "controller_ref",
    "owner_reference",
    "owners_selecting",
    "owners_to_sync_on_update",
    "resolve_controller_ref",
    "selector_of",
]


@dataclass(frozen=True)
class OwnerKind:
    """What an owner is: its ownerReference fields and where to read it again."""

    api_version: str  # "apps/v1"
    kind: str         # "ReplicaSet"
    resource: str     # "replicasets": the plural the owner is re-read from before adopting


def controller_ref(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def owner_reference(owner: dict[str, Any], kind: OwnerKind) -> dict[str, Any]:
    """The controller reference ``owner`` puts on what it creates or adopts."""
    return {"apiVersion": kind.api_version, "kind": kind.kind, "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def selector_of(owner: dict[str, Any]) -> LabelSelector:
    """The owner's ``spec.selector`` (a missing one selects nothing: see ``LabelSelector.empty``)."""
    return label_selector_from_dict((owner.get("spec") or {}).get("selector"))


def resolve_controller_ref(obj: dict[str, Any], ref: dict[str, Any] | None, kind: OwnerKind,
                           owners: Cache) -> str | None:
    """The cache key of the owner ``ref`` names, if it is of ``kind`` and still that object (same UID)."""
    if ref is None or ref.get("kind") != kind.kind:
        return None
    key = f"{(obj.get('metadata') or {}).get('namespace')}/{ref.get('name')}"
    owner = owners.get(key)
    if owner is None or owner["metadata"].get("uid") != ref.get("uid"):
        return None
    return key


def owners_selecting(obj: dict[str, Any], owners: Cache, *,
                     selector: Callable[[dict[str, Any]], LabelSelector] = selector_of) -> list[str]:
    """Keys of the cached owners in ``obj``'s namespace whose selector matches its labels.

    An empty selector matches nothing here: an owner that slipped in without
    one must not adopt the whole namespace (upstream's GetPodReplicaSets).
    ``selector`` reads an owner's selector (a ReplicationController's is a label map)."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    keys = []
    for owner in owners.by_index("namespace", meta.get("namespace", "")):
        sel = selector(owner)
        if not sel.empty() and sel.matches(labels):
            keys.append(object_key(owner))
    return keys


def owners_to_sync_on_update(old: dict[str, Any], new: dict[str, Any], kind: OwnerKind, owners: Cache, *,
                             selector: Callable[[dict[str, Any]], LabelSelector] = selector_of) -> list[str]:
    """Keys of the owners an update of an owned object concerns.

    Its former controller if the reference changed (it may want a
    replacement), its current one; or, for an orphan whose labels or
    reference changed, every owner that would adopt it now."""
    old_ref, new_ref = controller_ref(old), controller_ref(new)
    ref_changed = (old_ref or {}).get("uid") != (new_ref or {}).get("uid")
    keys: list[str] = []
    if ref_changed and (old_key := resolve_controller_ref(old, old_ref, kind, owners)) is not None:
        keys.append(old_key)
    if new_ref is not None:
        if (key := resolve_controller_ref(new, new_ref, kind, owners)) is not None:
            keys.append(key)
        return keys
    labels_changed = (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get("labels")
    if ref_changed or labels_changed:
        keys.extend(owners_selecting(new, owners, selector=selector))
    return keys


class ControllerRefManager:
    """Claims ``resource`` objects for one owner (one instance per sync of that owner).

    ``on_written`` sees every object a patch returned (a controller that keeps
    its own writes for read-your-writes hooks in here)."""

    def __init__(self, client: Any, owner: dict[str, Any], kind: OwnerKind, *, resource: str,
                 selector: LabelSelector | None = None,
                 on_written: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.client = client
        self.owner = owner
        self.kind = kind
        self.resource = resource
        self.selector = selector if selector is not None else selector_of(owner)
        self.on_written = on_written
        self._can_adopt: bool | None = None

    @property
    def _uid(self) -> str:
        return str(self.owner["metadata"]["uid"])

    @property
    def _owner_deleting(self) -> bool:
        return bool(self.owner["metadata"].get("deletionTimestamp"))

    async def claim(self, objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The objects this owner controls, after adopting and releasing.

        Every object is tried; the first failed adoption or release (other
        than NotFound) is raised at the end, so the sync requeues."""
        claimed: list[dict[str, Any]] = []
        first_error: BaseException | None = None
        for obj in objects:
            try:
                mine = await self._claim_one(obj)
            except Exception as e:  # noqa: BLE001 - raised after every object had its turn
                first_error = first_error or e
                continue
            if mine is not None:
                claimed.append(mine)
        if first_error is not None:
            raise first_error
        return claimed

    async def _claim_one(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        meta = obj.get("metadata") or {}
        matches = self.selector.matches(meta.get("labels") or {})
        ref = controller_ref(obj)
        if ref is not None:
            if ref.get("uid") != self._uid:
                return None  # someone else's
            if matches:
                return obj
            if not self._owner_deleting:
                await self.release(obj)
            return None
        if not matches or self._owner_deleting or meta.get("deletionTimestamp"):
            return None
        if meta.get("namespace") != self.owner["metadata"].get("namespace"):
            return None
        if not await self.can_adopt():
            return None
        return await self.adopt(obj)

    async def can_adopt(self) -> bool:
        """A fresh read, once per manager: never adopt for an owner that is gone or going."""
        if self._can_adopt is None:
            meta = self.owner["metadata"]
            try:
                fresh = await self.client.get(self.kind.resource, meta["name"], namespace=meta.get("namespace"))
            except NotFoundError:
                self._can_adopt = False
            else:
                self._can_adopt = (fresh["metadata"].get("uid") == meta["uid"]
                                   and not fresh["metadata"].get("deletionTimestamp"))
            if not self._can_adopt:
                log.info("not adopting: owner gone or going kind=%s owner=%s", self.kind.kind, object_key(self.owner))
        return self._can_adopt

    async def adopt(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Put this owner's controller reference on ``obj``; the object as written, or None if it is gone."""
        # No resourceVersion precondition: the API server refuses a second
        # controller reference, so two adopters cannot both win.
        written = await self._patch_refs(obj, owner_reference(self.owner, self.kind))
        if written is not None:
            log.info("adopted kind=%s owner=%s resource=%s name=%s", self.kind.kind, object_key(self.owner),
                     self.resource, obj["metadata"]["name"])
        return written

    async def release(self, obj: dict[str, Any]) -> None:
        """Remove this owner's reference from ``obj`` (gone already is fine)."""
        if await self._patch_refs(obj, {"$patch": "delete", "uid": self._uid}) is not None:
            log.info("released kind=%s owner=%s resource=%s name=%s", self.kind.kind, object_key(self.owner),
                     self.resource, obj["metadata"]["name"])

    async def _patch_refs(self, obj: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any] | None:
        meta = obj["metadata"]
        try:
            written = await self.client.patch(self.resource, meta["name"], {"metadata": {"ownerReferences": [ref]}},
                                              namespace=meta.get("namespace"), patch_type="strategic")
        except NotFoundError:
            return None
        return self.on_written(written) if self.on_written is not None else written
