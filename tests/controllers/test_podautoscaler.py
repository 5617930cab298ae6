"""The horizontal pod autoscaler against a real API server, in process: the
Deployment and ReplicaSet controllers make the pods, a fake kubelet runs them,
and a fake metrics.k8s.io source (the controller's metrics seam) reports a
load split evenly across the running pods.

The lab end-to-end test, with real kubelet stats, the metrics server behind API
aggregation and a load-generator pod, is the last test of ``tests/e2e/test_metrics.py``."""

from __future__ import annotations

import asyncio
import functools
import time
from datetime import UTC, datetime, timedelta

from kubepy.client import Client, ClientConfig
from kubepy.controllers.deployment import DeploymentController
from kubepy.controllers.podautoscaler import HorizontalPodAutoscalerController
from kubepy.controllers.replicacalculator import MetricsError, PodMetric
from kubepy.controllers.replicaset import ReplicaSetController
from tests.controllers.conftest import controller_env
from tests.controllers.conftest_rsdeploy import FakeKubelet, live_pods

SYNC = 0.2
DOWNSCALE_WINDOW = 4.0


class FakeMetrics:
    """PodMetrics as a metrics server would report them: ``total_milli`` of the resource, split
    evenly over the Running pods the selector picks."""

    def __init__(self, client: Client, total_milli: int, *, per_container: dict[str, int] | None = None) -> None:
        self.client = client
        self.total_milli = total_milli
        self.per_container = per_container or {}  # a container's share when one container is asked for

    async def pod_resource_metrics(self, resource: str, namespace: str, selector: str,
                                   container: str = "") -> tuple[dict[str, PodMetric], datetime]:
        pods = [p for p in await live_pods(self.client, namespace, selector)
                if (p.get("status") or {}).get("phase") == "Running"]
        if not pods:
            raise MetricsError("no metrics returned from resource metrics API")
        now = datetime.now(UTC)
        each = (self.per_container[container] if container else self.total_milli) // len(pods)
        return {p["metadata"]["name"]: PodMetric(each, now, timedelta(0)) for p in pods}, now


def _deployment(name: str, replicas: int = 1) -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}]}}}}


def _hpa(name: str, *, target: str = "web", min_replicas: int = 1, max_replicas: int = 5,
         metrics: list | None = None) -> dict:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "minReplicas": min_replicas, "maxReplicas": max_replicas,
                     "metrics": metrics or [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]}}


def _condition(hpa: dict, ctype: str) -> dict:
    return next((c for c in (hpa.get("status") or {}).get("conditions") or [] if c["type"] == ctype), {})


async def _events(client: Client, namespace: str, name: str) -> list[dict]:
    items, _ = await client.list_all("events", namespace=namespace)
    return [e for e in items if e["involvedObject"].get("name") == name
            and e["involvedObject"].get("kind") == "HorizontalPodAutoscaler"]


async def _replicas(client: Client, namespace: str, name: str = "web") -> int:
    return (await client.get("deployments", name, namespace=namespace))["spec"]["replicas"]


