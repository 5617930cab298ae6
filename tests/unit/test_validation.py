"""Defaulting and validation behave like Kubernetes' API server."""

from __future__ import annotations

import base64
import copy

import pytest
import yaml

from kubepy import kinds
from kubepy.api import errors
from kubepy.kinds.validation import (
    default_object,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_qualified_name,
    is_valid_port_name,
    pod_qos_class,
    validate_object,
)

# ---------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------


def pod(**spec) -> dict:
    body = {"containers": [{"name": "app", "image": "nginx:1.25"}]}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"}, "spec": body}


def deployment(**spec) -> dict:
    body = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]},
        },
    }
    body.update(spec)
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"}, "spec": body}


def service(**spec) -> dict:
    body = {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": body}


def defaulted(resource: str, obj: dict, old: dict | None = None) -> dict:
    obj = copy.deepcopy(obj)
    default_object(resource, obj, old=old)
    return obj


def causes(resource: str, obj: dict, old: dict | None = None, *, default: bool = True) -> list[tuple[str, str]]:
    """(field, reason) of every cause; [] when valid."""
    if default:
        obj = defaulted(resource, obj, old)
    try:
        validate_object(resource, obj, old=old)
    except kinds.Invalid as e:
        assert errors.Invalid.of(e).code == 422
        return [(c["field"], c["reason"]) for c in e.causes]
    return []


# ---------------------------------------------------------------------------
# defaulting
# ---------------------------------------------------------------------------


def test_pod_defaults_match_kubectl_get_yaml():
    p = defaulted("pods", pod(containers=[{
        "name": "app", "image": "nginx",
        "ports": [{"containerPort": 80}],
        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
        "livenessProbe": {"httpGet": {"port": 80}},
    }]))
    spec, c = p["spec"], p["spec"]["containers"][0]
    assert spec["restartPolicy"] == "Always"
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["securityContext"] == {}
    assert spec["serviceAccountName"] == "default" and spec["serviceAccount"] == "default"
    assert spec["enableServiceLinks"] is True
    assert "priority" not in spec and "preemptionPolicy" not in spec  # Priority admission sets them (tests/api/test_priority.py)
    assert spec["tolerations"] == [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    ]
    assert c["imagePullPolicy"] == "Always"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "File"
    assert c["ports"][0]["protocol"] == "TCP"
    assert c["resources"]["requests"] == {"cpu": "500m", "memory": "128Mi"}
    assert c["livenessProbe"] == {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                                  "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
    assert p["status"] == {"phase": "Pending", "qosClass": "Guaranteed"}


@pytest.mark.parametrize("image,policy", [
    ("nginx", "Always"),
    ("nginx:latest", "Always"),
    ("nginx:1.25", "IfNotPresent"),
    ("registry.local:5000/team/app", "Always"),
    ("registry.local:5000/team/app:v2", "IfNotPresent"),
    ("nginx@sha256:" + "a" * 64, "IfNotPresent"),
])
def test_image_pull_policy_default(image, policy):
    p = defaulted("pods", pod(containers=[{"name": "app", "image": image}]))
    assert p["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_pod_defaults_keep_user_values_and_existing_tolerations():
    p = defaulted("pods", pod(restartPolicy="Never", serviceAccountName="robot",
                              tolerations=[{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                            "effect": "NoExecute", "tolerationSeconds": 5}]))
    assert p["spec"]["restartPolicy"] == "Never"
    assert p["spec"]["serviceAccount"] == "robot"
    keys = [t["key"] for t in p["spec"]["tolerations"]]
    assert keys == ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
    assert p["spec"]["tolerations"][0]["tolerationSeconds"] == 5


@pytest.mark.parametrize("resources,qos", [
    ({}, "BestEffort"),
    ({"requests": {"cpu": "100m"}}, "Burstable"),
    ({"limits": {"cpu": "1", "memory": "1Gi"}}, "Guaranteed"),
    ({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}, "Burstable"),
])
def test_qos_class(resources, qos):
    p = defaulted("pods", pod(containers=[{"name": "a", "image": "x", "resources": resources}]))
    assert p["status"]["qosClass"] == qos
    assert pod_qos_class(p["spec"]) == qos


def test_service_defaults():
    s = defaulted("services", service(ports=[{"port": 80}, {"port": 53, "protocol": "UDP", "name": "dns"}]))
    spec = s["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["sessionAffinity"] == "None"
    assert spec["ports"][0] == {"port": 80, "protocol": "TCP", "targetPort": 80}
    assert spec["ports"][1]["targetPort"] == 53
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert "externalTrafficPolicy" not in spec
    node_port = defaulted("services", service(type="NodePort"))
    assert node_port["spec"]["externalTrafficPolicy"] == "Cluster"


def test_service_update_keeps_allocated_cluster_ip_and_node_port():
    old = defaulted("services", service(type="NodePort", clusterIP="10.96.0.10",
                                        ports=[{"port": 80, "nodePort": 30080}]))
    new = defaulted("services", service(type="NodePort"), old=old)
    assert new["spec"]["clusterIP"] == "10.96.0.10"
    assert new["spec"]["clusterIPs"] == ["10.96.0.10"]
    assert new["spec"]["ports"][0]["nodePort"] == 30080
    assert causes("services", new, old, default=False) == []


def test_deployment_defaults():
    d = defaulted("deployments", deployment())
    spec = d["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    tspec = spec["template"]["spec"]
    assert tspec["restartPolicy"] == "Always" and tspec["dnsPolicy"] == "ClusterFirst"
    assert tspec["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    # Admission-only pod fields are not put into templates.
    assert "serviceAccountName" not in tspec and "tolerations" not in tspec and "enableServiceLinks" not in tspec


@pytest.mark.parametrize("resource,obj,path,expected", [
    ("replicasets", {"metadata": {"name": "r"}, "spec": {}}, ("spec", "replicas"), 1),
    ("secrets", {"metadata": {"name": "s"}}, ("type",), "Opaque"),
    ("namespaces", {"metadata": {"name": "n"}}, ("spec", "finalizers"), ["kubernetes"]),
    ("namespaces", {"metadata": {"name": "n"}}, ("status", "phase"), "Active"),
    ("nodes", {"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "4"}}}, ("status", "allocatable"), {"cpu": "4"}),
    ("endpoints", {"metadata": {"name": "e"}, "subsets": [{"ports": [{"port": 80}]}]},
     ("subsets", 0, "ports", 0, "protocol"), "TCP"),
])
def test_simple_defaults(resource, obj, path, expected):
    value = defaulted(resource, obj)
    for key in path:
        value = value[key]
    assert value == expected


def test_secret_string_data_is_folded_into_data():
    s = defaulted("secrets", {"metadata": {"name": "s"}, "data": {"a": "eA=="}, "stringData": {"b": "hello"}})
    assert "stringData" not in s
    assert s["data"] == {"a": "eA==", "b": base64.b64encode(b"hello").decode()}


# ---------------------------------------------------------------------------
# helper validators
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("fn,value,ok", [
    (is_dns1123_label, "my-name", True),
    (is_dns1123_label, "My-Name", False),
    (is_dns1123_label, "a" * 64, False),
    (is_dns1123_label, "a.b", False),
    (is_dns1123_subdomain, "a.b-c.d", True),
    (is_dns1123_subdomain, "-a", False),
    (is_dns1035_label, "web", True),
    (is_dns1035_label, "1web", False),
    (is_qualified_name, "app.kubernetes.io/name", True),
    (is_qualified_name, "a/b/c", False),
    (is_qualified_name, "/name", False),
    (is_valid_port_name, "http", True),
    (is_valid_port_name, "8080", False),
    (is_valid_port_name, "a-very-long-port-name", False),
    (is_valid_port_name, "a--b", False),
])
def test_helper_validators(fn, value, ok):
    assert (fn(value) == []) is ok


# ---------------------------------------------------------------------------
# invalid objects: each yields a 422 whose causes name the field
# ---------------------------------------------------------------------------

INVALID = [
    # metadata
    ("pods", {**pod(), "metadata": {"namespace": "default"}}, "metadata.name", "FieldValueRequired"),
    ("pods", {**pod(), "metadata": {"name": "Web_1"}}, "metadata.name", "FieldValueInvalid"),
    ("pods", {**pod(), "metadata": {"name": "a" * 254}}, "metadata.name", "FieldValueInvalid"),
    ("pods", {**pod(), "metadata": {"generateName": "Bad_"}}, "metadata.generateName", "FieldValueInvalid"),
    ("namespaces", {"metadata": {"name": "a.b"}}, "metadata.name", "FieldValueInvalid"),
    ("services", {**service(), "metadata": {"name": "1web"}}, "metadata.name", "FieldValueInvalid"),
    ("configmaps", {"metadata": {"name": "c", "labels": {"bad key!": "v"}}}, "metadata.labels", "FieldValueInvalid"),
    ("configmaps", {"metadata": {"name": "c", "labels": {"k": "v" * 64}}}, "metadata.labels", "FieldValueInvalid"),
    ("configmaps", {"metadata": {"name": "c", "annotations": {"k": "x" * (256 * 1024)}}},
     "metadata.annotations", "FieldValueTooLong"),
    ("configmaps", {"metadata": {"name": "c", "finalizers": ["nope"]}}, "metadata.finalizers[0]", "FieldValueInvalid"),
    # pods
    ("pods", pod(containers=[]), "spec.containers", "FieldValueRequired"),
    ("pods", pod(containers=[{"image": "x"}]), "spec.containers[0].name", "FieldValueRequired"),
    ("pods", pod(containers=[{"name": "App", "image": "x"}]), "spec.containers[0].name", "FieldValueInvalid"),
    ("pods", pod(containers=[{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]),
     "spec.containers[1].name", "FieldValueDuplicate"),
    ("pods", pod(initContainers=[{"name": "app", "image": "x"}]), "spec.initContainers[0].name", "FieldValueDuplicate"),
    ("pods", pod(containers=[{"name": "a"}]), "spec.containers[0].image", "FieldValueRequired"),
    ("pods", pod(containers=[{"name": "a", "image": "x", "ports": [{"containerPort": 70000}]}]),
     "spec.containers[0].ports[0].containerPort", "FieldValueInvalid"),
    ("pods", pod(containers=[{"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPort": 0x10000}]}]),
     "spec.containers[0].ports[0].hostPort", "FieldValueInvalid"),
    ("pods", pod(containers=[{"name": "a", "image": "x", "ports": [{"containerPort": 80, "protocol": "HTTP"}]}]),
     "spec.containers[0].ports[0].protocol", "FieldValueNotSupported"),
    ("pods", pod(containers=[{"name": "a", "image": "x", "ports": [
        {"containerPort": 80, "name": "web"}, {"containerPort": 81, "name": "web"}]}]),
     "spec.containers[0].ports[1].name", "FieldValueDuplicate"),
    ("pods", pod(containers=[{"name": "a", "image": "x", "ports": [{"containerPort": 80, "name": "much-too-long-name"}]}]),
     "spec.containers[0].ports[0].name", "FieldValueInvalid"),
    ("pods", pod(restartPolicy="Sometimes"), "spec.restartPolicy", "FieldValueNotSupported"),
    ("pods", pod(containers=[{"name": "a", "image": "x", "imagePullPolicy": "Maybe"}]),
     "spec.containers[0].imagePullPolicy", "FieldValueNotSupported"),
    ("pods", pod(terminationGracePeriodSeconds=-5), "spec.terminationGracePeriodSeconds", "FieldValueInvalid"),
    ("pods", pod(containers=[{"name": "a", "image": "x", "resources": {"limits": {"cpu": "lots"}}}]),
     "spec.containers[0].resources.limits[cpu]", "FieldValueInvalid"),
    ("pods", pod(containers=[{"name": "a", "image": "x",
                              "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}]),
     "spec.containers[0].resources.requests[memory]", "FieldValueInvalid"),
    ("pods", pod(containers=[{"name": "a", "image": "x", "env": [{"name": "A=B", "value": "1"}]}]),
     "spec.containers[0].env[0].name", "FieldValueInvalid"),
    ("pods", pod(containers=[{"name": "a", "image": "x", "env": [{"value": "1"}]}]),
     "spec.containers[0].env[0].name", "FieldValueRequired"),
    ("pods", pod(volumes=[{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]),
     "spec.volumes[1].name", "FieldValueDuplicate"),
    ("pods", pod(containers=[{"name": "a", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]),
     "spec.containers[0].volumeMounts[0].name", "FieldValueNotFound"),
    ("pods", pod(containers=[{"name": "a", "image": "x", "livenessProbe": {"periodSeconds": 5}}]),
     "spec.containers[0].livenessProbe", "FieldValueRequired"),
    ("pods", pod(containers=[{"name": "a", "image": "x",
                              "readinessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}}}]),
     "spec.containers[0].readinessProbe.tcpSocket", "FieldValueForbidden"),
    ("pods", pod(tolerations=[{"key": "k", "operator": "Sometimes"}]), "spec.tolerations[0].operator",
     "FieldValueNotSupported"),
    # services
    ("services", service(ports=[]), "spec.ports", "FieldValueRequired"),
    ("services", service(ports=[{"port": 0}]), "spec.ports[0].port", "FieldValueInvalid"),
    ("services", service(ports=[{"port": 80}, {"port": 81}]), "spec.ports[0].name", "FieldValueRequired"),
    ("services", service(ports=[{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]),
     "spec.ports[1].name", "FieldValueDuplicate"),
    ("services", service(type="NodePort", ports=[{"port": 80, "nodePort": 80}]),
     "spec.ports[0].nodePort", "FieldValueInvalid"),
    ("services", service(ports=[{"port": 80, "nodePort": 30080}]), "spec.ports[0].nodePort", "FieldValueForbidden"),
    ("services", service(type="Magic"), "spec.type", "FieldValueNotSupported"),
    ("services", service(clusterIP="10.0.0.300"), "spec.clusterIPs[0]", "FieldValueInvalid"),
    ("services", service(type="ExternalName", ports=[]), "spec.externalName", "FieldValueRequired"),
    ("services", service(type="LoadBalancer", loadBalancerSourceRanges=["10.0.0.0/8", "10.1.0.1"]),
     "spec.LoadBalancerSourceRanges[1]", "FieldValueInvalid"),
    ("services", service(loadBalancerSourceRanges=["10.0.0.0/8"]), "spec.LoadBalancerSourceRanges",
     "FieldValueForbidden"),
    ("services", {**service(type="LoadBalancer"), "metadata": {
        "name": "web", "annotations": {"service.beta.kubernetes.io/load-balancer-source-ranges": "10.0.0.0/8,x"}}},
     "metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]", "FieldValueInvalid"),
    # workloads
    ("deployments", deployment(selector=None), "spec.selector", "FieldValueRequired"),
    ("deployments", deployment(selector={"matchLabels": {"app": "other"}}),
     "spec.template.metadata.labels", "FieldValueInvalid"),
    ("deployments", deployment(replicas=-1), "spec.replicas", "FieldValueInvalid"),
    ("deployments", deployment(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}),
     "spec.strategy.rollingUpdate.maxUnavailable", "FieldValueInvalid"),
    ("deployments", deployment(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "x%"}}),
     "spec.strategy.rollingUpdate.maxSurge", "FieldValueInvalid"),
    ("deployments", deployment(template={"metadata": {"labels": {"app": "web"}},
                                         "spec": {"restartPolicy": "Never",
                                                  "containers": [{"name": "a", "image": "x"}]}}),
     "spec.template.spec.restartPolicy", "FieldValueNotSupported"),
    ("deployments", deployment(template={"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}),
     "spec.template.spec.containers", "FieldValueRequired"),
    ("replicasets", {**deployment(), "kind": "ReplicaSet", "spec": {**deployment()["spec"], "selector": {}}},
     "spec.selector", "FieldValueInvalid"),
    ("scale", {"metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": -2}},
     "spec.replicas", "FieldValueInvalid"),
    # config
    ("configmaps", {"metadata": {"name": "c"}, "data": {"bad/key": "v"}}, "data[bad/key]", "FieldValueInvalid"),
    ("configmaps", {"metadata": {"name": "c"}, "data": {"..x": "v"}}, "data[..x]", "FieldValueInvalid"),
    ("secrets", {"metadata": {"name": "s"}, "data": {"k": "not base64!"}}, "data[k]", "FieldValueInvalid"),
    ("secrets", {"metadata": {"name": "s"}, "data": {"k y": "eA=="}}, "data[k y]", "FieldValueInvalid"),
    ("secrets", {"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}},
     "data[tls.key]", "FieldValueRequired"),
    # cluster-scoped and others
    ("nodes", {"metadata": {"name": "Node_1"}}, "metadata.name", "FieldValueInvalid"),
    ("nodes", {"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": "Sometimes"}]}},
     "spec.taints[0].effect", "FieldValueNotSupported"),
    ("leases", {"metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": 0}},
     "spec.leaseDurationSeconds", "FieldValueInvalid"),
    ("leases", {"metadata": {"name": "l"}, "spec": {"leaseTransitions": -1}}, "spec.leaseTransitions", "FieldValueInvalid"),
    ("endpoints", {"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "nope"}], "ports": [{"port": 80}]}]},
     "subsets[0].addresses[0].ip", "FieldValueInvalid"),
    ("events", {"metadata": {"name": "e.1", "namespace": "a"}, "involvedObject": {"kind": "Pod", "namespace": "b"}},
     "involvedObject.namespace", "FieldValueInvalid"),
    ("bindings", {"metadata": {"name": "web", "namespace": "default"}, "target": {"kind": "Pod", "name": "n"}},
     "target.kind", "FieldValueNotSupported"),
    ("bindings", {"metadata": {"name": "web", "namespace": "default"}, "target": {}}, "target.name", "FieldValueRequired"),
]


@pytest.mark.parametrize("resource,obj,field,reason", INVALID, ids=[f"{r}:{f}" for r, _, f, _ in INVALID])
def test_invalid_objects_name_the_field(resource, obj, field, reason):
    assert (field, reason) in causes(resource, obj)


def test_all_causes_are_reported_at_once():
    bad = pod(restartPolicy="Sometimes", containers=[{"name": "A"}, {"name": "A", "image": "x"}])
    found = causes("pods", bad)
    for expected in [("spec.restartPolicy", "FieldValueNotSupported"), ("spec.containers[0].name", "FieldValueInvalid"),
                     ("spec.containers[0].image", "FieldValueRequired"), ("spec.containers[1].name", "FieldValueDuplicate")]:
        assert expected in found


def test_invalid_error_body_looks_like_kubernetes():
    with pytest.raises(kinds.Invalid) as info:
        validate_object("pods", defaulted("pods", pod(containers=[{"name": "a", "image": "x", "imagePullPolicy": "Maybe"}])))
    status = errors.Invalid.of(info.value).status()
    assert status["code"] == 422 and status["reason"] == "Invalid"
    assert status["details"]["kind"] == "Pod" and status["details"]["name"] == "web"
    (cause,) = status["details"]["causes"]
    assert cause["message"] == 'Unsupported value: "Maybe": supported values: "Always", "IfNotPresent", "Never"'
    with pytest.raises(kinds.Invalid) as info:
        validate_object("deployments", defaulted("deployments", deployment(replicas=-1)))
    assert errors.Invalid.of(info.value).status()["details"]["group"] == "apps"


def test_generate_name_stands_in_for_name():
    obj = pod()
    obj["metadata"] = {"generateName": "web-", "namespace": "default"}
    assert causes("pods", obj) == []


# ---------------------------------------------------------------------------
# realistic manifests pass
# ---------------------------------------------------------------------------

MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
  namespace: shop
  labels: {app.kubernetes.io/name: frontend, app.kubernetes.io/part-of: shop}
  annotations: {deployment.kubernetes.io/revision: "1", kubernetes.io/change-cause: initial rollout}
spec:
  replicas: 3
  selector:
    matchLabels: {app.kubernetes.io/name: frontend}
    matchExpressions: [{key: tier, operator: In, values: [web]}]
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels: {app.kubernetes.io/name: frontend, tier: web}
    spec:
      initContainers:
      - name: migrate
        image: ghcr.io/example/shop-migrate:2.3.1
        command: [/bin/migrate, --up]
        envFrom: [{secretRef: {name: db-credentials}}]
      containers:
      - name: web
        image: ghcr.io/example/shop-frontend:2.3.1
        ports: [{name: http, containerPort: 8080}, {name: metrics, containerPort: 9090}]
        env:
        - {name: LOG_LEVEL, value: info}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: API_KEY
          valueFrom: {secretKeyRef: {name: api, key: token}}
        resources:
          requests: {cpu: 250m, memory: 256Mi}
          limits: {cpu: "1", memory: 512Mi}
        readinessProbe: {httpGet: {path: /healthz, port: http}, initialDelaySeconds: 5}
        livenessProbe: {tcpSocket: {port: 8080}, periodSeconds: 20}
        lifecycle: {preStop: {exec: {command: [sleep, "5"]}}}
        volumeMounts:
        - {name: config, mountPath: /etc/shop, readOnly: true}
        - {name: cache, mountPath: /var/cache/shop}
      - name: sidecar
        image: busybox
        command: [sh, -c, "tail -f /dev/null"]
      volumes:
      - name: config
        configMap: {name: shop-config}
      - name: cache
        emptyDir: {sizeLimit: 1Gi}
      nodeSelector: {kubernetes.io/os: linux}
      tolerations: [{key: dedicated, operator: Equal, value: shop, effect: NoSchedule}]
---
apiVersion: v1
kind: Service
metadata:
  name: frontend
  namespace: shop
spec:
  type: NodePort
  selector: {app.kubernetes.io/name: frontend}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080}
  - {name: metrics, port: 9090, targetPort: 9090}
"""


def test_realistic_manifests_pass():
    dep, svc = yaml.safe_load_all(MANIFEST)
    assert causes("deployments", dep) == []
    assert causes("services", svc) == []
    # The pods the ReplicaSet would stamp out are valid too.
    p = {"metadata": {"name": "frontend-abc12", "namespace": "shop", **dep["spec"]["template"]["metadata"]},
         "spec": copy.deepcopy(dep["spec"]["template"]["spec"])}
    assert causes("pods", p) == []


@pytest.mark.parametrize("resource,obj", [
    ("namespaces", {"metadata": {"name": "team-a"}}),
    ("nodes", {"metadata": {"name": "node-1.example", "labels": {"node-role.kubernetes.io/control-plane": ""}},
               "spec": {"podCIDRs": ["10.244.0.0/24"], "taints": [{"key": "k", "effect": "NoSchedule"}]},
               "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}),
    ("configmaps", {"metadata": {"name": "c"}, "data": {"app.properties": "a=b", "KEY_1": "x"}}),
    ("secrets", {"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA==", "tls.key": "eA=="}}),
    ("serviceaccounts", {"metadata": {"name": "default", "namespace": "default"}}),
    ("leases", {"metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
                "spec": {"holderIdentity": "h", "leaseDurationSeconds": 15, "leaseTransitions": 0}}),
    ("endpoints", {"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.244.0.5"}], "ports": [{"port": 80}]}]}),
    ("events", {"metadata": {"name": "web.17a", "namespace": "default"},
                "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}, "reason": "Scheduled"}),
    ("bindings", {"metadata": {"name": "web", "namespace": "default"}, "target": {"kind": "Node", "name": "node-1"}}),
    ("services", service(clusterIP="None", ports=[])),
    ("services", service(type="ExternalName", externalName="db.example.com", ports=[])),
])
def test_valid_objects_pass(resource, obj):
    assert causes(resource, obj) == []


# ---------------------------------------------------------------------------
# updates
# ---------------------------------------------------------------------------


def test_pod_update_may_change_image_and_add_tolerations():
    old = defaulted("pods", pod())
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "nginx:1.26"
    new["spec"]["tolerations"].append({"key": "x", "operator": "Exists"})
    new["spec"]["activeDeadlineSeconds"] = 60
    new["metadata"]["labels"] = {"changed": "yes"}
    assert causes("pods", new, old, default=False) == []


@pytest.mark.parametrize("mutate,field", [
    (lambda p: p["spec"].__setitem__("restartPolicy", "Never"), "spec"),
    (lambda p: p["spec"]["containers"][0].__setitem__("name", "other"), "spec"),
    (lambda p: p["spec"].__setitem__("tolerations", []), "spec.tolerations"),
    (lambda p: p["metadata"].__setitem__("name", "renamed"), "metadata.name"),
    (lambda p: p["metadata"].__setitem__("namespace", "other"), "metadata.namespace"),
])
def test_pod_update_forbidden_changes(mutate, field):
    old = defaulted("pods", pod())
    new = copy.deepcopy(old)
    mutate(new)
    assert field in [f for f, _ in causes("pods", new, old, default=False)]


def test_pod_update_message_is_kubernetes_wording():
    old = defaulted("pods", pod())
    new = copy.deepcopy(old)
    new["spec"]["restartPolicy"] = "Never"
    with pytest.raises(kinds.Invalid) as info:
        validate_object("pods", new, old=old)
    msg = info.value.causes[0]["message"]
    assert msg.startswith("Forbidden: pod updates may not change fields other than `spec.containers[*].image`")
    assert "spec.restartPolicy" in msg


def test_immutable_selector_cluster_ip_and_secret_type():
    old = defaulted("deployments", deployment())
    new = copy.deepcopy(old)
    new["spec"]["selector"] = {"matchLabels": {"app": "web", "v": "2"}}
    new["spec"]["template"]["metadata"]["labels"]["v"] = "2"
    assert ("spec.selector", "FieldValueInvalid") in causes("deployments", new, old, default=False)

    old_svc = defaulted("services", service(clusterIP="10.96.0.10"))
    new_svc = copy.deepcopy(old_svc)
    new_svc["spec"]["clusterIP"] = new_svc["spec"]["clusterIPs"][0] = "10.96.0.11"
    assert ("spec.clusterIPs[0]", "FieldValueInvalid") in causes("services", new_svc, old_svc, default=False)

    old_secret = defaulted("secrets", {"metadata": {"name": "s"}, "immutable": True, "data": {"a": "eA=="}})
    new_secret = {**copy.deepcopy(old_secret), "type": "kubernetes.io/basic-auth", "data": {"username": "eA=="}}
    found = causes("secrets", new_secret, old_secret, default=False)
    assert ("type", "FieldValueInvalid") in found and ("data", "FieldValueForbidden") in found


@pytest.mark.parametrize("resource,obj", [("pods", pod()), ("deployments", deployment()), ("services", service()),
                                          ("secrets", {"metadata": {"name": "s"}, "stringData": {"a": "b"}})])
def test_defaulting_is_idempotent(resource, obj):
    once = defaulted(resource, obj)
    assert defaulted(resource, once) == once


def test_kubectl_generated_objects_pass():
    # What `kubectl create deployment web --image=nginx` and `kubectl run` send.
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": "default", "creationTimestamp": None, "labels": {"app": "web"}},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "strategy": {},
                    "template": {"metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
                                 "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}}},
           "status": {}}
    assert causes("deployments", dep) == []
    run = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "tmp", "namespace": "default", "creationTimestamp": None, "labels": {"run": "tmp"}},
           "spec": {"containers": [{"name": "tmp", "image": "busybox", "args": ["sleep", "3600"], "resources": {}}],
                    "dnsPolicy": "ClusterFirst", "restartPolicy": "Never"},
           "status": {}}
    assert causes("pods", run) == []


# ---------------------------------------------------------------------------
# ephemeral containers (pods/ephemeralcontainers)
# ---------------------------------------------------------------------------


def with_ephemeral(old: dict, *containers: dict) -> dict:
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"] = [*new["spec"].get("ephemeralContainers", []), *containers]
    return defaulted("pods/ephemeralcontainers", new, old)


def debugger(name: str = "dbg", **extra) -> dict:
    return {"name": name, "image": "busybox:1.36", **extra}


@pytest.mark.parametrize("extra,expected", [
    ({}, []),
    ({"resources": {}, "targetContainerName": "app", "env": [{"name": "A", "value": "1"}],
      "securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}}, "stdin": True, "tty": True}, []),
    ({"ports": [{"containerPort": 80}]}, [("spec.ephemeralContainers[0].ports", "FieldValueForbidden")]),
    ({"ports": []}, [("spec.ephemeralContainers[0].ports", "FieldValueForbidden")]),   # Go: a non-nil slice
    ({"resources": {"requests": {"cpu": "1"}}}, [("spec.ephemeralContainers[0].resources", "FieldValueForbidden")]),
    ({"livenessProbe": {"exec": {"command": ["true"]}}},
     [("spec.ephemeralContainers[0].livenessProbe", "FieldValueForbidden")]),
    ({"startupProbe": {"exec": {"command": ["true"]}}},
     [("spec.ephemeralContainers[0].startupProbe", "FieldValueForbidden")]),
    ({"lifecycle": {"postStart": {"exec": {"command": ["true"]}}}},
     [("spec.ephemeralContainers[0].lifecycle", "FieldValueForbidden")]),
    ({"restartPolicy": "Always"}, [("spec.ephemeralContainers[0].restartPolicy", "FieldValueForbidden")]),
    ({"targetContainerName": "missing"}, [("spec.ephemeralContainers[0].targetContainerName", "FieldValueNotFound")]),
    ({"name": "app"}, [("spec.ephemeralContainers[0].name", "FieldValueDuplicate")]),
    ({"name": "Bad_Name"}, [("spec.ephemeralContainers[0].name", "FieldValueInvalid")]),
    ({"image": ""}, [("spec.ephemeralContainers[0].image", "FieldValueRequired")]),
])
def test_ephemeral_container_rules(extra, expected):
    old = defaulted("pods", pod())
    new = with_ephemeral(old, debugger(**extra))
    assert causes("pods/ephemeralcontainers", new, old, default=False) == expected


def test_ephemeral_container_may_not_target_another_ephemeral_one():
    old = with_ephemeral(defaulted("pods", pod()), debugger("first"))
    new = with_ephemeral(old, debugger("second", targetContainerName="first"))
    assert causes("pods/ephemeralcontainers", new, old, default=False) == [
        ("spec.ephemeralContainers[1].targetContainerName", "FieldValueNotFound")]


def test_ephemeral_containers_are_appended_only():
    old = with_ephemeral(defaulted("pods", pod()), debugger("first"))
    assert causes("pods/ephemeralcontainers", with_ephemeral(old, debugger("second")), old, default=False) == []
    changed = copy.deepcopy(old)
    changed["spec"]["ephemeralContainers"][0]["command"] = ["sh"]
    with pytest.raises(kinds.Invalid) as info:
        validate_object("pods/ephemeralcontainers", changed, old=old)
    assert info.value.causes[0]["message"].startswith(
        'Forbidden: existing ephemeral containers "first" may not be changed\n')
    removed = copy.deepcopy(old)
    removed["spec"]["ephemeralContainers"] = []
    with pytest.raises(kinds.Invalid) as info:
        validate_object("pods/ephemeralcontainers", removed, old=old)
    assert info.value.causes == [{"reason": "FieldValueForbidden", "field": "spec.ephemeralContainers",
                                  "message": 'Forbidden: existing ephemeral containers "first" may not be removed\n'}]


def test_ephemeral_containers_only_through_their_subresource():
    assert ("spec.ephemeralContainers", "FieldValueForbidden") in causes("pods", pod(ephemeralContainers=[debugger()]))
    old = defaulted("pods", pod())
    assert ("spec", "FieldValueForbidden") in causes("pods", with_ephemeral(old, debugger()), old, default=False)
    d = deployment()
    d["spec"]["template"]["spec"]["ephemeralContainers"] = [debugger()]
    assert ("spec.template.spec.ephemeralContainers", "FieldValueForbidden") in causes("deployments", d)


def test_static_pods_take_no_ephemeral_containers():
    old = defaulted("pods", pod())
    old["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    assert causes("pods/ephemeralcontainers", with_ephemeral(old, debugger()), old, default=False) == [
        ("", "FieldValueForbidden")]


def test_ephemeral_containers_are_defaulted_like_containers():
    new = with_ephemeral(defaulted("pods", pod()), debugger(image="busybox"))
    ec = new["spec"]["ephemeralContainers"][0]
    assert (ec["imagePullPolicy"], ec["terminationMessagePath"], ec["terminationMessagePolicy"]) == (
        "Always", "/dev/termination-log", "File")
