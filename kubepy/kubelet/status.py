"""A pod's status as the kubelet reports it: computed purely, written when it changes.

The pure part turns what the runtime holds for each container (its newest
instance and the one before, as ``ContainerRecord``) plus the kubelet's own
knowledge (a waiting reason such as ``CrashLoopBackOff``, probe results)
into the Kubernetes ``PodStatus``: ``containerStatuses`` /
``initContainerStatuses`` (state, lastState, restartCount, ready,
started) / ``ephemeralContainerStatuses`` (never ready, no ``started``;
they count for neither phase nor readiness), the phase by Kubernetes' rules (``pod_phase``) and the
conditions ``PodScheduled``, ``Initialized``, ``ContainersReady``,
``Ready``, whose ``lastTransitionTime`` only moves when the status flips.

``StatusWriter`` is the effect: ``PATCH pods/NAME/status`` (merge patch
of the whole status) only when it differs from what this kubelet last
wrote, at most once per ``min_interval`` per pod. Talks to the API server
through ``Client``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kubepy.client import NotFoundError

log = logging.getLogger(__name__)

__all__ = [
    "ContainerRecord",
    "ContainerView",
    "StatusWriter",
    "build_pod_status",
    "container_status",
    "ephemeral_container_status",
    "is_terminal",
    "now_rfc3339",
    "pod_phase",
    "terminated_reason",
]

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
UNKNOWN_EXIT_CODE = 137   # Kubernetes' ContainerStatusUnknown uses it too


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _second(ts: str | None) -> str | None:
    """RFC 3339 with fractional seconds → whole seconds, as the API stores times."""
    if not ts:
        return ts
    base = ts.split(".", 1)[0].rstrip("Z")
    return base + "Z"


@dataclass
class ContainerRecord:
    """One instance of a container in the runtime, as the kubelet reads it back."""

    id: str
    name: str
    kind: str                      # "sandbox", "init", "app" or "ephemeral"
    restart_count: int
    image: str
    created_at: str                # RFC 3339 (the kubelet's label; the task starts at once)
    running: bool
    exit_code: int | None = None
    finished_at: str | None = None
    oom_killed: bool = False

    @property
    def exited(self) -> bool:
        return not self.running


@dataclass
class ContainerView:
    """What the status needs to know about one container of the pod spec."""

    latest: ContainerRecord | None = None
    previous: ContainerRecord | None = None
    waiting: tuple[str, str] | None = None     # (reason, message) when not running
    ready: bool = False
    started: bool = False
    image_id: str = ""


def terminated_reason(rec: ContainerRecord) -> str:
    if rec.oom_killed:
        return "OOMKilled"
    return "Completed" if rec.exit_code == 0 else "Error"


def _terminated(rec: ContainerRecord) -> dict[str, Any]:
    return {"exitCode": rec.exit_code if rec.exit_code is not None else UNKNOWN_EXIT_CODE,
            "reason": terminated_reason(rec), "startedAt": _second(rec.created_at),
            "finishedAt": _second(rec.finished_at or rec.created_at), "containerID": f"containerd://{rec.id}"}


def container_status(c: dict[str, Any], view: ContainerView) -> dict[str, Any]:
    """One entry of ``containerStatuses`` (or ``initContainerStatuses``)."""
    latest = view.latest
    out: dict[str, Any] = {"name": c["name"], "image": c.get("image", ""), "imageID": view.image_id,
                           "ready": False, "restartCount": latest.restart_count if latest else 0,
                           "started": False, "state": {}, "lastState": {}}
    if latest is not None:
        out["containerID"] = f"containerd://{latest.id}"
    if view.waiting is not None and (latest is None or latest.exited):
        # About to (re)start: the dead instance becomes lastState.
        reason, message = view.waiting
        out["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        if latest is not None:
            out["lastState"] = {"terminated": _terminated(latest)}
    elif latest is None:
        out["state"] = {"waiting": {"reason": "ContainerCreating"}}
    elif latest.running:
        out["state"] = {"running": {"startedAt": _second(latest.created_at)}}
        out["ready"] = view.ready
        out["started"] = view.started
        if view.previous is not None and view.previous.exited:
            out["lastState"] = {"terminated": _terminated(view.previous)}
    else:
        out["state"] = {"terminated": _terminated(latest)}
        if view.previous is not None and view.previous.exited:
            out["lastState"] = {"terminated": _terminated(view.previous)}
    return out


def ephemeral_container_status(c: dict[str, Any], view: ContainerView) -> dict[str, Any]:
    """One entry of ``ephemeralContainerStatuses``: as a container's, but never ready
    and without ``started`` (the kubelet's prober never sets it for them)."""
    out = container_status(c, ContainerView(latest=view.latest, previous=view.previous, waiting=view.waiting,
                                            image_id=view.image_id))
    out.pop("started", None)
    return out


def is_terminal(phase: str | None) -> bool:
    return phase in (SUCCEEDED, FAILED)


def init_done(init_statuses: list[dict[str, Any]]) -> bool:
    return all("terminated" in s["state"] and s["state"]["terminated"]["exitCode"] == 0 for s in init_statuses)


def pod_phase(restart_policy: str, init_statuses: list[dict[str, Any]],
              statuses: list[dict[str, Any]]) -> str:
    """Kubernetes' getPhase over computed container statuses."""
    for s in init_statuses:
        term = s["state"].get("terminated") or (s["lastState"].get("terminated")
                                                if "waiting" in s["state"] else None)
        if term and term["exitCode"] != 0 and restart_policy == "Never":
            return FAILED
    if not init_done(init_statuses):
        return PENDING
    running = waiting = stopped = succeeded = 0
    for s in statuses:
        state, last = s["state"], s["lastState"]
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if state["terminated"]["exitCode"] == 0:
                succeeded += 1
        elif "waiting" in state:
            if "terminated" in last:
                stopped += 1
            else:
                waiting += 1
    if waiting > 0:
        return PENDING
    if running > 0:
        return RUNNING
    if stopped > 0:
        if restart_policy == "Always":
            return RUNNING
        if stopped == succeeded:
            return SUCCEEDED
        if restart_policy == "Never":
            return FAILED
        return RUNNING
    return PENDING


def _condition(old: dict[str, dict[str, Any]], ctype: str, ok: bool, now: str,
               reason: str = "", message: str = "") -> dict[str, Any]:
    status = "True" if ok else "False"
    prev = old.get(ctype)
    when = prev.get("lastTransitionTime") if prev and prev.get("status") == status else now
    cond: dict[str, Any] = {"type": ctype, "status": status, "lastProbeTime": None,
                            "lastTransitionTime": when or now}
    if not ok and reason:
        cond["reason"] = reason
        if message:
            cond["message"] = message
    return cond


@dataclass
class PodStatusInput:
    views: dict[str, ContainerView] = field(default_factory=dict)      # app containers by name
    init_views: dict[str, ContainerView] = field(default_factory=dict)
    ephemeral_views: dict[str, ContainerView] = field(default_factory=dict)
    pod_ip: str | None = None
    host_ip: str = ""
    start_time: str | None = None
    message: tuple[str, str] | None = None   # pod-level (reason, message)


def build_pod_status(pod: dict[str, Any], inp: PodStatusInput, *, now: str | None = None) -> dict[str, Any]:
    """The whole ``status`` the kubelet writes for ``pod``."""
    now = now or now_rfc3339()
    spec, old_status = pod.get("spec") or {}, pod.get("status") or {}
    policy = spec.get("restartPolicy", "Always")
    init_statuses = [container_status(c, inp.init_views.get(c["name"], ContainerView()))
                     for c in spec.get("initContainers") or []]
    statuses = [container_status(c, inp.views.get(c["name"], ContainerView()))
                for c in spec.get("containers") or []]
    for s in init_statuses:   # a finished init container is ready (as Kubernetes reports it)
        if "terminated" in s["state"] and s["state"]["terminated"]["exitCode"] == 0:
            s["ready"] = True
    phase = pod_phase(policy, init_statuses, statuses)
    if is_terminal(old_status.get("phase")):
        phase = old_status["phase"]   # terminal phases never change back
    old = {c.get("type"): c for c in old_status.get("conditions") or []}
    incomplete = [s["name"] for s in init_statuses if not ("terminated" in s["state"]
                                                          and s["state"]["terminated"]["exitCode"] == 0)]
    unready = [s["name"] for s in statuses if not s["ready"]]
    initialized = not incomplete or phase == SUCCEEDED
    ready = not unready and initialized and phase == RUNNING
    if phase == SUCCEEDED:
        not_ready_reason, not_ready_msg = "PodCompleted", ""
    else:
        not_ready_reason = "ContainersNotReady"
        not_ready_msg = f"containers with unready status: [{' '.join(unready)}]"
    scheduled = old.get("PodScheduled") or {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                            "lastTransitionTime": now}
    conditions = [
        _condition(old, "Initialized", initialized, now,
                   "PodCompleted" if phase == SUCCEEDED else "ContainersNotInitialized",
                   f"containers with incomplete status: [{' '.join(incomplete)}]"),
        _condition(old, "Ready", ready, now, not_ready_reason, not_ready_msg),
        _condition(old, "ContainersReady", ready, now, not_ready_reason, not_ready_msg),
        scheduled,
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": inp.host_ip,
        "hostIPs": [{"ip": inp.host_ip}] if inp.host_ip else [],
        "containerStatuses": statuses,
    }
    if inp.pod_ip:
        status["podIP"] = inp.pod_ip
        status["podIPs"] = [{"ip": inp.pod_ip}]
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    ephemeral = spec.get("ephemeralContainers") or []
    if ephemeral:
        status["ephemeralContainerStatuses"] = [
            ephemeral_container_status(c, inp.ephemeral_views.get(c["name"], ContainerView())) for c in ephemeral]
    if inp.start_time:
        status["startTime"] = inp.start_time
    if old_status.get("qosClass"):
        status["qosClass"] = old_status["qosClass"]
    if inp.message:
        status["reason"], status["message"] = inp.message
    return status


class StatusWriter:
    """Writes a pod's status when it changed, at most once per ``min_interval``."""

    def __init__(self, client: Any, *, min_interval: float = 0.25) -> None:
        self.client = client
        self.min_interval = min_interval
        self._written: dict[str, dict[str, Any]] = {}
        self._last: dict[str, float] = {}

    def last(self, uid: str) -> dict[str, Any] | None:
        return self._written.get(uid)

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)
        self._last.pop(uid, None)

    def due_in(self, uid: str) -> float:
        """Seconds until a write for ``uid`` is allowed (0: now)."""
        return max(0.0, self._last.get(uid, 0.0) + self.min_interval - time.monotonic())

    async def write(self, pod: dict[str, Any], status: dict[str, Any]) -> bool:
        """True when written (or nothing to write); False when rate-limited."""
        meta = pod["metadata"]
        uid = meta["uid"]
        if self._written.get(uid) == status:
            return True
        if self.due_in(uid) > 0:
            return False
        self._last[uid] = time.monotonic()
        try:
            await self.client.patch("pods", meta["name"], {"status": status}, namespace=meta["namespace"],
                                    subresource="status", patch_type="merge")
        except NotFoundError:
            return True
        self._written[uid] = status
        log.info("pod status written pod=%s/%s phase=%s", meta["namespace"], meta["name"], status.get("phase"))
        return True
