"""Volume pieces in process: atomic writer with fsGroup, downward API files, projected volumes
(with a fake TokenRequest API: refresh at 80% of the TTL, a 404 names the missing API), tmpfs sizing,
subPathExpr, subPath containment, emptyDir sizeLimit message."""

from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest

from kubepy.client import NotFoundError
from kubepy.kubelet.poderrors import ConfigError, MountError, UnsupportedVolume
from kubepy.kubelet.tokens import Token, TokenManager, requires_refresh
from kubepy.kubelet.volumes import (
    VolumeContext,
    container_mounts,
    downward_files,
    emptydir_over_limit,
    expand_subpath,
    format_map,
    memory_medium_size,
    setup_volumes,
    write_atomic,
)

POD: dict[str, Any] = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"b": "2", "a": 'x"y'},
                 "annotations": {"n": "v"}},
    "spec": {"serviceAccountName": "sa", "containers": [
        {"name": "c", "image": "i", "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}}}]},
}


def test_format_map_sorts_and_quotes_like_go():
    assert format_map({"b": "2", "a": 'x"y'}) == 'a="x\\"y"\nb="2"'
    assert format_map({}) == ""


def test_downward_files_fields_resources_modes():
    src = {"defaultMode": 0o640, "items": [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "a", "fieldRef": {"fieldPath": "metadata.labels['b']"}, "mode": 0o600},
        {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}},
        {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}},
        {"path": "cpu", "resourceFieldRef": {"containerName": "c", "resource": "requests.cpu", "divisor": "1m"}},
        {"path": "cpulim", "resourceFieldRef": {"containerName": "c", "resource": "limits.cpu"}}]}
    files = downward_files(src, POD, {"cpu_milli": 2000, "memory": 1 << 30})
    assert files == {"labels": (b'a="x\\"y"\nb="2"', 0o640), "a": (b"2", 0o600), "uid": (b"u-1", 0o640),
                     "mem": (b"64", 0o640), "cpu": (b"250", 0o640), "cpulim": (b"2", 0o640)}
    with pytest.raises(MountError, match="container nope not found"):
        downward_files({"items": [{"path": "x", "resourceFieldRef": {"containerName": "nope",
                                                                     "resource": "limits.cpu"}}]}, POD, {})


def test_atomic_writer_with_fs_group(tmp_path):
    gid = os.getgid() + 1 if os.geteuid() == 0 else os.getgid()
    t = tmp_path / "vol"
    assert write_atomic(t, {"a": (b"1", 0o600), "d/b": (b"2", 0o644)}, gid=gid)
    data = t / os.readlink(t / "..data")
    assert data.name.startswith("..") and data.name[2:6].isdigit()
    st = (t / "a").stat()
    assert st.st_gid == gid and st.st_mode & 0o777 == 0o640     # g+r added, as SetVolumeOwnership does
    assert (data / "d").stat().st_mode & 0o2000 and (data / "d").stat().st_gid == gid
    assert not write_atomic(t, {"a": (b"1", 0o600), "d/b": (b"2", 0o644)}, gid=gid)


class FakeTokenAPI:
    """The TokenRequest contract: POST .../serviceaccounts/SA/token → status.token/expirationTimestamp."""

    def __init__(self, now: list[float], *, served: bool = True) -> None:
        self.now, self.served, self.calls = now, served, []

    async def create(self, resource: str, body: dict[str, Any], *, namespace: str, subresource: str,
                     name: str) -> dict[str, Any]:
        self.calls.append((resource, namespace, name, subresource, body))
        if not self.served:
            raise NotFoundError(404, "NotFound", "the server could not find the requested resource",
                                {"details": {}})
        exp = int(self.now[0]) + body["spec"]["expirationSeconds"]
        return {**body, "status": {"token": f"tok-{len(self.calls)}",
                                   "expirationTimestamp": dt.datetime.fromtimestamp(exp, dt.UTC)
                                   .strftime("%Y-%m-%dT%H:%M:%SZ")}}


