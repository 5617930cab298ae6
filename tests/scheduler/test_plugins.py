"""Tables for kubepy.scheduler: requests, NodeInfo accounting, each plugin,
and schedule_one's choice and FailedScheduling message."""

from __future__ import annotations

import random
from typing import Any

import pytest

from kubepy.scheduler.framework import (
    DEFAULT_MEMORY_REQUEST,
    UNSCHEDULABLE,
    UNSCHEDULABLE_AND_UNRESOLVABLE,
    NodeInfo,
    PodInfo,
    SchedulingContext,
    Status,
    Taint,
    Toleration,
    default_filters,
    default_scorers,
    num_feasible_nodes_to_find,
    pod_requests,
    schedule_one,
)
from kubepy.meta.images import parse_ctr_images
from kubepy.scheduler.plugins import (
    ImageLocality,
    NodeAffinity,
    NodePorts,
    NodeReady,
    NodeResourcesBalancedAllocation,
    NodeResourcesFit,
    NodeResourcesLeastAllocated,
    NodeUnschedulable,
    SelectorSpread,
    TaintToleration,
    default_normalize,
)

Mi = 1024 * 1024
Gi = 1024 * Mi

# ---------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------


def make_node(
    name: str = "n1",
    *,
    cpu: str = "4",
    memory: str = "8Gi",
    pods: str | None = "110",
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    unschedulable: bool = False,
    ready: str | None = "True",
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    allocatable = {"cpu": cpu, "memory": memory, **(extra or {})}
    if pods is not None:
        allocatable["pods"] = pods
    status: dict[str, Any] = {"allocatable": allocatable}
    if ready is not None:
        status["conditions"] = [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}]
    spec: dict[str, Any] = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec, "status": status}


def container(cpu: str | None = None, memory: str | None = None, *, ports=None, **more: str) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    requests.update(more)
    c: dict[str, Any] = {"name": "c", "image": "busybox"}
    if requests:
        c["resources"] = {"requests": requests}
    if ports:
        c["ports"] = ports
    return c


