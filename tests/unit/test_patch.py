"""Tables for kubepy.api.patch: JSON patch, merge patch, strategic merge patch."""

from __future__ import annotations

import copy
import re

import pytest

from kubepy.api.patch import (
    model_for,
    PATCH_STRATEGIES,
    PatchError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
    patch_meta,
)

# ---------------------------------------------------------------------------
# RFC 6902 JSON patch
# ---------------------------------------------------------------------------

DOC = {"metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"replicas": 1, "list": [1, 2]}}

JSON_PATCH_CASES = [
    (
        "replace scalar",
        [{"op": "replace", "path": "/spec/replicas", "value": 3}],
        {"metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"replicas": 3, "list": [1, 2]}},
    ),
    (
        "add label with escaped slash",
        [{"op": "add", "path": "/metadata/labels/app.kubernetes.io~1name", "value": "web"}],
        {
            "metadata": {"name": "x", "labels": {"a": "1", "app.kubernetes.io/name": "web"}},
            "spec": {"replicas": 1, "list": [1, 2]},
        },
    ),
    (
        "remove then append",
        [{"op": "remove", "path": "/metadata/labels"}, {"op": "add", "path": "/spec/list/-", "value": 3}],
        {"metadata": {"name": "x"}, "spec": {"replicas": 1, "list": [1, 2, 3]}},
    ),
    (
        "passing test then move and copy",
        [
            {"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "move", "from": "/spec/list", "path": "/spec/items"},
            {"op": "copy", "from": "/metadata/name", "path": "/spec/name"},
        ],
        {"metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"replicas": 1, "items": [1, 2], "name": "x"}},
    ),
    (
        "JSON text is accepted",
        '[{"op": "replace", "path": "/metadata/name", "value": "y"}]',
        {"metadata": {"name": "y", "labels": {"a": "1"}}, "spec": {"replicas": 1, "list": [1, 2]}},
    ),
    ("empty patch", [], DOC),
]


@pytest.mark.parametrize("name,patch,expected", JSON_PATCH_CASES, ids=[c[0] for c in JSON_PATCH_CASES])
def test_json_patch(name, patch, expected):
    before = copy.deepcopy(DOC)
    assert apply_json_patch(DOC, patch) == expected
    assert DOC == before  # input untouched


JSON_PATCH_ERRORS = [
    ("failed test", [{"op": "test", "path": "/spec/replicas", "value": 2}], 422),
    ("remove missing path", [{"op": "remove", "path": "/spec/nope"}], 422),
    ("replace missing path", [{"op": "replace", "path": "/nope", "value": 1}], 422),
    ("add under missing parent", [{"op": "add", "path": "/a/b", "value": 1}], 422),
    ("list index out of range", [{"op": "add", "path": "/spec/list/9", "value": 1}], 422),
    ("unknown op", [{"op": "frobnicate", "path": "/a"}], 400),
    ("missing op", [{"path": "/a"}], 400),
    ("missing value", [{"op": "add", "path": "/a"}], 400),
    ("path without slash", [{"op": "add", "path": "a", "value": 1}], 400),
    ("not a list", {"op": "add"}, 400),
    ("list of strings", ["x"], 400),
    ("bad JSON text", "[{", 400),
]


@pytest.mark.parametrize("name,patch,code", JSON_PATCH_ERRORS, ids=[c[0] for c in JSON_PATCH_ERRORS])
def test_json_patch_errors(name, patch, code):
    with pytest.raises(PatchError) as err:
        apply_json_patch(DOC, patch)
    assert err.value.code == code
    assert err.value.message


# ---------------------------------------------------------------------------
# RFC 7386 merge patch (the RFC's appendix A table plus Kubernetes-shaped cases)
# ---------------------------------------------------------------------------

MERGE_CASES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    # Kubernetes-shaped: lists replace wholesale, labels merge, null deletes
    (
        {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}, "metadata": {"labels": {"x": "1", "y": "2"}}},
        {"spec": {"containers": [{"name": "c"}]}, "metadata": {"labels": {"x": None, "z": "3"}}},
        {"spec": {"containers": [{"name": "c"}]}, "metadata": {"labels": {"y": "2", "z": "3"}}},
    ),
]


@pytest.mark.parametrize("original,patch,expected", MERGE_CASES)
def test_merge_patch(original, patch, expected):
    before = copy.deepcopy(original)
    assert apply_merge_patch(original, patch) == expected
    assert original == before


def test_merge_patch_does_not_alias_patch():
    patch = {"spec": {"template": {"labels": {"a": "1"}}}}
    result = apply_merge_patch({}, patch)
    result["spec"]["template"]["labels"]["a"] = "changed"
    assert patch["spec"]["template"]["labels"]["a"] == "1"


def test_merge_patch_bytes():
    assert apply_merge_patch({"a": 1}, b'{"b": 2}') == {"a": 1, "b": 2}
    with pytest.raises(PatchError) as err:
        apply_merge_patch({}, b"{nope")
    assert err.value.code == 400


# ---------------------------------------------------------------------------
# strategic merge patch
# ---------------------------------------------------------------------------


def two_container_pod() -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web", "tier": "front"},
            "finalizers": ["a.example.com/f1"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1"}],
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "app:1",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "resources": {"limits": {"cpu": "1"}},
                },
                {"name": "sidecar", "image": "sidecar:1"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"key": "k1", "operator": "Exists"}],
            "readinessGates": [{"conditionType": "g1"}],
            "nodeSelector": {"disk": "ssd"},
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "PodScheduled", "status": "True"},
            ],
        },
    }


