"""Persistent-volume controller and the protection controllers against the
FakeAPI: the binding matrix (size, smallest fit, access modes, class,
selector, volumeName and claimRef pre-binding), delayed binding, local-path
provisioning with capacity, reclaim (Retain → Released, Delete of a
provisioned volume left to its kubelet, Delete of a static one → Failed),
lost claims, and the pvc-/pv-protection finalizers."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubepy import kinds
from kubepy.controllers.context import ControllerConfig, ControllerContext, InformerFactory
from kubepy.controllers.persistentvolume import WAIT_FOR_FIRST_CONSUMER, PersistentVolumeController
from kubepy.controllers.volumeprotection import PVCProtectionController, PVProtectionController, claim_in_use
from kubepy.kinds.validation import default_object
from kubepy.meta import volumes
from kubepy.testing.fakeapi import FakeAPI
from tests.controllers.test_replicaset import FakeRecorder

NS = "default"


def _made(resource: str, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as the API server would store it (create-time finalizers, defaults)."""
    k = next(k for k in kinds.all_kinds() if k.plural == resource)
    k.strategy.prepare_create(obj)
    default_object(k, obj)
    return obj


def pv(name: str, size: str = "1Gi", *, modes: tuple[str, ...] = ("ReadWriteOnce",), sc: str = "",
       labels: dict | None = None, policy: str = "Retain", **spec: Any) -> dict[str, Any]:
    body = {"capacity": {"storage": size}, "accessModes": list(modes), "hostPath": {"path": f"/srv/{name}"},
            "persistentVolumeReclaimPolicy": policy, **spec}
    if sc:
        body["storageClassName"] = sc
    return _made("persistentvolumes", {"metadata": {"name": name, "labels": labels or {}}, "spec": body})


def pvc(name: str = "data", size: str = "1Gi", *, modes: tuple[str, ...] = ("ReadWriteOnce",), sc: str | None = "",
        annotations: dict | None = None, **spec: Any) -> dict[str, Any]:
    body = {"accessModes": list(modes), "resources": {"requests": {"storage": size}}, **spec}
    if sc is not None:
        body["storageClassName"] = sc
    return _made("persistentvolumeclaims", {"metadata": {"name": name, "namespace": NS,
                                                         "annotations": annotations or {}}, "spec": body})


def node(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {volumes.HOSTNAME_LABEL: name}}}


def capacity(node_name: str, size: str, directory: str = "/var/lib/kubepy/storage") -> dict[str, Any]:
    return {"metadata": {"name": volumes.capacity_name(node_name), "namespace": volumes.CAPACITY_NAMESPACE,
                         "annotations": {volumes.ANN_LOCAL_PATH_DIR: directory}},
            "storageClassName": "local-path", "capacity": size,
            "nodeTopology": {"matchLabels": {volumes.HOSTNAME_LABEL: node_name}}}


class Cluster:
    def __init__(self) -> None:
        self.api = FakeAPI()
        self.recorder = FakeRecorder()
        ctx = ControllerContext(client=self.api, informers=InformerFactory(self.api),  # type: ignore[arg-type]
                                recorder=self.recorder, config=ControllerConfig())
        self.ctrl = PersistentVolumeController(ctx)
        self.pvc_protection = PVCProtectionController(ctx)
        self.pv_protection = PVProtectionController(ctx)
        self.informers = ctx.informers

    def refresh(self) -> None:
        for resource in ("persistentvolumeclaims", "persistentvolumes", "storageclasses", "csistoragecapacities",
                         "nodes", "pods"):
            self.informers.informer(resource).cache.replace(self.api.objects(resource))

    async def sync(self, rounds: int = 4) -> None:
        for _ in range(rounds):
            self.refresh()
            for c in self.api.objects("persistentvolumeclaims"):
                await self.ctrl.reconcile(f"claim:{c['metadata']['namespace']}/{c['metadata']['name']}")
            self.refresh()
            for v in self.api.objects("persistentvolumes"):
                await self.ctrl.reconcile(f"volume:{v['metadata']['name']}")

    async def protect(self) -> None:
        self.refresh()
        for c in self.api.objects("persistentvolumeclaims"):
            await self.pvc_protection.reconcile(f"{c['metadata']['namespace']}/{c['metadata']['name']}")
        for v in self.api.objects("persistentvolumes"):
            await self.pv_protection.reconcile(v["metadata"]["name"])

    def claim(self, name: str = "data") -> dict[str, Any]:
        return next(c for c in self.api.objects("persistentvolumeclaims", NS) if c["metadata"]["name"] == name)

    def volume(self, name: str) -> dict[str, Any]:
        return next(v for v in self.api.objects("persistentvolumes") if v["metadata"]["name"] == name)

    def events(self, reason: str | None = None) -> list[str]:
        return [m for _, r, m in self.recorder.events if reason in (None, r)]


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


