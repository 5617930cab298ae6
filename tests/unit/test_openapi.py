"""kubepy.api.openapi: documents derived from the kubernetes client models."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from kubepy import kinds
from kubepy.api import openapi

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                 "annotations": {"example.com/any-key": "x"}},
    "spec": {
        "replicas": 2,
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": {"app": "web"},
                     "matchExpressions": [{"key": "tier", "operator": "In",
                                           "values": ["fe"]}]},
        "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}},
        "template": {
            "metadata": {"labels": {"app": "web", "tier": "fe"}},
            "spec": {
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "terminationGracePeriodSeconds": 5,
                "initContainers": [{"name": "init", "image": "busybox",
                                    "command": ["sh", "-c", "true"]}],
                "containers": [{
                    "name": "web",
                    "image": "nginx:1.27",
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["-g", "daemon off;"],
                    "env": [{"name": "A", "value": "1"},
                            {"name": "POD", "valueFrom": {"fieldRef": {
                                "fieldPath": "metadata.name"}}}],
                    "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                  "limits": {"cpu": 1, "memory": "128Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                       "periodSeconds": 5},
                    "livenessProbe": {"tcpSocket": {"port": 80}},
                    "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}},
                    "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}],
                    "securityContext": {"runAsUser": 1000, "capabilities": {"drop": ["ALL"]}},
                }],
                "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
            },
        },
    },
    "status": {"replicas": 2, "conditions": [
        {"type": "Available", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]},
}

SERVICE = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"type": "ClusterIP", "selector": {"app": "web"},
             "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
}


def v3(gv):
    doc = openapi.openapi_v3_group_version(gv)
    assert doc is not None
    return doc


def schemas(gv):
    return v3(gv)["components"]["schemas"]


def resolve(doc, node):
    if "allOf" in node:
        node = node["allOf"][0]
    ref = node["$ref"]
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]]


# -- schemas ----------------------------------------------------------------

def test_pod_schema_containers_is_array_of_container():
    doc = v3("api/v1")
    pod = doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"]
    assert pod["x-kubernetes-group-version-kind"] == [
        {"group": "", "kind": "Pod", "version": "v1"}]
    spec = resolve(doc, pod["properties"]["spec"])
    containers = spec["properties"]["containers"]
    assert containers["type"] == "array"
    assert containers["items"]["$ref"] == "#/components/schemas/io.k8s.api.core.v1.Container"
    assert "containers belonging to the pod" in containers["description"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert "containers" in spec["required"]
    container = doc["components"]["schemas"]["io.k8s.api.core.v1.Container"]
    assert container["required"] == ["name"]
    assert container["properties"]["image"]["type"] == "string"
    assert container["properties"]["env"]["x-kubernetes-patch-merge-key"] == "name"
    assert container["properties"]["ports"]["x-kubernetes-patch-merge-key"] == "containerPort"
    assert container["properties"]["volumeMounts"]["x-kubernetes-patch-merge-key"] == "mountPath"


def test_special_types_use_canonical_definitions():
    s = schemas("api/v1")
    meta = s["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]
    assert meta["properties"]["creationTimestamp"]["allOf"][0]["$ref"].endswith(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time")
    assert s["io.k8s.apimachinery.pkg.apis.meta.v1.Time"]["format"] == "date-time"
    req = s["io.k8s.api.core.v1.ResourceRequirements"]["properties"]["limits"]
    assert req["additionalProperties"]["$ref"].endswith(
        "io.k8s.apimachinery.pkg.api.resource.Quantity")
    port = s["io.k8s.api.core.v1.HTTPGetAction"]["properties"]["port"]
    assert port["allOf"][0]["$ref"].endswith("io.k8s.apimachinery.pkg.util.intstr.IntOrString")
    ios = s["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
    assert ios["format"] == "int-or-string"
    ev = s["io.k8s.api.core.v1.Event"]
    assert ev["properties"]["eventTime"]["allOf"][0]["$ref"].endswith("MicroTime")
    v2defs = openapi.openapi_v2()["definitions"]
    assert v2defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"] == "string"
    assert v2defs["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"] == "string"


def test_all_refs_resolve_and_every_kind_has_gvk():
    for gv in openapi.openapi_v3_index()["paths"]:
        doc = v3(gv)
        names = set(doc["components"]["schemas"])
        text = json.dumps(doc)
        for ref in set(part.split('"')[0] for part in text.split('"$ref": "')[1:]):
            assert ref.startswith("#/components/schemas/")
            assert ref.rsplit("/", 1)[1] in names, ref
        assert "#/definitions/" not in text
        assert "x-kubepy" not in text
    v2 = openapi.openapi_v2()
    text = json.dumps(v2)
    assert "x-kubepy" not in text
    for ref in set(part.split('"')[0] for part in text.split('"$ref": "')[1:]):
        assert ref.rsplit("/", 1)[1] in v2["definitions"], ref
    for s in openapi.served():
        assert openapi.definition_for(
            f"{s.group}/{s.version}" if s.group else s.version, s.kind) is not None


def test_apps_and_other_groups_canonical_names():
    s = schemas("apis/apps/v1")
    assert "io.k8s.api.apps.v1.Deployment" in s
    assert "io.k8s.api.apps.v1.DeploymentStrategy" in s
    assert "io.k8s.api.autoscaling.v1.Scale" in s
    assert "io.k8s.api.core.v1.PodSpec" in s
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector" in s
    strategy = s["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]
    assert strategy["x-kubernetes-patch-strategy"] == "retainKeys"
    assert "io.k8s.api.coordination.v1.Lease" in schemas("apis/coordination.k8s.io/v1")


# -- paths -------------------------------------------------------------------

def test_patch_operations_advertise_field_validation_and_smp():
    for gv in openapi.openapi_v3_index()["paths"]:
        doc = v3(gv)
        n = 0
        for path, item in doc["paths"].items():
            for method in ("post", "put", "patch"):
                op = item.get(method)
                if op is None or op["x-kubernetes-action"] == "connect":
                    continue
                names = {p["name"] for p in op["parameters"] if p["in"] == "query"}
                assert "fieldValidation" in names, (path, method)
                assert isinstance(op["x-kubernetes-group-version-kind"], dict)
                if method == "patch":
                    n += 1
                    assert "application/strategic-merge-patch+json" in op["requestBody"]["content"]
        # a group of create-only reviews (authentication.k8s.io) has nothing to patch, as upstream
        assert n > 0 or not any("put" in item for item in doc["paths"].values())


def test_paths_cover_served_resources():
    p = v3("api/v1")["paths"]
    assert p["/api/v1/namespaces/{namespace}/pods"]["get"]["x-kubernetes-group-version-kind"] == {
        "group": "", "kind": "Pod", "version": "v1"}
    assert "/api/v1/pods" in p
    assert "/api/v1/nodes/{name}/status" in p
    assert "/api/v1/namespaces/{name}" in p
    assert "/api/v1/namespaces/{namespace}/pods/{name}/binding" in p
    assert "/api/v1/namespaces/{namespace}/pods/{name}/log" in p
    assert "/api/v1/namespaces/{namespace}/pods/{name}/exec" in p
    a = v3("apis/apps/v1")["paths"]
    scale = a["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"]
    assert scale["x-kubernetes-group-version-kind"]["kind"] == "Scale"
    v2paths = openapi.openapi_v2()["paths"]
    every_group = {path for g, versions in kinds.group_versions().items() for ver in versions
                   for path in v3(f"apis/{g}/{ver}")["paths"]}
    assert set(v2paths) == set(p) | every_group
    post = v2paths["/apis/apps/v1/namespaces/{namespace}/deployments"]["post"]
    assert any(x["name"] == "fieldValidation" for x in post["parameters"])
    assert any(x["in"] == "body" for x in post["parameters"])


def test_v3_index_consistent_and_stable():
    idx = openapi.openapi_v3_index()
    assert {"api/v1", "apis/apps/v1", "apis/coordination.k8s.io/v1", "apis/batch/v1"} <= set(idx["paths"])
    assert set(idx["paths"]) == {"api/v1"} | {f"apis/{g}/{ver}" for g, vs in kinds.group_versions().items() for ver in vs}
    for gv, entry in idx["paths"].items():
        url = entry["serverRelativeURL"]
        assert url.startswith(f"/openapi/v3/{gv}?hash=")
        data, h = openapi.openapi_v3_json(url)
        assert url.endswith(h)
        assert hashlib.sha512(data).hexdigest().upper() == h
        assert json.loads(data) == openapi.openapi_v3_group_version(gv)
        assert openapi.openapi_v3_group_version("/openapi/v3/" + gv) is not None
    assert openapi.openapi_v3_group_version("apis/nope/v1") is None
    assert openapi.openapi_v3_json("apis/nope/v1") is None
    data, h = openapi.openapi_v2_json()
    assert json.loads(data)["swagger"] == "2.0"


# -- unknown fields ----------------------------------------------------------

def test_valid_manifests_have_no_unknown_fields():
    assert openapi.unknown_fields("apps/v1", "Deployment", DEPLOYMENT) == []
    assert openapi.unknown_fields("v1", "Service", SERVICE) == []
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
          "data": {"any.key": "v"}, "binaryData": {"b": "AAE="}}
    assert openapi.unknown_fields("v1", "ConfigMap", cm) == []
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "l"},
             "spec": {"holderIdentity": "x", "leaseDurationSeconds": 15,
                      "renewTime": "2024-01-01T00:00:00.000000Z"}}
    assert openapi.unknown_fields("coordination.k8s.io/v1", "Lease", lease) == []
    managed = {"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "s", "managedFields": [
                   {"manager": "m", "operation": "Update", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {"f:x": {}}}}]},
               "type": "Opaque", "data": {"x": "eA=="}, "stringData": {"y": "z"}}
    assert openapi.unknown_fields("v1", "Secret", managed) == []
    scale = {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web"},
             "spec": {"replicas": 3}}
    assert openapi.unknown_fields("autoscaling/v1", "Scale", scale) == []


def test_typo_nested_in_list_is_found():
    d = copy.deepcopy(DEPLOYMENT)
    d["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    d["spec"]["template"]["spec"]["containers"][0]["env"][1]["valueFrom"]["fieldRef"]["pth"] = 1
    d["spec"]["strategy"]["rollingUpdate"]["maxSurg"] = 1
    d["metadata"]["lables"] = {}
    d["spek"] = {}
    got = openapi.unknown_fields("apps/v1", "Deployment", d)
    assert sorted(got) == sorted([
        ".spec.template.spec.containers[0].imagee",
        ".spec.template.spec.containers[0].env[1].valueFrom.fieldRef.pth",
        ".spec.strategy.rollingUpdate.maxSurg",
        ".metadata.lables",
        ".spek",
    ])
    s = copy.deepcopy(SERVICE)
    s["spec"]["ports"][0]["targetport"] = 8080
    assert openapi.unknown_fields("v1", "Service", s) == [".spec.ports[0].targetport"]


def test_unknown_fields_are_dropped_when_asked():
    d = copy.deepcopy(DEPLOYMENT)
    d["spec"]["foo"] = {"deep": [1]}
    d["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    got = openapi.unknown_fields("apps/v1", "Deployment", d, drop=True)
    assert sorted(got) == [".spec.foo", ".spec.template.spec.containers[0].imagee"]
    assert d == DEPLOYMENT  # exactly the unknown keys went
    assert openapi.unknown_fields("apps/v1", "Deployment", d) == []


# (definition, field, format): widths come from the protobuf table, as Kubernetes publishes them.
INT_FORMATS = [
    ("io.k8s.api.apps.v1.DeploymentSpec", "replicas", "int32"),
    ("io.k8s.api.core.v1.PodSpec", "terminationGracePeriodSeconds", "int64"),
    ("io.k8s.api.core.v1.PodSpec", "activeDeadlineSeconds", "int64"),
    ("io.k8s.api.core.v1.ContainerPort", "containerPort", "int32"),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "generation", "int64"),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta", "remainingItemCount", "int64"),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.Status", "code", "int32"),
]


@pytest.mark.parametrize("definition,field,fmt", INT_FORMATS)
def test_integer_formats(definition, field, fmt):
    prop = openapi.openapi_v2()["definitions"][definition]["properties"][field]
    assert (prop["type"], prop["format"]) == ("integer", fmt)


def test_supplemental_groups_items_are_int64():
    prop = openapi.openapi_v2()["definitions"]["io.k8s.api.core.v1.PodSecurityContext"]["properties"]
    assert prop["supplementalGroups"]["items"] == {"type": "integer", "format": "int64"}


def _pod_spec(**fields):
    return {"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i"}], **fields}}}}


# (object, errors): numbers that do not fit their field, in Go's decoder's words.
INT_RANGES = [
    ({"spec": {"replicas": 2**31 - 1}}, []),
    ({"spec": {"replicas": -2**31}}, []),
    ({"spec": {"replicas": 2**31}},
     ["json: cannot unmarshal number 2147483648 into Go struct field DeploymentSpec.spec.replicas of type int32"]),
    ({"spec": {"replicas": 2**63}},
     ["json: cannot unmarshal number 9223372036854775808 into Go struct field DeploymentSpec.spec.replicas "
      "of type int32"]),
    ({"spec": {"replicas": 3e9}},
     ["json: cannot unmarshal number 3000000000 into Go struct field DeploymentSpec.spec.replicas of type int32"]),
    (_pod_spec(terminationGracePeriodSeconds=2**40), []),
    (_pod_spec(terminationGracePeriodSeconds=2**63 - 1), []),
    (_pod_spec(activeDeadlineSeconds=-2**63 - 1),
     ["json: cannot unmarshal number -9223372036854775809 into Go struct field "
      "PodSpec.spec.template.spec.activeDeadlineSeconds of type int64"]),
    ({"metadata": {"generation": 2**63}},
     ["json: cannot unmarshal number 9223372036854775808 into Go struct field ObjectMeta.metadata.generation "
      "of type int64"]),
    ({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 2**31}}}},
     ["json: cannot unmarshal number 2147483648 into Go struct field RollingUpdateDeployment."
      "spec.strategy.rollingUpdate.maxSurge of type int32"]),
    (_pod_spec(securityContext={"supplementalGroups": [1, 2**64]}),
     ["json: cannot unmarshal number 18446744073709551616 into Go struct field PodSecurityContext."
      "spec.template.spec.securityContext.supplementalGroups[1] of type int64"]),
]


@pytest.mark.parametrize("obj,want", INT_RANGES)
def test_integers_must_fit_their_width(obj, want):
    assert openapi.type_errors("apps/v1", "Deployment", obj) == want


def test_unknown_kind_and_messages():
    assert openapi.unknown_fields("example.com/v1", "Widget", {"spec": {"x": 1}}) == []
    paths = [".spec.foo", ".spec.containers[0].imagee"]
    assert openapi.strict_decoding_message("Deployment", "v1", paths) == (
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'unknown field "spec.foo", unknown field "spec.containers[0].imagee"')
    assert openapi.unknown_field_warnings(paths[:1]) == ['unknown field "spec.foo"']
    assert openapi.warning_header('unknown field "spec.foo"') == \
        '299 - "unknown field \\"spec.foo\\""'


@pytest.mark.parametrize("gv", ["api/v1", "apis/apps/v1"])
def test_documents_are_cached(gv):
    assert openapi.openapi_v3_group_version(gv) is openapi.openapi_v3_group_version(gv)
    assert openapi.openapi_v2() is openapi.openapi_v2()


def test_patch_strategies_have_one_source():
    """Every strategic-merge entry the server's patch code uses is what the OpenAPI
    document tells kubectl, for every model the document holds (issue 13)."""
    from kubepy.api import openapi as oa
    from kubepy.api.patch import PATCH_STRATEGIES

    defs = oa.openapi_v2()["definitions"]
    checked = 0
    for (model, field), (strategy, key) in PATCH_STRATEGIES.items():
        d = defs.get(oa._canonical(model))
        if d is None or field not in d.get("properties", {}):
            continue  # a kind the server does not serve yet
        prop = d["properties"][field]
        assert prop.get("x-kubernetes-patch-strategy") == strategy, (model, field)
        assert prop.get("x-kubernetes-patch-merge-key") == key, (model, field)
        checked += 1
    assert checked >= 30
    # and nothing in the document claims a strategy the patch code lacks
    for name, d in defs.items():
        for field, prop in d.get("properties", {}).items():
            if "x-kubernetes-patch-strategy" in prop:
                assert any(oa._canonical(m) == name and f == field for m, f in PATCH_STRATEGIES), (name, field)
