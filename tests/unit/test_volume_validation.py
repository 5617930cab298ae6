"""Pod validation of downwardAPI, projected, configMap/secret items and volumeMounts sub paths,
with Kubernetes' field paths and messages (pkg/apis/core/validation)."""

from __future__ import annotations

from typing import Any

from kubepy.kinds.validation import Errs, default_pod, validate_pod


def errors(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]] | None = None) -> list[tuple[str, str]]:
    pod = {"metadata": {"name": "p", "namespace": "d"},
           "spec": {"containers": [{"name": "c", "image": "i", "volumeMounts": mounts or []}], "volumes": volumes}}
    default_pod(pod, None)
    errs = Errs()
    validate_pod(pod, None, errs)
    return [(e["field"], e["message"]) for e in errs]


def test_a_valid_projected_and_downward_volume_passes_and_gets_defaults():
    vols = [{"name": "a", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token"}},
        {"configMap": {"name": "c", "items": [{"key": "k", "path": "dir/k", "mode": 0o400}]}},
        {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}},
        {"name": "b", "downwardAPI": {"items": [
            {"path": "x", "fieldRef": {"fieldPath": "metadata.annotations['a.b/c']"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory"}}]}}]
    assert errors(vols, [{"name": "a", "mountPath": "/a", "subPathExpr": "$(POD)"}]) == []
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [], "volumes": vols}}
    default_pod(pod, None)
    sources = pod["spec"]["volumes"][0]["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["expirationSeconds"] == 3600
    assert sources[2]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"] == "v1"
    assert pod["spec"]["volumes"][0]["projected"]["defaultMode"] == 0o644


def test_projected_sources_each_of_one_type_with_valid_paths_and_modes():
    vols = [{"name": "a", "projected": {"defaultMode": 0o1000, "sources": [
        {"secret": {"name": "s", "items": [{"key": "k", "path": "../x"}]},
         "configMap": {"name": "c", "items": [{"key": "k", "path": "x", "mode": 512}]}},
        {"serviceAccountToken": {"path": "", "expirationSeconds": 60}},
        {"serviceAccountToken": {"path": "/abs"}},
        {"downwardAPI": {"items": [{"path": "x", "fieldRef": {"fieldPath": "spec.nodeName"}}]}}]}}]
    assert errors(vols) == [
        ("spec.volumes[0].projected.defaultMode",
         "Invalid value: 512: must be a number between 0 and 0777 (octal), both inclusive"),
        ("spec.volumes[0].projected.sources[0].secret.items[0].path", "Invalid value: \"../x\": must not contain '..'"),
        ("spec.volumes[0].projected.sources[0].configMap.items[0].mode",
         "Invalid value: 512: must be a number between 0 and 0777 (octal), both inclusive"),
        ("spec.volumes[0].projected.sources[0]", "Forbidden: may not specify more than 1 volume type"),
        ("spec.volumes[0].projected.sources[1].serviceAccountToken.expirationSeconds",
         "Invalid value: 60: may not specify a duration less than 10 minutes"),
        ("spec.volumes[0].projected.path", "Required value"),
        ("spec.volumes[0].projected.path", 'Invalid value: "/abs": must be a relative path'),
        ("spec.volumes[0].projected.sources[3].downwardAPI.fieldRef.fieldPath",
         'Unsupported value: "spec.nodeName": supported values: "metadata.annotations", "metadata.labels", '
         '"metadata.name", "metadata.namespace", "metadata.uid"'),
        ("spec.volumes[0].projected", 'Invalid value: "x": conflicting duplicate paths'),
    ]


def test_downward_api_items():
    vols = [{"name": "b", "downwardAPI": {"defaultMode": -1, "items": [
        {"path": "..x", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "y"},
        {"path": "z", "resourceFieldRef": {"resource": "limits.gpu"}},
        {"path": "w", "fieldRef": {"fieldPath": "metadata.name['x']"}}]}}]
    assert errors(vols) == [
        ("spec.volumes[0].downwardAPI.defaultMode",
         "Invalid value: -1: must be a number between 0 and 0777 (octal), both inclusive"),
        ("spec.volumes[0].downwardAPI.path", "Invalid value: \"..x\": must not start with '..'"),
        ("spec.volumes[0].downwardAPI", "Required value: one of fieldRef and resourceFieldRef is required"),
        ("spec.volumes[0].downwardAPI.resourceFieldRef.containerName", "Required value"),
        ("spec.volumes[0].downwardAPI.resourceFieldRef.resource",
         'Unsupported value: "limits.gpu": supported values: "limits.cpu", "limits.ephemeral-storage", '
         '"limits.memory", "requests.cpu", "requests.ephemeral-storage", "requests.memory"'),
        ("spec.volumes[0].downwardAPI.fieldRef", 'Invalid value: "metadata.name": does not support subscript'),
    ]


def test_sub_path_expr_rules():
    vols = [{"name": "v", "emptyDir": {}}]
    assert errors(vols, [{"name": "v", "mountPath": "/a", "subPath": "x", "subPathExpr": "$(A)"},
                         {"name": "v", "mountPath": "/b", "subPathExpr": "../$(A)", "mountPropagation": "Sideways"}]) == [
        ("spec.containers[0].volumeMounts[0].subPathExpr",
         'Invalid value: "$(A)": subPathExpr and subPath are mutually exclusive'),
        ("spec.containers[0].volumeMounts[1].subPathExpr", "Invalid value: \"../$(A)\": must not contain '..'"),
        ("spec.containers[0].volumeMounts[1].mountPropagation",
         'Unsupported value: "Sideways": supported values: "Bidirectional", "HostToContainer", "None"'),
    ]
