"""StatefulSet controller: pods with stable identities, made and replaced in order.

Kubernetes' ``pkg/controller/statefulset`` in miniature. A StatefulSet of N
replicas owns the pods ``<name>-<start>`` … ``<name>-<start+N-1>``
(``spec.ordinals.start``, default 0); each has hostname = its name,
subdomain = ``spec.serviceName`` (so cluster DNS answers
``<pod>.<service>.<ns>.svc.<zone>`` for a headless Service), the labels
``statefulset.kubernetes.io/pod-name``, ``apps.kubernetes.io/pod-index`` and
``controller-revision-hash`` (the name of the ControllerRevision it was made
from), and one PersistentVolumeClaim per claim template, named
``<template>-<set>-<ordinal>``.

``plan_sync`` is the pure decision of one sync (upstream's
``updateStatefulSet``): with ``OrderedReady`` management it creates the
lowest missing ordinal and waits until it is Running and Ready (and
available for ``minReadySeconds``) before the next, scales down from the
highest ordinal one at a time, and never acts while a pod is terminating;
with ``Parallel`` it creates and deletes all at once.  A Failed or Succeeded
pod is deleted and made again on a later sync, once the old one is gone:
there is never more than one pod per identity, because a pod is only ever
created under a name no pod of the set holds (terminating ones included,
and the API server refuses a second object of one name anyway).  Updates:
``RollingUpdate`` deletes, from the highest ordinal down to
``partition``, the pods not at the update revision, one at a time waiting
for each replacement to be healthy (or up to ``maxUnavailable`` at once when
it is set); ``OnDelete`` leaves that to the user.  Revisions are kept in
ControllerRevisions by the shared ``history`` module (``kubectl rollout
history/undo``).

Claims: ``persistentVolumeClaimRetentionPolicy`` is carried by owner
references, so the garbage collector does the deleting: ``whenDeleted:
Delete`` puts the set's controller reference on each claim, ``whenScaled:
Delete`` the pod's on the claims of a pod being scaled away.  Until the
cluster serves PersistentVolumeClaims (``kinds.lookup("", "v1",
"persistentvolumeclaims")``) a set with claim templates makes no pods: each
sync says why in a FailedCreate event and a log line, and retries with
backoff, so it starts working the day the kind is registered.

Talks to the API server only through ``ControllerContext.client``; reads
the shared ``statefulsets``, ``pods`` and ``controllerrevisions`` informers.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubepy import kinds
from kubepy.client import (
    AlreadyExistsError,
    APIStatusError,
    NotFoundError,
    WorkQueue,
    object_key,
    run_workers,
)
from kubepy.controllers import history
from kubepy.controllers.context import ControllerContext
from kubepy.controllers.expectations import ControllerExpectations
from kubepy.controllers.ownership import (
    ControllerRefManager,
    OwnerKind,
    controller_ref,
    owner_reference,
    owners_selecting,
    owners_to_sync_on_update,
    resolve_controller_ref,
    selector_of,
)
from kubepy.controllers.pods import (
    is_pod_available,
    is_pod_ready,
    pod_from_template,
    seconds_until_available,
)
from kubepy.controllers.slowstart import slow_start_batch

log = logging.getLogger(__name__)

__all__ = [
    "POD_INDEX_LABEL",
    "POD_NAME_LABEL",
    "STATEFULSET",
    "ClaimsNotServed",
    "Plan",
    "StatefulSetController",
    "calculate_status",
    "claim_name",
    "claim_owner_references",
    "claims_for",
    "new_pod",
    "parse_ordinal",
    "plan_sync",
]

STATEFULSET = OwnerKind("apps/v1", "StatefulSet", "statefulsets")
POD = OwnerKind("v1", "Pod", "pods")
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
REVISION_LABEL = history.REVISION_LABEL

REASON_SUCCESSFUL_CREATE = "SuccessfulCreate"
REASON_SUCCESSFUL_DELETE = "SuccessfulDelete"
REASON_SUCCESSFUL_UPDATE = "SuccessfulUpdate"
REASON_FAILED_CREATE = "FailedCreate"
REASON_FAILED_DELETE = "FailedDelete"
REASON_FAILED_UPDATE = "FailedUpdate"

_ORDINAL_RE = re.compile(r"^(.*)-([0-9]+)$")


class ClaimsNotServed(Exception):
    """The set has claim templates but this cluster serves no PersistentVolumeClaims yet."""


# -- identity (pure) --------------------------------------------------------------
def parse_ordinal(name: str) -> tuple[str, int]:
    """("web", 3) for "web-3"; ("", -1) for a name that is no set member's."""
    m = _ORDINAL_RE.match(name)
    return (m.group(1), int(m.group(2))) if m else ("", -1)


