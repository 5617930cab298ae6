"""What an object costs a ResourceQuota: Kubernetes' quota evaluators as pure functions.

Shared by the API server's ResourceQuota admission (charge a create or an
update before it is stored) and the resource-quota controller (recount a
namespace into ``status.used``). Usage is ``{resource name: Decimal}``.

Resource names, as Kubernetes counts them:

- ``count/<plural>`` (core) and ``count/<plural>.<group>``: every object of
  the kind in storage (``count/pods`` counts finished pods too);
- the legacy object counts ``pods`` (only pods not yet Succeeded/Failed),
  ``services``, ``secrets``, ``configmaps``, ``replicationcontrollers``,
  ``resourcequotas``, ``persistentvolumeclaims``;
- pod compute: ``requests.cpu`` (= ``cpu``), ``requests.memory``
  (= ``memory``), ``limits.cpu``, ``limits.memory``, the same for
  ``ephemeral-storage``, and ``requests.<extended resource>``; a pod's
  request is the larger of its containers' sum and its largest init
  container, plus its overhead;
- ``services.nodeports`` (ports of NodePort/LoadBalancer Services),
  ``services.loadbalancers``;
- ``requests.storage`` of claims, and per class
  ``<class>.storageclass.storage.k8s.io/requests.storage`` and
  ``…/persistentvolumeclaims``.

Scopes (``spec.scopes``, ``spec.scopeSelector``) select pods only
(Terminating, NotTerminating, BestEffort, NotBestEffort, PriorityClass); a
scoped quota charges no other kind, as upstream.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from kubepy.meta.quantity import format_quantity, parse_quantity, quantity_format

Usage = dict[str, Decimal]

LEGACY_COUNTS = {
    ("", "pods"): "pods", ("", "services"): "services", ("", "secrets"): "secrets",
    ("", "configmaps"): "configmaps", ("", "replicationcontrollers"): "replicationcontrollers",
    ("", "resourcequotas"): "resourcequotas", ("", "persistentvolumeclaims"): "persistentvolumeclaims",
}
STORAGE_CLASS_SUFFIX = ".storageclass.storage.k8s.io/"
SCOPES = ("Terminating", "NotTerminating", "BestEffort", "NotBestEffort", "PriorityClass",
          "CrossNamespacePodAffinity")
# The resources a pod must request or limit explicitly when a quota tracks them
# (Kubernetes keeps this for compatibility: "must specify limits.cpu for: c").
_MUST_SPECIFY = ("cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory")
_POD_COMPUTE = ("cpu", "memory", "ephemeral-storage")
STANDARD = frozenset((*LEGACY_COUNTS.values(), "services.nodeports", "services.loadbalancers",
                      "requests.storage", *_POD_COMPUTE, *(f"requests.{r}" for r in _POD_COMPUTE),
                      *(f"limits.{r}" for r in _POD_COMPUTE)))


def count_name(group: str, plural: str) -> str:
    return f"count/{plural}.{group}" if group else f"count/{plural}"


def _q(value: Any) -> Decimal:
    try:
        return parse_quantity(value)
    except (ValueError, TypeError):
        return Decimal(0)


def _spec(obj: dict) -> dict:
    return obj.get("spec") or {}


# -- pods ----------------------------------------------------------------------------------------

def pod_is_active(pod: dict) -> bool:
    """Kubernetes' QuotaV1Pod: finished pods stop costing compute (and ``pods``)."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _sum(lists: list[dict]) -> Usage:
    out: Usage = {}
    for rl in lists:
        for k, v in (rl or {}).items():
            out[k] = out.get(k, Decimal(0)) + _q(v)
    return out


def _max(a: Usage, b: Usage) -> Usage:
    out = dict(a)
    for k, v in b.items():
        out[k] = max(out.get(k, Decimal(0)), v)
    return out


def pod_resources(pod: dict, which: str) -> Usage:
    """A pod's effective ``requests`` or ``limits`` (resourcehelper.PodRequests/PodLimits)."""
    spec = _spec(pod)
    containers = [(c.get("resources") or {}).get(which) or {} for c in spec.get("containers") or []]
    total = _sum(containers)
    sidecars: Usage = {}
    for ic in spec.get("initContainers") or []:
        rl = _sum([(ic.get("resources") or {}).get(which) or {}])
        if ic.get("restartPolicy") == "Always":  # a sidecar runs beside the app containers
            sidecars = _sum([sidecars, rl]) if sidecars else rl
            continue
        total = _max(total, _sum([sidecars, rl]) if sidecars else rl)
    if sidecars:
        total = _sum([total, sidecars])
    if spec.get("overhead"):
        overhead = _sum([spec["overhead"]])
        total = {k: v + overhead.get(k, Decimal(0)) for k, v in total.items()} | \
            {k: v for k, v in overhead.items() if k not in total}
    return total


