"""DaemonSet controller: one pod of a template on every eligible node.

Kubernetes' ``pkg/controller/daemon`` in miniature. Informer handlers only
enqueue DaemonSet keys (a pod maps to its controlling DaemonSet, a node to
every DaemonSet whose eligibility on it changed, a ControllerRevision to
its owner). ``reconcile(key)``:

1. claims the DaemonSet's pods (``ownership``), finds or makes the
   ControllerRevision of its template (``history.sync_history``): its hash
   labels new pods ``controller-revision-hash``;
2. *manage*: per node, from ``node_should_run`` (nodeSelector, required node
   affinity, taints against the template's tolerations plus those every
   daemon pod gets, ``daemon_pod_tolerations``), a pod is created where one
   is missing, extra pods and pods on nodes that stopped matching are
   deleted, failed pods are deleted (with a per-node backoff) so a new one
   takes their place.  Pods are not bound here: each new pod carries a
   required node affinity ``metadata.name In [node]`` and the scheduler
   places it, as Kubernetes does since 1.12;
3. *rolling update* (``updateStrategy: RollingUpdate``, when nothing else is
   pending): old pods are deleted while at most ``maxUnavailable`` nodes are
   without an available pod, or with ``maxSurge`` a new pod is started next
   to an old one and the old one deleted once the new is available;
   ``OnDelete`` replaces a pod only when someone deletes it;
4. old revisions beyond ``revisionHistoryLimit`` that no pod runs go;
5. ``status`` (the counters ``kubectl get ds`` and ``kubectl rollout status``
   read, ``observedGeneration``, ``collisionCount``) is written through
   ``/status`` when it changed.

Expectations (``expectations``) keep a sync from acting again before the pod
watch shows what the last one asked for. Decisions are pure functions of
the DaemonSet, the nodes and the pods (``node_should_run``, ``plan_nodes``,
``plan_rolling_update``, ``calculate_status``); the class around them only
reads caches and writes through ``ControllerContext.client``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubepy.client import APIStatusError, NotFoundError, WorkQueue, object_key, run_workers
from kubepy.controllers.context import ControllerContext
from kubepy.controllers.expectations import ControllerExpectations
from kubepy.controllers.history import REVISION_LABEL, owned_revisions, sync_history, truncate_history
from kubepy.controllers.nodelifecycle import tolerates
from kubepy.controllers.ownership import (
    ControllerRefManager,
    OwnerKind,
    controller_ref,
    owners_selecting,
    owners_to_sync_on_update,
    resolve_controller_ref,
)
from kubepy.controllers.pods import (
    is_pod_available,
    is_pod_ready,
    parse_time,
    pod_from_template,
    seconds_until_available,
)
from kubepy.controllers.slowstart import slow_start_batch

log = logging.getLogger(__name__)

__all__ = [
    "DAEMONSET",
    "DaemonSetController",
    "calculate_status",
    "daemon_pod_tolerations",
    "node_should_run",
    "plan_nodes",
    "plan_rolling_update",
    "target_node",
]

DAEMONSET = OwnerKind("apps/v1", "DaemonSet", "daemonsets")
BURST_REPLICAS = 250  # most pods created or deleted in one sync, as Kubernetes' DaemonSet controller
TEMPLATE_GENERATION_ANNOTATION = "deprecated.daemonset.template.generation"
TEMPLATE_GENERATION_LABEL = "pod-template-generation"
FAILED_POD_BACKOFF = (1.0, 900.0)  # initial and longest wait before deleting a node's next failed pod

REASON_SUCCESSFUL_CREATE = "SuccessfulCreate"
REASON_SUCCESSFUL_DELETE = "SuccessfulDelete"
REASON_FAILED_CREATE = "FailedCreate"
REASON_FAILED_DELETE = "FailedDelete"
REASON_FAILED_DAEMON_POD = "FailedDaemonPod"
REASON_SUCCEEDED_DAEMON_POD = "SucceededDaemonPod"
REASON_SELECTING_ALL = "SelectingAll"

# The tolerations every daemon pod gets (upstream's AddOrUpdateDaemonPodTolerations): a
# daemon is not evicted from a sick node and still starts on a cordoned or pressured one.
DAEMON_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
HOST_NETWORK_TOLERATION = {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists",
                           "effect": "NoSchedule"}


def _d(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list:
    return x if isinstance(x, list) else []


def _name(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["name"])


# -- tolerations and eligibility (pure) ----------------------------------------------
def _same_toleration(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """upstream's Toleration.MatchToleration: key, operator, value and effect (not the seconds)."""
    return all((a.get(k) or "") == (b.get(k) or "") for k in ("key", "operator", "value", "effect"))


