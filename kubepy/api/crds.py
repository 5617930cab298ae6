"""Serving CustomResourceDefinitions: the kinds they define join the registry at runtime.

Role: the part of the API server that upstream splits into the
apiextensions-apiserver's naming, establishing and finalizer controllers.
It reads CRDs from the watch cache of ``customresourcedefinitions`` (so CRDs
that exist at start, and changes made through another API server on the same
store, are seen as well as this server's own writes) and, for each CRD:

* registers one ``Kind`` per served version (``kinds.apiextensions.customresource``),
  replacing the previous ones when the CRD changes, so discovery, OpenAPI,
  tables and validation derive from it at once;
* writes its status: ``acceptedNames``, ``storedVersions`` and the conditions
  ``NamesAccepted`` and ``Established`` (only when they change, so several
  API servers agree without fighting);
* when it is being deleted (the ``customresourcecleanup.apiextensions.k8s.io``
  finalizer its strategy adds on delete), deletes every object of its kinds,
  then removes the finalizer, which deletes the CRD, then unregisters the kinds.

Talks to: ``Storage`` (reads and writes), the registry (``kinds.register``).
Logs one key=value line per decision.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kubepy import kinds
from kubepy.api import errors, objects, structure
from kubepy.api.storage import DeleteOptions, Storage
from kubepy.kinds.apiextensions.customresource import CLEANUP_FINALIZER, kinds_for

log = logging.getLogger(__name__)

__all__ = ["CustomResourceDefinitions"]

RESYNC_SECONDS = 1.0  # a terminating CRD whose objects wait on their own finalizers is looked at again


def _condition(ctype: str, status: str, reason: str, message: str, old: list[dict]) -> dict[str, Any]:
    prev = next((c for c in old if c.get("type") == ctype), None)
    when = prev["lastTransitionTime"] if prev and prev.get("status") == status and prev.get(
        "lastTransitionTime") else objects.rfc3339(objects.now())
    return {"type": ctype, "status": status, "lastTransitionTime": when, "reason": reason, "message": message}


class CustomResourceDefinitions:
    """Keeps the registry's custom kinds in step with the stored CRDs."""

    def __init__(self, storage: Storage, *, on_removed: Callable[[kinds.Kind], None]) -> None:
        self.storage = storage
        self.crd_kind = kinds.by_plural("customresourcedefinitions")
        self.served: dict[str, list[kinds.Kind]] = {}  # CRD name -> its registered kinds
        self._served_spec: dict[str, str] = {}  # CRD name -> the spec they were built from
        self.terminating: set[str] = set()
        self._on_removed = on_removed
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self, cache: Any) -> None:
        """Serve every stored CRD before the server is ready, then follow the cache."""
        items, revision, _ = await self.storage.list(self.crd_kind, None)
        for crd in items:
            try:
                await self.reconcile(crd["metadata"]["name"], crd)
            except Exception:  # a CRD the server cannot serve must not stop the server starting
                log.exception("crd reconcile crashed crd=%s", crd["metadata"]["name"])
        self._task = asyncio.create_task(self._follow(cache, revision))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        # The registry is the process's: a stopped server's custom kinds leave it.
        for name in list(self.served):
            for k in self.served.pop(name):
                kinds.unregister(k)
                structure.unregister(k.qualified)
        self._served_spec.clear()

    def is_terminating(self, res: kinds.Kind) -> bool:
        return res.custom is not None and res.custom.crd_name in self.terminating

    async def _follow(self, cache: Any, revision: int) -> None:
        pending: set[str] = set()
        sub = cache.subscribe(after=revision, matches=lambda o: True)
        if sub is None:  # the cache no longer holds that revision: start from its newest, look at everything
            sub = cache.subscribe(after=cache.last_revision, matches=lambda o: True)
            pending |= set(self.served)
        try:
            while True:
                try:
                    ev = await asyncio.wait_for(sub.queue.get(), RESYNC_SECONDS if self.terminating else None)
                except asyncio.TimeoutError:
                    pending |= self.terminating
                    ev = "resync"
                if ev is None:  # fell behind: look at every CRD again
                    sub.close()
                    items, revision, _ = await self.storage.list(self.crd_kind, None)
                    pending |= {c["metadata"]["name"] for c in items} | set(self.served)
                    sub = cache.subscribe(after=revision, matches=lambda o: True) or \
                        cache.subscribe(after=cache.last_revision, matches=lambda o: True)
                elif ev != "resync":
                    pending.add(ev.obj["metadata"]["name"])
                    while not sub.queue.empty():  # coalesce a burst into one pass per CRD
                        more = sub.queue.get_nowait()
                        if more is None:
                            break
                        pending.add(more.obj["metadata"]["name"])
                for name in sorted(pending):
                    try:
                        await self.reconcile(name)
                    except errors.APIError as e:
                        log.warning("crd reconcile failed crd=%s err=%s", name, e.message)
                    except Exception:  # one bad CRD must not stop the others being served
                        log.exception("crd reconcile crashed crd=%s", name)
                pending.clear()
        finally:
            sub.close()

    async def reconcile(self, name: str, crd: dict | None = None) -> None:
        """Converge one CRD: its kinds registered (or not), its status, its cleanup."""
        if crd is None:
            try:
                crd = await self.storage.get(self.crd_kind, None, name)
            except errors.NotFound:
                crd = None
        if crd is None:
            self._unserve(name, reason="deleted")
            self.terminating.discard(name)
            return
        if crd["metadata"].get("deletionTimestamp"):
            await self._clean_up(name, crd)
            return
        self.terminating.discard(name)
        conflict = self._name_conflict(crd)
        if conflict:
            self._unserve(name, reason="NamesNotAccepted")
            await self._write_status(crd, accepted=False, reason="NamesConflict" if "plural" not in conflict else
                                     "PluralConflict", message=conflict)
            return
        self._serve(name, crd)
        await self._write_status(crd, accepted=True, reason="NoConflicts", message="no conflicts found")

    # -- registry ----------------------------------------------------------
    def _name_conflict(self, crd: dict) -> str:
        spec = crd.get("spec") or {}
        group, names = spec.get("group", ""), spec.get("names") or {}
        mine = {id(k) for k in self.served.get(crd["metadata"]["name"], [])}
        for k in kinds.all_kinds():
            if k.group != group or id(k) in mine:
                continue
            if k.plural == names.get("plural"):
                return f'"{k.plural}" is already in use'
            if k.kind == names.get("kind"):
                return f'"{k.kind}" is already in use'
            if set(k.short_names) & set(names.get("shortNames") or ()):
                return f'"{sorted(set(k.short_names) & set(names.get("shortNames") or ()))[0]}" is already in use'
        return ""

    def _serve(self, name: str, crd: dict) -> None:
        spec = repr(crd.get("spec"))
        if name in self.served and self._served_spec.get(name) == spec:
            return  # a status write: the kinds stay as they are
        new = kinds_for(crd)
        old = self.served.get(name, [])
        for k in old:
            kinds.unregister(k)
        for k in new:
            kinds.register(k)
        _apply_types(new)
        self.served[name] = new
        self._served_spec[name] = spec
        log.info("serving crd=%s versions=%s resourceVersion=%s", name, ",".join(k.version for k in new),
                 crd["metadata"].get("resourceVersion"))

    def _unserve(self, name: str, *, reason: str) -> None:
        old = self.served.pop(name, [])
        self._served_spec.pop(name, None)
        for k in old:
            kinds.unregister(k)
            structure.unregister(k.qualified)
        if old:
            self._on_removed(old[0])
            log.info("stopped serving crd=%s reason=%s", name, reason)

    # -- status --------------------------------------------------------------
    async def _write_status(self, crd: dict, *, accepted: bool, reason: str, message: str) -> None:
        spec = crd["spec"]
        storage_version = next((v["name"] for v in spec.get("versions") or [] if v.get("storage")), None)

        def mutate(cur: dict) -> dict:
            status = cur.setdefault("status", {})
            old = status.get("conditions") or []
            conds = [c for c in old if c.get("type") not in ("NamesAccepted", "Established")]
            conds.append(_condition("NamesAccepted", "True" if accepted else "False", reason, message, old))
            if accepted:
                conds.append(_condition("Established", "True", "InitialNamesAccepted",
                                        "the initial names have been accepted", old))
                status["acceptedNames"] = _accepted_names(cur["spec"].get("names") or {})
            else:
                conds.append(_condition("Established", "False", "NotAccepted", "not all names are accepted", old))
                status.setdefault("acceptedNames", {"kind": "", "plural": ""})
            status["conditions"] = sorted(conds, key=lambda c: ["NamesAccepted", "Established"].index(c["type"])
                                          if c["type"] in ("NamesAccepted", "Established") else 9)
            stored = list(status.get("storedVersions") or [])
            if storage_version and storage_version not in stored and accepted:
                stored.append(storage_version)
            status["storedVersions"] = stored
            return cur

        try:
            await self.storage.update(self.crd_kind, None, crd["metadata"]["name"], mutate, subresource="status")
        except errors.NotFound:
            pass

    # -- deletion ------------------------------------------------------------
    async def _clean_up(self, name: str, crd: dict) -> None:
        """Delete every object of the CRD's kinds; once none is left, let the CRD go."""
        if CLEANUP_FINALIZER not in (crd["metadata"].get("finalizers") or []):
            return  # other finalizers hold it; nothing of ours to do
        first = name not in self.terminating
        self.terminating.add(name)
        kinds_now = self.served.get(name) or kinds_for(crd)
        res = next((k for k in kinds_now if k.custom.storage), kinds_now[0]) if kinds_now else None
        left = 0
        if res is not None:
            items, _, _ = await self.storage.list(res, None)
            for obj in items:
                m = obj["metadata"]
                if m.get("deletionTimestamp"):
                    left += 1
                    continue
                try:
                    await self.storage.delete(res, m.get("namespace"), m["name"], DeleteOptions())
                except errors.NotFound:
                    continue
                left += 1  # counted until a later look finds it gone (it may have finalizers)
        if first:
            await self._set_terminating(name, left)
        if left:
            log.info("cleaning up crd=%s objects_left=%d", name, left)
            return
        try:
            await self.storage.update(self.crd_kind, None, name, _drop_cleanup_finalizer)
        except errors.NotFound:
            pass
        self._unserve(name, reason="deleted")
        self.terminating.discard(name)
        log.info("deleted crd=%s reason=cleanup-done", name)

    async def _set_terminating(self, name: str, left: int) -> None:
        def mutate(cur: dict) -> dict:
            status = cur.setdefault("status", {})
            old = status.get("conditions") or []
            conds = [c for c in old if c.get("type") != "Terminating"]
            conds.append(_condition("Terminating", "True", "InstanceDeletionInProgress",
                                    "CustomResource deletion is in progress", old))
            status["conditions"] = conds
            return cur
        try:
            await self.storage.update(self.crd_kind, None, name, mutate, subresource="status")
        except errors.NotFound:
            pass


def _drop_cleanup_finalizer(cur: dict) -> dict:
    cur["metadata"]["finalizers"] = [f for f in cur["metadata"].get("finalizers") or [] if f != CLEANUP_FINALIZER]
    return cur


def _accepted_names(names: dict) -> dict:
    out = {"plural": names.get("plural", ""), "singular": names.get("singular", ""), "kind": names.get("kind", ""),
           "listKind": names.get("listKind", "")}
    for key in ("shortNames", "categories"):
        if names.get(key):
            out[key] = list(names[key])
    return out


def _apply_types(served: list[kinds.Kind]) -> None:
    """Server-side apply merges a custom resource by its schema (list types, map keys) as
    structured-merge-diff does: the storage version's openAPIV3Schema, built once, lazily."""
    if not served:
        return
    k = next((k for k in served if k.custom is not None and k.custom.storage), served[0])
    doc = k.custom.schema_doc if k.custom is not None else {}
    built: list[Any] = []

    def source() -> Any:
        if not built:
            built.append(structure.from_openapi_schema(doc) if doc else structure.DEDUCED)
        return built[0]

    structure.register(k.qualified, source)
