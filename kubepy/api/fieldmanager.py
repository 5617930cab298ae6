"""Managed fields: who owns which field of an object (server-side apply's bookkeeping).

Every write records its manager in ``metadata.managedFields``, as
k8s.io/apimachinery's ``managedfields`` package does (learned from it):

* an update (create, PUT, every non-apply PATCH, on the object or its
  ``status`` subresource) by ``manager`` takes, as operation ``Update`` at
  the kind's apiVersion, the fields it changed, from whoever owned them;
* an apply (``application/apply-patch+yaml``) merges the configuration by
  the kind's structure (``kubepy.api.smd``), takes the fields it sets as
  operation ``Apply``, answers 409 with a ``FieldManagerConflict`` cause per
  field another manager owns (unless forced), and removes fields it applied
  before and no longer does when nobody else owns them.

Around that core, upstream's layers, in its order: managers named by
operation/apiVersion/subresource; an update that changes nothing keeps the
entries as they are (their times too); objects that had no managed fields
are not tracked by updates until their first apply, which first gives
their existing fields to ``before-first-apply``; at most 10 update managers
(the oldest merge into ``ancient-changes``); the metadata Kubernetes sets
itself (name, uid, resourceVersion, ...) is owned by nobody; and the
client-side apply upgrade: ``kubectl`` applying over fields
``kubectl.kubernetes.io/last-applied-configuration`` says it set takes them
without a conflict, and keeps that annotation in step.

Errors are ``kubepy.api.errors`` ones: 409 Conflict (apply conflicts), 400
(a bad applied object, an item without its list key: upstream's message,
whose 500 is a known upstream bug, kubernetes#139253).
"""

from __future__ import annotations

import json
import logging
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from kubepy.api import errors, fieldpath, objects, smd, structure
from kubepy.api.fieldpath import FieldSet, Path
from kubepy.kinds import Kind

log = logging.getLogger(__name__)

__all__ = [
    "LAST_APPLIED",
    "FieldManager",
    "manager_name",
    "validate_manager",
]

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
MAX_MANAGER_LENGTH = 128  # validation.FieldManagerMaxLength
MAX_UPDATE_MANAGERS = 10
_CURRENT = "current-operation"
_BEFORE_FIRST_APPLY = "before-first-apply"
_ANCIENT = "ancient-changes"
_KUBECTL = "kubectl"  # the manager whose applies upgrade client-side apply

# Fields Kubernetes sets itself: nobody owns them (upstream's stripMetaManager).
_STRIP: frozenset[Path] = frozenset({
    (("f", "apiVersion"),), (("f", "kind"),), (("f", "metadata"),),
    *((("f", "metadata"), ("f", k)) for k in (
        "name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName", "generation",
        "managedFields", "resourceVersion")),
})


# -- manager names ------------------------------------------------------------------
def manager_name(field_manager: str | None, user_agent: str) -> str:
    """The ``fieldManager`` parameter, else what precedes the first "/" of the
    User-Agent, its unprintable characters dropped, cut to 128 (upstream's
    managerOrUserAgent)."""
    if field_manager:
        return field_manager
    out = ""
    for ch in user_agent.split("/", 1)[0]:
        if not ch.isprintable():
            continue
        if len((out + ch).encode()) > MAX_MANAGER_LENGTH:
            break
        out += ch
    return out


def validate_manager(name: str) -> list[dict[str, str]]:
    """Causes for an invalid ``fieldManager`` (ValidateFieldManager)."""
    causes = []
    if len(name) > MAX_MANAGER_LENGTH:
        causes.append({"reason": "FieldValueTooLong", "field": "fieldManager",
                       "message": f"Too long: may not be more than {MAX_MANAGER_LENGTH} bytes"})
    for i, ch in enumerate(name):
        if not ch.isprintable() or unicodedata.category(ch) == "Zs" and ch != " ":
            causes.append({"reason": "FieldValueInvalid", "field": "fieldManager",
                           "message": f"Invalid value: {json.dumps(name)}: invalid characters at index {i}: "
                                      f"{json.dumps(ch)}"})
            break
    return causes


def _identifier(manager: str, operation: str, api_version: str, subresource: str) -> str:
    """The key of one entry, as upstream's BuildManagerIdentifier marshals it."""
    entry: dict[str, str] = {"manager": manager or "unknown", "operation": operation}
    if operation == "Update" and api_version:
        entry["apiVersion"] = api_version
    if subresource:
        entry["subresource"] = subresource
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False)


