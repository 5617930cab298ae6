"""Structured merge and diff: the algorithm of server-side apply.

Learned from sigs.k8s.io/structured-merge-diff (``typed`` and ``merge``), on
plain JSON values walked with a ``kubepy.api.structure`` type:

* :func:`to_field_set` — the fields a value sets (an applier's claim);
* :func:`merge` — an applied configuration over the live object: scalars and
  atomic maps/lists are replaced, granular maps merged key by key, set and
  map lists item by item (items keep the live order, new ones where the
  configuration puts them);
* :func:`compare` — which fields one value added, modified and removed
  relative to another;
* :func:`remove_items` — a value without the fields of a set;
* :class:`Updater` — ``update`` (a plain write takes the fields it changed
  from their owners) and ``apply`` (merge, take ownership, answer
  :class:`Conflicts` for fields other managers own unless forced, and drop
  what this applier applied before but no longer does and nobody else owns).

Managers are keyed by an identifier string (``kubepy.api.fieldmanager``
builds them); :class:`Entry` is one manager's set, API version and whether
it came from an apply. Values are never modified in place.

Error tree: ``SchemaError`` (a value that does not fit its type: a map-list
item without its key, a duplicate applied item) and ``Conflicts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubepy.api import fieldpath
from kubepy.api.fieldpath import FieldSet, Path, PathElement
from kubepy.api.structure import ListType, MapType, Type, resolve

__all__ = [
    "ABSENT",
    "Entry",
    "SchemaError",
    "Conflicts",
    "Updater",
    "to_field_set",
    "merge",
    "compare",
    "remove_items",
    "ensure_named_fields_are_members",
]


class _Absent:
    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "ABSENT"


ABSENT: Any = _Absent()
EMPTY: FieldSet = frozenset()


class SchemaError(ValueError):
    """A value that cannot be walked with its type; the text names the path."""


class Conflicts(Exception):
    """Fields an apply would take from other managers: ``{manager id: set}``."""

    def __init__(self, by_manager: dict[str, FieldSet]) -> None:
        super().__init__(f"{sum(len(s) for s in by_manager.values())} conflicts")
        self.by_manager = by_manager

    def pairs(self) -> list[tuple[str, Path]]:
        """(manager, path), by manager then path."""
        return [(m, p) for m in sorted(self.by_manager) for p in fieldpath.sort_paths(self.by_manager[m])]


@dataclass(frozen=True)
class Entry:
    fields: FieldSet
    api_version: str
    applied: bool


# -- list items ---------------------------------------------------------------
def _item_element(t: ListType, item: Any, index: int, path: Path) -> PathElement:
    if t.list_type == "map":
        if not isinstance(item, dict):
            raise SchemaError(f"{fieldpath.path_string(path)}: element {index}: "
                              "associative list with keys may not have non-map elements")
        keyed = []
        for k in t.keys:
            if k in item and item[k] is not None:
                keyed.append((k, fieldpath._hashable(item[k])))
            elif k in t.key_defaults:
                keyed.append((k, t.key_defaults[k]))
            else:
                raise SchemaError(f"{fieldpath.path_string(path)}: element {index}: associative list with keys "
                                  f"has an element that omits key field {k!r} (and doesn't have default value)"
                                  .replace("'", '"'))
        return ("k", tuple(sorted(keyed)))
    if t.list_type == "set":
        if isinstance(item, dict):
            raise SchemaError(f"{fieldpath.path_string(path)}: element {index}: "
                              "associative list without keys has an element that's a map type")
        return fieldpath.value_element(item)
    return ("i", index)


# -- the field set of a value -----------------------------------------------------
def to_field_set(value: Any, t: Type) -> FieldSet:
    out: set[Path] = set()
    _to_set(value, t, (), out)
    return frozenset(out)


def _to_set(v: Any, t: Type, path: Path, out: set[Path]) -> None:
    if not isinstance(v, (dict, list)):
        out.add(path)
        return
    t = resolve(t, v)
    if isinstance(t, ListType):
        if t.list_type == "atomic":
            out.add(path)
            return
        for i, item in enumerate(v):
            p = path + (_item_element(t, item, i, path),)
            _to_set(item, t.elem, p, out)
            out.add(p)
        return
    if isinstance(t, MapType):
        if t.atomic:
            out.add(path)
            return
        for k, val in v.items():
            p = path + (("f", k),)
            _to_set(val, t.field(k), p, out)
            if val is None or (isinstance(val, dict) and not val) or not t.declares(k):
                out.add(p)
        return
    out.add(path)


# -- merge -------------------------------------------------------------------------
def _without_nulls(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _without_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_without_nulls(x) for x in v]
    return v


def merge(live: Any, config: Any, t: Type) -> Any:
    """``config`` applied over ``live`` (either may be ABSENT)."""
    return _merge(live, config, t, ())


def _merge(lhs: Any, rhs: Any, t: Type, path: Path) -> Any:
    if rhs is ABSENT:
        return lhs
    if lhs is ABSENT or lhs is None:
        _check_applied(rhs, t, path)
        return _without_nulls(rhs)
    tl, tr = resolve(t, lhs), resolve(t, rhs)
    if type(tl) is not type(tr) or not isinstance(tr, (ListType, MapType)):
        _check_applied(rhs, t, path)
        return _without_nulls(rhs)
    if isinstance(tr, ListType):
        if tr.list_type == "atomic" or (not lhs and not rhs):
            return _without_nulls(rhs)
        return _merge_list(lhs, rhs, tr, path)
    assert isinstance(tr, MapType)
    if tr.atomic or (not lhs and not rhs):
        return _without_nulls(rhs)
    out = dict(lhs)
    for k, rv in rhs.items():
        if rv is None:
            out.pop(k, None)
            continue
        merged = _merge(out.get(k, ABSENT), rv, tr.field(k), path + (("f", k),))
        if merged is ABSENT:
            out.pop(k, None)
        else:
            out[k] = merged
    return out


def _check_applied(v: Any, t: Type, path: Path) -> None:
    """An applied value's items must each be named once (duplicates are refused)."""
    _list_elements(v, t, path, allow_duplicates=False) if isinstance(v, list) else None
    t = resolve(t, v)
    if isinstance(t, MapType) and not t.atomic:
        for k, x in v.items():
            if isinstance(x, (dict, list)):
                _check_applied(x, t.field(k), path + (("f", k),))
    elif isinstance(t, ListType) and t.list_type != "atomic":
        for i, x in enumerate(v):
            if isinstance(x, (dict, list)):
                _check_applied(x, t.elem, path + (_item_element(t, x, i, path),))


