"""``FakeAPI``: an in-memory API server behind ``kubepy.client.Client``'s interface.

For controller, informer and node-agent tests that should run in
milliseconds: the same verbs (``get``, ``list``, ``list_all``, ``create``,
``update``, ``patch``, ``delete``, ``watch``; ``status`` and ``binding``
subresources; ``dry_run``) with the API server's observable semantics:

* one global revision; ``resourceVersion`` is the revision of the last write;
* ``update`` (or a patch that carries ``metadata.resourceVersion``) with a
  stale resourceVersion raises ``ConflictError``; a missing object
  ``NotFoundError``; a second create ``AlreadyExistsError``;
* ``generateName``, ``uid``, ``creationTimestamp``, ``generation`` (bumped
  when ``spec`` changes); writes to the main resource keep ``status``,
  writes to ``/status`` change only ``status``;
* merge, strategic merge and JSON patches (the API server's own patch code);
* label and field selectors on list and watch (an object that stops or
  starts matching is DELETED from or ADDED to a filtered watch);
* deletion as the server does it: preconditions (uid, resourceVersion),
  finalizers and propagation policies mark ``deletionTimestamp`` and the
  object goes when its last finalizer is removed; a bound running pod waits
  for a second delete with grace period 0 (its kubelet's);
* watch from a revision replays what came after it; from a compacted one
  raises ``GoneError``. Tests steer the streams: ``compact()``,
  ``stop_watches(error)``, ``bookmark()``.

What it does not do: admission, validation, defaulting, garbage collection,
authentication. Every request is recorded in ``actions`` (like client-go's
fake clientset), and ``react(verb, resource, fn)`` lets a test answer or
fail a request before the store sees it (quota errors, injected outages).
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Self

from kubepy.api import patch as patches
from kubepy.meta.selectors import (
    parse_field_selector,
    parse_label_selector,
)
from kubepy.client.errors import (
    AlreadyExistsError,
    APIStatusError,
    BadRequestError,
    ConflictError,
    GoneError,
    InvalidError,
    NotFoundError,
)
from kubepy.kinds import Kind, by_plural

__all__ = ["Action", "FakeAPI"]

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_END = object()  # a watch stream's end, as the server closing it


@dataclass
class Action:
    """One request as the fake received it."""

    verb: str           # get list create update patch delete watch
    resource: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    body: Any = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Event:
    revision: int
    resource: str
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


@dataclass
class _Watcher:
    resource: str
    namespace: str | None
    labels: Any
    fields: Any
    bookmarks: bool
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


Reactor = Callable[[Action], Any]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(cls: type[APIStatusError], code: int, reason: str, message: str) -> APIStatusError:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "code": code}
    return cls(code, reason, message, body)


class FakeAPI:
    """An in-memory API server with ``Client``'s methods (see the module docstring)."""

    def __init__(self, *, start_revision: int = 0, seed: int | None = None) -> None:
        self.revision = start_revision
        self.compacted = 0  # a watch from a revision below this one is told 410 Gone
        self.actions: list[Action] = []
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._history: list[_Event] = []
        self._watchers: list[_Watcher] = []
        self._reactors: list[tuple[str, str, Reactor]] = []
        self._random = random.Random(seed)
        self._uids = itertools.count(1)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.stop_watches()

    # -- test controls --------------------------------------------------------
    def react(self, verb: str, resource: str, fn: Reactor) -> None:
        """Before the store: ``fn(action)`` may raise (the request fails), return
        something other than None (that is the answer) or None (go on).
        ``"*"`` matches any verb or resource; later reactors run first."""
        self._reactors.insert(0, (verb, resource, fn))

    def seed(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` as it is (it must have a name; uid, creationTimestamp and
        generation are filled in if missing), as an ADDED event. No action is
        recorded and no reactor runs: this is the test arranging the world."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        obj.setdefault("apiVersion", _api_version(resource))
        obj.setdefault("kind", _kind(resource))
        meta.setdefault("uid", str(uuid.UUID(int=next(self._uids))))
        meta.setdefault("creationTimestamp", _now())
        meta.setdefault("generation", 1)
        if _ns(resource, meta.get("namespace")) is None:
            meta.pop("namespace", None)
        return self._write(resource, obj, "ADDED", None)

    def open_watches(self, resource: str | None = None) -> int:
        return sum(1 for w in self._watchers if resource in (None, w.resource))

    def objects(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of what is stored, in name order."""
        found = [o for (ns, _), o in sorted(self._objects.get(resource, {}).items())
                 if namespace is None or ns == namespace]
        return copy.deepcopy(found)

    def calls(self, verb: str, resource: str | None = None, subresource: str | None = None) -> list[Action]:
        return [a for a in self.actions if a.verb == verb and resource in (None, a.resource)
                and (subresource is None or a.subresource == subresource)]

    def compact(self, revision: int | None = None) -> None:
        """Forget history up to ``revision`` (default: all of it)."""
        self.compacted = self.revision if revision is None else revision
        self._history = [e for e in self._history if e.revision > self.compacted]

    def stop_watches(self, error: BaseException | None = None, *, resource: str | None = None) -> None:
        """End the open watches (of ``resource``): cleanly, or by raising ``error`` in the watcher."""
        for w in list(self._watchers):
            if resource in (None, w.resource):
                w.queue.put_nowait(error if error is not None else _END)
                self._watchers.remove(w)

    def bookmark(self) -> None:
        """A BOOKMARK at the current revision to every watch that asked for bookmarks."""
        for w in self._watchers:
            if w.bookmarks:
                w.queue.put_nowait({"type": "BOOKMARK", "object": {
                    "kind": _kind(w.resource), "apiVersion": _api_version(w.resource),
                    "metadata": {"resourceVersion": str(self.revision)}}})

    # -- verbs ----------------------------------------------------------------
    async def get(self, resource: str, name: str, *, namespace: str | None = None,
                  subresource: str | None = None) -> dict[str, Any]:
        action = self._record("get", resource, namespace, name, subresource)
        if (answer := self._react(action)) is not None:
            return answer  # type: ignore[no-any-return]
        return copy.deepcopy(self._get(resource, _ns(resource, namespace), name))

    async def list(self, resource: str, *, namespace: str | None = None, label_selector: str | None = None,
                   field_selector: str | None = None, limit: int | None = None, continue_: str | None = None,
                   resource_version: str | None = None) -> dict[str, Any]:
        action = self._record("list", resource, namespace, options={
            "label_selector": label_selector, "field_selector": field_selector, "limit": limit,
            "continue": continue_})
        if (answer := self._react(action)) is not None:
            return answer  # type: ignore[no-any-return]
        labels, fields = _selectors(resource, label_selector, field_selector)
        items = [o for (ns, _), o in sorted(self._objects.get(resource, {}).items())
                 if (namespace is None or ns == _ns(resource, namespace)) and _matches(resource, o, labels, fields)]
        start = int(continue_ or 0)
        page = items[start:start + limit] if limit else items[start:]
        meta: dict[str, Any] = {"resourceVersion": str(self.revision)}
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
            meta["remainingItemCount"] = len(items) - start - limit
        return {"kind": f"{_kind(resource)}List", "apiVersion": _api_version(resource), "metadata": meta,
                "items": copy.deepcopy(page)}

    async def list_all(self, resource: str, *, namespace: str | None = None, label_selector: str | None = None,
                       field_selector: str | None = None,
                       resource_version: str | None = None) -> tuple[list[dict[str, Any]], str]:
        page = await self.list(resource, namespace=namespace, label_selector=label_selector,
                               field_selector=field_selector, resource_version=resource_version)
        return page["items"], page["metadata"]["resourceVersion"]

    async def create(self, resource: str, obj: dict[str, Any], *, namespace: str | None = None,
                     subresource: str | None = None, name: str | None = None,
                     dry_run: bool = False) -> dict[str, Any]:
        namespace = namespace or (obj.get("metadata") or {}).get("namespace")
        action = self._record("create", resource, namespace, name, subresource, obj, dry_run=dry_run)
        if (answer := self._react(action)) is not None:
            return answer  # type: ignore[no-any-return]
        if subresource == "binding":
            return self._bind(resource, _ns(resource, namespace), name or obj["metadata"]["name"], obj)
        if subresource is not None:
            raise _status(NotFoundError, 404, "NotFound", f"the server could not find the requested resource "
                                                         f"({resource}/{subresource})")
        return self._create(resource, copy.deepcopy(obj), namespace, dry_run)

    async def update(self, resource: str, obj: dict[str, Any], *, subresource: str | None = None) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        action = self._record("update", resource, meta.get("namespace"), meta.get("name"), subresource, obj)
        if (answer := self._react(action)) is not None:
            return answer  # type: ignore[no-any-return]
        return self._update(resource, copy.deepcopy(obj), subresource)

    async def patch(self, resource: str, name: str, patch: Any, *, namespace: str | None = None,
                    subresource: str | None = None, patch_type: str = "merge") -> dict[str, Any]:
        action = self._record("patch", resource, namespace, name, subresource, patch, patch_type=patch_type)
        if (answer := self._react(action)) is not None:
            return answer  # type: ignore[no-any-return]
        current = self._get(resource, _ns(resource, namespace), name)
        try:
            if patch_type == "merge":
                patched = patches.apply_merge_patch(current, copy.deepcopy(patch))
            elif patch_type == "strategic":
                patched = patches.apply_strategic_merge_patch(current, copy.deepcopy(patch),
                                                              api_version=_api_version(resource), kind=_kind(resource))
            elif patch_type == "json":
                patched = patches.apply_json_patch(current, copy.deepcopy(patch))
            else:
                raise ValueError(f"patch_type must be merge, strategic or json, not {patch_type!r}")
        except patches.PatchError as e:
            cls = BadRequestError if e.code == 400 else InvalidError
            raise _status(cls, e.code, "BadRequest" if e.code == 400 else "Invalid", e.message) from e
        # A patch is an update whose precondition is what the patch itself says.
        patched.setdefault("metadata", {})
        if (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else False:
            patched["metadata"]["resourceVersion"] = patch["metadata"]["resourceVersion"]
        else:
            patched["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
        return self._update(resource, patched, subresource)

    async def delete(self, resource: str, name: str, *, namespace: str | None = None,
                     grace_period_seconds: int | None = None, propagation_policy: str | None = None,
                     preconditions: dict[str, Any] | None = None) -> dict[str, Any] | None:
        action = self._record("delete", resource, namespace, name, options={
            "grace_period_seconds": grace_period_seconds, "propagation_policy": propagation_policy,
            "preconditions": preconditions})
        if (answer := self._react(action)) is not None:
            return answer  # type: ignore[no-any-return]
        ns = _ns(resource, namespace)
        current = self._get(resource, ns, name)
        for key, value in (preconditions or {}).items():
            if value and current["metadata"].get(key) != value:
                raise _status(ConflictError, 409, "Conflict",
                              f"Precondition failed: {key} in precondition: {value}, "
                              f"{key} in object meta: {current['metadata'].get(key)}")
        marked = _mark_for_deletion(resource, current, grace_period_seconds, propagation_policy)
        if marked is None:
            return self._remove(resource, ns, name)
        if marked == current:
            return copy.deepcopy(current)
        return self._write(resource, marked, "MODIFIED", current)

    async def watch(self, resource: str, *, namespace: str | None = None, resource_version: str,
                    label_selector: str | None = None, field_selector: str | None = None,
                    timeout_seconds: int | None = None,
                    allow_bookmarks: bool = True) -> AsyncIterator[dict[str, Any]]:
        action = self._record("watch", resource, namespace, options={
            "resource_version": resource_version, "label_selector": label_selector,
            "field_selector": field_selector, "allow_bookmarks": allow_bookmarks})
        if (answer := self._react(action)) is not None:
            for event in answer:
                yield event
            return
        labels, fields = _selectors(resource, label_selector, field_selector)
        ns = _ns(resource, namespace)
        watcher = _Watcher(resource, ns, labels, fields, allow_bookmarks)
        # Subscribe and replay in one step (no await between): nothing is missed or doubled.
        start = int(resource_version or 0)
        if resource_version and start < self.compacted:
            raise _status(GoneError, 410, "Expired",
                          f"too old resource version: {start} ({self.compacted})")
        if resource_version in (None, "", "0"):
            backlog = [{"type": "ADDED", "object": copy.deepcopy(o)}
                       for (ons, _), o in sorted(self._objects.get(resource, {}).items())
                       if (ns is None or ons == ns) and _matches(resource, o, labels, fields)]
        else:
            backlog = [ev for e in self._history if e.revision > start and (ev := _filtered(watcher, e))]
        self._watchers.append(watcher)
        try:
            for event in backlog:
                yield event
            while True:
                item = await watcher.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    # -- the store --------------------------------------------------------------
    def _record(self, verb: str, resource: str, namespace: str | None, name: str | None = None,
                subresource: str | None = None, body: Any = None, options: dict[str, Any] | None = None,
                **more: Any) -> Action:
        action = Action(verb, resource, namespace, name, subresource, copy.deepcopy(body), {**(options or {}), **more})
        self.actions.append(action)
        return action

    def _react(self, action: Action) -> Any:
        for verb, resource, fn in self._reactors:
            if verb in ("*", action.verb) and resource in ("*", action.resource):
                answer = fn(action)
                if answer is not None:
                    return answer
        return None

    def _get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._objects.get(resource, {}).get((namespace or "", name))
        if obj is None:
            raise _status(NotFoundError, 404, "NotFound", f'{resource} "{name}" not found')
        return obj

    def _create(self, resource: str, obj: dict[str, Any], namespace: str | None, dry_run: bool) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        ns = _ns(resource, namespace or meta.get("namespace"))
        if ns:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise _status(InvalidError, 422, "Invalid", "metadata.name: Required value: name or generateName "
                                                            "is required")
            meta["name"] = prefix + "".join(self._random.choice(_NAME_ALPHABET) for _ in range(5))
        if (ns or "", meta["name"]) in self._objects.get(resource, {}):
            raise _status(AlreadyExistsError, 409, "AlreadyExists", f'{resource} "{meta["name"]}" already exists')
        obj.setdefault("apiVersion", _api_version(resource))
        obj.setdefault("kind", _kind(resource))
        meta["uid"] = meta.get("uid") or str(uuid.UUID(int=next(self._uids)))
        meta["creationTimestamp"] = meta.get("creationTimestamp") or _now()
        meta["generation"] = 1
        for transient in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(transient, None)
        if dry_run:
            return obj
        return self._write(resource, obj, "ADDED", None)

    def _update(self, resource: str, obj: dict[str, Any], subresource: str | None) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        ns = _ns(resource, meta.get("namespace"))
        current = self._get(resource, ns, meta["name"])
        cur_meta = current["metadata"]
        rv = meta.get("resourceVersion")
        if rv and rv != cur_meta.get("resourceVersion"):
            raise _status(ConflictError, 409, "Conflict",
                          f'Operation cannot be fulfilled on {resource} "{meta["name"]}": the object has been '
                          "modified; please apply your changes to the latest version and try again")
        if subresource == "status":
            new = copy.deepcopy(current)
            new["status"] = obj.get("status")
            if new["status"] is None:
                new.pop("status")
        elif subresource is None:
            new = obj
            for kept in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                         "generation", "namespace"):
                if kept in cur_meta:
                    meta[kept] = cur_meta[kept]
                else:
                    meta.pop(kept, None)
            if "status" in current:
                new["status"] = copy.deepcopy(current["status"])
            else:
                new.pop("status", None)
            if new.get("spec") != current.get("spec"):
                meta["generation"] = int(cur_meta.get("generation") or 1) + 1
        else:
            raise _status(NotFoundError, 404, "NotFound", f"the server could not find the requested resource "
                                                         f"({resource}/{subresource})")
        new.setdefault("apiVersion", current.get("apiVersion"))
        new.setdefault("kind", current.get("kind"))
        if _equal_but_version(new, current):
            return copy.deepcopy(current)  # a no-op write does not move the revision
        if cur_meta.get("deletionTimestamp") and not new["metadata"].get("finalizers") \
                and not _awaits_kubelet(resource, new):
            return self._remove(resource, ns, meta["name"], new)
        return self._write(resource, new, "MODIFIED", current)

    def _bind(self, resource: str, namespace: str | None, name: str, binding: dict[str, Any]) -> dict[str, Any]:
        current = self._get(resource, namespace, name)
        if (current.get("spec") or {}).get("nodeName"):
            raise _status(ConflictError, 409, "Conflict", f'pod {name} is already assigned to node '
                                                          f'"{current["spec"]["nodeName"]}"')
        new = copy.deepcopy(current)
        new.setdefault("spec", {})["nodeName"] = (binding.get("target") or {}).get("name")
        self._write(resource, new, "MODIFIED", current)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def _write(self, resource: str, obj: dict[str, Any], type_: str, old: dict[str, Any] | None) -> dict[str, Any]:
        self.revision += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.revision)
        self._objects.setdefault(resource, {})[(meta.get("namespace") or "", meta["name"])] = obj
        self._publish(_Event(self.revision, resource, type_, copy.deepcopy(obj), old and copy.deepcopy(old)))
        return copy.deepcopy(obj)

    def _remove(self, resource: str, namespace: str | None, name: str,
                last: dict[str, Any] | None = None) -> dict[str, Any]:
        current = self._objects[resource].pop((namespace or "", name))
        gone = copy.deepcopy(last if last is not None else current)
        self.revision += 1
        gone["metadata"]["resourceVersion"] = str(self.revision)
        self._publish(_Event(self.revision, resource, "DELETED", copy.deepcopy(gone), current))
        return gone

    def _publish(self, event: _Event) -> None:
        self._history.append(event)
        for w in self._watchers:
            if (ev := _filtered(w, event)) is not None:
                w.queue.put_nowait(ev)


# -- helpers --------------------------------------------------------------------
def _of(resource: str | Kind) -> Kind:
    """The kind of a plural, or a Kind the caller built (a custom resource's), as ``Client`` takes both."""
    return resource if isinstance(resource, Kind) else by_plural(resource)


def _kind(resource: str) -> str:
    try:
        return _of(resource).kind
    except KeyError:
        return resource


def _api_version(resource: str) -> str:
    try:
        return _of(resource).api_version
    except KeyError:
        return "v1"


def _ns(resource: str, namespace: str | None) -> str | None:
    try:
        namespaced = _of(resource).namespaced
    except KeyError:
        namespaced = True
    return (namespace or None) if namespaced else None


def _selectors(resource: str, label_selector: str | None, field_selector: str | None) -> tuple[Any, Any]:
    try:
        labels = parse_label_selector(label_selector) if label_selector else None
        fields = parse_field_selector(field_selector, allowed=_of(resource).selectable_fields) if field_selector else None
    except ValueError as e:
        raise _status(BadRequestError, 400, "BadRequest", str(e)) from e
    return labels, fields


def _matches(resource: str, obj: dict[str, Any], labels: Any, fields: Any) -> bool:
    if labels is not None and not labels.matches((obj.get("metadata") or {}).get("labels") or {}):
        return False
    return fields is None or fields.matches(_of(resource).fields(obj))


def _filtered(w: _Watcher, e: _Event) -> dict[str, Any] | None:
    """The event as watcher ``w`` sees it: entering or leaving its filter is ADDED or DELETED."""
    if e.resource != w.resource:
        return None
    if w.namespace is not None and (e.obj.get("metadata") or {}).get("namespace") != w.namespace:
        return None
    now = _matches(w.resource, e.obj, w.labels, w.fields)
    if e.type != "MODIFIED" or e.old is None:  # ADDED, or DELETED with its last state
        return {"type": e.type, "object": copy.deepcopy(e.obj)} if now else None
    before = _matches(w.resource, e.old, w.labels, w.fields)
    if now and before:
        return {"type": "MODIFIED", "object": copy.deepcopy(e.obj)}
    if now:
        return {"type": "ADDED", "object": copy.deepcopy(e.obj)}
    if before:
        return {"type": "DELETED", "object": copy.deepcopy(e.obj)}
    return None


def _equal_but_version(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def strip(o: dict[str, Any]) -> str:
        o = copy.deepcopy(o)
        o.get("metadata", {}).pop("resourceVersion", None)
        return json.dumps(o, sort_keys=True)
    return strip(a) == strip(b)


def _awaits_kubelet(resource: str, pod: dict[str, Any]) -> bool:
    """A bound, running pod marked with a grace period is removed by its kubelet (a delete with grace 0)."""
    if resource != "pods":
        return False
    return bool((pod.get("spec") or {}).get("nodeName")) \
        and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed") \
        and int(pod["metadata"].get("deletionGracePeriodSeconds") or 0) > 0


def _mark_for_deletion(resource: str, obj: dict[str, Any], grace_period: int | None,
                       propagation: str | None) -> dict[str, Any] | None:
    """The object as marked for deletion, or None to remove it now (the API server's rules)."""
    meta = obj["metadata"]
    finalizers = list(meta.get("finalizers") or [])
    if propagation == "Foreground" and "foregroundDeletion" not in finalizers:
        finalizers.append("foregroundDeletion")
    elif propagation == "Orphan" and "orphan" not in finalizers:
        finalizers.append("orphan")
    grace = 0
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if resource == "pods" and spec.get("nodeName") and status.get("phase") not in ("Succeeded", "Failed"):
        grace = max(0, grace_period if grace_period is not None else int(spec.get("terminationGracePeriodSeconds", 30)))
        if meta.get("deletionGracePeriodSeconds") is not None:
            grace = min(grace, int(meta["deletionGracePeriodSeconds"]))
    if not finalizers and grace == 0:
        return None
    marked = copy.deepcopy(obj)
    mmeta = marked["metadata"]
    if finalizers:
        mmeta["finalizers"] = finalizers
    if not mmeta.get("deletionTimestamp") or grace < int(mmeta.get("deletionGracePeriodSeconds") or 0):
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=grace)
        mmeta["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    mmeta["deletionGracePeriodSeconds"] = grace
    return marked
