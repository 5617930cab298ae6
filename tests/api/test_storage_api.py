"""Storage kinds through the API server in process: PersistentVolume,
PersistentVolumeClaim, StorageClass and CSIStorageCapacity validation with
Kubernetes' messages, the DefaultStorageClass admission, the protection
finalizers, the bootstrap ``local-path`` class, and ``kubectl get`` tables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.api.test_semantics import _serve, call

PVS = "/api/v1/persistentvolumes"
PVCS = "/api/v1/namespaces/default/persistentvolumeclaims"
SCS = "/apis/storage.k8s.io/v1/storageclasses"
CAPS = "/apis/storage.k8s.io/v1/namespaces/kube-system/csistoragecapacities"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[TestClient]:
    async for client in _serve(tmp_path):
        yield client


def pv(name: str = "pv1", **spec: Any) -> dict[str, Any]:
    body = {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/srv/pv1"}}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name}, "spec": body}


def pvc(name: str = "c1", **spec: Any) -> dict[str, Any]:
    body = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": body}


async def table(api: TestClient, path: str) -> dict[str, Any]:
    resp = await api.get(path, headers={"Accept": TABLE})
    assert resp.status == 200
    return await resp.json()


def messages(status: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["field"], c["message"]) for c in status["details"]["causes"]]


async def test_every_cluster_starts_with_the_default_local_path_class(api: TestClient):
    sc = await call(api, "GET", f"{SCS}/local-path")
    assert sc["provisioner"] == "kubepy.io/local-path"
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer" and sc["reclaimPolicy"] == "Delete"
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    t = await table(api, SCS)
    assert [c["name"] for c in t["columnDefinitions"]] == [
        "Name", "Provisioner", "ReclaimPolicy", "VolumeBindingMode", "AllowVolumeExpansion", "Age"]
    assert t["rows"][0]["cells"][:5] == ["local-path (default)", "kubepy.io/local-path", "Delete",
                                         "WaitForFirstConsumer", False]


async def test_a_claim_without_class_gets_the_newest_default_and_the_protection_finalizer(api: TestClient):
    await call(api, "POST", SCS, {"metadata": {"name": "fast", "annotations": {
        "storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "example.com/fast"}, status=201)
    claim = await call(api, "POST", PVCS, pvc(), status=201)
    assert claim["spec"]["storageClassName"] == "fast"  # newer than local-path: it wins
    assert claim["spec"]["volumeMode"] == "Filesystem" and claim["status"]["phase"] == "Pending"
    assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    explicit = await call(api, "POST", PVCS, pvc("c2", storageClassName=""), status=201)
    assert explicit["spec"]["storageClassName"] == ""  # "" means: no class, never the default
    sc = await call(api, "POST", SCS, {"metadata": {"name": "slow"}, "provisioner": "example.com/slow"}, status=201)
    assert (sc["reclaimPolicy"], sc["volumeBindingMode"]) == ("Delete", "Immediate")


async def test_claim_validation_and_immutability(api: TestClient):
    bad = await call(api, "POST", PVCS, pvc(accessModes=[], resources={"requests": {}}), status=422)
    assert messages(bad) == [("spec.accessModes", "Required value: at least 1 access mode is required"),
                             ("spec.resources[storage]", "Required value")]
    bad = await call(api, "POST", PVCS, pvc(accessModes=["Sometimes"], resources={"requests": {"storage": "0"}}),
                     status=422)
    assert ("spec.resources[storage]", 'Invalid value: "0": must be greater than zero') in messages(bad)
    assert messages(bad)[0][1].startswith('Unsupported value: "Sometimes": supported values: "ReadOnlyMany"')
    await call(api, "POST", PVCS, pvc(), status=201)
    changed = await call(api, "PATCH", f"{PVCS}/c1", {"spec": {"accessModes": ["ReadWriteMany"]}},
                         content_type="application/merge-patch+json", status=422)
    field, message = messages(changed)[0]
    assert field == "spec" and message.startswith(
        "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName "
        "for bound claims\n")
    # binding may set volumeName once
    await call(api, "PATCH", f"{PVCS}/c1", {"spec": {"volumeName": "pv1"}},
               content_type="application/merge-patch+json")


async def test_volume_validation_defaults_and_unsupported_sources(api: TestClient):
    made = await call(api, "POST", PVS, pv(), status=201)
    assert made["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert made["status"]["phase"] == "Available"
    assert made["metadata"]["finalizers"] == ["kubernetes.io/pv-protection"]
    bad = await call(api, "POST", PVS, pv("nfs", hostPath=None, nfs={"server": "s", "path": "/x"}), status=422)
    assert messages(bad) == [("spec.nfs", "Forbidden: volume type 'nfs' is not supported by kubepy "
                                          "(supported: hostPath, local)")]
    bad = await call(api, "POST", PVS, pv("none", hostPath=None, capacity={}, accessModes=[]), status=422)
    assert messages(bad) == [("spec.accessModes", "Required value: must specify at least 1 access mode"),
                             ("spec.capacity", "Required value"),
                             ("spec", "Required value: must specify a volume type")]
    bad = await call(api, "POST", PVS, pv("loc", hostPath=None, local={"path": "/srv/x"}), status=422)
    assert messages(bad) == [("spec.nodeAffinity", "Required value: Local volume requires node affinity")]
    moved = await call(api, "PATCH", f"{PVS}/pv1", {"spec": {"hostPath": {"path": "/elsewhere"}}},
                       content_type="application/merge-patch+json", status=422)
    assert messages(moved) == [("spec.persistentvolumesource", "Forbidden: spec.persistentvolumesource is "
                                                               "forbidden once the PersistentVolume is created")]


async def test_storage_class_updates_are_refused_as_kubernetes_does(api: TestClient):
    changed = await call(api, "PATCH", f"{SCS}/local-path", {"provisioner": "x.io/y", "reclaimPolicy": "Retain"},
                         content_type="application/merge-patch+json", status=422)
    assert messages(changed) == [("provisioner", "Forbidden: updates to provisioner are forbidden."),
                                 ("reclaimPolicy", "Forbidden: updates to reclaimPolicy are forbidden.")]
    bad = await call(api, "POST", SCS, {"metadata": {"name": "x"}, "provisioner": "",
                                        "volumeBindingMode": "Later"}, status=422)
    assert messages(bad) == [("provisioner", "Required value"),
                             ("volumeBindingMode", 'Unsupported value: "Later": supported values: "Immediate", '
                                                   '"WaitForFirstConsumer"')]


async def test_get_pv_pvc_tables_are_kubectls(api: TestClient):
    await call(api, "POST", PVS, pv(storageClassName="manual", claimRef={"namespace": "default", "name": "c1"}),
               status=201)
    await call(api, "POST", PVCS, pvc(storageClassName="manual"), status=201)
    t = await table(api, PVS)
    assert [c["name"] for c in t["columnDefinitions"]] == [
        "Name", "Capacity", "Access Modes", "Reclaim Policy", "Status", "Claim", "StorageClass",
        "VolumeAttributesClass", "Reason", "Age", "VolumeMode"]
    assert t["rows"][0]["cells"][:9] == ["pv1", "1Gi", "RWO", "Retain", "Available", "default/c1", "manual",
                                         "<unset>", ""]
    t = await table(api, PVCS)
    assert [c["name"] for c in t["columnDefinitions"]] == [
        "Name", "Status", "Volume", "Capacity", "Access Modes", "StorageClass", "VolumeAttributesClass", "Age",
        "VolumeMode"]
    assert t["rows"][0]["cells"][:7] == ["c1", "Pending", "", "", "", "manual", "<unset>"]
    # field selectors as upstream: metadata.name and the legacy "name"
    listed = await call(api, "GET", PVS, fieldSelector="name=pv1")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["pv1"]


async def test_capacity_is_validated_and_printed(api: TestClient):
    cap = {"metadata": {"name": "local-path-n1"}, "storageClassName": "local-path", "capacity": "10Gi",
           "nodeTopology": {"matchLabels": {"kubernetes.io/hostname": "n1"}}}
    await call(api, "POST", CAPS, cap, status=201)
    t = await table(api, CAPS)
    assert t["rows"][0]["cells"] == ["local-path-n1", "local-path", "10Gi"]
    bad = await call(api, "POST", CAPS, {"metadata": {"name": "x"}, "capacity": "-1"}, status=422)
    assert messages(bad) == [("storageClassName", "Required value"),
                             ("capacity", 'Invalid value: "-1": must be greater than or equal to 0')]
