"""Object semantics on top of the key-value store (Kubernetes' generic registry).

What happens to an object on create, update, delete, list: metadata
(uid, creationTimestamp, generation, generateName), defaulting and
validation, status/spec separation, optimistic concurrency, graceful and
finalizer-guarded deletion, ClusterIP/NodePort allocation, dry runs.
HTTP lives in ``server.py``; this module speaks dicts and APIErrors.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable

from kubepy import kinds
from kubepy.api import admission, errors, objects
from kubepy.kinds import validation
from kubepy.api.allocator import AllocationError, ServiceAllocator
from kubepy.api.reservations import Reservations, Taken, held
from kubepy.kinds import Kind, by_plural
from kubepy.store import (
    CompactedError,
    ConflictError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    Store,
    StoreError,
    StoreUnavailableError,
)

log = logging.getLogger(__name__)

Mutator = Callable[[dict[str, Any]], dict[str, Any]]
# Records a write's managed fields in the new object, given the stored one (None: a create);
# kubepy.api.fieldmanager's, bound to the request's manager (see server.py).
ManagedFields = Callable[[dict[str, Any] | None, dict[str, Any]], None]
Matcher = Callable[[dict[str, Any]], bool]

_UPDATE_RETRIES = 16
_LIST_CHUNK = 500


@dataclass
class DeleteOptions:
    grace_period: int | None = None
    propagation: str | None = None  # Background | Foreground | Orphan
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    dry_run: bool = False


def _conflict(res: Kind, name: str) -> errors.Conflict:
    return errors.Conflict(
        f'Operation cannot be fulfilled on {res.plural}{"." + res.group if res.group else ""} "{name}": '
        "the object has been modified; please apply your changes to the latest version and try again",
        details={"name": name, "group": res.group, "kind": res.plural},
    )


def not_found(res: Kind, name: str) -> errors.NotFound:
    qual = f"{res.plural}.{res.group}" if res.group else res.plural
    return errors.NotFound(f'{qual} "{name}" not found', details={"name": name, "group": res.group, "kind": res.plural})


# etcd's default --max-request-bytes: Kubernetes' objects cannot be larger.
MAX_OBJECT_BYTES = 1536 * 1024


def _encode(obj: dict[str, Any]) -> bytes:
    """The stored bytes of an object, refused over MAX_OBJECT_BYTES whatever
    the store, as etcd refuses them (Kubernetes answers 413 for those)."""
    data = objects.encode(obj)
    if len(data) > MAX_OBJECT_BYTES:
        raise errors.RequestTooLarge("etcdserver: request is too large")
    return data


def store_error(e: StoreError) -> errors.APIError:
    if isinstance(e, StoreUnavailableError):
        return errors.ServiceUnavailable(f"storage is unavailable: {e}")
    if isinstance(e, CompactedError):
        return errors.Gone(f"too old resource version: {e}")
    return errors.InternalError(f"storage error: {e}")


class Storage:
    def __init__(self, store: Store, *, service_cidr: str = "10.96.0.0/12",
                 node_port_range: tuple[int, int] = (30000, 32767)) -> None:
        self.store = store
        self.allocator = ServiceAllocator(service_cidr, node_port_range)
        # What the allocator picks is decided in the store, so API servers sharing it agree.
        self.reservations = Reservations(store)
        # The kinds whose writes go through the allocator (clusterIPs, nodePorts).
        self.allocations: set[Kind] = {by_plural("services")}
        # Allocation reads then writes the allocator's view: one at a time.
        self._alloc_lock = asyncio.Lock()
        # Admission plugins (kubepy.api.admission); the API server adds its own.
        self.admission = admission.Chain()
        # Namespaces known to exist and not to be terminating, kept from the namespaces watch by the
        # API server (None: unknown, every create reads its namespace from the store). Only a hit is
        # trusted, as upstream's NamespaceLifecycle admission trusts its informer; a namespace this
        # server updates or deletes leaves the set until the watch shows it open again.
        self.open_namespaces: set[str] | None = None
        # The API server's watch cache of a kind (list_cache(kind)), or None: lists it can answer
        # consistently are served from its memory (WatchCache.snapshot).
        self.list_cache: Callable[[Kind], Any] | None = None

    async def load_allocations(self) -> None:
        services, = self.allocations
        start: str | None = None
        while True:
            page = await self.store.range(services.prefix, start=start, limit=_LIST_CHUNK)
            for kv in page.kvs:
                self.allocator.observe(kv.key, json.loads(kv.value))
            if not page.more:
                break
            start = page.kvs[-1].key + "\x00"
        await self.repair_allocations()

    async def repair_allocations(self) -> None:
        services, = self.allocations
        try:
            made, dropped = await self.reservations.repair(services.prefix)
        except StoreError as e:
            log.warning("allocation repair failed err=%s", e)
            return
        if made or dropped:
            log.info("allocation repair reserved=%d dropped=%d", made, dropped)

    # -- reads ------------------------------------------------------------
    async def get(self, res: Kind, namespace: str | None, name: str) -> dict[str, Any]:
        return objects.decode(await self._read(res, res.key(namespace, name), name))

    async def _read(self, res: Kind, key: str, name: str) -> KeyValue:
        """The stored key-value of one object, or the API's 404."""
        try:
            kv = await self.store.get(key)
        except StoreError as e:
            raise store_error(e) from e
        if kv is None:
            raise not_found(res, name)
        return kv

    async def list(self, res: Kind, namespace: str | None, *, matches: Matcher | None = None,
                   limit: int = 0, continue_token: str | None = None,
                   revision: int = 0, raw: bool = False) -> tuple[list[Any], int, str | None]:
        """(items, revision read at, continue token or None).

        With ``raw`` the items are JSON bytes ready to send, not dicts: a
        list of 10,000 pods then costs no per-item decode or encode unless
        a selector has to look inside."""
        prefix = res.list_prefix(namespace)
        if not continue_token and not revision:
            cached = await self.list_cached(res, namespace, matches=matches, limit=limit, raw=raw)
            if cached is not None:
                return cached
        start: str | None = None
        if continue_token:
            revision, start = _decode_continue(continue_token, prefix)
        items: list[dict[str, Any]] = []
        read_rev = revision
        last_key: str | None = None
        while True:
            want = _LIST_CHUNK if matches or not limit else min(_LIST_CHUNK, limit - len(items))
            try:
                page = await self.store.range(prefix, start=start, limit=want, revision=read_rev)
            except CompactedError as e:
                if continue_token:
                    raise errors.Gone(
                        "The provided continue parameter is too old to display a consistent list result. "
                        "You can start a new list without the continue parameter.") from e
                raise errors.Gone(f"too old resource version: {revision} ({e.compact_revision})") from e
            except StoreError as e:
                raise store_error(e) from e
            read_rev = page.revision
            for kv in page.kvs:
                last_key = kv.key
                if matches is not None and not matches(objects.decode(kv)):
                    continue
                items.append(objects.with_resource_version(kv.value, kv.mod_revision) if raw
                             else objects.decode(kv))
                if limit and len(items) >= limit:
                    break
            full = bool(limit) and len(items) >= limit
            if full:
                # More remain if this page had keys after last_key or the store has more.
                more = page.more or (page.kvs and page.kvs[-1].key != last_key)
                token = _encode_continue(read_rev, last_key + "\x00") if more and last_key else None
                return items, read_rev, token
            if not page.more or not page.kvs:
                return items, read_rev, None
            start = page.kvs[-1].key + "\x00"

    async def list_cached(self, res: Kind, namespace: str | None, *, matches: Matcher | None = None, limit: int = 0,
                          raw: bool = True) -> tuple[list[Any], int, str | None] | None:
        """``list`` from the watch cache's memory, at a revision no older than the store's newest
        write under ``prefix`` (so a client reads its own writes, as upstream's consistent lists
        from cache), and at the store's revision when it is newer than the cache's; None when the cache or the store can't promise that. A continue token pins
        the revision: the next pages are read from the store, at that revision."""
        cache = self.list_cache(res) if self.list_cache is not None else None
        if cache is None:
            return None
        prefix = res.list_prefix(namespace)
        if not prefix.startswith(cache.prefix):
            return None
        try:
            revisions = await self.store.prefix_revisions(prefix)
        except StoreError:
            return None
        if revisions is None:
            return None
        newest, current = revisions
        snap = await cache.snapshot(prefix, newest, current=current)
        if snap is None:
            return None
        entries, at = snap
        if matches is None and not limit and raw:
            return [value for _, value in entries], at, None
        items: list[Any] = []
        for i, (key, value) in enumerate(entries):
            obj = objects.decode_api_bytes(value) if matches is not None or not raw else None
            if matches is not None and not matches(obj):
                continue
            items.append(value if raw else obj)
            if limit and len(items) >= limit:
                more = i + 1 < len(entries)
                return items, at, _encode_continue(at, key + "\x00") if more else None
        return items, at, None

    # -- create -----------------------------------------------------------
    async def create(self, res: Kind, namespace: str | None, obj: dict[str, Any], *,
                     dry_run: bool = False, managed: ManagedFields | None = None) -> dict[str, Any]:
        """Stores a new object; ``managed`` records its managed fields (without, it has none).

        A version served by conversion (``Kind.conversion``) is stored as its storage
        version: the answer is the stored object, for the caller to convert back."""
        if res.conversion is not None:
            obj, res = res.conversion.to_storage(obj), res.conversion.storage
        m = objects.meta(obj)
        requested = m.get("managedFields")
        if res.namespaced:
            m["namespace"] = namespace
            await self._check_namespace_open(namespace or "")
        else:
            m.pop("namespace", None)
        if not m.get("name") and m.get("generateName"):
            m["name"] = objects.generate_name(str(m["generateName"]))
        for k in ("resourceVersion", "uid", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields",
                  "selfLink"):
            m.pop(k, None)
        m["uid"] = objects.new_uid()
        m["creationTimestamp"] = objects.rfc3339(objects.now())
        if "spec" in obj or res.has_spec_generation:
            m["generation"] = 1
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        res.strategy.prepare_create(obj)
        # Kubernetes' order: defaults, managed fields, mutating admission, validation, validating
        # admission. What admission adds (a service account's token volume, default tolerations)
        # is nobody's field, as upstream, whose handler updates managedFields before admitting.
        validation.default_object(res, obj, old=None)
        if managed is not None:
            if requested is not None:
                obj["metadata"]["managedFields"] = requested
            managed(None, obj)
        attrs = admission.Attributes(res, namespace, obj, None, admission.CREATE, dry_run=dry_run)
        await self.admission.admit(attrs)
        _validate(res, obj, None)
        await self.admission.validate(attrs)
        key = res.key(namespace, m["name"])
        if res in self.allocations:
            async with self._alloc_lock:
                return await self._allocate_and_write(res, key, obj, None, dry_run,
                                                      lambda: self._write_create(res, key, obj, dry_run))
        return await self._write_create(res, key, obj, dry_run)

    async def _write_create(self, res: Kind, key: str, obj: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        if dry_run:
            _encode(obj)  # a dry run refuses what the real write would
            if await self._exists(key):
                raise _already_exists(res, name)
            return obj
        try:
            kv = await self.store.create(key, _encode(obj))
        except KeyExistsError as e:
            raise _already_exists(res, name) from e
        except StoreError as e:
            raise store_error(e) from e
        return self._stored(res, key, obj, kv)

    async def _exists(self, key: str) -> bool:
        try:
            return await self.store.get(key) is not None
        except StoreError as e:
            raise store_error(e) from e

    def _forget_namespace(self, res: Kind, name: str) -> None:
        """Before this server writes a namespace: creates in it read the store until the watch
        shows it open again (a deletion must be seen by the next create, not the watch's later one)."""
        if res.plural == "namespaces" and not res.group and self.open_namespaces is not None:
            self.open_namespaces.discard(name)

    async def _check_namespace_open(self, namespace: str) -> None:
        if not namespace:
            raise errors.BadRequest("the namespace of the object must be set")
        if self.open_namespaces is not None and namespace in self.open_namespaces:
            return
        ns_res = by_plural("namespaces")
        try:
            kv = await self.store.get(ns_res.key(None, namespace))
        except StoreError as e:
            raise store_error(e) from e
        if kv is None:
            raise not_found(ns_res, namespace)
        ns = json.loads(kv.value)
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            raise errors.Forbidden(
                f"unable to create new content in namespace {namespace} because it is being terminated",
                details={"name": namespace, "kind": "namespaces"})

    def _allocate(self, res: Kind, key: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        try:
            self.allocator.assign(key, obj, old)
        except AllocationError as e:
            raise _allocation_invalid(res, obj, e) from e

    async def _allocate_and_write(self, res: Kind, key: str, obj: dict[str, Any], old: dict[str, Any] | None,
                                  dry_run: bool, write: Callable[[], Any]) -> dict[str, Any] | None:
        """Allocates, reserves in the store what ``obj`` newly holds, writes; releases what the
        write let go (or, if the write failed, what it had reserved). An address or port another
        API server reserved first is picked again if this server picked it, refused if the
        client asked for it."""
        given = copy.deepcopy(obj.get("spec"))
        asked = held(obj)
        for _ in range(_UPDATE_RETRIES):
            try:
                self._allocate(res, key, obj, old)
            except errors.Invalid:
                if dry_run or not self.allocator.has_foreign:
                    raise
                # Full only counting other servers' picks: some may have been released since; re-read.
                await self._learn_foreign(key)
                obj["spec"] = copy.deepcopy(given)
                self._allocate(res, key, obj, old)
            if dry_run:
                return await write()
            try:
                made = await self.reservations.reserve(key, held(obj) - held(old))
            except Taken as t:
                if t.item in asked:
                    raise _allocation_invalid(res, obj, AllocationError(
                        _field_of(t.item, given), f"{_show(t.item)}: provided "
                        f"{'IP' if isinstance(t.item, str) else 'port'} is already allocated")) from None
                # This server's view missed another server's picks: learn all of them from the store
                # at once (as upstream re-reads its allocation bitmap), not one per retry, so a nearly
                # full range does not run out of retries.
                others = await self._learn_foreign(key)
                log.info("allocation taken elsewhere item=%s holder=%s service=%s foreign=%d",
                         t.item, t.holder, key, len(others))
                obj["spec"] = copy.deepcopy(given)
                continue
            except StoreError as e:
                raise store_error(e) from e
            try:
                result = await write()
            except BaseException:
                await asyncio.shield(self.reservations.release(key, made))
                raise
            if result is None:
                await self.reservations.release(key, made)
                return None
            await self._release(key, held(old) - held(result))
            return result
        raise errors.Conflict(f"could not allocate for {res.plural} {obj['metadata'].get('name')!r}: "
                              "every pick was taken by another API server; try again")

    async def _learn_foreign(self, key: str) -> set:
        """Tell the allocator what the store says other Services (of any API server) hold."""
        try:
            others = {i for i, h in (await self.reservations.holders()).items() if h != key}
        except StoreError as e:
            raise store_error(e) from e
        self.allocator.foreign_are(others)
        return others

    async def _release(self, key: str, items: set) -> None:
        if items:
            try:
                await self.reservations.release(key, items)
            except StoreError as e:  # the repair drops it later
                log.warning("release failed service=%s err=%s", key, e)

    # -- update -----------------------------------------------------------
    async def update(self, res: Kind, namespace: str | None, name: str, mutate: Mutator, *,
                     precondition_rv: str | None = None, subresource: str | None = None,
                     dry_run: bool = False, managed: ManagedFields | None = None) -> dict[str, Any]:
        self._forget_namespace(res, name)
        try:
            return await self._update(res, namespace, name, mutate, precondition_rv=precondition_rv,
                                      subresource=subresource, dry_run=dry_run, managed=managed)
        finally:
            self._forget_namespace(res, name)   # also a stale event's re-adding during the write

    async def _update(self, res: Kind, namespace: str | None, name: str, mutate: Mutator, *,
                      precondition_rv: str | None, subresource: str | None, dry_run: bool,
                      managed: ManagedFields | None) -> dict[str, Any]:
        """Read, ``mutate(copy)``, write if unchanged since the read, retry.

        With ``precondition_rv`` (a resourceVersion the client sent) a
        concurrent change is the client's 409, not a retry. ``managed``
        records the write's managed fields once the object is final; without
        it the stored entries stay as they were."""
        if res.conversion is not None:
            # The mutator sees (and returns) the request's version; the rest works on the stored one.
            conv, request_mutate = res.conversion, mutate
            mutate = lambda stored: conv.to_storage(request_mutate(conv.from_storage(stored)))  # noqa: E731
            res = conv.storage
        key = res.key(namespace, name)
        for _ in range(_UPDATE_RETRIES):
            kv = await self._read(res, key, name)
            old = objects.decode(kv)
            if precondition_rv and precondition_rv != old["metadata"]["resourceVersion"]:
                raise _conflict(res, name)
            # The mutator's copy decoded afresh: much cheaper than deepcopy for JSON (and
            # managedFields make objects twice their size, in many small maps).
            new = mutate(objects.decode(kv))
            new = self._merge_update(res, old, new, subresource)
            if managed is not None:
                managed(old, new)
            elif "managedFields" in old["metadata"]:
                new["metadata"]["managedFields"] = old["metadata"]["managedFields"]
            else:
                new["metadata"].pop("managedFields", None)
            if new == old:
                return old  # a no-op write keeps the resourceVersion, as Kubernetes does
            # Kubernetes' order again: (defaults above,) mutating admission, validation, validating admission.
            attrs = admission.Attributes(res, namespace, new, old, admission.UPDATE, subresource=subresource,
                                         dry_run=dry_run)
            await self.admission.admit(attrs)
            if attrs.mutated:  # a webhook patched it: keep what the write may not change, validate again
                new = attrs.obj = self._merge_update(res, old, attrs.obj, subresource)
            await self.admission.validate(attrs)
            if res in self.allocations and subresource is None:
                async with self._alloc_lock:
                    result = await self._allocate_and_write(
                        res, key, new, old, dry_run, lambda: self._write_update(res, key, kv, old, new, dry_run))
            else:
                result = await self._write_update(res, key, kv, old, new, dry_run)
            if result is not None:
                return result
            if precondition_rv:
                raise _conflict(res, name)
        raise errors.Conflict(f"too many concurrent writes to {res.plural} {name!r}; try again")

    def _merge_update(self, res: Kind, old: dict[str, Any], new: dict[str, Any],
                      subresource: str | None) -> dict[str, Any]:
        """Carry over what a client may not change and validate the result."""
        nm, om = objects.meta(new), old["metadata"]
        if nm.get("name") not in (None, om["name"]):
            raise errors.BadRequest(f"the name of the object ({nm.get('name')}) does not match the name on the URL ({om['name']})")
        if res.namespaced and nm.get("namespace") not in (None, "", om.get("namespace")):
            raise errors.BadRequest("the namespace of the object does not match the namespace on the request")
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        if subresource == "binding":
            return new  # the binding mutator sets spec.nodeName and the condition itself
        if subresource == "status":
            # Only status moves; everything else stays as stored.
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
            if "status" in res.subresource_strategies:  # the kind checks its status writes (ValidateStatusUpdate)
                _default_and_validate(res, new, old, subresource="status")
            return new
        if subresource == "ephemeralcontainers":
            return _ephemeral_containers_update(res, old, new)
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation",
                  "namespace", "name"):
            if k in om:
                nm[k] = om[k]
            else:
                nm.pop(k, None)
        nm["resourceVersion"] = om["resourceVersion"]
        if res.has_status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        _default_and_validate(res, new, old)
        if "spec" in new and new.get("spec") != old.get("spec"):
            nm["generation"] = int(om.get("generation") or 0) + 1
        return new

    async def _write_update(self, res: Kind, key: str, kv: KeyValue, old: dict[str, Any],
                            new: dict[str, Any], dry_run: bool) -> dict[str, Any] | None:
        """The written object, or None when someone wrote in between."""
        # Removing the last finalizer from an object being deleted deletes it.
        finalize = bool(old["metadata"].get("deletionTimestamp")) and bool(old["metadata"].get("finalizers")) \
            and not new["metadata"].get("finalizers") and not _awaits_kubelet(res, new)
        if dry_run:
            _encode(new)
            return new
        try:
            if finalize:
                deleted = await self.store.delete(key, revision=kv.mod_revision)
                new["metadata"]["resourceVersion"] = str(deleted.mod_revision)
                await self._forget(res, key, new)
                log.info("deleted resource=%s key=%s reason=finalized", res.plural, key)
                return new
            written = await self.store.update(key, _encode(new), revision=kv.mod_revision)
        except (ConflictError, KeyNotFoundError):
            return None
        except StoreError as e:
            raise store_error(e) from e
        return self._stored(res, key, new, written)

    def _stored(self, res: Kind, key: str, obj: dict[str, Any], kv: KeyValue) -> dict[str, Any]:
        """``obj`` as the store now holds it: its resourceVersion, and the allocator told."""
        if res in self.allocations:
            self.allocator.observe(key, obj)
        obj["metadata"]["resourceVersion"] = str(kv.mod_revision)
        return obj

    async def _forget(self, res: Kind, key: str, obj: dict[str, Any]) -> None:
        if res in self.allocations:
            self.allocator.observe(key, None)
            await self._release(key, held(obj))

    # -- delete -----------------------------------------------------------
    async def delete(self, res: Kind, namespace: str | None, name: str,
                     opts: DeleteOptions) -> dict[str, Any]:
        self._forget_namespace(res, name)
        try:
            return await self._delete(res, namespace, name, opts)
        finally:
            self._forget_namespace(res, name)

    async def _delete(self, res: Kind, namespace: str | None, name: str,
                      opts: DeleteOptions) -> dict[str, Any]:
        key = res.key(namespace, name)
        admitted = False
        for _ in range(_UPDATE_RETRIES):
            kv = await self._read(res, key, name)
            obj = objects.decode(kv)
            m = obj["metadata"]
            if not admitted:  # once per request, as upstream's admission of a DELETE
                attrs = admission.Attributes(res, namespace, obj, obj, admission.DELETE, dry_run=opts.dry_run)
                await self.admission.admit(attrs)
                await self.admission.validate(attrs)
                admitted = True
            if opts.precondition_uid and opts.precondition_uid != m.get("uid"):
                raise errors.Conflict(f"Precondition failed: UID in precondition: {opts.precondition_uid}, "
                                      f"UID in object meta: {m.get('uid')}")
            if opts.precondition_rv and opts.precondition_rv != m.get("resourceVersion"):
                raise _conflict(res, name)
            marked = _mark_for_deletion(res, obj, opts)
            if marked is None:
                if opts.dry_run:
                    return obj
                try:
                    deleted = await self.store.delete(key, revision=kv.mod_revision)
                except (ConflictError, KeyNotFoundError):
                    continue
                except StoreError as e:
                    raise store_error(e) from e
                await self._forget(res, key, obj)
                obj["metadata"]["resourceVersion"] = str(deleted.mod_revision)
                log.info("deleted resource=%s key=%s", res.plural, key)
                return obj
            if marked == obj or opts.dry_run:
                return marked
            try:
                written = await self.store.update(key, _encode(marked), revision=kv.mod_revision)
            except (ConflictError, KeyNotFoundError):
                continue
            except StoreError as e:
                raise store_error(e) from e
            marked["metadata"]["resourceVersion"] = str(written.mod_revision)
            log.info("marked for deletion resource=%s key=%s grace=%s finalizers=%s", res.plural, key,
                     marked["metadata"].get("deletionGracePeriodSeconds"),
                     ",".join(marked["metadata"].get("finalizers") or []) or "-")
            return marked
        raise errors.Conflict(f"too many concurrent writes to {res.plural} {name!r}; try again")


def _allocation_invalid(res: Kind, obj: dict[str, Any], e: AllocationError) -> errors.Invalid:
    return errors.Invalid(res.kind, obj["metadata"].get("name", ""), [
        {"reason": "FieldValueInvalid", "message": str(e), "field": e.field}])


def _show(item: Any) -> str:
    return item if isinstance(item, str) else str(item[1])


def _field_of(item: Any, spec: dict[str, Any] | None) -> str:
    """The field of the client's ``spec`` that asked for ``item``."""
    if isinstance(item, str):
        return "spec.clusterIPs"
    for i, p in enumerate((spec or {}).get("ports") or []):
        if p.get("nodePort") == item[1] and p.get("protocol", "TCP") == item[0]:
            return f"spec.ports[{i}].nodePort"
    return "spec.healthCheckNodePort"


def _already_exists(res: Kind, name: str) -> errors.AlreadyExists:
    qual = f"{res.plural}.{res.group}" if res.group else res.plural
    return errors.AlreadyExists(f'{qual} "{name}" already exists',
                                details={"name": name, "group": res.group, "kind": res.plural})


def _ephemeral_containers_update(res: Kind, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A write through pods/ephemeralcontainers: only ``spec.ephemeralContainers``
    moves, everything else stays as stored (Kubernetes' dropNonEphemeralContainerUpdates),
    and only appending is allowed (validation's ``pods/ephemeralcontainers`` rules)."""
    spec = new.get("spec")
    ephemeral = spec.get("ephemeralContainers") if isinstance(spec, dict) else None
    out = copy.deepcopy(old)
    out_spec = out.setdefault("spec", {})
    if ephemeral is None:
        out_spec.pop("ephemeralContainers", None)
    else:
        out_spec["ephemeralContainers"] = ephemeral
    _default_and_validate(res, out, old, subresource="ephemeralcontainers")
    if out.get("spec") != old.get("spec"):
        m = out["metadata"]
        m["generation"] = int(m.get("generation") or 0) + 1
    return out


def _default_and_validate(res: Kind, obj: dict[str, Any], old: dict[str, Any] | None, *,
                          subresource: str | None = None) -> None:
    """The kind's defaults, then its validation: every problem in one 422."""
    validation.default_object(res, obj, old=old, subresource=subresource)
    _validate(res, obj, old, subresource=subresource)


def _validate(res: Kind, obj: dict[str, Any], old: dict[str, Any] | None, *,
              subresource: str | None = None) -> None:
    try:
        validation.validate_object(res, obj, old=old, subresource=subresource)
    except kinds.Invalid as e:
        raise errors.Invalid.of(e) from e


def _awaits_kubelet(res: Kind, obj: dict[str, Any]) -> bool:
    """Whether an object whose finalizers are done must still wait (a running pod, for its kubelet)."""
    return res.strategy.finalized_elsewhere is not None and res.strategy.finalized_elsewhere(obj)


def _mark_for_deletion(res: Kind, obj: dict[str, Any], opts: DeleteOptions) -> dict[str, Any] | None:
    """The object as marked for deletion, or None to delete it now."""
    m = obj["metadata"]
    finalizers = list(m.get("finalizers") or [])
    if opts.propagation == "Foreground" and "foregroundDeletion" not in finalizers:
        finalizers.append("foregroundDeletion")
    elif opts.propagation == "Orphan" and "orphan" not in finalizers:
        finalizers.append("orphan")
    strategy = res.strategy
    grace = strategy.deletion_grace(obj, opts.grace_period) if strategy.deletion_grace else 0
    if not finalizers and grace == 0 and strategy.on_delete is None:
        return None
    marked = copy.deepcopy(obj)
    mm = marked["metadata"]
    if finalizers:
        mm["finalizers"] = finalizers
    when = objects.now() + dt.timedelta(seconds=grace)
    if not mm.get("deletionTimestamp") or grace < int(mm.get("deletionGracePeriodSeconds") or 0):
        mm["deletionTimestamp"] = objects.rfc3339(when)
    mm["deletionGracePeriodSeconds"] = grace
    if strategy.on_delete is not None and not strategy.on_delete(marked):
        return None
    return marked


def _encode_continue(revision: int, start: str) -> str:
    raw = json.dumps({"v": "kubepy/1", "rv": revision, "start": start}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str, prefix: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        rev, start = int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError) as e:
        raise errors.BadRequest(f"continue key is not valid: {e}") from e
    if not start.startswith(prefix):
        raise errors.BadRequest("continue key is not valid: it belongs to another list")
    return rev, start
