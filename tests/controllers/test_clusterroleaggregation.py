"""ClusterRole aggregation against the FakeAPI: admin ⊇ edit ⊇ view, as the default roles chain them."""

from __future__ import annotations

import asyncio
from typing import Any

from kubepy.api import bootstrappolicy
from kubepy.controllers.clusterroleaggregation import ClusterRoleAggregationController, aggregated_rules
from kubepy.controllers.context import ControllerConfig, ControllerContext, InformerFactory
from kubepy.testing.fakeapi import FakeAPI

AGG = "rbac.authorization.k8s.io/aggregate-to-"


def _role(name: str, rules: list[dict[str, Any]], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels or {}}, "rules": rules}


def test_rules_are_gathered_in_name_order_each_once() -> None:
    r1 = {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}
    r2 = {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}
    agg = {**_role("agg", [r2]), "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "1"}}]}}
    roles = [agg, _role("b", [r2, r1], {"x": "1"}), _role("a", [r1], {"x": "1"}), _role("c", [r2], {"x": "2"})]
    assert aggregated_rules(agg, roles) == [r1, r2]


async def test_default_aggregated_roles_fill_and_follow_changes() -> None:
    api = FakeAPI()
    for role in bootstrappolicy.cluster_roles():
        api.seed("clusterroles", role)
    ctx = ControllerContext(client=api, informers=InformerFactory(api),  # type: ignore[arg-type]
                            recorder=None, config=ControllerConfig())  # type: ignore[arg-type]
    ctrl = ClusterRoleAggregationController(ctx)
    ctx.informers.start()
    task = asyncio.create_task(ctrl.run())
    try:
        def rules(name: str) -> list[dict[str, Any]]:
            return next(r for r in api.objects("clusterroles") if r["metadata"]["name"] == name).get("rules") or []

        async def until(check: Any) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10   # a deadline, not a count: a loaded host runs sleeps late
            while not check():
                if loop.time() > deadline:
                    raise AssertionError("not aggregated")
                await asyncio.sleep(0.01)

        secrets_read = {"verbs": ["get", "list", "watch"], "apiGroups": [""],
                        "resources": ["pods/attach", "pods/proxy", "pods/exec", "pods/portforward", "secrets",
                                      "services/proxy"]}
        # Each aggregated role is written on its own: view fills, then edit takes view's rules, then admin
        # edit's, in whatever order the controller's queue runs them. Wait for the whole chain.
        await until(lambda: rules("view") and secrets_read in rules("admin")
                    and all(r in rules("admin") for r in rules("edit"))
                    and all(r in rules("edit") for r in rules("view")))
        assert secrets_read in rules("edit") and secrets_read not in rules("view")
        # a new role labelled aggregate-to-view reaches view, edit and admin
        crd_rule = {"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]}
        await api.create("clusterroles", _role("widgets-view", [crd_rule], {AGG + "view": "true"}))
        await until(lambda: all(crd_rule in rules(n) for n in ("view", "edit", "admin")))
        await api.delete("clusterroles", "widgets-view")
        await until(lambda: not any(crd_rule in rules(n) for n in ("view", "edit", "admin")))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ctx.informers.stop()
        await api.close()