def _list_elements(v: list[Any], t: Type, path: Path, *,
                   allow_duplicates: bool) -> tuple[list[PathElement], dict[PathElement, Any]]:
    t = resolve(t, v)
    if not isinstance(t, ListType) or t.list_type == "atomic":
        return [], {}
    pes: list[PathElement] = []
    observed: dict[PathElement, Any] = {}
    for i, item in enumerate(v):
        pe = _item_element(t, item, i, path)
        if pe in observed:
            if not allow_duplicates:
                raise SchemaError(f"{fieldpath.path_string(path)}: duplicate entries for key "
                                  f"{fieldpath.path_string((pe,))}")
            observed[pe] = ABSENT  # duplicated live items are not merged with the new value
        else:
            observed[pe] = item
        pes.append(pe)
    return pes, observed


def _merge_list(lhs: list[Any], rhs: list[Any], t: ListType, path: Path) -> list[Any]:
    """structured-merge-diff's list merge: live order kept, applied items placed as applied."""
    lhs_pes, observed_lhs = _list_elements(lhs, t, path, allow_duplicates=True)
    rhs_pes, observed_rhs = _list_elements(rhs, t, path, allow_duplicates=False)
    shared = [pe for pe in rhs_pes if pe in observed_lhs]
    out: list[Any] = []

    def emit(pe: PathElement, left: Any, right: Any) -> None:
        merged = _merge(left, right, t.elem, path + (pe,))
        if merged is not ABSENT and merged is not None:
            out.append(merged)

    next_shared = shared.pop(0) if shared else None
    merged_rhs: set[PathElement] = set()
    li = ri = 0
    nl, nr = len(lhs_pes), len(rhs_pes)
    while li < nl or ri < nr:
        if li < nl and ri < nr:
            pe = lhs_pes[li]
            if pe == rhs_pes[ri]:
                merged_rhs.add(pe)
                emit(pe, observed_lhs.get(pe, ABSENT), observed_rhs[pe])
                li += 1
                ri += 1
                next_shared = shared.pop(0) if shared else None
                continue
            if pe in observed_rhs and next_shared is not None and next_shared != pe:
                li += 1
                continue
        if li < nl:
            pe = lhs_pes[li]
            if pe not in observed_rhs:
                emit(pe, lhs[li], ABSENT)
                li += 1
                continue
            if pe in merged_rhs:
                li += 1
        if ri < nr:
            pe = rhs_pes[ri]
            merged_rhs.add(pe)
            emit(pe, observed_lhs.get(pe, ABSENT), observed_rhs[pe])
            ri += 1
            if next_shared is not None and next_shared == pe:
                next_shared = shared.pop(0) if shared else None
    return out


# -- compare -----------------------------------------------------------------------
@dataclass
class Comparison:
    added: set[Path]
    modified: set[Path]
    removed: set[Path]


def compare(lhs: Any, rhs: Any, t: Type) -> Comparison:
    c = Comparison(set(), set(), set())
    _compare(lhs, rhs, t, (), c)
    return c