def _describe(identifier: str) -> str:
    """A manager as conflicts name it: ``"kubectl"`` or ``"kubepy-controller-manager" using apps/v1``."""
    try:
        e = json.loads(identifier)
    except ValueError:
        return json.dumps(identifier)
    out = json.dumps(e.get("manager", ""), ensure_ascii=False)
    if e.get("subresource"):
        out += f" with subresource {json.dumps(e['subresource'])}"
    if e.get("operation") == "Update":
        out += f" using {e.get('apiVersion', '')}"
    return out


# -- the wire form ---------------------------------------------------------------------
@dataclass
class Managed:
    fields: dict[str, smd.Entry] = field(default_factory=dict)
    times: dict[str, str | None] = field(default_factory=dict)
    # The entries as decoded, to encode an unchanged one as it was (no re-encoding).
    decoded: dict[str, tuple[smd.Entry, dict[str, Any]]] = field(default_factory=dict)


class BadManagedFields(ValueError):
    pass


def decode(entries: Any) -> Managed:
    """``metadata.managedFields`` → Managed; BadManagedFields names what is wrong."""
    m = Managed()
    if entries is None:
        return m
    if not isinstance(entries, list):
        raise BadManagedFields("managedFields must be a list")
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise BadManagedFields(f"managedFields[{i}] must be an object")
        op = e.get("operation")
        if op not in ("Apply", "Update"):
            raise BadManagedFields("operation must be `Apply` or `Update`")
        if not e.get("apiVersion"):
            raise BadManagedFields("apiVersion must not be empty")
        if e.get("fieldsType") != "FieldsV1":
            raise BadManagedFields(f"missing fieldsType in managed fields entry {i}" if not e.get("fieldsType")
                                   else f"invalid fieldsType {e.get('fieldsType')!r} in managed fields entry {i}")
        sub = e.get("subresource") or ""
        ident = _identifier(str(e.get("manager") or ""), op, e["apiVersion"], sub)
        try:
            fields = fieldpath.from_fields_v1(e.get("fieldsV1") or {})
        except fieldpath.FieldsError as err:
            raise BadManagedFields(f"error decoding set of {ident}: {err}") from err
        entry = m.fields[ident] = smd.Entry(fields, e["apiVersion"], op == "Apply")
        m.times[ident] = e.get("time")
        m.decoded[ident] = (entry, e)
    return m


def encode(m: Managed) -> list[dict[str, Any]] | None:
    out = []
    for ident, entry in m.fields.items():
        was = m.decoded.get(ident)
        if was is not None and was[0] is entry and was[1].get("time") == m.times.get(ident):
            out.append(was[1])
            continue
        info = json.loads(ident)
        e: dict[str, Any] = {"manager": info.get("manager", ""),
                             "operation": "Apply" if entry.applied else "Update",
                             "apiVersion": entry.api_version}
        t = m.times.get(ident)
        if t:
            e["time"] = t
        e["fieldsType"] = "FieldsV1"
        e["fieldsV1"] = fieldpath.to_fields_v1(entry.fields)
        if info.get("subresource"):
            e["subresource"] = info["subresource"]
        out.append(e)
    if not out:
        return None

    def order(e: dict[str, Any]) -> tuple[Any, ...]:
        return (e["operation"], e.get("time") or "", e["manager"], e["apiVersion"], e.get("subresource", ""))
    return sorted(out, key=order)


def _now() -> str:
    return objects.rfc3339(objects.now())


# -- the field manager ---------------------------------------------------------------------
_STATUS_ONLY_IGNORE: tuple[Path, ...] = ((("f", "spec"),), (("f", "metadata"),))
_MAIN_IGNORE_STATUS: tuple[Path, ...] = ((("f", "status"),),)


