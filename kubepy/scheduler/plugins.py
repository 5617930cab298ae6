"""The scheduler's filter and score plugins, one small class each.

Each mirrors the kube-scheduler plugin of the same name and uses its exact
reason strings, because those are what ``kubectl describe pod`` shows.
Filters return a ``Status``; scorers return 0..100 (or a raw value plus a
``normalize`` over all feasible nodes).  See ``framework`` for the cycle.

Only the framework's types are used here; nothing talks to the API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from kubepy.meta.images import normalize_image_ref
from kubepy.meta.selectors import Requirement, validate_label_key, validate_label_value
from kubepy.scheduler.framework import (
    MAX_NODE_SCORE,
    OK,
    UNSCHEDULABLE,
    UNSCHEDULABLE_AND_UNRESOLVABLE,
    NodeInfo,
    PodInfo,
    SchedulingContext,
    Status,
    Taint,
    tolerates,
)

if TYPE_CHECKING:   # numpy (through columns) loads only where it can: see scheduler.node_columns
    import numpy as np

    from kubepy.scheduler.columns import NodeColumns

__all__ = [
    "TAINT_UNSCHEDULABLE",
    "TAINT_NOT_READY",
    "TAINT_UNREACHABLE",
    "REASON_UNSCHEDULABLE",
    "REASON_AFFINITY",
    "REASON_PORTS",
    "REASON_TOO_MANY_PODS",
    "untolerated_taint_reason",
    "NodeSelectorTerm",
    "parse_node_selector_term",
    "NodeUnschedulable",
    "NodeReady",
    "TaintToleration",
    "NodeAffinity",
    "NodePorts",
    "NodeResourcesFit",
    "NodeResourcesLeastAllocated",
    "NodeResourcesBalancedAllocation",
    "SelectorSpread",
    "default_normalize",
]

TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"

REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_PORTS = "node(s) didn't have free ports for the requested pod ports"
REASON_TOO_MANY_PODS = "Too many pods"

_FILTER_EFFECTS = ("NoSchedule", "NoExecute")


def untolerated_taint_reason(key: str, value: str) -> str:
    return f"node(s) had untolerated taint {{{key}: {value}}}"


def default_normalize(scores: list[int], *, reverse: bool = False) -> list[int]:
    """Kubernetes' DefaultNormalizeScore: scale so the highest is 100;
    *reverse* makes the lowest raw score best.  All-zero stays 0 (100 when
    reversed)."""
    top = max(scores, default=0)
    if top == 0:
        return [MAX_NODE_SCORE if reverse else 0] * len(scores)
    if reverse:
        return [MAX_NODE_SCORE - MAX_NODE_SCORE * s // top for s in scores]
    return [MAX_NODE_SCORE * s // top for s in scores]


# ---------------------------------------------------------------------------
# node conditions and taints
# ---------------------------------------------------------------------------


class NodeUnschedulable:
    """Cordoned nodes (``spec.unschedulable``) take no new pods unless the
    pod tolerates the unschedulable taint."""

    name = "NodeUnschedulable"
    _REJECT = Status(UNSCHEDULABLE_AND_UNRESOLVABLE, (REASON_UNSCHEDULABLE,))
    _TAINT = Taint(TAINT_UNSCHEDULABLE, "", "NoSchedule")

    def filter(self, pod: PodInfo, node_info: NodeInfo) -> Status:
        if not node_info.unschedulable or tolerates(pod.tolerations, self._TAINT):
            return OK
        return self._REJECT

    def filter_columns(self, pod: PodInfo, cols: NodeColumns) -> np.ndarray:
        return cols.schedulable


class NodeName:
    """A pod naming its node (``spec.nodeName``) fits only there (upstream's
    NodeName).  Such pods skip the scheduler, so this decides only in a
    simulation such as preemption's."""

    name = "NodeName"
    _REJECT = Status(UNSCHEDULABLE_AND_UNRESOLVABLE, ("node(s) didn't match the requested node name",))

    def pre_filter(self, pod: PodInfo) -> bool:
        return bool(pod.spec.get("nodeName"))

    def filter(self, pod: PodInfo, node_info: NodeInfo) -> Status:
        return OK if pod.spec.get("nodeName") == node_info.name else self._REJECT


