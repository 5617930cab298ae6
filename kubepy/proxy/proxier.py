"""The proxier: Services and EndpointSlices of the cluster → this node's iptables (or nftables), kept in step.

Three informers (services, endpointslices, nodes) feed caches; their handlers only note
that something changed and set a dirty flag. One runner owns every sync:
it waits for the flag (or ``sync_period``), never starts two syncs closer
than ``min_sync_period`` (a burst of changes becomes one sync), builds the
``ServicePort`` models from the caches, and diffs them against what the
last successful sync applied:

- full sync (first, every ``sync_period``, and after any failure): read
  the kernel's chains (``iptables-save``), render everything, delete stale
  chains, re-insert missing jumps, re-check the service route, hairpin and ICMP redirects;
- partial sync: only the changed service ports' chains plus the dispatch
  chains (``rules.render_partial``).

In nftables mode (``proxy_mode="nftables"``) the same models go to
``nftables.render_nft_full`` / ``render_nft_partial`` and one ``nft -f``
per sync; a failed apply makes the next full sync recreate the table. The
first full sync of either mode removes what the other mode left.

After a successful apply, UDP conntrack entries pointing at removed
endpoints are deleted. Node changes (and every full sync) re-sync the
host-gw routes to the other nodes' pod CIDRs (``routes``). Talks to the API server only through
``kubepy.client`` and to the kernel only through the ``iptables`` and
``netlink`` adapters, which tests replace with fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubepy.client import Client, EventRecorder, Informer, object_key
from kubepy.proxy.announce import (
    REANNOUNCE_FOR,
    REANNOUNCE_INTERVAL,
    NodeAddresses,
    PeerProbe,
    desired_addresses,
    endpoint_nodes,
    internal_ip,
    live_nodes,
)
from kubepy.proxy.healthcheck import HealthServer, local_endpoint_counts
from kubepy.proxy.iptables import IPTables, RealIPTables, parse_state
from kubepy.proxy.nftables import NFTables, RealNFTables, render_nft_full, render_nft_partial
from kubepy.proxy.metrics import ProxyMetrics
from kubepy.proxy.netlink import NodeNetlink, UDPFlow
from kubepy.proxy.routes import NodeRoutes, desired_routes
from kubepy.proxy.rules import (
    NodeConfig,
    is_proxy_chain,
    Ruleset,
    ServicePort,
    render_full,
    render_partial,
    service_ports,
)

__all__ = [
    "PROXY_MODES",
    "Netlink",
    "Proxier",
    "ProxyConfig",
    "changed_ports",
    "cleanup_all",
    "run_proxy",
    "stale_udp_flows",
]

log = logging.getLogger(__name__)

IPTABLES, NFTABLES = "iptables", "nftables"
PROXY_MODES = (IPTABLES, NFTABLES)


class Routes(Protocol):
    def sync(self, wanted: dict[str, str]) -> tuple[int, int]: ...


class Addresses(Protocol):
    def sync(self, wanted: set[str], *, reannounce: bool = False) -> tuple[list[str], list[str]]: ...

    def announce(self, ips: set[str]) -> list[str]: ...


class Netlink(Protocol):
    def ensure_service_route(self) -> bool: ...

    def ensure_hairpin(self) -> int: ...

    def ensure_no_redirects(self) -> None: ...

    def delete_udp_flows(self, flows: list[UDPFlow]) -> int: ...


# -- pure decisions -----------------------------------------------------------
def changed_ports(old: Mapping[str, ServicePort], new: Mapping[str, ServicePort]) -> set[str]:
    """Keys whose model differs, appeared or disappeared."""
    return {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}


def stale_udp_flows(old: Mapping[str, ServicePort], new: Mapping[str, ServicePort]) -> set[UDPFlow]:
    """UDP conntrack entries made stale by going from ``old`` to ``new``.

    An endpoint IP gone from a UDP service port: entries to its ClusterIP
    (and NodePort) answered by that IP. A UDP service port that gains its
    first endpoints: any entry to its ClusterIP/NodePort (made while it
    had none, e.g. before the REJECT rule existed)."""
    flows: set[UDPFlow] = set()
    for key, was in old.items():
        if was.protocol != "udp":
            continue
        now = new.get(key)
        kept = {ep.ip for ep in now.endpoints} if now and now.cluster_ip == was.cluster_ip else set()
        for ip in sorted({ep.ip for ep in was.endpoints} - kept):
            flows.add(UDPFlow(dport=was.port, orig_dst=was.cluster_ip, reply_src=ip))
            if was.node_port:
                flows.add(UDPFlow(dport=was.node_port, reply_src=ip))
    for key, now in new.items():
        was_ = old.get(key)
        if now.protocol == "udp" and now.endpoints and (was_ is None or not was_.endpoints):
            flows.add(UDPFlow(dport=now.port, orig_dst=now.cluster_ip))
            if now.node_port:
                flows.add(UDPFlow(dport=now.node_port))
    return flows


def _first_ipv4(ips: list[str]) -> str | None:
    for ip in ips:
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(ip).version == 4:
                return ip
    return None


# -- the runner ---------------------------------------------------------------
class Proxier:
    def __init__(self, client: Any, *, node_name: str, node_ips: list[str], cluster_cidr: str, service_cidr: str,
                 bridge: str, min_sync_period: float = 1.0, sync_period: float = 30.0,
                 iptables: IPTables | None = None, netlink: Netlink | None = None,
                 routes: Routes | None = None, masquerade_pod_egress: bool = False,
                 health: HealthServer | None = None, addresses: Addresses | None = None,
                 probe: PeerProbe | None = None, recorder: Any = None, metrics: ProxyMetrics | None = None,
                 proxy_mode: str = IPTABLES, nftables: NFTables | None = None) -> None:
        if proxy_mode not in PROXY_MODES:
            raise ValueError(f"unknown proxy mode {proxy_mode!r}: one of {', '.join(PROXY_MODES)}")
        self.node_name = node_name
        self.proxy_mode = proxy_mode
        self.metrics = metrics
        self.node_ips = list(node_ips)
        self.config = NodeConfig(cluster_cidr=cluster_cidr, node_ip=_first_ipv4(node_ips),
                                 pod_egress_cidr=cluster_cidr if masquerade_pod_egress else None,
                                 node_ips=tuple(node_ips) if proxy_mode == NFTABLES else ())
        self.min_sync_period = min_sync_period
        self.sync_period = sync_period
        # The writer of the other mode is given only to clean up what that mode left (run_proxy gives both).
        self.iptables: IPTables | None = iptables if iptables is not None or proxy_mode == NFTABLES \
            else RealIPTables()
        self.nftables: NFTables | None = nftables if nftables is not None or proxy_mode == IPTABLES \
            else RealNFTables()
        self._other_mode_cleaned = False
        self.netlink: Netlink = netlink if netlink is not None else NodeNetlink(bridge=bridge,
                                                                                service_cidr=service_cidr)
        self.routes: Routes = routes if routes is not None else NodeRoutes()
        # Load-balancer duties (run_proxy gives all three; a proxier without them announces nothing):
        # health answers, the announced /32s, and which peers' proxies answer.
        self.health = health
        self.addresses = addresses
        self.probe = probe
        self.recorder = recorder  # an EventRecorder: "nodeAssigned" on a Service whose address this node took
        self.announced: set[str] = set()
        self._live: set[str] = set()  # the live nodes the last announcement was decided with
        self._announce_failed = False
        self._reannouncing: asyncio.Task[None] | None = None  # gratuitous ARP repeated after taking addresses
        self._reannouncing_ips: set[str] = set()
        self.services = Informer(client, "services")
        self.slices = Informer(client, "endpointslices")
        self.nodes = Informer(client, "nodes")
        for informer in (self.services, self.slices):
            informer.add_handler(self._on_change, lambda _old, new: self._on_change(new), self._on_change)
        self.nodes.add_handler(self._on_node, lambda _old, new: self._on_node(new), self._on_node)
        self._nodes_dirty = True
        self._dirty = asyncio.Event()
        self._pending: set[str] = set()  # namespace/name noted by handlers since the last sync
        self._need_full = True
        self._recreate = False  # nftables: the last apply failed, the next full sync deletes the table first
        self._applied: dict[str, ServicePort] | None = None  # what the kernel holds after the last good sync
        self._chains: frozenset[str] = frozenset()
        self._last_sync = float("-inf")
        self._last_full = float("-inf")
        self.syncs = 0
        self.failures = 0

    # handlers: record, never act
    def _on_change(self, obj: dict[str, Any]) -> None:
        self._pending.add(object_key(obj))
        self._dirty.set()

    def _on_node(self, _obj: dict[str, Any]) -> None:
        self._nodes_dirty = True
        self._dirty.set()

    async def run(self) -> None:
        """Informers, then the sync runner, until cancelled."""
        tasks = [asyncio.create_task(i.run(), name=f"proxy-informer-{i.resource}")
                 for i in (self.services, self.slices, self.nodes)]
        if self.probe is not None:
            tasks.append(asyncio.create_task(self.probe.run(self._dirty.set), name="proxy-peer-probe"))
        if self.health is not None:
            await self.health.start()
        try:
            for informer in (self.services, self.slices, self.nodes):
                await informer.wait_synced()
            log.info("proxy caches synced node=%s node_ips=%s", self.node_name, ",".join(self.node_ips))
            await self.sync_loop()
        finally:
            if self._reannouncing is not None:
                tasks.append(self._reannouncing)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            if self.health is not None:
                await self.health.stop()

    async def sync_loop(self) -> None:
        self._dirty.set()
        while True:
            until_full = self._last_full + self.sync_period - time.monotonic()
            try:
                await asyncio.wait_for(self._dirty.wait(), max(0.0, until_full))
            except TimeoutError:
                self._need_full = True
            # Rate limit: changes arriving meanwhile set the flag again and
            # are all picked up by the one sync that follows.
            wait = self._last_sync + self.min_sync_period - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._dirty.clear()
            await self.sync()

    async def sync(self) -> bool:
        """One sync; False (and a full resync scheduled) if applying failed."""
        start = time.monotonic()
        ok = await self._sync(start)
        if self.metrics is not None:
            self.metrics.synced(time.monotonic() - start, ok=ok)
        return ok

    async def _sync(self, start: float) -> bool:
        self._last_sync = start
        pending, self._pending = self._pending, set()
        ports = service_ports(self.services.cache.list(), self.slices.cache.list(), node_name=self.node_name)
        full = self._need_full or self._applied is None
        if full or self._nodes_dirty:
            await self._sync_routes()
        try:
            changed: set[str] = set()
            if not full:
                assert self._applied is not None
                changed = changed_ports(self._applied, ports)
                if not changed:
                    await self._load_balancing(ports)
                    return True
            ruleset = await self._apply(ports, full, changed)
        except Exception as e:  # noqa: BLE001 - any failure: full resync after min_sync_period
            self.failures += 1
            self._need_full = True
            self._recreate = self.proxy_mode == NFTABLES
            self._pending |= pending
            self._dirty.set()  # retried after min_sync_period
            log.error("sync failed full=%s retry_in=%.1fs err=%s", full, self.min_sync_period, e)
            return False
        flows = stale_udp_flows(self._applied or {}, ports)
        self._applied, self._chains = ports, ruleset.nat_chains
        self._need_full = self._recreate = False
        if full:
            self._last_full = start
            await self._clean_other_mode()
        await self._after_apply(full, flows)
        await self._load_balancing(ports)
        self.syncs += 1  # counted once the whole sync is done (tests wait on it)
        self._log(full, ports, ruleset, pending, start)
        return True

    async def _apply(self, ports: dict[str, ServicePort], full: bool, changed: set[str]) -> Ruleset:
        """Render for this node's mode and apply it: one ``iptables-restore`` or one ``nft -f``."""
        if self.proxy_mode == NFTABLES:
            assert self.nftables is not None
            if full:
                ruleset = render_nft_full(ports, self.config, kernel=await self.nftables.state(),
                                          recreate=self._recreate, first=self._applied is None)
            else:
                assert self._applied is not None
                ruleset = render_nft_partial(ports, self.config, changed, previous=self._applied,
                                             previous_chains=self._chains)
            await self.nftables.apply(ruleset.text)
            return ruleset
        assert self.iptables is not None
        if full:
            ruleset = render_full(ports, self.config, kernel=parse_state(await self.iptables.save()))
        else:
            ruleset = render_partial(ports, self.config, changed, previous_chains=self._chains)
        await self.iptables.restore(ruleset.text)
        return ruleset

    async def _clean_other_mode(self) -> None:
        """Once per process: remove what the other proxy mode left on this node (switching modes), as
        kube-proxy does at startup. Only the proxy's own chains: the policy agent's KUBE-NWPLCY- stay."""
        if self._other_mode_cleaned:
            return
        try:
            if self.proxy_mode == NFTABLES and self.iptables is not None:
                removed = await self.iptables.cleanup(owned=is_proxy_chain)
                if removed:
                    log.info("other proxy mode cleaned mode=iptables chains_removed=%d", removed)
            elif self.proxy_mode == IPTABLES and self.nftables is not None:
                if await self.nftables.cleanup():
                    log.info("other proxy mode cleaned mode=nftables table=ip/kube-proxy")
        except FileNotFoundError:  # that mode's tool isn't installed: it left nothing
            pass
        except Exception as e:  # noqa: BLE001 - tried again at the next full sync
            log.warning("other proxy mode cleanup failed err=%s", e)
            return
        self._other_mode_cleaned = True

    async def _load_balancing(self, ports: dict[str, ServicePort]) -> None:
        """Health answers, then the load-balancer addresses this node announces (``announce``)."""
        if self.health is not None:
            self.health.last_synced = time.time()
            await self.health.sync_services(local_endpoint_counts(ports))
        if self.addresses is None or self.probe is None:
            return
        self.probe.want(any(sp.load_balancer_ips for sp in ports.values()) or bool(self.announced))
        nodes = self.nodes.cache.list()
        self.probe.set_peers({n["metadata"]["name"]: ip for n in nodes
                              if n["metadata"]["name"] != self.node_name and (ip := internal_ip(n))})
        if not self.probe.rounds:
            return  # not knowing which peers live yet, this node could claim what another holds
        live = live_nodes(nodes, self.probe.answering(), self.node_name)
        owners = desired_addresses(ports, endpoint_nodes(self.slices.cache.list()), live)
        mine = {ip for ip, node in owners.items() if node == self.node_name}
        # Peers came or went: neighbours may have cached another node's MAC for our addresses
        # (one that held them while this node was unreachable), so they are announced again.
        reannounce = live != self._live and bool(mine)
        if mine == self.announced and not reannounce and not self._need_full and not self._announce_failed:
            return
        try:
            added, removed = await asyncio.to_thread(functools.partial(self.addresses.sync, mine,
                                                                       reannounce=reannounce))
        except Exception as e:  # noqa: BLE001 - retried at the next sync
            # What the kernel holds is unknown now: the next sync sets it whatever it looks like.
            self._announce_failed = True
            self._dirty.set()
            log.warning("load balancer announce failed wanted=%s err=%s", ",".join(sorted(mine)) or "-", e)
            return
        self.announced, self._live, self._announce_failed = mine, live, False
        if added or reannounce:
            self._reannounce(set(added) if not reannounce else set(mine))
        if reannounce and not added:
            log.info("load balancer addresses announced again ips=%s node=%s live=%s", ",".join(sorted(mine)),
                     self.node_name, ",".join(sorted(live)))
        for ip in added:
            log.info("load balancer address announced ip=%s node=%s live=%s", ip, self.node_name,
                     ",".join(sorted(live)))
            if self.recorder is not None:  # as MetalLB's speaker says it, so kubectl describe shows who answers
                for svc in self.services.cache.list():
                    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                    if any(isinstance(i, dict) and i.get("ip") == ip for i in ingress):
                        self.recorder.event({"apiVersion": "v1", "kind": "Service", **svc}, "Normal", "nodeAssigned",
                                            f'announcing from node "{self.node_name}" with protocol "layer2"')
        for ip in removed:
            log.info("load balancer address withdrawn ip=%s node=%s now=%s", ip, self.node_name,
                     owners.get(ip, "-"))

    def _reannounce(self, ips: set[str]) -> None:
        """Gratuitous ARP for ``ips`` again every REANNOUNCE_INTERVAL for REANNOUNCE_FOR seconds (MetalLB's
        speaker does the same): a neighbour ignores an update within its locktime of the last one."""
        if self._reannouncing is not None:
            ips |= self._reannouncing_ips
            self._reannouncing.cancel()
        self._reannouncing_ips = ips
        self._reannouncing = asyncio.get_running_loop().create_task(self._reannounce_for(ips))

    async def _reannounce_for(self, ips: set[str]) -> None:
        assert self.addresses is not None
        deadline = time.monotonic() + REANNOUNCE_FOR
        try:
            while time.monotonic() + REANNOUNCE_INTERVAL <= deadline + 0.05:
                await asyncio.sleep(REANNOUNCE_INTERVAL)
                ips = ips & self.announced
                if not ips:
                    return
                try:
                    await asyncio.to_thread(self.addresses.announce, set(ips))
                except OSError as e:  # the link is down: the next sync announces again
                    log.warning("gratuitous arp repeat failed ips=%s err=%s", ",".join(sorted(ips)), e)
                    return
        finally:
            if self._reannouncing is asyncio.current_task():
                self._reannouncing, self._reannouncing_ips = None, set()

    async def _sync_routes(self) -> None:
        """Host-gw routes to the other nodes' pod CIDRs (``routes.NodeRoutes``)."""
        self._nodes_dirty = False
        try:
            wanted = desired_routes(self.nodes.cache.list(), self_name=self.node_name)
            added, removed = await asyncio.to_thread(self.routes.sync, wanted)
            if added or removed:
                log.info("node routes synced wanted=%d added=%d removed=%d", len(wanted), added, removed)
        except Exception as e:  # noqa: BLE001 - retried at the next full sync
            self._nodes_dirty = True
            log.warning("node routes sync failed err=%s", e)

    async def _after_apply(self, full: bool, flows: set[UDPFlow]) -> None:
        # Netlink trouble must not undo or block a good iptables sync: log it,
        # the next full sync tries again.
        if full:
            try:
                await asyncio.to_thread(self.netlink.ensure_service_route)
                await asyncio.to_thread(self.netlink.ensure_hairpin)
                await asyncio.to_thread(self.netlink.ensure_no_redirects)
            except Exception as e:  # noqa: BLE001 - retried at the next full sync
                log.warning("netlink upkeep failed err=%s", e)
        if flows:
            try:
                n = await asyncio.to_thread(self.netlink.delete_udp_flows, sorted(flows))
                log.info("conntrack udp entries deleted=%d flows=%d", n, len(flows))
            except Exception as e:  # noqa: BLE001 - stale UDP flows age out on their own
                log.warning("conntrack cleanup failed flows=%d err=%s", len(flows), e)

    def _log(self, full: bool, ports: dict[str, ServicePort], ruleset: Ruleset, pending: set[str],
             start: float) -> None:
        log.info("sync mode=%s full=%s services=%d ports=%d endpoints=%d firewalled=%d changed=%d objects=%d "
                 "rules=%d deleted=%d ms=%.1f", self.proxy_mode, full, len({p.service_key for p in ports.values()}),
                 len(ports), sum(len(p.endpoints) for p in ports.values()),
                 sum(p.uses_fw_chain for p in ports.values()), ruleset.rendered, len(pending), ruleset.rules,
                 len(ruleset.deleted), (time.monotonic() - start) * 1000)


