"""Horizontal pod autoscaler controller: a target's replicas follow its pods' resource usage.

Kubernetes' ``pkg/controller/podautoscaler/horizontal.go`` in miniature.  Every
``--horizontal-pod-autoscaler-sync-period`` (15 s) each HorizontalPodAutoscaler
(``autoscaling/v2``, from the ``horizontalpodautoscalers`` informer) is
reconciled; creating one or changing its spec reconciles it at once.
``reconcile(key)``:

1. reads the target's ``/scale`` (any kind with a scale subresource: built-in
   kinds from the registry, custom resources found through discovery):
   condition AbleToScale (SucceededGetScale / FailedGetScale);
2. outside [minReplicas, maxReplicas] the count is brought inside; a target
   at 0 replicas is left alone (ScalingActive False, ScalingDisabled);
3. otherwise selects the pods by the scale's ``status.selector`` (pods
   informer) and computes each metric's proposal
   (``kubepy.controllers.replicacalculator``) from the pods' PodMetrics
   (``kubepy.controllers.metricsclient``): Resource metrics (the pods' usage)
   and ContainerResource metrics (one container's), by Utilization of the
   requests or by AverageValue.  Pods, Object and External metrics are refused
   (ScalingActive False with a FailedGet…Metric reason, and an event):
   ``custom.metrics.k8s.io`` and ``external.metrics.k8s.io`` are not served.
   The largest proposal wins
   (ScalingActive True, ValidMetricFound); if every metric failed, or some
   failed and the rest would scale down, nothing is changed;
4. normalizes it (``kubepy.controllers.scalebehavior``: stabilization,
   behavior policies, min/max: AbleToScale ReadyForNewScale /
   ScaleDownStabilized / ScaleUpStabilized, ScalingLimited TooFewReplicas /
   TooManyReplicas / ScaleUpLimit / ScaleDownLimit / DesiredWithinRange);
5. writes ``/scale`` when the count changes (event SuccessfulRescale
   "New size: N; reason: cpu resource utilization (percentage of request)
   above target"; FailedRescale and AbleToScale FailedUpdateScale when the
   write fails), then the HPA's status (currentReplicas, desiredReplicas,
   currentMetrics, lastScaleTime, conditions) when it changed.

Each decision is logged once, key=value.  Talks to the API server only
through ``ControllerContext.client`` and the metrics client it is given.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from kubepy.client import (
    APIStatusError, ConflictError, NotFoundError, TransportError, WorkQueue, object_key, run_workers)
from kubepy.controllers.context import ControllerContext
from kubepy.controllers.metricsclient import RESTMetricsClient, ResourceMetricsClient
from kubepy.controllers.pods import format_time
from kubepy.controllers.replicacalculator import (
    MetricsError, ReplicaCalculatorConfig, milli_value, raw_resource_replicas, resource_replicas)
from kubepy.controllers.scalebehavior import ScaleHistory, effective_behavior, normalize, normalize_with_behavior
from kubepy.kinds import by_api_version, by_kind
from kubepy.meta.quantity import format_quantity
from kubepy.meta.selectors import SelectorError, parse_label_selector

log = logging.getLogger(__name__)

__all__ = ["HorizontalPodAutoscalerController", "set_condition"]

ABLE_TO_SCALE, SCALING_ACTIVE, SCALING_LIMITED = "AbleToScale", "ScalingActive", "ScalingLimited"
# The metric types kubepy cannot read, and the reason upstream gives when their API fails.
_UNSERVED = {"Pods": ("FailedGetPodsMetric", "custom.metrics.k8s.io"),
             "Object": ("FailedGetObjectMetric", "custom.metrics.k8s.io"),
             "External": ("FailedGetExternalMetric", "external.metrics.k8s.io")}


def utcnow() -> datetime:
    return datetime.now(UTC)


def _d(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def set_condition(status: dict, ctype: str, value: str, reason: str, message: str, now: datetime) -> None:
    """upstream's setCondition: lastTransitionTime moves only when the status does."""
    conditions = status.setdefault("conditions", [])
    for c in conditions:
        if c.get("type") == ctype:
            if c.get("status") != value:
                c["lastTransitionTime"] = format_time(now)
            c.update(status=value, reason=reason, message=message)
            return
    conditions.append({"type": ctype, "status": value, "lastTransitionTime": format_time(now), "reason": reason,
                       "message": message})