class NodeReady:
    """Nodes whose Ready condition is not True take no new pods.

    Kubernetes says this with the NoSchedule taints its node lifecycle
    controller adds (not-ready when Ready is False — and the kubelet
    registers new nodes with it — unreachable when Unknown); this filter
    applies them as if present, with the same toleration rule and message.
    """

    name = "NodeReady"
    _TAINTS: ClassVar[dict[str, Taint]] = {
        key: Taint(key, "", "NoSchedule") for key in (TAINT_NOT_READY, TAINT_UNREACHABLE)
    }
    _REJECT: ClassVar[dict[str, Status]] = {
        key: Status(UNSCHEDULABLE_AND_UNRESOLVABLE, (untolerated_taint_reason(key, ""),)) for key in _TAINTS
    }

    def filter(self, pod: PodInfo, node_info: NodeInfo) -> Status:
        if node_info.ready == "True":
            return OK
        key = TAINT_UNREACHABLE if node_info.ready == "Unknown" else TAINT_NOT_READY
        if tolerates(pod.tolerations, self._TAINTS[key]):
            return OK
        return self._REJECT[key]

    def filter_columns(self, pod: PodInfo, cols: NodeColumns) -> np.ndarray:
        return cols.ready


class TaintToleration:
    """Filter: every NoSchedule/NoExecute taint must be tolerated; the first
    that is not is named.  Score: fewer untolerated PreferNoSchedule taints
    is better."""

    name = "TaintToleration"

    def filter(self, pod: PodInfo, node_info: NodeInfo) -> Status:
        for taint in node_info.taints:
            if taint.effect in _FILTER_EFFECTS and not tolerates(pod.tolerations, taint):
                return Status(UNSCHEDULABLE_AND_UNRESOLVABLE, (untolerated_taint_reason(taint.key, taint.value),))
        return OK

    def filter_columns(self, pod: PodInfo, cols: NodeColumns) -> np.ndarray:
        return cols.untainted

    @staticmethod
    def _soft_tolerations(pod: PodInfo) -> tuple[Any, ...]:
        return tuple(t for t in pod.tolerations if t.effect in ("", "PreferNoSchedule"))

    def score(self, pod: PodInfo, node_info: NodeInfo, ctx: SchedulingContext) -> int:
        if not node_info.taints:
            return 0
        soft = pod.cached("TaintToleration/soft", self._soft_tolerations)
        return sum(1 for t in node_info.taints if t.effect == "PreferNoSchedule" and not tolerates(soft, t))

    def score_columns(self, pod: PodInfo, cols: NodeColumns, idx: np.ndarray, feasible: Sequence[NodeInfo],
                      ctx: SchedulingContext) -> np.ndarray:
        out = cols.zeros(len(idx))
        for j in cols.where(cols.tainted[idx]):  # only tainted nodes can score above 0
            out[j] = self.score(pod, feasible[j], ctx)
        return out

    def normalize(self, scores: list[int]) -> list[int]:
        return default_normalize(scores, reverse=True)


# ---------------------------------------------------------------------------
# node selection
# ---------------------------------------------------------------------------

_NODE_SELECTOR_OPS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!", "Gt": "gt", "Lt": "lt"}


@dataclass(frozen=True, slots=True)
class NodeSelectorTerm:
    """One nodeSelectorTerm: its matchExpressions and matchFields, ANDed."""

    labels: tuple[Requirement, ...]
    fields: tuple[Requirement, ...]

    def matches(self, node_info: NodeInfo) -> bool:
        labels = node_info.labels
        for req in self.labels:
            if not req.matches(labels):
                return False
        if self.fields:
            fields = {"metadata.name": node_info.name}
            return all(req.matches(fields) for req in self.fields)
        return True