def _spec(sts: dict[str, Any]) -> dict[str, Any]:
    return sts.get("spec") or {}


def start_ordinal(sts: dict[str, Any]) -> int:
    return int((_spec(sts).get("ordinals") or {}).get("start") or 0)


def replica_count(sts: dict[str, Any]) -> int:
    replicas = _spec(sts).get("replicas")
    return 1 if replicas is None else int(replicas)


def is_member_of(sts: dict[str, Any], pod: dict[str, Any]) -> bool:
    return parse_ordinal(pod["metadata"]["name"])[0] == sts["metadata"]["name"]


def ordinal_of(pod: dict[str, Any]) -> int:
    return parse_ordinal(pod["metadata"]["name"])[1]


def claim_templates(sts: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in _spec(sts).get("volumeClaimTemplates") or [] if (c.get("metadata") or {}).get("name")]


def claim_name(template: dict[str, Any], sts: dict[str, Any], ordinal: int) -> str:
    return f"{template['metadata']['name']}-{sts['metadata']['name']}-{ordinal}"


def retention_policy(sts: dict[str, Any]) -> tuple[str, str]:
    policy = _spec(sts).get("persistentVolumeClaimRetentionPolicy") or {}
    return policy.get("whenDeleted") or "Retain", policy.get("whenScaled") or "Retain"


def in_ordinal_range(sts: dict[str, Any], ordinal: int) -> bool:
    start = start_ordinal(sts)
    return start <= ordinal < start + replica_count(sts)


def new_pod(sts: dict[str, Any], template: dict[str, Any], ordinal: int, revision: str) -> dict[str, Any]:
    """Pod ``<set>-<ordinal>`` from ``template`` (the revision's), with its identity and claim volumes."""
    pod = pod_from_template(sts, STATEFULSET, template=template)
    name = f"{sts['metadata']['name']}-{ordinal}"
    meta = pod["metadata"]
    meta.pop("generateName", None)
    meta["name"] = name
    meta["labels"] = {**meta["labels"], POD_NAME_LABEL: name, POD_INDEX_LABEL: str(ordinal), REVISION_LABEL: revision}
    spec = pod["spec"] = copy.deepcopy(pod["spec"])
    spec["hostname"] = name
    if _spec(sts).get("serviceName"):
        spec["subdomain"] = _spec(sts)["serviceName"]
    templates = claim_templates(sts)
    if templates:
        names = {t["metadata"]["name"] for t in templates}
        volumes = [v for v in spec.get("volumes") or [] if v.get("name") not in names]
        volumes += [{"name": t["metadata"]["name"],
                     "persistentVolumeClaim": {"claimName": claim_name(t, sts, ordinal)}} for t in templates]
        spec["volumes"] = volumes
    return pod


def identity_matches(sts: dict[str, Any], pod: dict[str, Any]) -> bool:
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    return (labels.get(POD_NAME_LABEL) == meta["name"]
            and labels.get(POD_INDEX_LABEL) == str(ordinal_of(pod))
            and meta.get("namespace") == sts["metadata"]["namespace"])


