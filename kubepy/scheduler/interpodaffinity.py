"""InterPodAffinity: place a pod near, or away from, pods with given labels.

Kubernetes' plugin of the same name, with its messages:

- **filter**: the pod's required ``podAffinity`` terms must each find a
  matching pod in the node's topology domain (``topologyKey``'s value), its
  required ``podAntiAffinity`` terms must find none, and no pod already
  placed may have a required anti-affinity term that the new pod matches in
  that domain (symmetry).  The first pod of a group whose affinity terms
  match itself may go where no peer exists yet.
- **score**: preferred terms of the pod (+/- weight) and of the pods already
  placed (their preferred terms, and their required affinity with
  hardPodAffinityWeight 1), summed per topology domain and scaled 0..100
  between the lowest and highest node.

Per pod, the domain counts are computed once (``pre_filter_nodes``,
``pre_score``), not per node: per node they come from ``NodeInfo.derived``
counts that survive until a pod is added to or removed from that node, and
only nodes hosting pods with affinity are visited for the symmetric part
(``NodeInfo.affinity_pods``).

Terms are read as the API server leaves them: it merges ``matchLabelKeys``
and ``mismatchLabelKeys`` into ``labelSelector`` when the pod is created.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubepy.meta.selectors import LabelSelector, label_selector_from_dict
from kubepy.scheduler.framework import (
    MAX_NODE_SCORE,
    OK,
    UNSCHEDULABLE,
    UNSCHEDULABLE_AND_UNRESOLVABLE,
    NodeInfo,
    NodeSubset,
    PodInfo,
    SchedulingContext,
    Status,
)

__all__ = [
    "REASON_AFFINITY_NOT_MATCH",
    "REASON_ANTI_AFFINITY_NOT_MATCH",
    "REASON_EXISTING_ANTI_AFFINITY_NOT_MATCH",
    "HARD_POD_AFFINITY_WEIGHT",
    "AffinityTerm",
    "PodAffinityTerms",
    "pod_affinity_terms",
    "InterPodAffinity",
]

REASON_AFFINITY_NOT_MATCH = "node(s) didn't match pod affinity rules"
REASON_ANTI_AFFINITY_NOT_MATCH = "node(s) didn't match pod anti-affinity rules"
REASON_EXISTING_ANTI_AFFINITY_NOT_MATCH = "node(s) didn't satisfy existing pods anti-affinity rules"
HARD_POD_AFFINITY_WEIGHT = 1  # upstream's InterPodAffinityArgs default
_HARD = 0  # the weight an existing pod's required affinity term scores with: hardPodAffinityWeight

_NOTHING = LabelSelector(nothing=True)


@dataclass(frozen=True, slots=True)
class AffinityTerm:
    """One podAffinityTerm, resolved: the namespaces it names (its pod's own
    when it names none and has no namespaceSelector), its namespaceSelector
    (None when absent), its label selector and topology key.  Hashable, so
    equal terms of many replicas are judged once."""

    namespaces: frozenset[str]
    namespace_selector: LabelSelector | None
    selector: LabelSelector
    topology_key: str
    _hash: int = field(default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Terms key per-node caches on every node of every cycle: hash once.
        object.__setattr__(self, "_hash", hash((self.namespaces, self.namespace_selector, self.selector,
                                                self.topology_key)))

    def __hash__(self) -> int:
        return self._hash

    def matches(self, pod: PodInfo, namespace_labels: Mapping[str, str] | None = None) -> bool:
        """Upstream's AffinityTerm.Matches: the pod is in one of the term's
        namespaces (or its namespace's labels match the namespaceSelector)
        and its labels match the selector."""
        sel = self.namespace_selector
        if pod.namespace in self.namespaces or (sel is not None and (
            sel.empty() or (namespace_labels is not None and sel.matches(namespace_labels)))):
            return self.selector.matches(pod.labels)
        return False


def _term(raw: Mapping[str, Any], namespace: str) -> AffinityTerm:
    try:
        selector = label_selector_from_dict(raw.get("labelSelector"))
    except ValueError:
        selector = _NOTHING
    namespaces = frozenset(raw.get("namespaces") or ())
    ns_raw = raw.get("namespaceSelector")
    ns_selector = None
    if ns_raw is not None:
        try:
            ns_selector = label_selector_from_dict(ns_raw)
        except ValueError:
            ns_selector = _NOTHING
    if not namespaces and ns_selector is None:
        namespaces = frozenset((namespace,))
    return AffinityTerm(namespaces, ns_selector, selector, str(raw.get("topologyKey") or ""))


@dataclass(frozen=True, slots=True)
class PodAffinityTerms:
    """A pod's four kinds of terms, parsed once per PodInfo."""

    required_affinity: tuple[AffinityTerm, ...] = ()
    required_anti: tuple[AffinityTerm, ...] = ()
    preferred_affinity: tuple[tuple[AffinityTerm, int], ...] = ()
    preferred_anti: tuple[tuple[AffinityTerm, int], ...] = ()


_EMPTY = PodAffinityTerms()


def _parse(pod: PodInfo) -> PodAffinityTerms:
    if not pod.pod_affinity[0]:
        return _EMPTY
    affinity = pod.spec.get("affinity") or {}
    ns = pod.namespace

    def required(kind: str) -> tuple[AffinityTerm, ...]:
        return tuple(_term(t, ns) for t in (affinity.get(kind) or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution") or ())

    def preferred(kind: str) -> tuple[tuple[AffinityTerm, int], ...]:
        return tuple((_term(w.get("podAffinityTerm") or {}, ns), int(w.get("weight") or 0))
                     for w in (affinity.get(kind) or {}).get("preferredDuringSchedulingIgnoredDuringExecution") or ())

    return PodAffinityTerms(required("podAffinity"), required("podAntiAffinity"),
                            preferred("podAffinity"), preferred("podAntiAffinity"))


def pod_affinity_terms(pod: PodInfo) -> PodAffinityTerms:
    return pod.cached("InterPodAffinity/terms", _parse)


# ---------------------------------------------------------------------------
# per-node facts, kept by NodeInfo.derived
# ---------------------------------------------------------------------------


def _count_matching_all(terms: tuple[AffinityTerm, ...]) -> Any:
    def build(node_info: NodeInfo) -> int:
        return sum(1 for p in node_info.pod_infos if all(t.matches(p) for t in terms))
    return build


def _existing_terms(node_info: NodeInfo) -> tuple[Counter[AffinityTerm], Counter[tuple[int, AffinityTerm, int]]]:
    """The required anti-affinity terms of the node's pods (with how many
    pods carry each), and the terms that score: (sign, term, weight)."""
    anti: Counter[AffinityTerm] = Counter()
    scoring: Counter[tuple[int, AffinityTerm, int]] = Counter()
    for p in node_info.pod_infos:
        if not p.pod_affinity[0]:
            continue
        terms = pod_affinity_terms(p)
        anti.update(terms.required_anti)
        for t in terms.required_affinity:
            scoring[(1, t, _HARD)] += 1   # weighed by the plugin's hardPodAffinityWeight
        for t, w in terms.preferred_affinity:
            scoring[(1, t, w)] += 1
        for t, w in terms.preferred_anti:
            scoring[(-1, t, w)] += 1
    return anti, scoring


# ---------------------------------------------------------------------------
# the plugin
# ---------------------------------------------------------------------------

TopologyPair = tuple[str, str]


@dataclass(slots=True)
class _FilterState:
    terms: PodAffinityTerms
    affinity_counts: Counter[TopologyPair]
    anti_counts: Counter[TopologyPair]
    existing_anti_counts: Counter[TopologyPair]
    matches_own_affinity: bool
    ns_labels: Mapping[str, str] | None
    judged: dict[AffinityTerm, bool]


def _add_existing(into: Counter[TopologyPair], ni: NodeInfo, pod: PodInfo, ns_labels: Mapping[str, str] | None,
                  judged: dict[AffinityTerm, bool], sign: int = 1) -> None:
    """The node's pods' required anti-affinity terms that the incoming pod matches, by domain."""
    if not ni.required_anti_affinity_pods:
        return
    anti, _ = ni.derived("InterPodAffinity/existing", _existing_terms)
    labels = ni.labels
    for term, n in anti.items():
        value = labels.get(term.topology_key)
        if value is None:
            continue
        hit = judged.get(term)
        if hit is None:
            hit = judged[term] = term.matches(pod, ns_labels)
        if hit:
            into[(term.topology_key, value)] += sign * n


def _add_incoming(affinity: Counter[TopologyPair], anti: Counter[TopologyPair], ni: NodeInfo,
                  terms: PodAffinityTerms, sign: int = 1) -> None:
    """The node's pods matching the incoming pod's required terms, by domain
    (for affinity a pod must match every term, as upstream)."""
    if not ni.pod_count:
        return
    labels = ni.labels
    req_aff = terms.required_affinity
    if req_aff:
        n = ni.derived(("InterPodAffinity/all", req_aff), _count_matching_all(req_aff))
        if n:
            for t in req_aff:
                value = labels.get(t.topology_key)
                if value is not None:
                    affinity[(t.topology_key, value)] += sign * n
    for t in terms.required_anti:
        value = labels.get(t.topology_key)
        if value is None:
            continue
        n = ni.derived(("InterPodAffinity/one", t), _count_matching_all((t,)))
        if n:
            anti[(t.topology_key, value)] += sign * n


def _positive(c: Counter[TopologyPair]) -> Counter[TopologyPair]:
    return Counter({k: v for k, v in c.items() if v > 0})


class InterPodAffinity:
    """See the module docstring.  *listers* give namespaces' labels (for
    ``namespaceSelector``); without them a namespaceSelector selects only
    when it is empty (every namespace)."""

    name = "InterPodAffinity"
    _AFFINITY = Status(UNSCHEDULABLE_AND_UNRESOLVABLE, (REASON_AFFINITY_NOT_MATCH,))
    _ANTI = Status(UNSCHEDULABLE, (REASON_ANTI_AFFINITY_NOT_MATCH,))
    _EXISTING = Status(UNSCHEDULABLE, (REASON_EXISTING_ANTI_AFFINITY_NOT_MATCH,))

    def __init__(self, listers: Any = None, *, hard_pod_affinity_weight: int = HARD_POD_AFFINITY_WEIGHT,
                 ignore_preferred_terms_of_existing_pods: bool = False) -> None:
        self.listers = listers
        self._required_anti = NodeSubset(lambda ni: ni.required_anti_affinity_pods)
        self._affinity = NodeSubset(lambda ni: ni.affinity_pods)
        self.hard_weight = hard_pod_affinity_weight
        self.ignore_existing_preferred = ignore_preferred_terms_of_existing_pods

    # -- namespaces -------------------------------------------------------
    def _namespace_labels(self, ns: str) -> Mapping[str, str] | None:
        return self.listers.namespace_labels(ns) if self.listers is not None else None

    def _resolve(self, term: AffinityTerm) -> AffinityTerm:
        """The incoming pod's term with its namespaceSelector turned into
        namespace names (upstream merges them the same way)."""
        sel = term.namespace_selector
        if sel is None:
            return term
        if sel.empty() and not sel.nothing:
            return term  # every namespace: AffinityTerm.matches knows
        names = self.listers.namespaces_matching(sel) if self.listers is not None else set()
        return AffinityTerm(term.namespaces | names, None, term.selector, term.topology_key)

    def _incoming_terms(self, pod: PodInfo) -> PodAffinityTerms:
        def build(p: PodInfo) -> PodAffinityTerms:
            t = pod_affinity_terms(p)
            if t is _EMPTY:
                return t
            return PodAffinityTerms(
                tuple(self._resolve(x) for x in t.required_affinity),
                tuple(self._resolve(x) for x in t.required_anti),
                tuple((self._resolve(x), w) for x, w in t.preferred_affinity),
                tuple((self._resolve(x), w) for x, w in t.preferred_anti))
        return pod.cached("InterPodAffinity/incoming", build)

    # -- filter -------------------------------------------------------------
    def pre_filter_nodes(self, pod: PodInfo, node_infos: Sequence[NodeInfo]) -> bool:
        terms = self._incoming_terms(pod)
        existing: Counter[TopologyPair] = Counter()
        ns_labels = self._namespace_labels(pod.namespace)
        judged: dict[AffinityTerm, bool] = {}
        for ni in self._required_anti.of(node_infos):
            _add_existing(existing, ni, pod, ns_labels, judged)
        affinity: Counter[TopologyPair] = Counter()
        anti: Counter[TopologyPair] = Counter()
        if terms.required_affinity or terms.required_anti:
            for ni in node_infos:
                if ni.pod_count:
                    _add_incoming(affinity, anti, ni, terms)
        elif not existing:
            pod.remember("InterPodAffinity/filter", None)
            return False
        own = bool(terms.required_affinity) and all(t.matches(pod) for t in terms.required_affinity)
        pod.remember("InterPodAffinity/filter",
                     _FilterState(terms, affinity, anti, existing, own, ns_labels, judged))
        return True

    def filter(self, pod: PodInfo, node_info: NodeInfo) -> Status:
        return self._check(pod.recall("InterPodAffinity/filter"), node_info.labels)

    def filter_simulated(self, pod: PodInfo, original: NodeInfo, sim: NodeInfo) -> Status:
        """The filter on *sim*, a copy of *original* with pods removed or
        added (preemption), from this cycle's counts adjusted by the
        difference (upstream's PreFilterExtensions AddPod/RemovePod)."""
        try:
            state: _FilterState | None = pod.recall("InterPodAffinity/filter")
        except KeyError:
            return self._simulate_alone(pod, sim)
        if state is None:
            state = _FilterState(self._incoming_terms(pod), Counter(), Counter(), Counter(), False,
                                 self._namespace_labels(pod.namespace), {})
        existing, affinity, anti = Counter(state.existing_anti_counts), Counter(state.affinity_counts), \
            Counter(state.anti_counts)
        for ni, sign in ((original, -1), (sim, 1)):
            _add_existing(existing, ni, pod, state.ns_labels, state.judged, sign)
            _add_incoming(affinity, anti, ni, state.terms, sign)
        adjusted = _FilterState(state.terms, _positive(affinity), _positive(anti), _positive(existing),
                                state.matches_own_affinity, state.ns_labels, state.judged)
        return self._check(adjusted, sim.labels)

    def _simulate_alone(self, pod: PodInfo, sim: NodeInfo) -> Status:
        # No cycle ran for this pod: judge the node on its own.
        if self.pre_filter_nodes(pod, [sim]):
            return self.filter(pod, sim)
        return OK

    def _check(self, state: _FilterState | None, labels: Mapping[str, str]) -> Status:
        if state is None:
            return OK
        if state.terms.required_affinity:
            pods_exist = True
            for t in state.terms.required_affinity:
                value = labels.get(t.topology_key)
                if value is None:
                    return self._AFFINITY  # every topology label must exist on the node
                if state.affinity_counts[(t.topology_key, value)] <= 0:
                    pods_exist = False
            # No pod anywhere matches: the first pod of a group matching its
            # own terms may go anywhere that has the labels.
            if not pods_exist and not (not state.affinity_counts and state.matches_own_affinity):
                return self._AFFINITY
        if state.anti_counts:
            for t in state.terms.required_anti:
                value = labels.get(t.topology_key)
                if value is not None and state.anti_counts[(t.topology_key, value)] > 0:
                    return self._ANTI
        existing = state.existing_anti_counts
        if existing:
            for key, value in labels.items():
                if existing.get((key, value), 0) > 0:
                    return self._EXISTING
        return OK

    # -- score --------------------------------------------------------------
    def pre_score(self, pod: PodInfo, ctx: SchedulingContext) -> bool:
        terms = self._incoming_terms(pod)
        has_preferred = bool(terms.preferred_affinity or terms.preferred_anti)
        nodes = ctx.node_infos if has_preferred else list(self._affinity.of(ctx.node_infos))
        if not nodes:
            return False
        score: Counter[TopologyPair] = Counter()
        ns_labels = self._namespace_labels(pod.namespace)
        judged: dict[AffinityTerm, bool] = {}
        preferred = [(1, t, w, ("InterPodAffinity/one", t), _count_matching_all((t,)))
                     for t, w in terms.preferred_affinity]
        preferred += [(-1, t, w, ("InterPodAffinity/one", t), _count_matching_all((t,)))
                      for t, w in terms.preferred_anti]
        for ni in nodes:
            labels = ni.labels
            if not labels or not ni.pod_count:
                continue
            for sign, t, w, key, build in preferred:
                value = labels.get(t.topology_key)
                if value is None:
                    continue
                n = ni.derived(key, build)
                if n:
                    score[(t.topology_key, value)] += sign * w * n
            if ni.affinity_pods:
                _, scoring = ni.derived("InterPodAffinity/existing", _existing_terms)
                for (sign, t, w), n in scoring.items():
                    if w == _HARD:
                        w = self.hard_weight
                    elif self.ignore_existing_preferred:
                        continue
                    value = labels.get(t.topology_key)
                    if value is None:
                        continue
                    hit = judged.get(t)
                    if hit is None:
                        hit = judged[t] = t.matches(pod, ns_labels)
                    if hit:
                        score[(t.topology_key, value)] += sign * w * n
        score = Counter({k: v for k, v in score.items() if v})
        if not score:
            return False
        by_key: dict[str, dict[str, int]] = {}
        for (k, v), s in score.items():
            by_key.setdefault(k, {})[v] = s
        pod.remember("InterPodAffinity/score", by_key)
        return True

    def score(self, pod: PodInfo, node_info: NodeInfo, ctx: SchedulingContext) -> int:
        by_key: dict[str, dict[str, int]] = pod.recall("InterPodAffinity/score")
        labels = node_info.labels
        total = 0
        for key, values in by_key.items():
            value = labels.get(key)
            if value is not None:
                total += values.get(value, 0)
        return total

    def normalize(self, scores: list[int]) -> list[int]:
        lo, hi = min(scores, default=0), max(scores, default=0)
        if hi - lo <= 0:
            return [0] * len(scores)
        return [int(MAX_NODE_SCORE * ((s - lo) / (hi - lo))) for s in scores]
