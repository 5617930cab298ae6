"""Service (v1): the API server allocates its clusterIP and nodePorts
(``kubepy.api.allocator``); names are RFC 1035 labels, as they become DNS
labels and environment variable prefixes."""

from kubepy.kinds import Kind, Strategy, printers, register
from kubepy.kinds import validation as v


def _prepare_create(obj: dict) -> None:
    obj["status"] = {"loadBalancer": {}}


SERVICE = register(Kind(
    "", "v1", "Service", "services", namespaced=True, short_names=("svc",), subresources=("status", "proxy"),
    categories=("all",), has_status=True, model="V1Service", proto="Service",
    strategy=Strategy(default=v.default_service, validate=v.validate_service, name_rule=v.is_dns1035_label,
                      prepare_create=_prepare_create),
    printer=printers.SERVICE,
))