class FakeKubelet:
    def __init__(self, api: FakeTokenAPI, now: list[float]) -> None:
        self.tokens = TokenManager(api, clock=lambda: now[0], jitter=lambda: 0.0)
        self.node_alloc = {"cpu_milli": 2000, "memory": 1 << 30}
        self.objects = {("configmap", "ns", "cm"): {"data": {"k": "v"}},
                        ("secret", "ns", "s"): {"data": {"pw": base64.b64encode(b"pw").decode()}}}

    def get_configmap(self, ns: str, name: str) -> Any:
        return self.objects.get(("configmap", ns, name))

    def get_secret(self, ns: str, name: str) -> Any:
        return self.objects.get(("secret", ns, name))


def projected_pod(*sources: dict[str, Any]) -> dict[str, Any]:
    return {**POD, "spec": {**POD["spec"], "volumes": [
        {"name": "all", "projected": {"defaultMode": 0o644, "sources": list(sources)}}]}}


TOKEN_SRC = {"serviceAccountToken": {"audience": "api", "expirationSeconds": 600, "path": "token"}}


async def test_projected_volume_writes_every_source_and_refreshes_the_token(tmp_path):
    now = [1_800_000_000.0]
    api = FakeTokenAPI(now)
    kubelet, wakes = FakeKubelet(api, now), []
    pod = projected_pod({"configMap": {"name": "cm"}}, {"secret": {"name": "s", "items": [{"key": "pw",
                                                                                             "path": "sec/pw"}]}},
                        {"configMap": {"name": "gone", "optional": True}},
                        {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                        TOKEN_SRC)
    ctx = VolumeContext(kubelet=kubelet, pod=pod, pod_dir=tmp_path, wake_in=wakes.append)
    vol = (await setup_volumes(ctx))["all"]
    assert vol == tmp_path / "volumes" / "kubernetes.io~projected" / "all"
    assert {p: (vol / p).read_text() for p in ("k", "sec/pw", "name", "token")} == {
        "k": "v", "sec/pw": "pw", "name": "p", "token": "tok-1"}
    _, ns, sa, sub, body = api.calls[0]
    assert (ns, sa, sub) == ("ns", "sa", "token") and body["kind"] == "TokenRequest"
    assert body["apiVersion"] == "authentication.k8s.io/v1"
    assert body["spec"] == {"audiences": ["api"], "expirationSeconds": 600,
                            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "u-1"}}
    assert wakes[-1] == pytest.approx(480.5)   # 80% of 600 s, then the worker comes back
    now[0] += 400
    await setup_volumes(ctx)
    assert (vol / "token").read_text() == "tok-1" and len(api.calls) == 1
    now[0] += 81
    await setup_volumes(ctx)
    assert (vol / "token").read_text() == "tok-2" and len(api.calls) == 2
    kubelet.tokens.forget_pod("u-1")
    assert kubelet.tokens.refresh_in("u-1") is None


def test_token_refresh_rules():
    tok = Token("t", expiration=100_000.0, expiration_seconds=10_000)
    assert not requires_refresh(tok, 97_999.0) and requires_refresh(tok, 98_001.0)   # 80% of TTL
    day = Token("t", expiration=200_000.0, expiration_seconds=200_000)
    assert requires_refresh(day, 24 * 3600 + 1.0)   # older than 24 h


async def test_projected_errors_as_kubernetes_gives_them(tmp_path):
    now = [1_800_000_000.0]
    kubelet = FakeKubelet(FakeTokenAPI(now, served=False), now)
    ctx = VolumeContext(kubelet=kubelet, pod=projected_pod(TOKEN_SRC), pod_dir=tmp_path)
    with pytest.raises(MountError, match=r'volume "all" : failed to fetch token: the API server does not serve '
                                         r"the TokenRequest API \(POST /api/v1/namespaces/ns/serviceaccounts/sa/token"):
        await setup_volumes(ctx)
    assert not (tmp_path / "volumes" / "kubernetes.io~projected" / "all" / "token").exists()   # never empty
    for src, msg in (({"configMap": {"name": "nope"}}, 'configmap "nope" not found'),
                     ({"secret": {"name": "s", "items": [{"key": "x", "path": "x"}]}},
                      "references non-existent secret key: x")):
        with pytest.raises(MountError, match=msg):
            await setup_volumes(VolumeContext(kubelet=kubelet, pod=projected_pod(src), pod_dir=tmp_path))
    with pytest.raises(UnsupportedVolume, match="clusterTrustBundle"):
        await setup_volumes(VolumeContext(kubelet=kubelet, pod=projected_pod({"clusterTrustBundle": {}}),
                                          pod_dir=tmp_path))


