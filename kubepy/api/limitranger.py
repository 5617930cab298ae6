"""LimitRanger admission: a namespace's LimitRanges default and bound resources.

On a pod's create, every ``type: Container`` item's ``default`` fills a
container's missing limits and ``defaultRequest`` its missing requests
(noted in the ``kubernetes.io/limit-ranger`` annotation, as upstream);
then ``min``, ``max`` and ``maxLimitRequestRatio`` are enforced per
Container and per Pod, and ``min``/``max`` of ``storage`` per
PersistentVolumeClaim (create and update). A violation is 403 Forbidden
with Kubernetes' words, e.g. ``pods "x" is forbidden: maximum cpu usage per
Container is 1, but limit is 2``.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from kubepy.api.admission import CREATE, Attributes
from kubepy.api.mirror import Mirror
from kubepy.kinds import by_plural
from kubepy.kinds.core.limitrange import default_item
from kubepy.meta import quota
from kubepy.meta.quantity import canonicalize_quantity, parse_quantity
from kubepy.store.base import Store

log = logging.getLogger(__name__)

ANNOTATION = "kubernetes.io/limit-ranger"


def _q(v: Any) -> Decimal:
    return parse_quantity(v)


def _s(v: Any) -> str:
    try:
        return canonicalize_quantity(v)
    except (ValueError, TypeError):
        return str(v)


def _items(ranges: list[dict], typ: str) -> list[dict]:
    out = []
    for lr in sorted(ranges, key=lambda o: o["metadata"]["name"]):
        for item in (lr.get("spec") or {}).get("limits") or []:
            if item.get("type") == typ:
                item = dict(item)
                default_item(item)
                out.append(item)
    return out


def default_pod(pod: dict, ranges: list[dict]) -> list[str]:
    """Fill containers' missing requests and limits; returns what was set (the annotation's parts)."""
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    for item in _items(ranges, "Container"):
        limits.update(item.get("default") or {})
        requests.update(item.get("defaultRequest") or {})
    notes: list[str] = []
    spec = pod.get("spec") or {}
    for prefix, key in (("init container", "initContainers"), ("container", "containers")):
        for c in spec.get(key) or []:
            res = c.setdefault("resources", {})
            set_req = sorted(k for k in requests if k not in (res.get("requests") or {}))
            set_lim = sorted(k for k in limits if k not in (res.get("limits") or {}))
            for k in set_lim:
                res.setdefault("limits", {})[k] = limits[k]
            for k in set_req:
                res.setdefault("requests", {})[k] = requests[k]
            if set_req:
                notes.append(f"{', '.join(set_req)} request for {prefix} {c.get('name', '')}")
            if set_lim:
                notes.append(f"{', '.join(set_lim)} limit for {prefix} {c.get('name', '')}")
            if not res:
                del c["resources"]
    return notes


def _min(kind: str, name: str, enforced: Any, req: dict, lim: dict) -> str | None:
    if name not in req:
        return f"minimum {name} usage per {kind} is {_s(enforced)}.  No request is specified"
    if _q(req[name]) < _q(enforced):
        return f"minimum {name} usage per {kind} is {_s(enforced)}, but request is {_s(req[name])}"
    if name in lim and _q(lim[name]) < _q(enforced):
        return f"minimum {name} usage per {kind} is {_s(enforced)}, but limit is {_s(lim[name])}"
    return None


def _max(kind: str, name: str, enforced: Any, req: dict, lim: dict) -> str | None:
    if name not in lim:
        return f"maximum {name} usage per {kind} is {_s(enforced)}.  No limit is specified"
    if _q(lim[name]) > _q(enforced):
        return f"maximum {name} usage per {kind} is {_s(enforced)}, but limit is {_s(lim[name])}"
    if name in req and _q(req[name]) > _q(enforced):
        return f"maximum {name} usage per {kind} is {_s(enforced)}, but request is {_s(req[name])}"
    return None


def _ratio(kind: str, name: str, enforced: Any, req: dict, lim: dict) -> str | None:
    if name not in req or _q(req[name]) == 0:
        return (f"{name} max limit to request ratio per {kind} is {_s(enforced)}, "
                "but no request is specified or request is 0")
    if name not in lim or _q(lim[name]) == 0:
        return (f"{name} max limit to request ratio per {kind} is {_s(enforced)}, "
                "but no limit is specified or limit is 0")
    observed = _q(lim[name]) / _q(req[name])
    if observed > _q(enforced):
        return (f"{name} max limit to request ratio per {kind} is {_s(enforced)}, "
                f"but provided ratio is {float(observed):f}")
    return None


def _check(kind: str, item: dict, req: dict, lim: dict) -> list[str]:
    errs = [_min(kind, k, v, req, lim) for k, v in sorted((item.get("min") or {}).items())]
    errs += [_max(kind, k, v, req, lim) for k, v in sorted((item.get("max") or {}).items())]
    errs += [_ratio(kind, k, v, req, lim) for k, v in sorted((item.get("maxLimitRequestRatio") or {}).items())]
    return [e for e in errs if e]


def pod_violations(pod: dict, ranges: list[dict]) -> list[str]:
    spec = pod.get("spec") or {}
    errs: list[str] = []
    for item in _items(ranges, "Container"):
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            res = c.get("resources") or {}
            errs += _check("Container", item, res.get("requests") or {}, res.get("limits") or {})
    for item in _items(ranges, "Pod"):
        req = quota.format_list(quota.pod_resources(pod, "requests"))
        lim = quota.format_list(quota.pod_resources(pod, "limits"))
        errs += _check("Pod", item, req, lim)
    return errs


def claim_violations(pvc: dict, ranges: list[dict]) -> list[str]:
    requests = ((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}
    errs: list[str] = []
    kind = "PersistentVolumeClaim"
    for item in _items(ranges, kind):
        for k, v in sorted((item.get("min") or {}).items()):
            errs.append(_min(kind, k, v, requests, {}) or "")
        for k, v in sorted((item.get("max") or {}).items()):
            if k not in requests:
                errs.append(f"maximum {k} usage per {kind} is {_s(v)}.  No request is specified")
            elif _q(requests[k]) > _q(v):
                errs.append(f"maximum {k} usage per {kind} is {_s(v)}, but request is {_s(requests[k])}")
    return [e for e in errs if e]


def aggregate(errs: list[str]) -> str:
    errs = list(dict.fromkeys(errs))
    return errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]"


class LimitRanger:
    name = "LimitRanger"

    def __init__(self, store: Store) -> None:
        self.ranges = Mirror(store, by_plural("limitranges").prefix)

    def _applies(self, a: Attributes) -> bool:
        if a.subresource or not a.namespace or a.res.group:
            return False
        return (a.res.plural == "pods" and a.operation == CREATE) or a.res.plural == "persistentvolumeclaims"

    async def admit(self, a: Attributes) -> None:
        if not self._applies(a) or a.res.plural != "pods":
            return
        ranges = await self.ranges.items(a.namespace or "")
        if not ranges:
            return
        notes = default_pod(a.obj, ranges)
        if notes:
            meta = a.obj.setdefault("metadata", {})
            meta.setdefault("annotations", {})[ANNOTATION] = "LimitRanger plugin set: " + "; ".join(notes)
            log.info("limitranger defaulted pod=%s/%s set=%r", a.namespace, a.name, "; ".join(notes))

    async def validate(self, a: Attributes) -> None:
        if not self._applies(a):
            return
        ranges = await self.ranges.items(a.namespace or "")
        if not ranges:
            return
        errs = pod_violations(a.obj, ranges) if a.res.plural == "pods" else claim_violations(a.obj, ranges)
        if errs:
            log.info("limitranger refused %s=%s/%s reason=%r", a.res.plural, a.namespace, a.name, errs[0])
            raise a.forbidden(aggregate(errs))

    async def stop(self) -> None:
        await self.ranges.stop()
