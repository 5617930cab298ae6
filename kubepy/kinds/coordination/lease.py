"""Lease (coordination.k8s.io/v1): node heartbeats and leader election."""

from kubepy.kinds import Kind, Strategy, printers, register
from kubepy.kinds import validation as v

LEASE = register(Kind(
    "coordination.k8s.io", "v1", "Lease", "leases", namespaced=True, model="V1Lease", proto="Lease",
    api_types=("Lease", "LeaseList", "LeaseSpec"),
    strategy=Strategy(validate=v.validate_lease),
    printer=printers.LEASE,
))
