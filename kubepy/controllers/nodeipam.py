"""Node IPAM controller: a pod CIDR for every Node (Kubernetes' range allocator).

Each Node without ``spec.podCIDR`` gets the lowest free
``/node_cidr_mask_size`` block of ``cluster_cidr`` (written to
``spec.podCIDR`` and ``spec.podCIDRs``). Which blocks are taken is derived
from the node informer each time - a node's block is free again once the
node is gone - plus the blocks handed out but not yet seen back through the
watch, so no block ever goes to two nodes. When the range is exhausted the
node gets a ``CIDRAssignmentFailed`` event and is retried when a node goes
away. Reads the nodes informer; patches nodes through the client.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from kubepy.client import NotFoundError, WorkQueue, run_workers
from kubepy.controllers.context import ControllerContext

log = logging.getLogger(__name__)

RETRY_EXHAUSTED = 30.0  # seconds; a deleted node also triggers a retry at once


class CIDRRangeExhausted(Exception):
    """Every block of the cluster CIDR is in use."""


# -- decisions (pure) ---------------------------------------------------------
def next_free_cidr(cluster_cidr: str, mask_size: int, used: Iterable[str]) -> str:
    """The lowest ``/mask_size`` block of ``cluster_cidr`` overlapping none of ``used``."""
    cluster = ipaddress.ip_network(cluster_cidr, strict=False)
    if mask_size < cluster.prefixlen:
        raise ValueError(f"node CIDR mask /{mask_size} is larger than the cluster CIDR {cluster}")
    taken = []
    for cidr in used:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            continue
        if net.version == cluster.version and net.overlaps(cluster):
            taken.append(net)
    for block in cluster.subnets(new_prefix=mask_size):
        if not any(block.overlaps(net) for net in taken):
            return str(block)
    raise CIDRRangeExhausted(f"no free /{mask_size} left in {cluster}")


def node_cidrs(node: dict[str, Any]) -> list[str]:
    spec = node.get("spec") or {}
    cidrs = list(spec.get("podCIDRs") or [])
    if spec.get("podCIDR") and spec["podCIDR"] not in cidrs:
        cidrs.insert(0, spec["podCIDR"])
    return cidrs


# -- the controller -------------------------------------------------------------
class NodeIpamController:
    name = "nodeipam"

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.nodes = ctx.informers.informer("nodes")
        self.queue = WorkQueue(name=self.name)
        self._in_flight: dict[str, str] = {}  # node -> block written but not yet seen in the cache
        self.nodes.add_handler(self._enqueue, lambda old, new: self._enqueue(new), self._node_deleted)

    def _enqueue(self, node: dict[str, Any]) -> None:
        self.queue.add(node["metadata"]["name"])

    def _node_deleted(self, node: dict[str, Any]) -> None:
        self._in_flight.pop(node["metadata"]["name"], None)
        # A block came free: nodes that found the range full may fit now.
        for other in self.nodes.cache.list():
            if not node_cidrs(other):
                self._enqueue(other)

    async def run(self) -> None:
        # One worker: allocation is a read-decide-write over shared state.
        await run_workers(self.queue, self.reconcile, workers=1, logger=log)

    def used_cidrs(self) -> set[str]:
        used = set(self._in_flight.values())
        for node in self.nodes.cache.list():
            used.update(node_cidrs(node))
        return used

    async def reconcile(self, name: str) -> None:
        node = self.nodes.cache.get(name)
        if node is None:
            self._in_flight.pop(name, None)
            return
        if node_cidrs(node):
            self._in_flight.pop(name, None)
            return
        cidr = self._in_flight.get(name)
        if cidr is None:
            cfg = self.ctx.config
            try:
                cidr = next_free_cidr(cfg.cluster_cidr, cfg.node_cidr_mask_size, self.used_cidrs())
            except CIDRRangeExhausted as e:
                self.ctx.recorder.event(node, "Warning", "CIDRAssignmentFailed",
                                        f"Node {name} status is now: CIDRAssignmentFailed")
                log.warning("pod CIDR not assigned node=%s reason=CIDRAssignmentFailed err=%s", name, e)
                self.queue.add_after(name, RETRY_EXHAUSTED)
                return
            self._in_flight[name] = cidr
        try:
            await self.client.patch("nodes", name, {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})
        except NotFoundError:
            self._in_flight.pop(name, None)
            return
        log.info("pod CIDR assigned node=%s cidr=%s", name, cidr)
