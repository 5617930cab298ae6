"""StatefulSets through the API in process: defaults, validation with Kubernetes' messages
(the update rule, claim templates), the scale subresource, server-side table, and a
rollback patch (``kubectl rollout undo``'s strategic merge patch with ``$patch: replace``)."""

from __future__ import annotations

import copy
from typing import Any

from aiohttp.test_utils import TestClient

from tests.api.test_semantics import NS, api, call  # noqa: F401 - api is a fixture

STS = f"/apis/apps/v1/namespaces/{NS}/statefulsets"
FORBIDDEN = ("Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
             "'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and "
             "'minReadySeconds' are forbidden")


def sts(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"serviceName": "nginx", "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}, **spec}}


async def test_defaults_scale_table_and_the_update_rule(api: TestClient) -> None:
    made = await call(api, "POST", STS, sts(), status=201)
    spec = made["spec"]
    assert (spec["replicas"], spec["podManagementPolicy"], spec["updateStrategy"], spec["revisionHistoryLimit"],
            spec["persistentVolumeClaimRetentionPolicy"]) == (
        1, "OrderedReady", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}, 10,
        {"whenDeleted": "Retain", "whenScaled": "Retain"})
    assert made["metadata"]["generation"] == 1

    scale = await call(api, "GET", f"{STS}/web/scale")
    assert (scale["kind"], scale["spec"], scale["status"]) == ("Scale", {"replicas": 1},
                                                               {"replicas": 0, "selector": "app=web"})
    await call(api, "PATCH", f"{STS}/web/scale", {"spec": {"replicas": 3}},
               content_type="application/merge-patch+json")
    current = await call(api, "GET", f"{STS}/web")
    assert (current["spec"]["replicas"], current["metadata"]["generation"]) == (3, 2)

    table = await api.get(STS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    body = await table.json()
    assert [c["name"] for c in body["columnDefinitions"]] == ["Name", "Ready", "Age", "Containers", "Images"]
    [row] = body["rows"]
    assert row["cells"][:2] == ["web", "0/3"] and row["cells"][3:] == ["c", "busybox:1.36"]

    changed = copy.deepcopy(current)
    changed["spec"]["serviceName"] = "other"
    bad = await call(api, "PUT", f"{STS}/web", changed, status=422)
    assert [(c["field"], c["message"]) for c in bad["details"]["causes"]] == [("spec", FORBIDDEN)]
    allowed = copy.deepcopy(current)
    allowed["spec"].update(minReadySeconds=5, updateStrategy={"type": "OnDelete"}, revisionHistoryLimit=3,
                           persistentVolumeClaimRetentionPolicy={"whenDeleted": "Delete", "whenScaled": "Retain"})
    await call(api, "PUT", f"{STS}/web", allowed)


async def test_validation_messages(api: TestClient) -> None:
    bad = await call(api, "POST", STS, sts(
        "db", podManagementPolicy="Sometimes", replicas=-1, ordinals={"start": -2},
        updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": -1, "maxUnavailable": 0}},
        persistentVolumeClaimRetentionPolicy={"whenDeleted": "Keep", "whenScaled": "Retain"},
        volumeClaimTemplates=[{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteSometimes"]}}]),
        status=422)
    assert [(c["field"], c["message"]) for c in bad["details"]["causes"]] == [
        ("spec.podManagementPolicy", "Invalid value: \"Sometimes\": must be 'OrderedReady' or 'Parallel'"),
        ("spec.updateStrategy.rollingUpdate.partition", "Invalid value: -1: must be greater than or equal to 0"),
        ("spec.updateStrategy.rollingUpdate.maxUnavailable", "Invalid value: 0: cannot be 0"),
        ("spec.persistentVolumeClaimRetentionPolicy.whenDeleted",
         'Unsupported value: "Keep": supported values: "Retain", "Delete"'),
        ("spec.replicas", "Invalid value: -1: must be greater than or equal to 0"),
        ("spec.ordinals.start", "Invalid value: -2: must be greater than or equal to 0"),
        ("spec.volumeClaimTemplates[0].spec.accessModes",
         'Unsupported value: "ReadWriteSometimes": supported values: "ReadOnlyMany", "ReadWriteMany", '
         '"ReadWriteOnce", "ReadWriteOncePod"'),
        ("spec.volumeClaimTemplates[0].spec.resources.requests[storage]", "Required value"),
    ]
    # a mount of a claim template is a mount of a volume; of nothing, it is not
    mounted = sts("db", volumeClaimTemplates=[{"metadata": {"name": "data"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}])
    mounted["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    made = await call(api, "POST", STS, mounted, status=201)
    [claim] = made["spec"]["volumeClaimTemplates"]
    assert (claim["spec"]["volumeMode"], claim["status"]) == ("Filesystem", {"phase": "Pending"})
    mounted["metadata"]["name"] = "db2"
    mounted["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["name"] = "nothing"
    bad = await call(api, "POST", STS, mounted, status=422)
    assert [c["field"] for c in bad["details"]["causes"]] == ["spec.template.spec.containers[0].volumeMounts[0].name"]
    # names are DNS labels: pods are <name>-<ordinal>
    bad = await call(api, "POST", STS, sts("a.b"), status=422)
    assert bad["details"]["causes"][0]["field"] == "metadata.name"


async def test_rollback_patch_replaces_the_template(api: TestClient) -> None:
    made = await call(api, "POST", STS, sts("undo"), status=201)
    old_template = copy.deepcopy(made["spec"]["template"])
    made["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:1.37"
    made["spec"]["template"]["metadata"]["annotations"] = {"note": "new"}
    await call(api, "PUT", f"{STS}/undo", made)
    patch = {"spec": {"template": {**old_template, "$patch": "replace"}}}
    back = await call(api, "PATCH", f"{STS}/undo", patch, content_type="application/strategic-merge-patch+json")
    assert back["spec"]["template"] == old_template


async def test_status_writes_are_checked(api: TestClient) -> None:
    made = await call(api, "POST", STS, sts("st", replicas=2), status=201)
    made["status"] = {"replicas": 2, "readyReplicas": 3, "availableReplicas": 1, "collisionCount": 1}
    bad = await call(api, "PUT", f"{STS}/st/status", made, status=422)
    assert [(c["field"], c["message"]) for c in bad["details"]["causes"]] == [
        ("status.readyReplicas", "Invalid value: 3: cannot be greater than status.replicas")]
    made["status"]["readyReplicas"] = 2
    written = await call(api, "PUT", f"{STS}/st/status", made)
    written["status"]["collisionCount"] = 0
    bad = await call(api, "PUT", f"{STS}/st/status", written, status=422)
    assert [c["message"] for c in bad["details"]["causes"]] == ["Invalid value: 0: cannot be decremented"]