def _is_empty(v: Any) -> bool:
    return v is ABSENT or v is None or (isinstance(v, (list, dict)) and not v)


def _compare(lhs: Any, rhs: Any, t: Type, path: Path, c: Comparison) -> None:
    if lhs == rhs and lhs is not ABSENT:
        return  # equal values differ nowhere below (one C-speed comparison instead of a walk)
    if not isinstance(lhs, (dict, list)) and not isinstance(rhs, (dict, list)):
        # Scalars, nulls, absences (most nodes): a leaf, without resolving types.
        if lhs is ABSENT:
            c.added.add(path)
        elif rhs is ABSENT:
            c.removed.add(path)
        else:
            c.modified.add(path)
        return
    # null takes the other side's form (structured-merge-diff: "nil is a wildcard").
    tl = resolve(t, lhs) if lhs is not ABSENT and (lhs is not None or rhs is ABSENT or rhs is None) else None
    tr = resolve(t, rhs) if rhs is not ABSENT and (rhs is not None or tl is None) else None
    tt = tr or tl or resolve(t, lhs if lhs is not ABSENT else rhs)
    leaf = True
    if tl is None or tr is None or type(tl) is type(tr):
        both_empty = _is_empty(lhs) and _is_empty(rhs)
        if isinstance(tt, ListType) and tt.list_type != "atomic" and not both_empty:
            leaf = False
            _compare_lists(lhs if isinstance(lhs, list) else [], rhs if isinstance(rhs, list) else [], tt, path, c)
        elif isinstance(tt, MapType) and not tt.atomic and not both_empty:
            leaf = False
            lm = lhs if isinstance(lhs, dict) else {}
            rm = rhs if isinstance(rhs, dict) else {}
            present = tt.present()
            if present:
                # Kubernetes' typed objects always hold these ({} when unset): never "added" themselves.
                if isinstance(lhs, dict):
                    lm = {**present, **lm}
                if isinstance(rhs, dict):
                    rm = {**present, **rm}
            for k in list(lm) + [k for k in rm if k not in lm]:
                _compare(lm.get(k, ABSENT), rm.get(k, ABSENT), tt.field(k), path + (("f", k),), c)
    if leaf:
        if lhs is ABSENT:
            c.added.add(path)
        elif rhs is ABSENT:
            c.removed.add(path)
        elif lhs != rhs:
            c.modified.add(path)
    elif lhs is ABSENT:
        c.added.add(path)
    elif rhs is ABSENT:
        c.removed.add(path)


def _compare_lists(lhs: list[Any], rhs: list[Any], t: ListType, path: Path, c: Comparison) -> None:
    lvalues: dict[PathElement, list[Any]] = {}
    rvalues: dict[PathElement, list[Any]] = {}
    order: list[PathElement] = []
    for i, item in enumerate(lhs):
        pe = _item_element(t, item, i, path)
        if pe not in lvalues:
            order.append(pe)
        lvalues.setdefault(pe, []).append(item)
    for i, item in enumerate(rhs):
        pe = _item_element(t, item, i, path)
        if pe not in rvalues and pe not in lvalues:
            order.append(pe)
        rvalues.setdefault(pe, []).append(item)
    for pe in order:
        ls, rs = lvalues.get(pe, []), rvalues.get(pe, [])
        p = path + (pe,)
        if len(ls) <= 1 and len(rs) <= 1:
            _compare(ls[0] if ls else ABSENT, rs[0] if rs else ABSENT, t.elem, p, c)
        elif len(ls) >= 2 and len(rs) >= 2:
            if ls != rs:
                c.modified.add(p)
        elif len(ls) >= 2:
            if rs:
                _compare(ABSENT, rs[0], t.elem, p, c)
            c.removed.add(p)
        else:
            if ls:
                _compare(ls[0], ABSENT, t.elem, p, c)
            c.added.add(p)


# -- removal -------------------------------------------------------------------------
def remove_items(value: Any, t: Type, fields: FieldSet) -> Any:
    """``value`` without the paths of ``fields`` (a map or list left empty goes too)."""
    if not fields:
        return value
    out = _remove(value, t, fields)
    return {} if out is ABSENT and isinstance(value, dict) else out


def _remove(v: Any, t: Type, rm: FieldSet) -> Any:
    t = resolve(t, v)
    if isinstance(t, ListType):
        if not v or t.list_type == "atomic":
            return ABSENT
        items = []
        for i, item in enumerate(v):
            pe = _item_element(t, item, i, ())
            if (pe,) in rm:
                continue
            sub = fieldpath.with_prefix(rm, pe)
            if sub:
                item = _remove(item, t.elem, sub)
                if item is ABSENT:
                    continue
            items.append(item)
        return items if items else ABSENT
    if isinstance(t, MapType):
        if not v or t.atomic:
            return ABSENT
        out = {}
        for k, val in v.items():
            pe = ("f", k)
            if (pe,) in rm:
                continue
            sub = fieldpath.with_prefix(rm, pe)
            if sub:
                val = _remove(val, t.field(k), sub)
                if val is ABSENT:
                    continue
            out[k] = val
        return out if out else ABSENT
    return v


