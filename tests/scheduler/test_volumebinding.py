"""The VolumeBinding filter, table-driven, and its messages through schedule_one."""

from __future__ import annotations

from typing import Any

import pytest

from kubepy.meta import volumes
from kubepy.scheduler.framework import NodeInfo, PodInfo, schedule_one
from kubepy.scheduler.volumebinding import (
    REASON_BIND_CONFLICT,
    REASON_NODE_CONFLICT,
    REASON_NOT_ENOUGH_SPACE,
    REASON_PV_NOT_EXIST,
    VolumeBinding,
    selected_node_claims,
)

IMMEDIATE = {"metadata": {"name": "fast"}, "provisioner": "example.com/disk", "volumeBindingMode": "Immediate"}
LOCAL = volumes.local_path_class()


class Listers:
    def __init__(self, claims=(), pvs=(), classes=(IMMEDIATE, LOCAL), caps=()):
        self._claims = {c["metadata"]["name"]: c for c in claims}
        self._pvs = {p["metadata"]["name"]: p for p in pvs}
        self._classes = {c["metadata"]["name"]: c for c in classes}
        self._caps = list(caps)

    def claim(self, namespace, name):
        return self._claims.get(name)

    def volume(self, name):
        return self._pvs.get(name)

    def volumes(self):
        return list(self._pvs.values())

    def storage_class(self, name):
        return self._classes.get(name)

    def capacities(self):
        return self._caps


def claim(name="data", *, sc="local-path", volume="", size="1Gi", **ann: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}},
                            "storageClassName": sc}
    if volume:
        spec["volumeName"] = volume
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                         "annotations": {k.replace("_", "/"): v for k, v in ann.items()}}, "spec": spec}


def local_pv(name: str, node: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
        "hostPath": {"path": f"/srv/{name}"}, **spec,
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
        "status": {"phase": "Available"}}


def cap(node: str, size: str) -> dict[str, Any]:
    return {"metadata": {"name": f"local-path-{node}", "namespace": "kube-system"}, "storageClassName": "local-path",
            "capacity": size, "nodeTopology": {"matchLabels": {"kubernetes.io/hostname": node}}}


def pod(*claims: str) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}],
                     "volumes": [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims]}}