def pod_usage(pod: dict) -> Usage:
    out: Usage = {"count/pods": Decimal(1)}
    if not pod_is_active(pod):
        return out
    out["pods"] = Decimal(1)
    requests, limits = pod_resources(pod, "requests"), pod_resources(pod, "limits")
    for name in _POD_COMPUTE:
        if name in requests:
            out[name] = out[f"requests.{name}"] = requests[name]
        if name in limits:
            out[f"limits.{name}"] = limits[name]
    for name, value in requests.items():
        if name not in _POD_COMPUTE and ("/" in name or name.startswith("hugepages-")):
            out[f"requests.{name}"] = value
    return out


def is_best_effort(pod: dict) -> bool:
    for c in [*(_spec(pod).get("containers") or []), *(_spec(pod).get("initContainers") or [])]:
        res = c.get("resources") or {}
        if any(k in (res.get("requests") or {}) or k in (res.get("limits") or {}) for k in ("cpu", "memory")):
            return False
    return True


def _scope_matches(scope: str, operator: str, values: list[str], pod: dict) -> bool:
    spec = _spec(pod)
    if scope == "Terminating":
        return spec.get("activeDeadlineSeconds") is not None
    if scope == "NotTerminating":
        return spec.get("activeDeadlineSeconds") is None
    if scope == "BestEffort":
        return is_best_effort(pod)
    if scope == "NotBestEffort":
        return not is_best_effort(pod)
    if scope == "PriorityClass":
        name = spec.get("priorityClassName") or ""
        if operator == "Exists":
            return bool(name)
        if operator == "DoesNotExist":
            return not name
        if operator == "NotIn":
            return bool(name) and name not in values
        return name in values
    if scope == "CrossNamespacePodAffinity":
        aff = spec.get("affinity") or {}
        terms = [t for key in ("podAffinity", "podAntiAffinity")
                 for kind in ("requiredDuringSchedulingIgnoredDuringExecution",
                              "preferredDuringSchedulingIgnoredDuringExecution")
                 for t in (aff.get(key) or {}).get(kind) or []]
        terms = [t.get("podAffinityTerm", t) for t in terms]
        return any(t.get("namespaces") or t.get("namespaceSelector") is not None for t in terms)
    return False


def scopes_of(quota: dict) -> list[tuple[str, str, list[str]]]:
    spec = _spec(quota)
    out = [(s, "Exists", []) for s in spec.get("scopes") or []]
    for e in (spec.get("scopeSelector") or {}).get("matchExpressions") or []:
        out.append((e.get("scopeName", ""), e.get("operator", "In"), list(e.get("values") or [])))
    return out


# -- services and claims -------------------------------------------------------------------------

def service_usage(svc: dict) -> Usage:
    out: Usage = {"services": Decimal(1), "count/services": Decimal(1)}
    spec = _spec(svc)
    ports = len(spec.get("ports") or [])
    if spec.get("type") == "NodePort":
        out["services.nodeports"] = Decimal(ports)
    elif spec.get("type") == "LoadBalancer":
        out["services.loadbalancers"] = Decimal(1)
        if spec.get("allocateLoadBalancerNodePorts", True) is not False:
            out["services.nodeports"] = Decimal(ports)
    return out


def claim_usage(pvc: dict) -> Usage:
    out: Usage = {"persistentvolumeclaims": Decimal(1), "count/persistentvolumeclaims": Decimal(1)}
    spec = _spec(pvc)
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    allocated = ((pvc.get("status") or {}).get("allocatedResources") or {}).get("storage")
    size = max(_q(storage), _q(allocated)) if allocated else _q(storage)
    if storage is not None:
        out["requests.storage"] = size
    cls = spec.get("storageClassName")
    if cls:
        out[f"{cls}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"] = Decimal(1)
        if storage is not None:
            out[f"{cls}{STORAGE_CLASS_SUFFIX}requests.storage"] = size
    return out


# -- any kind ------------------------------------------------------------------------------------

def usage(group: str, plural: str, obj: dict) -> Usage:
    """What ``obj`` (of kind ``group``/``plural``) costs."""
    if (group, plural) == ("", "pods"):
        return pod_usage(obj)
    if (group, plural) == ("", "services"):
        return service_usage(obj)
    if (group, plural) == ("", "persistentvolumeclaims"):
        return claim_usage(obj)
    out = {count_name(group, plural): Decimal(1)}
    legacy = LEGACY_COUNTS.get((group, plural))
    if legacy:
        out[legacy] = Decimal(1)
    return out


