"""Node columns: what the common filters and scorers read about every node, as arrays.

``schedule_one`` over 5,000 nodes examines 500 of them per pod
(percentageOfNodesToScore); calling four filters and three scorers per node
in Python is most of a pod's scheduling cost there.  ``NodeColumns`` keeps
the figures those plugins read (allocatable, requested, non-zero requested,
pod counts, and whether the node is plainly schedulable) in numpy arrays in
the node list's order, current from the framework's JOURNAL as NodeInfos
change, so a plugin that offers ``filter_columns``/``score_columns`` judges
every node in a few array operations.

The arrays only ever decide what is certain: a column filter's mask says
"this node surely passes"; a node it does not vouch for is judged by the
plugins' own ``filter`` as before, so statuses and messages stay exactly
what the per-node path gives.  Column scores equal the per-node scores to
the last integer (the same integer and float64 operations, in the same
order); a plugin returns None where it cannot promise that (extended
resources, figures too large for exact int64/float64 arithmetic) and is
scored per node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kubepy.scheduler import framework
from kubepy.scheduler.framework import MAX_NODE_SCORE, OK, SUCCESS, NodeInfo, PodInfo, Status

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["NodeColumns", "least_requested", "balanced"]

# Filter effects: a node with a taint of these needs the per-node check.
_HARD_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
# Beyond these, products (×100) or float64 conversions stop being exact.
EXACT_INT = 2**62 // MAX_NODE_SCORE
EXACT_FLOAT = 2**53


def least_requested(requested: NDArray[np.int64], capacity: NDArray[np.int64]) -> NDArray[np.int64]:
    """plugins._least_requested over arrays: (capacity - requested) × 100 // capacity, 0 when it does not fit."""
    out = np.zeros(len(requested), dtype=np.int64)
    fits = (capacity != 0) & (requested <= capacity)
    np.floor_divide((capacity - requested) * MAX_NODE_SCORE, capacity, out=out, where=fits)
    return out


def balanced(cpu_used: NDArray[np.int64], cpu_cap: NDArray[np.int64],
             mem_used: NDArray[np.int64], mem_cap: NDArray[np.int64]) -> NDArray[np.int64] | None:
    """BalancedAllocation over arrays, as the per-node score computes it in float64; None when a
    figure is too large to convert exactly (the per-node division is exact over integers)."""
    if max(int(np.abs(a).max(initial=0)) for a in (cpu_used, cpu_cap, mem_used, mem_cap)) >= EXACT_FLOAT:
        return None
    zero = (cpu_cap == 0) | (mem_cap == 0)
    cpu = np.minimum(1.0, cpu_used / np.where(zero, 1, cpu_cap))
    mem = np.minimum(1.0, mem_used / np.where(zero, 1, mem_cap))
    score = ((1 - np.abs(cpu - mem) / 2) * MAX_NODE_SCORE).astype(np.int64)
    return np.where(zero, MAX_NODE_SCORE, score)


