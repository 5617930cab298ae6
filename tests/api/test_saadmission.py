"""ServiceAccount admission in process: the kube-api-access volume, opting out, missing accounts."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from kubepy.api.saadmission import MOUNT_PATH
from tests.api.test_semantics import NS, PODS, api, call  # noqa: F401 - api is a fixture

SAS = f"/api/v1/namespaces/{NS}/serviceaccounts"


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"initContainers": [{"name": "init", "image": "busybox"}],
                     "containers": [{"name": "c", "image": "busybox"}], **spec}}


async def test_every_container_gets_the_service_account_volume(api: TestClient) -> None:
    created = await call(api, "POST", PODS, pod("p"), status=201)
    spec = created["spec"]
    assert spec["serviceAccountName"] == "default"
    [vol] = spec["volumes"]
    assert vol["name"].startswith("kube-api-access-") and len(vol["name"]) == len("kube-api-access-") + 5
    assert vol["projected"] == {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}
    for c in spec["initContainers"] + spec["containers"]:
        assert c["volumeMounts"] == [{"name": vol["name"], "readOnly": True, "mountPath": MOUNT_PATH}]


async def test_opting_out_by_pod_or_by_account(api: TestClient) -> None:
    created = await call(api, "POST", PODS, pod("no", automountServiceAccountToken=False), status=201)
    assert "volumes" not in created["spec"] and "volumeMounts" not in created["spec"]["containers"][0]
    await call(api, "POST", SAS, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "quiet"},
                                  "automountServiceAccountToken": False}, status=201)
    quiet = await call(api, "POST", PODS, pod("quiet", serviceAccountName="quiet"), status=201)
    assert "volumes" not in quiet["spec"]
    # The pod's own word wins over the account's.
    loud = await call(api, "POST", PODS, pod("loud", serviceAccountName="quiet", automountServiceAccountToken=True),
                      status=201)
    assert loud["spec"]["volumes"][0]["name"].startswith("kube-api-access-")


async def test_a_named_account_must_exist(api: TestClient) -> None:
    body = await call(api, "POST", PODS, pod("x", serviceAccountName="ghost"), status=403)
    assert body["message"] == (f'pods "x" is forbidden: error looking up service account {NS}/ghost: '
                               'serviceaccount "ghost" not found')


async def test_a_pod_that_mounts_its_own_credentials_is_left_alone(api: TestClient) -> None:
    own = pod("own", volumes=[{"name": "mine", "emptyDir": {}}])
    for c in own["spec"]["initContainers"] + own["spec"]["containers"]:
        c["volumeMounts"] = [{"name": "mine", "mountPath": MOUNT_PATH}]
    created = await call(api, "POST", PODS, own, status=201)
    assert [v["name"] for v in created["spec"]["volumes"]] == ["mine"]
