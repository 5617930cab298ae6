"""Node lifecycle controller: node health from heartbeats, taints, taint-based eviction.

Every ``node_monitor_period`` each Node is checked. Its kubelet proves it is
alive by renewing its Lease (``kube-node-lease/<node>``) or by posting a new
Ready heartbeat; the controller notes *when it saw* either change (local
monotonic time, so clocks need not agree). A node silent for longer than
``node_monitor_grace_period`` gets its conditions set to Unknown
(``NodeStatusUnknown``) through the status subresource. From the Ready
condition follow the taints: ``node.kubernetes.io/unreachable`` (Unknown) or
``node.kubernetes.io/not-ready`` (False), each NoSchedule + NoExecute, removed
once the node is Ready again.

Taint-based eviction: a pod on a node with NoExecute taints is deleted
*gracefully* (its own grace period) once the taints have been in place
longer than its matching toleration allows (at once without one, never with
one that has no tolerationSeconds). The pod then stays Terminating - its
containers may still run on the unreachable node - until its kubelet
confirms (it deletes with grace 0 once they stopped) or pod GC force-deletes
it (the Node was removed, or tainted ``node.kubernetes.io/out-of-service``).
Never force-deleting here keeps at most one running copy of a pod; owners
replace terminating pods anyway (they are not active).

Not implemented from Kubernetes: zone-based eviction rate limits and the
"full disruption" stop. Reads the nodes, leases and pods informers; writes
nodes, node status, pod status and pod deletions through the client.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

from kubepy.client import NotFoundError, WorkQueue, run_workers
from kubepy.controllers.context import ControllerContext

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
# Conditions a kubelet reports; all become Unknown when it stops reporting.
KUBELET_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
# Taints that follow node conditions (TaintNodesByCondition), NoSchedule only.
PRESSURE_TAINTS = {
    "MemoryPressure": "node.kubernetes.io/memory-pressure",
    "DiskPressure": "node.kubernetes.io/disk-pressure",
    "PIDPressure": "node.kubernetes.io/pid-pressure",
}
MANAGED_TAINT_KEYS = {TAINT_UNREACHABLE, TAINT_NOT_READY, *PRESSURE_TAINTS.values()}
REASON_UNKNOWN = "NodeStatusUnknown"
MESSAGE_UNKNOWN = "Kubelet stopped posting node status."
REASON_NEVER_UPDATED = "NodeStatusNeverUpdated"
MESSAGE_NEVER_UPDATED = "Kubelet never posted node status."


# -- time -----------------------------------------------------------------------
def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


# -- decisions (pure) ---------------------------------------------------------
def condition(node: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return None


def conditions_unknown(node: dict[str, Any], now: dt.datetime) -> list[dict[str, Any]] | None:
    """The node's conditions with every kubelet condition Unknown, or None
    when they already are."""
    conditions = [dict(c) for c in (node.get("status") or {}).get("conditions") or []]
    by_type = {c.get("type"): c for c in conditions}
    changed = False
    stamp = rfc3339(now)
    for type_ in KUBELET_CONDITIONS:
        cond = by_type.get(type_)
        if cond is None:
            created = node["metadata"].get("creationTimestamp") or stamp
            conditions.append({"type": type_, "status": "Unknown", "reason": REASON_NEVER_UPDATED,
                               "message": MESSAGE_NEVER_UPDATED, "lastHeartbeatTime": created,
                               "lastTransitionTime": stamp})
            changed = True
        elif cond.get("status") != "Unknown":
            # lastHeartbeatTime stays: it is the kubelet's, and the next real one
            # is how the controller learns the node is back.
            cond.update(status="Unknown", reason=REASON_UNKNOWN, message=MESSAGE_UNKNOWN, lastTransitionTime=stamp)
            changed = True
    return conditions if changed else None


def desired_taints(node: dict[str, Any], now: dt.datetime) -> list[dict[str, Any]]:
    """The node's taints with the condition taints made to match its conditions;
    taints that stay keep their timeAdded."""
    current = list((node.get("spec") or {}).get("taints") or [])
    # No Ready condition yet: a node still registering; after the grace period
    # the controller itself sets Ready Unknown.
    ready = (condition(node, "Ready") or {}).get("status")
    want: list[tuple[str, str]] = []
    if ready == "Unknown":
        want = [(TAINT_UNREACHABLE, "NoSchedule"), (TAINT_UNREACHABLE, "NoExecute")]
    elif ready == "False":
        want = [(TAINT_NOT_READY, "NoSchedule"), (TAINT_NOT_READY, "NoExecute")]
    for type_, key in PRESSURE_TAINTS.items():
        if (condition(node, type_) or {}).get("status") == "True":
            want.append((key, "NoSchedule"))
    kept = [t for t in current if t.get("key") not in MANAGED_TAINT_KEYS or (t.get("key"), t.get("effect")) in want]
    have = {(t.get("key"), t.get("effect")) for t in kept}
    for key, effect in want:
        if (key, effect) not in have:
            taint: dict[str, Any] = {"key": key, "effect": effect}
            if effect == "NoExecute":
                taint["timeAdded"] = rfc3339(now)
            kept.append(taint)
    return kept


def tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    """Kubernetes' Toleration.ToleratesTaint."""
    if toleration.get("effect") and toleration.get("effect") != taint.get("effect"):
        return False
    if toleration.get("key") and toleration.get("key") != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    if operator == "Equal":
        return bool(toleration.get("key")) and (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def eviction_time(pod: dict[str, Any], taints: list[dict[str, Any]], now: dt.datetime) -> dt.datetime | None:
    """When the NoExecute ``taints`` evict ``pod``: ``now`` (or earlier) if one
    is not tolerated, None if all are tolerated forever, else the earliest
    taint.timeAdded + toleration.tolerationSeconds."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    deadline: dt.datetime | None = None
    for taint in taints:
        if taint.get("effect") != "NoExecute":
            continue
        match = next((t for t in tolerations if tolerates(t, taint)), None)
        if match is None:
            return now
        seconds = match.get("tolerationSeconds")
        if seconds is None:
            continue
        added = parse_time(taint.get("timeAdded")) or now
        at = added + dt.timedelta(seconds=max(int(seconds), 0))
        deadline = at if deadline is None else min(deadline, at)
    return deadline


EVICT, WAIT, KEEP = "evict", "wait", "keep"


def eviction_action(pod: dict[str, Any], taints: list[dict[str, Any]], now: dt.datetime) -> tuple[str, float]:
    """What taint-based eviction does with ``pod`` now: (EVICT, 0) - delete it
    gracefully; (WAIT, seconds) - look again then; (KEEP, 0) - nothing, as for
    a pod already terminating (only its kubelet or pod GC may finish that)."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return KEEP, 0.0
    at = eviction_time(pod, taints, now)
    if at is None:
        return KEEP, 0.0
    wait = (at - now).total_seconds()
    return (WAIT, wait) if wait > 0 else (EVICT, 0.0)


@dataclass
class _Health:
    lease_renew: str | None
    heartbeat: str | None
    probe: float  # monotonic time of the last change we saw


# -- the controller -------------------------------------------------------------
class NodeLifecycleController:
    name = "nodelifecycle"

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.config = ctx.config
        self.nodes = ctx.informers.informer("nodes")
        self.leases = ctx.informers.informer("leases")
        self.pods = ctx.informers.informer("pods")
        self.queue = WorkQueue(name=self.name)
        self._health: dict[str, _Health] = {}
        self._last_ready: dict[str, str] = {}  # node -> Ready status we last acted on (for events)
        self.nodes.add_handler(self._enqueue_node, lambda old, new: self._enqueue_node(new), self._node_deleted)
        self.leases.add_handler(self._lease_changed, lambda old, new: self._lease_changed(new), None)
        self.pods.add_handler(self._pod_changed, lambda old, new: self._pod_changed(new), None)

    # -- handlers --------------------------------------------------------------
    def _enqueue_node(self, node: dict[str, Any]) -> None:
        self.queue.add(node["metadata"]["name"])

    def _node_deleted(self, node: dict[str, Any]) -> None:
        self._health.pop(node["metadata"]["name"], None)
        self._last_ready.pop(node["metadata"]["name"], None)

    def _lease_changed(self, lease: dict[str, Any]) -> None:
        if lease["metadata"].get("namespace") == LEASE_NAMESPACE:
            self.queue.add(lease["metadata"]["name"])

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            self.queue.add(node)

    # -- loops -----------------------------------------------------------------
    async def run(self) -> None:
        monitor = asyncio.create_task(self._monitor(), name=f"{self.name}-monitor")
        try:
            await run_workers(self.queue, self.reconcile, workers=self.config.concurrent_syncs, logger=log)
        finally:
            monitor.cancel()
            await asyncio.gather(monitor, return_exceptions=True)

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self.config.node_monitor_period)
            for node in self.nodes.cache.list():
                self._enqueue_node(node)

    # -- one node ----------------------------------------------------------------
    def _observe(self, node: dict[str, Any]) -> float:
        """Seconds since the node last showed a sign of life."""
        name = node["metadata"]["name"]
        lease = self.leases.cache.get(f"{LEASE_NAMESPACE}/{name}")
        renew = ((lease or {}).get("spec") or {}).get("renewTime")
        heartbeat = (condition(node, "Ready") or {}).get("lastHeartbeatTime")
        mono = time.monotonic()
        health = self._health.get(name)
        if health is None:
            probe = mono
            if renew is None and heartbeat is None:
                # Never heard from: the grace period runs from registration.
                created = parse_time(node["metadata"].get("creationTimestamp"))
                if created is not None:
                    probe = mono - max((utcnow() - created).total_seconds(), 0.0)
            self._health[name] = _Health(renew, heartbeat, probe)
        elif renew != health.lease_renew or heartbeat != health.heartbeat:
            health.lease_renew, health.heartbeat, health.probe = renew, heartbeat, mono
        return mono - self._health[name].probe

    async def reconcile(self, name: str) -> None:
        node = self.nodes.cache.get(name)
        if node is None:
            return
        silent_for = self._observe(node)
        now = utcnow()
        if silent_for > self.config.node_monitor_grace_period:
            conditions = conditions_unknown(node, now)
            if conditions is not None:
                updated = {**node, "status": {**(node.get("status") or {}), "conditions": conditions}}
                node = await self.client.update("nodes", updated, subresource="status")
                log.info("node status unknown node=%s silent_for=%.1fs", name, silent_for)
        ready = (condition(node, "Ready") or {}).get("status", "Unknown")
        self._note_ready_change(node, ready)

        taints = desired_taints(node, now)
        if taints != list((node.get("spec") or {}).get("taints") or []):
            updated = {**node, "spec": {**(node.get("spec") or {}), "taints": taints}}
            if not taints:
                updated["spec"].pop("taints")
            node = await self.client.update("nodes", updated)
            log.info("node taints updated node=%s ready=%s taints=%s", name, ready,
                     ",".join(f"{t['key']}:{t['effect']}" for t in taints) or "-")

        if ready == "Unknown":
            await self._mark_pods_not_ready(name)
        await self._evict(node, now)

    def _note_ready_change(self, node: dict[str, Any], ready: str) -> None:
        name = node["metadata"]["name"]
        previous = self._last_ready.get(name)
        self._last_ready[name] = ready
        if (previous == "True" and ready != "True") or (previous is None and ready == "False"):
            self.ctx.recorder.event(node, "Normal", "NodeNotReady", f"Node {name} status is now: NodeNotReady")
            log.info("node not ready node=%s ready=%s", name, ready)
        elif previous is not None and previous != "True" and ready == "True":
            self.ctx.recorder.event(node, "Normal", "NodeReady", f"Node {name} status is now: NodeReady")
            log.info("node ready node=%s", name)

    async def _mark_pods_not_ready(self, node_name: str) -> None:
        """Pods on an unreachable node cannot be known to serve: drop them from
        Services (Kubernetes' MarkPodsNotReady)."""
        for pod in self.pods.cache.by_index("node", node_name):
            status = pod.get("status") or {}
            conditions = [dict(c) for c in status.get("conditions") or []]
            changed = False
            for cond in conditions:
                if cond.get("type") == "Ready" and cond.get("status") != "False":
                    cond.update(status="False", lastTransitionTime=rfc3339(utcnow()))
                    changed = True
            if not changed:
                continue
            try:
                await self.client.update("pods", {**pod, "status": {**status, "conditions": conditions}},
                                         subresource="status")
            except NotFoundError:
                continue
            log.info("pod marked not ready pod=%s/%s node=%s", pod["metadata"].get("namespace"),
                     pod["metadata"]["name"], node_name)

    async def _evict(self, node: dict[str, Any], now: dt.datetime) -> None:
        name = node["metadata"]["name"]
        no_execute = [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("effect") == "NoExecute"]
        if not no_execute:
            return
        next_check: float | None = None
        for pod in self.pods.cache.by_index("node", name):
            meta = pod["metadata"]
            pod_key = f"{meta.get('namespace')}/{meta['name']}"
            action, wait = eviction_action(pod, no_execute, now)
            if action == WAIT:
                next_check = wait if next_check is None else min(next_check, wait)
            if action != EVICT:
                continue
            self.ctx.recorder.event(pod, "Normal", "TaintManagerEviction", f"Marking for deletion Pod {pod_key}")
            await self._delete_pod(pod, grace=None)
            log.info("pod evicted pod=%s node=%s reason=TaintManagerEviction", pod_key, name)
        if next_check is not None:
            self.queue.add_after(name, next_check)

    async def _delete_pod(self, pod: dict[str, Any], *, grace: int | None) -> None:
        meta = pod["metadata"]
        try:
            await self.client.delete("pods", meta["name"], namespace=meta.get("namespace"),
                                     grace_period_seconds=grace, preconditions={"uid": meta.get("uid")})
        except NotFoundError:
            pass
