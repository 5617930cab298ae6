"""DaemonSets through the API server in process: defaults, validation with
Kubernetes' messages, the table ``kubectl get ds`` prints, generation, and the
strategic-merge patch ``kubectl rollout undo`` sends (a ControllerRevision's
``data``, whose template carries ``"$patch": "replace"``)."""

from __future__ import annotations

import copy
from typing import Any

from kubepy.controllers import history
from tests.api.test_semantics import api, call  # noqa: F401 - the fixture

DS = "/apis/apps/v1/namespaces/default/daemonsets"
SMP = "application/strategic-merge-patch+json"


def daemonset(name: str = "agent", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "agent", "image": "busybox:1.36",
                                                           "env": [{"name": "A", "value": "1"}]}],
                                           "nodeSelector": {"kubernetes.io/os": "linux"}}},
                     **spec}}


async def test_create_defaults_and_zero_status(api):
    ds = await call(api, "POST", DS, daemonset(), status=201)
    spec = ds["spec"]
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert spec["revisionHistoryLimit"] == 10
    tspec = spec["template"]["spec"]
    assert (tspec["restartPolicy"], tspec["dnsPolicy"], tspec["terminationGracePeriodSeconds"]) == \
        ("Always", "ClusterFirst", 30)
    assert tspec["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert ds["status"] == {"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0,
                            "numberReady": 0}
    assert ds["metadata"]["generation"] == 1
    assert ds["metadata"]["annotations"] == {"deprecated.daemonset.template.generation": "1"}
    on_delete = await call(api, "POST", DS, daemonset("od", updateStrategy={"type": "OnDelete"}), status=201)
    assert on_delete["spec"]["updateStrategy"] == {"type": "OnDelete"}


async def test_validation_messages(api):
    bad = daemonset()
    bad["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%", "maxSurge": 1}}
    bad["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    body = await call(api, "POST", DS, bad, status=422)
    causes = {(c["field"], c["message"]) for c in body["details"]["causes"]}
    assert ("spec.updateStrategy.rollingUpdate.maxSurge",
            'Invalid value: intstr.IntOrString{Type:0, IntVal:1, StrVal:""}: '
            "may not be set when maxUnavailable is non-zero") in causes
    assert ("spec.template.spec.restartPolicy", 'Unsupported value: "OnFailure": supported values: "Always"') in causes
    assert ("spec.template.metadata.labels",
            'Invalid value: {"app":"other"}: `selector` does not match template `labels`') in causes
    zero = daemonset()
    zero["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}}
    body = await call(api, "POST", DS, zero, status=422)
    assert [(c["field"], c["message"]) for c in body["details"]["causes"]] == [
        ("spec.updateStrategy.rollingUpdate.maxUnavailable", "Required value: cannot be 0 when maxSurge is 0")]
    surge = daemonset()
    surge["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0,
                                                                                   "maxSurge": "150%"}}
    body = await call(api, "POST", DS, surge, status=422)
    assert body["details"]["causes"][0]["message"] == \
        'Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:"150%"}: must not be greater than 100%'
    kind = daemonset()
    kind["spec"]["updateStrategy"] = {"type": "Recreate"}
    body = await call(api, "POST", DS, kind, status=422)
    assert body["details"]["causes"][0]["field"] == "spec.updateStrategy"
    assert 'supported values: "RollingUpdate", "OnDelete"' in body["details"]["causes"][0]["message"]


async def test_selector_is_immutable_and_generation_follows_the_spec(api):
    await call(api, "POST", DS, daemonset(), status=201)
    body = await call(api, "PATCH", f"{DS}/agent", {"spec": {"selector": {"matchLabels": {"app": "agent", "x": "y"}},
                                                             "template": {"metadata": {"labels": {"x": "y"}}}}},
                      content_type=SMP, status=422)
    assert ("spec.selector", "field is immutable") in {(c["field"], c["message"].rsplit(": ", 1)[-1])
                                                       for c in body["details"]["causes"]}
    ds = await call(api, "PATCH", f"{DS}/agent", {"spec": {"minReadySeconds": 5}}, content_type=SMP)
    assert ds["metadata"]["generation"] == 2  # the spec changed, not the template:
    assert ds["metadata"]["annotations"]["deprecated.daemonset.template.generation"] == "1"
    ds = await call(api, "PATCH", f"{DS}/agent/status", {"status": {"numberReady": 1, "observedGeneration": 2}},
                    content_type="application/merge-patch+json")
    assert ds["metadata"]["generation"] == 2 and ds["status"]["numberReady"] == 1


async def test_rollout_undo_patch_replaces_the_template(api):
    """kubectl rollout undo sends the revision's data as a strategic merge patch:
    the whole template is replaced, so fields the new template added go away."""
    old = await call(api, "POST", DS, daemonset(), status=201)
    data = history.revision_data(old)
    newer = copy.deepcopy(old["spec"]["template"])
    newer["spec"]["containers"][0]["image"] = "busybox:1.37"
    newer["spec"]["containers"][0]["env"].append({"name": "B", "value": "2"})
    newer["metadata"]["annotations"] = {"added": "later"}
    newer["spec"].pop("nodeSelector")
    await call(api, "PATCH", f"{DS}/agent", {"spec": {"template": newer}}, content_type=SMP)
    back = await call(api, "PATCH", f"{DS}/agent", data, content_type=SMP)
    assert back["spec"]["template"] == old["spec"]["template"]
    assert back["metadata"]["generation"] == 3
    assert back["metadata"]["annotations"]["deprecated.daemonset.template.generation"] == "3"


async def test_table_columns_and_cells(api):
    await call(api, "POST", DS, daemonset(), status=201)
    resp = await api.get(DS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    table = await resp.json()
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "Desired", "Current", "Ready", "Up-to-date", "Available", "Node Selector", "Age",
        "Containers", "Images", "Selector"]
    assert [c["priority"] for c in table["columnDefinitions"]][-3:] == [1, 1, 1]
    cells = table["rows"][0]["cells"]
    assert cells[:7] == ["agent", 0, 0, 0, 0, 0, "kubernetes.io/os=linux"]
    assert cells[8:] == ["agent", "busybox:1.36", "app=agent"]


async def test_status_writes_are_validated(api):
    """ValidateDaemonSetStatusUpdate: counters never negative, collisionCount never decremented."""
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "st"},
          "spec": {"selector": {"matchLabels": {"app": "st"}},
                   "template": {"metadata": {"labels": {"app": "st"}},
                                "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}}
    path = "/apis/apps/v1/namespaces/default/daemonsets"
    made = await call(api, "POST", path, ds, status=201)
    status_path = f"{path}/st/status"
    await call(api, "PATCH", status_path, {"status": {"numberReady": 1, "collisionCount": 2}},
               content_type="application/merge-patch+json")
    bad = await call(api, "PATCH", status_path, {"status": {"numberReady": -1, "collisionCount": 1}},
                     content_type="application/merge-patch+json", status=422)
    fields = {c["field"]: c["message"] for c in bad["details"]["causes"]}
    assert fields["status.numberReady"].endswith("must be greater than or equal to 0")
    assert fields["status.collisionCount"].endswith("cannot be decremented")
    assert made["metadata"]["name"] == "st"
