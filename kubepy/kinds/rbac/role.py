"""Role (rbac.authorization.k8s.io/v1): namespaced permissions, granted by RoleBindings."""

from __future__ import annotations

from kubepy.kinds import Kind, Printer, Strategy, register
from kubepy.kinds import rbac
from kubepy.kinds import validation as v


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    rbac.validate_rules(obj, errs, namespaced=True)


ROLE = register(Kind(
    rbac.GROUP, "v1", "Role", "roles", namespaced=True, model="V1Role", proto="Role",
    proto_schema=rbac.PROTO_COMMON + """
Role
    1 metadata                         ObjectMeta
    2 rules                            []PolicyRule
""",
    api_types=("Role", "RoleList", "PolicyRule"),
    strategy=Strategy(validate=_validate, name_rule=rbac.path_segment_name),
    printer=Printer(rbac.ROLE_COLUMNS, rbac.role_cells),
))