def _requirement(expr: Mapping[str, Any], *, is_field: bool) -> Requirement:
    key = expr.get("key")
    op = _NODE_SELECTOR_OPS.get(expr.get("operator", ""))
    values = tuple(str(v) for v in expr.get("values") or ())
    if not isinstance(key, str) or op is None:
        raise ValueError(f"bad node selector requirement {dict(expr)!r}")
    if is_field:
        if key != "metadata.name" or op not in ("in", "notin") or len(values) != 1:
            raise ValueError(f"unsupported matchFields requirement {dict(expr)!r}")
        return Requirement(key, op, values)
    problem = validate_label_key(key)
    if problem is None:
        if op in ("in", "notin"):
            bad = [v for v in values if validate_label_value(v)]
            problem = "values must be non-empty" if not values else (f"invalid value {bad[0]!r}" if bad else None)
        elif op in ("exists", "!"):
            problem = "values must be empty" if values else None
        elif len(values) != 1 or not values[0].lstrip("+-").isdigit():
            problem = "exactly one integer value is required"
    if problem:
        raise ValueError(f"invalid node selector requirement on {key!r}: {problem}")
    return Requirement(key, op, values)


def parse_node_selector_term(term: Mapping[str, Any] | None) -> NodeSelectorTerm | None:
    """The term, or None if it can never match: empty (Kubernetes matches
    nothing with it) or invalid (it fails alone; other terms still count)."""
    term = term or {}
    exprs, fields = term.get("matchExpressions") or (), term.get("matchFields") or ()
    if not exprs and not fields:
        return None
    try:
        return NodeSelectorTerm(
            tuple(_requirement(e, is_field=False) for e in exprs),
            tuple(_requirement(e, is_field=True) for e in fields),
        )
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _AffinityState:
    node_selector: tuple[tuple[str, str], ...]
    required: tuple[NodeSelectorTerm | None, ...] | None  # None: no required affinity
    preferred: tuple[tuple[int, NodeSelectorTerm], ...]


