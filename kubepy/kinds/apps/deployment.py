"""Deployment (apps/v1): the deployment controller rolls it out through ReplicaSets."""

from kubepy.kinds import Kind, Strategy, printers, register
from kubepy.kinds import validation as v


def _prepare_create(obj: dict) -> None:
    obj.pop("status", None)


DEPLOYMENT = register(Kind(
    "apps", "v1", "Deployment", "deployments", namespaced=True, short_names=("deploy",),
    subresources=("status", "scale"), categories=("all",), has_status=True, has_spec_generation=True,
    model="V1Deployment", proto="Deployment",
    api_types=("Deployment", "DeploymentList", "DeploymentSpec", "DeploymentStatus", "DeploymentStrategy",
               "DeploymentCondition", "RollingUpdateDeployment"),
    strategy=Strategy(default=v.default_deployment, validate=v.validate_deployment, prepare_create=_prepare_create),
    subresource_strategies={"scale": Strategy(validate=v.validate_scale, kind="Scale", group="autoscaling")},
    printer=printers.DEPLOYMENT,
))