async def test_scales_up_under_load_holds_scale_down_for_the_window_then_scales_down(apiserver, namespace):
    client = Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig))
    metrics = FakeMetrics(client, total_milli=150)  # 150% of one pod's 100m request
    kubelet = FakeKubelet(Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig)))
    hpa_controller = functools.partial(HorizontalPodAutoscalerController, metrics=metrics)
    kubelet_task = asyncio.create_task(kubelet.run())
    try:
        async with controller_env(apiserver, DeploymentController, ReplicaSetController, hpa_controller,
                                  horizontal_pod_autoscaler_sync_period=SYNC,
                                  horizontal_pod_autoscaler_downscale_stabilization=DOWNSCALE_WINDOW) as env:
            await client.create("deployments", _deployment("web"), namespace=namespace)
            await env.wait_for(lambda: _running(client, namespace, 1), message="one running pod")
            await client.create("horizontalpodautoscalers", _hpa("web"), namespace=namespace)

            # 150% against 50%: ceil(3 × 1) = 3
            await env.wait_for(lambda: _is(client, namespace, 3), message="scaled to 3")
            events = await env.wait_for(lambda: _events(client, namespace, "web"), message="an event")
            assert [(e["reason"], e["message"]) for e in events] == [
                ("SuccessfulRescale", "New size: 3; reason: cpu resource utilization (percentage of request) "
                                      "above target")]
            await env.wait_for(lambda: _running(client, namespace, 3), message="three running pods")

            async def settled() -> dict | None:
                hpa = await client.get("horizontalpodautoscalers", "web", namespace=namespace)
                status = hpa.get("status") or {}
                return hpa if status.get("currentReplicas") == 3 and (status.get("currentMetrics") or [{}])[0].get(
                    "resource", {}).get("current", {}).get("averageUtilization") == 50 else None
            hpa = await env.wait_for(settled, message="status at 3 replicas, 50%")
            status = hpa["status"]
            assert status["desiredReplicas"] == 3 and status["lastScaleTime"]
            assert status["currentMetrics"] == [{"type": "Resource", "resource": {
                "name": "cpu", "current": {"averageUtilization": 50, "averageValue": "50m"}}}]
            assert (_condition(hpa, "AbleToScale")["status"], _condition(hpa, "AbleToScale")["reason"]) == (
                "True", "ReadyForNewScale")
            active = _condition(hpa, "ScalingActive")
            assert (active["status"], active["reason"]) == ("True", "ValidMetricFound")
            assert active["message"] == ("the HPA was able to successfully calculate a replica count from cpu "
                                         "resource utilization (percentage of request)")
            limited = _condition(hpa, "ScalingLimited")
            assert (limited["status"], limited["reason"]) == ("False", "DesiredWithinRange")

            # The load drops to 10%: the recommendation is 1, but the window holds the recent 3.
            metrics.total_milli = 30
            dropped = time.monotonic()

            async def stabilized() -> bool:
                hpa = await client.get("horizontalpodautoscalers", "web", namespace=namespace)
                return _condition(hpa, "AbleToScale").get("reason") == "ScaleDownStabilized"
            await env.wait_for(stabilized, timeout=DOWNSCALE_WINDOW, message="ScaleDownStabilized")
            assert await _replicas(client, namespace) == 3
            await env.wait_for(lambda: _is(client, namespace, 1), timeout=DOWNSCALE_WINDOW + 5, message="back to 1")
            assert time.monotonic() - dropped >= DOWNSCALE_WINDOW / 2  # not at the first sync after the drop

            async def scaled_down_event() -> bool:  # events are recorded in the background
                return ("SuccessfulRescale", "New size: 1; reason: All metrics below target") in [
                    (e["reason"], e["message"]) for e in await _events(client, namespace, "web")]
            await env.wait_for(scaled_down_event, timeout=5, message="the scale-down event")
    finally:
        kubelet_task.cancel()
        await asyncio.gather(kubelet_task, return_exceptions=True)
        await kubelet.client.close()
        await client.close()


async def _running(client: Client, namespace: str, n: int) -> bool:
    pods = await live_pods(client, namespace, "app=web")
    return len(pods) == n and all((p.get("status") or {}).get("phase") == "Running" for p in pods)


async def _is(client: Client, namespace: str, n: int) -> bool:
    return await _replicas(client, namespace) == n


async def test_min_replicas_bring_the_target_up_without_metrics(apiserver, namespace):
    client = Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig))
    try:
        async with controller_env(apiserver, HorizontalPodAutoscalerController,
                                  horizontal_pod_autoscaler_sync_period=SYNC) as env:
            await client.create("deployments", _deployment("web"), namespace=namespace)
            await client.create("horizontalpodautoscalers", _hpa("web", min_replicas=2), namespace=namespace)
            await env.wait_for(lambda: _is(client, namespace, 2), message="scaled to minReplicas")
            events = await env.wait_for(lambda: _events(client, namespace, "web"), message="an event")
            assert ("SuccessfulRescale", "New size: 2; reason: Current number of replicas below Spec.MinReplicas") in [
                (e["reason"], e["message"]) for e in events]
    finally:
        await client.close()


