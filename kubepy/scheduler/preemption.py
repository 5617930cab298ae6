"""Preemption (kube-scheduler's DefaultPreemption PostFilter), as pure functions.

When a pod fits nowhere, ``find_candidate`` looks for a node where evicting
pods of lower priority would make it fit, and the fewest, least important
victims to evict there:

1. Only nodes a filter rejected as ``Unschedulable`` are tried
   (``UnschedulableAndUnresolvable`` — a taint, a selector — no eviction
   can fix).
2. On each, every lower-priority pod is removed; if the pod still does not
   fit, the node is out. Then victims are *reprieved* one by one, most
   important first (higher priority, then earlier start): a victim whose
   return keeps the pod fitting stays. Pods whose eviction would violate a
   PodDisruptionBudget are reprieved first, as upstream does, so a budget is
   broken only when nothing else makes room.
3. Among candidate nodes the winner has, in order: the fewest budget
   violations, the lowest highest-victim priority, the lowest sum of victim
   priorities, the fewest victims, the latest start among its
   highest-priority victims; then the first.

The scheduler then deletes the victims (gracefully), records
``status.nominatedNodeName`` on the preemptor and retries it when they are
gone; meanwhile pods of lower or equal priority see the preemptor as if it
were already on that node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubepy.meta.selectors import label_selector_from_dict
from kubepy.scheduler.framework import (
    OK,
    SUCCESS,
    UNSCHEDULABLE,
    FilterPlugin,
    NodeInfo,
    PodInfo,
    Status,
)

NO_VICTIMS = "No preemption victims found for incoming pod"
NOT_HELPFUL = "Preemption is not helpful for scheduling"
MAX_INT32 = 2 ** 31 - 1


@dataclass
class Candidate:
    node: str
    victims: list[PodInfo] = field(default_factory=list)
    pdb_violations: int = 0


def eligible(pod: PodInfo, node_infos: Mapping[str, NodeInfo]) -> str | None:
    """None if ``pod`` may preempt now, else why not (upstream's PodEligibleToPreemptOthers)."""
    if (pod.spec.get("preemptionPolicy") or "PreemptLowerPriority") == "Never":
        return "not eligible due to preemptionPolicy=Never."
    nominated = (pod.pod.get("status") or {}).get("nominatedNodeName")
    info = node_infos.get(nominated or "")
    if info is not None:
        # Victims chosen last time are still leaving: wait for them rather than evict more.
        if any(p.is_terminating and p.priority < pod.priority for p in info.pod_infos):
            return "not eligible due to a terminating pod on the nominated node."
    return None


def fits(pod: PodInfo, node_info: NodeInfo, filters: Sequence[FilterPlugin],
         original: NodeInfo | None = None) -> bool:
    """Whether *pod* fits *node_info* (a simulation of *original*).  Plugins
    whose state spans the cluster (inter-pod affinity, topology spread)
    judge it with ``filter_simulated``."""
    for plugin in filters:
        simulated = getattr(plugin, "filter_simulated", None)
        if simulated is not None:
            if not simulated(pod, original or node_info, node_info).is_success():
                return False
            continue
        pre = getattr(plugin, "pre_filter", None)
        if pre is not None and not pre(pod):
            continue
        status = plugin.filter(pod, node_info)
        if status is not OK and status.code != SUCCESS:
            return False
    return True


def _start_time(p: PodInfo) -> str:
    return str((p.pod.get("status") or {}).get("startTime") or p.metadata.get("creationTimestamp") or "")


def _more_important_first(pods: list[PodInfo]) -> list[PodInfo]:
    """Higher priority first; among equals, the one that started earlier (upstream's MoreImportantPod)."""
    return sorted(pods, key=lambda p: (-p.priority, _start_time(p) or "~"))


def _split_by_budget(pods: list[PodInfo], pdbs: Sequence[Mapping[str, Any]]) -> tuple[list[PodInfo], list[PodInfo]]:
    """(pods whose eviction would violate a budget, the others), as upstream's filterPodsWithPDBViolation."""
    allowed = [int((b.get("status") or {}).get("disruptionsAllowed") or 0) for b in pdbs]
    violating, fine = [], []
    for p in pods:
        ns, labels = p.metadata.get("namespace"), p.metadata.get("labels") or {}
        breaks = False
        for i, b in enumerate(pdbs):
            meta, spec = b.get("metadata") or {}, b.get("spec") or {}
            selector = spec.get("selector")
            if meta.get("namespace") != ns or not selector or not (selector.get("matchLabels") or
                                                                    selector.get("matchExpressions")):
                continue
            try:
                if not label_selector_from_dict(selector).matches(labels):
                    continue
            except ValueError:
                continue
            if p.metadata.get("name") in ((b.get("status") or {}).get("disruptedPods") or {}):
                continue  # already counted as disrupted by an eviction in flight
            allowed[i] -= 1
            if allowed[i] < 0:
                breaks = True
        (violating if breaks else fine).append(p)
    return violating, fine


def select_victims(pod: PodInfo, node_info: NodeInfo, filters: Sequence[FilterPlugin],
                   pdbs: Sequence[Mapping[str, Any]] = ()) -> Candidate | None:
    lower = [p for p in node_info.pod_infos if p.priority < pod.priority]
    if not lower:
        return None
    sim = node_info.clone()
    for p in lower:
        sim.remove_pod(p)
    if not fits(pod, sim, filters, node_info):
        return None
    violating, fine = _split_by_budget(_more_important_first(lower), pdbs)
    cand = Candidate(node_info.name)

    def reprieve(p: PodInfo) -> bool:
        sim.add_pod(p)
        if fits(pod, sim, filters, node_info):
            return True
        sim.remove_pod(p)
        cand.victims.append(p)
        return False

    for p in violating:
        if not reprieve(p):
            cand.pdb_violations += 1
    for p in fine:
        reprieve(p)
    return cand if cand.victims else None


def _rank(c: Candidate) -> tuple:
    top = max(v.priority for v in c.victims)
    total = sum(v.priority + MAX_INT32 + 1 for v in c.victims)
    latest_top_start = max((_start_time(v) for v in c.victims if v.priority == top), default="")
    # Lower is better for all but the start time, where later is better: negate by inverting the string order.
    return (c.pdb_violations, top, total, len(c.victims), _Later(latest_top_start))


class _Later(str):
    """Sorts later timestamps first."""

    def __lt__(self, other: str) -> bool:  # type: ignore[override]
        return str.__gt__(self, other)


def find_candidate(pod: PodInfo, node_infos: Sequence[NodeInfo], statuses: Mapping[str, Status],
                   filters: Sequence[FilterPlugin], pdbs: Sequence[Mapping[str, Any]] = ()
                   ) -> tuple[Candidate | None, dict[str, str]]:
    """The node to preempt on and its victims (None if none), and a verdict per node for the message."""
    verdicts: dict[str, str] = {}
    candidates: list[Candidate] = []
    for info in node_infos:
        st = statuses.get(info.name)
        if st is None:
            continue  # it fit (the cycle stopped early) — not a preemption question
        if st.code != UNSCHEDULABLE:
            verdicts[info.name] = NOT_HELPFUL
            continue
        cand = select_victims(pod, info, filters, pdbs)
        if cand is None:
            verdicts[info.name] = NO_VICTIMS
        else:
            candidates.append(cand)
    if not candidates:
        return None, verdicts
    return min(candidates, key=_rank), verdicts
