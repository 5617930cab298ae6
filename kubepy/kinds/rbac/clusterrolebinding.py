"""ClusterRoleBinding (rbac.authorization.k8s.io/v1): grants a ClusterRole's rules everywhere;
its roleRef never changes."""

from __future__ import annotations

from kubepy.kinds import Kind, Printer, Strategy, register
from kubepy.kinds import rbac
from kubepy.kinds import validation as v


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    rbac.validate_binding(obj, old, errs, namespaced=False)


CLUSTERROLEBINDING = register(Kind(
    rbac.GROUP, "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False,
    model="V1ClusterRoleBinding", proto="ClusterRoleBinding",
    proto_schema="""
ClusterRoleBinding
    1 metadata                         ObjectMeta
    2 subjects                         []Subject
    3 roleRef                          RoleRef
""",
    api_types=("ClusterRoleBinding", "ClusterRoleBindingList"),
    strategy=Strategy(default=rbac.default_binding, validate=_validate, name_rule=rbac.path_segment_name),
    printer=Printer(rbac.BINDING_COLUMNS, rbac.binding_cells),
))