def make_pod(
    name: str = "p",
    *,
    cpu: str | None = None,
    memory: str | None = None,
    containers: list[dict[str, Any]] | None = None,
    owner: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": f"uid-{name}"}
    if owner:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": owner, "uid": f"rs-{owner}", "controller": True}]
    return {"metadata": meta, "spec": {"containers": containers or [container(cpu, memory)], **spec}}


def node_info(node: dict[str, Any] | None = None, pods: list[dict[str, Any]] = ()) -> NodeInfo:  # type: ignore[assignment]
    return NodeInfo.from_node(node or make_node(), pods)


def run_filter(plugin: Any, pod: dict[str, Any], ni: NodeInfo) -> Status:
    info = PodInfo(pod)
    pre = getattr(plugin, "pre_filter", None)
    if pre is not None and not pre(info):
        return Status()
    return plugin.filter(info, ni)


def tol(key: str = "", operator: str = "Equal", value: str = "", effect: str = "") -> dict[str, str]:
    return {k: v for k, v in {"key": key, "operator": operator, "value": value, "effect": effect}.items() if v}


def taint(key: str, value: str = "", effect: str = "NoSchedule") -> dict[str, str]:
    return {"key": key, "value": value, "effect": effect}


# ---------------------------------------------------------------------------
# requests
# ---------------------------------------------------------------------------

REQUEST_CASES = [
    ("nothing requested", make_pod(containers=[container()]), (0, 0), (100, 200 * Mi)),
    ("one container", make_pod(cpu="250m", memory="64Mi"), (250, 64 * Mi), (250, 64 * Mi)),
    (
        "containers add up",
        make_pod(containers=[container("1", "1Gi"), container("500m", "512Mi")]),
        (1500, 1536 * Mi),
        (1500, 1536 * Mi),
    ),
    (
        "missing cpu gets the default only in the non-zero view",
        make_pod(containers=[container(memory="1Gi"), container("200m")]),
        (200, 1 * Gi),
        (300, 1 * Gi + 200 * Mi),
    ),
    (
        "explicit zero stays zero",
        make_pod(containers=[container("0", "0")]),
        (0, 0),
        (0, 0),
    ),
    (
        # Kubernetes' own example: max(sum of containers, largest init container).
        "init containers: per-resource max",
        make_pod(
            containers=[container("2", "1G"), container("1", "1G")],
            initContainers=[container("2", "1G"), container("2", "3G")],
        ),
        (3000, 3_000_000_000),
        (3000, 3_000_000_000),
    ),
    (
        "init container bigger than all containers",
        make_pod(containers=[container("100m", "10Mi")], initContainers=[container("2", "5Mi")]),
        (2000, 10 * Mi),
        (2000, 10 * Mi),
    ),
    (
        "sidecar adds to containers and to later init steps",
        make_pod(
            containers=[container("1", "100Mi")],
            initContainers=[
                {**container("500m", "50Mi"), "restartPolicy": "Always"},
                container("1", "10Mi"),
            ],
        ),
        (1500, 150 * Mi),
        (1500, 150 * Mi),
    ),
    (
        "overhead is added",
        make_pod(cpu="100m", memory="10Mi", overhead={"cpu": "250m", "memory": "120Mi"}),
        (350, 130 * Mi),
        (350, 130 * Mi),
    ),
    (
        "limits stand in for missing requests",
        make_pod(containers=[{"name": "c", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]),
        (1000, 1 * Gi),
        (1000, 1 * Gi),
    ),
]


@pytest.mark.parametrize("pod,want,want_non_zero", [c[1:] for c in REQUEST_CASES], ids=[c[0] for c in REQUEST_CASES])
def test_pod_requests(pod: dict[str, Any], want: tuple[int, int], want_non_zero: tuple[int, int]) -> None:
    assert pod_requests(pod) == want
    assert pod_requests(pod, non_zero=True) == want_non_zero
    assert PodInfo(pod).non_zero_requests == want_non_zero


def test_scalar_requests_are_kept_by_name() -> None:
    pod = make_pod(containers=[container("1", **{"example.com/gpu": "2", "ephemeral-storage": "1Gi"})])
    assert PodInfo(pod).requests.scalars == {"ephemeral-storage": 1 * Gi, "example.com/gpu": 2}


# ---------------------------------------------------------------------------
# NodeInfo
# ---------------------------------------------------------------------------


def test_node_info_allocatable_and_defaults() -> None:
    ni = node_info(make_node(cpu="3500m", memory="2Gi", pods=None, extra={"example.com/gpu": "4"}))
    assert (ni.allocatable.milli_cpu, ni.allocatable.memory, ni.allowed_pods) == (3500, 2 * Gi, 110)
    assert ni.allocatable.scalars == {"example.com/gpu": 4}
    only_capacity = {"metadata": {"name": "c"}, "status": {"capacity": {"cpu": "2", "memory": "1Gi", "pods": "5"}}}
    ni = NodeInfo.from_node(only_capacity)
    assert (ni.allocatable.milli_cpu, ni.allowed_pods, ni.ready) == (2000, 5, "")


def test_node_info_add_remove_keeps_totals_exact() -> None:
    ni = node_info()
    a = make_pod("a", cpu="500m", memory="100Mi", owner="web")
    b = make_pod(
        "b",
        containers=[container(ports=[{"containerPort": 80, "hostPort": 8080}])],
        initContainers=[container("1", "1Gi")],
        owner="web",
    )
    ni.add_pod(a)
    ni.add_pod(b)
    assert ni.pod_count == 2
    assert (ni.requested_milli_cpu, ni.requested_memory) == (1500, 100 * Mi + 1 * Gi)
    assert (ni.non_zero_milli_cpu, ni.non_zero_memory) == (1500, 100 * Mi + 1 * Gi)
    assert ni.used_ports == {("0.0.0.0", "TCP", 8080): 1}
    assert ni.has_port_conflict("10.0.0.1", "TCP", 8080) and not ni.has_port_conflict("0.0.0.0", "UDP", 8080)
    assert ni.controller_counts == {"rs-web": 2}
    assert [p["metadata"]["name"] for p in ni.pods] == ["a", "b"]

    # Removal subtracts what was added, even if the caller holds a newer copy.
    changed_b = make_pod("b", cpu="9", memory="9Gi")
    assert ni.remove_pod(changed_b)
    assert not ni.remove_pod(changed_b)
    assert (ni.pod_count, ni.requested_milli_cpu, ni.requested_memory) == (1, 500, 100 * Mi)
    assert not ni.used_ports
    assert not ni.has_port_conflict("0.0.0.0", "TCP", 8080)
    assert not ni.has_port_conflict("10.0.0.1", "TCP", 8080)
    assert ni.controller_counts == {"rs-web": 1}

    ni.add_pod(a)  # re-adding replaces, never double counts
    assert (ni.pod_count, ni.requested_milli_cpu) == (1, 500)
    ni.remove_pod(a)
    assert (ni.pod_count, ni.requested_milli_cpu, ni.requested_memory, ni.non_zero_memory) == (0, 0, 0, 0)
    assert not ni.controller_counts and not ni.requested_scalars.get("x")


def test_node_info_non_zero_totals_for_best_effort_pods() -> None:
    ni = node_info(pods=[make_pod("a"), make_pod("b")])
    assert (ni.requested_milli_cpu, ni.requested_memory) == (0, 0)
    assert (ni.non_zero_milli_cpu, ni.non_zero_memory) == (200, 2 * DEFAULT_MEMORY_REQUEST)


def test_terminating_pods_do_not_count_for_spreading() -> None:
    pod = make_pod("a", owner="web")
    pod["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    ni = node_info(pods=[pod])
    assert ni.pod_count == 1 and not ni.controller_counts


# ---------------------------------------------------------------------------
# tolerations
# ---------------------------------------------------------------------------

TOLERATION_CASES = [
    (Toleration("k", "Equal", "v", "NoSchedule"), Taint("k", "v", "NoSchedule"), True),
    (Toleration("k", "", "v", "NoSchedule"), Taint("k", "v", "NoSchedule"), True),  # "" means Equal
    (Toleration("k", "Equal", "v", "NoSchedule"), Taint("k", "w", "NoSchedule"), False),
    (Toleration("k", "Equal", "v", "NoSchedule"), Taint("k", "v", "NoExecute"), False),
    (Toleration("k", "Equal", "v", ""), Taint("k", "v", "NoExecute"), True),  # empty effect: all
    (Toleration("k", "Exists", "", ""), Taint("k", "anything", "PreferNoSchedule"), True),
    (Toleration("j", "Exists", "", ""), Taint("k", "", "NoSchedule"), False),
    (Toleration("", "Exists", "", ""), Taint("k", "v", "NoExecute"), True),  # tolerate everything
    (Toleration("", "Exists", "", "NoSchedule"), Taint("k", "v", "NoExecute"), False),
    (Toleration("k", "Gt", "1", ""), Taint("k", "2", "NoSchedule"), False),  # unknown operator
]


@pytest.mark.parametrize("toleration,the_taint,want", TOLERATION_CASES)
def test_toleration_matching(toleration: Toleration, the_taint: Taint, want: bool) -> None:
    assert toleration.tolerates(the_taint) is want


# ---------------------------------------------------------------------------
# filters
# ---------------------------------------------------------------------------

REASON_UNSCHEDULABLE = "node(s) were unschedulable"
NOT_READY = "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
UNREACHABLE = "node(s) had untolerated taint {node.kubernetes.io/unreachable: }"

UNSCHEDULABLE_CASES = [
    ("schedulable node", make_node(), make_pod(), ()),
    ("cordoned node", make_node(unschedulable=True), make_pod(), (REASON_UNSCHEDULABLE,)),
    (
        "pod tolerates the unschedulable taint",
        make_node(unschedulable=True),
        make_pod(tolerations=[tol("node.kubernetes.io/unschedulable", "Exists", effect="NoSchedule")]),
        (),
    ),
    (
        "toleration for the wrong effect",
        make_node(unschedulable=True),
        make_pod(tolerations=[tol("node.kubernetes.io/unschedulable", "Exists", effect="NoExecute")]),
        (REASON_UNSCHEDULABLE,),
    ),
]


@pytest.mark.parametrize("node,pod,reasons", [c[1:] for c in UNSCHEDULABLE_CASES], ids=[c[0] for c in UNSCHEDULABLE_CASES])
def test_node_unschedulable(node: dict[str, Any], pod: dict[str, Any], reasons: tuple[str, ...]) -> None:
    status = run_filter(NodeUnschedulable(), pod, node_info(node))
    assert status.reasons == reasons
    assert status.code == (UNSCHEDULABLE_AND_UNRESOLVABLE if reasons else "Success")


READY_CASES = [
    ("ready", "True", [], ()),
    ("not ready", "False", [], (NOT_READY,)),
    ("unknown means unreachable", "Unknown", [], (UNREACHABLE,)),
    ("no Ready condition yet", None, [], (NOT_READY,)),
    ("tolerates not-ready", "False", [tol("node.kubernetes.io/not-ready", "Exists", effect="NoSchedule")], ()),
    (
        "NoExecute toleration is not enough",
        "Unknown",
        [tol("node.kubernetes.io/unreachable", "Exists", effect="NoExecute")],
        (UNREACHABLE,),
    ),
    ("tolerates everything", "Unknown", [tol(operator="Exists")], ()),
]


@pytest.mark.parametrize("ready,tolerations,reasons", [c[1:] for c in READY_CASES], ids=[c[0] for c in READY_CASES])
def test_node_ready(ready: str | None, tolerations: list[dict[str, str]], reasons: tuple[str, ...]) -> None:
    status = run_filter(NodeReady(), make_pod(tolerations=tolerations), node_info(make_node(ready=ready)))
    assert status.reasons == reasons


TAINT_CASES = [
    ("no taints", [], [], ()),
    ("NoSchedule", [taint("dedicated", "gpu")], [], ("node(s) had untolerated taint {dedicated: gpu}",)),
    ("NoExecute", [taint("k", "", "NoExecute")], [], ("node(s) had untolerated taint {k: }",)),
    ("PreferNoSchedule never filters", [taint("k", "v", "PreferNoSchedule")], [], ()),
    ("tolerated by Equal", [taint("dedicated", "gpu")], [tol("dedicated", value="gpu", effect="NoSchedule")], ()),
    (
        "first untolerated taint is named",
        [taint("a", "1"), taint("b", "2", "NoExecute"), taint("c", "3")],
        [tol("a", "Exists")],
        ("node(s) had untolerated taint {b: 2}",),
    ),
    ("empty key Exists tolerates all", [taint("a", "1"), taint("b", "", "NoExecute")], [tol(operator="Exists")], ()),
]


@pytest.mark.parametrize("taints,tolerations,reasons", [c[1:] for c in TAINT_CASES], ids=[c[0] for c in TAINT_CASES])
def test_taint_toleration_filter(
    taints: list[dict[str, str]], tolerations: list[dict[str, str]], reasons: tuple[str, ...]
) -> None:
    status = run_filter(TaintToleration(), make_pod(tolerations=tolerations), node_info(make_node(taints=taints)))
    assert status.reasons == reasons
    if reasons:
        assert status.code == UNSCHEDULABLE_AND_UNRESOLVABLE


def affinity(*terms: dict[str, Any]) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    e: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        e["values"] = list(values)
    return e


def term(*exprs: dict[str, Any], fields: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"matchExpressions": list(exprs)}
    if fields:
        t["matchFields"] = fields
    return t


LABELS = {"zone": "a", "disk": "ssd", "cores": "8"}

AFFINITY_CASES = [
    ("nothing asked", {}, True),
    ("nodeSelector matches", {"nodeSelector": {"zone": "a"}}, True),
    ("nodeSelector mismatch", {"nodeSelector": {"zone": "a", "disk": "hdd"}}, False),
    ("nodeSelector missing label", {"nodeSelector": {"gpu": "yes"}}, False),
    ("In", {"affinity": affinity(term(expr("zone", "In", "a", "b")))}, True),
    ("In mismatch", {"affinity": affinity(term(expr("zone", "In", "b")))}, False),
    ("NotIn", {"affinity": affinity(term(expr("zone", "NotIn", "b")))}, True),
    ("NotIn absent key matches", {"affinity": affinity(term(expr("gpu", "NotIn", "yes")))}, True),
    ("Exists", {"affinity": affinity(term(expr("disk", "Exists")))}, True),
    ("DoesNotExist", {"affinity": affinity(term(expr("disk", "DoesNotExist")))}, False),
    ("Gt", {"affinity": affinity(term(expr("cores", "Gt", "4")))}, True),
    ("Gt not greater", {"affinity": affinity(term(expr("cores", "Gt", "8")))}, False),
    ("Lt", {"affinity": affinity(term(expr("cores", "Lt", "16")))}, True),
    ("Lt on a non-integer label", {"affinity": affinity(term(expr("zone", "Lt", "16")))}, False),
    ("expressions are ANDed", {"affinity": affinity(term(expr("zone", "In", "a"), expr("disk", "In", "hdd")))}, False),
    ("terms are ORed", {"affinity": affinity(term(expr("zone", "In", "b")), term(expr("disk", "In", "ssd")))}, True),
    ("matchFields metadata.name", {"affinity": affinity(term(fields=[expr("metadata.name", "In", "n1")]))}, True),
    ("matchFields other name", {"affinity": affinity(term(fields=[expr("metadata.name", "In", "n2")]))}, False),
    ("no terms match nothing", {"affinity": affinity()}, False),
    ("an empty term matches nothing", {"affinity": affinity({})}, False),
    ("an invalid term fails alone", {"affinity": affinity(term(expr("zone", "Gt", "x")), term(expr("disk", "Exists")))}, True),
    ("invalid operator", {"affinity": affinity(term(expr("zone", "Like", "a")))}, False),
    (
        "selector and affinity must both match",
        {"nodeSelector": {"zone": "b"}, "affinity": affinity(term(expr("disk", "Exists")))},
        False,
    ),
]


@pytest.mark.parametrize("spec,fits", [c[1:] for c in AFFINITY_CASES], ids=[c[0] for c in AFFINITY_CASES])
def test_node_affinity_filter(spec: dict[str, Any], fits: bool) -> None:
    status = run_filter(NodeAffinity(), make_pod(**spec), node_info(make_node("n1", labels=LABELS)))
    assert status.reasons == (() if fits else ("node(s) didn't match Pod's node affinity/selector",))


def hostport(port: int, ip: str | None = None, protocol: str | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"containerPort": 80, "hostPort": port}
    if ip:
        p["hostIP"] = ip
    if protocol:
        p["protocol"] = protocol
    return p


PORT_CASES = [
    ("no host ports", [hostport(80)], [{"containerPort": 80}], True),
    ("free port", [hostport(80)], [hostport(81)], True),
    ("same port", [hostport(80)], [hostport(80)], False),
    ("other protocol", [hostport(53, protocol="UDP")], [hostport(53)], True),
    ("same protocol explicit", [hostport(53, protocol="UDP")], [hostport(53, protocol="UDP")], False),
    ("different addresses", [hostport(80, "10.0.0.1")], [hostport(80, "10.0.0.2")], True),
    ("same address", [hostport(80, "10.0.0.1")], [hostport(80, "10.0.0.1")], False),
    ("wildcard wanted, address used", [hostport(80, "10.0.0.1")], [hostport(80)], False),
    ("address wanted, wildcard used", [hostport(80)], [hostport(80, "10.0.0.1")], False),
    ("one of several ports clashes", [hostport(90)], [hostport(80), hostport(90)], False),
]


@pytest.mark.parametrize("used,wanted,fits", [c[1:] for c in PORT_CASES], ids=[c[0] for c in PORT_CASES])
def test_node_ports(used: list[dict[str, Any]], wanted: list[dict[str, Any]], fits: bool) -> None:
    ni = node_info(pods=[make_pod("old", containers=[container(ports=used)])])
    status = run_filter(NodePorts(), make_pod("new", containers=[container(ports=wanted)]), ni)
    assert status.reasons == (() if fits else ("node(s) didn't have free ports for the requested pod ports",))


def test_host_network_ports_default_to_container_port() -> None:
    ni = node_info(pods=[make_pod("old", containers=[container(ports=[hostport(8080)])])])
    pod = make_pod("new", hostNetwork=True, containers=[container(ports=[{"containerPort": 8080}])])
    assert run_filter(NodePorts(), pod, ni).code == UNSCHEDULABLE


FIT_CASES = [
    ("fits", make_node(), [], make_pod(cpu="1", memory="1Gi"), ()),
    ("exactly full", make_node(cpu="1", memory="1Gi"), [], make_pod(cpu="1", memory="1Gi"), ()),
    ("cpu", make_node(cpu="1"), [make_pod("a", cpu="600m")], make_pod(cpu="500m"), ("Insufficient cpu",)),
    ("memory", make_node(memory="1Gi"), [], make_pod(memory="2Gi"), ("Insufficient memory",)),
    (
        "every shortfall, in Kubernetes' order",
        make_node(cpu="1", memory="1Gi", pods="1"),
        [make_pod("a", cpu="1", memory="1Gi")],
        make_pod(cpu="1", memory="1Gi"),
        ("Too many pods", "Insufficient cpu", "Insufficient memory"),
    ),
    ("best-effort pod on a full node", make_node(cpu="1"), [make_pod("a", cpu="1")], make_pod(), ()),
    ("too many pods even for best effort", make_node(pods="2"), [make_pod("a"), make_pod("b")], make_pod(), ("Too many pods",)),
    (
        "extended resource missing",
        make_node(),
        [],
        make_pod(containers=[container(**{"example.com/gpu": "1"})]),
        ("Insufficient example.com/gpu",),
    ),
    (
        "extended resource used up",
        make_node(extra={"example.com/gpu": "2"}),
        [make_pod("a", containers=[container(**{"example.com/gpu": "2"})])],
        make_pod(containers=[container(**{"example.com/gpu": "1"})]),
        ("Insufficient example.com/gpu",),
    ),
    (
        "extended resource available",
        make_node(extra={"example.com/gpu": "2"}),
        [make_pod("a", containers=[container(**{"example.com/gpu": "1"})])],
        make_pod(containers=[container(**{"example.com/gpu": "1"})]),
        (),
    ),
    (
        "ephemeral storage comes before extended resources",
        make_node(),
        [],
        make_pod(containers=[container(**{"example.com/gpu": "1", "ephemeral-storage": "1Gi"})]),
        ("Insufficient ephemeral-storage", "Insufficient example.com/gpu"),
    ),
]


@pytest.mark.parametrize("node,pods,pod,reasons", [c[1:] for c in FIT_CASES], ids=[c[0] for c in FIT_CASES])
def test_node_resources_fit(
    node: dict[str, Any], pods: list[dict[str, Any]], pod: dict[str, Any], reasons: tuple[str, ...]
) -> None:
    status = run_filter(NodeResourcesFit(), pod, node_info(node, pods))
    assert status.reasons == reasons
    assert status.code == (UNSCHEDULABLE if reasons else "Success")


# ---------------------------------------------------------------------------
# scorers
# ---------------------------------------------------------------------------


def raw_scores(plugin: Any, pod: dict[str, Any], nis: list[NodeInfo]) -> list[int]:
    info = PodInfo(pod)
    ctx = SchedulingContext(nis, nis)
    scores = [plugin.score(info, ni, ctx) for ni in nis]
    normalize = getattr(plugin, "normalize", None)
    return normalize(scores) if normalize else scores


@pytest.mark.parametrize(
    "scores,reverse,want",
    [
        ([0, 0], False, [0, 0]),
        ([0, 0], True, [100, 100]),
        ([1, 2, 4], False, [25, 50, 100]),
        ([1, 2, 4], True, [75, 50, 0]),
        ([3, 0], True, [0, 100]),
    ],
)
def test_default_normalize(scores: list[int], reverse: bool, want: list[int]) -> None:
    assert default_normalize(scores, reverse=reverse) == want


def test_least_allocated_formula() -> None:
    # cpu: (4000 - 1000 - 1000) * 100 / 4000 = 50; memory: (8Gi - 2Gi) * 100 / 8Gi = 75.
    busy = node_info(make_node(cpu="4", memory="8Gi"), [make_pod("a", cpu="1", memory="1Gi")])
    empty = node_info(make_node("n2", cpu="4", memory="8Gi"))
    over = node_info(make_node("n3", cpu="500m", memory="8Gi"))
    assert raw_scores(NodeResourcesLeastAllocated(), make_pod(cpu="1", memory="1Gi"), [busy, empty, over]) == [
        62,
        (75 + 87) // 2,
        (0 + 87) // 2,
    ]


def test_least_allocated_charges_defaults_for_best_effort_pods() -> None:
    # 10 best-effort pods cost 1000m / 2000Mi in the non-zero view.
    crowded = node_info(make_node(cpu="2", memory="4000Mi"), [make_pod(f"p{i}") for i in range(10)])
    empty = node_info(make_node("n2", cpu="2", memory="4000Mi"))
    crowded_score, empty_score = raw_scores(NodeResourcesLeastAllocated(), make_pod(), [crowded, empty])
    assert crowded_score < empty_score
    assert empty_score == (95 + 95) // 2


def test_balanced_allocation_formula() -> None:
    # cpu 2/4 = .5, memory 2/8 = .25 → 100 * (1 - .125) = 87
    ni = node_info(make_node(cpu="4", memory="8Gi"), [make_pod("a", cpu="1", memory="1Gi")])
    balanced = node_info(make_node("n2", cpu="4", memory="4Gi"), [make_pod("b", cpu="1", memory="1Gi")])
    assert raw_scores(NodeResourcesBalancedAllocation(), make_pod(cpu="1", memory="1Gi"), [ni, balanced]) == [87, 100]
    over = node_info(make_node("n3", cpu="1", memory="8Gi"))  # cpu fraction capped at 1
    assert raw_scores(NodeResourcesBalancedAllocation(), make_pod(cpu="2", memory="0"), [over]) == [50]


def test_balanced_allocation_skips_best_effort_pods() -> None:
    ctx = SchedulingContext([], [])
    assert not NodeResourcesBalancedAllocation().pre_score(PodInfo(make_pod()), ctx)
    assert NodeResourcesBalancedAllocation().pre_score(PodInfo(make_pod(cpu="1m")), ctx)


def test_taint_toleration_score() -> None:
    soft = [taint("a", "1", "PreferNoSchedule"), taint("b", "2", "PreferNoSchedule")]
    nis = [
        node_info(make_node("clean")),
        node_info(make_node("one", taints=soft[:1])),
        node_info(make_node("two", taints=soft)),
        node_info(make_node("hard", taints=[taint("x")])),  # hard taints do not count here
    ]
    assert raw_scores(TaintToleration(), make_pod(), nis) == [100, 50, 0, 100]
    tolerant = make_pod(tolerations=[tol("a", "Exists", effect="PreferNoSchedule"), tol("b", "Exists", effect="NoSchedule")])
    # "b" is tolerated only for NoSchedule, so it still counts on "two".
    assert raw_scores(TaintToleration(), tolerant, nis) == [100, 100, 0, 100]


def test_node_affinity_preferred_score() -> None:
    pod = make_pod(
        affinity={
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "preference": term(expr("zone", "In", "a"))},
                    {"weight": 30, "preference": term(expr("disk", "In", "ssd"))},
                    {"weight": 50, "preference": {}},  # empty: ignored
                ]
            }
        }
    )
    nis = [
        node_info(make_node("both", labels={"zone": "a", "disk": "ssd"})),
        node_info(make_node("zone", labels={"zone": "a"})),
        node_info(make_node("none")),
    ]
    assert raw_scores(NodeAffinity(), pod, nis) == [100, 25, 0]
    assert not NodeAffinity().pre_score(PodInfo(make_pod()), SchedulingContext(nis, nis))