async def test_without_a_metrics_api_the_hpa_says_so_and_leaves_the_target(apiserver, namespace):
    client = Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig))
    kubelet = FakeKubelet(Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig)))
    kubelet_task = asyncio.create_task(kubelet.run())
    try:
        # the controller's own REST metrics client: this API server serves no metrics.k8s.io
        async with controller_env(apiserver, DeploymentController, ReplicaSetController,
                                  HorizontalPodAutoscalerController, horizontal_pod_autoscaler_sync_period=SYNC) as env:
            await client.create("deployments", _deployment("web", replicas=2), namespace=namespace)
            await env.wait_for(lambda: _running(client, namespace, 2), message="two running pods")
            await client.create("horizontalpodautoscalers", _hpa("web"), namespace=namespace)

            async def inactive() -> dict | None:
                hpa = await client.get("horizontalpodautoscalers", "web", namespace=namespace)
                return hpa if _condition(hpa, "ScalingActive").get("status") == "False" else None
            hpa = await env.wait_for(inactive, message="ScalingActive False")
            active = _condition(hpa, "ScalingActive")
            assert active["reason"] == "FailedGetResourceMetric"
            assert active["message"].startswith(
                "the HPA was unable to compute the replica count: unable to get metrics for resource cpu: unable "
                "to fetch metrics from resource metrics API: 404"), active
            assert hpa["status"]["currentReplicas"] == 2 and _condition(hpa, "AbleToScale")["reason"] == \
                "SucceededGetScale"
            async def both_events() -> dict | None:
                got = {e["reason"]: e["message"] for e in await _events(client, namespace, "web")}
                return got if {"FailedGetResourceMetric", "FailedComputeMetricsReplicas"} <= set(got) else None
            events = await env.wait_for(both_events, message="the two events")
            assert events["FailedGetResourceMetric"].startswith("unable to get metrics for resource cpu: ")
            assert events["FailedComputeMetricsReplicas"].startswith(
                "invalid metrics (1 invalid out of 1), first error is: failed to get cpu utilization: unable to "
                "get metrics for resource cpu: "), events
            assert await _replicas(client, namespace) == 2
    finally:
        kubelet_task.cancel()
        await asyncio.gather(kubelet_task, return_exceptions=True)
        await kubelet.client.close()
        await client.close()