def daemon_pod_tolerations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod spec's tolerations with every daemon toleration added, or put in place of an equal one."""
    out = [dict(t) for t in _l(spec.get("tolerations"))]
    wanted = list(DAEMON_TOLERATIONS) + ([HOST_NETWORK_TOLERATION] if spec.get("hostNetwork") else [])
    for tol in wanted:
        for i, have in enumerate(out):
            if _same_toleration(have, tol):
                out[i] = dict(tol)
                break
        else:
            out.append(dict(tol))
    return out


_OPS = {"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"}


def _requirement_matches(req: dict[str, Any], values_of: Callable[[str], str | None]) -> bool:
    op, key, values = req.get("operator"), str(req.get("key") or ""), [str(x) for x in _l(req.get("values"))]
    have = values_of(key)
    if op not in _OPS:
        return False
    if op == "In":
        return have is not None and have in values
    if op == "NotIn":
        return have is None or have not in values
    if op == "Exists":
        return have is not None
    if op == "DoesNotExist":
        return have is None
    try:  # Gt / Lt: one integer on both sides
        return have is not None and len(values) == 1 and (
            int(have) > int(values[0]) if op == "Gt" else int(have) < int(values[0]))
    except ValueError:
        return False


def _term_matches(term: dict[str, Any], node: dict[str, Any]) -> bool:
    """One nodeSelectorTerm: its matchExpressions (labels) and matchFields (metadata.name), ANDed;
    an empty term matches nothing."""
    exprs, fields = _l(term.get("matchExpressions")), _l(term.get("matchFields"))
    if not exprs and not fields:
        return False
    labels = _d(node["metadata"].get("labels"))
    names = {"metadata.name": _name(node)}
    return (all(_requirement_matches(_d(e), labels.get) for e in exprs)
            and all(_requirement_matches(_d(f), names.get) for f in fields))


def matches_node_affinity(pod_spec: dict[str, Any], node: dict[str, Any]) -> bool:
    """nodeSelector and the required node affinity (upstream's GetRequiredNodeAffinity(pod).Match)."""
    labels = _d(node["metadata"].get("labels"))
    if any(labels.get(k) != v for k, v in _d(pod_spec.get("nodeSelector")).items()):
        return False
    required = _d(_d(pod_spec.get("affinity")).get("nodeAffinity")).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return True
    return any(_term_matches(_d(t), node) for t in _l(_d(required).get("nodeSelectorTerms")))


def _untolerated(taints: Iterable[dict[str, Any]], tolerations: list[dict[str, Any]],
                 effects: tuple[str, ...]) -> dict[str, Any] | None:
    for taint in taints:
        if taint.get("effect") in effects and not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


def node_should_run(node: dict[str, Any], ds: dict[str, Any]) -> tuple[bool, bool]:
    """(should run: a daemon pod belongs here; should continue running: one already here may stay).

    upstream's NodeShouldRunDaemonPod: a template's nodeName, nodeSelector or
    required node affinity that excludes the node excludes it for good; an
    untolerated NoSchedule/NoExecute taint means no new pod, and only an
    untolerated NoExecute one makes a running pod go. A cordoned node
    (``spec.unschedulable``) still gets its daemon pod."""
    tspec = _d(_d(_d(ds.get("spec")).get("template")).get("spec"))
    if tspec.get("nodeName") and tspec["nodeName"] != _name(node):
        return False, False
    if not matches_node_affinity(tspec, node):
        return False, False
    taints = _l(_d(node.get("spec")).get("taints"))
    tolerations = daemon_pod_tolerations(tspec)
    if _untolerated(taints, tolerations, ("NoSchedule", "NoExecute")) is not None:
        return False, _untolerated(taints, tolerations, ("NoExecute",)) is None
    return True, True


