"""Scheduling framework: the pure decision core of kubepy's kube-scheduler.

``schedule_one`` takes one pending pod and a ``NodeInfo`` per node and returns
a ``ScheduleResult``: the chosen node, or why none fits, worded exactly as
Kubernetes' ``FailedScheduling`` event.  It follows the kube-scheduler
framework's cycle:

1. **filter** — every ``FilterPlugin`` judges every node; the first plugin
   that rejects a node decides that node's ``Status`` (Kubernetes stops there
   too, so one node contributes one set of reasons to the message);
2. **score** — every ``ScorePlugin`` scores the feasible nodes, normalises
   its scores to 0..100 over them, and is multiplied by its weight;
3. **select** — the highest total wins; ties are broken at random.

Everything here works on plain dicts (Pod and Node JSON as the API returns
them) and talks to nothing: the scheduler loop owns the informers, keeps one
``NodeInfo`` per node current with ``add_pod``/``remove_pod`` (assuming a pod
onto its node as soon as it decides, before the bind lands) and binds.

Facts a plugin needs about the pod are derived once per pod, not once per
node: ``PodInfo`` computes them lazily and caches them, and a plugin's
optional ``pre_filter``/``pre_score`` lets it opt out for a pod it has
nothing to say about (Kubernetes' PreFilter/PreScore "Skip").  This keeps
``schedule_one`` over 500 nodes to a few milliseconds; with Kubernetes'
percentageOfNodesToScore (``max_feasible``/``start``) about half that.
"""

from __future__ import annotations

import itertools
import operator
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, NamedTuple, Protocol, TypeVar

from kubepy.meta.quantity import bytes_value, cpu_millis

__all__ = [
    "SUCCESS",
    "UNSCHEDULABLE",
    "UNSCHEDULABLE_AND_UNRESOLVABLE",
    "MAX_NODE_SCORE",
    "DEFAULT_MILLI_CPU_REQUEST",
    "DEFAULT_MEMORY_REQUEST",
    "Status",
    "OK",
    "Taint",
    "Toleration",
    "tolerates",
    "Resources",
    "PodInfo",
    "NodeInfo",
    "pod_requests",
    "FilterPlugin",
    "ScorePlugin",
    "SchedulingContext",
    "ScheduleResult",
    "schedule_one",
    "num_feasible_nodes_to_find",
    "default_filters",
    "default_scorers",
]

Obj = Mapping[str, Any]  # a Pod or Node as the API returns it

SUCCESS = "Success"
UNSCHEDULABLE = "Unschedulable"
# Kubernetes' code for "no preemption on this node could help".
UNSCHEDULABLE_AND_UNRESOLVABLE = "UnschedulableAndUnresolvable"

MAX_NODE_SCORE = 100
# Scoring charges a container that requests nothing as if it asked for this
# much (Kubernetes' NonZeroRequested), so best-effort pods still spread out.
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024
DEFAULT_ALLOWED_PODS = 110

# Kubernetes' floor for percentageOfNodesToScore.
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5

NO_NODES_MESSAGE = "no nodes available to schedule pods"
_NOT_HELPFUL = "Preemption is not helpful for scheduling"
_NO_VICTIMS = "No preemption victims found for incoming pod"