async def test_unserved_metric_types_are_refused_not_ignored(apiserver, namespace):
    client = Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig))
    metrics = FakeMetrics(client, total_milli=100)
    try:
        async with controller_env(apiserver, functools.partial(HorizontalPodAutoscalerController, metrics=metrics),
                                  horizontal_pod_autoscaler_sync_period=SYNC) as env:
            await client.create("deployments", _deployment("web"), namespace=namespace)
            await client.create("horizontalpodautoscalers", _hpa("web", metrics=[{"type": "Pods", "pods": {
                "metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}]),
                namespace=namespace)

            async def inactive() -> dict | None:
                hpa = await client.get("horizontalpodautoscalers", "web", namespace=namespace)
                return hpa if _condition(hpa, "ScalingActive").get("status") == "False" else None
            hpa = await env.wait_for(inactive, message="ScalingActive False")
            assert _condition(hpa, "ScalingActive")["reason"] == "FailedGetPodsMetric"
            events = await env.wait_for(lambda: _events(client, namespace, "web"))
            assert ("FailedGetPodsMetric", "unable to get metric qps: custom.metrics.k8s.io is not served by this "
                                           "cluster") in [(e["reason"], e["message"]) for e in events]
    finally:
        await client.close()


async def test_a_missing_target_is_failed_get_scale(apiserver, namespace):
    client = Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig))
    try:
        async with controller_env(apiserver, HorizontalPodAutoscalerController,
                                  horizontal_pod_autoscaler_sync_period=SYNC) as env:
            await client.create("horizontalpodautoscalers", _hpa("web", target="nothing"), namespace=namespace)

            async def failed() -> dict | None:
                hpa = await client.get("horizontalpodautoscalers", "web", namespace=namespace)
                return _condition(hpa, "AbleToScale") or None
            able = await env.wait_for(failed, message="AbleToScale")
            assert (able["status"], able["reason"]) == ("False", "FailedGetScale")
            assert able["message"].startswith("the HPA controller was unable to get the target's current scale: "
                                              "404"), able
            assert "FailedGetScale" in {e["reason"] for e in await env.wait_for(
                lambda: _events(client, namespace, "web"))}
    finally:
        await client.close()


async def test_a_custom_resource_with_a_scale_subresource_is_scaled_through_discovery(apiserver, namespace):
    group = "hpa.kubepy.test"
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": f"workers.{group}"},
           "spec": {"group": group, "scope": "Namespaced",
                    "names": {"plural": "workers", "singular": "worker", "kind": "Worker"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                      "spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
                                      "status": {"type": "object", "properties": {
                                          "replicas": {"type": "integer"}, "selector": {"type": "string"}}}}}},
                                  "subresources": {"status": {}, "scale": {
                                      "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                                      "labelSelectorPath": ".status.selector"}}}]}}
    client = Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig))
    path = f"/apis/{group}/v1/namespaces/{namespace}/workers"
    try:
        await client.create("customresourcedefinitions", crd)

        async def served() -> bool:
            try:
                await client.get_path(path)
                return True
            except Exception:  # noqa: BLE001 - not yet served
                return False
        async with controller_env(apiserver, HorizontalPodAutoscalerController,
                                  horizontal_pod_autoscaler_sync_period=SYNC) as env:
            await env.wait_for(served, message="the CRD served")
            await client.post(path, {"apiVersion": f"{group}/v1", "kind": "Worker", "metadata": {"name": "w"},
                                     "spec": {"replicas": 1}})
            hpa = _hpa("w", min_replicas=3)
            hpa["spec"]["scaleTargetRef"] = {"apiVersion": f"{group}/v1", "kind": "Worker", "name": "w"}
            await client.create("horizontalpodautoscalers", hpa, namespace=namespace)

            async def scaled() -> bool:
                return (await client.get_path(f"{path}/w"))["spec"]["replicas"] == 3
            await env.wait_for(scaled, message="the Worker scaled to minReplicas")
            # a kind that does not exist is FailedGetScale with the RESTMapper's words
            bad = _hpa("nothing")
            bad["spec"]["scaleTargetRef"] = {"apiVersion": f"{group}/v1", "kind": "Nothing", "name": "w"}
            await client.create("horizontalpodautoscalers", bad, namespace=namespace)

            async def failed() -> dict | None:
                got = await client.get("horizontalpodautoscalers", "nothing", namespace=namespace)
                return _condition(got, "AbleToScale") or None
            able = await env.wait_for(failed, message="FailedGetScale")
            assert able["reason"] == "FailedGetScale"
            assert able["message"].endswith(f'no matches for kind "Nothing" in group "{group}"'), able
    finally:
        await client.delete("customresourcedefinitions", f"workers.{group}")
        await client.close()


async def test_a_conflicting_scale_write_is_retried_only_if_the_replicas_did_not_move(apiserver, namespace):
    client = Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig))
    try:
        async with controller_env(apiserver, HorizontalPodAutoscalerController,
                                  horizontal_pod_autoscaler_sync_period=30) as env:
            ctrl = env.controllers["horizontalpodautoscaling"]
            put = ctrl.client.put_path
            meddle: list[tuple[str, dict]] = []

            async def put_after_a_concurrent_write(path: str, body: dict) -> dict:
                if meddle:  # someone writes the Deployment between our GET and PUT of its scale
                    name, patch = meddle.pop()
                    await client.patch("deployments", name, patch, namespace=namespace)
                return await put(path, body)
            ctrl.client.put_path = put_after_a_concurrent_write

            # a write that leaves the replicas alone (a label): retried, scaled at once
            meddle.append(("web", {"metadata": {"labels": {"touched": "yes"}}}))
            await client.create("deployments", _deployment("web"), namespace=namespace)
            await client.create("horizontalpodautoscalers", _hpa("web", min_replicas=2), namespace=namespace)
            await env.wait_for(lambda: _is(client, namespace, 2), timeout=10, message="scaled despite the 409")
            assert not meddle

            # a write that moves the replicas: not overwritten; FailedRescale, AbleToScale FailedUpdateScale
            await client.create("deployments", _deployment("other"), namespace=namespace)
            meddle.append(("other", {"spec": {"replicas": 4}}))
            await client.create("horizontalpodautoscalers", _hpa("other", target="other", min_replicas=2),
                                namespace=namespace)

            async def refused() -> dict | None:
                hpa = await client.get("horizontalpodautoscalers", "other", namespace=namespace)
                return hpa if _condition(hpa, "AbleToScale").get("reason") == "FailedUpdateScale" else None
            await env.wait_for(refused, timeout=10, message="FailedUpdateScale")
            assert await _replicas(client, namespace, "other") == 4
            events = await env.wait_for(lambda: _events(client, namespace, "other"))
            assert any(e["reason"] == "FailedRescale" and e["message"].startswith(
                "New size: 2; reason: Current number of replicas below Spec.MinReplicas; error: 409")
                for e in events), events
    finally:
        await client.close()