def test_memory_medium_size_as_upstream():
    gi = 1 << 30
    assert memory_medium_size(node_allocatable=8 * gi, pod_memory_limit=None, size_limit=None) == 8 * gi
    assert memory_medium_size(node_allocatable=8 * gi, pod_memory_limit=gi, size_limit=None) == gi
    assert memory_medium_size(node_allocatable=8 * gi, pod_memory_limit=gi, size_limit=2 * gi) == gi
    assert memory_medium_size(node_allocatable=8 * gi, pod_memory_limit=gi, size_limit=gi // 2) == gi // 2


def test_sub_path_expr_and_containment(tmp_path):
    assert expand_subpath("logs/$(POD)/$$x", {"POD": "p1"}) == "logs/p1/$x"
    with pytest.raises(ConfigError, match="missing value for A, B"):
        expand_subpath("$(B)/$(A)", {"A": ""})
    vol = tmp_path / "v"
    vol.mkdir()
    (vol / "out").symlink_to("/etc")
    pod = {"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}}

    def mounts(m: dict[str, Any], env: dict[str, str] | None = None) -> list[tuple[str, str, bool]]:
        return container_mounts(pod, {"name": "c", "volumeMounts": [{"name": "v", **m}]}, {"v": vol}, env)

    assert mounts({"mountPath": "/m", "subPathExpr": "a/$(P)"}, {"P": "x"}) == [(str(vol / "a" / "x"), "/m", False)]
    assert (vol / "a" / "x").is_dir()
    with pytest.raises(ConfigError, match='failed to prepare subPath for volumeMount "v" of container "c"'):
        mounts({"mountPath": "/m", "subPath": "out"})
    with pytest.raises(ConfigError, match='failed to create subPath directory for volumeMount "v"'):
        mounts({"mountPath": "/m", "subPath": "out/new"})
    with pytest.raises(ConfigError, match="must not contain '..'"):
        mounts({"mountPath": "/m", "subPathExpr": "$(P)"}, {"P": "../x"})
    with pytest.raises(ConfigError, match='mountPropagation "Bidirectional" is not supported'):
        mounts({"mountPath": "/m", "mountPropagation": "Bidirectional"})
    assert mounts({"mountPath": "/m", "readOnly": True})[0][2] is True


def test_emptydir_eviction_message():
    pod = {"spec": {"volumes": [{"name": "x", "emptyDir": {"sizeLimit": "1Mi"}}, {"name": "y", "emptyDir": {}}]}}
    assert emptydir_over_limit(pod, {"x": 1 << 20}) is None
    assert emptydir_over_limit(pod, {"x": (1 << 20) + 4096, "y": 1 << 30}) == \
        'Usage of EmptyDir volume "x" exceeds the limit "1Mi". '


async def test_disk_empty_dir_fs_group(tmp_path):
    gid = os.getgid() + 1 if os.geteuid() == 0 else os.getgid()
    pod = {**POD, "spec": {**POD["spec"], "securityContext": {"fsGroup": gid},
                           "volumes": [{"name": "d", "emptyDir": {}}]}}
    d = (await setup_volumes(VolumeContext(kubelet=None, pod=pod, pod_dir=tmp_path)))["d"]
    assert d.stat().st_gid == gid and d.stat().st_mode & 0o7777 == 0o2777
    assert isinstance(d, Path)
