"""Label and field selectors: parsing, validation and matching.

``?labelSelector=`` and ``?fieldSelector=`` on list and watch requests filter
objects on the server; controllers turn the ``metav1.LabelSelector`` in a
Deployment or ReplicaSet into the same matcher.  Parsing follows Kubernetes'
``labels.Parse`` and ``fields.ParseSelector`` grammars:

* label selector: comma-separated requirements, each ``k=v``, ``k==v``,
  ``k!=v``, ``k in (a,b)``, ``k notin (a)``, ``k`` (exists), ``!k`` (does not
  exist) or ``k>n`` / ``k<n`` (integer comparison);
* field selector: comma-separated ``field=v``, ``field==v``, ``field!=v``
  where ``\\``, ``,`` and ``=`` in values may be backslash-escaped.

Query-string parse errors raise ``SelectorError`` (the API server answers
it with 400 BadRequest);
``label_selector_from_dict`` raises ``ValueError`` because its callers are
controllers validating stored objects, not HTTP handlers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


__all__ = [
    "SelectorError",
    "Requirement",
    "LabelSelector",
    "parse_label_selector",
    "label_selector_from_dict",
    "validate_label_key",
    "validate_label_value",
    "FieldRequirement",
    "FieldSelector",
    "parse_field_selector",
    "generic_fields",
    "pod_fields",
    "node_fields",
    "event_fields",
    "namespace_fields",
    "secret_fields",
    "replicaset_fields",
]


class SelectorError(ValueError):
    """A selector in a query string that does not parse or names an unsupported field."""

    @property
    def message(self) -> str:
        return str(self)


# ---------------------------------------------------------------------------
# label key / value validation (IsQualifiedName / IsValidLabelValue)
# ---------------------------------------------------------------------------

_NAME_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS1123_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME_HELP = (
    "must be 63 characters or less and consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)


def _name_part_error(name: str) -> str | None:
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _NAME_RE.fullmatch(name):
        return "name part " + _NAME_HELP
    return None


def validate_label_key(key: str) -> str | None:
    """Return why *key* is not a valid label key (``[prefix/]name``), or None."""
    if key.count("/") > 1:
        return "a qualified name must have at most one '/'"
    prefix, slash, name = key.partition("/")
    if not slash:
        return _name_part_error(prefix)
    if not prefix:
        return "prefix part must be non-empty"
    if len(prefix) > 253 or not _DNS1123_SUBDOMAIN_RE.fullmatch(prefix):
        return "prefix part must be a lowercase RFC 1123 subdomain of at most 253 characters"
    return _name_part_error(name)


def validate_label_value(value: str) -> str | None:
    """Return why *value* is not a valid label value (empty is allowed), or None."""
    if value == "":
        return None
    if len(value) > 63 or not _NAME_RE.fullmatch(value):
        return "a valid label value " + _NAME_HELP
    return None


# ---------------------------------------------------------------------------
# label selectors
# ---------------------------------------------------------------------------

_SET_OPS = {"in", "notin"}
_EQ_OPS = {"=", "==", "!="}
_CMP_OPS = {"gt", "lt"}


@dataclass(frozen=True)
class Requirement:
    """One clause of a label selector.

    ``op`` is one of ``=`` (also used for ``==``), ``!=``, ``in``, ``notin``,
    ``exists``, ``!`` (does not exist), ``gt``, ``lt``.
    """

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        if self.op in ("!=", "notin"):
            # Absent keys satisfy negative requirements, as in Kubernetes.
            return not present or labels[self.key] not in self.values
        # gt / lt: both sides must be integers, otherwise no match.
        if not present:
            return False
        try:
            have, want = int(labels[self.key]), int(self.values[0])
        except ValueError:
            return False
        return have > want if self.op == "gt" else have < want

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return "!" + self.key
        if self.op in _SET_OPS:
            return f"{self.key} {self.op} ({','.join(self.values)})"
        if self.op in _CMP_OPS:
            return f"{self.key}{'>' if self.op == 'gt' else '<'}{self.values[0]}"
        return f"{self.key}{self.op}{self.values[0]}"


@dataclass(frozen=True)
class LabelSelector:
    """A conjunction of requirements.  ``nothing=True`` matches no object
    (the meaning of a nil ``metav1.LabelSelector``)."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def empty(self) -> bool:
        """True when the selector matches everything."""
        return not self.nothing and not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _sorted(reqs: Iterable[Requirement]) -> tuple[Requirement, ...]:
    # Kubernetes keeps requirements sorted by key so String() is canonical.
    return tuple(sorted(reqs, key=lambda r: r.key))