def containers(obj):
    return obj["spec"]["containers"]


def by_name(items, name):
    return next(i for i in items if i["name"] == name)


# Each case: (id, patch, check) where check(result) returns the value compared
# with the expected value.
SMP_POD_CASES = [
    (
        "change one container image keeps the other",
        {"spec": {"containers": [{"name": "app", "image": "app:2"}]}},
        lambda r: [(c["name"], c["image"]) for c in containers(r)],
        [("app", "app:2"), ("sidecar", "sidecar:1")],
    ),
    (
        "merged container keeps unpatched fields",
        {"spec": {"containers": [{"name": "app", "image": "app:2"}]}},
        lambda r: (by_name(containers(r), "app")["env"], by_name(containers(r), "app")["resources"]),
        ([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], {"limits": {"cpu": "1"}}),
    ),
    (
        "kubectl apply: $setElementOrder/containers is honoured and stripped",
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                "containers": [{"name": "app", "image": "app:3"}],
            }
        },
        lambda r: [(c["name"], c["image"]) for c in containers(r)] + [k for k in r["spec"] if k.startswith("$")],
        [("sidecar", "sidecar:1"), ("app", "app:3")],
    ),
    (
        "$setElementOrder without the list only reorders",
        {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}},
        lambda r: [c["name"] for c in containers(r)],
        ["sidecar", "app"],
    ),
    (
        "delete env var by $patch: delete",
        {"spec": {"containers": [{"name": "app", "env": [{"name": "A", "$patch": "delete"}]}]}},
        lambda r: by_name(containers(r), "app")["env"],
        [{"name": "B", "value": "2"}],
    ),
    (
        "kubectl apply removing an env var: ordered list plus delete directive",
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                "containers": [
                    {
                        "name": "app",
                        "$setElementOrder/env": [{"name": "B"}],
                        "env": [{"$patch": "delete", "name": "A"}],
                    }
                ],
            }
        },
        lambda r: (by_name(containers(r), "app")["env"], [c["name"] for c in containers(r)]),
        ([{"name": "B", "value": "2"}], ["app", "sidecar"]),
    ),
    (
        "change env value merges by name",
        {"spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": "22"}]}]}},
        lambda r: by_name(containers(r), "app")["env"],
        [{"name": "A", "value": "1"}, {"name": "B", "value": "22"}],
    ),
    (
        "add env with $setElementOrder appends in order",
        {
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "C"}],
                        "env": [{"name": "C", "value": "3"}],
                    }
                ]
            }
        },
        lambda r: [e["name"] for e in by_name(containers(r), "app")["env"]],
        ["A", "B", "C"],
    ),
    (
        "add a port merges by containerPort",
        {"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 443, "protocol": "TCP"}]}]}},
        lambda r: sorted(p["containerPort"] for p in by_name(containers(r), "app")["ports"]),
        [80, 443],
    ),
    (
        "update a port by containerPort",
        {"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80, "name": "http"}]}]}},
        lambda r: by_name(containers(r), "app")["ports"],
        [{"containerPort": 80, "protocol": "TCP", "name": "http"}],
    ),
    (
        "new container without order directive goes first, like Kubernetes",
        {"spec": {"containers": [{"name": "new", "image": "new:1"}]}},
        lambda r: [c["name"] for c in containers(r)],
        ["new", "app", "sidecar"],
    ),
    (
        "delete a container",
        {"spec": {"containers": [{"$patch": "delete", "name": "sidecar"}]}},
        lambda r: [c["name"] for c in containers(r)],
        ["app"],
    ),
    (
        "$patch: replace element replaces the whole list",
        {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "only:1"}]}},
        containers,
        [{"name": "only", "image": "only:1"}],
    ),
    (
        "volumeMounts merge by mountPath",
        {"spec": {"containers": [{"name": "app", "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}]}},
        lambda r: sorted(m["mountPath"] for m in by_name(containers(r), "app")["volumeMounts"]),
        ["/cache", "/data"],
    ),
    (
        "tolerations have no merge key: replaced",
        {"spec": {"tolerations": [{"key": "k2", "operator": "Exists"}]}},
        lambda r: r["spec"]["tolerations"],
        [{"key": "k2", "operator": "Exists"}],
    ),
    (
        "readinessGates are atomic: replaced",
        {"spec": {"readinessGates": [{"conditionType": "g2"}]}},
        lambda r: r["spec"]["readinessGates"],
        [{"conditionType": "g2"}],
    ),
    (
        "null deletes a map key",
        {"spec": {"nodeSelector": None}, "metadata": {"labels": {"tier": None}}},
        lambda r: ("nodeSelector" in r["spec"], r["metadata"]["labels"]),
        (False, {"app": "web"}),
    ),
    (
        "null on a container field deletes it",
        {"spec": {"containers": [{"name": "app", "resources": None}]}},
        lambda r: "resources" in by_name(containers(r), "app"),
        False,
    ),
    (
        "labels merge as a map",
        {"metadata": {"labels": {"version": "2"}}},
        lambda r: r["metadata"]["labels"],
        {"app": "web", "tier": "front", "version": "2"},
    ),
    (
        "$patch: replace on a map",
        {"metadata": {"labels": {"$patch": "replace", "only": "this"}}},
        lambda r: r["metadata"]["labels"],
        {"only": "this"},
    ),
    (
        "$patch: replace on a map drops nulls inside the replacement",
        {"spec": {"nodeSelector": {"$patch": "replace", "zone": "a", "disk": None}}},
        lambda r: r["spec"]["nodeSelector"],
        {"zone": "a"},
    ),
    (
        "$patch: delete on a map removes it",
        {"spec": {"nodeSelector": {"$patch": "delete"}}},
        lambda r: "nodeSelector" in r["spec"],
        False,
    ),
    (
        "$patch: merge is the default",
        {"metadata": {"labels": {"$patch": "merge", "x": "y"}}},
        lambda r: r["metadata"]["labels"],
        {"app": "web", "tier": "front", "x": "y"},
    ),
    (
        "finalizers merge as a set of scalars",
        {"metadata": {"finalizers": ["a.example.com/f1", "b.example.com/f2"]}},
        lambda r: r["metadata"]["finalizers"],
        ["a.example.com/f1", "b.example.com/f2"],
    ),
    (
        "$deleteFromPrimitiveList/finalizers",
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example.com/f1"]}},
        lambda r: r["metadata"]["finalizers"],
        [],
    ),
    (
        "$setElementOrder on a list of scalars",
        {
            "metadata": {
                "$setElementOrder/finalizers": ["b.example.com/f2", "a.example.com/f1"],
                "finalizers": ["b.example.com/f2"],
            }
        },
        lambda r: r["metadata"]["finalizers"],
        ["b.example.com/f2", "a.example.com/f1"],
    ),
    (
        "ownerReferences merge by uid",
        {"metadata": {"ownerReferences": [{"uid": "u1", "controller": True}]}},
        lambda r: r["metadata"]["ownerReferences"],
        [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": True}],
    ),
    (
        "status conditions merge by type",
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        lambda r: r["status"]["conditions"],
        [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
    ),
    (
        "volumes merge by name with $retainKeys switching the source",
        {"spec": {"volumes": [{"$retainKeys": ["configMap", "name"], "name": "data", "configMap": {"name": "cm"}}]}},
        lambda r: r["spec"]["volumes"],
        [{"name": "data", "configMap": {"name": "cm"}}],
    ),
    (
        "new field with nested directives is cleaned",
        {"spec": {"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["a"], "$patch": "merge"}], "dnsConfig": {"x": None}}},
        lambda r: (r["spec"]["hostAliases"], r["spec"]["dnsConfig"]),
        ([{"ip": "10.0.0.1", "hostnames": ["a"]}], {}),
    ),
    (
        "empty patch is a no-op",
        {},
        lambda r: r,
        two_container_pod(),
    ),
]


@pytest.mark.parametrize("name,patch,check,expected", SMP_POD_CASES, ids=[c[0] for c in SMP_POD_CASES])
def test_strategic_merge_patch_pod(name, patch, check, expected):
    pod = two_container_pod()
    before = copy.deepcopy(pod)
    patch_before = copy.deepcopy(patch)
    result = apply_strategic_merge_patch(pod, patch, api_version="v1", kind="Pod")
    assert check(result) == expected
    assert pod == before and patch == patch_before  # inputs untouched
    assert not _directive_keys(result)


def _directive_keys(value, path=""):
    """Every key starting with '$' anywhere in *value* (none may survive a patch)."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k.startswith("$"):
                found.append(f"{path}/{k}")
            found += _directive_keys(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _directive_keys(v, f"{path}/{i}")
    return found


def deployment() -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "d"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {
                    "containers": [
                        {"name": "nginx", "image": "nginx:1.24", "ports": [{"containerPort": 80}]},
                        {"name": "log", "image": "busybox"},
                    ]
                },
            },
        },
        "status": {"conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}]},
    }


OTHER_KIND_CASES = [
    (
        "kubectl apply on a Deployment: image change inside the pod template",
        "apps/v1",
        "Deployment",
        deployment(),
        {
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"new\": 1}"}},
            "spec": {
                "template": {
                    "spec": {
                        "$setElementOrder/containers": [{"name": "nginx"}, {"name": "log"}],
                        "containers": [{"image": "nginx:1.25", "name": "nginx"}],
                    }
                }
            },
        },
        lambda r: (
            [(c["name"], c["image"]) for c in r["spec"]["template"]["spec"]["containers"]],
            r["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        ),
        ([("nginx", "nginx:1.25"), ("log", "busybox")], '{"new": 1}'),
    ),
    (
        "Deployment strategy switch with $retainKeys drops rollingUpdate",
        "apps/v1",
        "Deployment",
        deployment(),
        {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
        lambda r: r["spec"]["strategy"],
        {"type": "Recreate"},
    ),
    (
        "Deployment status conditions merge by type",
        "apps/v1",
        "Deployment",
        deployment(),
        {"status": {"conditions": [{"type": "Progressing", "status": "False", "reason": "Stuck"}]}},
        lambda r: r["status"]["conditions"],
        [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "False", "reason": "Stuck"}],
    ),
    (
        "Service ports merge by port",
        "v1",
        "Service",
        {"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]}},
        {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}},
        lambda r: r["spec"]["ports"],
        [{"port": 80, "targetPort": 9090}, {"port": 443, "targetPort": 8443}],
    ),
    (
        "Node conditions and addresses merge by type",
        "v1",
        "Node",
        {
            "status": {
                "conditions": [{"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "False"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n1"}],
            }
        },
        {
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
            }
        },
        lambda r: r["status"],
        {
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n1"}],
        },
    ),
    (
        "Node taints are atomic",
        "v1",
        "Node",
        {"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}},
        {"spec": {"taints": [{"key": "b", "effect": "NoExecute"}]}},
        lambda r: r["spec"]["taints"],
        [{"key": "b", "effect": "NoExecute"}],
    ),
    (
        "Endpoints subsets are replaced",
        "v1",
        "Endpoints",
        {"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]},
        {"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]},
        lambda r: r["subsets"],
        [{"addresses": [{"ip": "10.0.0.2"}]}],
    ),
    (
        "ConfigMap data merges as a map",
        "v1",
        "ConfigMap",
        {"data": {"a": "1", "b": "2"}},
        {"data": {"b": None, "c": "3"}},
        lambda r: r["data"],
        {"a": "1", "c": "3"},
    ),
    (
        "ServiceAccount secrets merge by name",
        "v1",
        "ServiceAccount",
        {"secrets": [{"name": "s1"}]},
        {"secrets": [{"name": "s2"}]},
        lambda r: sorted(s["name"] for s in r["secrets"]),
        ["s1", "s2"],
    ),
    (
        "Scale: spec.replicas",
        "autoscaling/v1",
        "Scale",
        {"spec": {"replicas": 1}, "status": {"replicas": 1}},
        {"spec": {"replicas": 5}},
        lambda r: r,
        {"spec": {"replicas": 5}, "status": {"replicas": 1}},
    ),
    (
        "Lease renew",
        "coordination.k8s.io/v1",
        "Lease",
        {"spec": {"holderIdentity": "a", "renewTime": "t1"}},
        {"spec": {"renewTime": "t2"}},
        lambda r: r["spec"],
        {"holderIdentity": "a", "renewTime": "t2"},
    ),
    (
        "unknown kind: maps merge, lists replace",
        "example.com/v1",
        "Widget",
        {"spec": {"items": [{"name": "a"}, {"name": "b"}], "size": 1, "m": {"x": 1}}},
        {"spec": {"items": [{"name": "c"}], "m": {"y": 2}}},
        lambda r: r["spec"],
        {"items": [{"name": "c"}], "size": 1, "m": {"x": 1, "y": 2}},
    ),
    (
        "top-level $patch: delete empties the object",
        "v1",
        "ConfigMap",
        {"data": {"a": "1"}},
        {"$patch": "delete"},
        lambda r: r,
        {},
    ),
]


@pytest.mark.parametrize(
    "name,api_version,kind,obj,patch,check,expected", OTHER_KIND_CASES, ids=[c[0] for c in OTHER_KIND_CASES]
)
def test_strategic_merge_patch_other_kinds(name, api_version, kind, obj, patch, check, expected):
    result = apply_strategic_merge_patch(obj, patch, api_version=api_version, kind=kind)
    assert check(result) == expected
    assert not _directive_keys(result)


SMP_ERRORS = [
    ("patch not an object", [1, 2], 400),
    ("unknown map directive", {"metadata": {"labels": {"$patch": "explode"}}}, 400),
    ("unknown list directive", {"spec": {"containers": [{"$patch": "explode", "name": "app"}]}}, 400),
    ("delete element without merge key", {"spec": {"containers": [{"$patch": "delete"}]}}, 422),
    ("merge element without merge key", {"spec": {"containers": [{"image": "x"}]}}, 422),
    ("$retainKeys not a list", {"spec": {"$retainKeys": "x"}}, 400),
    ("$retainKeys missing a patched field", {"spec": {"$retainKeys": ["a"], "b": 1}}, 422),
    ("$setElementOrder not a list", {"spec": {"$setElementOrder/containers": "x"}}, 400),
    ("$deleteFromPrimitiveList not a list", {"metadata": {"$deleteFromPrimitiveList/finalizers": "x"}}, 400),
    ("mixing objects and scalars in a merge list", {"metadata": {"finalizers": [{"a": 1}]}}, 422),
]


@pytest.mark.parametrize("name,patch,code", SMP_ERRORS, ids=[c[0] for c in SMP_ERRORS])
def test_strategic_merge_patch_errors(name, patch, code):
    with pytest.raises(PatchError) as err:
        apply_strategic_merge_patch(two_container_pod(), patch, api_version="v1", kind="Pod")
    assert err.value.code == code


def test_strategic_merge_patch_accepts_json_text():
    result = apply_strategic_merge_patch(
        two_container_pod(), '{"metadata": {"labels": {"x": "y"}}}', api_version="v1", kind="Pod"
    )
    assert result["metadata"]["labels"]["x"] == "y"


# ---------------------------------------------------------------------------
# the strategy table itself
# ---------------------------------------------------------------------------


def test_every_strategy_names_a_real_list_or_struct_field():
    import kubernetes.client.models as models

    for (model, field), (strategy, merge_key) in PATCH_STRATEGIES.items():
        cls = getattr(models, model)
        json_to_type = {cls.attribute_map[a]: t for a, t in cls.openapi_types.items()}
        assert field in json_to_type, f"{model}.{field} does not exist"
        spec = json_to_type[field]
        assert set(strategy.split(",")) <= {"merge", "retainKeys", "replace"}, (model, field)
        if merge_key:
            elem = re.fullmatch(r"List\[(\w+)\]", spec)
            assert elem, f"{model}.{field} has a merge key but is {spec}"
            elem_cls = getattr(models, elem.group(1))
            assert merge_key in elem_cls.attribute_map.values(), f"{merge_key} not a field of {elem.group(1)}"


def test_every_kind_maps_to_a_model():
    import kubernetes.client.models as models

    from kubepy import kinds
    for k in kinds.all_kinds():
        model = model_for(k.api_version, k.kind)
        cls = getattr(models, model)
        assert hasattr(cls, "openapi_types"), model


PATCH_META_CASES = [
    ("V1PodSpec", "containers", (frozenset({"merge"}), "name")),
    ("V1PodSpec", "volumes", (frozenset({"merge", "retainKeys"}), "name")),
    ("V1Container", "ports", (frozenset({"merge"}), "containerPort")),
    ("V1ServiceSpec", "ports", (frozenset({"merge"}), "port")),
    ("V1ObjectMeta", "finalizers", (frozenset({"merge"}), None)),
    ("V1PodSpec", "tolerations", (frozenset(), None)),
    ("V1Container", "envFrom", (frozenset(), None)),
    ("V1DeploymentSpec", "strategy", (frozenset({"retainKeys"}), None)),
]


@pytest.mark.parametrize("model,field,expected", PATCH_META_CASES)
def test_patch_meta(model, field, expected):
    assert patch_meta(model, field) == expected