# ---------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """A filter's verdict on one node.  Reasons are what users read in the
    event, so they are Kubernetes' exact strings; a tuple so that plugins can
    share one constant status across nodes."""

    code: str = SUCCESS
    reasons: tuple[str, ...] = ()

    def is_success(self) -> bool:
        return self.code == SUCCESS


OK = Status()


# ---------------------------------------------------------------------------
# resources
# ---------------------------------------------------------------------------

# Quantities repeat endlessly ("100m", "128Mi"); exact Decimal parsing is the
# costly part of building a PodInfo, so identical strings are parsed once.
_milli = lru_cache(maxsize=4096)(cpu_millis)
_value = lru_cache(maxsize=4096)(bytes_value)


@dataclass(frozen=True, slots=True)
class Resources:
    """Milli-CPU, memory bytes, and every other resource by name (its integral
    value: ephemeral-storage, hugepages-*, extended resources)."""

    milli_cpu: int = 0
    memory: int = 0
    scalars: Mapping[str, int] = field(default_factory=dict)

    def is_zero(self) -> bool:
        return not self.milli_cpu and not self.memory and not any(self.scalars.values())


def _add_into(total: dict[str, int], reqs: Mapping[str, int], sign: int = 1) -> None:
    for name, value in reqs.items():
        total[name] = total.get(name, 0) + sign * value


def _max_into(total: dict[str, int], reqs: Mapping[str, int]) -> None:
    for name, value in reqs.items():
        if value > total.get(name, 0):
            total[name] = value


def _container_requests(container: Obj, non_zero: bool) -> dict[str, int]:
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    # API defaulting copies a limit into an absent request; pods built
    # without that defaulting must be judged the same way.
    requests = {**limits, **(resources.get("requests") or {})}
    out: dict[str, int] = {}
    for name, q in requests.items():
        out[name] = _milli(q) if name == "cpu" else _value(q)
    if non_zero:
        # Only a missing request gets the default, an explicit 0 stays 0.
        out.setdefault("cpu", DEFAULT_MILLI_CPU_REQUEST)
        out.setdefault("memory", DEFAULT_MEMORY_REQUEST)
    return out


def _pod_request_map(pod: Obj, *, non_zero: bool = False) -> dict[str, int]:
    """Kubernetes' PodRequests: the pod needs the larger of what its
    containers need together and what any init step needs, plus overhead.

    Restartable init containers (sidecars) keep running, so they add to the
    containers' sum and to every later init container's peak.
    """
    spec = pod.get("spec") or {}
    total: dict[str, int] = {}
    for c in spec.get("containers") or ():
        _add_into(total, _container_requests(c, non_zero))
    init_peak: dict[str, int] = {}
    sidecars: dict[str, int] = {}
    for c in spec.get("initContainers") or ():
        reqs = _container_requests(c, non_zero)
        if c.get("restartPolicy") == "Always":
            _add_into(total, reqs)
            _add_into(sidecars, reqs)
            step = dict(sidecars)
        else:
            step = dict(reqs)
            _add_into(step, sidecars)
        _max_into(init_peak, step)
    _max_into(total, init_peak)
    overhead = spec.get("overhead") or {}
    if overhead:
        _add_into(total, {n: _milli(q) if n == "cpu" else _value(q) for n, q in overhead.items()})
    return total


def _as_resources(reqs: Mapping[str, int]) -> Resources:
    rest = {n: v for n, v in reqs.items() if n not in ("cpu", "memory")}
    # Kubernetes reports ephemeral-storage right after memory; the rest in a
    # stable order so messages do not change between runs.
    order = sorted(rest, key=lambda n: (n != "ephemeral-storage", n))
    return Resources(reqs.get("cpu", 0), reqs.get("memory", 0), {n: rest[n] for n in order})


def pod_requests(pod: Obj, *, non_zero: bool = False) -> tuple[int, int]:
    """``(milli_cpu, memory_bytes)`` the pod requests, as filtering sees it.

    ``non_zero=True`` gives what scoring charges instead: containers that
    request no cpu or memory count 100m / 200Mi.
    """
    reqs = _pod_request_map(pod, non_zero=non_zero)
    return reqs.get("cpu", 0), reqs.get("memory", 0)


# ---------------------------------------------------------------------------
# taints and tolerations
# ---------------------------------------------------------------------------


class Taint(NamedTuple):
    key: str
    value: str
    effect: str


class Toleration(NamedTuple):
    key: str
    operator: str
    value: str
    effect: str

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes' ToleratesTaint: an empty effect matches every effect,
        an empty key (only valid with Exists) matches every key."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        if self.operator in ("", "Equal"):
            return self.value == taint.value
        return False


def tolerates(tolerations: Iterable[Toleration], taint: Taint) -> bool:
    return any(t.tolerates(taint) for t in tolerations)


# ---------------------------------------------------------------------------
# pods
# ---------------------------------------------------------------------------

T = TypeVar("T")


class PodInfo:
    """A pod and the facts plugins need about it, each derived at most once.

    Reuse one PodInfo for a pod across the scheduling attempt and the
    ``NodeInfo.add_pod`` that assumes it, so its quantities parse once.
    Plugins keep their own derived state with ``cached(key, build)``.
    """

    def __init__(self, pod: Obj) -> None:
        self.pod = pod
        self._memo: dict[str, Any] = {}

    @cached_property
    def metadata(self) -> Obj:
        return self.pod.get("metadata") or {}

    @cached_property
    def spec(self) -> Obj:
        return self.pod.get("spec") or {}

    @cached_property
    def key(self) -> str:
        """Identity within a NodeInfo: the uid, else namespace/name."""
        uid = self.metadata.get("uid")
        if uid:
            return str(uid)
        return f"{self.metadata.get('namespace') or ''}/{self.metadata.get('name') or ''}"

    @cached_property
    def requests(self) -> Resources:
        return _as_resources(_pod_request_map(self.pod))

    @cached_property
    def non_zero_requests(self) -> tuple[int, int]:
        reqs = _pod_request_map(self.pod, non_zero=True)
        return reqs.get("cpu", 0), reqs.get("memory", 0)

    @cached_property
    def tolerations(self) -> tuple[Toleration, ...]:
        return tuple(
            Toleration(t.get("key") or "", t.get("operator") or "", t.get("value") or "", t.get("effect") or "")
            for t in self.spec.get("tolerations") or ()
        )

    @cached_property
    def host_ports(self) -> tuple[tuple[str, str, int], ...]:
        """``(hostIP, protocol, hostPort)`` for every port bound on the host,
        defaulted as the API does (0.0.0.0, TCP; hostNetwork: the container
        port)."""
        host_network = bool(self.spec.get("hostNetwork"))
        containers = [c for c in self.spec.get("initContainers") or () if c.get("restartPolicy") == "Always"]
        containers += list(self.spec.get("containers") or ())
        ports = []
        for c in containers:
            for p in c.get("ports") or ():
                port = p.get("hostPort") or (p.get("containerPort") if host_network else 0)
                if port and int(port) > 0:
                    ports.append((p.get("hostIP") or "0.0.0.0", p.get("protocol") or "TCP", int(port)))
        return tuple(ports)

    @cached_property
    def controller_uid(self) -> str | None:
        for ref in self.metadata.get("ownerReferences") or ():
            if ref.get("controller"):
                return ref.get("uid")
        return None

    @cached_property
    def is_terminating(self) -> bool:
        return bool(self.metadata.get("deletionTimestamp"))

    @cached_property
    def priority(self) -> int:
        """``spec.priority`` as Priority admission set it (0 when absent)."""
        return int(self.spec.get("priority") or 0)

    @cached_property
    def labels(self) -> Mapping[str, str]:
        return self.metadata.get("labels") or {}

    @cached_property
    def namespace(self) -> str:
        return self.metadata.get("namespace") or ""

    @cached_property
    def pod_affinity(self) -> tuple[bool, bool]:
        """``(has any podAffinity/podAntiAffinity, has required anti-affinity)``:
        which pods the InterPodAffinity plugin must look at on a node."""
        affinity = self.spec.get("affinity") or {}
        anti = affinity.get("podAntiAffinity") or {}
        has_any = bool(affinity.get("podAffinity") or anti)
        return has_any, bool(anti.get("requiredDuringSchedulingIgnoredDuringExecution"))

    def remember(self, key: str, value: Any) -> None:
        """Keep per-attempt plugin state (PreFilter/PreScore results)."""
        self._memo[key] = value

    def recall(self, key: str) -> Any:
        return self._memo[key]

    def cached(self, key: str, build: Callable[[PodInfo], T]) -> T:
        try:
            return self._memo[key]  # type: ignore[no-any-return]
        except KeyError:
            value = self._memo[key] = build(self)
            return value


def _pod_info(pod: Obj | PodInfo) -> PodInfo:
    return pod if isinstance(pod, PodInfo) else PodInfo(pod)


# ---------------------------------------------------------------------------
# nodes
# ---------------------------------------------------------------------------


_GENERATIONS = itertools.count(1)


class _Journal:
    """The NodeInfos that changed, by generation: a cache spanning every node
    (topology spread's domain counts) catches up on the few that moved since
    its last look instead of visiting them all.  Bounded: a cache that fell
    further behind than it reaches learns so (``since`` answers None) and
    rescans.  Copies made to simulate on (``clone``) are not recorded."""

    LIMIT = 16384

    def __init__(self) -> None:
        self.entries: deque[tuple[int, NodeInfo]] = deque()
        self.dropped = 0  # the newest generation no longer here
        self.last = 0

    def record(self, info: NodeInfo) -> None:
        self.entries.append((info.generation, info))
        self.last = info.generation
        if len(self.entries) > self.LIMIT:
            self.dropped = self.entries.popleft()[0]

    def since(self, generation: int) -> list[NodeInfo] | None:
        if generation < self.dropped:
            return None
        out = []
        for gen, info in reversed(self.entries):
            if gen <= generation:
                break
            out.append(info)
        return out


JOURNAL = _Journal()


class NodeSubset:
    """The nodes of a node list for which *pred* holds (say, those with
    pods that have required anti-affinity), kept current from JOURNAL so a
    plugin need not visit every node for every pod.  Order is not kept."""

    def __init__(self, pred: Callable[[NodeInfo], Any]) -> None:
        self.pred = pred
        self.node_list: Sequence[NodeInfo] | None = None  # held, so its id is not reused
        self.seen = 0
        self.members: dict[str, NodeInfo] = {}
        self.chosen: dict[str, NodeInfo] = {}

    def of(self, node_infos: Sequence[NodeInfo]) -> Iterable[NodeInfo]:
        changed = JOURNAL.since(self.seen) if self.node_list is node_infos else None
        if changed is None:
            self.members = {ni.name: ni for ni in node_infos}
            self.chosen = {ni.name: ni for ni in node_infos if self.pred(ni)}
        else:
            for ni in changed:
                if self.members.get(ni.name) is ni:
                    if self.pred(ni):
                        self.chosen[ni.name] = ni
                    else:
                        self.chosen.pop(ni.name, None)
        self.node_list, self.seen = node_infos, JOURNAL.last
        return self.chosen.values()

# Moves whenever any node's image list changes: ImageLocality's per-image node
# counts are kept until it (or the node list) does.
IMAGES_VERSION = 0


def _decrement(counter: Counter[Any], key: Any, by: int = 1) -> None:
    # Zero entries must go: membership tests mean "someone uses this".
    left = counter[key] - by
    if left > 0:
        counter[key] = left
    else:
        del counter[key]


def _image_sizes(images: Iterable[Obj]) -> dict[str, int]:
    from kubepy.meta.images import normalize_image_ref

    sizes: dict[str, int] = {}
    for image in images:
        size = int(image.get("sizeBytes") or 0)
        for name in image.get("names") or ():
            sizes[normalize_image_ref(name)] = size
    return sizes


def _ready_status(node: Obj) -> str:
    for cond in (node.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Ready":
            return str(cond.get("status") or "Unknown")
    return ""


@dataclass(eq=False)
class NodeInfo:
    """A node and the running totals of the pods assigned to it.

    Totals stay exact under any sequence of ``add_pod``/``remove_pod``:
    ``remove_pod`` subtracts what the stored copy added, whatever the caller
    passes.  The caller decides which pods count; like kube-scheduler's
    informer it should leave out Succeeded and Failed pods.
    """

    node: Obj
    name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    unschedulable: bool = False
    ready: str = ""  # the Ready condition's status; "" when it has none
    taints: tuple[Taint, ...] = ()
    allocatable: Resources = field(default_factory=Resources)
    allowed_pods: int = DEFAULT_ALLOWED_PODS
    pod_count: int = 0
    requested_milli_cpu: int = 0
    requested_memory: int = 0
    requested_scalars: dict[str, int] = field(default_factory=dict)
    non_zero_milli_cpu: int = 0
    non_zero_memory: int = 0
    used_ports: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    controller_counts: Counter[str] = field(default_factory=Counter)
    # Pods with pod (anti-)affinity, and with required anti-affinity (upstream's
    # PodsWithAffinity / PodsWithRequiredAntiAffinity), as counts: plugins skip
    # nodes where they are 0.
    affinity_pods: int = 0
    required_anti_affinity_pods: int = 0
    # The node's images from status.images: normalized name -> size in bytes.
    images: Mapping[str, int] = field(default_factory=dict)
    _derived: dict[Any, Any] = field(default_factory=dict, repr=False)
    # A new process-wide number whenever the node or its pods change: caches
    # spanning many nodes (topology spread's domain counts) redo only the
    # nodes that moved, and a node re-created under the same name never
    # looks unchanged.
    generation: int = 0
    _ports_any_ip: Counter[tuple[str, int]] = field(default_factory=Counter, repr=False)
    _pods: dict[str, PodInfo] = field(default_factory=dict, repr=False)
    journaled: bool = True  # changes go to JOURNAL (not for simulation copies)

    @classmethod
    def from_node(cls, node: Obj, pods: Iterable[Obj | PodInfo] = (), *, journaled: bool = True) -> NodeInfo:
        info = cls(node, journaled=journaled)
        info.set_node(node)
        for pod in pods:
            info.add_pod(pod)
        return info

    def set_node(self, node: Obj) -> None:
        """Take a newer version of the node, keeping its pods."""
        self.generation = next(_GENERATIONS)
        if self.journaled:
            JOURNAL.record(self)
        meta = node.get("metadata") or {}
        spec = node.get("spec") or {}
        status = node.get("status") or {}
        self.node = node
        self.name = meta.get("name") or ""
        self.labels = meta.get("labels") or {}
        self.unschedulable = bool(spec.get("unschedulable"))
        self.ready = _ready_status(node)
        self.taints = tuple(
            Taint(t.get("key") or "", t.get("value") or "", t.get("effect") or "") for t in spec.get("taints") or ()
        )
        # The API server defaults allocatable to capacity.
        alloc = status.get("allocatable") or status.get("capacity") or {}
        scalars = {n: _value(q) for n, q in alloc.items() if n not in ("cpu", "memory", "pods")}
        self.allocatable = Resources(_milli(alloc.get("cpu", 0)), _value(alloc.get("memory", 0)), scalars)
        self.allowed_pods = _value(alloc["pods"]) if "pods" in alloc else DEFAULT_ALLOWED_PODS
        images = status.get("images")
        sizes = _image_sizes(images) if images else {}
        if sizes != self.images:
            global IMAGES_VERSION
            IMAGES_VERSION += 1
        self.images = sizes

    @property
    def pods(self) -> list[Obj]:
        return [p.pod for p in self._pods.values()]

    @property
    def pod_infos(self) -> list[PodInfo]:
        return list(self._pods.values())

    def clone(self) -> NodeInfo:
        """A copy to simulate on (preemption removes and re-adds pods on it)."""
        return NodeInfo.from_node(self.node, self._pods.values(), journaled=False)

    def has_pod(self, pod: Obj | PodInfo) -> bool:
        return _pod_info(pod).key in self._pods

    def add_pod(self, pod: Obj | PodInfo) -> None:
        """Count *pod* on this node; adding a pod already here replaces it."""
        info = _pod_info(pod)
        if info.key in self._pods:
            self.remove_pod(info)
        self._pods[info.key] = info
        self._account(info, 1)

    def remove_pod(self, pod: Obj | PodInfo) -> bool:
        """Stop counting *pod*; False if it was not here."""
        stored = self._pods.pop(_pod_info(pod).key, None)
        if stored is None:
            return False
        self._account(stored, -1)
        return True

    def derived(self, key: Any, build: Callable[[NodeInfo], T]) -> T:
        """A fact about this node's pods (e.g. how many match a selector),
        built once and kept until a pod is added or removed here."""
        try:
            return self._derived[key]  # type: ignore[no-any-return]
        except KeyError:
            value = self._derived[key] = build(self)
            return value

    def _account(self, info: PodInfo, sign: int) -> None:
        self.generation = next(_GENERATIONS)
        if self.journaled:
            JOURNAL.record(self)
        if self._derived:
            self._derived.clear()
        has_affinity, required_anti = info.pod_affinity
        if has_affinity:
            self.affinity_pods += sign
            if required_anti:
                self.required_anti_affinity_pods += sign
        reqs = info.requests
        self.pod_count += sign
        self.requested_milli_cpu += sign * reqs.milli_cpu
        self.requested_memory += sign * reqs.memory
        _add_into(self.requested_scalars, reqs.scalars, sign)
        cpu, mem = info.non_zero_requests
        self.non_zero_milli_cpu += sign * cpu
        self.non_zero_memory += sign * mem
        for ip, proto, port in info.host_ports:
            if sign > 0:
                self.used_ports[(ip, proto, port)] += 1
                self._ports_any_ip[(proto, port)] += 1
            else:
                _decrement(self.used_ports, (ip, proto, port))
                _decrement(self._ports_any_ip, (proto, port))
        # Terminating pods are on their way out; spreading ignores them.
        if info.controller_uid and not info.is_terminating:
            if sign > 0:
                self.controller_counts[info.controller_uid] += 1
            else:
                _decrement(self.controller_counts, info.controller_uid)

    def has_port_conflict(self, ip: str, protocol: str, port: int) -> bool:
        """Kubernetes' HostPortInfo.CheckConflict: 0.0.0.0 clashes with the
        same protocol and port on any address, and any address with 0.0.0.0."""
        if ip == "0.0.0.0":
            return (protocol, port) in self._ports_any_ip
        return ("0.0.0.0", protocol, port) in self.used_ports or (ip, protocol, port) in self.used_ports


# ---------------------------------------------------------------------------
# plugins
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SchedulingContext:
    """What scorers may look at beyond one node: every node, and the ones
    that passed filtering (the nodes being scored)."""

    node_infos: Sequence[NodeInfo]
    feasible: Sequence[NodeInfo]


class FilterPlugin(Protocol):
    """Judges whether a pod may run on a node.

    May also define ``pre_filter(pod: PodInfo) -> bool | Status``; False means the
    plugin has nothing to check for this pod and ``filter`` is not called; an
    unschedulable ``Status`` rejects the pod on every node with its reasons
    (the message then says only those, as Kubernetes' PreFilter rejections).
    A plugin that needs the whole cluster to prepare (inter-pod affinity,
    topology spread) defines ``pre_filter_nodes(pod, node_infos) -> bool``
    instead, and keeps what it computed in the PodInfo (``remember``).
    """

    name: str

    def filter(self, pod: PodInfo, node_info: NodeInfo) -> Status: ...


class ScorePlugin(Protocol):
    """Ranks a feasible node for a pod.

    ``score`` returns 0..100, or a raw value when the plugin also defines
    ``normalize(scores: list[int]) -> list[int]``, which maps the raw scores
    of all feasible nodes onto 0..100.  May also define
    ``pre_score(pod, ctx) -> bool``; False skips the plugin (every node
    gets 0 from it).
    """

    name: str

    def score(self, pod: PodInfo, node_info: NodeInfo, ctx: SchedulingContext) -> int: ...


# ---------------------------------------------------------------------------
# the cycle
# ---------------------------------------------------------------------------


def _histogram(reasons: Iterable[str]) -> str:
    # Kubernetes formats "<count> <reason>" and sorts those strings.
    return ", ".join(sorted(f"{n} {r}" for r, n in Counter(reasons).items()))


@dataclass
class ScheduleResult:
    """The outcome for one pod.  ``scores`` are weighted totals per feasible
    node (empty when a single node was feasible: Kubernetes skips scoring
    then); ``statuses`` say why each rejected node was rejected."""

    node: str | None
    num_nodes: int
    statuses: dict[str, Status] = field(default_factory=dict)
    preemption_policy: str = ""
    next_start: int = 0  # where the next attempt should begin filtering
    pre_filter_message: str = ""  # set when a PreFilter rejected the pod for every node
    examined: int = 0  # nodes filtered (percentageOfNodesToScore may stop early)
    feasible: int = 0
    # (plugin, weight, normalized scores over the feasible nodes, in scored's order): why this node.
    # The scores and totals are int64 arrays when node columns judged the nodes, lists otherwise.
    contributions: list[tuple[str, int, Any]] = field(default_factory=list, compare=False)
    # The scored nodes, their weighted totals and the chosen one's index: ``scores`` on demand, since a
    # dict of 500 names per pod was a measurable share of scheduling one at 5,000 nodes.
    scored: Sequence[NodeInfo] = ()
    totals: Any = field(default=None, compare=False)  # in scored's order
    pick: int = 0

    def _totals(self) -> list[int]:
        totals = self.totals
        return totals.tolist() if hasattr(totals, "tolist") else list(totals)

    @property
    def scores(self) -> dict[str, int]:
        """Weighted totals per feasible node; empty when a single node was feasible."""
        if not self.scored:
            return {}
        return {ni.name: total for ni, total in zip(self.scored, self._totals())}

    def why(self) -> str:
        """Why the chosen node: its total and each plugin's weighted share, the
        runner-up, and how many nodes were looked at (the scheduler's log line and
        the tail of its Scheduled event)."""
        if self.node is None:
            return ""
        looked = f"{self.examined} of {self.num_nodes} nodes examined"
        if not self.scored:
            return f"the only feasible node, {looked}"
        i = self.pick
        parts = " ".join(f"{name}={weight * int(scores[i])}" for name, weight, scores in self.contributions)
        totals = self._totals()
        runner = max((k for k in range(len(totals)) if k != i), key=totals.__getitem__)  # the first of equals
        return (f"score {totals[i]} of {self.feasible} feasible, {looked}: {parts}; "
                f"runner-up {self.scored[runner].name} {totals[runner]}")

    @property
    def filter_reasons(self) -> dict[str, list[str]]:
        return {name: list(st.reasons) for name, st in self.statuses.items()}

    def message(self) -> str:
        """The ``FailedScheduling`` event message; "" when a node was found.

        kubepy does not preempt, and no pod has a lower priority to evict, so
        the preemption part says what Kubernetes says when it finds no
        victims: nodes no eviction could fix are "not helpful", the rest
        have "no victims".
        """
        if self.node is not None:
            return ""
        if self.num_nodes == 0:
            return NO_NODES_MESSAGE
        n = self.num_nodes
        reasons = self.pre_filter_message or _histogram(r for st in self.statuses.values() for r in st.reasons)
        msg = f"0/{n} nodes are available: {reasons}."
        if self.preemption_policy == "Never":
            return msg + " preemption: not eligible due to preemptionPolicy=Never."
        verdicts = (_NOT_HELPFUL if st.code == UNSCHEDULABLE_AND_UNRESOLVABLE else _NO_VICTIMS for st in self.statuses.values())
        return msg + f" preemption: 0/{n} nodes are available: {_histogram(verdicts)}."


def num_feasible_nodes_to_find(num_nodes: int, percentage: int = 0) -> int:
    """How many feasible nodes are enough to stop filtering, by Kubernetes'
    percentageOfNodesToScore rule (0 = adaptive: 50% at 0 nodes falling to
    5% at 5,625; never fewer than 100 nodes)."""
    if num_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_nodes
    if percentage == 0:
        percentage = max(50 - num_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    return min(num_nodes, max(num_nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND))


def schedule_one(
    pod: Obj | PodInfo,
    node_infos: Sequence[NodeInfo],
    *,
    filters: Sequence[FilterPlugin],
    scorers: Sequence[tuple[ScorePlugin, int]],
    rng: random.Random | None = None,
    max_feasible: int | None = None,
    start: int = 0,
    columns: Any = None,
) -> ScheduleResult:
    """Pick a node for *pod* among *node_infos*; see the module docstring.

    By default every node is filtered and every feasible one scored.  Like
    kube-scheduler, a caller may stop filtering once *max_feasible* nodes
    fit (see ``num_feasible_nodes_to_find``); it should then begin the next
    attempt at ``result.next_start`` so every node gets its turn.

    Does not change any NodeInfo: the caller assumes the pod onto the chosen
    node with ``add_pod``.  Plugin exceptions propagate (Kubernetes' Error
    status aborts the attempt too).

    *columns* (a ``kubepy.scheduler.columns.NodeColumns`` kept for this very
    list) lets plugins that offer ``filter_columns``/``score_columns`` judge
    every node at once; the result is the same as without it.
    """
    info = _pod_info(pod)
    result = ScheduleResult(None, len(node_infos), preemption_policy=info.spec.get("preemptionPolicy") or "")
    if not node_infos:
        return result
    start %= len(node_infos)
    enough = max(1, max_feasible or len(node_infos))

    active = []
    for plugin in filters:
        pre_nodes = getattr(plugin, "pre_filter_nodes", None)
        if pre_nodes is not None:
            if pre_nodes(info, node_infos):
                active.append(plugin)
            continue
        pre = getattr(plugin, "pre_filter", None)
        verdict = True if pre is None else pre(info)
        if isinstance(verdict, Status) and not verdict.is_success():
            # A PreFilter rejection judges every node at once (Kubernetes' Diagnosis.PreFilterMsg).
            result.pre_filter_message = ", ".join(verdict.reasons)
            result.statuses.update((n.name, verdict) for n in node_infos)
            return result
        if verdict:
            active.append(plugin)
    statuses = result.statuses
    cols = columns.of(node_infos) if columns is not None else None
    found = cols.feasible(info, active, start, enough, statuses) if cols is not None else None
    if found is not None:
        idx, examined = found
        feasible = list(operator.itemgetter(*idx.tolist())(node_infos)) if len(idx) > 1 else \
            [node_infos[i] for i in idx.tolist()]
    else:
        cols = idx = None
        checks = [plugin.filter for plugin in active]
        feasible = []
        examined = 0
        ordered = node_infos if start == 0 else itertools.chain(node_infos[start:], node_infos[:start])
        for node_info in ordered:
            examined += 1
            for check in checks:
                status = check(info, node_info)
                if status is not OK and status.code != SUCCESS:
                    statuses[node_info.name] = status
                    break
            else:
                feasible.append(node_info)
                if len(feasible) >= enough:
                    break
    result.next_start = (start + examined) % len(node_infos)
    result.examined, result.feasible = examined, len(feasible)

    if len(feasible) <= 1:
        result.node = feasible[0].name if feasible else None
        return result

    ctx = SchedulingContext(node_infos, feasible)
    # With columns the totals are an int64 array (kubepy.scheduler.columns holds numpy); without, a list:
    # numpy is then never imported, since on some CPUs it cannot be (see scheduler.node_columns).
    totals: Any = cols.zeros(len(feasible)) if cols is not None else [0] * len(feasible)
    for plugin, weight in scorers:
        pre_score = getattr(plugin, "pre_score", None)
        if pre_score is not None and not pre_score(info, ctx):
            continue
        by_columns = getattr(plugin, "score_columns", None) if cols is not None else None
        column_scores = by_columns(info, cols, idx, feasible, ctx) if by_columns is not None else None
        normalize = getattr(plugin, "normalize", None)
        if column_scores is not None and normalize is None:
            raw = column_scores
        else:
            if column_scores is not None:
                raw = column_scores.tolist()
            else:
                score = plugin.score
                raw = [score(info, node_info, ctx) for node_info in feasible]
            if normalize is not None:
                raw = normalize(raw)
            if cols is not None:
                raw = cols.ints(raw)
        result.contributions.append((plugin.name, weight, raw))
        if cols is not None:
            totals += raw * weight
        else:
            totals = [t + s * weight for t, s in zip(totals, raw)]

    if cols is not None:
        ties = cols.argmaxes(totals)
    else:
        best = max(totals)
        ties = [i for i, total in enumerate(totals) if total == best]
    pick = ties[0] if len(ties) == 1 else ties[(rng or random).randrange(len(ties))]
    result.node = feasible[pick].name
    result.scored, result.totals, result.pick = feasible, totals, pick
    return result


def default_filters(listers: Any = None) -> list[FilterPlugin]:
    """Kubernetes' default filter order, with NodeReady where its taint
    check would be.  *listers* (``kubepy.scheduler.listers.Listers``) give
    namespaces' labels and the workloads behind default spreading."""
    from kubepy.scheduler import plugins
    from kubepy.scheduler.interpodaffinity import InterPodAffinity
    from kubepy.scheduler.topologyspread import PodTopologySpread

    return [
        plugins.NodeUnschedulable(),
        plugins.TaintToleration(),
        plugins.NodeReady(),
        plugins.NodeAffinity(),
        plugins.NodePorts(),
        plugins.NodeResourcesFit(),
        PodTopologySpread(listers),
        InterPodAffinity(listers),
    ]


def default_scorers(listers: Any = None) -> list[tuple[ScorePlugin, int]]:
    """Scorers with Kubernetes' default weights.  Spreading is
    PodTopologySpread's, with the system default constraints (upstream
    dropped SelectorSpread for them)."""
    from kubepy.scheduler import plugins
    from kubepy.scheduler.interpodaffinity import InterPodAffinity
    from kubepy.scheduler.topologyspread import PodTopologySpread

    return [
        (plugins.TaintToleration(), 3),
        (plugins.NodeAffinity(), 2),
        (PodTopologySpread(listers), 2),
        (InterPodAffinity(listers), 2),
        (plugins.NodeResourcesLeastAllocated(), 1),
        (plugins.NodeResourcesBalancedAllocation(), 1),
        (plugins.ImageLocality(), 1),
    ]