def _new_requirement(key: str, op: str, values: Iterable[str]) -> Requirement:
    """Build a requirement, raising ValueError if key, values or arity are wrong."""
    problem = validate_label_key(key)
    if problem:
        raise ValueError(f"invalid label key {key!r}: {problem}")
    vals = tuple(values)
    if op in ("=", "!=") and len(vals) != 1:
        raise ValueError(f"{key}: exact-match requirements need exactly one value")
    if op in _SET_OPS and not vals:
        raise ValueError(f"{key}: for 'in' and 'notin' operators, values set can't be empty")
    if op in ("exists", "!") and vals:
        raise ValueError(f"{key}: values set must be empty for exists and does not exist")
    if op in _CMP_OPS:
        if len(vals) != 1:
            raise ValueError(f"{key}: for 'gt' and 'lt' operators, exactly one value is required")
        try:
            int(vals[0])
        except ValueError:
            raise ValueError(f"{key}: for 'gt' and 'lt' operators, the value must be an integer") from None
        return Requirement(key, op, vals)
    for v in vals:
        problem = validate_label_value(v)
        if problem:
            raise ValueError(f"invalid label value {v!r} for key {key!r}: {problem}")
    # Sorted, deduplicated values make equal selectors compare equal.
    return Requirement(key, op, tuple(sorted(set(vals))) if op in _SET_OPS else vals)


# Lexer: operators and punctuation are single tokens; anything else up to the
# next special character or whitespace is an identifier.
_TOKEN_RE = re.compile(r"\s*(?:(==|!=|=|!|,|\(|\)|>|<)|([^\s!=,()<>]+))")


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:  # pragma: no cover - the pattern accepts every character class
            raise ValueError(f"unexpected character at position {pos}")
        tokens.append(m.group(1) or m.group(2))
        pos = m.end()
    return tokens