# -- binding --------------------------------------------------------------------------------------
async def test_a_claim_binds_the_smallest_volume_that_fits_and_both_sides_say_so(cluster: Cluster):
    for v in (pv("small", "500Mi"), pv("big", "10Gi"), pv("right", "2Gi"), pv("rwx", "1Gi", modes=("ReadWriteMany",))):
        cluster.api.seed("persistentvolumes", v)
    cluster.api.seed("persistentvolumeclaims", pvc(size="1Gi"))
    await cluster.sync()
    claim, vol = cluster.claim(), cluster.volume("right")
    assert claim["spec"]["volumeName"] == "right"
    assert claim["metadata"]["annotations"][volumes.ANN_BIND_COMPLETED] == "yes"
    assert claim["metadata"]["annotations"][volumes.ANN_BOUND_BY_CONTROLLER] == "yes"
    assert claim["status"] == {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "2Gi"}}
    assert vol["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
    assert vol["metadata"]["annotations"][volumes.ANN_BOUND_BY_CONTROLLER] == "yes"
    assert vol["status"]["phase"] == "Bound"
    assert [cluster.volume(n)["status"]["phase"] for n in ("small", "big", "rwx")] == ["Available"] * 3


@pytest.mark.parametrize("claim,why", [
    (pvc(size="5Gi"), "too big"),
    (pvc(modes=("ReadWriteMany",)), "access mode"),
    (pvc(sc="fast"), "class"),
    (pvc(selector={"matchLabels": {"tier": "db"}}), "selector"),
    (pvc(volumeMode="Block"), "volume mode"),
])
async def test_a_volume_that_does_not_fit_is_not_bound(cluster: Cluster, claim: dict, why: str):
    cluster.api.seed("persistentvolumes", pv("only", "2Gi", labels={"tier": "web"}))
    cluster.api.seed("persistentvolumeclaims", claim)
    await cluster.sync()
    assert cluster.claim()["status"]["phase"] == "Pending", why
    assert cluster.volume("only")["status"]["phase"] == "Available"
    assert "spec" not in cluster.volume("only") or "claimRef" not in cluster.volume("only")["spec"]


async def test_a_selector_and_class_that_match_bind(cluster: Cluster):
    cluster.api.seed("persistentvolumes", pv("db", "2Gi", sc="manual", labels={"tier": "db"}))
    cluster.api.seed("persistentvolumes", pv("web", "1Gi", sc="manual", labels={"tier": "web"}))
    cluster.api.seed("persistentvolumeclaims", pvc(sc="manual", selector={"matchLabels": {"tier": "db"}}))
    await cluster.sync()
    assert cluster.claim()["spec"]["volumeName"] == "db"


async def test_no_class_and_no_volume_says_why(cluster: Cluster):
    cluster.api.seed("persistentvolumeclaims", pvc())
    await cluster.sync()
    assert cluster.claim()["status"]["phase"] == "Pending"
    assert cluster.events("FailedBinding") == ["no persistent volumes available for this claim and no storage "
                                               "class is set"]


async def test_volume_name_prebinds_even_to_a_bigger_volume(cluster: Cluster):
    cluster.api.seed("persistentvolumes", pv("fit", "1Gi"))
    cluster.api.seed("persistentvolumes", pv("chosen", "5Gi"))
    cluster.api.seed("persistentvolumeclaims", pvc(volumeName="chosen"))
    await cluster.sync()
    claim = cluster.claim()
    assert claim["spec"]["volumeName"] == "chosen" and claim["status"]["phase"] == "Bound"
    assert volumes.ANN_BOUND_BY_CONTROLLER not in claim["metadata"]["annotations"]  # the user chose it
    assert cluster.volume("fit")["status"]["phase"] == "Available"


async def test_claim_ref_prebinds_a_volume_to_its_claim_only(cluster: Cluster):
    cluster.api.seed("persistentvolumes", pv("reserved", "1Gi", claimRef={"namespace": NS, "name": "other"}))
    cluster.api.seed("persistentvolumeclaims", pvc("data"))
    cluster.api.seed("persistentvolumeclaims", pvc("other"))
    await cluster.sync()
    assert cluster.claim("other")["spec"]["volumeName"] == "reserved"
    assert cluster.claim("data")["status"]["phase"] == "Pending"
    assert volumes.ANN_BOUND_BY_CONTROLLER not in cluster.volume("reserved")["metadata"].get("annotations", {})


async def test_a_prebound_claim_whose_volume_is_taken_waits(cluster: Cluster):
    cluster.api.seed("persistentvolumeclaims", pvc("first"))
    cluster.api.seed("persistentvolumes", pv("one"))
    await cluster.sync()
    cluster.api.seed("persistentvolumeclaims", pvc("second", volumeName="one"))
    await cluster.sync()
    assert cluster.claim("second")["status"]["phase"] == "Pending"
    assert 'volume "one" already bound to a different claim.' in cluster.events("FailedBinding")


# -- delayed binding and local-path provisioning --------------------------------------------------
def _local_path(cluster: Cluster, *nodes: tuple[str, str]) -> None:
    cluster.api.seed("storageclasses", _made("storageclasses", volumes.local_path_class()))
    for name, size in nodes:
        cluster.api.seed("nodes", node(name))
        cluster.api.seed("csistoragecapacities", capacity(name, size, f"/var/lib/kubepy/{name}/storage"))


async def test_wait_for_first_consumer_then_provision_on_the_selected_node(cluster: Cluster):
    _local_path(cluster, ("n1", "10Gi"), ("n2", "10Gi"))
    cluster.api.seed("persistentvolumeclaims", pvc(sc="local-path"))
    await cluster.sync()
    assert cluster.claim()["status"]["phase"] == "Pending"
    assert cluster.events("WaitForFirstConsumer") == [WAIT_FOR_FIRST_CONSUMER]  # once, however often synced
    assert cluster.api.objects("persistentvolumes") == []
    # the scheduler placed the claim's pod on n2
    await cluster.api.patch("persistentvolumeclaims", "data", {"metadata": {"annotations": {
        volumes.ANN_SELECTED_NODE: "n2"}}}, namespace=NS)
    await cluster.sync()
    claim = cluster.claim()
    name = f"pvc-{claim['metadata']['uid']}"
    vol = cluster.volume(name)
    assert claim["spec"]["volumeName"] == name and claim["status"]["phase"] == "Bound"
    assert claim["metadata"]["annotations"][volumes.ANN_STORAGE_PROVISIONER] == "kubepy.io/local-path"
    assert vol["spec"]["hostPath"] == {"path": f"/var/lib/kubepy/n2/storage/{name}", "type": "DirectoryOrCreate"}
    assert vol["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]
    assert vol["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert vol["metadata"]["annotations"][volumes.ANN_PROVISIONED_BY] == "kubepy.io/local-path"
    assert vol["status"]["phase"] == "Bound"
    assert cluster.events("ProvisioningSucceeded") == [f"Successfully provisioned volume {name}"]


async def test_a_static_volume_on_the_selected_node_is_preferred_to_provisioning(cluster: Cluster):
    _local_path(cluster, ("n1", "10Gi"), ("n2", "10Gi"))
    affinity = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}
    cluster.api.seed("persistentvolumes", pv("on-n1", sc="local-path", nodeAffinity=affinity))
    cluster.api.seed("persistentvolumeclaims", pvc("a", sc="local-path",
                                                   annotations={volumes.ANN_SELECTED_NODE: "n2"}))
    cluster.api.seed("persistentvolumeclaims", pvc("b", sc="local-path",
                                                   annotations={volumes.ANN_SELECTED_NODE: "n1"}))
    await cluster.sync()
    assert cluster.claim("b")["spec"]["volumeName"] == "on-n1"
    assert cluster.claim("a")["spec"]["volumeName"].startswith("pvc-")  # n2: provisioned


async def test_a_claim_no_node_can_hold_stays_pending_with_a_warning(cluster: Cluster):
    _local_path(cluster, ("n1", "10Gi"), ("n2", "20Gi"))
    cluster.api.seed("persistentvolumeclaims", pvc(size="100Ti", sc="local-path"))
    await cluster.sync()
    assert cluster.claim()["status"]["phase"] == "Pending"
    assert cluster.events("ProvisioningFailed") == [
        'no node has 100Ti of free storage for class local-path (the most is 20Gi, on node "n2")']
    # selected anyway (a scheduler that ignores capacity): still not provisioned
    await cluster.api.patch("persistentvolumeclaims", "data", {"metadata": {"annotations": {
        volumes.ANN_SELECTED_NODE: "n1"}}}, namespace=NS)
    await cluster.sync()
    assert cluster.api.objects("persistentvolumes") == []
    assert 'node "n1" has 10Gi of free storage, the claim requests 100Ti' in cluster.events("ProvisioningFailed")
    # ... and the node is given up, so the scheduler (waiting in PreBind) places the pod again.
    assert volumes.ANN_SELECTED_NODE not in cluster.claim()["metadata"].get("annotations", {})


async def test_a_node_that_published_nothing_is_not_provisioned_on(cluster: Cluster):
    _local_path(cluster)
    cluster.api.seed("nodes", node("n3"))
    cluster.api.seed("persistentvolumeclaims", pvc(sc="local-path", annotations={volumes.ANN_SELECTED_NODE: "n3"}))
    await cluster.sync(rounds=1)
    assert cluster.api.objects("persistentvolumes") == []
    assert cluster.events("ProvisioningFailed") == [
        'node "n3" has not published its local-path storage (kube-system/local-path-n3): is its kubelet running?']


async def test_an_external_provisioner_is_waited_for(cluster: Cluster):
    cluster.api.seed("storageclasses", _made("storageclasses", {"metadata": {"name": "ext"},
                                                                "provisioner": "example.com/disk"}))
    cluster.api.seed("persistentvolumeclaims", pvc(sc="ext"))
    await cluster.sync()
    claim = cluster.claim()
    assert claim["metadata"]["annotations"][volumes.ANN_STORAGE_PROVISIONER] == "example.com/disk"
    assert cluster.events("ExternalProvisioning")[0].startswith(
        "Waiting for a volume to be created either by the external provisioner 'example.com/disk'")


# -- reclaim, lost claims -------------------------------------------------------------------------
async def _bound(cluster: Cluster, volume: dict) -> None:
    cluster.api.seed("persistentvolumes", volume)
    cluster.api.seed("persistentvolumeclaims", pvc(sc=volume["spec"].get("storageClassName", "")))
    await cluster.sync()
    assert cluster.claim()["status"]["phase"] == "Bound"
    cluster.api._objects["persistentvolumeclaims"].clear()  # the claim is gone (finalizers done)


async def test_retain_leaves_the_volume_released(cluster: Cluster):
    await _bound(cluster, pv("keep", policy="Retain"))
    await cluster.sync()
    vol = cluster.volume("keep")
    assert vol["status"]["phase"] == "Released" and vol["spec"]["claimRef"]["name"] == "data"


async def test_delete_of_a_static_volume_fails_as_kubernetes_without_a_deleter(cluster: Cluster):
    await _bound(cluster, pv("static", policy="Delete"))
    await cluster.sync()
    vol = cluster.volume("static")
    assert vol["status"]["phase"] == "Failed"
    assert vol["status"]["message"] == ('error getting deleter volume plugin for volume "static": no deletable '
                                        "volume plugin matched")


async def test_delete_of_a_provisioned_volume_is_left_released_for_its_kubelet(cluster: Cluster):
    vol = pv("pvc-1", policy="Delete", sc="manual")
    vol["metadata"]["annotations"] = {volumes.ANN_PROVISIONED_BY: volumes.LOCAL_PATH_PROVISIONER}
    await _bound(cluster, vol)
    await cluster.sync()
    assert cluster.volume("pvc-1")["status"]["phase"] == "Released"


async def test_a_bound_claim_whose_volume_vanished_is_lost(cluster: Cluster):
    cluster.api.seed("persistentvolumes", pv("gone"))
    cluster.api.seed("persistentvolumeclaims", pvc())
    await cluster.sync()
    cluster.api._objects["persistentvolumes"].clear()
    await cluster.sync()
    assert cluster.claim()["status"]["phase"] == "Lost"
    assert cluster.events("ClaimLost") == ["Bound claim has lost its PersistentVolume. Data on the volume is lost!"]


# -- protection ---------------------------------------------------------------------------------
def pod(name: str, claim: str, *, node_name: str = "n1", phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS},
            "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "busybox"}],
                     "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]},
            "status": {"phase": phase}}


def test_claim_in_use_counts_scheduled_unfinished_pods_only():
    claim = pvc()
    assert claim_in_use(claim, [pod("a", "data")]) == "default/a"
    assert claim_in_use(claim, [pod("a", "data", phase="Succeeded"), pod("b", "other")]) is None
    assert claim_in_use(claim, [pod("a", "data", node_name="")]) is None


async def test_a_claim_in_use_stays_terminating_until_its_pod_is_gone(cluster: Cluster):
    cluster.api.seed("persistentvolumeclaims", pvc())
    cluster.api.seed("pods", pod("user", "data"))
    assert cluster.claim()["metadata"]["finalizers"] == [volumes.PVC_PROTECTION]
    await cluster.api.delete("persistentvolumeclaims", "data", namespace=NS)
    await cluster.protect()
    assert cluster.claim()["metadata"]["deletionTimestamp"]
    await cluster.api.delete("pods", "user", namespace=NS, grace_period_seconds=0)
    await cluster.protect()
    assert cluster.api.objects("persistentvolumeclaims") == []


async def test_a_bound_volume_stays_until_released(cluster: Cluster):
    cluster.api.seed("persistentvolumes", pv("v1"))
    cluster.api.seed("persistentvolumeclaims", pvc())
    await cluster.sync()
    await cluster.api.delete("persistentvolumes", "v1")
    await cluster.protect()
    assert cluster.volume("v1")["metadata"]["deletionTimestamp"]  # Bound: kept
    cluster.api._objects["persistentvolumeclaims"].clear()
    await cluster.sync()
    await cluster.protect()
    assert cluster.api.objects("persistentvolumes") == []


def test_the_protection_finalizers_are_added_on_create():
    assert pv("x")["metadata"]["finalizers"] == [volumes.PV_PROTECTION]
    assert copy.deepcopy(pvc())["metadata"]["finalizers"] == [volumes.PVC_PROTECTION]
