"""ClusterRole (rbac.authorization.k8s.io/v1): cluster-wide permissions, non-resource URLs
included; one with an ``aggregationRule`` gets its rules from the ClusterRoles its
selectors match (kubepy.controllers.clusterroleaggregation)."""

from __future__ import annotations

from kubepy.kinds import Kind, Printer, Strategy, register
from kubepy.kinds import rbac
from kubepy.kinds import validation as v


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    rbac.validate_rules(obj, errs, namespaced=False)
    agg = obj.get("aggregationRule")
    if agg is not None:
        selectors = (agg or {}).get("clusterRoleSelectors") if isinstance(agg, dict) else None
        if not selectors:
            errs.required("aggregationRule.clusterRoleSelectors",
                          "at least one clusterRoleSelector required if aggregationRule is non-nil")
        for i, sel in enumerate(selectors or []):
            if isinstance(sel, dict):
                v.validate_label_selector(sel, f"aggregationRule.clusterRoleSelectors[{i}]", errs)


CLUSTERROLE = register(Kind(
    rbac.GROUP, "v1", "ClusterRole", "clusterroles", namespaced=False, model="V1ClusterRole",
    proto="ClusterRole",
    proto_schema="""
ClusterRole
    1 metadata                         ObjectMeta
    2 rules                            []PolicyRule
    3 aggregationRule                  *AggregationRule
""",
    api_types=("ClusterRole", "ClusterRoleList", "AggregationRule"),
    strategy=Strategy(validate=_validate, name_rule=rbac.path_segment_name),
    printer=Printer(rbac.ROLE_COLUMNS, rbac.role_cells),
))
