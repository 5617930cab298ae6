"""The kubelet's local volumes against the FakeAPI and a temporary root dir:
what a pod mounts for a claim (and the FailedMount reasons while it cannot),
directories made for provisioned volumes, Delete reclaim removing the data
then the volume, Retain keeping both, and the published capacity."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubepy.kubelet.localvolumes import ClaimNotReady, LocalVolumes
from kubepy.meta import volumes
from kubepy.testing.fakeapi import FakeAPI


def provisioned(name: str, root: Path, *, node: str = "n1", phase: str = "Bound", policy: str = "Delete") -> dict:
    return {"metadata": {"name": name, "annotations": {volumes.ANN_PROVISIONED_BY: volumes.LOCAL_PATH_PROVISIONER,
                                                       volumes.ANN_LOCAL_PATH_NODE: node}},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": policy,
                     "hostPath": {"path": str(root / "storage" / name), "type": "DirectoryOrCreate"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
            "status": {"phase": phase}}


def claim(name: str = "data", *, volume: str = "", phase: str = "Pending") -> dict:
    return {"metadata": {"name": name, "namespace": "default"}, "spec": {"volumeName": volume} if volume else {},
            "status": {"phase": phase}}


@pytest.fixture
def api() -> FakeAPI:
    return FakeAPI()


def local(api: FakeAPI, root: Path, **kw) -> LocalVolumes:
    lv = LocalVolumes(api, node_name="n1", root_dir=root, **kw)  # type: ignore[arg-type]
    lv.claims.cache.replace(api.objects("persistentvolumeclaims"))
    lv.volumes.cache.replace(api.objects("persistentvolumes"))
    return lv


def test_a_claim_mounts_its_bound_volume_and_says_why_not_otherwise(api: FakeAPI, tmp_path: Path):
    api.seed("persistentvolumes", provisioned("pvc-1", tmp_path))
    api.seed("persistentvolumeclaims", claim("pending"))
    api.seed("persistentvolumeclaims", claim("data", volume="pvc-1", phase="Bound"))
    api.seed("persistentvolumeclaims", claim("lost", volume="pvc-gone", phase="Bound"))
    lv = local(api, tmp_path)
    got = lv.claim_volume("default", "data", read_only=True)
    assert got.path == tmp_path / "storage" / "pvc-1" and got.path.is_dir() and got.read_only
    with pytest.raises(ClaimNotReady, match='persistentvolumeclaim "nope" not found'):
        lv.claim_path("default", {"claimName": "nope"})
    with pytest.raises(ClaimNotReady, match=r'PVC default/pending has non-bound phase \("Pending"\)'):
        lv.claim_path("default", {"claimName": "pending"})
    with pytest.raises(ClaimNotReady, match='persistentvolume "pvc-gone" not found'):
        lv.claim_path("default", {"claimName": "lost"})


def test_a_volume_of_another_node_is_not_mounted(api: FakeAPI, tmp_path: Path):
    api.seed("persistentvolumes", provisioned("pvc-2", tmp_path, node="n2"))
    api.seed("persistentvolumeclaims", claim("data", volume="pvc-2", phase="Bound"))
    with pytest.raises(ClaimNotReady, match='does not match node "n1"'):
        local(api, tmp_path).claim_path("default", {"claimName": "data"})


async def test_delete_reclaim_removes_the_data_then_the_volume_and_retain_keeps_both(api: FakeAPI, tmp_path: Path):
    api.seed("persistentvolumes", provisioned("pvc-del", tmp_path))
    api.seed("persistentvolumes", provisioned("pvc-keep", tmp_path, policy="Retain"))
    api.seed("persistentvolumes", provisioned("pvc-other", tmp_path, node="n2"))
    lv = local(api, tmp_path)
    await lv.sync_node()
    data = tmp_path / "storage" / "pvc-del"
    assert data.is_dir() and (tmp_path / "storage" / "pvc-keep").is_dir()
    assert not (tmp_path / "storage" / "pvc-other").exists()  # not this node's
    (data / "file").write_text("x")
    for name in ("pvc-del", "pvc-keep"):
        await api.patch("persistentvolumes", name, {"status": {"phase": "Released"}}, subresource="status")
    lv = local(api, tmp_path)
    await lv.sync_node()
    assert not data.exists() and (tmp_path / "storage" / "pvc-keep").is_dir()
    remaining = {v["metadata"]["name"]: v for v in api.objects("persistentvolumes")}
    assert "pvc-del" not in remaining or remaining["pvc-del"]["metadata"].get("deletionTimestamp")
    assert "pvc-keep" in remaining


async def test_capacity_is_published_for_the_node(api: FakeAPI, tmp_path: Path):
    api.seed("persistentvolumes", provisioned("pvc-1", tmp_path))
    lv = local(api, tmp_path, capacity_limit=5 * 2**30)
    await lv.sync_node()
    [cap] = api.objects("csistoragecapacities", "kube-system")
    assert cap["metadata"]["name"] == "local-path-n1"
    assert cap["metadata"]["annotations"][volumes.ANN_LOCAL_PATH_DIR] == str(tmp_path / "storage")
    assert cap["storageClassName"] == "local-path"
    assert cap["nodeTopology"] == {"matchLabels": {"kubernetes.io/hostname": "n1"}}
    assert int(cap["capacity"]) <= 4 * 2**30  # the limit, less the 1Gi volume already there
