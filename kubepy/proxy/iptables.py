"""The iptables adapter: apply a payload, read the kernel's chains, remove ours.

Talks to the kernel only through ``iptables-restore --noflush -w`` (the
payload on stdin, one atomic transaction per table) and ``iptables-save``,
optionally inside a named network namespace (``ip netns exec``) - that is
how tests and the bench program a throwaway netns. ``FakeIPTables``
records what it was asked and keeps a small model of the chains, for the
proxier's tests.

Only chains whose names carry ``rules.OUR_PREFIXES`` (KUBE-, KUBEPY-) are
ever flushed or deleted, and only jumps to them are removed from built-in
chains.

Errors::

    IPTablesError   a command failed; carries the command line and its output
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from kubepy.proxy.rules import KernelState, has_our_prefix

__all__ = [
    "FakeIPTables",
    "IPTables",
    "IPTablesError",
    "RealIPTables",
    "cleanup_payload",
    "parse_state",
]

log = logging.getLogger(__name__)

TABLES = ("filter", "nat")
BUILTIN_CHAINS = {"INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"}
_JUMP_RE = re.compile(r"\s-j\s+(\S+)")


class IPTablesError(Exception):
    def __init__(self, argv: list[str], returncode: int, output: str) -> None:
        self.argv, self.returncode, self.output = argv, returncode, output
        super().__init__(f"{shlex.join(argv)} exited {returncode}: {output.strip()}")


class IPTables(Protocol):
    async def restore(self, payload: str) -> None: ...

    async def save(self) -> str: ...

    async def cleanup(self, *, owned: Callable[[str], bool] = ...) -> int: ...


# -- pure: reading iptables-save, writing the cleanup payload ----------------
def parse_state(save_text: str) -> KernelState:
    """Our chains (by table) and our jumps from built-in chains in ``iptables-save`` output."""
    table = ""
    chains: set[tuple[str, str]] = set()
    jumps: set[tuple[str, str, str]] = set()
    for line in save_text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if has_our_prefix(name):
                chains.add((table, name))
        elif line.startswith("-A "):
            chain = line.split()[1]
            m = _JUMP_RE.search(line)
            if chain in BUILTIN_CHAINS and m and has_our_prefix(m.group(1)):
                jumps.add((table, chain, m.group(1)))
    return KernelState(chains=frozenset(chains), jumps=frozenset(jumps))


def cleanup_payload(save_text: str, *, owned: Callable[[str], bool] = has_our_prefix) -> str:
    """Delete our jumps from built-in chains, then flush and delete every chain of ours (``owned``)."""
    per_table: dict[str, tuple[list[str], list[str]]] = {}
    table = ""
    for line in save_text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            per_table.setdefault(table, ([], []))
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if owned(name):
                per_table[table][0].append(name)
        elif line.startswith("-A "):
            chain = line.split()[1]
            m = _JUMP_RE.search(line)
            if chain in BUILTIN_CHAINS and m and owned(m.group(1)):
                per_table[table][1].append("-D" + line[2:])
    out: list[str] = []
    for name, (ours, deletes) in per_table.items():
        if not ours and not deletes:
            continue
        out.append(f"*{name}")
        out.extend(f":{c} - [0:0]" for c in ours)
        out.extend(deletes)
        out.extend(f"-X {c}" for c in ours)
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


# -- the real thing -----------------------------------------------------------
class RealIPTables:
    """``iptables-restore`` / ``iptables-save`` of the current netns, or of ``netns``."""

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
        parts = [await self._run(self._argv("iptables-save", "-t", table)) for table in TABLES]
        return "".join(parts)

    async def cleanup(self, *, owned: Callable[[str], bool] = has_our_prefix) -> int:
        """Remove every KUBE-/KUBEPY- chain (or every ``owned`` one) and the jumps to them; the number removed."""
        text = await self.save()
        payload = cleanup_payload(text, owned=owned)
        if payload:
            await self.restore(payload)
        removed = sum(1 for _t, c in parse_state(text).chains if owned(c))
        log.info("iptables cleanup netns=%s chains_removed=%d", self.netns or "-", removed)
        return removed


# -- the fake -----------------------------------------------------------------
@dataclass
class FakeIPTables:
    """Records every payload; ``fail_next`` makes that many restores fail.

    Keeps a model of our chains and built-in jumps so ``save()`` answers
    the way iptables-save would for them (rules are not modelled)."""

    restores: list[str] = field(default_factory=list)
    saves: int = 0
    fail_next: int = 0
    chains: set[tuple[str, str]] = field(default_factory=set)
    jumps: set[tuple[str, str, str]] = field(default_factory=set)

    async def restore(self, payload: str) -> None:
        self.restores.append(payload)
        if self.fail_next:
            self.fail_next -= 1
            raise IPTablesError(["iptables-restore", "--noflush", "-w"], 1, "fake failure")
        table = ""
        for line in payload.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                self.chains.add((table, line[1:].split()[0]))
            elif line.startswith("-X "):
                self.chains.discard((table, line.split()[1]))
            elif line.startswith(("-I ", "-A ", "-D ")):
                chain = line.split()[1]
                m = _JUMP_RE.search(line)
                if chain in BUILTIN_CHAINS and m:
                    jump = (table, chain, m.group(1))
                    if line.startswith("-D "):
                        self.jumps.discard(jump)
                    else:
                        self.jumps.add(jump)

    async def save(self) -> str:
        self.saves += 1
        out: list[str] = []
        for table in TABLES:
            out.append(f"*{table}")
            out.extend(f":{c} - [0:0]" for t, c in sorted(self.chains) if t == table)
            out.extend(f"-A {c} -j {target}" for t, c, target in sorted(self.jumps) if t == table)
            out.append("COMMIT")
        return "\n".join(out) + "\n"

    async def cleanup(self, *, owned: Callable[[str], bool] = has_our_prefix) -> int:
        text = await self.save()
        payload = cleanup_payload(text, owned=owned)
        if payload:
            await self.restore(payload)
        return sum(1 for _t, c in parse_state(text).chains if owned(c))

    @property
    def last(self) -> str:
        return self.restores[-1]
