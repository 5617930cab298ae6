"""The horizontal pod autoscaler's normalization: stabilization windows, scaling policies, min/max.

Learnt from upstream's ``pkg/controller/podautoscaler/horizontal.go``
(``normalizeDesiredReplicas``, ``normalizeDesiredReplicasWithBehaviors`` and
their helpers), written anew.  ``ScaleHistory`` is one HPA's memory (the
controller keeps one per HPA key; it is lost when the controller manager
restarts, as upstream's is): recent recommendations and, for HPAs with a
``behavior``, recent scale events.  Every function takes ``now``: no clocks
inside, so tests replay time.

Without ``behavior`` (upstream's older path): the highest recommendation of
the downscale stabilization window wins (reason ScaleDownStabilized), then
min/max and a scale-up limit of max(2 × current, 4).  With ``behavior``: the
recommendation is held between the lowest of the scale-up window and the
highest of the scale-down window; then each direction's policies bound the
change per period, counting changes already made in that period
(``selectPolicy`` Max picks the policy allowing most change, Min the least,
Disabled none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta


__all__ = ["ScaleHistory", "Limited", "normalize", "normalize_with_behavior", "effective_behavior"]


@dataclass
class ScaleHistory:
    recommendations: list[tuple[int, datetime]] = field(default_factory=list)
    scale_up_events: list[tuple[int, datetime]] = field(default_factory=list)
    scale_down_events: list[tuple[int, datetime]] = field(default_factory=list)

    def record_initial(self, current: int, now: datetime) -> None:
        """Upstream's recordInitialRecommendation: the current size is the first recommendation."""
        if not self.recommendations:
            self.recommendations.append((current, now))

    def record_scale(self, behavior: dict | None, before: int, after: int, now: datetime) -> None:
        """A rescale, for the policies' "changes in this period" (kept only when a behavior uses them)."""
        if behavior is None:
            return
        longest = max((int(p.get("periodSeconds") or 0) for rules in (behavior.get("scaleUp"), behavior.get(
            "scaleDown")) for p in (rules or {}).get("policies") or []), default=0)
        cutoff = now - timedelta(seconds=longest)
        events = self.scale_up_events if after > before else self.scale_down_events
        events[:] = [e for e in events if e[1] > cutoff]
        events.append((abs(after - before), now))


@dataclass(frozen=True)
class Limited:
    """A normalized recommendation and the two conditions it sets (reason, message each)."""

    replicas: int
    able_reason: str
    able_message: str
    limited: bool
    limited_reason: str
    limited_message: str


