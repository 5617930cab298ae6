"""The status of ValidatingAdmissionPolicies: which generation the server has checked.

Upstream's ValidatingAdmissionPolicyStatusController (in the API server):
for each policy whose ``status.observedGeneration`` is behind its
``metadata.generation``, write ``observedGeneration`` and ``typeChecking``.
kubepy's CEL has no schema-aware type checker, so ``typeChecking`` carries
no ``expressionWarnings`` (every expression already compiled against the
policy's variables when it was written, kubepy.kinds.cel); the conditions
upstream leaves unset stay unset. Writes only when the status differs, so
several API servers on one store agree without fighting.

Talks to: the policies' watch cache (events), ``Storage`` (status writes).
Logs one key=value line per write.
"""

from __future__ import annotations

import logging
from typing import Any

from kubepy.api import errors
from kubepy.api.storage import Storage
from kubepy.kinds import by_plural

log = logging.getLogger(__name__)

__all__ = ["PolicyStatus", "desired_status"]


def desired_status(policy: dict[str, Any]) -> dict[str, Any] | None:
    """The status the policy should have, None when it has it already."""
    status = dict(policy.get("status") or {})
    generation = (policy.get("metadata") or {}).get("generation") or 1
    if status.get("observedGeneration") == generation and "typeChecking" in status:
        return None
    status["observedGeneration"] = generation
    status["typeChecking"] = {}
    return status


class PolicyStatus:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.kind = by_plural("validatingadmissionpolicies")

    async def run(self, cache: Any) -> None:
        items, revision, _ = await self.storage.list(self.kind, None)
        for policy in items:
            await self.reconcile(policy)
        sub = cache.subscribe(after=revision, matches=lambda o: True) or \
            cache.subscribe(after=cache.last_revision, matches=lambda o: True)
        try:
            while True:
                ev = await sub.queue.get()
                if ev is None:  # fell behind: look at every policy again
                    sub.close()
                    items, revision, _ = await self.storage.list(self.kind, None)
                    for policy in items:
                        await self.reconcile(policy)
                    sub = cache.subscribe(after=revision, matches=lambda o: True) or \
                        cache.subscribe(after=cache.last_revision, matches=lambda o: True)
                    continue
                if ev.type != "DELETED":
                    await self.reconcile(ev.obj)
        finally:
            sub.close()

    async def reconcile(self, policy: dict[str, Any]) -> None:
        if desired_status(policy) is None:
            return
        name = policy["metadata"]["name"]

        def mutate(cur: dict[str, Any]) -> dict[str, Any]:
            want = desired_status(cur)
            if want is not None:
                cur["status"] = want
            return cur

        try:
            got = await self.storage.update(self.kind, None, name, mutate, subresource="status")
        except errors.NotFound:
            return
        except errors.APIError as e:
            log.warning("policy status not written policy=%s err=%s", name, e.message)
            return
        except Exception:  # one policy must not stop the others' status
            log.exception("policy status crashed policy=%s", name)
            return
        log.info("policy status written policy=%s observedGeneration=%s", name,
                 (got.get("status") or {}).get("observedGeneration"))