@dataclass
class _Proposal:
    replicas: int
    metric: str  # "cpu resource utilization (percentage of request)"
    status: dict  # the MetricStatus


class _MetricFailure(Exception):
    """One metric that gave no proposal. Its message goes into its event and the ScalingActive
    condition; ``wrapped`` (the message after ``"failed to get cpu utilization: "``, as upstream's
    computeStatusFor… wraps it) into FailedComputeMetricsReplicas."""

    def __init__(self, reason: str, message: str, *, context: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.wrapped = f"{context}: {message}" if context else message


class HorizontalPodAutoscalerController:
    name = "horizontalpodautoscaling"

    def __init__(self, ctx: ControllerContext, *, metrics: ResourceMetricsClient | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.recorder = ctx.recorder
        self.metrics = metrics or RESTMetricsClient(ctx.client)
        self.clock = clock
        cfg = ctx.config
        self.sync_period = cfg.horizontal_pod_autoscaler_sync_period
        self.downscale_window = timedelta(seconds=cfg.horizontal_pod_autoscaler_downscale_stabilization)
        self.calc = ReplicaCalculatorConfig(
            tolerance=cfg.horizontal_pod_autoscaler_tolerance,
            cpu_initialization_period=timedelta(seconds=cfg.horizontal_pod_autoscaler_cpu_initialization_period),
            delay_of_initial_readiness_status=timedelta(
                seconds=cfg.horizontal_pod_autoscaler_initial_readiness_delay))
        self.queue = WorkQueue(name=self.name)
        self.hpa_informer = ctx.informers.informer("horizontalpodautoscalers")
        self.pod_informer = ctx.informers.informer("pods")
        self.hpa_informer.add_handler(lambda h: self.queue.add(object_key(h)), self._on_update,
                                      lambda h: self.queue.add(object_key(h)))
        self.history: dict[str, ScaleHistory] = {}

    async def run(self) -> None:
        await self.hpa_informer.wait_synced()
        await self.pod_informer.wait_synced()
        log.info("controller started name=%s syncPeriod=%s", self.name, self.sync_period)
        await run_workers(self.queue, self.reconcile, workers=self.ctx.config.concurrent_syncs, logger=log)

    def _on_update(self, old: dict, new: dict) -> None:
        # Our own status writes must not make a reconcile loop: only a spec change is worth one now.
        if _d(old.get("spec")) != _d(new.get("spec")):
            self.queue.add(object_key(new))

    # -- one HPA ------------------------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        hpa = self.hpa_informer.cache.get(key)
        if hpa is None:
            self.history.pop(key, None)
            return
        try:
            await self.reconcile_autoscaler(copy.deepcopy(hpa), key)
        finally:
            self.queue.add_after(key, self.sync_period)

    async def reconcile_autoscaler(self, hpa: dict, key: str) -> None:
        now = self.clock()
        spec, meta = _d(hpa.get("spec")), hpa["metadata"]
        namespace = meta["namespace"]
        original = copy.deepcopy(_d(hpa.get("status")))
        status = copy.deepcopy(original)
        ref = _d(spec.get("scaleTargetRef"))
        reference = f"{ref.get('kind')}/{namespace}/{ref.get('name')}"
        try:
            scale_path = await self._scale_path(ref, namespace)
            scale = await self.client.get_path(scale_path)
        except (APIStatusError, TransportError, LookupError) as e:
            message = str(e)
            self._event(hpa, "Warning", "FailedGetScale", message)
            set_condition(status, ABLE_TO_SCALE, "False", "FailedGetScale",
                          f"the HPA controller was unable to get the target's current scale: {message}", now)
            await self._write_status(hpa, original, status)
            log.info("hpa not scaled hpa=%s target=%s reason=FailedGetScale err=%s", key, reference, message)
            return
        set_condition(status, ABLE_TO_SCALE, "True", "SucceededGetScale",
                      "the HPA controller was able to get the target's current scale", now)
        current = int(_d(scale.get("spec")).get("replicas") or 0)
        history = self.history.setdefault(key, ScaleHistory())
        history.record_initial(current, now)
        min_replicas = int(spec.get("minReplicas") or 1)
        max_replicas = int(spec.get("maxReplicas") or 0)
        metric_statuses: list[dict] | None = None
        rescale, reason, decision = True, "", "proposed=-"
        if current == 0 and min_replicas != 0:
            desired, rescale = 0, False
            set_condition(status, SCALING_ACTIVE, "False", "ScalingDisabled",
                          "scaling is disabled since the replica count of the target is zero", now)
        elif current > max_replicas:
            desired, reason = max_replicas, "Current number of replicas above Spec.MaxReplicas"
        elif current < min_replicas:
            desired, reason = min_replicas, "Current number of replicas below Spec.MinReplicas"
        else:
            computed = await self._compute(hpa, scale, status, now)
            if computed is None:
                status["currentReplicas"] = current
                status.pop("currentMetrics", None)
                await self._write_status(hpa, original, status)
                return
            proposal, metric_name, metric_statuses = computed
            desired, metric = 0, ""
            if proposal > desired:
                desired, metric = proposal, metric_name
            if desired > current:
                reason = f"{metric} above target"
            elif desired < current:
                reason = "All metrics below target"
            behavior = spec.get("behavior")
            if behavior is None:
                limited = normalize(history, current=current, desired=desired, min_replicas=min_replicas,
                                    max_replicas=max_replicas, downscale_window=self.downscale_window, now=now)
            else:
                limited = normalize_with_behavior(history, effective_behavior(behavior, self.downscale_window),
                                                  current=current, desired=desired, min_replicas=min_replicas,
                                                  max_replicas=max_replicas, now=now)
            set_condition(status, ABLE_TO_SCALE, "True", limited.able_reason, limited.able_message, now)
            set_condition(status, SCALING_LIMITED, "True" if limited.limited else "False", limited.limited_reason,
                          limited.limited_message, now)
            decision = (f"proposed={proposal} able={limited.able_reason} "
                        f"limited={limited.limited_reason if limited.limited else '-'}")
            desired = limited.replicas
            rescale = desired != current
        if rescale:
            try:
                await self._write_scale(scale_path, scale, current, desired)
            except (APIStatusError, TransportError) as e:
                self._event(hpa, "Warning", "FailedRescale", f"New size: {desired}; reason: {reason}; error: {e}")
                set_condition(status, ABLE_TO_SCALE, "False", "FailedUpdateScale",
                              f"the HPA controller was unable to update the target scale: {e}", now)
                status["currentReplicas"] = current
                if metric_statuses is not None:
                    status["currentMetrics"] = metric_statuses
                await self._write_status(hpa, original, status)
                log.info("hpa not scaled hpa=%s target=%s desired=%d reason=FailedUpdateScale err=%s", key,
                         reference, desired, e)
                return
            set_condition(status, ABLE_TO_SCALE, "True", "SucceededRescale",
                          f"the HPA controller was able to update the target scale to {desired}", now)
            self._event(hpa, "Normal", "SuccessfulRescale", f"New size: {desired}; reason: {reason}")
            history.record_scale(spec.get("behavior"), current, desired, now)
            status["lastScaleTime"] = format_time(now)
            log.info("hpa rescaled hpa=%s target=%s from=%d to=%d %s reason=%r", key, reference, current, desired,
                     decision, reason)
        else:
            desired = current
            log.info("hpa unchanged hpa=%s target=%s replicas=%d %s", key, reference, current, decision)
        status["currentReplicas"] = current
        status["desiredReplicas"] = desired
        if metric_statuses:
            status["currentMetrics"] = metric_statuses
        else:
            status.pop("currentMetrics", None)
        await self._write_status(hpa, original, status)

    # -- metrics --------------------------------------------------------------------------------------
    async def _compute(self, hpa: dict, scale: dict, status: dict,
                       now: datetime) -> tuple[int, str, list[dict]] | None:
        """(proposal, its metric's name, every metric's status), or None when no count can be computed
        (the conditions and events say why)."""
        selector_text = str(_d(scale.get("status")).get("selector") or "")
        if not selector_text:
            self._event(hpa, "Warning", "SelectorRequired", "selector is required")
            self._event(hpa, "Warning", "FailedComputeMetricsReplicas", "selector is required")
            set_condition(status, SCALING_ACTIVE, "False", "InvalidSelector",
                          "the HPA target's scale is missing a selector", now)
            log.info("hpa not scaled hpa=%s reason=InvalidSelector", object_key(hpa))
            return None
        try:
            selector = parse_label_selector(selector_text)
        except SelectorError as e:
            message = f"couldn't convert selector into a corresponding internal selector object: {e}"
            self._event(hpa, "Warning", "InvalidSelector", message)
            self._event(hpa, "Warning", "FailedComputeMetricsReplicas", message)
            set_condition(status, SCALING_ACTIVE, "False", "InvalidSelector", message, now)
            log.info("hpa not scaled hpa=%s reason=InvalidSelector err=%s", object_key(hpa), e)
            return None
        namespace = hpa["metadata"]["namespace"]
        pods = [p for p in self.pod_informer.cache.by_index("namespace", namespace)
                if selector.matches(_d(p["metadata"].get("labels")))]
        spec = _d(hpa.get("spec"))
        spec_replicas = int(_d(scale.get("spec")).get("replicas") or 0)
        metrics = spec.get("metrics") or []
        best: _Proposal | None = None
        statuses: list[dict] = []
        failures: list[_MetricFailure] = []
        for metric in metrics:
            try:
                proposal = await self._metric_proposal(metric, spec_replicas, namespace, selector_text, pods, now)
            except _MetricFailure as f:
                failures.append(f)
                self._event(hpa, "Warning", f.reason, str(f))
                statuses.append({"type": ""})
                continue
            statuses.append(proposal.status)
            if best is None or proposal.replicas > best.replicas:
                best = proposal
        if failures and (len(failures) >= len(metrics) or (best is not None and best.replicas < spec_replicas)):
            first = failures[0]
            set_condition(status, SCALING_ACTIVE, "False", first.reason,
                          f"the HPA was unable to compute the replica count: {first}", now)
            message = (f"invalid metrics ({len(failures)} invalid out of {len(metrics)}), "
                       f"first error is: {first.wrapped}")
            self._event(hpa, "Warning", "FailedComputeMetricsReplicas", message)
            log.info("hpa not scaled hpa=%s reason=%s err=%r", object_key(hpa), first.reason, str(first))
            return None
        assert best is not None
        set_condition(status, SCALING_ACTIVE, "True", "ValidMetricFound",
                      f"the HPA was able to successfully calculate a replica count from {best.metric}", now)
        return best.replicas, best.metric, [s for s in statuses if s.get("type")]

    async def _metric_proposal(self, metric: dict, current: int, namespace: str, selector: str, pods: list[dict],
                               now: datetime) -> _Proposal:
        mtype = metric.get("type")
        if mtype in _UNSERVED:
            reason, api = _UNSERVED[mtype]
            source = _d(metric.get({"Pods": "pods", "Object": "object", "External": "external"}[mtype]))
            name = _d(source.get("metric")).get("name") or ""
            raise _MetricFailure(reason, f"unable to get metric {name}: {api} is not served by this cluster")
        if mtype not in ("Resource", "ContainerResource"):
            raise _MetricFailure("InvalidMetricSourceType", f'unknown metric source type "{mtype}"')
        # Resource: the pods' total; ContainerResource: one container's (upstream's two computeStatusFor… paths).
        field = "resource" if mtype == "Resource" else "containerResource"
        src = _d(metric.get(field))
        resource, target = str(src.get("name") or ""), _d(src.get("target"))
        container = str(src.get("container") or "") if mtype == "ContainerResource" else ""
        kind = "resource" if not container else "container resource"
        identity = {"name": resource, **({"container": container} if container else {})}
        try:
            samples, _ = await self.metrics.pod_resource_metrics(resource, namespace, selector, container)
            if target.get("averageValue") is not None:
                replicas, raw = raw_resource_replicas(current, milli_value(target["averageValue"]), resource, pods,
                                                      samples, self.calc, now)
                return _Proposal(replicas, f"{resource} {kind}", {"type": mtype, field: {
                    **identity, "current": {"averageValue": _milli_quantity(raw)}}})
            utilization = target.get("averageUtilization")
            if utilization is None:
                raise MetricsError(f"invalid {kind} metric source: neither an average utilization target nor an "
                                   "average value (usage) target was set")
            replicas, percent, raw = resource_replicas(current, int(utilization), resource, pods, samples,
                                                       self.calc, now, container)
        except MetricsError as e:
            reason = "FailedGetResourceMetric" if not container else "FailedGetContainerResourceMetric"
            of = f"resource {resource}" if not container else f"resource {resource} of container {container}"
            raise _MetricFailure(reason, f"unable to get metrics for {of}: {e}",
                                 context=f"failed to get {resource} utilization") from e
        return _Proposal(replicas, f"{resource} {kind} utilization (percentage of request)", {
            "type": mtype, field: {**identity, "current": {
                "averageUtilization": percent, "averageValue": _milli_quantity(raw)}}})

    # -- the target's scale ---------------------------------------------------------------------------
    async def _scale_path(self, ref: dict, namespace: str) -> str:
        api_version, kind, name = str(ref.get("apiVersion") or ""), str(ref.get("kind") or ""), ref.get("name")
        # No apiVersion is the core group's kind, as an empty GroupVersion maps in upstream's RESTMapper.
        known = by_api_version(api_version, kind) if api_version else by_kind("", kind)
        if known is not None and known.custom is None:
            if "scale" not in known.subresources:
                raise LookupError(f"{known.qualified} has no scale subresource")
            return known.path(namespace, name, "scale")
        # A custom resource (or a kind this process does not know): ask discovery, as upstream's RESTMapper.
        group, _, version = api_version.rpartition("/")
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            doc = await self.client.get_path(base)
        except NotFoundError as e:
            raise LookupError(f'no matches for kind "{kind}" in group "{group}"') from e
        resources = _d(doc).get("resources") or []
        plural = next((r["name"] for r in resources if r.get("kind") == kind and "/" not in r.get("name", "")), None)
        if plural is None:
            raise LookupError(f'no matches for kind "{kind}" in group "{group}"')
        if not any(r.get("name") == f"{plural}/scale" for r in resources):
            raise LookupError(f"{plural}.{group} has no scale subresource")
        return f"{base}/namespaces/{namespace}/{plural}/{name}/scale"

    # -- writes ---------------------------------------------------------------------------------------
    async def _write_scale(self, path: str, scale: dict, current: int, desired: int) -> None:
        """PUT the new replica count. A 409 from a write to the target that left its replicas as
        they were (its controller writing status) is retried on the fresh Scale; one that changed
        them is not: the decision was made for ``current``, so the next sync decides again."""
        for attempt in range(3):
            scale.setdefault("spec", {})["replicas"] = desired
            try:
                await self.client.put_path(path, scale)
                return
            except ConflictError:
                if attempt == 2:
                    raise
                scale = await self.client.get_path(path)
                if int(_d(scale.get("spec")).get("replicas") or 0) != current:
                    raise

    def _event(self, hpa: dict, etype: str, reason: str, message: str) -> None:
        self.recorder.event(hpa, etype, reason, message)

    async def _write_status(self, hpa: dict, original: dict, status: dict) -> None:
        status["observedGeneration"] = hpa["metadata"].get("generation", 1)
        status.setdefault("currentReplicas", int(original.get("currentReplicas") or 0))
        status.setdefault("desiredReplicas", int(original.get("desiredReplicas") or 0))
        if status == original:
            return
        body = {**hpa, "status": status}
        try:
            try:
                await self.client.update("horizontalpodautoscalers", body, subresource="status")
            except ConflictError:
                # The cache lagged a write (a spec change, our own last status): the status is ours
                # to write, so put it on the current object rather than redo the sync.
                fresh = await self.client.get("horizontalpodautoscalers", hpa["metadata"]["name"],
                                              namespace=hpa["metadata"]["namespace"])
                await self.client.update("horizontalpodautoscalers", {**fresh, "status": status},
                                         subresource="status")
        except NotFoundError:
            return


def _milli_quantity(milli: int) -> str:
    """resource.NewMilliQuantity(v, DecimalSI).String(): "250m", "2", "1500m"."""
    return format_quantity(Decimal(milli) / 1000)
