"""PodTopologySpread: keep matching pods evenly spread over topology domains.

Kubernetes' plugin of the same name, with its messages:

- **filter** (``whenUnsatisfiable: DoNotSchedule``): placing the pod in the
  node's domain must not make that domain exceed the least loaded eligible
  domain by more than ``maxSkew`` (the minimum counts as 0 while fewer than
  ``minDomains`` domains exist).  A node without the constraint's
  ``topologyKey`` label is rejected as unresolvable.  Eligible domains are
  those of nodes with every topology key that pass ``nodeAffinityPolicy``
  (Honor by default: the pod's nodeSelector/required node affinity) and
  ``nodeTaintsPolicy`` (Ignore by default).
- **score** (``ScheduleAnyway``): fewer matching pods in the node's domains
  is better, each constraint weighted by log(domains + 2), as upstream.
- **system defaults**: a pod without constraints of its own is spread with
  maxSkew 3 by ``kubernetes.io/hostname`` and maxSkew 5 by
  ``topology.kubernetes.io/zone`` (ScheduleAnyway), selecting the pods of
  the Services/ReplicaSets/StatefulSets/ReplicationControllers it belongs
  to; this replaces SelectorSpread, as it did upstream.

``matchLabelKeys`` add ``key=<the pod's value>`` to the selector.  Counting
skips terminating pods and other namespaces, and is kept per node in
``NodeInfo.derived`` so each node is counted again only after it changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubepy.meta.selectors import LabelSelector, Requirement, label_selector_from_dict
from kubepy.scheduler.framework import (
    JOURNAL,
    MAX_NODE_SCORE,
    OK,
    UNSCHEDULABLE,
    UNSCHEDULABLE_AND_UNRESOLVABLE,
    NodeInfo,
    PodInfo,
    SchedulingContext,
    Status,
)
from kubepy.scheduler.plugins import NodeAffinity, TaintToleration

__all__ = [
    "REASON_CONSTRAINTS_NOT_MATCH",
    "REASON_NODE_LABEL_NOT_MATCH",
    "LABEL_HOSTNAME",
    "LABEL_ZONE",
    "Constraint",
    "pod_constraints",
    "PodTopologySpread",
]

REASON_CONSTRAINTS_NOT_MATCH = "node(s) didn't match pod topology spread constraints"
REASON_NODE_LABEL_NOT_MATCH = REASON_CONSTRAINTS_NOT_MATCH + " (missing required label)"
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_ZONE = "topology.kubernetes.io/zone"

DO_NOT_SCHEDULE = "DoNotSchedule"
SCHEDULE_ANYWAY = "ScheduleAnyway"
_NOTHING = LabelSelector(nothing=True)


@dataclass(frozen=True, slots=True)
class Constraint:
    max_skew: int
    topology_key: str
    when_unsatisfiable: str
    selector: LabelSelector
    min_domains: int = 1
    honor_node_affinity: bool = True  # nodeAffinityPolicy: Honor (default)
    honor_taints: bool = False  # nodeTaintsPolicy: Ignore (default)


# The system default constraints (upstream's systemDefaultConstraints); their
# selector is filled in per pod.
DEFAULT_CONSTRAINTS = ((3, LABEL_HOSTNAME, "ScheduleAnyway"), (5, LABEL_ZONE, "ScheduleAnyway"))


def _selector(raw: Mapping[str, Any], labels: Mapping[str, str]) -> LabelSelector:
    try:
        sel = label_selector_from_dict(raw.get("labelSelector"))
    except ValueError:
        return _NOTHING
    keys = [k for k in raw.get("matchLabelKeys") or () if k in labels]
    if keys and not sel.nothing:
        reqs = set(sel.requirements) | {Requirement(k, "=", (labels[k],)) for k in keys}
        sel = LabelSelector(tuple(sorted(reqs, key=lambda r: (r.key, r.op, r.values))))
    return sel


def pod_constraints(pod: PodInfo) -> tuple[Constraint, ...]:
    """The pod's own ``topologySpreadConstraints``, parsed once."""
    def build(p: PodInfo) -> tuple[Constraint, ...]:
        out = []
        for raw in p.spec.get("topologySpreadConstraints") or ():
            out.append(Constraint(
                max_skew=int(raw.get("maxSkew") or 1),
                topology_key=str(raw.get("topologyKey") or ""),
                when_unsatisfiable=raw.get("whenUnsatisfiable") or DO_NOT_SCHEDULE,
                selector=_selector(raw, p.labels),
                min_domains=int(raw.get("minDomains") or 1),
                honor_node_affinity=(raw.get("nodeAffinityPolicy") or "Honor") == "Honor",
                honor_taints=(raw.get("nodeTaintsPolicy") or "Ignore") == "Honor",
            ))
        return tuple(out)
    return pod.cached("PodTopologySpread/constraints", build)


