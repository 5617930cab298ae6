"""ClusterIPs and node ports reserved in the store, so several API servers never hand out the same one.

Each API server's ``ServiceAllocator`` keeps a view of what the stored
Services hold, built from the services watch; two servers picking at the
same moment see the same view, so the view alone cannot decide. The store
decides: every held address or port is a key of its own,

    /registry/ranges/serviceips/<ip>
    /registry/ranges/servicenodeports/<protocol>/<port>

created only if absent (the store's create is a compare-and-swap on "no
such key", etcd's ``version == 0``), its value naming the Service that
holds it. Upstream reaches the same end with one IPAddress object per
ClusterIP and a compare-and-swapped bitmap for node ports.

A reservation is made before the Service is written, and dropped again if
that write fails; it is dropped after a write that lets it go (the Service
deleted, or no longer a NodePort). A server that dies in between leaves a
reservation no Service holds: ``repair`` drops those once they are older
than ``LEAK_GRACE`` (upstream's repair controllers do the same), and
creates the ones missing for Services stored before reservations existed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any, Union

from kubepy.store import ConflictError, KeyExistsError, KeyNotFoundError, Store

log = logging.getLogger(__name__)

__all__ = ["IP_PREFIX", "PORT_PREFIX", "Reservations", "Taken", "held", "item_key"]

IP_PREFIX = "/registry/ranges/serviceips/"
PORT_PREFIX = "/registry/ranges/servicenodeports/"
LEAK_GRACE = 60.0  # seconds: far longer than any create or update of a Service takes

# A ClusterIP ("10.96.0.12") or a node port (("TCP", 30080)).
Item = Union[str, tuple[str, int]]


class Taken(Exception):
    """``item`` is reserved by another Service (``holder``, its store key)."""

    def __init__(self, item: Item, holder: str) -> None:
        super().__init__(f"{item} is held by {holder}")
        self.item, self.holder = item, holder


def item_key(item: Item) -> str:
    if isinstance(item, str):
        return IP_PREFIX + item
    proto, port = item
    return f"{PORT_PREFIX}{proto}/{port}"


def _item_of(key: str) -> Item:
    if key.startswith(IP_PREFIX):
        return key[len(IP_PREFIX):]
    proto, port = key[len(PORT_PREFIX):].split("/", 1)
    return proto, int(port)


def held(svc: dict[str, Any] | None) -> set[Item]:
    """Every ClusterIP and node port ``svc`` holds."""
    if not svc:
        return set()
    spec = svc.get("spec") or {}
    out: set[Item] = {ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"}
    out |= {(p.get("protocol", "TCP"), int(p["nodePort"])) for p in spec.get("ports") or [] if p.get("nodePort")}
    if spec.get("healthCheckNodePort"):
        out.add(("TCP", int(spec["healthCheckNodePort"])))
    return out


def _holder(value: bytes) -> str:
    try:
        return str(json.loads(value).get("service", ""))
    except (ValueError, AttributeError):
        return ""


def _created(value: bytes) -> float:
    try:
        return float(json.loads(value).get("created", 0))
    except (ValueError, AttributeError, TypeError):
        return 0.0


class Reservations:
    def __init__(self, store: Store, *, clock=time.time) -> None:
        self.store, self.clock = store, clock

    async def reserve(self, holder: str, items: Iterable[Item]) -> list[Item]:
        """Reserves every item for ``holder``; returns the ones this call created (an
        item already reserved for ``holder`` is kept, not returned: it is not this
        call's to release). Raises Taken, having released what it created, if one
        is another Service's."""
        made: list[Item] = []
        value = json.dumps({"service": holder, "created": self.clock()}).encode()
        try:
            for item in sorted(items, key=str):
                key = item_key(item)
                try:
                    await self.store.create(key, value)
                    made.append(item)
                except KeyExistsError:
                    kv = await self.store.get(key)
                    if kv is None:  # released in between: try once more
                        await self.store.create(key, value)
                        made.append(item)
                    elif _holder(kv.value) != holder:
                        raise Taken(item, _holder(kv.value)) from None
        except BaseException:
            await self.release(holder, made)
            raise
        return made

    async def release(self, holder: str, items: Iterable[Item]) -> None:
        """Drops the reservations of ``items`` that ``holder`` holds (never another's)."""
        for item in items:
            key = item_key(item)
            kv = await self.store.get(key)
            if kv is None or _holder(kv.value) != holder:
                continue
            try:
                await self.store.delete(key, revision=kv.mod_revision)
            except (ConflictError, KeyNotFoundError):
                pass

    async def holders(self) -> dict[Item, str]:
        """Every reserved item and the Service key holding it, as the store has them now."""
        return {_item_of(kv.key): _holder(kv.value) for kv in await self._reserved()}

    async def _reserved(self) -> list[Any]:
        """Every reservation's key-value, addresses then ports."""
        return [kv for prefix in (IP_PREFIX, PORT_PREFIX) for kv in await self.store.range_all(prefix, page=1000)]

    async def repair(self, services_prefix: str) -> tuple[int, int]:
        """(created, dropped): reservations made for Services that hold an item without
        one, and dropped where no Service holds it and it is older than LEAK_GRACE.
        Reservations are read before the Services, so a Service written after its
        reservation was made is always seen."""
        reserved: dict[Item, tuple[str, float, int]] = {}
        for kv in await self._reserved():
            reserved[_item_of(kv.key)] = (_holder(kv.value), _created(kv.value), kv.mod_revision)
        holders: dict[Item, str] = {}
        for kv in await self.store.range_all(services_prefix, page=1000):
            for item in held(json.loads(kv.value)):
                holders.setdefault(item, kv.key)
        created = dropped = 0
        now = self.clock()
        for item, svc in holders.items():
            if item not in reserved:
                try:
                    await self.store.create(item_key(item), json.dumps({"service": svc, "created": now}).encode())
                    created += 1
                except KeyExistsError:
                    pass
            elif reserved[item][0] != svc:
                log.warning("allocation held twice item=%s service=%s reserved_for=%s", item, svc, reserved[item][0])
        for item, (holder, made_at, rev) in reserved.items():
            if item in holders or now - made_at < LEAK_GRACE:
                continue
            try:
                await self.store.delete(item_key(item), revision=rev)
                dropped += 1
                log.info("dropped leaked reservation item=%s holder=%s age=%.0fs", item, holder, now - made_at)
            except (ConflictError, KeyNotFoundError):
                pass
        return created, dropped