def nodes(*names: str) -> list[NodeInfo]:
    return [NodeInfo.from_node({"metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}},
                                "status": {"conditions": [{"type": "Ready", "status": "True"}],
                                           "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}})
            for n in names]


def plugin(listers: Listers) -> VolumeBinding:
    return VolumeBinding(listers, capacity_provisioners=frozenset({volumes.LOCAL_PATH_PROVISIONER}))


BOUND_TO_N1 = [claim(volume="pv1", **{"pv.kubernetes.io_bind-completed": "yes"})]


@pytest.mark.parametrize("listers,node,reasons", [
    (Listers(BOUND_TO_N1, [local_pv("pv1", "n1")]), "n1", ()),
    (Listers(BOUND_TO_N1, [local_pv("pv1", "n1")]), "n2", (REASON_NODE_CONFLICT,)),
    (Listers(BOUND_TO_N1, []), "n1", (REASON_PV_NOT_EXIST,)),
    (Listers([claim()], caps=[cap("n1", "10Gi")]), "n1", ()),
    (Listers([claim(size="20Gi")], caps=[cap("n1", "10Gi")]), "n1", (REASON_NOT_ENOUGH_SPACE,)),
    (Listers([claim()], caps=[cap("n1", "10Gi")]), "n2", (REASON_NOT_ENOUGH_SPACE,)),  # n2 published nothing
    (Listers([claim()], [local_pv("static", "n2")]), "n2", ()),  # a static volume there will do
    (Listers([claim(**{"volume.kubernetes.io_selected-node": "n1"})], caps=[cap("n2", "9Gi")]), "n2",
     (REASON_BIND_CONFLICT,)),
])
def test_filter(listers: Listers, node: str, reasons: tuple[str, ...]):
    status = plugin(listers).filter(PodInfo(pod("data")), nodes(node)[0])
    assert status.reasons == reasons


def test_the_message_as_kubernetes_words_it():
    listers = Listers(BOUND_TO_N1, [local_pv("pv1", "n0")])
    result = schedule_one(pod("data"), nodes("n1", "n2", "n3"), filters=[plugin(listers)], scorers=[])
    assert result.message() == ("0/3 nodes are available: 3 node(s) had volume node affinity conflict. "
                                "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.")
    listers = Listers([claim(size="1Ti")], caps=[cap("n1", "5Gi"), cap("n2", "5Gi")])
    result = schedule_one(pod("data"), nodes("n1", "n2"), filters=[plugin(listers)], scorers=[])
    assert result.message().startswith("0/2 nodes are available: 2 node(s) did not have enough free storage.")


@pytest.mark.parametrize("listers,message", [
    (Listers([]), 'persistentvolumeclaim "data" not found'),
    (Listers([claim(sc="fast")]), "pod has unbound immediate PersistentVolumeClaims"),
])
def test_pre_filter_rejections_speak_for_every_node(listers: Listers, message: str):
    result = schedule_one(pod("data"), nodes("n1", "n2", "n3"), filters=[plugin(listers)], scorers=[])
    assert result.node is None
    assert result.message() == (f"0/3 nodes are available: {message}. preemption: 0/3 nodes are available: "
                                "3 Preemption is not helpful for scheduling.")


def test_a_feasible_node_is_chosen_and_its_claims_get_selected():
    listers = Listers([claim()], caps=[cap("n2", "10Gi")])
    result = schedule_one(pod("data"), nodes("n1", "n2"), filters=[plugin(listers)], scorers=[])
    assert result.node == "n2"
    assert selected_node_claims(pod("data"), listers) == ["data"]
    assert selected_node_claims(pod("data"), Listers(BOUND_TO_N1)) == []


def test_pods_without_claims_are_not_looked_at():
    assert plugin(Listers()).pre_filter(PodInfo(pod())) is False


def test_every_class_of_the_local_path_provisioner_shares_the_nodes_room():
    retain = {**LOCAL, "metadata": {"name": "keep"}, "reclaimPolicy": "Retain"}
    listers = Listers([claim(sc="keep")], classes=(LOCAL, retain), caps=[cap("n1", "10Gi")])
    assert plugin(listers).filter(PodInfo(pod("data")), nodes("n1")[0]).reasons == ()


async def test_the_pod_is_bound_only_once_its_claim_is_and_goes_elsewhere_when_provisioning_fails():
    """PreBind: the scheduler selects a node for the claim and waits; the provisioner
    giving that node up (dropping selected-node) sends the pod to be scheduled again."""
    import asyncio

    from kubepy.scheduler.scheduler import Scheduler
    from kubepy.testing.fakeapi import FakeAPI
    from tests.scheduler.test_scheduler_placement import wait_for

    api = FakeAPI(seed=3)
    api.seed("namespaces", {"metadata": {"name": "default"}})
    for n in nodes("n1", "n2"):
        api.seed("nodes", n.node)
    api.seed("storageclasses", LOCAL)
    for n, size in (("n1", "10Gi"), ("n2", "10Gi")):
        api.seed("csistoragecapacities", cap(n, size))
    api.seed("persistentvolumeclaims", claim())
    api.seed("pods", pod("data"))
    scheduler = Scheduler(api)
    task = asyncio.create_task(scheduler.run())
    selected = volumes.ANN_SELECTED_NODE
    try:
        def the(kind: str) -> dict:
            (obj,) = api.objects(kind, "default")
            return obj

        first = await wait_for(lambda: the("persistentvolumeclaims")["metadata"]["annotations"].get(selected))
        await asyncio.sleep(0.3)
        assert not the("pods")["spec"].get("nodeName")          # waiting for the claim, not bound
        # The node fills up and the provisioner gives it up: the pod is sent back and lands on the other node.
        await api.patch("csistoragecapacities", f"local-path-{first}", {"capacity": "0"}, namespace="kube-system")
        await api.patch("persistentvolumeclaims", "data", {"metadata": {"annotations": {selected: None}}},
                        namespace="default")
        events = await wait_for(lambda: [e["message"] for e in api.objects("events", "default")
                                         if e["reason"] == "FailedScheduling"])
        assert events == ['running PreBind plugin "VolumeBinding": binding volumes: claim "default/data": '
                          'provisioning failed on the selected node']
        second = await wait_for(lambda: the("persistentvolumeclaims")["metadata"]["annotations"].get(selected),
                                timeout=15)
        assert second != first
        # The provisioner binds the claim: now the pod is bound, to that node.
        await api.patch("persistentvolumeclaims", "data", {"spec": {"volumeName": "pvc-x"}}, namespace="default")
        bound = await wait_for(lambda: the("pods")["spec"].get("nodeName"))
        assert bound == second
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await api.close()
