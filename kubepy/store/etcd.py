"""etcd store backend: a real etcd 3.4+ cluster through its v3 JSON gateway.

Talks plain HTTP/JSON (``/v3/kv/range``, ``/v3/kv/txn``, ``/v3/kv/compaction``,
``/v3/watch``) with aiohttp, so no gRPC stack is needed.  In that JSON keys
and values are base64 and int64 fields are decimal strings; fields at their
zero value are left out.

Conditional writes are single transactions (compare create/mod revision, then
put or delete, else read the current value), so the etcd server decides every
race.  Requests fail over across endpoints; a backend nobody can reach is a
StoreUnavailableError.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from typing import Any, AsyncIterator

import aiohttp

from kubepy.tcp import dead_peer_socket
from kubepy.store.base import (
    CompactedError,
    ConflictError,
    Event,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    RangeResult,
    Store,
    StoreError,
    StoreUnavailableError,
)

log = logging.getLogger(__name__)

_REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=15, sock_connect=3)
# A watch lives as long as its reader wants; only connecting is bounded.
_WATCH_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=None)
_GRPC_UNAVAILABLE = 14
_GRPC_OUT_OF_RANGE = 11
# A key nothing lives under: watching it from revision 1 makes etcd report
# its compaction revision without sending any events.
_PROBE_KEY = "\x00kubepy/compaction-probe"


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _unb64(s: str | None) -> bytes:
    return base64.b64decode(s) if s else b""


def _prefix_end(prefix: str) -> str:
    """etcd range_end covering every key with ``prefix`` (base64)."""
    end = bytearray(prefix.encode())
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return _b64(bytes(end))
        end.pop()
    return _b64(b"\x00")  # etcd: "\0" means every key >= key


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=_unb64(raw.get("key")).decode(),
        value=_unb64(raw.get("value")),
        create_revision=int(raw.get("create_revision", 0)),
        mod_revision=int(raw.get("mod_revision", 0)),
    )


def _revision(resp: dict[str, Any]) -> int:
    return int(resp.get("header", {}).get("revision", 0))


def _compare(key: str, target: str, result: str, value: int) -> dict[str, Any]:
    field = {"CREATE": "create_revision", "MOD": "mod_revision"}[target]
    return {"key": _b64(key), "target": target, "result": result, field: str(value)}


class _EtcdError(Exception):
    """A gateway error response: gRPC status code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class EtcdStore(Store):
    """etcd semantics from etcd itself (see module docstring)."""

    def __init__(self, endpoints: list[str], *, ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None) -> None:
        """``ca_file`` (and a client ``cert_file``/``key_file`` for etcd's --client-cert-auth):
        talk TLS to https:// endpoints, as the API server's --etcd-cafile/--etcd-certfile/--etcd-keyfile."""
        if not endpoints:
            raise ValueError("EtcdStore needs at least one endpoint")
        if (cert_file is None) != (key_file is None):
            raise ValueError("an etcd client certificate needs its key, and a key its certificate")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._preferred = 0  # index of the endpoint that last answered
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None
        if ca_file or cert_file:
            self._ssl = ssl.create_default_context(cafile=ca_file)
            if cert_file and key_file:
                self._ssl.load_cert_chain(cert_file, key_file)

    # -------------------------------------------------------------- transport

    def _http(self) -> aiohttp.ClientSession:
        # Created lazily: a session binds to the running loop.
        if self._session is None or self._session.closed:
            # A member cut off answers nothing: the connection (a watch above all) must notice.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                ssl=self._ssl if self._ssl is not None else True, socket_factory=dead_peer_socket))
        return self._session

    def _rotation(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._preferred + i) % n for i in range(n)]

    async def _post(self, path: str, body: dict[str, Any], *, idempotent: bool = True) -> dict[str, Any]:
        """POST to the first endpoint that answers.  A write is retried on
        another endpoint only when the connection never opened, because a
        write that may have reached etcd must not be applied twice."""
        last_error: Exception | None = None
        for i in self._rotation():
            url = self.endpoints[i] + path
            try:
                async with self._http().post(url, json=body, timeout=_REQUEST_TIMEOUT) as resp:
                    data = await resp.json(content_type=None)
            except aiohttp.ClientConnectorError as e:
                last_error = e
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
                last_error = e
                if not idempotent:
                    break
            else:
                if resp.status == 200:
                    self._preferred = i
                    return data
                err = _EtcdError(int(data.get("code", 0)), str(data.get("message") or data.get("error")))
                if err.code != _GRPC_UNAVAILABLE:
                    raise err
                last_error = err
            log.warning("etcd request failed endpoint=%s path=%s error=%r", self.endpoints[i], path, last_error)
        raise StoreUnavailableError(f"etcd unreachable ({path}): {last_error}")

    async def _call(self, path: str, body: dict[str, Any], *, idempotent: bool = True) -> dict[str, Any]:
        try:
            return await self._post(path, body, idempotent=idempotent)
        except _EtcdError as e:
            if e.code == _GRPC_OUT_OF_RANGE and "compacted" in e.message:
                raise CompactedError(e.message, await self._compact_revision()) from e
            raise StoreError(f"etcd {path}: {e.message}") from e

    async def _txn(self, compare: list[dict], success: list[dict], failure: list[dict]) -> dict[str, Any]:
        body = {"compare": compare, "success": success, "failure": failure}
        return await self._call("/v3/kv/txn", body, idempotent=False)

    # ------------------------------------------------------------------ reads

    async def get(self, key: str) -> KeyValue | None:
        resp = await self._call("/v3/kv/range", {"key": _b64(key)})
        kvs = resp.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    async def range(
        self, prefix: str, *, start: str | None = None, limit: int = 0, revision: int = 0
    ) -> RangeResult:
        first = start if start is not None and start > prefix else prefix
        body: dict[str, Any] = {"key": _b64(first), "range_end": _prefix_end(prefix)}
        if limit > 0:
            body["limit"] = str(limit)
        if revision > 0:
            body["revision"] = str(revision)
        resp = await self._call("/v3/kv/range", body)
        return RangeResult(
            kvs=[_kv(raw) for raw in resp.get("kvs") or []],
            # A read at a past revision saw that revision, not the header's.
            revision=revision if revision > 0 else _revision(resp),
            more=bool(resp.get("more", False)),
        )

    async def current_revision(self) -> int:
        resp = await self._call("/v3/kv/range", {"key": _b64(_PROBE_KEY), "count_only": True})
        return _revision(resp)

    # ----------------------------------------------------------------- writes

    async def create(self, key: str, value: bytes) -> KeyValue:
        resp = await self._txn(
            [_compare(key, "CREATE", "EQUAL", 0)],
            [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
            [],
        )
        if not resp.get("succeeded"):
            raise KeyExistsError(f"key {key!r} exists")
        rev = _revision(resp)
        return KeyValue(key, bytes(value), rev, rev)

    async def update(self, key: str, value: bytes, *, revision: int) -> KeyValue:
        resp = await self._txn(
            # CREATE > 0 too: a missing key has mod_revision 0, which must not
            # let an update with revision 0 create it.
            [_compare(key, "CREATE", "GREATER", 0), _compare(key, "MOD", "EQUAL", revision)],
            [{"request_put": {"key": _b64(key), "value": _b64(value), "prev_kv": True}}],
            [{"request_range": {"key": _b64(key)}}],
        )
        if not resp.get("succeeded"):
            raise self._write_failed(key, revision, resp)
        prev = resp["responses"][0].get("response_put", {}).get("prev_kv", {})
        return KeyValue(key, bytes(value), int(prev.get("create_revision", 0)), _revision(resp))

    async def delete(self, key: str, *, revision: int | None = None) -> KeyValue:
        guard = [_compare(key, "CREATE", "GREATER", 0)]
        if revision is not None:
            guard.append(_compare(key, "MOD", "EQUAL", revision))
        resp = await self._txn(
            guard,
            [{"request_delete_range": {"key": _b64(key), "prev_kv": True}}],
            [{"request_range": {"key": _b64(key)}}],
        )
        if not resp.get("succeeded"):
            raise self._write_failed(key, revision, resp)
        prevs = resp["responses"][0].get("response_delete_range", {}).get("prev_kvs") or []
        if not prevs:
            raise KeyNotFoundError(f"key {key!r} not found")
        prev = _kv(prevs[0])
        return KeyValue(key, prev.value, prev.create_revision, _revision(resp))

    @staticmethod
    def _write_failed(key: str, revision: int | None, resp: dict[str, Any]) -> StoreError:
        kvs = resp["responses"][0].get("response_range", {}).get("kvs") or []
        if not kvs:
            return KeyNotFoundError(f"key {key!r} not found")
        current = _kv(kvs[0])
        return ConflictError(f"key {key!r} is at revision {current.mod_revision}, not {revision}", current)

    async def compact(self, revision: int) -> None:
        try:
            # physical: return only once the history is really gone, so reads
            # right after see the compaction.
            await self._post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        except _EtcdError as e:
            if "compacted" in e.message:
                return  # already compacted at or past ``revision``
            raise StoreError(f"etcd compaction to {revision}: {e.message}") from e
        log.info("etcd compacted revision=%d", revision)

    # ------------------------------------------------------------------ watch

    async def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[Event]:
        # etcd refuses a watch only *below* its compaction revision, while
        # the contract refuses at-or-below (a delete at exactly the compaction
        # revision is gone).  Asking from one revision earlier makes etcd
        # apply the contract's rule; the extra revision is dropped below.
        ask = max(start_revision - 1, 1) if start_revision > 0 else 0
        resp = await self._open_watch(prefix, ask)
        try:
            async for result in _results(resp):
                compact_rev = int(result.get("compact_revision", 0))
                if compact_rev:
                    raise CompactedError(
                        f"watch from revision {start_revision} is compacted (at {compact_rev})", compact_rev
                    )
                if result.get("canceled"):
                    raise StoreUnavailableError(f"etcd canceled the watch: {result.get('cancel_reason', '')}")
                for raw in result.get("events") or []:
                    event = _event(raw)
                    if event.kv.mod_revision >= start_revision:
                        yield event
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise StoreUnavailableError(f"etcd watch broke: {e}") from e
        finally:
            resp.close()  # drops the connection; etcd then cancels the watch

    async def _open_watch(self, prefix: str, start_revision: int) -> aiohttp.ClientResponse:
        request: dict[str, Any] = {"key": _b64(prefix), "range_end": _prefix_end(prefix), "prev_kv": True}
        if start_revision > 0:
            request["start_revision"] = str(start_revision)
        last_error: Exception | None = None
        for i in self._rotation():
            url = self.endpoints[i] + "/v3/watch"
            try:
                resp = await self._http().post(url, json={"create_request": request}, timeout=_WATCH_TIMEOUT)
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                last_error = e
                log.warning("etcd watch failed endpoint=%s error=%r", self.endpoints[i], e)
                continue
            if resp.status != 200:
                last_error = StoreError(f"etcd watch status={resp.status} body={await resp.text()}")
                resp.close()
                continue
            self._preferred = i
            return resp
        raise StoreUnavailableError(f"etcd unreachable (watch): {last_error}")

    async def _compact_revision(self) -> int:
        """etcd's compaction revision (0 if unknown).  Only called after etcd
        said a revision was compacted, so the probe watch from revision 1 is
        refused at once and carries the number."""
        try:
            resp = await self._open_watch(_PROBE_KEY, 1)
        except StoreError:
            return 0
        try:
            async with asyncio.timeout(5):
                async for result in _results(resp):
                    compact_rev = int(result.get("compact_revision", 0))
                    if compact_rev or result.get("canceled"):
                        return compact_rev
        except (aiohttp.ClientError, TimeoutError, StoreError):
            pass
        finally:
            resp.close()
        return 0

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _event(raw: dict[str, Any]) -> Event:
    kv = raw.get("kv", {})
    prev = _kv(raw["prev_kv"]) if raw.get("prev_kv") else None
    if raw.get("type") == "DELETE":
        # etcd's delete event has only key and revision; the deleted value
        # and its create_revision come from prev_kv.
        mod = int(kv.get("mod_revision", 0))
        key = _unb64(kv.get("key")).decode()
        deleted = KeyValue(key, prev.value if prev else b"", prev.create_revision if prev else 0, mod)
        return Event("DELETE", deleted, prev)
    return Event("PUT", _kv(kv), prev)


async def _results(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The gateway streams one JSON object per line: {"result": {...}} or
    {"error": {...}}."""
    buffer = b""
    async for chunk in resp.content.iter_any():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            message = json.loads(line)
            if "error" in message:
                error = message["error"]
                raise StoreUnavailableError(f"etcd watch error: {error.get('message', error)}")
            yield message.get("result", {})
    raise StoreUnavailableError("etcd closed the watch stream")