def claims_for(sts: dict[str, Any], ordinal: int) -> list[dict[str, Any]]:
    """The claims pod ``ordinal`` mounts, as they would be created: the template,
    named for the pod, labelled with the set's selector's matchLabels."""
    out = []
    match_labels = (_spec(sts).get("selector") or {}).get("matchLabels") or {}
    for template in claim_templates(sts):
        claim = copy.deepcopy(template)
        claim.pop("status", None)
        meta = claim.setdefault("metadata", {})
        meta["name"] = claim_name(template, sts, ordinal)
        meta["namespace"] = sts["metadata"]["namespace"]
        meta["labels"] = {**(meta.get("labels") or {}), **match_labels}
        claim["apiVersion"], claim["kind"] = "v1", "PersistentVolumeClaim"
        out.append(claim)
    return out


def claim_owner_references(claim: dict[str, Any], sts: dict[str, Any], pod: dict[str, Any] | None,
                           ordinal: int) -> list[dict[str, Any]]:
    """The claim's owner references as ``persistentVolumeClaimRetentionPolicy`` wants them
    (upstream's updateClaimOwnerRefForSetAndPod): whenDeleted Delete -> the set controls it
    while its pod is in range; whenScaled Delete -> the pod controls it once scaled away.
    A claim controlled by anything else keeps only its other references."""
    set_uid = sts["metadata"]["uid"]
    pod_uid = (pod or {}).get("metadata", {}).get("uid")
    refs = list((claim.get("metadata") or {}).get("ownerReferences") or [])
    ours = {set_uid} | ({pod_uid} if pod_uid else set())
    foreign_controller = any(r.get("controller") and r.get("uid") not in ours for r in refs)
    refs = [r for r in refs if r.get("uid") not in ours]
    if foreign_controller:
        return refs
    when_deleted, when_scaled = retention_policy(sts)
    scaled_down = not in_ordinal_range(sts, ordinal)
    if when_scaled == "Delete" and scaled_down and pod is not None and pod_uid:
        refs.append(owner_reference(pod, POD))
    elif when_deleted == "Delete" and not scaled_down:
        refs.append(owner_reference(sts, STATEFULSET))
    return refs


# -- pod facts (pure) ----------------------------------------------------------------
def _phase(pod: dict[str, Any]) -> str:
    return (pod.get("status") or {}).get("phase") or ""


def is_created(pod: dict[str, Any]) -> bool:
    """A pod the API holds (a planned one has no uid yet)."""
    return bool(pod["metadata"].get("uid"))


