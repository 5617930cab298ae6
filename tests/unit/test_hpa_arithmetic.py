"""The horizontal pod autoscaler's arithmetic against upstream's documented behaviour:
the replica calculator (replica_calculator_test.go's cases, re-derived by hand) and
the normalization (stabilization windows, behavior policies, min/max, as the
HPA walkthrough and the API reference describe them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubepy.controllers.replicacalculator import (MetricsError, PodMetric, ReplicaCalculatorConfig,
                                                  raw_resource_replicas, resource_replicas)
from kubepy.controllers.scalebehavior import (ScaleHistory, effective_behavior, normalize,
                                              normalize_with_behavior)
from kubepy.kinds.autoscaling.horizontalpodautoscaler import default_scale_down_rules, default_scale_up_rules

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CFG = ReplicaCalculatorConfig()
LONG_AGO = "2026-01-01T11:00:00Z"  # started an hour ago: past the CPU initialization period


def _pod(name: str, *, request: str = "1", ready: bool = True, phase: str = "Running", deleting: bool = False,
         started: str = LONG_AGO, transition: str = LONG_AGO) -> dict:
    meta = {"name": name, "namespace": "ns"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T11:59:00Z"
    return {"metadata": meta,
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": request, "memory": request}}}]},
            "status": {"phase": phase, "startTime": started, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": transition}]}}


def _metrics(**milli: int) -> dict[str, PodMetric]:
    return {name: PodMetric(v, NOW - timedelta(seconds=10), timedelta(seconds=30)) for name, v in milli.items()}


def test_scale_up():
    pods = [_pod("a"), _pod("b"), _pod("c")]
    # 1500m of 3000m requested = 50% against a 30% target: ceil(50/30 × 3) = 5
    assert resource_replicas(3, 30, "cpu", pods, _metrics(a=300, b=500, c=700), CFG, NOW) == (5, 50, 500)


def test_scale_up_with_an_unready_pod_counts_it_at_zero():
    pods = [_pod("a", ready=False, transition="2026-01-01T11:00:10Z"), _pod("b"), _pod("c")]
    # ready pods: 1200/2000 = 60% (ratio 2); with the unready pod at 0: 1200/3000 = 40% → ceil(4/3 × 3) = 4
    assert resource_replicas(3, 30, "cpu", pods, _metrics(a=300, b=500, c=700), CFG, NOW) == (4, 60, 600)


def test_a_pod_ready_again_after_its_start_counts():
    # not ready now, but it was ready once after its initial readiness delay: its sample counts
    pods = [_pod("a", ready=False, transition="2026-01-01T11:30:00Z"), _pod("b"), _pod("c")]
    assert resource_replicas(3, 30, "cpu", pods, _metrics(a=300, b=500, c=700), CFG, NOW)[0] == 5


def test_a_fresh_pod_counts_only_with_a_full_window_since_it_became_ready():
    fresh = _pod("a", started="2026-01-01T11:59:00Z", transition="2026-01-01T11:59:45Z")
    pods = [fresh, _pod("b"), _pod("c")]
    # its sample (NOW-10s) predates Ready + 30s window: unready, counted at 0 on a scale-up
    assert resource_replicas(3, 30, "cpu", pods, _metrics(a=900, b=500, c=700), CFG, NOW)[0] == 4


def test_scale_down():
    pods = [_pod(n) for n in "abcde"]
    # 1400/5000 = 28% against 50%: ceil(0.56 × 5) = 3
    assert resource_replicas(5, 50, "cpu", pods, _metrics(a=100, b=300, c=500, d=250, e=250), CFG, NOW) == (3, 28, 280)


def test_scale_down_ignores_unready_pods():
    pods = [_pod("a"), _pod("b"), _pod("c"), _pod("d", ready=False, transition="2026-01-01T11:00:10Z"),
            _pod("e", ready=False, transition="2026-01-01T11:00:10Z")]
    # ready: 900/3000 = 30%; ratio 0.6 over 3 ready pods → 2
    assert resource_replicas(5, 50, "cpu", pods, _metrics(a=100, b=300, c=500, d=250, e=250), CFG, NOW) == (2, 30, 300)


def test_deleted_and_failed_pods_are_ignored():
    pods = [_pod("a"), _pod("b"), _pod("c", deleting=True), _pod("d", phase="Failed")]
    assert resource_replicas(4, 50, "cpu", pods, _metrics(a=1000, b=1000, c=0, d=0), CFG, NOW)[0] == 4


def test_within_tolerance_nothing_changes():
    pods = [_pod("a", request="900m"), _pod("b"), _pod("c", request="1100m")]
    # 3060/3000 = 102% against 100%: within 10%
    assert resource_replicas(3, 100, "cpu", pods, _metrics(a=1010, b=1030, c=1020), CFG, NOW)[0] == 3


def test_missing_metrics_on_a_scale_down_count_as_using_their_whole_request():
    pods = [_pod(n) for n in "abcd"]
    # known: 500/2000 = 25% (ratio 0.5); the two missing at 100%: 2500/4000 = 62% → ratio 1.24: would
    # reverse the direction, so nothing changes
    assert resource_replicas(4, 50, "cpu", pods, _metrics(a=400, b=100), CFG, NOW)[0] == 4
    # a lower load: known 100/2000 = 5%; with the missing at 100%: 2100/4000 = 52% (ratio 1.04): within tolerance
    assert resource_replicas(4, 50, "cpu", pods, _metrics(a=50, b=50), CFG, NOW)[0] == 4
    # a 200% target: the missing count at the target. known 200/2000 = 10%; (200 + 4000)/4000 = 105%,
    # ratio 0.525 → ceil(0.525 × 4) = 3
    assert resource_replicas(4, 200, "cpu", pods, _metrics(a=100, b=100), CFG, NOW)[0] == 3


def test_missing_metrics_on_a_scale_up_count_as_zero():
    pods = [_pod(n) for n in "abcd"]
    # known: 3000/2000 = 150% against 50% (ratio 3); with the missing at 0: 3000/4000 = 75% → ratio 1.5 → 6
    assert resource_replicas(4, 50, "cpu", pods, _metrics(a=1500, b=1500), CFG, NOW)[0] == 6


def test_errors_are_upstreams():
    with pytest.raises(MetricsError, match="no pods returned by selector while calculating replica count"):
        resource_replicas(1, 50, "cpu", [], _metrics(a=1), CFG, NOW)
    with pytest.raises(MetricsError, match=r"did not receive metrics for targeted pods \(pods might be unready\)"):
        resource_replicas(1, 50, "cpu", [_pod("a", phase="Pending")], _metrics(a=1), CFG, NOW)
    no_request = _pod("a")
    no_request["spec"]["containers"][0]["resources"] = {}
    with pytest.raises(MetricsError, match="missing request for cpu in container c of Pod a"):
        resource_replicas(1, 50, "cpu", [no_request], _metrics(a=1), CFG, NOW)


def test_average_value_targets():
    pods = [_pod(n) for n in "abc"]
    mi = 1024 * 1024 * 1000  # a MiB in milli-bytes
    # 3 pods averaging 200Mi against 100Mi: ratio 2 → 6; the average is reported
    assert raw_resource_replicas(3, 100 * mi, "memory", pods, _metrics(a=100 * mi, b=200 * mi, c=300 * mi),
                                 CFG, NOW) == (6, 200 * mi)
    # memory ignores readiness: an unready pod's sample still counts
    pods[0] = _pod("a", ready=False, transition="2026-01-01T11:00:10Z")
    assert raw_resource_replicas(3, 400 * mi, "memory", pods, _metrics(a=100 * mi, b=100 * mi, c=100 * mi),
                                 CFG, NOW)[0] == 1


# -- normalization ----------------------------------------------------------------------------------
def _with(behavior: dict | None = None, *, down_window: int = 300) -> dict:
    behavior = behavior or {}
    rules = {"scaleUp": {**default_scale_up_rules(), **behavior.get("scaleUp", {})},
             "scaleDown": {**default_scale_down_rules(), **behavior.get("scaleDown", {})}}
    return effective_behavior(rules, timedelta(seconds=down_window))


def test_without_behavior_scale_up_is_limited_to_double_or_four():
    r = normalize(ScaleHistory(), current=1, desired=10, min_replicas=1, max_replicas=20,
                  downscale_window=timedelta(seconds=300), now=NOW)
    assert (r.replicas, r.limited, r.limited_reason) == (4, True, "ScaleUpLimit")
    r = normalize(ScaleHistory(), current=3, desired=10, min_replicas=1, max_replicas=5,
                  downscale_window=timedelta(seconds=300), now=NOW)
    assert (r.replicas, r.limited_reason) == (5, "TooManyReplicas")


def test_without_behavior_the_downscale_window_holds_the_highest_recommendation():
    h = ScaleHistory()
    h.record_initial(5, NOW)
    r = normalize(h, current=5, desired=2, min_replicas=1, max_replicas=10, downscale_window=timedelta(seconds=300),
                  now=NOW + timedelta(seconds=60))
    assert (r.replicas, r.able_reason, r.limited) == (5, "ScaleDownStabilized", False)
    r = normalize(h, current=5, desired=2, min_replicas=1, max_replicas=10, downscale_window=timedelta(seconds=300),
                  now=NOW + timedelta(seconds=301))
    # the 5 has left the window; the 2 recorded at +60 s has not
    assert (r.replicas, r.able_reason, r.limited_reason) == (2, "ReadyForNewScale", "DesiredWithinRange")
    r = normalize(h, current=2, desired=0, min_replicas=1, max_replicas=10, downscale_window=timedelta(seconds=300),
                  now=NOW + timedelta(seconds=302))
    assert (r.replicas, r.limited, r.limited_reason) == (2, False, "DesiredWithinRange")  # still 2 in the window


def test_default_behavior_scales_up_by_max_of_4_pods_or_100_percent_per_15s():
    r = normalize_with_behavior(ScaleHistory(), _with(), current=1, desired=10, min_replicas=1, max_replicas=10,
                                now=NOW)
    assert (r.replicas, r.limited, r.limited_reason) == (5, True, "ScaleUpLimit")
    r = normalize_with_behavior(ScaleHistory(), _with(), current=6, desired=20, min_replicas=1, max_replicas=30,
                                now=NOW)
    assert r.replicas == 12  # 100% beats 4 pods
    r = normalize_with_behavior(ScaleHistory(), _with(), current=6, desired=20, min_replicas=1, max_replicas=8,
                                now=NOW)
    assert (r.replicas, r.limited_reason) == (8, "TooManyReplicas")


def test_select_policy_min_picks_the_smallest_change():
    b = _with({"scaleUp": {"selectPolicy": "Min"}})
    r = normalize_with_behavior(ScaleHistory(), b, current=3, desired=20, min_replicas=1, max_replicas=30, now=NOW)
    assert r.replicas == 6  # min(3 + 4, 3 × 2)


def test_changes_already_made_in_a_period_count_against_its_policy():
    b = _with({"scaleDown": {"stabilizationWindowSeconds": 0, "policies": [
        {"type": "Pods", "value": 1, "periodSeconds": 60}]}})
    h = ScaleHistory()
    r = normalize_with_behavior(h, b, current=10, desired=2, min_replicas=1, max_replicas=10, now=NOW)
    assert (r.replicas, r.limited_reason) == (9, "ScaleDownLimit")
    h.record_scale(b, 10, 9, NOW)
    r = normalize_with_behavior(h, b, current=9, desired=2, min_replicas=1, max_replicas=10,
                                now=NOW + timedelta(seconds=30))
    assert r.replicas == 9  # one pod already went in this minute
    r = normalize_with_behavior(h, b, current=9, desired=2, min_replicas=1, max_replicas=10,
                                now=NOW + timedelta(seconds=61))
    assert r.replicas == 8


def test_disabled_direction_never_moves():
    b = _with({"scaleDown": {"selectPolicy": "Disabled", "stabilizationWindowSeconds": 0}})
    r = normalize_with_behavior(ScaleHistory(), b, current=5, desired=1, min_replicas=1, max_replicas=10, now=NOW)
    assert (r.replicas, r.limited_reason) == (5, "ScaleDownLimit")


def test_behavior_stabilization_windows_in_both_directions():
    b = _with({"scaleUp": {"stabilizationWindowSeconds": 60}, "scaleDown": {"stabilizationWindowSeconds": 120}})
    h = ScaleHistory()
    h.record_initial(3, NOW)
    # up: the lowest recommendation of the last 60 s (3) holds it
    r = normalize_with_behavior(h, b, current=3, desired=6, min_replicas=1, max_replicas=10,
                                now=NOW + timedelta(seconds=10))
    assert (r.replicas, r.able_reason) == (3, "ScaleUpStabilized")
    r = normalize_with_behavior(h, b, current=3, desired=6, min_replicas=1, max_replicas=10,
                                now=NOW + timedelta(seconds=71))
    assert (r.replicas, r.able_reason) == (6, "ReadyForNewScale")
    # down: the highest recommendation of the last 120 s (6) holds it
    r = normalize_with_behavior(h, b, current=6, desired=2, min_replicas=1, max_replicas=10,
                                now=NOW + timedelta(seconds=100))
    assert (r.replicas, r.able_reason) == (6, "ScaleDownStabilized")


def test_the_controllers_downscale_window_applies_when_scale_down_sets_none():
    b = effective_behavior({"scaleUp": default_scale_up_rules(), "scaleDown": default_scale_down_rules()},
                           timedelta(seconds=300))
    assert b["scaleDown"]["stabilizationWindowSeconds"] == 300
    b = effective_behavior({"scaleDown": {"stabilizationWindowSeconds": 0}}, timedelta(seconds=300))
    assert b["scaleDown"]["stabilizationWindowSeconds"] == 0


def test_a_container_metric_uses_that_containers_request_only():
    pod = _pod("a")
    pod["spec"]["containers"].append({"name": "side", "resources": {"requests": {"cpu": "9"}}})
    # app container: 1500m of its 1000m = 150% against 50% → 3 (with the sidecar's request it would be 15%)
    assert resource_replicas(1, 50, "cpu", [pod], _metrics(a=1500), CFG, NOW, container="c") == (3, 150, 1500)
    assert resource_replicas(1, 50, "cpu", [pod], _metrics(a=1500), CFG, NOW)[:2] == (1, 15)
