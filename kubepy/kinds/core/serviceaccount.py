"""ServiceAccount (v1)."""

from kubepy.kinds import Kind, Strategy, printers, register
from kubepy.kinds import validation as v

SERVICEACCOUNT = register(Kind(
    "", "v1", "ServiceAccount", "serviceaccounts", namespaced=True, short_names=("sa",), model="V1ServiceAccount",
    subresources=("token",),  # TokenRequest (kubepy.api.serviceaccounts)
    proto="ServiceAccount",
    strategy=Strategy(validate=v.validate_service_account),
    printer=printers.SERVICEACCOUNT,
))
