"""The network-policy agent: NetworkPolicies, pods and namespaces → this node's filter rules, kept in step.

``kubepy netpol`` runs one per node, as its own user ``system:kubepy-netpol``
(not the node's: the ``kubepy:network-policy-agent`` ClusterRole lets it list
and watch networkpolicies, pods and namespaces and get its Node, nothing
else).  Three informers feed caches; their
handlers only set a dirty flag.  One runner owns every sync: it waits for
the flag (or ``sync_period``), never starts two syncs closer than
``min_sync_period`` (a burst of changes becomes one sync), compiles the
whole node (``rules.compile_node``) and applies it with one
``iptables-restore --noflush`` (one transaction: the kernel never holds
half a policy).  A sync whose inputs did not change is skipped.  A full
sync (the first, every ``sync_period``, after any failure) reads the
kernel first, so chains of ours the last run left behind are deleted and
our jumps are put back first in FORWARD and INPUT.

Talks to the API server only through ``kubepy.client`` and to the kernel
only through ``IPTables`` (tests replace it with a fake).  ``cleanup``
removes every chain and jump it made.

Errors: a failed apply is logged (one line) and retried after
``min_sync_period`` as a full sync; nothing here raises out of the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubepy.client import Client, Informer
from kubepy.netpol.rules import BUILTIN_JUMPS, NodeState, compile_node, node_state, parse_kernel
from kubepy.netpol.metrics import AgentMetrics

__all__ = ["Agent", "AgentConfig", "IPTables", "IPTablesError", "RealIPTables", "cleanup", "run_agent"]

log = logging.getLogger(__name__)


class IPTablesError(Exception):
    def __init__(self, argv: list[str], returncode: int, output: str) -> None:
        self.argv, self.returncode, self.output = argv, returncode, output
        super().__init__(f"{shlex.join(argv)} exited {returncode}: {output.strip()[:2000]}")


class IPTables(Protocol):
    async def restore(self, payload: str) -> None: ...

    async def save(self) -> str: ...

    async def first_rule(self, chain: str) -> str: ...


class RealIPTables:
    """``iptables-restore --noflush -w`` / ``iptables-save -t filter`` of the current netns, or of ``netns``."""

    def __init__(self, *, netns: str | None = None) -> None:
        self.netns = netns

    def _argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)

    async def _run(self, argv: list[str], stdin: str | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        if proc.returncode != 0:
            raise IPTablesError(argv, proc.returncode or -1, (err or out).decode(errors="replace"))
        return out.decode()

    async def restore(self, payload: str) -> None:
        await self._run(self._argv("iptables-restore", "--noflush", "-w"), stdin=payload)

    async def save(self) -> str:
        return await self._run(self._argv("iptables-save", "-t", "filter"))

    async def first_rule(self, chain: str) -> str:
        """``iptables -S CHAIN 1``: the first rule of a built-in chain ("" when it has none)."""
        try:
            return (await self._run(self._argv("iptables", "-w", "-S", chain, "1"))).strip()
        except IPTablesError as e:
            if "Index of" in e.output or "doesn't exist" in e.output:
                return ""
            raise


def cleanup_payload(save_text: str) -> str:
    """Our jumps out of FORWARD/INPUT, then every chain of ours flushed and deleted ("" if none)."""
    kernel = parse_kernel(save_text)
    lines = ["*filter", *(f":{c} - [0:0]" for c in sorted(kernel.chains))]
    for builtin, spec, target in BUILTIN_JUMPS:
        if builtin in kernel.jumps:
            lines.append(f"-D {builtin} {spec} -j {target}")
    lines += [f"-X {c}" for c in sorted(kernel.chains)]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n" if kernel.chains or kernel.jumps else ""


async def cleanup(iptables: IPTables | None = None) -> int:
    """``kubepy netpol --cleanup``: the chains removed."""
    ipt = iptables or RealIPTables()
    text = await ipt.save()
    payload = cleanup_payload(text)
    if payload:
        await ipt.restore(payload)
    removed = len(parse_kernel(text).chains)
    log.info("netpol cleanup chains_removed=%d", removed)
    return removed


class Agent:
    def __init__(self, client: Any, *, node_name: str, pod_cidr: str | None, iptables: IPTables | None = None,
                 min_sync_period: float = 0.1, sync_period: float = 30.0, head_check_period: float = 1.0,
                 metrics: AgentMetrics | None = None) -> None:
        self.node_name = node_name
        self.metrics = metrics
        self.pod_cidr = pod_cidr
        self.iptables: IPTables = iptables if iptables is not None else RealIPTables()
        self.min_sync_period = min_sync_period
        self.sync_period = sync_period
        self.head_check_period = head_check_period
        self.policies = Informer(client, "networkpolicies")
        self.pods = Informer(client, "pods")
        self.namespaces = Informer(client, "namespaces")
        for informer in self.informers:
            informer.add_handler(self._on_change, lambda _old, _new: self._on_change(_new), self._on_change)
        self._dirty = asyncio.Event()
        self._need_full = True
        self._applied: NodeState | None = None
        self._bodies: Mapping[str, tuple[str, ...]] = {}  # what the kernel holds after the last good sync
        self._last_sync = float("-inf")
        self._last_full = float("-inf")
        self.syncs = 0
        self.failures = 0

    @property
    def informers(self) -> tuple[Informer, ...]:
        return (self.policies, self.pods, self.namespaces)

    def _on_change(self, _obj: dict[str, Any]) -> None:
        self._dirty.set()

    async def run(self) -> None:
        tasks = [asyncio.create_task(i.run(), name=f"netpol-informer-{i.resource}") for i in self.informers]
        try:
            for informer in self.informers:
                await informer.wait_synced()
            log.info("netpol caches synced node=%s pod_cidr=%s", self.node_name, self.pod_cidr or "-")
            await self.sync_loop()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    async def sync_loop(self) -> None:
        self._dirty.set()
        while True:
            until_full = self._last_full + self.sync_period - time.monotonic()
            try:
                await asyncio.wait_for(self._dirty.wait(), max(0.0, min(until_full, self.head_check_period)))
            except TimeoutError:
                if time.monotonic() >= self._last_full + self.sync_period or not await self.jumps_first():
                    self._need_full = True
                else:
                    continue
            wait = self._last_sync + self.min_sync_period - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._dirty.clear()
            await self.sync()

    async def jumps_first(self) -> bool:
        """Are our jumps still the first rules of FORWARD and INPUT?  Others (kube-proxy, at its
        start) insert theirs at the head too; an ACCEPT above ours would let traffic skip policies,
        so a jump pushed down is moved back within ``head_check_period``."""
        try:
            for builtin, spec, target in BUILTIN_JUMPS:
                if await self.iptables.first_rule(builtin) != f"-A {builtin} {spec} -j {target}":
                    log.info("netpol jump not first chain=%s: full sync", builtin)
                    return False
        except Exception as e:  # noqa: BLE001 - the full sync that follows reports what is wrong
            log.warning("netpol head check failed err=%s", e)
            return False
        return True

    def state(self) -> NodeState:
        return node_state(self.policies.cache.list(), self.pods.cache.list(), self.namespaces.cache.list())

    async def sync(self) -> bool:
        """One sync; False (and a full resync scheduled) if applying failed."""
        start = time.monotonic()
        ok = await self._sync(start)
        if self.metrics is not None:
            self.metrics.synced(time.monotonic() - start, ok=ok)
        return ok

    async def _sync(self, start: float) -> bool:
        self._last_sync = start
        state = self.state()
        full = self._need_full or self._applied is None
        if not full and state == self._applied:
            return True
        try:
            kernel = parse_kernel(await self.iptables.save()) if full else None
            ruleset = compile_node(state, node=self.node_name, pod_cidr=self.pod_cidr, previous=self._bodies,
                                   kernel=kernel)
            await self.iptables.restore(ruleset.text)
        except Exception as e:  # noqa: BLE001 - any failure: full resync after min_sync_period
            self.failures += 1
            self._need_full = True
            self._dirty.set()
            log.error("netpol sync failed full=%s retry_in=%.1fs err=%s", full, self.min_sync_period, e)
            return False
        self._applied, self._bodies, self._need_full = state, ruleset.bodies, False
        self.syncs += 1
        if full:
            self._last_full = start
        log.info("netpol sync full=%s policies=%d local_policies=%d targets=%d pending=%d pods=%d rules=%d "
                 "chains_written=%d deleted=%d ms=%.1f", full, len(state.policies), ruleset.policies, ruleset.targets,
                 ruleset.pending, len(state.pods), ruleset.rules, ruleset.written, len(ruleset.deleted),
                 (time.monotonic() - start) * 1000)
        return True


@dataclass
class AgentConfig:
    kubeconfig: str
    hostname_override: str = field(default_factory=socket.gethostname)
    pod_cidr: str | None = None  # default: the Node's spec.podCIDR
    min_sync_period: float = 0.1
    sync_period: float = 30.0
    metrics: AgentMetrics | None = None


async def _node_pod_cidr(client: Client, node: str) -> str:
    """The Node's spec.podCIDR, waiting for node IPAM to assign it."""
    delay = 0.2
    while True:
        try:
            cidr = ((await client.get("nodes", node)).get("spec") or {}).get("podCIDR")
            if cidr:
                return str(cidr)
            log.info("netpol waiting for podCIDR node=%s", node)
        except Exception as e:  # noqa: BLE001 - the API server may not be up yet
            log.warning("netpol node lookup failed node=%s err=%s", node, e)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def run_agent(config: AgentConfig) -> None:
    async with Client.from_kubeconfig(config.kubeconfig, user_agent="kubepy-netpol") as client:
        pod_cidr = config.pod_cidr or await _node_pod_cidr(client, config.hostname_override)
        agent = Agent(client, node_name=config.hostname_override, pod_cidr=pod_cidr,
                      min_sync_period=config.min_sync_period, sync_period=config.sync_period,
                      metrics=config.metrics)
        await agent.run()