def test_selector_spread_prefers_nodes_without_siblings() -> None:
    nis = [
        node_info(make_node("two"), [make_pod("a", owner="web"), make_pod("b", owner="web")]),
        node_info(make_node("one"), [make_pod("c", owner="web"), make_pod("x", owner="other")]),
        node_info(make_node("none"), [make_pod("y", owner="other")]),
    ]
    assert raw_scores(SelectorSpread(), make_pod("new", owner="web"), nis) == [0, 50, 100]
    assert raw_scores(SelectorSpread(), make_pod("lonely", owner="db"), nis) == [100, 100, 100]
    assert not SelectorSpread().pre_score(PodInfo(make_pod()), SchedulingContext(nis, nis))


# ---------------------------------------------------------------------------
# schedule_one
# ---------------------------------------------------------------------------


def schedule(pod: dict[str, Any], nis: list[NodeInfo], seed: int = 0):  # type: ignore[no-untyped-def]
    return schedule_one(pod, nis, filters=default_filters(), scorers=default_scorers(), rng=random.Random(seed))


MESSAGE_CASES = [
    (
        "cpu and unreachable",
        [
            make_node("a", cpu="100m"),
            make_node("b", ready="Unknown"),
            make_node("c", ready="Unknown"),
        ],
        make_pod(cpu="1"),
        (
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint "
            "{node.kubernetes.io/unreachable: }. preemption: 0/3 nodes are available: "
            "1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."
        ),
    ),
    (
        "reasons sorted as text, counts first",
        [
            make_node("a", cpu="100m"),
            make_node("b", cpu="100m"),
            make_node("c", taints=[taint("node.kubernetes.io/unreachable")]),
        ],
        make_pod(cpu="1"),
        (
            "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, "
            "2 Insufficient cpu. preemption: 0/3 nodes are available: "
            "1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        ),
    ),
    (
        "one node with several reasons",
        [make_node("a", cpu="100m", memory="1Mi"), make_node("b", unschedulable=True)],
        make_pod(cpu="1", memory="1Gi"),
        (
            "0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 node(s) were unschedulable. "
            "preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, "
            "1 Preemption is not helpful for scheduling."
        ),
    ),
    (
        "affinity everywhere",
        [make_node("a"), make_node("b"), make_node("c")],
        make_pod(nodeSelector={"disk": "ssd"}),
        (
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. "
            "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        ),
    ),
    (
        "preemptionPolicy Never",
        [make_node("a", cpu="100m")],
        make_pod(cpu="1", preemptionPolicy="Never"),
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.",
    ),
    ("no nodes at all", [], make_pod(), "no nodes available to schedule pods"),
]


@pytest.mark.parametrize("nodes,pod,message", [c[1:] for c in MESSAGE_CASES], ids=[c[0] for c in MESSAGE_CASES])
def test_failed_scheduling_message(nodes: list[dict[str, Any]], pod: dict[str, Any], message: str) -> None:
    result = schedule(pod, [node_info(n) for n in nodes])
    assert result.node is None
    assert result.message() == message


def test_first_failing_filter_decides_the_node() -> None:
    # Unschedulable and too small: only the first filter's reason is reported.
    result = schedule(make_pod(cpu="8"), [node_info(make_node("a", cpu="1", unschedulable=True))])
    assert result.filter_reasons == {"a": ["node(s) were unschedulable"]}
    assert result.statuses["a"].code == UNSCHEDULABLE_AND_UNRESOLVABLE


def test_success_result() -> None:
    nis = [node_info(make_node("small", cpu="1")), node_info(make_node("big", cpu="8")), node_info(make_node("bad", ready="False"))]
    result = schedule(make_pod(cpu="2"), nis)
    assert result.node == "big"
    assert result.message() == ""
    assert result.filter_reasons == {"small": ["Insufficient cpu"], "bad": [NOT_READY]}
    assert result.scores == {}  # one feasible node: no scoring, as in Kubernetes


def test_scoring_prefers_the_emptier_node() -> None:
    nis = [node_info(make_node("busy"), [make_pod("a", cpu="3", memory="6Gi")]), node_info(make_node("idle"))]
    result = schedule(make_pod(cpu="500m", memory="512Mi"), nis)
    assert result.node == "idle"
    assert result.scores["idle"] > result.scores["busy"]


def test_spreading_fills_empty_nodes_first() -> None:
    # Default spreading (PodTopologySpread's system constraints) selects the
    # pods of the ReplicaSet that owns the pod.
    from kubepy.scheduler.listers import Listers

    rs = {"metadata": {"name": "web", "namespace": "default"}, "spec": {"selector": {"matchLabels": {"app": "web"}}}}
    listers = Listers.of(replicasets=[rs])
    nis = [node_info(make_node(f"n{i}", cpu="64", memory="256Gi", labels={"kubernetes.io/hostname": f"n{i}"}))
           for i in range(4)]
    by_name = {ni.name: ni for ni in nis}
    rng = random.Random(7)
    placed = []
    for i in range(8):
        raw = make_pod(f"web-{i}", cpu="10m", memory="10Mi", owner="web")
        raw["metadata"]["labels"] = {"app": "web"}
        raw["metadata"]["ownerReferences"][0]["apiVersion"] = "apps/v1"
        pod = PodInfo(raw)
        result = schedule_one(pod, nis, filters=default_filters(listers), scorers=default_scorers(listers), rng=rng)
        assert result.node is not None
        by_name[result.node].add_pod(pod)
        placed.append(result.node)
    assert sorted(placed[:4]) == ["n0", "n1", "n2", "n3"]  # one each before any doubles up
    assert all(ni.pod_count == 2 for ni in nis)


def test_soft_taint_and_preferred_affinity_steer_the_choice() -> None:
    nis = [
        node_info(make_node("tainted", taints=[taint("spot", "", "PreferNoSchedule")])),
        node_info(make_node("plain")),
        node_info(make_node("ssd", labels={"disk": "ssd"}, taints=[taint("spot", "", "PreferNoSchedule")])),
    ]
    assert schedule(make_pod(cpu="100m"), nis).node == "plain"
    likes_ssd = make_pod(
        cpu="100m",
        affinity={
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "preference": term(expr("disk", "In", "ssd"))}
                ]
            }
        },
    )
    # Affinity (2 × 100) does not outweigh the soft taint (3 × 100).
    assert schedule(likes_ssd, nis).node == "plain"
    tolerant = {**likes_ssd, "spec": {**likes_ssd["spec"], "tolerations": [tol("spot", "Exists")]}}
    assert schedule(tolerant, nis).node == "ssd"