def is_terminating(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def is_running_and_ready(pod: dict[str, Any]) -> bool:
    return _phase(pod) == "Running" and is_pod_ready(pod)


def is_running_and_available(pod: dict[str, Any], min_ready: int, now: datetime) -> bool:
    return _phase(pod) == "Running" and is_pod_available(pod, min_ready, now)


def is_healthy(pod: dict[str, Any], min_ready: int, now: datetime) -> bool:
    return is_running_and_available(pod, min_ready, now) and not is_terminating(pod)


def revision_of(pod: dict[str, Any]) -> str:
    return (pod["metadata"].get("labels") or {}).get(REVISION_LABEL, "")


def _scaled(value: Any, total: int) -> int:
    """An int-or-percent of ``total``, rounded up, at least 1 (getStatefulSetMaxUnavailable)."""
    if isinstance(value, str) and value.endswith("%"):
        n = -(-int(value[:-1]) * total // 100)
    else:
        n = int(value)
    return max(n, 1)


# -- one sync's decisions (pure) -----------------------------------------------------
@dataclass
class Plan:
    """What one sync does, in order: create these pods, delete those (with why),
    fix these pods' identity labels. ``waiting`` says what it stopped for."""

    creates: list[dict[str, Any]] = field(default_factory=list)
    deletes: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    relabels: list[dict[str, Any]] = field(default_factory=list)
    condemned: list[dict[str, Any]] = field(default_factory=list)
    waiting: str = ""


def plan_sync(sts: dict[str, Any], pods: Sequence[dict[str, Any]], *, current_template: dict[str, Any],
              update_template: dict[str, Any], current_revision: str, update_revision: str,
              now: datetime) -> Plan:
    """Upstream's updateStatefulSet as a plan over the set's claimed ``pods``."""
    spec = _spec(sts)
    plan = Plan()
    start, count = start_ordinal(sts), replica_count(sts)
    min_ready = int(spec.get("minReadySeconds") or 0)
    monotonic = spec.get("podManagementPolicy") != "Parallel"
    strategy = spec.get("updateStrategy") or {}
    rolling = strategy.get("rollingUpdate")
    partition = int((rolling or {}).get("partition") or 0)

    replicas: list[dict[str, Any] | None] = [None] * count
    condemned: list[dict[str, Any]] = []
    for pod in pods:
        ordinal = ordinal_of(pod)
        if start <= ordinal < start + count:
            replicas[ordinal - start] = pod
        elif ordinal >= 0:
            condemned.append(pod)
    condemned.sort(key=ordinal_of, reverse=True)
    plan.condemned = list(condemned)

    current_replicas = int((sts.get("status") or {}).get("currentReplicas") or 0)
    for i, pod in enumerate(replicas):
        if pod is None:
            ordinal = start + i
            use_current = strategy.get("type", "RollingUpdate") == "RollingUpdate" and (
                (rolling is None and ordinal < start + current_replicas)
                or (rolling is not None and ordinal < start + partition))
            replicas[i] = new_pod(sts, current_template if use_current else update_template, ordinal,
                                  current_revision if use_current else update_revision)

    def healthy(p: dict[str, Any]) -> bool:
        return is_created(p) and is_healthy(p, min_ready, now)

    # The first unhealthy pod: lowest replica, else highest condemned (upstream's firstUnhealthyPod).
    first_unhealthy = next((p for p in replicas if p is not None and not healthy(p)), None)
    if first_unhealthy is None:
        first_unhealthy = next((p for p in condemned if not healthy(p)), None)

    if sts["metadata"].get("deletionTimestamp"):
        plan.waiting = "set is being deleted"
        return plan

    stopped = False
    for pod in replicas:
        assert pod is not None
        name = pod["metadata"]["name"]
        if not is_created(pod):
            plan.creates.append(pod)
            if monotonic:
                plan.waiting, stopped = f"created {name}, waiting for it to be Running and Ready", True
                break
            continue
        if _phase(pod) in ("Failed", "Succeeded"):
            if not is_terminating(pod):
                plan.deletes.append((pod, f"pod {_phase(pod)}: made again once gone"))
            if monotonic:
                plan.waiting, stopped = f"{name} is {_phase(pod)}, recreating it", True
                break
            continue
        if is_terminating(pod) and monotonic:
            plan.waiting, stopped = f"{name} is terminating", True
            break
        if not is_running_and_ready(pod) and monotonic:
            plan.waiting, stopped = f"{name} is not Running and Ready", True
            break
        if not is_running_and_available(pod, min_ready, now) and monotonic:
            plan.waiting, stopped = f"{name} is not available for minReadySeconds", True
            break
        if not identity_matches(sts, pod) and not is_terminating(pod):
            plan.relabels.append(pod)
    if stopped:
        return plan

    for pod in condemned:
        name = pod["metadata"]["name"]
        if is_terminating(pod):
            if monotonic:
                plan.waiting, stopped = f"{name} is terminating", True
                break
            continue
        if monotonic and pod is not first_unhealthy and not healthy(pod):
            plan.waiting, stopped = f"{name} is unhealthy, waiting before scaling it down", True
            break
        plan.deletes.append((pod, "scale down"))
        if monotonic:
            stopped = True
            break
    if stopped or strategy.get("type") == "OnDelete":
        return plan

    deleting = {object_key(p) for p, _ in plan.deletes}
    live = [p for p in replicas if p is not None]
    max_unavailable = (rolling or {}).get("maxUnavailable")
    if max_unavailable is None:
        for pod in reversed(live[partition:]):
            if revision_of(pod) != update_revision and not is_terminating(pod) and object_key(pod) not in deleting:
                plan.deletes.append((pod, f"update to revision {update_revision}"))
                return plan
            if not healthy(pod) or object_key(pod) in deleting:
                plan.waiting = f"waiting for {pod['metadata']['name']} to update"
                return plan
        return plan
    allowed = _scaled(max_unavailable, count)
    unavailable = sum(1 for p in live if not healthy(p) or object_key(p) in deleting)
    budget = allowed - unavailable
    if budget <= 0:
        plan.waiting = f"{unavailable} pods unavailable, maxUnavailable {allowed}"
        return plan
    for pod in reversed(live[partition:]):
        if budget <= 0:
            break
        if revision_of(pod) != update_revision and not is_terminating(pod) and object_key(pod) not in deleting:
            plan.deletes.append((pod, f"update to revision {update_revision}"))
            budget -= 1
    return plan


def calculate_status(sts: dict[str, Any], pods: Sequence[dict[str, Any]], *, current_revision: str,
                     update_revision: str, collision_count: int, now: datetime) -> dict[str, Any]:
    """The set's status from its pods as they are after this sync (terminating ones do not count)."""
    min_ready = int(_spec(sts).get("minReadySeconds") or 0)
    status = {"observedGeneration": int(sts["metadata"].get("generation") or 0), "replicas": 0,
              "readyReplicas": 0, "currentReplicas": 0, "updatedReplicas": 0, "availableReplicas": 0,
              "currentRevision": current_revision, "updateRevision": update_revision,
              "collisionCount": collision_count}
    for pod in pods:
        if is_terminating(pod):
            continue
        status["replicas"] += 1
        if is_running_and_ready(pod):
            status["readyReplicas"] += 1
            if is_running_and_available(pod, min_ready, now):
                status["availableReplicas"] += 1
        revision = revision_of(pod)
        status["currentReplicas"] += revision == current_revision
        status["updatedReplicas"] += revision == update_revision
    strategy = (_spec(sts).get("updateStrategy") or {}).get("type", "RollingUpdate")
    if strategy == "RollingUpdate" and status["updatedReplicas"] == status["replicas"] == status["readyReplicas"]:
        # completeRollingUpdate: the update revision is now the current one
        status["currentReplicas"] = status["updatedReplicas"]
        status["currentRevision"] = update_revision
    return status


def _template_of(revision: dict[str, Any]) -> dict[str, Any]:
    template = copy.deepcopy(((revision.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    return template


_STATUS_KEYS = ("observedGeneration", "replicas", "readyReplicas", "currentReplicas", "updatedReplicas",
                "availableReplicas", "currentRevision", "updateRevision", "collisionCount")


# -- the controller ------------------------------------------------------------------
class StatefulSetController:
    name = "statefulset"
    kind = STATEFULSET

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.recorder = ctx.recorder
        self.queue = WorkQueue(name=self.name)
        self.expectations = ControllerExpectations()
        self.sts_informer = ctx.informers.informer("statefulsets")
        self.pod_informer = ctx.informers.informer("pods")
        self.revision_informer = ctx.informers.informer("controllerrevisions")
        self.sts_informer.add_handler(self._on_sts_add, self._on_sts_update, self._on_sts_delete)
        self.pod_informer.add_handler(self._on_pod_add, self._on_pod_update, self._on_pod_delete)
        self._claims_checked: dict[str, int] = {}  # set key -> generation whose claim references were made right

    async def run(self) -> None:
        for inf in (self.sts_informer, self.pod_informer, self.revision_informer):
            await inf.wait_synced()
        log.info("controller started name=%s", self.name)
        await run_workers(self.queue, self.reconcile, workers=self.ctx.config.concurrent_syncs, logger=log)

    # -- handlers: only enqueue ------------------------------------------------------
    def _on_sts_add(self, sts: dict[str, Any]) -> None:
        self.queue.add(object_key(sts))

    def _on_sts_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.queue.add(object_key(new))

    def _on_sts_delete(self, sts: dict[str, Any]) -> None:
        key = object_key(sts)
        self.expectations.forget(key)
        self._claims_checked.pop(key, None)
        self.queue.add(key)

    def _owner_key(self, pod: dict[str, Any]) -> str | None:
        return resolve_controller_ref(pod, controller_ref(pod), self.kind, self.sts_informer.cache)

    def _on_pod_add(self, pod: dict[str, Any]) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            self._on_pod_delete(pod)
            return
        if controller_ref(pod) is not None:
            if (key := self._owner_key(pod)) is not None:
                self.expectations.creation_observed(key)
                self.queue.add(key)
            return
        for key in owners_selecting(pod, self.sts_informer.cache):
            self.queue.add(key)

    def _on_pod_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
            return
        if new["metadata"].get("deletionTimestamp") and not old["metadata"].get("deletionTimestamp"):
            if (key := self._owner_key(new)) is not None:
                self.expectations.deletion_observed(key, object_key(new))
        for key in owners_to_sync_on_update(old, new, self.kind, self.sts_informer.cache):
            self.queue.add(key)
        if (key := self._owner_key(new)) is not None and not is_pod_ready(old) and is_pod_ready(new):
            min_ready = int(_spec(self.sts_informer.cache.get(key) or {}).get("minReadySeconds") or 0)
            if min_ready > 0:
                self.queue.add_after(key, min_ready + 0.5)

    def _on_pod_delete(self, pod: dict[str, Any]) -> None:
        if (key := self._owner_key(pod)) is None:
            return
        self.expectations.deletion_observed(key, object_key(pod))
        self.queue.add(key)

    # -- reconcile --------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        sts = self.sts_informer.cache.get(key)
        if sts is None:
            self.expectations.forget(key)
            self._claims_checked.pop(key, None)
            return
        ns = sts["metadata"]["namespace"]
        candidates = [p for p in self.pod_informer.cache.by_index("namespace", ns) if is_member_of(sts, p)]
        pods = await ControllerRefManager(self.client, sts, self.kind, resource="pods",
                                          selector=selector_of(sts)).claim(candidates)
        revisions = history.owned_revisions(sts, self.revision_informer.cache.by_index("namespace", ns))
        status = sts.get("status") or {}
        hist = await history.sync_history(self.client, sts, self.kind, revisions,
                                          current_name=status.get("currentRevision"))
        current, update = hist.current["metadata"]["name"], hist.update["metadata"]["name"]
        now = datetime.now(UTC)
        plan = plan_sync(sts, pods, current_template=_template_of(hist.current),
                         update_template=_template_of(hist.update), current_revision=current,
                         update_revision=update, now=now)

        error: BaseException | None = None
        view = list(pods)
        if self.expectations.satisfied(key) and not sts["metadata"].get("deletionTimestamp"):
            if plan.waiting:
                log.info("statefulset waiting sts=%s reason=%r", key, plan.waiting)
            error, view = await self._execute(key, sts, plan, pods)
        new_status = calculate_status(sts, view, current_revision=current, update_revision=update,
                                      collision_count=hist.collision_count, now=now)
        if any(status.get(k) != new_status[k] for k in _STATUS_KEYS):
            await self._write_status(sts, new_status)
        live = {revision_of(p) for p in pods} | {new_status["currentRevision"]}
        await history.truncate_history(self.client, sts, hist, live - {""})
        if error is not None:
            raise error  # requeue with backoff
        min_ready = int(_spec(sts).get("minReadySeconds") or 0)
        waits = [w for p in pods if (w := seconds_until_available(p, min_ready, now)) is not None]
        if waits:
            self.queue.add_after(key, min(waits) + 0.1)

    async def _execute(self, key: str, sts: dict[str, Any], plan: Plan, pods: list[dict[str, Any]]
                       ) -> tuple[BaseException | None, list[dict[str, Any]]]:
        """Carry out ``plan``; (first error, the set's pods as they are now)."""
        view = {object_key(p): p for p in pods}
        errors: list[BaseException] = []
        try:
            await self._sync_claim_references(key, sts, pods, plan.condemned)
        except APIStatusError as e:
            errors.append(e)
        if plan.creates:
            self.expectations.expect_creations(key, len(plan.creates))
            pending = iter(plan.creates)
            created: list[dict[str, Any]] = []

            async def create_next() -> None:
                created.append(await self._create_pod(sts, next(pending)))

            ok, err = await slow_start_batch(len(plan.creates), create_next)
            self.expectations.lower_creations(key, len(plan.creates) - ok)
            view.update({object_key(p): p for p in created})
            if err is not None:
                errors.append(err)
        deleting = {object_key(p) for p, _ in plan.deletes}
        for pod in plan.relabels:
            if object_key(pod) in deleting:
                continue
            try:
                view[object_key(pod)] = await self._relabel(sts, pod)
            except APIStatusError as e:
                errors.append(e)
        if plan.deletes and not errors:
            victims = [p for p, _ in plan.deletes]
            self.expectations.expect_deletions(key, [object_key(p) for p in victims])
            results = await asyncio.gather(*(self._delete_pod(key, sts, p, why) for p, why in plan.deletes),
                                           return_exceptions=True)
            for pod, result in zip(victims, results, strict=True):
                if isinstance(result, BaseException):
                    errors.append(result)
                else:
                    gone = copy.deepcopy(pod)
                    gone["metadata"]["deletionTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    view[object_key(pod)] = gone
        return (errors[0] if errors else None), list(view.values())

    # -- pods -------------------------------------------------------------------------
    async def _create_pod(self, sts: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
        name, set_name = pod["metadata"]["name"], sts["metadata"]["name"]
        try:
            await self._create_claims(sts, pod)
            created = await self.client.create("pods", pod, namespace=sts["metadata"]["namespace"])
        except (APIStatusError, ClaimsNotServed) as e:
            self.recorder.event(sts, "Warning", REASON_FAILED_CREATE,
                                f"create Pod {name} in StatefulSet {set_name} failed error: {e}")
            log.info("pod create failed sts=%s pod=%s err=%s", object_key(sts), name, e)
            raise
        self.recorder.event(sts, "Normal", REASON_SUCCESSFUL_CREATE,
                            f"create Pod {name} in StatefulSet {set_name} successful")
        log.info("pod created sts=%s pod=%s revision=%s", object_key(sts), name, revision_of(pod))
        return created

    async def _delete_pod(self, key: str, sts: dict[str, Any], pod: dict[str, Any], why: str) -> None:
        meta, set_name = pod["metadata"], sts["metadata"]["name"]
        try:
            await self.client.delete("pods", meta["name"], namespace=meta["namespace"],
                                     preconditions={"uid": meta["uid"]} if meta.get("uid") else None)
        except NotFoundError:
            self.expectations.deletion_observed(key, object_key(pod))
            return
        except APIStatusError as e:
            self.expectations.deletion_observed(key, object_key(pod))
            self.recorder.event(sts, "Warning", REASON_FAILED_DELETE,
                                f"delete Pod {meta['name']} in StatefulSet {set_name} failed error: {e}")
            raise
        self.recorder.event(sts, "Normal", REASON_SUCCESSFUL_DELETE,
                            f"delete Pod {meta['name']} in StatefulSet {set_name} successful")
        log.info("pod deleted sts=%s pod=%s why=%r", key, meta["name"], why)

    async def _relabel(self, sts: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
        meta = pod["metadata"]
        labels = {POD_NAME_LABEL: meta["name"], POD_INDEX_LABEL: str(ordinal_of(pod))}
        try:
            updated = await self.client.patch("pods", meta["name"], {"metadata": {"labels": labels}},
                                              namespace=meta["namespace"])
        except APIStatusError as e:
            self.recorder.event(sts, "Warning", REASON_FAILED_UPDATE,
                                f"update Pod {meta['name']} in StatefulSet {sts['metadata']['name']} failed error: {e}")
            raise
        self.recorder.event(sts, "Normal", REASON_SUCCESSFUL_UPDATE,
                            f"update Pod {meta['name']} in StatefulSet {sts['metadata']['name']} successful")
        return updated

    async def _write_status(self, sts: dict[str, Any], status: dict[str, Any]) -> None:
        meta = sts["metadata"]
        try:
            await self.client.patch("statefulsets", meta["name"], {"status": status}, namespace=meta["namespace"],
                                    subresource="status")
        except NotFoundError:
            return

    # -- claims -----------------------------------------------------------------------
    @staticmethod
    def claims_served() -> bool:
        return kinds.lookup("", "v1", "persistentvolumeclaims") is not None

    async def _create_claims(self, sts: dict[str, Any], pod: dict[str, Any]) -> None:
        """Make the pod's missing claims (upstream's createPersistentVolumeClaims)."""
        claims = claims_for(sts, ordinal_of(pod))
        if not claims:
            return
        set_name, pod_name = sts["metadata"]["name"], pod["metadata"]["name"]
        if not self.claims_served():
            error = ClaimsNotServed("PersistentVolumeClaims are not served by this cluster yet (no "
                                    "persistentvolumeclaims kind): the pod is not created without its claims")
            for claim in claims:
                self.recorder.event(sts, "Warning", REASON_FAILED_CREATE,
                                    f"create Claim {claim['metadata']['name']} for Pod {pod_name} in StatefulSet "
                                    f"{set_name} failed error: {error}")
            log.warning("claims not served sts=%s pod=%s claims=%s", object_key(sts), pod_name,
                        ",".join(c["metadata"]["name"] for c in claims))
            raise error
        ns = sts["metadata"]["namespace"]
        for claim in claims:
            cname = claim["metadata"]["name"]
            try:
                existing = await self.client.get("persistentvolumeclaims", cname, namespace=ns)
            except NotFoundError:
                existing = None
            if existing is not None:
                if existing["metadata"].get("deletionTimestamp"):
                    raise ClaimsNotServed(f"pvc {cname} is being deleted")
                continue
            refs = claim_owner_references(claim, sts, None, ordinal_of(pod))
            if refs:
                claim["metadata"]["ownerReferences"] = refs
            try:
                await self.client.create("persistentvolumeclaims", claim, namespace=ns)
            except AlreadyExistsError:
                continue
            except APIStatusError as e:
                self.recorder.event(sts, "Warning", REASON_FAILED_CREATE,
                                    f"create Claim {cname} for Pod {pod_name} in StatefulSet {set_name} "
                                    f"failed error: {e}")
                raise
            self.recorder.event(sts, "Normal", REASON_SUCCESSFUL_CREATE,
                                f"create Claim {cname} Pod {pod_name} in StatefulSet {set_name} success")
            log.info("claim created sts=%s pod=%s claim=%s", object_key(sts), pod_name, cname)

    async def _sync_claim_references(self, key: str, sts: dict[str, Any], pods: list[dict[str, Any]],
                                     condemned: list[dict[str, Any]]) -> None:
        """Owner references of existing claims as the retention policy wants them: for pods
        being scaled away every sync, for all pods when the set's generation moved."""
        if not claim_templates(sts) or not self.claims_served():
            return
        generation = int(sts["metadata"].get("generation") or 0)
        targets = pods if self._claims_checked.get(key) != generation else condemned
        for pod in targets:
            for claim in claims_for(sts, ordinal_of(pod)):
                await self._fix_claim(sts, pod, claim["metadata"]["name"])
        self._claims_checked[key] = generation

    async def _fix_claim(self, sts: dict[str, Any], pod: dict[str, Any], cname: str) -> None:
        ns = sts["metadata"]["namespace"]
        try:
            claim = await self.client.get("persistentvolumeclaims", cname, namespace=ns)
        except NotFoundError:
            return
        refs = claim_owner_references(claim, sts, pod, ordinal_of(pod))
        if refs == (claim["metadata"].get("ownerReferences") or []):
            return
        await self.client.patch("persistentvolumeclaims", cname,
                                {"metadata": {"ownerReferences": refs or None,
                                              "resourceVersion": claim["metadata"].get("resourceVersion")}},
                                namespace=ns)
        log.info("claim references updated sts=%s pod=%s claim=%s owners=%s", object_key(sts),
                 pod["metadata"]["name"], cname, ",".join(r["kind"] for r in refs) or "none")
