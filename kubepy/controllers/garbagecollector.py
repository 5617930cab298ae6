"""Garbage collector: deletes dependents whose owners are gone; foreground and orphan deletion.

The ownership graph is the ``owner`` index (ownerReference uids) of the
shared informers of every kind that can own or be owned (``graph_resources()``;
events are left out). Queue items are ``"<resource>|<key>"``; one item is
looked at in two roles:

- as an owner being deleted: with the ``orphan`` finalizer its dependents
  lose their ownerReference to it, with ``foregroundDeletion`` they are
  deleted and the owner waits for those with ``blockOwnerDeletion``; then
  the finalizer is removed and the API server deletes the owner;
- as a dependent: when none of its owners is left (each absence confirmed
  by a live GET comparing uids - the caches may lag) it is deleted in the
  background; when some owner is left, references to the missing ones are
  dropped and it stays.

Custom resources join the graph at run time, as upstream's discovery-driven
monitors do: once a CRD is Established, an informer of its kind starts (and
stops when the CRD goes), so an operator's Deployment owned by its custom
resource is collected when that resource is deleted. A kind served by no
CRD stays UNKNOWN and is never acted on.

Reads the shared informers; writes through the client.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any

from kubepy.client import ConflictError, Informer, NotFoundError, WorkQueue, object_key, run_workers
from kubepy.controllers.context import DEFAULT_INDEXERS, ControllerContext
from kubepy.kinds import Kind, all_kinds, by_kind
from kubepy.kinds.apiextensions.customresource import kinds_for

log = logging.getLogger(__name__)


def graph_resources() -> tuple[str, ...]:
    """Every served kind but events: what can own or be owned."""
    return tuple(dict.fromkeys(k.plural for k in all_kinds() if k.plural != "events" and not k.virtual))


FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
WAIT_FOR_DEPENDENTS = 1.0  # seconds between looks at a foreground owner whose dependents linger


class OwnerState(Enum):
    ALIVE = "alive"
    ABSENT = "absent"  # confirmed gone, or replaced by an object with another uid
    DELETING_FOREGROUND = "deleting-foreground"  # waits for its dependents
    UNKNOWN = "unknown"  # a kind we do not serve: never act on it


@dataclass(frozen=True)
class Decision:
    """What to do with a dependent: ``keep``, ``remove-refs`` (to ``uids``) or ``delete``."""

    action: str
    uids: tuple[str, ...] = ()
    policy: str = "Background"


# -- decisions (pure) ---------------------------------------------------------
def decide_dependent(owner_states: dict[str, OwnerState], *, has_dependents: bool) -> Decision:
    """Kubernetes' attemptToDeleteItem, given each owner uid's state."""
    solid = [u for u, s in owner_states.items() if s in (OwnerState.ALIVE, OwnerState.UNKNOWN)]
    dangling = [u for u, s in owner_states.items() if s is OwnerState.ABSENT]
    waiting = [u for u, s in owner_states.items() if s is OwnerState.DELETING_FOREGROUND]
    if not owner_states:
        return Decision("keep")
    if solid:
        if dangling or waiting:
            return Decision("remove-refs", tuple(dangling + waiting))
        return Decision("keep")
    if waiting and has_dependents:
        # An owner waits on us, and we have dependents of our own: delete them
        # first, so the whole chain goes in the foreground.
        return Decision("delete", policy="Foreground")
    return Decision("delete", policy="Background")


def blocking_dependents(owner_uid: str, dependents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dependents a foreground deletion of ``owner_uid`` must wait for."""
    out = []
    for dep in dependents:
        for ref in (dep.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("uid") == owner_uid and ref.get("blockOwnerDeletion"):
                out.append(dep)
                break
    return out


def without_owner_refs(obj: dict[str, Any], uids: set[str]) -> list[dict[str, Any]]:
    return [r for r in (obj.get("metadata") or {}).get("ownerReferences") or [] if r.get("uid") not in uids]


def resource_of_ref(ref: dict[str, Any]) -> Kind | None:
    api_version = ref.get("apiVersion") or ""
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    return by_kind(group, ref.get("kind") or "")


# -- the controller -------------------------------------------------------------
class GarbageCollector:
    name = "garbagecollector"

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.queue = WorkQueue(name=self.name)
        self.informers: dict[str, Informer] = {}
        # resource (a built-in plural, or "<plural>.<group>" of a custom kind) -> what the client is given
        self.apis: dict[str, str | Kind] = {}
        self.custom: dict[tuple[str, str], str] = {}     # (group, kind) of a served custom kind -> resource
        self.custom_tasks: dict[str, asyncio.Task[None]] = {}
        for resource in graph_resources():
            self._watch(resource, ctx.informers.informer(resource), resource)
        crds = self.informers.get("customresourcedefinitions")
        if crds is not None:
            crds.add_handler(self._crd_changed, lambda old, new: self._crd_changed(new), self._crd_deleted)

    def _watch(self, resource: str, inf: Informer, api: str | Kind) -> None:
        self.informers[resource] = inf
        self.apis[resource] = api
        inf.add_handler(lambda o, r=resource: self._changed(r, o),
                        lambda old, new, r=resource: self._changed(r, new),
                        lambda o, r=resource: self._deleted(r, o))

    # -- custom kinds --------------------------------------------------------------
    def _crd_changed(self, crd: dict[str, Any]) -> None:
        established = any(c.get("type") == "Established" and c.get("status") == "True"
                          for c in (crd.get("status") or {}).get("conditions") or [])
        spec = crd.get("spec") or {}
        served = kinds_for(crd) if established else []
        if not served:
            return
        kind = served[0]  # every served version shows the same objects
        resource = f"{kind.plural}.{spec.get('group')}"
        if resource in self.informers:
            return
        inf = Informer(self.client, kind, indexers=dict(DEFAULT_INDEXERS))  # type: ignore[arg-type]
        self._watch(resource, inf, kind)
        self.custom[(str(spec.get("group")), str((spec.get("names") or {}).get("kind")))] = resource
        self.custom_tasks[resource] = asyncio.get_running_loop().create_task(inf.run(), name=f"gc-informer:{resource}")
        log.info("custom kind monitored resource=%s", resource)

    def _crd_deleted(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        resource = self.custom.pop((str(spec.get("group")), str((spec.get("names") or {}).get("kind"))), None)
        if resource is None:
            return
        task = self.custom_tasks.pop(resource, None)
        if task is not None:
            task.cancel()
        self.informers.pop(resource, None)
        self.apis.pop(resource, None)
        log.info("custom kind unmonitored resource=%s", resource)

    def _resource_of_ref(self, ref: dict[str, Any]) -> tuple[str, Kind] | None:
        """The graph resource and kind an ownerReference names (built-in or served custom kind)."""
        builtin = resource_of_ref(ref)
        if builtin is not None and builtin.plural in self.informers:
            return builtin.plural, builtin
        api_version = ref.get("apiVersion") or ""
        group = api_version.split("/", 1)[0] if "/" in api_version else ""
        resource = self.custom.get((group, ref.get("kind") or ""))
        api = self.apis.get(resource or "")
        return (resource, api) if resource and isinstance(api, Kind) else None

    # -- handlers --------------------------------------------------------------
    def _changed(self, resource: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        finalizers = meta.get("finalizers") or []
        if meta.get("ownerReferences") or (meta.get("deletionTimestamp") and (
                FOREGROUND in finalizers or ORPHAN in finalizers)):
            self.queue.add(f"{resource}|{object_key(obj)}")

    def _deleted(self, resource: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        if uid:
            for dep_resource, dep in self._dependents(uid):
                self.queue.add(f"{dep_resource}|{object_key(dep)}")
        # A foreground owner waiting for this object may go now.
        for ref in meta.get("ownerReferences") or []:
            found = self._resource_of_ref(ref)
            if found is not None:
                key = f"{meta.get('namespace')}/{ref.get('name')}" if found[1].namespaced else str(ref.get("name"))
                self.queue.add(f"{found[0]}|{key}")

    def _dependents(self, uid: str) -> list[tuple[str, dict[str, Any]]]:
        return [(resource, dep) for resource, inf in self.informers.items()
                for dep in inf.cache.by_index("owner", uid)]

    async def run(self) -> None:
        try:
            await run_workers(self.queue, self.reconcile, workers=self.ctx.config.concurrent_syncs, logger=log)
        finally:
            for task in self.custom_tasks.values():
                task.cancel()
            await asyncio.gather(*self.custom_tasks.values(), return_exceptions=True)

    # -- one object ------------------------------------------------------------
    async def reconcile(self, item: str) -> None:
        resource, key = item.split("|", 1)
        inf = self.informers.get(resource)
        obj = inf.cache.get(key) if inf is not None else None
        if obj is None:
            return
        meta = obj["metadata"]
        finalizers = meta.get("finalizers") or []
        if meta.get("deletionTimestamp") and ORPHAN in finalizers:
            await self._orphan_dependents(resource, obj)
            return
        if meta.get("deletionTimestamp") and FOREGROUND in finalizers \
                and not await self._delete_dependents_first(resource, obj):
            self.queue.add_after(item, WAIT_FOR_DEPENDENTS)
            return
        if meta.get("ownerReferences") and not meta.get("deletionTimestamp"):
            await self._attempt_to_delete(resource, obj)

    async def _orphan_dependents(self, resource: str, owner: dict[str, Any]) -> None:
        uid = owner["metadata"]["uid"]
        for dep_resource, dep in self._dependents(uid):
            await self._remove_refs(dep_resource, dep, {uid})
        await self._remove_finalizer(resource, owner, ORPHAN)
        log.info("dependents orphaned owner=%s/%s", resource, object_key(owner))

    async def _delete_dependents_first(self, resource: str, owner: dict[str, Any]) -> bool:
        """Delete the owner's dependents; True once none that blocks is left
        and the foregroundDeletion finalizer is removed."""
        uid = owner["metadata"]["uid"]
        dependents = self._dependents(uid)
        for dep_resource, dep in dependents:
            if not dep["metadata"].get("deletionTimestamp"):
                has_own = bool(self._dependents(dep["metadata"].get("uid", "")))
                await self._delete(dep_resource, dep, "Foreground" if has_own else "Background",
                                   reason=f"owner {resource}/{object_key(owner)} deleted in foreground")
        blocking = blocking_dependents(uid, [dep for _, dep in dependents])
        if blocking:
            log.debug("foreground owner waits owner=%s/%s blocking=%d", resource, object_key(owner), len(blocking))
            return False
        await self._remove_finalizer(resource, owner, FOREGROUND)
        log.info("foreground deletion done owner=%s/%s", resource, object_key(owner))
        return True

    async def _attempt_to_delete(self, resource: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        states = {ref["uid"]: await self._owner_state(meta.get("namespace"), ref)
                  for ref in meta.get("ownerReferences") or [] if ref.get("uid")}
        decision = decide_dependent(states, has_dependents=bool(self._dependents(meta.get("uid", ""))))
        if decision.action == "remove-refs":
            await self._remove_refs(resource, obj, set(decision.uids))
            log.info("owner references removed object=%s/%s owners=%s", resource, object_key(obj),
                     ",".join(decision.uids))
        elif decision.action == "delete":
            await self._delete(resource, obj, decision.policy, reason="all owners gone")

    async def _owner_state(self, namespace: str | None, ref: dict[str, Any]) -> OwnerState:
        found = self._resource_of_ref(ref)
        if found is None:
            return OwnerState.UNKNOWN
        resource, res = found
        if res.namespaced and not namespace:
            return OwnerState.UNKNOWN  # a cluster-scoped object cannot have a namespaced owner
        key = f"{namespace}/{ref.get('name')}" if res.namespaced else str(ref.get("name"))
        inf = self.informers.get(resource)
        owner = inf.cache.get(key) if inf is not None else None
        if owner is None or owner["metadata"].get("uid") != ref["uid"]:
            # The cache may not have seen it yet: only the API server can say it is gone.
            try:
                owner = await self.client.get(self.apis[resource], str(ref.get("name")), namespace=namespace)
            except NotFoundError:
                return OwnerState.ABSENT
            if owner["metadata"].get("uid") != ref["uid"]:
                return OwnerState.ABSENT
        m = owner["metadata"]
        if m.get("deletionTimestamp") and FOREGROUND in (m.get("finalizers") or []):
            return OwnerState.DELETING_FOREGROUND
        return OwnerState.ALIVE

    # -- writes ------------------------------------------------------------------
    async def _delete(self, resource: str, obj: dict[str, Any], policy: str, *, reason: str) -> None:
        meta = obj["metadata"]
        try:
            await self.client.delete(self.apis.get(resource, resource), meta["name"],
                                     namespace=meta.get("namespace"), propagation_policy=policy,
                                     preconditions={"uid": meta.get("uid")})
        except NotFoundError:
            return
        except ConflictError:
            return  # replaced by an object with another uid: not ours to delete
        log.info("dependent deleted object=%s/%s policy=%s reason=%s", resource, object_key(obj), policy,
                 reason.replace(" ", "_"))

    async def _remove_refs(self, resource: str, obj: dict[str, Any], uids: set[str]) -> None:
        meta = obj["metadata"]
        try:
            live = await self.client.get(self.apis.get(resource, resource), meta["name"],
                                         namespace=meta.get("namespace"))
        except NotFoundError:
            return
        if live["metadata"].get("uid") != meta.get("uid"):
            return
        refs = without_owner_refs(live, uids)
        if refs == (live["metadata"].get("ownerReferences") or []):
            return
        live["metadata"]["ownerReferences"] = refs
        if not refs:
            live["metadata"].pop("ownerReferences")
        await self.client.update(self.apis.get(resource, resource), live)  # 409 on a concurrent write: retried

    async def _remove_finalizer(self, resource: str, obj: dict[str, Any], finalizer: str) -> None:
        meta = obj["metadata"]
        try:
            live = await self.client.get(self.apis.get(resource, resource), meta["name"],
                                         namespace=meta.get("namespace"))
        except NotFoundError:
            return
        finalizers = live["metadata"].get("finalizers") or []
        if live["metadata"].get("uid") != meta.get("uid") or finalizer not in finalizers:
            return
        live["metadata"]["finalizers"] = [f for f in finalizers if f != finalizer]
        await self.client.update(self.apis.get(resource, resource), live)