async def test_a_container_resource_metric_scales_on_one_containers_usage(apiserver, namespace):
    client = Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig))
    # the pod as a whole is at 1150m of 1000m requested; its app container alone at 150m of 100m
    metrics = FakeMetrics(client, total_milli=1150, per_container={"app": 150})
    kubelet = FakeKubelet(Client(ClientConfig.from_kubeconfig(apiserver.kubeconfig)))
    kubelet_task = asyncio.create_task(kubelet.run())
    try:
        async with controller_env(apiserver, DeploymentController, ReplicaSetController,
                                  functools.partial(HorizontalPodAutoscalerController, metrics=metrics),
                                  horizontal_pod_autoscaler_sync_period=SYNC) as env:
            deployment = _deployment("web")
            deployment["spec"]["template"]["spec"]["containers"] = [
                {"name": "app", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}},
                {"name": "sidecar", "image": "busybox", "resources": {"requests": {"cpu": "900m"}}}]
            await client.create("deployments", deployment, namespace=namespace)
            await env.wait_for(lambda: _running(client, namespace, 1), message="one running pod")
            await client.create("horizontalpodautoscalers", _hpa("web", metrics=[
                {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app", "target": {
                    "type": "Utilization", "averageUtilization": 50}}}]), namespace=namespace)
            await env.wait_for(lambda: _is(client, namespace, 3), message="scaled to 3 on the app container")
            async def rescaled() -> list[tuple[str, str]] | None:   # other events (a warning) may come first
                got = [(e["reason"], e["message"]) for e in await _events(client, namespace, "web")]
                return got if any(reason == "SuccessfulRescale" for reason, _ in got) else None
            events = await env.wait_for(rescaled, message="a SuccessfulRescale event")
            assert ("SuccessfulRescale", "New size: 3; reason: cpu container resource utilization (percentage of "
                                         "request) above target") in events, events

            async def reported() -> list | None:
                hpa = await client.get("horizontalpodautoscalers", "web", namespace=namespace)
                return (hpa.get("status") or {}).get("currentMetrics")
            current = await env.wait_for(reported, message="currentMetrics")
            assert current[0]["type"] == "ContainerResource"
            assert {k: current[0]["containerResource"][k] for k in ("name", "container")} == {
                "name": "cpu", "container": "app"}
    finally:
        kubelet_task.cancel()
        await asyncio.gather(kubelet_task, return_exceptions=True)
        await kubelet.client.close()
        await client.close()