def test_ties_are_broken_by_the_rng_deterministically() -> None:
    nis = [node_info(make_node(f"n{i}")) for i in range(10)]
    picks = [schedule(make_pod(f"p{seed}"), nis, seed=seed).node for seed in range(30)]
    again = [schedule(make_pod(f"p{seed}"), nis, seed=seed).node for seed in range(30)]
    assert picks == again
    assert len(set(picks)) > 3  # identical nodes: the choice really is spread


def test_schedule_one_leaves_node_infos_alone() -> None:
    nis = [node_info(make_node("a")), node_info(make_node("b"))]
    schedule(make_pod(cpu="1"), nis)
    assert all(ni.pod_count == 0 and ni.requested_milli_cpu == 0 for ni in nis)


@pytest.mark.parametrize(
    "num_nodes,percentage,want",
    [(0, 0, 0), (50, 0, 50), (100, 0, 100), (500, 0, 230), (1000, 0, 420), (5000, 0, 500), (10000, 0, 500),
     (500, 10, 100), (500, 100, 500), (1000, 30, 300)],
)
def test_num_feasible_nodes_to_find(num_nodes: int, percentage: int, want: int) -> None:
    assert num_feasible_nodes_to_find(num_nodes, percentage) == want


def test_max_feasible_stops_early_and_rotates() -> None:
    nis = [node_info(make_node(f"n{i}")) for i in range(10)]
    nis[2] = node_info(make_node("n2", cpu="100m"))
    kwargs: dict[str, Any] = {"filters": default_filters(), "scorers": default_scorers(), "rng": random.Random(0)}
    result = schedule_one(make_pod(cpu="1"), nis, max_feasible=3, start=0, **kwargs)
    assert set(result.scores) == {"n0", "n1", "n3"}  # n2 examined and rejected, n4.. never looked at
    assert result.filter_reasons == {"n2": ["Insufficient cpu"]}
    assert result.next_start == 4
    result = schedule_one(make_pod(cpu="1"), nis, max_feasible=3, start=8, **kwargs)
    assert set(result.scores) == {"n8", "n9", "n0"} and result.next_start == 1
    # With nothing feasible every node is examined, so the message covers all.
    result = schedule_one(make_pod(cpu="100"), nis, max_feasible=3, start=5, **kwargs)
    assert result.node is None and len(result.statuses) == 10 and result.next_start == 5


