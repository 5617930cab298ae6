"""Pod facts every workload controller reads, and pods made from a template.

Kubernetes' ``podutil`` (``pkg/api/v1/pod``) and ``GetPodFromTemplate``:
whether a pod still counts (active), is Ready, or is available (Ready for
``minReadySeconds``), when it will become available, and the pod an owner
creates from its ``spec.template``. Pure functions over raw pod dicts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubepy.controllers.ownership import OwnerKind, owner_reference

__all__ = [
    "is_pod_active",
    "is_pod_available",
    "is_pod_ready",
    "format_time",
    "parse_time",
    "pod_from_template",
    "ready_condition",
    "seconds_until_available",
]


def format_time(t: datetime) -> str:
    """An aware datetime as Kubernetes writes a metav1.Time (RFC 3339, UTC, seconds)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime (UTC if it names no zone); None if absent or malformed."""
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def ready_condition(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond
    return None


def is_pod_active(pod: dict[str, Any]) -> bool:
    """Counts towards replicas: not finished and not being deleted."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not (pod.get("metadata") or {}).get("deletionTimestamp")


def is_pod_ready(pod: dict[str, Any]) -> bool:
    cond = ready_condition(pod)
    return bool(cond and cond.get("status") == "True")


def is_pod_available(pod: dict[str, Any], min_ready_seconds: int, now: datetime) -> bool:
    """Ready for at least ``min_ready_seconds``."""
    if not is_pod_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = parse_time((ready_condition(pod) or {}).get("lastTransitionTime"))
    return since is not None and (now - since).total_seconds() >= min_ready_seconds


def seconds_until_available(pod: dict[str, Any], min_ready_seconds: int, now: datetime) -> float | None:
    """How long until a Ready pod becomes available; None if it is already, or is not Ready."""
    if min_ready_seconds <= 0 or not is_pod_ready(pod) or is_pod_available(pod, min_ready_seconds, now):
        return None
    since = parse_time((ready_condition(pod) or {}).get("lastTransitionTime"))
    if since is None:
        return float(min_ready_seconds)
    return max(0.0, min_ready_seconds - (now - since).total_seconds())


def pod_from_template(owner: dict[str, Any], kind: OwnerKind, *, template: dict[str, Any] | None = None,
                      generate_name: str | None = None) -> dict[str, Any]:
    """The pod ``owner`` creates from its template (``spec.template`` unless given), controlled by it.

    Labels, annotations and finalizers of the template are copied; the name
    is generated from ``generate_name`` (default ``<owner>-``)."""
    template = template if template is not None else (owner.get("spec") or {}).get("template") or {}
    tmeta = template.get("metadata") or {}
    meta: dict[str, Any] = {
        "generateName": generate_name if generate_name is not None else f"{owner['metadata']['name']}-",
        "namespace": owner["metadata"]["namespace"],
        "labels": dict(tmeta.get("labels") or {}),
        "ownerReferences": [owner_reference(owner, kind)],
    }
    if tmeta.get("annotations"):
        meta["annotations"] = dict(tmeta["annotations"])
    if tmeta.get("finalizers"):
        meta["finalizers"] = list(tmeta["finalizers"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec") or {}}
