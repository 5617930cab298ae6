"""Which webhooks a request meets (kubepy.api.webhookrules): tables after upstream's rules matcher tests."""

from __future__ import annotations

import pytest

from kubepy.api import webhookrules
from kubepy.kinds import by_plural

PODS, DEPLOYS, NODES, NAMESPACES = (by_plural(p) for p in ("pods", "deployments", "nodes", "namespaces"))


def rule(resources: list[str], *, ops: list[str] = ["*"], groups: list[str] = ["*"], versions: list[str] = ["*"],
         scope: str = "*") -> dict:
    return {"operations": ops, "apiGroups": groups, "apiVersions": versions, "resources": resources, "scope": scope}


@pytest.mark.parametrize("r,op,res,sub,want", [
    (rule(["pods"]), "CREATE", PODS, "", True),
    (rule(["pods"]), "UPDATE", PODS, "status", False),  # a resource alone is not its subresources
    (rule(["pods/status"]), "UPDATE", PODS, "status", True),
    (rule(["pods/status"]), "UPDATE", PODS, "", False),
    (rule(["pods/*"]), "UPDATE", PODS, "status", True),
    (rule(["pods/*"]), "UPDATE", PODS, "", True),  # as upstream's matcher: "*" is any subresource, or none
    (rule(["*"]), "CREATE", DEPLOYS, "", True),
    (rule(["*"]), "UPDATE", DEPLOYS, "status", False),
    (rule(["*/status"]), "UPDATE", DEPLOYS, "status", True),
    (rule(["*/*"]), "UPDATE", PODS, "ephemeralcontainers", True),
    (rule(["pods"], ops=["CREATE"]), "UPDATE", PODS, "", False),
    (rule(["pods"], ops=["DELETE"]), "DELETE", PODS, "", True),
    (rule(["deployments"], groups=[""]), "CREATE", DEPLOYS, "", False),
    (rule(["deployments"], groups=["apps"], versions=["v1"]), "CREATE", DEPLOYS, "", True),
    (rule(["deployments"], groups=["apps"], versions=["v1beta1"]), "CREATE", DEPLOYS, "", False),
    (rule(["*"], scope="Namespaced"), "CREATE", PODS, "", True),
    (rule(["*"], scope="Namespaced"), "CREATE", NODES, "", False),
    (rule(["*"], scope="Cluster"), "CREATE", NODES, "", True),
    (rule(["*"], scope="Cluster"), "CREATE", NAMESPACES, "", True),  # a Namespace is cluster-scoped
    (rule(["*"], scope="Namespaced"), "CREATE", NAMESPACES, "", False),
])
def test_rules(r: dict, op: str, res, sub: str, want: bool) -> None:
    assert webhookrules.rules_match({"rules": [r]}, operation=op, res=res, subresource=sub) is want


def test_subresources_not_sent_never_match() -> None:
    assert not webhookrules.rules_match({"rules": [rule(["*/*"])]}, operation="CREATE", res=PODS,
                                        subresource="binding")


def test_configurations_are_exempt() -> None:
    assert webhookrules.is_exempt(by_plural("validatingwebhookconfigurations"))
    assert not webhookrules.is_exempt(PODS)


SEL = {"namespaceSelector": {"matchLabels": {"team": "a"}}}


@pytest.mark.parametrize("res,namespace,obj,ns_labels,want", [
    (PODS, "x", {}, {"team": "a"}, True),
    (PODS, "x", {}, {"team": "b"}, False),
    (PODS, "x", {}, None, False),
    (NODES, None, {}, None, True),  # cluster-scoped: the selector does not apply
    (NAMESPACES, None, {"metadata": {"labels": {"team": "a"}}}, None, True),  # its own labels
    (NAMESPACES, None, {"metadata": {"labels": {}}}, None, False),
])
def test_namespace_selector(res, namespace, obj, ns_labels, want) -> None:
    assert webhookrules.namespace_selector_matches(SEL, res=res, namespace=namespace, obj=obj,
                                                   namespace_labels=ns_labels) is want


def test_object_selector_matches_the_new_or_the_old_object() -> None:
    hook = {"objectSelector": {"matchLabels": {"app": "web"}}}
    web, other = {"metadata": {"labels": {"app": "web"}}}, {"metadata": {"labels": {"app": "db"}}}
    assert webhookrules.object_selector_matches(hook, web, None)
    assert webhookrules.object_selector_matches(hook, other, web)
    assert webhookrules.object_selector_matches(hook, None, web)  # DELETE: only the old object
    assert not webhookrules.object_selector_matches(hook, other, other)
    assert webhookrules.object_selector_matches({"objectSelector": {}}, other, None)
