"""ClusterRole aggregation controller: an aggregated ClusterRole's rules are those of the
ClusterRoles its ``aggregationRule`` selects (upstream's pkg/controller/clusterroleaggregation).

Any ClusterRole change enqueues every ClusterRole with an aggregation rule
(a change to one selected role, or to a role's labels, can change any of
them); ``reconcile(name)`` gathers the rules of the selected roles (in name
order, each rule once, the role itself left out) and writes them when they
differ. Reads the clusterroles informer; writes through the client.
"""

from __future__ import annotations

import logging
from typing import Any

from kubepy.client import ConflictError, NotFoundError, WorkQueue, run_workers
from kubepy.controllers.context import ControllerContext
from kubepy.meta import selectors

log = logging.getLogger(__name__)


def aggregated_rules(role: dict[str, Any], all_roles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules ``role``'s aggregationRule gathers, as upstream orders them (selector, then role name)."""
    rules: list[dict[str, Any]] = []
    name = role["metadata"]["name"]
    for sel in ((role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []):
        try:
            matches = selectors.label_selector_from_dict(sel).matches
        except ValueError:
            continue
        for other in sorted(all_roles, key=lambda r: r["metadata"]["name"]):
            if other["metadata"]["name"] == name or not matches((other["metadata"].get("labels") or {})):
                continue
            for rule in other.get("rules") or []:
                if rule not in rules:
                    rules.append(rule)
    return rules


class ClusterRoleAggregationController:
    name = "clusterrole-aggregation"

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.roles = ctx.informers.informer("clusterroles")
        self.queue = WorkQueue(name=self.name)
        self.roles.add_handler(lambda o: self._enqueue_all(), lambda old, new: self._enqueue_all(),
                               lambda o: self._enqueue_all())

    def _enqueue_all(self) -> None:
        for role in self.roles.cache.list():
            if role.get("aggregationRule"):
                self.queue.add(role["metadata"]["name"])

    async def run(self) -> None:
        await run_workers(self.queue, self.reconcile, workers=1, logger=log)

    async def reconcile(self, name: str) -> None:
        role = self.roles.cache.get(name)
        if role is None or not role.get("aggregationRule"):
            return
        rules = aggregated_rules(role, self.roles.cache.list())
        if rules == (role.get("rules") or []):
            return
        body = {**role, "rules": rules}
        try:
            await self.client.update("clusterroles", body)
        except NotFoundError:
            return
        except ConflictError:
            self.queue.add(name)  # the cache lags: again once it has caught up
            return
        log.info("aggregated clusterrole=%s rules=%d", name, len(rules))
