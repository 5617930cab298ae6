"""The ``kubernetes`` Service's endpoints: every live API server, none that died.

Upstream's "lease" endpoint reconciler: each API server renews a lease of its
own every ``RENEW`` seconds, valid ``LEASE_DURATION`` seconds, then sets
``default/kubernetes``'s Endpoints to the addresses of the servers whose
lease is current. A server that stops cleanly removes itself at once; one
that dies drops out when its lease runs out (about 15 s). The leases are
``coordination.k8s.io`` Leases in ``kube-system`` labelled
``apiserver.kubernetes.io/identity=kube-apiserver`` (upstream keeps the
endpoint leases in raw etcd keys and these identity Leases beside them;
here one object does both), so ``kubectl get leases -n kube-system`` shows
which servers are live. The EndpointSlice follows from the Endpoints by
mirroring, as for any Service without a selector.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from typing import Any

from kubepy.api import errors, objects
from kubepy.api.storage import DeleteOptions, Storage
from kubepy.kinds import by_plural

log = logging.getLogger(__name__)

__all__ = ["EndpointReconciler"]

IDENTITY_LABEL = "apiserver.kubernetes.io/identity"
ADDRESS_ANNOTATION = "kubepy.io/advertise-address"
LEASE_DURATION = 15
RENEW = 5.0


def lease_name(ip: str, port: int) -> str:
    return "apiserver-" + hashlib.sha256(f"{ip}:{port}".encode()).hexdigest()[:16]


def live_addresses(leases: list[dict[str, Any]], now: dt.datetime) -> list[tuple[str, int]]:
    """(ip, port) of every lease still current at ``now``, sorted."""
    out = set()
    for lease in leases:
        spec = lease.get("spec") or {}
        addr = ((lease.get("metadata") or {}).get("annotations") or {}).get(ADDRESS_ANNOTATION, "")
        renewed = spec.get("renewTime")
        if not addr or not renewed or ":" not in addr:
            continue
        expires = objects.parse_time(renewed) + dt.timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))
        if expires > now:
            ip, _, port = addr.rpartition(":")
            out.add((ip, int(port)))
    return sorted(out)


def subsets(addresses: list[tuple[str, int]]) -> list[dict[str, Any]]:
    by_port: dict[int, list[str]] = {}
    for ip, port in addresses:
        by_port.setdefault(port, []).append(ip)
    return [{"addresses": [{"ip": ip} for ip in ips],
             "ports": [{"name": "https", "port": port, "protocol": "TCP"}]} for port, ips in sorted(by_port.items())]


class EndpointReconciler:
    def __init__(self, storage: Storage, ip: str, port: int, *, renew: float = RENEW,
                 duration: int = LEASE_DURATION) -> None:
        self.storage, self.ip, self.port = storage, ip, port
        self.renew, self.duration = renew, duration
        self.name = lease_name(ip, port)

    async def run(self) -> None:
        while True:
            try:
                await self.reconcile()
            except errors.APIError as e:
                log.warning("kubernetes endpoints not reconciled err=%s", e.message)
            await asyncio.sleep(self.renew)

    async def reconcile(self) -> list[tuple[str, int]]:
        """Renews this server's lease, then writes the live set; returns it."""
        await self._renew()
        leases, _, _ = await self.storage.list(by_plural("leases"), "kube-system")
        live = live_addresses([lease for lease in leases
                               if (lease["metadata"].get("labels") or {}).get(IDENTITY_LABEL) == "kube-apiserver"],
                              objects.now())
        if (self.ip, self.port) not in live:
            live = sorted(set(live) | {(self.ip, self.port)})
        await self._write(live)
        return live

    async def remove(self) -> None:
        """A clean stop: this server's lease and address go at once."""
        try:
            await self.storage.delete(by_plural("leases"), "kube-system", self.name, DeleteOptions())
        except errors.NotFound:
            pass
        leases, _, _ = await self.storage.list(by_plural("leases"), "kube-system")
        live = [a for a in live_addresses(leases, objects.now()) if a != (self.ip, self.port)]
        if live:  # the last server leaves its address: clients have nothing better
            await self._write(live)
        log.info("removed from kubernetes endpoints address=%s:%d remaining=%d", self.ip, self.port, len(live))

    async def _renew(self) -> None:
        leases = by_plural("leases")
        now = _micro(objects.now())  # a Lease's renewTime is a MicroTime
        body = {"metadata": {"name": self.name, "labels": {IDENTITY_LABEL: "kube-apiserver"},
                             "annotations": {ADDRESS_ANNOTATION: f"{self.ip}:{self.port}"}},
                "spec": {"holderIdentity": self.name, "leaseDurationSeconds": self.duration, "renewTime": now}}
        try:
            await self.storage.update(leases, "kube-system", self.name,
                                      lambda o: {**o, "metadata": {**o["metadata"], **{
                                          "labels": body["metadata"]["labels"],
                                          "annotations": body["metadata"]["annotations"]}},
                                          "spec": {**(o.get("spec") or {}), **body["spec"]}})
        except errors.NotFound:
            try:
                await self.storage.create(leases, "kube-system", body)
            except errors.AlreadyExists:
                pass

    async def _write(self, live: list[tuple[str, int]]) -> None:
        """Sets the Endpoints to ``live`` unless they say so already (others write them too)."""
        ep = by_plural("endpoints")
        want = subsets(live)
        try:
            current = await self.storage.get(ep, "default", "kubernetes")
        except errors.NotFound:
            try:
                await self.storage.create(ep, "default", {"metadata": {"name": "kubernetes"}, "subsets": want})
            except errors.AlreadyExists:
                return  # another server made it: next round
        else:
            if current.get("subsets") == want:
                return
            await self.storage.update(ep, "default", "kubernetes", lambda o: {**o, "subsets": want})
        log.info("kubernetes endpoints addresses=%s", ",".join(f"{ip}:{port}" for ip, port in live))


def _micro(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