def test_five_hundred_nodes_schedule() -> None:
    """Correctness at benchmark scale; the speed itself is bench/scheduler.py's business, not a test's."""
    nis = [
        node_info(
            make_node(f"n{i}", cpu="16", memory="64Gi", labels={"zone": f"z{i % 3}"},
                      taints=[taint("spot", "", "PreferNoSchedule")] if i % 10 == 0 else None),
            [make_pod(f"p{i}-{j}", cpu="100m", memory="128Mi", owner=f"rs{j}") for j in range(5)],
        )
        for i in range(500)
    ]
    pods = [PodInfo(make_pod(f"new{k}", cpu="100m", memory="128Mi", owner="rs1")) for k in range(20)]
    filters, scorers = default_filters(), default_scorers()
    rng = random.Random(0)
    for pod in pods:
        result = schedule_one(pod, nis, filters=filters, scorers=scorers, rng=rng)
        assert result.node is not None
        # rs1 has a pod on every node, so spreading ties them all: the spot nodes'
        # PreferNoSchedule taint decides, and they lose.
        assert int(result.node[1:]) % 10 != 0, result.node


# ImageLocality (upstream's image_locality cases: sizes in MiB, two nodes)

def image_node(name: str, **images_mib: int) -> dict[str, Any]:
    node = make_node(name)
    node["status"]["images"] = [{"names": [f"gcr.io/{img}:latest", f"gcr.io/{img}@sha256:{img:0>64}"],
                                 "sizeBytes": mib * Mi} for img, mib in images_mib.items()]
    return node