def _affinity_state(pod: PodInfo) -> _AffinityState:
    node_affinity = (pod.spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    terms = None
    if required is not None:
        terms = tuple(parse_node_selector_term(t) for t in required.get("nodeSelectorTerms") or ())
    preferred = []
    for item in node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or ():
        term = parse_node_selector_term(item.get("preference"))
        weight = int(item.get("weight") or 0)
        if weight and term is not None:
            preferred.append((weight, term))
    selector = tuple((pod.spec.get("nodeSelector") or {}).items())
    return _AffinityState(selector, terms, tuple(preferred))


class NodeAffinity:
    """Filter: ``spec.nodeSelector`` and the required node affinity (terms
    ORed, expressions ANDed) must both match.  Score: the summed weights of
    the matching preferred terms, scaled so the best node gets 100."""

    name = "NodeAffinity"
    _REJECT = Status(UNSCHEDULABLE_AND_UNRESOLVABLE, (REASON_AFFINITY,))

    @staticmethod
    def _state(pod: PodInfo) -> _AffinityState:
        return pod.cached("NodeAffinity", _affinity_state)

    def pre_filter(self, pod: PodInfo) -> bool:
        state = self._state(pod)
        return bool(state.node_selector) or state.required is not None

    def filter(self, pod: PodInfo, node_info: NodeInfo) -> Status:
        state = self._state(pod)
        labels = node_info.labels
        for key, value in state.node_selector:
            if labels.get(key) != value:
                return self._REJECT
        required = state.required
        if required is not None and not any(t is not None and t.matches(node_info) for t in required):
            return self._REJECT
        return OK

    def pre_score(self, pod: PodInfo, ctx: SchedulingContext) -> bool:
        return bool(self._state(pod).preferred)

    def score(self, pod: PodInfo, node_info: NodeInfo, ctx: SchedulingContext) -> int:
        return sum(weight for weight, term in self._state(pod).preferred if term.matches(node_info))

    def normalize(self, scores: list[int]) -> list[int]:
        return default_normalize(scores)


class NodePorts:
    """A host port may be bound once per protocol and address on a node;
    0.0.0.0 takes the port on every address."""

    name = "NodePorts"
    _REJECT = Status(UNSCHEDULABLE, (REASON_PORTS,))

    def pre_filter(self, pod: PodInfo) -> bool:
        return bool(pod.host_ports)

    def filter(self, pod: PodInfo, node_info: NodeInfo) -> Status:
        if node_info.used_ports:
            for ip, protocol, port in pod.host_ports:
                if node_info.has_port_conflict(ip, protocol, port):
                    return self._REJECT
        return OK


# ---------------------------------------------------------------------------
# resources
# ---------------------------------------------------------------------------


class NodeResourcesFit:
    """The pod's requests must fit in allocatable minus what the node's pods
    request, and the node must have room for one more pod.  Every shortfall
    is reported, in Kubernetes' order: pods, cpu, memory, then the rest."""

    name = "NodeResourcesFit"

    def filter(self, pod: PodInfo, node_info: NodeInfo) -> Status:
        want = pod.requests
        alloc = node_info.allocatable
        # The common case is a fit: test it without building anything.
        too_many = node_info.pod_count >= node_info.allowed_pods
        short_cpu = want.milli_cpu > 0 and want.milli_cpu > alloc.milli_cpu - node_info.requested_milli_cpu
        short_mem = want.memory > 0 and want.memory > alloc.memory - node_info.requested_memory
        if not (too_many or short_cpu or short_mem or want.scalars):
            return OK
        reasons = []
        if too_many:
            reasons.append(REASON_TOO_MANY_PODS)
        if short_cpu:
            reasons.append("Insufficient cpu")
        if short_mem:
            reasons.append("Insufficient memory")
        for resource, amount in want.scalars.items():
            free = alloc.scalars.get(resource, 0) - node_info.requested_scalars.get(resource, 0)
            if amount > 0 and amount > free:
                reasons.append(f"Insufficient {resource}")
        if reasons:
            return Status(UNSCHEDULABLE, tuple(reasons))
        return OK

    def filter_columns(self, pod: PodInfo, cols: NodeColumns) -> np.ndarray | None:
        want = pod.requests
        if want.scalars or not cols.exact(cols.arange[:0], want.milli_cpu, want.memory):
            return None
        fits = (cols.pods < cols.allowed) & ~cols.big  # a node too big for int64 is judged per node
        if want.milli_cpu > 0:
            fits &= want.milli_cpu <= cols.alloc_cpu - cols.req_cpu
        if want.memory > 0:
            fits &= want.memory <= cols.alloc_mem - cols.req_mem
        return fits


def _least_requested(requested: int, capacity: int) -> int:
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * MAX_NODE_SCORE // capacity


class NodeResourcesLeastAllocated:
    """Prefer the node with the most cpu and memory left after placing the
    pod, averaging the two.  Charged with non-zero requests (100m / 200Mi
    for containers that ask for nothing), as Kubernetes does."""

    name = "NodeResourcesLeastAllocated"

    def score(self, pod: PodInfo, node_info: NodeInfo, ctx: SchedulingContext) -> int:
        cpu, memory = pod.non_zero_requests
        alloc = node_info.allocatable
        return (
            _least_requested(node_info.non_zero_milli_cpu + cpu, alloc.milli_cpu)
            + _least_requested(node_info.non_zero_memory + memory, alloc.memory)
        ) // 2

    def score_columns(self, pod: PodInfo, cols: NodeColumns, idx: np.ndarray, feasible: Sequence[NodeInfo],
                      ctx: SchedulingContext) -> np.ndarray | None:
        return _least_allocated_columns(pod, cols, idx)


def _least_allocated_columns(pod: PodInfo, cols: NodeColumns, idx: np.ndarray) -> np.ndarray | None:
    cpu, memory = pod.non_zero_requests
    if not cols.exact(idx, cpu, memory):
        return None
    return (cols.least_requested(cols.nz_cpu[idx] + cpu, cols.alloc_cpu[idx])
            + cols.least_requested(cols.nz_mem[idx] + memory, cols.alloc_mem[idx])) // 2


class NodeResourcesAllocated:
    """NodeResourcesFit's score with a configured ``scoringStrategy`` (upstream's
    NodeResourcesFitArgs): ``LeastAllocated`` (most room left), ``MostAllocated``
    (bin packing) or ``RequestedToCapacityRatio`` (a piecewise-linear ``shape`` of
    utilization → score), each per resource and averaged by the resources' weights.
    cpu and memory are charged with non-zero requests, other resources as requested."""

    name = "NodeResourcesFit"

    def __init__(self, strategy: str = "LeastAllocated", resources: Sequence[tuple[str, int]] = (("cpu", 1), ("memory", 1)),
                 shape: Sequence[tuple[int, int]] = ()) -> None:
        self.strategy = strategy
        self.resources = tuple(resources)
        self.weight_sum = sum(w for _, w in self.resources) or 1
        # utilization 0..100 -> score 0..100 (the config's 0..10 scores scaled)
        self.shape = tuple(shape)
        self._default = strategy == "LeastAllocated" and self.resources == (("cpu", 1), ("memory", 1))

    def _fraction_score(self, requested: int, capacity: int) -> int:
        if self.strategy == "LeastAllocated":
            return _least_requested(requested, capacity)
        if capacity == 0:
            return 0
        if self.strategy == "MostAllocated":
            return min(requested, capacity) * MAX_NODE_SCORE // capacity
        return _broken_linear(self.shape, min(requested, capacity) * 100 // capacity)

    def score(self, pod: PodInfo, node_info: NodeInfo, ctx: SchedulingContext) -> int:
        cpu, memory = pod.non_zero_requests
        alloc = node_info.allocatable
        if self._default:  # the common case, without the loop
            return (_least_requested(node_info.non_zero_milli_cpu + cpu, alloc.milli_cpu)
                    + _least_requested(node_info.non_zero_memory + memory, alloc.memory)) // 2
        total = 0
        for resource, weight in self.resources:
            if resource == "cpu":
                req, cap = node_info.non_zero_milli_cpu + cpu, alloc.milli_cpu
            elif resource == "memory":
                req, cap = node_info.non_zero_memory + memory, alloc.memory
            else:
                req = node_info.requested_scalars.get(resource, 0) + pod.requests.scalars.get(resource, 0)
                cap = alloc.scalars.get(resource, 0)
            total += self._fraction_score(req, cap) * weight
        return total // self.weight_sum

    def score_columns(self, pod: PodInfo, cols: NodeColumns, idx: np.ndarray, feasible: Sequence[NodeInfo],
                      ctx: SchedulingContext) -> np.ndarray | None:
        return _least_allocated_columns(pod, cols, idx) if self._default else None


def _broken_linear(shape: Sequence[tuple[int, int]], x: int) -> int:
    """Upstream's BuildBrokenLinearFunction: interpolate between the points."""
    for i, (ux, uy) in enumerate(shape):
        if x <= ux:
            if i == 0:
                return uy
            px, py = shape[i - 1]
            return py + (uy - py) * (x - px) // (ux - px)
    return shape[-1][1] if shape else 0


class NodeResourcesBalancedAllocation:
    """Prefer nodes whose cpu and memory would be used in equal proportion:
    100 × (1 − standard deviation of the used fractions).  Uses real
    requests, and skips pods that request neither (Kubernetes does both)."""

    name = "NodeResourcesBalancedAllocation"

    def pre_score(self, pod: PodInfo, ctx: SchedulingContext) -> bool:
        return bool(pod.requests.milli_cpu or pod.requests.memory)

    def score(self, pod: PodInfo, node_info: NodeInfo, ctx: SchedulingContext) -> int:
        want = pod.requests
        alloc = node_info.allocatable
        if not alloc.milli_cpu or not alloc.memory:
            return MAX_NODE_SCORE  # one resource or none: no deviation
        cpu = min(1.0, (node_info.requested_milli_cpu + want.milli_cpu) / alloc.milli_cpu)
        memory = min(1.0, (node_info.requested_memory + want.memory) / alloc.memory)
        # With two resources the standard deviation is half their distance.
        return int((1 - abs(cpu - memory) / 2) * MAX_NODE_SCORE)

    def score_columns(self, pod: PodInfo, cols: NodeColumns, idx: np.ndarray, feasible: Sequence[NodeInfo],
                      ctx: SchedulingContext) -> np.ndarray | None:
        want = pod.requests
        if not cols.exact(idx, want.milli_cpu, want.memory):
            return None
        return cols.balanced(cols.req_cpu[idx] + want.milli_cpu, cols.alloc_cpu[idx],
                        cols.req_mem[idx] + want.memory, cols.alloc_mem[idx])


# ImageLocality's bounds (upstream): below 23 MiB an image is not worth moving for;
# the score saturates at 1000 MiB per container.
IMAGE_MIN_THRESHOLD = 23 * 1024 * 1024
IMAGE_MAX_CONTAINER_THRESHOLD = 1000 * 1024 * 1024


class ImageLocality:
    """Prefer nodes that already hold the pod's images (Kubernetes' ImageLocality):
    the sum over the pod's containers of each image's size on the node, scaled
    by the share of all nodes that have it (so an image everywhere does not
    pile pods onto one node), mapped from [23 MiB, 1000 MiB × containers] to
    0..100.  Nodes report their images in ``status.images``."""

    name = "ImageLocality"

    def __init__(self) -> None:
        self._counts: tuple[Any, dict[str, int]] = (None, {})

    def _nodes_having(self, node_infos: Sequence[NodeInfo]) -> dict[str, int]:
        """How many nodes hold each image, rebuilt only when a node's images or the
        node list change (not once per pod)."""
        from kubepy.scheduler import framework

        key = (id(node_infos), len(node_infos), framework.IMAGES_VERSION)
        if self._counts[0] != key:
            counts: dict[str, int] = {}
            for n in node_infos:
                for image in n.images:
                    counts[image] = counts.get(image, 0) + 1
            self._counts = (key, counts)
        return self._counts[1]

    @staticmethod
    def _images(pod: PodInfo) -> tuple[str, ...]:
        containers = [*(pod.spec.get("initContainers") or ()), *(pod.spec.get("containers") or ())]
        return tuple(normalize_image_ref(c["image"]) for c in containers if c.get("image"))

    def pre_score(self, pod: PodInfo, ctx: SchedulingContext) -> bool:
        images = pod.cached("ImageLocality/images", self._images)
        having = self._nodes_having(ctx.node_infos)
        spread = {image: having[image] / len(ctx.node_infos) for image in set(images) if image in having}
        pod.remember("ImageLocality/spread", spread)
        return bool(spread)

    def score(self, pod: PodInfo, node_info: NodeInfo, ctx: SchedulingContext) -> int:
        spread: dict[str, float] = pod.recall("ImageLocality/spread")
        total = 0
        for image in pod.cached("ImageLocality/images", self._images):
            size = node_info.images.get(image)
            if size is not None and image in spread:
                total += int(size * spread[image])
        top = IMAGE_MAX_CONTAINER_THRESHOLD * max(1, len(pod.cached("ImageLocality/images", self._images)))
        total = min(max(total, IMAGE_MIN_THRESHOLD), top)
        return MAX_NODE_SCORE * (total - IMAGE_MIN_THRESHOLD) // (top - IMAGE_MIN_THRESHOLD)


class SelectorSpread:
    """Spread the pods of one controller across nodes: fewer pods with the
    same controller ownerReference on a node is better.  Raw score is that
    count; ``normalize`` maps the busiest node to 0 and empty ones to 100
    (Kubernetes' SelectorSpread, keyed by controller instead of selector)."""

    name = "SelectorSpread"

    def pre_score(self, pod: PodInfo, ctx: SchedulingContext) -> bool:
        return pod.controller_uid is not None

    def score(self, pod: PodInfo, node_info: NodeInfo, ctx: SchedulingContext) -> int:
        return node_info.controller_counts.get(pod.controller_uid or "", 0)

    def normalize(self, scores: Sequence[int]) -> list[int]:
        top = max(scores, default=0)
        if top == 0:
            return [MAX_NODE_SCORE] * len(scores)
        return [int(MAX_NODE_SCORE * (top - s) / top) for s in scores]
