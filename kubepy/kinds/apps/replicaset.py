"""ReplicaSet (apps/v1): the replicaset controller keeps its pods; ``status.replicas`` is selectable."""

from kubepy.kinds import Kind, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.meta.selectors import replicaset_fields


def _prepare_create(obj: dict) -> None:
    obj.pop("status", None)


REPLICASET = register(Kind(
    "apps", "v1", "ReplicaSet", "replicasets", namespaced=True, short_names=("rs",),
    subresources=("status", "scale"), categories=("all",), has_status=True, has_spec_generation=True,
    model="V1ReplicaSet", proto="ReplicaSet",
    api_types=("ReplicaSet", "ReplicaSetList", "ReplicaSetSpec", "ReplicaSetStatus", "ReplicaSetCondition"),
    strategy=Strategy(default=v.default_replicaset, validate=v.validate_replicaset, prepare_create=_prepare_create),
    subresource_strategies={"scale": Strategy(validate=v.validate_scale, kind="Scale", group="autoscaling")},
    printer=printers.REPLICASET, fields=replicaset_fields,
))
