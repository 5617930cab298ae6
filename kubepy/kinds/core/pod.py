"""Pod (v1): the scheduler binds it (pods/binding), its kubelet runs it and
writes status; a bound, running pod is deleted gracefully: marked, then
removed by its kubelet once its containers stopped."""

import datetime as dt

from kubepy.kinds import Kind, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.meta.selectors import pod_fields


def _prepare_create(obj: dict) -> None:
    obj.pop("status", None)
    v.apply_match_label_keys(obj)
    if (obj.get("spec") or {}).get("schedulingGates"):
        # As upstream's pod strategy: a gated pod says why it waits before any scheduler sees it.
        obj["status"] = {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "SchedulingGated",
            "message": "Scheduling is blocked due to non-empty scheduling gates",
            "lastProbeTime": None,
            "lastTransitionTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}]}


def _running_on_a_node(obj: dict) -> bool:
    return bool((obj.get("spec") or {}).get("nodeName")) \
        and (obj.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _deletion_grace(obj: dict, requested: int | None) -> int:
    """A bound, running pod gets its grace period (the request's, else the
    spec's, never longer than one already granted); any other pod goes now."""
    if not _running_on_a_node(obj):
        return 0
    grace = requested if requested is not None else int((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
    grace = max(grace, 0)
    already = obj["metadata"].get("deletionGracePeriodSeconds")
    return min(grace, int(already)) if already is not None else grace


def _finalized_elsewhere(obj: dict) -> bool:
    """Its kubelet removes a running pod once the containers stopped, not the API server."""
    return _running_on_a_node(obj) and int(obj["metadata"].get("deletionGracePeriodSeconds") or 0) > 0


POD = register(Kind(
    "", "v1", "Pod", "pods", namespaced=True, short_names=("po",),
    subresources=("status", "binding", "eviction", "log", "exec", "attach", "portforward", "proxy",
                  "ephemeralcontainers"),
    categories=("all",), has_status=True, model="V1Pod", proto="Pod",
    strategy=Strategy(default=v.default_pod, validate=v.validate_pod, prepare_create=_prepare_create,
                      deletion_grace=_deletion_grace, finalized_elsewhere=_finalized_elsewhere),
    subresource_strategies={
        "ephemeralcontainers": Strategy(default=v.default_pod, validate=v.validate_pod_ephemeral_containers),
        "binding": Strategy(validate=v.validate_binding, kind="Binding"),
    },
    printer=printers.POD, fields=pod_fields,
))