class FieldManager:
    """Managed fields of writes to one kind (and subresource: "" or "status")."""

    def __init__(self, res: Kind, subresource: str = "") -> None:
        self.res = res
        self.subresource = subresource
        if subresource == "status":
            ignore = _STATUS_ONLY_IGNORE
        elif res.has_status and "status" in res.subresources:
            ignore = _MAIN_IGNORE_STATUS
        else:
            ignore = ()
        self.updater = smd.Updater(structure.root_type(res), ignore=ignore)

    @property
    def api_version(self) -> str:
        return self.res.api_version

    # -- update --------------------------------------------------------------------------
    def update(self, live: dict[str, Any] | None, new: dict[str, Any], manager: str) -> None:
        """Record ``manager``'s update from ``live`` (None: a create) to ``new``, in ``new``."""
        meta = new.setdefault("metadata", {})
        requested = meta.pop("managedFields", None)
        live_entries = (live or {}).get("metadata", {}).get("managedFields") if live else None
        base_from_live = True
        if self.subresource or requested is None:
            managed = _decode_or_empty(live_entries)
        elif requested == [] or requested == [{}]:
            managed, base_from_live = Managed(), False  # the client resets managed fields
        else:
            try:
                managed = decode(requested)
                base_from_live = not managed.fields or requested == live_entries
            except BadManagedFields:
                managed = Managed()
            if not managed.fields:
                managed = _decode_or_empty(live_entries)
        if not managed.fields and live is not None:
            # Not tracked (never, or reset by this write): updates start tracking only at
            # the first apply (or a create), as upstream's skipNonAppliedManager.
            return
        try:
            changed = self._update_managed(live or {}, new, managed, manager)
        except Exception as e:  # noqa: BLE001 - bookkeeping never fails a write
            # Upstream's UpdateNoErrors: the write goes on, the managed fields stay as they were.
            log.warning("managed fields not updated resource=%s name=%s manager=%s err=%s", self.res.plural,
                        meta.get("name", ""), manager, e, exc_info=not isinstance(e, smd.SchemaError))
            if live_entries:
                meta["managedFields"] = live_entries
            return
        if not changed and base_from_live and live_entries:
            meta["managedFields"] = live_entries  # unchanged: keep the stored entries as they are
            return
        encoded = encode(managed)
        if encoded:
            meta["managedFields"] = encoded

    def _update_managed(self, live: dict[str, Any], new: dict[str, Any], managed: Managed, manager: str) -> bool:
        live = _without_managed(live)
        fields = self.updater.update(live, _without_managed(new), managed.fields, _CURRENT, self.api_version)
        ident = _identifier(manager, "Update", self.api_version, self.subresource)
        current = fields.pop(_CURRENT, None)
        changed = fields != managed.fields
        if current is not None:
            current_fields = current.fields - _metadata_kubernetes_sets(current.fields)
            if current_fields:
                previous = fields.get(ident)
                merged = current_fields | previous.fields if previous else current_fields
                fields[ident] = smd.Entry(merged, self.api_version, False)
                managed.times[ident] = _now()
                changed = True
        managed.fields = fields
        _cap_update_managers(managed)
        return changed

    # -- apply ---------------------------------------------------------------------------
    def apply(self, live: dict[str, Any], config: dict[str, Any], manager: str, *,
              force: bool) -> dict[str, Any]:
        """The object ``config`` applied by ``manager`` makes of ``live`` ({} when it does not exist),
        managedFields included; errors.Conflict on conflicts (unless ``force``)."""
        self._check_applied(config)
        try:
            managed = decode((live.get("metadata") or {}).get("managedFields"))
        except BadManagedFields as e:
            raise errors.BadRequest(f"failed to decode managed fields: {e}") from e
        live_plain = _without_managed(live)
        try:
            if not managed.fields and live_plain.get("metadata", {}).get("uid"):
                # Fields set before anyone applied belong to before-first-apply.
                self._update_managed({"metadata": {}}, live_plain, managed, _BEFORE_FIRST_APPLY)
            new = self._apply_with_upgrade(live_plain, config, managed, manager, force)
        except smd.SchemaError as e:
            meta = config.get("metadata") if isinstance(config.get("metadata"), dict) else {}
            # Upstream answers 500 (kubernetes#139253); it is the client's input: 400.
            raise errors.BadRequest(f"failed to create typed patch object ({meta.get('namespace') or ''}/"
                                       f"{meta.get('name') or ''}; {self._gvk_of(config)}): {e}") from e
        if new is None:
            new = live_plain
        new = dict(new)
        meta = new["metadata"] = dict(new.get("metadata") or {})
        encoded = encode(managed)
        if encoded:
            meta["managedFields"] = encoded
        if manager == _KUBECTL and (meta.get("annotations") or {}).get(LAST_APPLIED):
            meta["annotations"] = {**meta["annotations"], LAST_APPLIED: _last_applied(config)}
        return new

    def _apply_with_upgrade(self, live: dict[str, Any], config: dict[str, Any], managed: Managed, manager: str,
                            force: bool) -> dict[str, Any] | None:
        ident = _identifier(manager, "Apply", self.api_version, self.subresource)
        try:
            new, fields = self.updater.apply(live, config, managed.fields, ident, self.api_version, force=force)
        except smd.Conflicts as c:
            allowed = self._allowed_by_last_applied(live) if manager == _KUBECTL else None
            pairs = c.pairs()
            if allowed is None or any(p not in allowed for _, p in pairs):
                left = [(m, p) for m, p in pairs if allowed is None or p not in allowed]
                log.info("apply refused resource=%s name=%s manager=%s reason=Conflict conflicts=%d first=%s",
                         self.res.plural, (live.get("metadata") or {}).get("name", ""), manager, len(left),
                         fieldpath.path_string(left[0][1]))
                raise _conflict_error(left) from c
            log.info("apply upgraded client-side apply resource=%s name=%s fields=%d", self.res.plural,
                     (live.get("metadata") or {}).get("name", ""), len(pairs))
            new, fields = self.updater.apply(live, config, managed.fields, ident, self.api_version, force=True)
        entry = fields.get(ident)
        if entry is not None:
            stripped = entry.fields - _metadata_kubernetes_sets(entry.fields)
            if stripped:
                fields[ident] = smd.Entry(stripped, entry.api_version, True)
            else:
                fields.pop(ident)
        managed.fields = fields
        if new is not None:
            managed.times[ident] = _now()
        return new

    def _allowed_by_last_applied(self, live: dict[str, Any]) -> FieldSet | None:
        """The fields client-side apply set and that still hold its value (lastAppliedManager)."""
        text = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
        if not text:
            return None
        try:
            last = json.loads(text)
        except ValueError:
            return None
        if not isinstance(last, dict) or last.get("apiVersion") != self.api_version:
            return None
        t = self.updater.type
        try:
            fields = smd.to_field_set(last, t)
            c = smd.compare(last, live, t)
        except smd.SchemaError:
            return None
        return fields - c.modified - c.added - c.removed

    def _gvk_of(self, obj: dict[str, Any]) -> str:
        api_version = str(obj.get("apiVersion") or "")
        group, _, version = api_version.rpartition("/")
        return f"{group}/{version}, Kind={obj.get('kind', '')}"

    def _check_applied(self, config: dict[str, Any]) -> None:
        if config.get("apiVersion") != self.res.api_version or config.get("kind") != self.res.kind:
            if config.get("kind") == self.res.kind and config.get("apiVersion"):
                raise errors.BadRequest("Incorrect version specified in apply patch. Specified patch version: "
                                        f"{config.get('apiVersion')}, expected: {self.res.api_version}")
            raise errors.BadRequest(f"invalid object type: {self._gvk_of(config)}")
        meta = config.get("metadata")
        if isinstance(meta, dict) and meta.get("managedFields") is not None:
            raise errors.BadRequest("metadata.managedFields must be nil")