class NodeColumns:
    """Arrays over one node list, kept current from JOURNAL (see the module docstring)."""

    def __init__(self) -> None:
        self.node_list: Sequence[NodeInfo] | None = None  # held, so its id is not reused
        self.seen = 0
        self.position: dict[str, int] = {}
        self.size = 0

    def of(self, node_infos: Sequence[NodeInfo]) -> NodeColumns | None:
        """The columns of *node_infos*: rebuilt for a new list (or one grown in place), else only the
        nodes that changed. None for a list with copies made to simulate on: their changes are not
        journaled, so the per-node path must judge them."""
        journal = framework.JOURNAL  # looked up each time: a test may give the framework another one
        same = self.node_list is node_infos and len(node_infos) == self.size
        changed = journal.since(self.seen) if same else None
        if changed is None:
            if not all(ni.journaled for ni in node_infos):
                self.node_list = None
                return None
            self._build(node_infos)
        else:
            for ni in changed:
                i = self.position.get(ni.name)
                if i is not None and node_infos[i] is ni:
                    self._set(i, ni)
        self.node_list, self.seen = node_infos, journal.last
        return self

    def _build(self, node_infos: Sequence[NodeInfo]) -> None:
        n = self.size = len(node_infos)
        self.position = {ni.name: i for i, ni in enumerate(node_infos)}
        self.arange = np.arange(n)
        for name in ("alloc_cpu", "alloc_mem", "req_cpu", "req_mem", "nz_cpu", "nz_mem", "pods", "allowed"):
            setattr(self, name, np.zeros(n, dtype=np.int64))
        self.schedulable = np.zeros(n, dtype=bool)   # spec.unschedulable unset
        self.ready = np.zeros(n, dtype=bool)         # Ready is True
        self.untainted = np.zeros(n, dtype=bool)     # no NoSchedule/NoExecute taint
        self.tainted = np.zeros(n, dtype=bool)       # any taint at all (scoring looks at PreferNoSchedule)
        self.big = np.zeros(n, dtype=bool)           # a figure beyond exact array arithmetic
        for i, ni in enumerate(node_infos):
            self._set(i, ni)

    def _set(self, i: int, ni: NodeInfo) -> None:
        alloc = ni.allocatable
        figures = (alloc.milli_cpu, alloc.memory, ni.requested_milli_cpu, ni.requested_memory,
                   ni.non_zero_milli_cpu, ni.non_zero_memory)
        self.big[i] = big = any(abs(v) >= EXACT_INT for v in figures)
        if not big:
            (self.alloc_cpu[i], self.alloc_mem[i], self.req_cpu[i], self.req_mem[i],
             self.nz_cpu[i], self.nz_mem[i]) = figures
        self.pods[i] = ni.pod_count
        self.allowed[i] = min(ni.allowed_pods, EXACT_INT)
        self.schedulable[i] = not ni.unschedulable
        self.ready[i] = ni.ready == "True"
        self.untainted[i] = not any(t.effect in _HARD_EFFECTS for t in ni.taints)
        self.tainted[i] = bool(ni.taints)

    def feasible(self, pod: PodInfo, plugins: Sequence[Any], start: int, enough: int,
                 statuses: dict[str, Status]) -> tuple[NDArray[np.intp], int] | None:
        """The filter loop of ``schedule_one`` over the columns: the positions of the first *enough*
        feasible nodes counting from *start* (wrapping), and how many nodes that examined. A node no
        column mask vouches for is judged by the plugins' own filters, and the rejected ones among
        those examined get their statuses, exactly as the per-node loop does. None if a plugin has no
        column filter (or none for this pod)."""
        masks = []
        for plugin in plugins:
            by_columns = getattr(plugin, "filter_columns", None)
            mask = by_columns(pod, self) if by_columns is not None else None
            if mask is None:
                return None
            masks.append(mask)
        n = self.size
        order = self.arange if start == 0 else np.roll(self.arange, -start)
        if not masks:
            return order[:enough], min(enough, n)
        sure = np.logical_and.reduce(masks)[order]  # in examination order
        if sure.all():
            return order[:enough], min(enough, n)
        sure_before = np.cumsum(sure)  # sure_before[k]: vouched nodes at positions 0..k
        passed: list[int] = []  # positions of nodes not vouched for that pass every filter
        checks = [plugin.filter for plugin in plugins]
        for k in np.flatnonzero(~sure).tolist():
            if (sure_before[k - 1] if k else 0) + len(passed) >= enough:
                break  # enough nodes fit before this one: the loop would not have looked at it
            node_info = self.node_list[order[k]]  # type: ignore[index]
            for check in checks:
                status = check(pod, node_info)
                if status is not OK and status.code != SUCCESS:
                    statuses[node_info.name] = status
                    break
            else:
                passed.append(k)
        positions = np.flatnonzero(sure)
        if passed:
            positions = np.sort(np.concatenate([positions, np.array(passed, dtype=positions.dtype)]))
        if len(positions) >= enough:
            positions = positions[:enough]
            return order[positions], int(positions[-1]) + 1
        return order[positions], n

    def exact(self, idx: NDArray[np.intp], *more: int) -> bool:
        """Whether the nodes at *idx*, with the pod's figures *more* added, stay within exact arithmetic."""
        if self.big[idx].any() or any(abs(v) >= EXACT_INT for v in more):
            return False
        return True

    # The array operations framework and plugins need, here so that only this module imports numpy.
    @staticmethod
    def zeros(n: int) -> NDArray[np.int64]:
        return np.zeros(n, dtype=np.int64)

    @staticmethod
    def ints(values: Sequence[int]) -> NDArray[np.int64]:
        return np.asarray(values, dtype=np.int64)

    @staticmethod
    def where(mask: NDArray[np.bool_]) -> list[int]:
        """The positions where *mask* is true."""
        return np.flatnonzero(mask).tolist()

    @staticmethod
    def argmaxes(values: NDArray[np.int64]) -> list[int]:
        """The positions of the greatest value, in order."""
        return np.flatnonzero(values == values.max()).tolist()

    # The plugins' scores over arrays, reached through the columns they are given.
    least_requested = staticmethod(least_requested)
    balanced = staticmethod(balanced)