def _counter(ns: str, selector: LabelSelector) -> Any:
    """Upstream's countPodsMatchSelector, for NodeInfo.derived."""
    def build(node_info: NodeInfo) -> int:
        if selector.empty():
            return 0
        return sum(1 for p in node_info.pod_infos
                   if not p.is_terminating and p.namespace == ns and selector.matches(p.labels))
    return build


_AFFINITY = NodeAffinity()
_TAINTS = TaintToleration()


def _included(c: Constraint, pod: PodInfo, node_info: NodeInfo) -> bool:
    """matchNodeInclusionPolicies: may this node's domain count?"""
    if c.honor_node_affinity and _AFFINITY.pre_filter(pod) and _AFFINITY.filter(pod, node_info) is not OK:
        return False
    if c.honor_taints and _TAINTS.filter(pod, node_info) is not OK:
        return False
    return True


def _minimum(constraints: Sequence[Constraint], counts: list[dict[str, int]]) -> list[int]:
    """Each constraint's global minimum; 0 while fewer than minDomains domains exist."""
    out = []
    for i, c in enumerate(constraints):
        low = min(counts[i].values(), default=2**31 - 1)
        out.append(0 if len(counts[i]) < c.min_domains else low)
    return out


def _has_keys(labels: Mapping[str, str], constraints: Sequence[Constraint]) -> bool:
    return all(c.topology_key in labels for c in constraints)


@dataclass(slots=True)
class _FilterState:
    constraints: tuple[Constraint, ...]
    counts: list[dict[str, int]]  # per constraint: domain value -> matching pods
    minimum: list[int]  # per constraint: the global minimum, minDomains applied
    self_match: list[int]


class _Aggregate:
    """Cluster-wide domain counts for one selector, and each node's share."""

    def __init__(self, size: int) -> None:
        self.size = size
        # name -> (its NodeInfo, generation, domain, count)
        self.per_node: dict[str, tuple[NodeInfo, int, str | None, int]] = {}
        self.totals: dict[str, int] = {}  # domain -> matching pods
        self.nodes: dict[str, int] = {}  # domain -> eligible nodes in it
        self.node_list: Sequence[NodeInfo] | None = None  # the list last counted over (held: ids are reused)
        self.seen = 0  # JOURNAL's last generation then


@dataclass(slots=True)
class _ScoreState:
    constraints: tuple[Constraint, ...]
    counts: list[dict[str, int]]
    weights: list[float]
    ignored: set[str]
    keys: list[tuple[Any, Any]]