def image_pod(*images: str) -> dict[str, Any]:
    return make_pod(containers=[{"name": f"c{i}", "image": image} for i, image in enumerate(images)])


def image_scores(pod: dict[str, Any], nodes: list[dict[str, Any]]) -> list[int] | None:
    plugin = ImageLocality()
    nis = [node_info(n) for n in nodes]
    info = PodInfo(pod)
    ctx = SchedulingContext(nis, nis)
    if not plugin.pre_score(info, ctx):
        return None
    return [plugin.score(info, ni, ctx) for ni in nis]


@pytest.mark.parametrize("pod,want", [
    # 40 MiB on node1 only (half the nodes): 20 MiB counts, under the 23 MiB floor -> 0;
    # 250 MiB on node2 only: 125 MiB -> 100 * (125 - 23) / (2000 - 23) = 5.
    (image_pod("gcr.io/40", "gcr.io/250"), [0, 5]),
    # 40 + 300 both on node1: (20 + 150) MiB -> 100 * 147 / 1977 = 7.
    (image_pod("gcr.io/40", "gcr.io/300:latest"), [7, 0]),
    # 2000 MiB on half the nodes, one container: 1000 MiB counts, the ceiling -> 100.
    (image_pod("gcr.io/2000"), [100, 0]),
])
def test_image_locality_scores(pod: dict[str, Any], want: list[int]) -> None:
    nodes = [image_node("node1", **{"40": 40, "300": 300, "2000": 2000}), image_node("node2", **{"250": 250, "10": 10})]
    assert image_scores(pod, nodes) == want


