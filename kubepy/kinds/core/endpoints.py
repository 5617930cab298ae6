"""Endpoints (v1): written by the endpoints controller from a Service's ready pods."""

from kubepy.kinds import Kind, Strategy, printers, register
from kubepy.kinds import validation as v

ENDPOINTS = register(Kind(
    "", "v1", "Endpoints", "endpoints", namespaced=True, short_names=("ep",), model="V1Endpoints", proto="Endpoints",
    strategy=Strategy(default=v.default_endpoints, validate=v.validate_endpoints),
    printer=printers.ENDPOINTS,
))
