"""The official kubernetes Python client against a real kubepy API server."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.slow


def _pod(name: str, labels: dict[str, str], node: str | None = None) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(node_name=node, containers=[client.V1Container(name="main", image="busybox:1.36")]),
    )


def test_create_list_selectors_delete(kclient):
    core = client.CoreV1Api(kclient)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="pyclient")))
    for i in range(6):
        core.create_namespaced_pod("pyclient", _pod(f"p{i}", {"app": "a" if i % 2 else "b", "idx": str(i)},
                                                    node="n1" if i < 2 else None))
    names = lambda pods: sorted(p.metadata.name for p in pods.items)  # noqa: E731
    assert names(core.list_namespaced_pod("pyclient", label_selector="app=a")) == ["p1", "p3", "p5"]
    assert names(core.list_namespaced_pod("pyclient", label_selector="app!=a,idx in (0,2,3)")) == ["p0", "p2"]
    assert names(core.list_namespaced_pod("pyclient", field_selector="spec.nodeName=n1")) == ["p0", "p1"]
    assert names(core.list_namespaced_pod("pyclient", field_selector="metadata.name=p4")) == ["p4"]
    assert names(core.list_namespaced_pod("pyclient", field_selector="status.phase=Pending")) == [f"p{i}" for i in range(6)]
    with pytest.raises(ApiException) as e:
        core.list_namespaced_pod("pyclient", field_selector="spec.bogus=1")
    assert e.value.status == 400
    # Paging: limit + continue sees every pod exactly once.
    seen, cont = [], None
    while True:
        page = core.list_namespaced_pod("pyclient", limit=4, _continue=cont)
        seen += [p.metadata.name for p in page.items]
        cont = page.metadata._continue
        if not cont:
            break
    assert sorted(seen) == [f"p{i}" for i in range(6)]
    # Pods with no node are deleted at once; bound pods get graceful deletion.
    core.delete_namespaced_pod("p4", "pyclient")
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("p4", "pyclient")
    assert e.value.status == 404
    core.delete_namespaced_pod("p0", "pyclient")
    p0 = core.read_namespaced_pod("p0", "pyclient")
    assert p0.metadata.deletion_timestamp is not None and p0.metadata.deletion_grace_period_seconds == 30
    core.delete_namespaced_pod("p0", "pyclient", grace_period_seconds=0)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("p0", "pyclient")
    assert e.value.status == 404
    core.delete_collection_namespaced_pod("pyclient", label_selector="app=a", grace_period_seconds=0)
    assert names(core.list_namespaced_pod("pyclient")) == ["p2"]


def test_conflict_on_stale_resource_version(kclient):
    core = client.CoreV1Api(kclient)
    cm = core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="conflict"), data={"a": "1"}))
    stale = cm.metadata.resource_version
    cm.data = {"a": "2"}
    core.replace_namespaced_config_map("conflict", "default", cm)
    cm.data = {"a": "3"}
    cm.metadata.resource_version = stale
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("conflict", "default", cm)
    assert e.value.status == 409 and "Conflict" in e.value.body
    assert core.read_namespaced_config_map("conflict", "default").data == {"a": "2"}


def test_watch_sees_create_modify_delete(kclient):
    core = client.CoreV1Api(kclient)
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    seen: list[tuple[str, str]] = []

    def run() -> None:
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=10,
                           label_selector="watched=yes"):
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="w1", labels={"watched": "yes"})))
    core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w-other")))
    core.patch_namespaced_config_map("w1", "default", {"data": {"k": "v"}})
    core.delete_namespaced_config_map("w1", "default")
    t.join(15)
    assert seen == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]


def test_deployment_status_and_scale_subresources(kclient):
    apps = client.AppsV1Api(kclient)
    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="sub"),
        spec=client.V1DeploymentSpec(
            replicas=1, selector=client.V1LabelSelector(match_labels={"app": "sub"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "sub"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]))))
    apps.create_namespaced_deployment("default", dep)
    scale = apps.read_namespaced_deployment_scale("sub", "default")
    assert scale.spec.replicas == 1 and scale.status.selector == "app=sub"
    apps.patch_namespaced_deployment_scale("sub", "default", {"spec": {"replicas": 4}})
    got = apps.read_namespaced_deployment("sub", "default")
    assert got.spec.replicas == 4 and got.metadata.generation == 2
    # Status goes through /status only; the main resource ignores it.
    apps.patch_namespaced_deployment_status("sub", "default", {"status": {"replicas": 4, "readyReplicas": 2}})
    apps.patch_namespaced_deployment("sub", "default", {"status": {"replicas": 99}})
    got = apps.read_namespaced_deployment("sub", "default")
    assert got.status.replicas == 4 and got.status.ready_replicas == 2
    apps.delete_namespaced_deployment("sub", "default")


def test_binding_and_dry_run(kclient):
    core = client.CoreV1Api(kclient)
    core.create_namespaced_pod("default", _pod("bindme", {}))
    core.create_namespaced_pod("default", _pod("dry", {}), dry_run="All")
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("dry", "default")
    assert e.value.status == 404
    body = client.V1Binding(metadata=client.V1ObjectMeta(name="bindme"),
                            target=client.V1ObjectReference(kind="Node", name="node-a"))
    core.create_namespaced_pod_binding("bindme", "default", body, _preload_content=False)
    pod = core.read_namespaced_pod("bindme", "default")
    assert pod.spec.node_name == "node-a"
    assert any(c.type == "PodScheduled" and c.status == "True" for c in pod.status.conditions)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod_binding("bindme", "default", body, _preload_content=False)
    assert e.value.status == 409
    core.delete_namespaced_pod("bindme", "default", grace_period_seconds=0)