def _metadata_kubernetes_sets(fields: FieldSet) -> FieldSet:
    """The paths of ``fields`` that only Kubernetes sets (owned by nobody)."""
    return fields & _STRIP


def _without_managed(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def _decode_or_empty(entries: Any) -> Managed:
    try:
        return decode(entries)
    except BadManagedFields:
        return Managed()


def _cap_update_managers(m: Managed) -> None:
    """At most MAX_UPDATE_MANAGERS update entries: the oldest merge, per apiVersion, into ancient-changes."""
    updaters = [k for k, e in m.fields.items() if not e.applied]
    if len(updaters) <= MAX_UPDATE_MANAGERS:
        return
    updaters.sort(key=lambda k: (m.times.get(k) or "", k))
    first: dict[str, str] = {}
    length = len(updaters)
    for ident in updaters:
        if length <= MAX_UPDATE_MANAGERS:
            break
        e = m.fields[ident]
        bucket = _identifier(_ANCIENT, "Update", e.api_version, "")
        if e.api_version in first:
            if bucket not in m.fields:
                m.fields[bucket] = m.fields.pop(first[e.api_version])
            m.fields[bucket] = smd.Entry(e.fields | m.fields[bucket].fields, e.api_version, False)
            del m.fields[ident]
            m.times[bucket] = m.times.get(ident)
            length -= 1
        else:
            first[e.api_version] = ident


def _conflict_error(pairs: list[tuple[str, Path]]) -> errors.Conflict:
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {_describe(m)}",
               "field": fieldpath.path_string(p)} for m, p in pairs]
    if len(pairs) == 1:
        m, p = pairs[0]
        message = f"Apply failed with 1 conflict: conflict with {_describe(m)}: {fieldpath.path_string(p)}"
    else:
        lines = []
        last = None
        for m, p in pairs:
            if m != last:
                lines.append(f"conflicts with {_describe(m)}:")
                last = m
            lines.append(f"- {fieldpath.path_string(p)}")
        message = f"Apply failed with {len(pairs)} conflicts: " + "\n".join(lines)
    return errors.Conflict(message, details={"causes": causes})


def _last_applied(config: dict[str, Any]) -> str:
    """The applied object as client-side apply's annotation holds it (Go's JSON: sorted keys)."""
    obj = json.loads(json.dumps(config))
    annotations = (obj.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(LAST_APPLIED, None)
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") + "\n"
