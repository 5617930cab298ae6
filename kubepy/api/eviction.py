"""``POST pods/{name}/eviction``: delete a pod unless that breaks its PodDisruptionBudget.

Kubernetes' EvictionREST (pkg/registry/core/pod/storage/eviction.go):

* a pod that is terminal, Pending or already being deleted has caused its
  disruption already: it is deleted without looking at budgets (with a
  resourceVersion precondition unless terminal or terminating, so it cannot
  have become Running and Ready in between);
* more than one budget selecting the pod: 500, which eviction does not support;
* an unready pod is deleted without spending the budget when its policy is
  AlwaysAllow, or when the budget is met anyway (IfHealthyBudget, the default),
  again with a resourceVersion precondition (a conflict there is a 429);
* otherwise the budget is spent first: ``status.disruptionsAllowed`` is
  decremented and the pod recorded in ``status.disruptedPods`` by a
  compare-and-swap write of the budget, retried on conflict; a budget with no
  disruption left (or not yet observed by its controller) is a 429
  TooManyRequests with a DisruptionBudget cause, which ``kubectl drain``
  retries. Then the pod is deleted with the Eviction's deleteOptions.

Every pod it deletes first gets the condition ``DisruptionTarget`` (reason
EvictionByEvictionAPI), so the pod says why it went (upstream's
addConditionAndDeletePod); a resourceVersion precondition then names the
version that write made.

Success is a ``Status`` with code 201, as a create answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

from kubepy import kinds
from kubepy.api import errors
from kubepy.api.storage import DeleteOptions, Storage
from kubepy.kinds.policy.poddisruptionbudget import disruption_allowed_condition
from kubepy.meta.selectors import label_selector_from_dict

__all__ = ["EVICTION_VERSIONS", "evict"]

EVICTION_VERSIONS = ("policy/v1", "policy/v1beta1")
MAX_DISRUPTED_PODS = 2000  # approved evictions the disruption controller has not confirmed yet
RETRIES, RETRY_DELAY = 20, 0.5  # upstream's EvictionsRetry
VIOLATES = "Cannot evict pod as it would violate the pod's disruption budget."
MULTIPLE = "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."


def _too_many_requests(pdb_name: str, cause: str, retry_after: int) -> errors.TooManyRequests:
    return errors.TooManyRequests(VIOLATES, details={
        "causes": [{"reason": "DisruptionBudget", "message": cause}], "retryAfterSeconds": retry_after})


def _still_processing(pdb_name: str) -> errors.TooManyRequests:
    return _too_many_requests(pdb_name, f"The disruption budget {pdb_name} is still being processed by the server.", 10)


def _forbidden(pdb_name: str, why: str) -> errors.Forbidden:
    return errors.Forbidden(f'poddisruptionbudget.policy "{pdb_name}" is forbidden: {why}',
                            details={"name": pdb_name, "group": "policy", "kind": "poddisruptionbudget"})


def _status(code: int, message: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success" if code < 400 else "Failure"}
    if message:
        body["message"] = message
    body["code"] = code
    return body


def _delete_options(eviction: dict[str, Any], dry_run_query: bool) -> DeleteOptions:
    opts = eviction.get("deleteOptions") or {}
    if not isinstance(opts, dict):
        raise errors.BadRequest("deleteOptions must be an object")
    dry = list(opts.get("dryRun") or [])
    query = ["All"] if dry_run_query else []
    if dry and query and dry != query:
        raise errors.BadRequest(f"Non-matching dry-run options in request and content: {query} and {dry}")
    dry = dry or query
    if dry and dry != ["All"]:
        raise errors.BadRequest("unsupported dryRun value: only All is supported")
    pre = opts.get("preconditions") or {}
    grace = opts.get("gracePeriodSeconds")
    policy = opts.get("propagationPolicy") or ("Orphan" if opts.get("orphanDependents") is True else None)
    return DeleteOptions(grace_period=int(grace) if grace is not None else None, propagation=policy,
                         precondition_uid=pre.get("uid"), precondition_rv=pre.get("resourceVersion"),
                         dry_run=bool(dry))


def _is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def _can_ignore_budget(pod: dict[str, Any]) -> bool:
    return _phase(pod) in ("Succeeded", "Failed", "Pending") or bool(pod["metadata"].get("deletionTimestamp"))


def _with_rv(opts: DeleteOptions, pod: dict[str, Any]) -> DeleteOptions:
    return dataclasses.replace(opts, precondition_rv=pod["metadata"]["resourceVersion"])


async def _mark_and_delete(storage: Storage, namespace: str, name: str, opts: DeleteOptions) -> None:
    pods = kinds.by_plural("pods")
    if not opts.dry_run:
        def mark(pod: dict[str, Any]) -> dict[str, Any]:
            meta = pod["metadata"]
            if opts.precondition_uid and opts.precondition_uid != meta.get("uid"):
                raise errors.Conflict(f"Precondition failed: UID in precondition: {opts.precondition_uid}, "
                                      f"UID in object meta: {meta.get('uid')}")
            if opts.precondition_rv and opts.precondition_rv != meta.get("resourceVersion"):
                raise errors.Conflict(f"Precondition failed: ResourceVersion in precondition: {opts.precondition_rv}, "
                                      f"ResourceVersion in object meta: {meta.get('resourceVersion')}")
            status = pod.setdefault("status", {})
            conditions = status.setdefault("conditions", [])
            cond = next((c for c in conditions if c.get("type") == "DisruptionTarget"), None)
            if cond is None:
                cond = {"type": "DisruptionTarget"}
                conditions.append(cond)
            if cond.get("status") != "True":
                cond["lastTransitionTime"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            cond.update(status="True", reason="EvictionByEvictionAPI", message="Eviction API: evicting")
            cond.setdefault("lastProbeTime", None)
            return pod

        marked = await storage.update(pods, namespace, name, mark, subresource="status")
        if opts.precondition_rv:
            opts = dataclasses.replace(opts, precondition_rv=marked["metadata"]["resourceVersion"])
    await storage.delete(pods, namespace, name, opts)


def _budgets_of(pod: dict[str, Any], budgets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The budgets whose (valid, non-empty) selector picks the pod."""
    labels = pod["metadata"].get("labels") or {}
    found = []
    for pdb in budgets:
        try:
            selector = label_selector_from_dict((pdb.get("spec") or {}).get("selector"))
        except ValueError:
            continue
        if not selector.empty() and selector.matches(labels):
            found.append(pdb)
    return found