class _LabelParser:
    """Recursive-descent parser over the token list (labels.Parse grammar)."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        tok = self.peek()
        self.pos += 1
        return tok

    def at_end_of_requirement(self) -> bool:
        return self.peek() in (None, ",")

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        if self.peek() is None:
            return reqs
        while True:
            reqs.append(self.requirement())
            tok = self.take()
            if tok is None:
                return reqs
            if tok != ",":
                raise ValueError(f"found '{tok}', expected: ',' or end of string")
            if self.peek() is None:
                raise ValueError("found end of string, expected: identifier after ','")

    def identifier(self, what: str) -> str:
        tok = self.take()
        if tok is None or not _is_ident(tok):
            raise ValueError(f"found '{tok if tok is not None else 'end of string'}', expected: {what}")
        return tok

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.take()
            key = self.identifier("identifier after '!'")
            if not self.at_end_of_requirement():
                raise ValueError(f"found '{self.peek()}', expected: ',' or end of string after '!{key}'")
            return _new_requirement(key, "!", ())
        key = self.identifier("identifier")
        if self.at_end_of_requirement():
            return _new_requirement(key, "exists", ())
        op = self.take()
        if op in _EQ_OPS:
            value = "" if self.at_end_of_requirement() else self.identifier("a value")
            return _new_requirement(key, "!=" if op == "!=" else "=", (value,))
        if op in (">", "<"):
            value = self.identifier("an integer value")
            return _new_requirement(key, "gt" if op == ">" else "lt", (value,))
        if op in _SET_OPS:
            return _new_requirement(key, op, self.value_set())
        raise ValueError(f"found '{op}', expected: in, notin, =, ==, !=, >, < or ','")

    def value_set(self) -> list[str]:
        if self.take() != "(":
            raise ValueError("expected '(' after 'in' or 'notin'")
        values: list[str] = []
        expect_value = True
        while True:
            tok = self.take()
            if tok is None:
                raise ValueError("found end of string, expected: ')'")
            if tok == ")":
                if expect_value:
                    values.append("")  # "()" and "(a,)" carry an empty value, as in Kubernetes
                return values
            if tok == ",":
                if expect_value:
                    values.append("")
                expect_value = True
                continue
            if not expect_value or not _is_ident(tok):
                raise ValueError(f"found '{tok}', expected: ',' or ')'")
            values.append(tok)
            expect_value = False


def _is_ident(tok: str) -> bool:
    return tok not in {"==", "!=", "=", "!", ",", "(", ")", ">", "<"}


def parse_label_selector(text: str) -> LabelSelector:
    """Parse a ``labelSelector`` query parameter; ``""`` matches everything.

    Raises ``SelectorError`` for bad syntax or invalid keys and values.
    """
    try:
        reqs = _LabelParser(text or "").parse()
    except ValueError as e:
        raise SelectorError(f"unable to parse requirement: {e}") from e
    return LabelSelector(_sorted(reqs))


_SELECTOR_OPS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def label_selector_from_dict(sel: Mapping[str, Any] | None) -> LabelSelector:
    """Convert a ``metav1.LabelSelector`` (matchLabels/matchExpressions).

    ``None`` matches nothing and ``{}`` matches everything, as in Kubernetes'
    ``LabelSelectorAsSelector``.  Raises ``ValueError`` when invalid.
    """
    if sel is None:
        return LabelSelector(nothing=True)
    if not isinstance(sel, Mapping):
        raise ValueError("a label selector must be an object")
    reqs: list[Requirement] = []
    match_labels = sel.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        raise ValueError("matchLabels must be an object")
    for key, value in match_labels.items():
        if not isinstance(value, str):
            raise ValueError(f"matchLabels[{key}] must be a string")
        reqs.append(_new_requirement(key, "=", (value,)))
    expressions = sel.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise ValueError("matchExpressions must be a list")
    for i, expr in enumerate(expressions):
        if not isinstance(expr, Mapping):
            raise ValueError(f"matchExpressions[{i}] must be an object")
        operator = expr.get("operator")
        if operator not in _SELECTOR_OPS:
            raise ValueError(f"matchExpressions[{i}].operator: {operator!r} is not a valid label selector operator")
        values = expr.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"matchExpressions[{i}].values must be a list of strings")
        key = expr.get("key")
        if not isinstance(key, str):
            raise ValueError(f"matchExpressions[{i}].key must be a string")
        reqs.append(_new_requirement(key, _SELECTOR_OPS[operator], values))
    return LabelSelector(_sorted(reqs))


# ---------------------------------------------------------------------------
# field selectors
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str  # "=" (also for "==") or "!="
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        # A field the object lacks reads as "", so "spec.nodeName=" finds
        # unscheduled pods, exactly as with Kubernetes' fields.Set.
        have = fields.get(self.field, "")
        return have == self.value if self.op == "=" else have != self.value

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
        return f"{self.field}{self.op}{escaped}"


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    def empty(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _split_unescaped(text: str, sep: str) -> list[str]:
    """Split on *sep* where it is not preceded by an escaping backslash."""
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        raise ValueError("trailing backslash")
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    out, escaped = [], False
    for ch in value:
        if escaped:
            if ch not in "\\,=":
                raise ValueError(f"invalid escape sequence '\\{ch}'")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise ValueError(f"unescaped '{ch}' in value")
        else:
            out.append(ch)
    return "".join(out)


def _find_operator(term: str) -> tuple[int, str] | None:
    """Position and text of the first unescaped ``!=``, ``==`` or ``=``."""
    i = 0
    while i < len(term):
        ch = term[i]
        if ch == "\\":
            i += 2
            continue
        if term.startswith("!=", i):
            return i, "!="
        if term.startswith("==", i):
            return i, "=="
        if ch == "=":
            return i, "="
        i += 1
    return None


def parse_field_selector(text: str, *, allowed: set[str] | frozenset[str]) -> FieldSelector:
    """Parse a ``fieldSelector`` query parameter; ``""`` matches everything.

    Raises ``SelectorError`` for syntax errors and for fields outside *allowed*
    (``field label not supported: spec.foo``).
    """
    reqs: list[FieldRequirement] = []
    if not text:
        return FieldSelector()
    try:
        terms = _split_unescaped(text, ",")
    except ValueError as e:
        raise SelectorError(f"invalid field selector {text!r}: {e}") from e
    for term in terms:
        if term == "":
            continue  # Kubernetes tolerates empty terms ("a=b,")
        found = _find_operator(term)
        if found is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        at, op = found
        name, raw_value = term[:at].strip(), term[at + len(op):]
        if not name:
            raise SelectorError(f"invalid selector: '{text}'; field name is empty in '{term}'")
        try:
            value = _unescape(raw_value)
        except ValueError as e:
            raise SelectorError(f"invalid selector: '{text}'; {e}") from e
        if name not in allowed:
            raise SelectorError(f"field label not supported: {name}")
        reqs.append(FieldRequirement(name, "!=" if op == "!=" else "=", value))
    return FieldSelector(tuple(reqs))


# ---------------------------------------------------------------------------
# selectable fields: each kind's module names the function giving its
# fields' values (``Kind.fields``); the keys are what may be selected
# ---------------------------------------------------------------------------


def _get(obj: Mapping[str, Any] | None, *path: str) -> Any:
    cur: Any = obj
    for part in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def _s(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def generic_fields(obj: Mapping[str, Any]) -> dict[str, str]:
    return {
        "metadata.name": _s(_get(obj, "metadata", "name")),
        "metadata.namespace": _s(_get(obj, "metadata", "namespace")),
    }


def pod_fields(pod: Mapping[str, Any]) -> dict[str, str]:
    pod_ip = _get(pod, "status", "podIP")
    if not pod_ip:
        ips = _get(pod, "status", "podIPs") or []
        pod_ip = ips[0].get("ip") if ips and isinstance(ips[0], Mapping) else ""
    return generic_fields(pod) | {
        "spec.nodeName": _s(_get(pod, "spec", "nodeName")),
        "spec.restartPolicy": _s(_get(pod, "spec", "restartPolicy")),
        "spec.schedulerName": _s(_get(pod, "spec", "schedulerName")),
        "spec.serviceAccountName": _s(_get(pod, "spec", "serviceAccountName")),
        "spec.hostNetwork": _s(bool(_get(pod, "spec", "hostNetwork"))),
        "status.phase": _s(_get(pod, "status", "phase")),
        "status.podIP": _s(pod_ip),
        "status.nominatedNodeName": _s(_get(pod, "status", "nominatedNodeName")),
    }


def node_fields(node: Mapping[str, Any]) -> dict[str, str]:
    return {
        "metadata.name": _s(_get(node, "metadata", "name")),
        "spec.unschedulable": _s(bool(_get(node, "spec", "unschedulable"))),
    }


def event_fields(event: Mapping[str, Any]) -> dict[str, str]:
    involved = event.get("involvedObject") or {}
    # Kubernetes falls back to reportingController when source.component is unset.
    source = _get(event, "source", "component") or event.get("reportingComponent")
    fields = generic_fields(event)
    for name in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"):
        fields[f"involvedObject.{name}"] = _s(involved.get(name))
    fields |= {
        "reason": _s(event.get("reason")),
        "reportingComponent": _s(event.get("reportingComponent")),
        "source": _s(source),
        "type": _s(event.get("type")),
    }
    return fields


def namespace_fields(ns: Mapping[str, Any]) -> dict[str, str]:
    name = _s(_get(ns, "metadata", "name"))
    # "name" is a historical Kubernetes bug kept for compatibility.
    return {"metadata.name": name, "name": name, "status.phase": _s(_get(ns, "status", "phase"))}


def secret_fields(secret: Mapping[str, Any]) -> dict[str, str]:
    return generic_fields(secret) | {"type": _s(secret.get("type"))}


def replicaset_fields(rs: Mapping[str, Any]) -> dict[str, str]:
    return generic_fields(rs) | {"status.replicas": _s(_get(rs, "status", "replicas") or 0)}