def test_image_locality_spread_scales_an_image_every_node_has() -> None:
    # 500 MiB on both nodes: spread 1, the full size counts on each -> 100 * 477 / 977 = 48;
    # on one of two nodes only half of it counts -> 100 * 227 / 977 = 23.
    assert image_scores(image_pod("gcr.io/big"), [image_node("a", big=500), image_node("b", big=500)]) == [48, 48]
    assert image_scores(image_pod("gcr.io/big"), [image_node("a", big=500), image_node("b")]) == [23, 0]


def test_image_locality_matches_names_as_the_runtime_normalizes_them() -> None:
    node = make_node("n")
    node["status"]["images"] = [{"names": ["docker.io/library/busybox:latest"], "sizeBytes": 500 * Mi}]
    assert image_scores(image_pod("busybox"), [node, make_node("m")]) == [23, 0]


def test_image_locality_skips_pods_whose_images_no_node_has() -> None:
    assert image_scores(image_pod("gcr.io/nowhere"), [image_node("a", big=1000)]) is None


def test_ctr_image_list_becomes_node_status_images() -> None:
    out = (
        "REF TYPE DIGEST SIZE PLATFORMS LABELS\n"
        "kubepy.local/app:1 application/vnd.oci.image.manifest.v1+json sha256:aaa 1.0 MiB linux/amd64 x=y\n"
        "sha256:ccc application/vnd.oci.image.manifest.v1+json sha256:aaa 1.0 MiB linux/amd64 x=y\n"
        "docker.io/library/busybox:1.36 application/vnd.oci.image.index.v1+json sha256:bbb 2.5 MiB "
        "linux/amd64,linux/arm64 -\n"
    )
    assert parse_ctr_images(out) == [
        {"names": ["docker.io/library/busybox@sha256:bbb", "docker.io/library/busybox:1.36"],
         "sizeBytes": int(2.5 * Mi)},
        {"names": ["kubepy.local/app@sha256:aaa", "kubepy.local/app:1"], "sizeBytes": Mi},
    ]