def _decrement(pod_name: str, dry_run: bool):  # noqa: ANN202 - a Storage.update mutator
    def mutate(pdb: dict[str, Any]) -> dict[str, Any]:
        """checkAndDecrement on the budget as stored now."""
        name, status = pdb["metadata"]["name"], pdb.setdefault("status", {})
        if int(status.get("observedGeneration") or 0) < int(pdb["metadata"].get("generation") or 0):
            raise _still_processing(name)
        allowed = int(status.get("disruptionsAllowed") or 0)
        if allowed < 0:
            raise _forbidden(name, "pdb disruptions allowed is negative")
        if len(status.get("disruptedPods") or {}) > MAX_DISRUPTED_PODS:
            raise _forbidden(name, "DisruptedPods map too big - too many evictions not confirmed by PDB controller")
        if allowed == 0:
            raise _too_many_requests(name, f"The disruption budget {name} needs {int(status.get('desiredHealthy') or 0)}"
                                           f" healthy pods and has {int(status.get('currentHealthy') or 0)} currently", 0)
        now = dt.datetime.now(dt.UTC)
        status["disruptionsAllowed"] = allowed - 1
        if allowed == 1:
            status["conditions"] = disruption_allowed_condition(status, now)
        if not dry_run:
            status.setdefault("disruptedPods", {})[pod_name] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        return pdb
    return mutate


async def evict(storage: Storage, namespace: str, name: str, eviction: Any, *,
                dry_run_query: bool = False) -> tuple[int, dict[str, Any]]:
    """Evict pod ``namespace/name`` as ``eviction`` (a policy Eviction) asks: (HTTP code, Status)."""
    if not isinstance(eviction, dict) or eviction.get("kind") not in (None, "Eviction") \
            or eviction.get("apiVersion") not in (None, *EVICTION_VERSIONS):
        raise errors.BadRequest(f"not a Eviction object: {type(eviction).__name__ if not isinstance(eviction, dict) else eviction.get('kind')}")
    if ((eviction.get("metadata") or {}).get("name") or "") != name:
        raise errors.BadRequest("name in URL does not match name in Eviction object")
    opts = _delete_options(eviction, dry_run_query)
    pods = kinds.by_plural("pods")
    retry_conflicts = opts.precondition_rv is None

    pod: dict[str, Any] = {}
    for attempt in range(RETRIES):
        pod = await storage.get(pods, namespace, name)
        if not _can_ignore_budget(pod):
            break
        terminal = _phase(pod) in ("Succeeded", "Failed") or pod["metadata"].get("deletionTimestamp")
        try:
            await _mark_and_delete(storage, namespace, name,
                                   opts if terminal or not retry_conflicts else _with_rv(opts, pod))
        except errors.Conflict:
            if not retry_conflicts or attempt == RETRIES - 1:
                raise
            await asyncio.sleep(RETRY_DELAY)
            continue
        return 201, _status(201)

    pdb_kind = kinds.lookup("policy", "v1", "poddisruptionbudgets")
    budgets = _budgets_of(pod, (await storage.list(pdb_kind, namespace))[0]) if pdb_kind else []
    if len(budgets) > 1:
        return 500, _status(500, MULTIPLE)
    precondition = False
    if budgets:
        pdb = budgets[0]
        status, spec = pdb.get("status") or {}, pdb.get("spec") or {}
        current, desired = int(status.get("currentHealthy") or 0), int(status.get("desiredHealthy") or 0)
        if not _is_ready(pod) and (spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow"
                                   or (current >= desired and desired > 0)):
            precondition = True  # an unhealthy pod does not count: delete it without spending the budget
        else:
            # Storage.update is the compare-and-swap loop: a concurrent eviction makes it read again.
            await storage.update(pdb_kind, namespace, pdb["metadata"]["name"], _decrement(name, opts.dry_run),
                                 subresource="status", dry_run=opts.dry_run)
    try:
        await _mark_and_delete(storage, namespace, name, _with_rv(opts, pod) if precondition else opts)
    except errors.Conflict:
        if precondition and retry_conflicts:
            raise _still_processing(budgets[0]["metadata"]["name"]) from None
        raise
    return 201, _status(201)