def ensure_named_fields_are_members(fields: FieldSet, t: Type) -> FieldSet:
    """``fields`` plus every prefix of its paths that is a struct's named field."""
    extra: set[Path] = set()
    types: dict[Path, Type | None] = {(): t}  # prefix -> its type (None: nothing named below)
    for p in fields:
        for i in range(1, len(p)):
            prefix = p[:i]
            cur = types.get(prefix, _UNSEEN)
            if cur is _UNSEEN:
                parent = types[p[:i - 1]]
                pe = p[i - 1]
                cur = None
                if isinstance(parent, MapType) and pe[0] == "f":
                    if parent.declares(pe[1]):
                        extra.add(prefix)
                    cur = parent.field(pe[1])
                elif isinstance(parent, ListType):
                    cur = parent.elem
                types[prefix] = cur
            if cur is None:
                break
    return fields | extra if extra else fields


_UNSEEN: Any = object()


# -- the updater -----------------------------------------------------------------------
Managers = dict[str, Entry]


class Updater:
    """Ownership bookkeeping for one type; ``ignore`` (paths) are never owned
    (fields a write cannot set: status on the main resource, and so on)."""

    def __init__(self, t: Type, *, ignore: tuple[Path, ...] = ()) -> None:
        self.type = t
        self.ignore = ignore

    def _filter(self, fields: FieldSet) -> FieldSet:
        return fieldpath.recursive_difference(fields, self.ignore)

    def _take(self, old: Any, new: Any, managers: Managers, workflow: str, *,
              force: bool) -> tuple[Managers, Comparison]:
        """Remove what ``new`` changed from every other manager's set (Conflicts unless ``force``)."""
        c = compare(old, new, self.type)
        changed = self._filter(frozenset(c.modified | c.added))
        removed = self._filter(frozenset(c.removed))
        conflicts: dict[str, FieldSet] = {}
        out: Managers = {}
        for name, e in managers.items():
            if name == workflow:
                out[name] = e
                continue
            clash = e.fields & changed
            if clash:
                conflicts[name] = clash
            lost = clash | (e.fields & removed)
            # An entry that loses nothing stays the same object (fieldmanager reuses its encoding).
            out[name] = Entry(e.fields - lost, e.api_version, e.applied) if lost else e
        if conflicts and not force:
            raise Conflicts(conflicts)
        return {n: e for n, e in out.items() if e.fields}, c

    def update(self, old: Any, new: Any, managers: Managers, manager: str, api_version: str) -> Managers:
        """A plain write by ``manager``: it owns what it changed."""
        managers, c = self._take(old, new, managers, manager, force=True)
        base = managers[manager].fields if manager in managers else EMPTY
        fields = self._filter((base - frozenset(c.removed)) | frozenset(c.modified) | frozenset(c.added))
        managers = dict(managers)
        if fields:
            managers[manager] = Entry(fields, api_version, False)
        else:
            managers.pop(manager, None)
        return managers

    def apply(self, live: Any, config: Any, managers: Managers, manager: str, api_version: str, *,
              force: bool) -> tuple[Any, Managers]:
        """``config`` applied by ``manager``: (the new object, or None if unchanged; the managers)."""
        merged = merge(live, config, self.type)
        last = managers.get(manager)
        managers = dict(managers)
        managers[manager] = Entry(self._filter(to_field_set(config, self.type)), api_version, True)
        if last is not None and last.fields and not last.fields <= managers[manager].fields:
            # Only what was applied last time and is not applied now can go.
            merged = self._prune(merged, managers, last.fields)
        managers, _ = self._take(live, merged, managers, manager, force=force)
        return (None if merged == live else merged), managers

    def _prune(self, merged: Any, managers: Managers, last: FieldSet) -> Any:
        """Drop what the applier applied last time, applies no more, and nobody else owns."""
        t = self.type
        named = ensure_named_fields_are_members
        pruned = remove_items(merged, t, named(last, t))
        owned: set[Path] = set()
        for e in managers.values():
            owned |= e.fields
        merged_set = named(to_field_set(merged, t), t)
        pruned = remove_items(merged, t, merged_set - (named(to_field_set(pruned, t), t) | named(frozenset(owned), t)))
        pruned_set = named(to_field_set(pruned, t), t)
        return remove_items(merged, t, (merged_set - pruned_set) & named(last, t))