# -- entry points -------------------------------------------------------------
@dataclass
class ProxyConfig:
    kubeconfig: str
    hostname_override: str = field(default_factory=socket.gethostname)
    node_ips: list[str] = field(default_factory=list)
    cluster_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    bridge: str = "cni0"
    min_sync_period: float = 1.0
    sync_period: float = 30.0
    masquerade_pod_egress: bool = False
    cleanup: bool = False
    healthz_port: int = 10256
    healthz_bind: str = "0.0.0.0"
    metrics: ProxyMetrics | None = None
    proxy_mode: str = IPTABLES


async def cleanup_all(iptables: RealIPTables | None = None, nftables: RealNFTables | None = None) -> int:
    """``kubepy proxy --cleanup``, whatever the mode: every KUBE-/KUBEPY- chain and jump gone, and the
    nftables table ``ip kube-proxy``; the number of chains (and tables) removed."""
    removed = await (iptables or RealIPTables()).cleanup()
    try:
        removed += int(await (nftables or RealNFTables()).cleanup())
    except FileNotFoundError:  # no nft on this node: nftables mode never ran here
        pass
    return removed


async def run_proxy(config: ProxyConfig) -> None:
    if config.cleanup:
        await cleanup_all()
        return
    async with Client.from_kubeconfig(config.kubeconfig, user_agent="kubepy-proxy") as client:
        node_ips = config.node_ips or await _node_ips(client, config.hostname_override)
        health = HealthServer(bind=config.healthz_bind, healthz_port=config.healthz_port, max_age=2 * config.sync_period + 5)
        recorder = EventRecorder(client, component="kube-proxy", host=config.hostname_override)
        proxier = Proxier(client, node_name=config.hostname_override, node_ips=node_ips,
                          cluster_cidr=config.cluster_cidr, service_cidr=config.service_cidr, bridge=config.bridge,
                          min_sync_period=config.min_sync_period, sync_period=config.sync_period,
                          masquerade_pod_egress=config.masquerade_pod_egress, health=health,
                          addresses=NodeAddresses(node_ips[0]) if node_ips else None,
                          probe=PeerProbe(port=config.healthz_port), recorder=recorder, metrics=config.metrics,
                          proxy_mode=config.proxy_mode, iptables=RealIPTables(), nftables=RealNFTables())
        try:
            await proxier.run()
        finally:
            await recorder.stop()


async def _node_ips(client: Client, node_name: str) -> list[str]:
    """The Node's InternalIPs: for the log, and for source ranges that admit the node itself
    (NodePorts match ``--dst-type LOCAL``)."""
    try:
        node = await client.get("nodes", node_name)
    except Exception as e:  # noqa: BLE001 - only for the log
        log.warning("node lookup failed node=%s err=%s", node_name, e)
        return []
    return [a["address"] for a in (node.get("status") or {}).get("addresses") or [] if a.get("type") == "InternalIP"]