# -- pods by node (pure) -------------------------------------------------------------
def target_node(pod: dict[str, Any]) -> str | None:
    """The node a daemon pod is for: ``spec.nodeName``, or before binding its
    ``metadata.name In [node]`` node affinity (upstream's GetTargetNodeName)."""
    spec = _d(pod.get("spec"))
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = _d(_d(_d(spec.get("affinity")).get("nodeAffinity")).get(
        "requiredDuringSchedulingIgnoredDuringExecution"))
    for term in _l(required.get("nodeSelectorTerms")):
        for req in _l(_d(term).get("matchFields")):
            if _d(req).get("key") == "metadata.name" and _d(req).get("operator") == "In":
                values = _l(req.get("values"))
                return str(values[0]) if len(values) == 1 else None
    return None


def _is_terminal(pod: dict[str, Any]) -> bool:
    return _d(pod.get("status")).get("phase") in ("Succeeded", "Failed")


def _deleting(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def nodes_to_daemon_pods(pods: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Pods by the node they are for; a finished pod already being deleted is nobody's concern."""
    out: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        if _is_terminal(pod) and _deleting(pod):
            continue
        node = target_node(pod)
        if node is not None:
            out.setdefault(node, []).append(pod)
    return out


def _created(pod: dict[str, Any]) -> float:
    t = parse_time(pod["metadata"].get("creationTimestamp"))
    return t.timestamp() if t else 0.0


def pod_order(pod: dict[str, Any]) -> tuple[Any, ...]:
    """upstream's podByCreationTimestampAndPhase: scheduled first, then oldest, then by name."""
    return (not _d(pod.get("spec")).get("nodeName"), _created(pod), _name(pod))


def template_generation(ds: dict[str, Any]) -> str | None:
    value = _d(ds["metadata"].get("annotations")).get(TEMPLATE_GENERATION_ANNOTATION)
    try:
        return str(int(value)) if value is not None else None
    except ValueError:
        return None


def is_pod_updated(pod: dict[str, Any], hash_: str, generation: str | None) -> bool:
    """The pod runs the current template: its revision hash, or the template generation, is the DaemonSet's."""
    labels = _d(pod["metadata"].get("labels"))
    return bool(hash_) and labels.get(REVISION_LABEL) == hash_ or (
        generation is not None and labels.get(TEMPLATE_GENERATION_LABEL) == generation)


def _scaled(value: Any, total: int) -> int:
    """intstr.GetScaledValueFromIntOrPercent, rounding up."""
    if isinstance(value, str) and value.endswith("%"):
        try:
            return math.ceil(int(value[:-1]) * total / 100)
        except ValueError:
            return 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _rolling(ds: dict[str, Any]) -> dict[str, Any] | None:
    strategy = _d(_d(ds.get("spec")).get("updateStrategy"))
    return _d(strategy.get("rollingUpdate")) if strategy.get("type") == "RollingUpdate" else None


def surge_count(ds: dict[str, Any], desired: int) -> int:
    rolling = _rolling(ds)
    return _scaled(rolling.get("maxSurge"), desired) if rolling is not None else 0


def unavailable_count(ds: dict[str, Any], desired: int) -> int:
    rolling = _rolling(ds)
    return _scaled(rolling.get("maxUnavailable"), desired) if rolling is not None else 0


def _min_ready(ds: dict[str, Any]) -> int:
    return int(_d(ds.get("spec")).get("minReadySeconds") or 0)


# -- manage (pure) -------------------------------------------------------------------
@dataclass
class Plan:
    """What a sync does: nodes to start a pod on, pods to delete, and failed or finished pods
    it wants to delete (each reported, failed ones only outside their node's backoff)."""

    create: list[str] = field(default_factory=list)
    delete: list[dict[str, Any]] = field(default_factory=list)
    failed: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    succeeded: list[tuple[dict[str, Any], str]] = field(default_factory=list)


def _plan_node(ds: dict[str, Any], node: dict[str, Any], pods: list[dict[str, Any]] | None, hash_: str,
               now: datetime, plan: Plan) -> None:
    """upstream's podsShouldBeOnNode for one node."""
    should_run, should_continue = node_should_run(node, ds)
    name = _name(node)
    if should_run and pods is None:
        plan.create.append(name)
        return
    if pods is None:
        return
    if not should_continue:
        plan.delete.extend(p for p in pods if not _deleting(p))
        return
    running = []
    for pod in pods:
        if _deleting(pod):
            continue
        phase = _d(pod.get("status")).get("phase")
        if phase == "Failed":
            plan.failed.append((pod, name))
        elif phase == "Succeeded":
            plan.succeeded.append((pod, name))
        else:
            running.append(pod)
    running.sort(key=pod_order)
    if surge_count(ds, 1) <= 0:
        plan.delete.extend(running[1:])  # one per node: the oldest stays
        return
    if not running:
        if should_run:
            plan.create.append(name)  # surging: keep one pod that is not being deleted
        return
    # Surging: at most the oldest new pod and the oldest old one; the old one
    # goes when it is not ready or the new one is available.
    newest: dict[str, Any] | None = None
    oldest_old: dict[str, Any] | None = None
    for pod in running:
        if _d(pod["metadata"].get("labels")).get(REVISION_LABEL) == hash_:
            if newest is None:
                newest = pod
                continue
        elif oldest_old is None:
            oldest_old = pod
            continue
        plan.delete.append(pod)
    if newest is not None and oldest_old is not None and (
            not is_pod_ready(oldest_old) or is_pod_available(newest, _min_ready(ds), now)):
        plan.delete.append(oldest_old)


def plan_nodes(ds: dict[str, Any], nodes: Sequence[dict[str, Any]], by_node: dict[str, list[dict[str, Any]]],
               hash_: str, now: datetime) -> Plan:
    """upstream's manage: every node's pods as they should be, and pods still
    waiting for a node that no longer exists deleted."""
    plan = Plan()
    names = set()
    for node in sorted(nodes, key=_name):
        names.add(_name(node))
        _plan_node(ds, node, by_node.get(_name(node)), hash_, now, plan)
    for node_name, pods in sorted(by_node.items()):
        if node_name not in names:
            plan.delete.extend(p for p in pods if not _d(p.get("spec")).get("nodeName") and not _deleting(p))
    return plan


# -- rolling update (pure) ------------------------------------------------------------
def _updated_on_node(pods: list[dict[str, Any]], hash_: str, generation: str | None
                     ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, bool]:
    """(new pod, old pod, ok): ok is False when a node has more than one of either (manage prunes it first)."""
    new = old = None
    for pod in pods:
        if _deleting(pod):
            continue
        if is_pod_updated(pod, hash_, generation):
            if new is not None:
                return None, None, False
            new = pod
        else:
            if old is not None:
                return None, None, False
            old = pod
    return new, old, True


def plan_rolling_update(ds: dict[str, Any], nodes: Sequence[dict[str, Any]],
                        by_node: dict[str, list[dict[str, Any]]], hash_: str, now: datetime
                        ) -> tuple[list[dict[str, Any]], list[str]]:
    """(old pods to delete, nodes to start a new pod on) within maxUnavailable / maxSurge (upstream's rollingUpdate).

    Nodes are taken in name order, so the update goes node by node in a predictable order."""
    generation = template_generation(ds)
    min_ready = _min_ready(ds)
    node_by_name = {_name(n): n for n in nodes}
    pods_of: dict[str, list[dict[str, Any]]] = {name: list(pods) for name, pods in by_node.items()}
    desired = 0
    for node in nodes:
        if node_should_run(node, ds)[0]:
            desired += 1
            pods_of.setdefault(_name(node), [])
    max_surge, max_unavailable = surge_count(ds, desired), unavailable_count(ds, desired)
    if desired > 0 and max_surge == 0 and max_unavailable == 0:
        max_unavailable = 1  # an impossible configuration: accept unavailability, as upstream does

    def available(pod: dict[str, Any]) -> bool:
        return is_pod_available(pod, min_ready, now)

    if max_surge == 0:
        unavailable = 0
        replace: list[dict[str, Any]] = []
        candidates: list[dict[str, Any]] = []
        for name in sorted(pods_of):
            new, old, ok = _updated_on_node(pods_of[name], hash_, generation)
            if not ok or (new is None) == (old is None):
                unavailable += 1  # the manage loop is still at work here
            elif new is not None:
                unavailable += 0 if available(new) else 1
            elif not available(old):  # type: ignore[arg-type]
                replace.append(old)  # type: ignore[arg-type]
                unavailable += 1
            elif unavailable < max_unavailable:
                candidates.append(old)  # type: ignore[arg-type]
        room = max(0, min(max_unavailable - unavailable, len(candidates)))
        return replace + candidates[:room], []

    delete: list[dict[str, Any]] = []
    should_not_run: list[dict[str, Any]] = []
    candidate_nodes: list[str] = []
    allowed_nodes: list[str] = []
    surged = available_count = 0
    for name in sorted(pods_of):
        new, old, ok = _updated_on_node(pods_of[name], hash_, generation)
        if not ok:
            surged += 1
            continue
        counted = old if old is not None else new
        if counted is not None and available(counted):
            available_count += 1
        if old is None:
            continue
        node = node_by_name.get(name)
        runs_here = node is not None and node_should_run(node, ds)[0]
        if new is None:
            if not available(old):
                if not runs_here:
                    delete.append(old)
                else:
                    allowed_nodes.append(name)
            elif not runs_here:
                should_not_run.append(old)
            elif surged < max_surge:
                candidate_nodes.append(name)
        elif not available(new):
            surged += 1
        else:
            delete.append(old)
    deletable = min(available_count - desired, len(should_not_run))
    if deletable > 0:
        delete.extend(should_not_run[:deletable])
    room = max(0, min(max_surge - surged, len(candidate_nodes)))
    return delete, allowed_nodes + candidate_nodes[:room]


# -- status (pure) -------------------------------------------------------------------
def calculate_status(ds: dict[str, Any], nodes: Sequence[dict[str, Any]], by_node: dict[str, list[dict[str, Any]]],
                     hash_: str, now: datetime) -> dict[str, int]:
    """The counters of ``status`` (upstream's updateDaemonSetStatus): per node that should run
    a daemon pod, its oldest pod decides ready/available/updated."""
    desired = current = misscheduled = ready = updated = available = 0
    generation = template_generation(ds)
    for node in nodes:
        should_run, _ = node_should_run(node, ds)
        pods = by_node.get(_name(node)) or []
        if not should_run:
            misscheduled += 1 if pods else 0
            continue
        desired += 1
        if not pods:
            continue
        current += 1
        pod = min(pods, key=pod_order)
        if is_pod_ready(pod):
            ready += 1
            if is_pod_available(pod, _min_ready(ds), now):
                available += 1
        if is_pod_updated(pod, hash_, generation):
            updated += 1
    return {"desiredNumberScheduled": desired, "currentNumberScheduled": current,
            "numberMisscheduled": misscheduled, "numberReady": ready, "updatedNumberScheduled": updated,
            "numberAvailable": available, "numberUnavailable": desired - available}


# -- the pods a DaemonSet creates ------------------------------------------------------
def pod_template(ds: dict[str, Any], hash_: str) -> dict[str, Any]:
    """upstream's CreatePodTemplate: the template with the daemon tolerations and the
    revision (and template generation) labels."""
    template = copy.deepcopy(_d(_d(ds.get("spec")).get("template")))
    meta = template.setdefault("metadata", {})
    labels = meta.setdefault("labels", {})
    generation = template_generation(ds)
    if generation is not None:
        labels[TEMPLATE_GENERATION_LABEL] = generation
    if hash_:
        labels[REVISION_LABEL] = hash_
    spec = template.setdefault("spec", {})
    spec["tolerations"] = daemon_pod_tolerations(spec)
    return template


def for_node(template: dict[str, Any], node: str) -> dict[str, Any]:
    """The template pinned to ``node`` by a required node affinity the scheduler honours
    (upstream's ReplaceDaemonSetPodNodeNameNodeAffinity: it replaces the required terms)."""
    out = copy.deepcopy(template)
    affinity = out["spec"].setdefault("affinity", {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}
    return out


class Backoff:
    """Kubernetes' flowcontrol.Backoff (per key, doubling up to a maximum; an entry idle
    for twice the maximum starts over), for deleting a node's failed daemon pods."""

    def __init__(self, initial: float = FAILED_POD_BACKOFF[0], maximum: float = FAILED_POD_BACKOFF[1], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.initial, self.maximum, self.clock = initial, maximum, clock
        self._entries: dict[str, tuple[float, float]] = {}  # key -> (delay, last update)

    def in_backoff(self, key: str) -> float:
        """Seconds left of ``key``'s backoff since its last ``next`` (0: not in backoff)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        left = entry[0] - (self.clock() - entry[1])
        return left if left > 0 else 0.0

    def next(self, key: str) -> float:
        now = self.clock()
        entry = self._entries.get(key)
        if entry is None or now - entry[1] > 2 * self.maximum:
            delay = self.initial
        else:
            delay = min(entry[0] * 2, self.maximum)
        self._entries[key] = (delay, now)
        return delay


def _empty_selector(ds: dict[str, Any]) -> bool:
    selector = _d(ds.get("spec")).get("selector")
    return isinstance(selector, dict) and not selector.get("matchLabels") and not selector.get("matchExpressions")


_STATUS_KEYS = ("desiredNumberScheduled", "currentNumberScheduled", "numberMisscheduled", "numberReady",
                "updatedNumberScheduled", "numberAvailable", "numberUnavailable")


# -- the controller --------------------------------------------------------------
class DaemonSetController:
    name = "daemonset"

    def __init__(self, ctx: ControllerContext, *, backoff: Backoff | None = None) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.recorder = ctx.recorder
        self.queue = WorkQueue(name=self.name)
        self.expectations = ControllerExpectations()
        self.backoff = backoff or Backoff()
        self.ds_informer = ctx.informers.informer("daemonsets")
        self.pod_informer = ctx.informers.informer("pods")
        self.node_informer = ctx.informers.informer("nodes")
        self.revision_informer = ctx.informers.informer("controllerrevisions")
        self.ds_informer.add_handler(self._on_ds_add, self._on_ds_update, self._on_ds_delete)
        self.pod_informer.add_handler(self._on_pod_add, self._on_pod_update, self._on_pod_delete)
        self.node_informer.add_handler(self._on_node_add, self._on_node_update, self._on_node_delete)
        self.revision_informer.add_handler(self._on_revision, lambda old, new: self._on_revision(new),
                                           self._on_revision)

    async def run(self) -> None:
        for inf in (self.ds_informer, self.pod_informer, self.node_informer, self.revision_informer):
            await inf.wait_synced()
        log.info("controller started name=%s", self.name)
        await run_workers(self.queue, self.reconcile, workers=self.ctx.config.concurrent_syncs, logger=log)

    # -- handlers: only enqueue (and count what the expectations wait for) ----
    def _on_ds_add(self, ds: dict[str, Any]) -> None:
        self.queue.add(object_key(ds))

    def _on_ds_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.queue.add(object_key(new))

    def _on_ds_delete(self, ds: dict[str, Any]) -> None:
        key = object_key(ds)
        self.expectations.forget(key)
        self.queue.add(key)

    def _owner_key(self, obj: dict[str, Any]) -> str | None:
        return resolve_controller_ref(obj, controller_ref(obj), DAEMONSET, self.ds_informer.cache)

    def _on_pod_add(self, pod: dict[str, Any]) -> None:
        if _deleting(pod):
            self._on_pod_delete(pod)
            return
        if controller_ref(pod) is not None:
            key = self._owner_key(pod)
            if key is not None:
                self.expectations.creation_observed(key)
                self.queue.add(key)
            return
        for key in owners_selecting(pod, self.ds_informer.cache):
            self.queue.add(key)

    def _on_pod_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
            return
        if _deleting(new) and not _deleting(old):
            self._on_pod_delete(new)  # graceful deletion: for the expectations the pod is gone now
            return
        for key in owners_to_sync_on_update(old, new, DAEMONSET, self.ds_informer.cache):
            self.queue.add(key)
        key = self._owner_key(new)
        if key is not None and not is_pod_ready(old) and is_pod_ready(new):
            min_ready = _min_ready(self.ds_informer.cache.get(key) or {})
            if min_ready > 0:
                self.queue.add_after(key, min_ready + 1)

    def _on_pod_delete(self, pod: dict[str, Any]) -> None:
        key = self._owner_key(pod)
        if key is None:
            return
        self.expectations.deletion_observed(key, object_key(pod))
        self.queue.add(key)

    def _on_node_add(self, node: dict[str, Any]) -> None:
        for ds in self.ds_informer.cache.list():
            if node_should_run(node, ds)[0]:
                self.queue.add(object_key(ds))

    def _on_node_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if (_d(old["metadata"].get("labels")) == _d(new["metadata"].get("labels"))
                and _d(old.get("spec")) == _d(new.get("spec"))):
            return  # heartbeats and status: eligibility depends on labels, taints and name only
        for ds in self.ds_informer.cache.list():
            if node_should_run(old, ds) != node_should_run(new, ds):
                self.queue.add(object_key(ds))

    def _on_node_delete(self, node: dict[str, Any]) -> None:
        for ds in self.ds_informer.cache.list():
            self.queue.add(object_key(ds))  # its counts change; a pod still waiting for the node goes

    def _on_revision(self, rev: dict[str, Any]) -> None:
        key = self._owner_key(rev)
        if key is not None:
            self.queue.add(key)

    # -- reconcile ------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        ds = self.ds_informer.cache.get(key)
        if ds is None:
            self.expectations.forget(key)
            return
        if _empty_selector(ds):
            self.recorder.event(ds, "Warning", REASON_SELECTING_ALL,
                                "This daemon set is selecting all pods. A non-empty selector is required.")
            return
        if _deleting(ds):
            return  # its pods and revisions belong to the garbage collector now
        namespace = ds["metadata"]["namespace"]
        nodes = self.node_informer.cache.list()
        candidates = self.pod_informer.cache.by_index("namespace", namespace)
        pods = await ControllerRefManager(self.client, ds, DAEMONSET, resource="pods").claim(candidates)
        revisions = owned_revisions(ds, self.revision_informer.cache.by_index("namespace", namespace))
        hist = await sync_history(self.client, ds, DAEMONSET, revisions)
        hash_ = str(_d(hist.update["metadata"].get("labels")).get(REVISION_LABEL)
                    or hist.update["metadata"]["name"].rsplit("-", 1)[-1])
        by_node = nodes_to_daemon_pods(pods)
        now = datetime.now(UTC)

        if not self.expectations.satisfied(key):
            # Only the counters: this generation has not been acted on yet.
            await self._write_status(ds, calculate_status(ds, nodes, by_node, hash_, now), hist.collision_count,
                                     observe=False)
            return
        error: BaseException | None = None
        try:
            await self._manage(key, ds, nodes, by_node, hash_, now)
            if self.expectations.satisfied(key) and _rolling(ds) is not None:
                deletes, creates = plan_rolling_update(ds, nodes, by_node, hash_, now)
                if deletes or creates:
                    log.info("rolling update ds=%s revision=%s delete=%s create-on=%s", key, hash_,
                             ",".join(_name(p) for p in deletes) or "-", ",".join(creates) or "-")
                    await self._sync_nodes(key, ds, deletes, creates, hash_)
            live = {str(_d(p["metadata"].get("labels")).get(REVISION_LABEL)) for p in pods}
            live_names = {r["metadata"]["name"] for r in hist.revisions
                          if _d(r["metadata"].get("labels")).get(REVISION_LABEL) in live}
            await truncate_history(self.client, ds, hist, live_names)
        except Exception as e:  # noqa: BLE001 - status is written first, then the error requeues
            error = e
        status = calculate_status(ds, nodes, by_node, hash_, now)
        await self._write_status(ds, status, hist.collision_count, observe=True)
        if error is not None:
            raise error
        min_ready = _min_ready(ds)
        waits = [w for p in pods if (w := seconds_until_available(p, min_ready, now)) is not None]
        if waits:
            self.queue.add_after(key, min(waits) + 0.1)

    async def _manage(self, key: str, ds: dict[str, Any], nodes: list[dict[str, Any]],
                      by_node: dict[str, list[dict[str, Any]]], hash_: str, now: datetime) -> None:
        plan = plan_nodes(ds, nodes, by_node, hash_, now)
        deletes = list(plan.delete)
        for pod, node in plan.failed:
            backoff_key = f"{ds['metadata']['uid']}/{_d(ds.get('status')).get('observedGeneration') or 0}/{node}"
            left = self.backoff.in_backoff(backoff_key)
            if left > 0:
                log.info("failed pod deletion in backoff ds=%s pod=%s node=%s wait=%.1fs", key, _name(pod), node, left)
                self.queue.add_after(key, left)
                continue
            self.backoff.next(backoff_key)
            self.recorder.event(ds, "Warning", REASON_FAILED_DAEMON_POD,
                                f"Found failed daemon pod {pod['metadata']['namespace']}/{_name(pod)} on node {node}, "
                                "will try to kill it")
            deletes.append(pod)
        for pod, node in plan.succeeded:
            self.recorder.event(ds, "Normal", REASON_SUCCEEDED_DAEMON_POD,
                                f"Found succeeded daemon pod {pod['metadata']['namespace']}/{_name(pod)} on node "
                                f"{node}, will try to delete it")
            deletes.append(pod)
        if plan.create or deletes:
            log.info("manage ds=%s create-on=%s delete=%s", key, ",".join(plan.create) or "-",
                     ",".join(_name(p) for p in deletes) or "-")
        await self._sync_nodes(key, ds, deletes, plan.create, hash_)

    async def _sync_nodes(self, key: str, ds: dict[str, Any], deletes: list[dict[str, Any]], creates: list[str],
                          hash_: str) -> None:
        """upstream's syncNodes: expectations first, then creates in slow-start batches, then deletes."""
        creates, deletes = creates[:BURST_REPLICAS], deletes[:BURST_REPLICAS]
        if not creates and not deletes:
            return
        self.expectations.expect(key, creations=len(creates), deletions=[object_key(p) for p in deletes])
        template = pod_template(ds, hash_)
        targets = iter(creates)
        errors: list[BaseException] = []
        if creates:
            successes, error = await slow_start_batch(len(creates), lambda: self._create_pod(ds, template,
                                                                                           next(targets)))
            self.expectations.lower_creations(key, len(creates) - successes)
            if error is not None:
                errors.append(error)
        results = await asyncio.gather(*(self._delete_pod(key, ds, p) for p in deletes), return_exceptions=True)
        errors += [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _create_pod(self, ds: dict[str, Any], template: dict[str, Any], node: str) -> None:
        pod = pod_from_template(ds, DAEMONSET, template=for_node(template, node))
        try:
            made = await self.client.create("pods", pod, namespace=ds["metadata"]["namespace"])
        except APIStatusError as e:
            self.recorder.event(ds, "Warning", REASON_FAILED_CREATE, f"Error creating: {e}")
            raise
        self.recorder.event(ds, "Normal", REASON_SUCCESSFUL_CREATE, f"Created pod: {made['metadata']['name']}")

    async def _delete_pod(self, key: str, ds: dict[str, Any], pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            await self.client.delete("pods", meta["name"], namespace=meta["namespace"],
                                     preconditions={"uid": meta["uid"]} if meta.get("uid") else None)
        except NotFoundError:
            self.expectations.deletion_observed(key, object_key(pod))
            return
        except APIStatusError as e:
            self.expectations.deletion_observed(key, object_key(pod))
            self.recorder.event(ds, "Warning", REASON_FAILED_DELETE, f"Error deleting: {e}")
            raise
        self.recorder.event(ds, "Normal", REASON_SUCCESSFUL_DELETE, f"Deleted pod: {meta['name']}")

    async def _write_status(self, ds: dict[str, Any], counts: dict[str, int], collision_count: int, *,
                            observe: bool) -> None:
        old = _d(ds.get("status"))
        generation = int(ds["metadata"].get("generation") or 0)
        body: dict[str, Any] = dict(counts)
        if observe:
            body["observedGeneration"] = generation
        if collision_count or old.get("collisionCount") is not None:
            body["collisionCount"] = collision_count
        if all(int(old.get(k) or 0) == int(v or 0) for k, v in body.items()):
            return
        meta = ds["metadata"]
        try:
            await self.client.patch("daemonsets", meta["name"], {"status": body}, namespace=meta["namespace"],
                                    subresource="status")
        except NotFoundError:
            return
        log.info("status ds=%s/%s desired=%d current=%d ready=%d updated=%d available=%d observedGeneration=%s",
                 meta["namespace"], meta["name"], counts["desiredNumberScheduled"], counts["currentNumberScheduled"],
                 counts["numberReady"], counts["updatedNumberScheduled"], counts["numberAvailable"],
                 body.get("observedGeneration", old.get("observedGeneration")))