class PodTopologySpread:
    """See the module docstring.  *listers* supply the selectors behind the
    system default constraints; without them pods without constraints of
    their own are not spread."""

    name = "PodTopologySpread"
    _LABEL = Status(UNSCHEDULABLE_AND_UNRESOLVABLE, (REASON_NODE_LABEL_NOT_MATCH,))
    _SKEW = Status(UNSCHEDULABLE, (REASON_CONSTRAINTS_NOT_MATCH,))

    def __init__(self, listers: Any = None,
                 default_constraints: Sequence[tuple[int, str, str]] = DEFAULT_CONSTRAINTS) -> None:
        """*default_constraints*: (maxSkew, topologyKey, whenUnsatisfiable) applied to pods
        without constraints of their own, selecting their Service's/workload's pods
        (upstream's PodTopologySpreadArgs; the system defaults unless configured)."""
        self.listers = listers
        self.default_constraints = tuple(default_constraints)
        self._aggregates: dict[Any, _Aggregate] = {}

    def _defaults(self, pod: PodInfo) -> tuple[Constraint, ...]:
        def build(p: PodInfo) -> tuple[Constraint, ...]:
            if self.listers is None:
                return ()
            sel = self.listers.default_selector(p.pod)
            if sel.empty():
                return ()
            return tuple(Constraint(skew, key, when, sel) for skew, key, when in self.default_constraints)
        return pod.cached("PodTopologySpread/defaults", build)

    def _constraints(self, pod: PodInfo, action: str) -> tuple[Constraint, ...]:
        own = pod_constraints(pod)
        if own or pod.spec.get("topologySpreadConstraints"):
            return tuple(c for c in own if c.when_unsatisfiable == action)
        return tuple(c for c in self._defaults(pod) if c.when_unsatisfiable == action)

    # -- filter -------------------------------------------------------------
    def pre_filter_nodes(self, pod: PodInfo, node_infos: Sequence[NodeInfo]) -> bool:
        constraints = self._constraints(pod, DO_NOT_SCHEDULE)
        if not constraints:
            pod.remember("PodTopologySpread/filter", None)
            return False
        keys = tuple(c.topology_key for c in constraints)
        ns = pod.namespace
        counts: list[dict[str, int]] = []
        every_node_labelled = True
        for c in constraints:
            if (c.honor_node_affinity and _AFFINITY.pre_filter(pod)) or c.honor_taints:
                counts.append(self._count_slowly(pod, c, keys, node_infos))
                every_node_labelled = False
            else:
                domains, labelled = self._domains(ns, c, keys, node_infos)
                counts.append(domains)
                every_node_labelled = every_node_labelled and labelled == len(node_infos)
        self_match = [1 if c.selector.matches(pod.labels) else 0 for c in constraints]
        minimum = _minimum(constraints, counts)
        pod.remember("PodTopologySpread/filter", _FilterState(constraints, counts, minimum, self_match))
        # Skip the per-node filter when it cannot reject: every node has the keys and even the
        # fullest domain stays within maxSkew (an empty domain always does: maxSkew >= 1).
        # Preemption's filter_simulated still finds the state.
        return not (every_node_labelled and all(
            max(counts[i].values(), default=0) + self_match[i] - minimum[i] <= c.max_skew
            for i, c in enumerate(constraints)))

    def _count_slowly(self, pod: PodInfo, c: Constraint, keys: tuple[str, ...],
                      node_infos: Sequence[NodeInfo]) -> dict[str, int]:
        """Domain counts when the pod's node affinity or tolerations decide
        which nodes count: every node, judged for this pod."""
        out: dict[str, int] = {}
        key, build = f"PodTopologySpread|{pod.namespace}|{c.selector}", _counter(pod.namespace, c.selector)
        for ni in node_infos:
            labels = ni.labels
            if not all(k in labels for k in keys) or not _included(c, pod, ni):
                continue
            value = labels[c.topology_key]
            out[value] = out.get(value, 0) + (ni.derived(key, build) if ni.pod_count else 0)
        return out

    def _domains(self, ns: str, c: Constraint, keys: tuple[str, ...],
                 node_infos: Sequence[NodeInfo]) -> tuple[dict[str, int], int]:
        """Domain counts of the pods matching *c*'s selector in *ns*, over the
        nodes with every key in *keys*, and how many nodes have them.  Kept
        between pods: only nodes whose generation moved since are recounted
        (one per bind, typically)."""
        cache_key = (ns, str(c.selector), c.topology_key, keys)
        agg = self._aggregates.get(cache_key)
        if agg is None or agg.size != len(node_infos):
            if len(self._aggregates) > 256:
                self._aggregates.clear()
            agg = self._aggregates[cache_key] = _Aggregate(len(node_infos))
        per_node, totals, nodes = agg.per_node, agg.totals, agg.nodes
        derived_key, build = f"PodTopologySpread|{ns}|{c.selector}", _counter(ns, c.selector)
        tk = c.topology_key
        # The same node list as last time: only the nodes the journal says changed.
        changed = JOURNAL.since(agg.seen) if agg.node_list is node_infos else None
        agg.node_list, agg.seen = node_infos, JOURNAL.last
        for ni in node_infos if changed is None else changed:
            entry = per_node.get(ni.name)
            if entry is not None:
                if entry[0] is not ni and changed is not None:
                    continue  # not one of this list's nodes (another scheduler's, in tests)
                if entry[1] == ni.generation and entry[0] is ni:
                    continue
                if entry[2] is not None:
                    totals[entry[2]] -= entry[3]
                    nodes[entry[2]] -= 1
            elif changed is not None:
                continue
            labels = ni.labels
            if all(k in labels for k in keys):
                value = labels[tk]
                n = ni.derived(derived_key, build) if ni.pod_count else 0
                totals[value] = totals.get(value, 0) + n
                nodes[value] = nodes.get(value, 0) + 1
                per_node[ni.name] = (ni, ni.generation, value, n)
            else:
                per_node[ni.name] = (ni, ni.generation, None, 0)
        if len(per_node) != len(node_infos):
            # A node went and another came under a new name: start over.
            del self._aggregates[cache_key]
            return self._domains(ns, c, keys, node_infos)
        return {v: n for v, n in totals.items() if nodes[v] > 0}, sum(nodes.values())

    def filter_simulated(self, pod: PodInfo, original: NodeInfo, sim: NodeInfo) -> Status:
        """The filter on *sim*, a copy of *original* with pods removed or
        added (preemption): this cycle's counts with the node's domain
        recounted (upstream's PreFilterExtensions)."""
        try:
            state: _FilterState | None = pod.recall("PodTopologySpread/filter")
        except KeyError:
            return self.filter(pod, sim) if self.pre_filter_nodes(pod, [sim]) else OK
        if state is None:
            return OK
        counts = [dict(c) for c in state.counts]
        labels = original.labels
        if _has_keys(labels, state.constraints):
            for i, c in enumerate(state.constraints):
                if not _included(c, pod, original):
                    continue
                key, build = ("PodTopologySpread", pod.namespace, c.selector), _counter(pod.namespace, c.selector)
                value = labels[c.topology_key]
                counts[i][value] = counts[i].get(value, 0) - original.derived(key, build) + sim.derived(key, build)
        adjusted = _FilterState(state.constraints, counts, _minimum(state.constraints, counts), state.self_match)
        return self._check(adjusted, sim)

    def filter(self, pod: PodInfo, node_info: NodeInfo) -> Status:
        return self._check(pod.recall("PodTopologySpread/filter"), node_info)

    def _check(self, state: _FilterState | None, node_info: NodeInfo) -> Status:
        if state is None:
            return OK
        labels = node_info.labels
        for i, c in enumerate(state.constraints):
            value = labels.get(c.topology_key)
            if value is None:
                return self._LABEL
            skew = state.counts[i].get(value, 0) + state.self_match[i] - state.minimum[i]
            if skew > c.max_skew:
                return self._SKEW
        return OK

    # -- score --------------------------------------------------------------
    def pre_score(self, pod: PodInfo, ctx: SchedulingContext) -> bool:
        constraints = self._constraints(pod, SCHEDULE_ANYWAY)
        if not constraints or not ctx.feasible:
            return False
        # Only the pod's own rules need every topology label on a node: a
        # node without a zone still gets default hostname spreading.
        require_all = bool(pod.spec.get("topologySpreadConstraints"))
        counts: list[dict[str, int]] = [{} for _ in constraints]
        ignored: set[str] = set()
        for ni in ctx.feasible:
            labels = ni.labels
            if require_all and not _has_keys(labels, constraints):
                ignored.add(ni.name)
                continue
            for i, c in enumerate(constraints):
                if c.topology_key != LABEL_HOSTNAME and c.topology_key in labels:
                    counts[i].setdefault(labels[c.topology_key], 0)
        weights = []
        for i, c in enumerate(constraints):
            size = len(ctx.feasible) - len(ignored) if c.topology_key == LABEL_HOSTNAME else len(counts[i])
            weights.append(math.log(size + 2))
        keys = [(("PodTopologySpread", pod.namespace, c.selector), _counter(pod.namespace, c.selector))
                for c in constraints]
        if any(c.topology_key != LABEL_HOSTNAME for c in constraints):
            for ni in ctx.node_infos:
                if not ni.pod_count:
                    continue
                labels = ni.labels
                if require_all and not _has_keys(labels, constraints):
                    continue
                for i, c in enumerate(constraints):
                    if c.topology_key == LABEL_HOSTNAME:
                        continue
                    value = labels.get(c.topology_key)
                    if value is None or value not in counts[i] or not _included(c, pod, ni):
                        continue
                    key, build = keys[i]
                    counts[i][value] += ni.derived(key, build)
        pod.remember("PodTopologySpread/score", _ScoreState(constraints, counts, weights, ignored, keys))
        return True

    def score(self, pod: PodInfo, node_info: NodeInfo, ctx: SchedulingContext) -> int:
        state: _ScoreState = pod.recall("PodTopologySpread/score")
        if node_info.name in state.ignored:
            return -1  # normalize gives ignored nodes 0
        labels = node_info.labels
        total = 0.0
        for i, c in enumerate(state.constraints):
            value = labels.get(c.topology_key)
            if value is None:
                continue
            if c.topology_key == LABEL_HOSTNAME:
                key, build = state.keys[i]
                n = node_info.derived(key, build) if node_info.pod_count else 0
            else:
                n = state.counts[i].get(value, 0)
            total += n * state.weights[i] + (c.max_skew - 1)
        return math.floor(total + 0.5)

    def normalize(self, scores: list[int]) -> list[int]:
        valid = [s for s in scores if s >= 0]
        if not valid:
            return [0] * len(scores)
        lo, hi = min(valid), max(valid)
        out = []
        for s in scores:
            if s < 0:
                out.append(0)
            elif hi == 0:
                out.append(MAX_NODE_SCORE)
            else:
                out.append(MAX_NODE_SCORE * (hi + lo - s) // hi)
        return out