def charged_by(group: str, plural: str, resource: str) -> bool:
    """Can an object of this kind ever cost ``resource``?"""
    if resource == count_name(group, plural) or LEGACY_COUNTS.get((group, plural)) == resource:
        return True
    if (group, plural) == ("", "pods"):
        return resource in _POD_COMPUTE or resource.startswith(("requests.", "limits.")) \
            and resource != "requests.storage"
    if (group, plural) == ("", "services"):
        return resource in ("services.nodeports", "services.loadbalancers")
    if (group, plural) == ("", "persistentvolumeclaims"):
        return resource == "requests.storage" or STORAGE_CLASS_SUFFIX in resource
    return False


def applies(quota: dict, group: str, plural: str, obj: dict) -> bool:
    """Does ``quota``'s scope take in ``obj``? (Scoped quotas charge pods only.)"""
    scopes = scopes_of(quota)
    if not scopes:
        return True
    if (group, plural) != ("", "pods"):
        return False
    return all(_scope_matches(s, op, values, obj) for s, op, values in scopes)


def missing_requirements(pod: dict, hard: dict) -> str | None:
    """Kubernetes' pod constraint: with cpu/memory under quota, every container
    names them. Returns "must specify limits.cpu for: c; …" or None."""
    required = [r for r in _MUST_SPECIFY if r in hard]
    missing: dict[str, set[str]] = {}
    spec = _spec(pod)
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        res = c.get("resources") or {}
        for r in required:
            which, _, name = r.rpartition(".")
            present = name in (res.get(which or "requests") or {})
            if not present:
                missing.setdefault(r, set()).add(c.get("name", ""))
    if not missing:
        return None
    return "must specify " + "; ".join(f"{r} for: {','.join(sorted(missing[r]))}" for r in sorted(missing))


# -- arithmetic and printing ---------------------------------------------------------------------

def add(a: Usage, b: Usage) -> Usage:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, Decimal(0)) + v
    return out


def subtract(a: Usage, b: Usage) -> Usage:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, Decimal(0)) - v
    return out


def parse_list(rl: dict | None) -> Usage:
    return {k: _q(v) for k, v in (rl or {}).items()}


def format_list(u: Usage, like: dict | None = None) -> dict[str, str]:
    """``status.used``: each value in the format of the matching hard value (1Gi, 500m, 3)."""
    like = like or {}
    out = {}
    for k, v in u.items():
        if k in like:
            try:
                binary = quantity_format(like[k]) == "BinarySI"
            except (ValueError, TypeError):
                binary = False
        else:  # bytes print as Ki/Mi/Gi when they are whole binary units, as people write them
            binary = k.endswith(("memory", "storage")) and v > 0 and v % 1024 == 0
        out[k] = format_quantity(v, binary=binary and v == v.to_integral_value())
    return out


def pretty(u: dict[str, Any]) -> str:
    """``limits.cpu=2,pods=1``: sorted, as Kubernetes prints quota in messages."""
    return ",".join(f"{k}={v}" for k, v in sorted(u.items()))


def kinds_for(resources: list[str] | set[str] | dict) -> set[tuple[str, str]]:
    """The kinds (group, plural) whose objects can cost any of ``resources``."""
    out: set[tuple[str, str]] = set()
    legacy = {v: k for k, v in LEGACY_COUNTS.items()}
    for r in resources:
        if r.startswith("count/"):
            plural, _, group = r[len("count/"):].partition(".")
            out.add((group, plural))
        elif r in legacy:
            out.add(legacy[r])
        elif r.startswith("services."):
            out.add(("", "services"))
        elif r == "requests.storage" or STORAGE_CLASS_SUFFIX in r:
            out.add(("", "persistentvolumeclaims"))
        elif r in _POD_COMPUTE or r.startswith(("requests.", "limits.")):
            out.add(("", "pods"))
    return out


def used(quota_obj: dict, objects: dict[tuple[str, str], list[dict]]) -> Usage:
    """``status.used`` of ``quota_obj`` given every object of the kinds it tracks in its namespace."""
    hard = (quota_obj.get("spec") or {}).get("hard") or {}
    total: Usage = {k: Decimal(0) for k in hard}
    for (group, plural), items in objects.items():
        for obj in items:
            if not applies(quota_obj, group, plural, obj):
                continue
            for k, v in usage(group, plural, obj).items():
                if k in total:
                    total[k] += v
    return total
