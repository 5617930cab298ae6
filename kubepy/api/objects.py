"""Small facts about stored objects: encoding, timestamps, names, metadata.

The store holds each object as JSON without ``metadata.resourceVersion``:
the resourceVersion *is* the store revision, added when an object is read.
"""

from __future__ import annotations

import datetime as dt
import random
import string
import uuid
from typing import Any

from kubepy import jsonbytes
from kubepy.store import KeyValue

_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' alphabet: no vowels, no lookalikes


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def new_uid() -> str:
    return str(uuid.uuid4())


# generateName's suffix is not a secret (upstream's utilrand.String is math/rand too); the system's
# random source cost a syscall per letter.
_RANDOM = random.Random()


def generate_name(prefix: str) -> str:
    return prefix + "".join(_RANDOM.choices(_NAME_SUFFIX_ALPHABET, k=5))


_META_OPEN = b'"metadata":{'


def encode(obj: dict[str, Any]) -> bytes:
    """apiVersion, kind and metadata always lead, so ``with_resource_version``
    can splice the revision into stored bytes without parsing them."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    ordered = {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""), "metadata": meta}
    ordered.update((k, v) for k, v in obj.items() if k not in ordered)
    return jsonbytes.dumps(ordered)


def with_resource_version(value: bytes, revision: int) -> bytes:
    """Stored bytes → API bytes with ``metadata.resourceVersion``, unparsed.

    Lists of thousands of objects skip a JSON decode and encode per item
    this way. Bytes not in ``encode``'s layout take the slow path."""
    prefix_end = value.find(_META_OPEN)
    head = value[:prefix_end]
    if prefix_end < 0 or not head.startswith(b'{"apiVersion":"') or head.count(b'"') != 8:
        return jsonbytes.dumps(decode_bytes(value, revision))
    at = prefix_end + len(_META_OPEN)
    sep = b"" if value[at:at + 1] == b"}" else b","
    return b"%s\"resourceVersion\":\"%d\"%s%s" % (value[:at], revision, sep, value[at:])


def decode_bytes(value: bytes, revision: int) -> dict[str, Any]:
    obj = jsonbytes.loads(value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return obj


def decode_api_bytes(value: bytes) -> dict[str, Any]:
    """API bytes (``with_resource_version``'s, resourceVersion in them) → a fresh dict."""
    return jsonbytes.loads(value)


def decode(kv: KeyValue) -> dict[str, Any]:
    return decode_bytes(kv.value, kv.mod_revision)


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = obj["metadata"] = {}
    return m


def partial_metadata(obj: dict[str, Any], api_version: str = "meta.k8s.io/v1") -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": api_version, "metadata": obj.get("metadata", {})}


def label_selector_string(selector: dict[str, Any] | None) -> str:
    """metav1.LabelSelector → the string form used by the Scale subresource."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def is_valid_name_char(c: str) -> bool:
    return c in string.ascii_lowercase + string.digits + "-."