_READY = ("ReadyForNewScale", "recommended size matches current size")
_WITHIN = ("DesiredWithinRange", "the desired count is within the acceptable range")
_TOO_FEW = ("TooFewReplicas", "the desired replica count is less than the minimum replica count")
_TOO_MANY = ("TooManyReplicas", "the desired replica count is more than the maximum replica count")
_UP_LIMIT = ("ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
_DOWN_LIMIT = ("ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate")
_DOWN_STABILIZED = ("ScaleDownStabilized", "recent recommendations were higher than current one, applying the "
                    "highest recent recommendation")
_UP_STABILIZED = ("ScaleUpStabilized", "recent recommendations were lower than current one, applying the lowest "
                  "recent recommendation")


def _record(history: ScaleHistory, desired: int, now: datetime, old_before: datetime) -> None:
    """Keep the recommendation, reusing the slot of one older than every window (as upstream does)."""
    for i, (_, t) in enumerate(history.recommendations):
        if t < old_before:
            history.recommendations[i] = (desired, now)
            return
    history.recommendations.append((desired, now))


def normalize(history: ScaleHistory, *, current: int, desired: int, min_replicas: int, max_replicas: int,
              downscale_window: timedelta, now: datetime) -> Limited:
    """An HPA without ``behavior``: upstream's normalizeDesiredReplicas."""
    cutoff = now - downscale_window
    stabilized = max([desired] + [r for r, t in history.recommendations if t >= cutoff])
    _record(history, desired, now, cutoff)
    able = _DOWN_STABILIZED if stabilized != desired else _READY
    scale_up_limit = max(2 * current, 4)
    if max_replicas > scale_up_limit:
        maximum, over = scale_up_limit, _UP_LIMIT
    else:
        maximum, over = max_replicas, _TOO_MANY
    if stabilized < min_replicas:
        replicas, reason = min_replicas, _TOO_FEW
    elif stabilized > maximum:
        replicas, reason = maximum, over
    else:
        replicas, reason = stabilized, _WITHIN
    return Limited(replicas, *able, replicas != stabilized, *reason)


def effective_behavior(behavior: dict, downscale_window: timedelta) -> dict:
    """The behavior with the controller's downscale window where scaleDown sets none."""
    down = dict(behavior.get("scaleDown") or {})
    if down.get("stabilizationWindowSeconds") is None:
        down["stabilizationWindowSeconds"] = int(downscale_window.total_seconds())
    return {"scaleUp": behavior.get("scaleUp") or {}, "scaleDown": down}


def _changed_in_period(events: list[tuple[int, datetime]], period_seconds: int, now: datetime) -> int:
    cutoff = now - timedelta(seconds=period_seconds)
    return sum(change for change, t in events if t > cutoff)


def _policy_limit(rules: dict, history: ScaleHistory, current: int, now: datetime, *, up: bool) -> int:
    """How far the policies let the replica count go in one direction, this period."""
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    # For scaling up the policy allowing most change gives the highest count; for scaling down, the lowest.
    pick_most_change = select != "Min"
    choose = max if pick_most_change == up else min
    result: int | None = None
    for policy in rules.get("policies") or []:
        period = int(policy.get("periodSeconds") or 0)
        start = (current - _changed_in_period(history.scale_up_events, period, now)
                 + _changed_in_period(history.scale_down_events, period, now))
        value = int(policy.get("value") or 0)
        if policy.get("type") == "Pods":
            proposed = start + value if up else start - value
        elif up:
            proposed = math.ceil(start * (1 + value / 100))
        else:
            proposed = int(start * (1 - value / 100))
        result = proposed if result is None else choose(result, proposed)
    return current if result is None else result


def normalize_with_behavior(history: ScaleHistory, behavior: dict, *, current: int, desired: int,
                            min_replicas: int, max_replicas: int, now: datetime) -> Limited:
    """An HPA with ``behavior`` (already given the controller's downscale window: ``effective_behavior``)."""
    up_rules, down_rules = behavior.get("scaleUp") or {}, behavior.get("scaleDown") or {}
    up_cutoff = now - timedelta(seconds=int(up_rules.get("stabilizationWindowSeconds") or 0))
    down_cutoff = now - timedelta(seconds=int(down_rules.get("stabilizationWindowSeconds") or 0))
    up_recommendation = min([desired] + [r for r, t in history.recommendations if t > up_cutoff])
    down_recommendation = max([desired] + [r for r, t in history.recommendations if t > down_cutoff])
    stabilized = min(max(current, up_recommendation), down_recommendation)
    _record(history, desired, now, min(up_cutoff, down_cutoff))
    if stabilized == desired:
        able = _READY
    else:
        able = _UP_STABILIZED if desired >= current else _DOWN_STABILIZED
    replicas, reason = stabilized, _WITHIN
    if stabilized > current:
        limit = max(_policy_limit(up_rules, history, current, now, up=True), current)
        maximum, over = (limit, _UP_LIMIT) if max_replicas > limit else (max_replicas, _TOO_MANY)
        if stabilized > maximum:
            replicas, reason = maximum, over
    elif stabilized < current:
        limit = min(_policy_limit(down_rules, history, current, now, up=False), current)
        minimum, under = (limit, _DOWN_LIMIT) if min_replicas < limit else (min_replicas, _TOO_FEW)
        if stabilized < minimum:
            replicas, reason = minimum, under
    return Limited(replicas, *able, replicas != stabilized, *reason)
