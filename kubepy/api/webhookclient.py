"""Calling one admission webhook: where it is, TLS, the POST of an AdmissionReview, and its answer.

Talks to the store (a Service and its Endpoints, read when a webhook is
called) and, over HTTPS with aiohttp, to the webhook. A ``service``
reference is resolved as upstream's endpoint resolver does
(apiserver/pkg/util/proxy ResolveEndpoint): the Service's port (by
number) names the Endpoints port, and one ready address is picked at
random; the certificate is verified against the webhook's ``caBundle``
for the name ``<service>.<namespace>.svc``. A ``url`` is called as
given, verified against ``caBundle`` or, without one, the system's
trusted roots. Upstream adds ``?timeout=<n>s`` to the path; so do we.

Errors (``CallError``) carry upstream's wording of ErrCallingWebhook's
reason; the admission plugin decides what failurePolicy makes of them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from kubepy.kinds import by_plural
from kubepy.store.base import Store

__all__ = ["CallError", "WebhookClient"]


MAX_RESPONSE_BYTES = 3 * 1024 * 1024  # an AdmissionReview answer larger than any object we store is refused


class CallError(Exception):
    """The webhook could not be called or gave no usable answer (upstream's ErrCallingWebhook reason)."""


def local_source(address: str | None) -> str | None:
    """``address`` if this host holds it (a webhook call may be sent from it), else None."""
    if not address:
        return None
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((address, 0))
    except OSError:
        return None
    return address


class WebhookClient:
    """``source``: the local address webhook calls are sent from (the API server's advertised address,
    so a lab host can route them to pod IPs by their source; see kubepy.lab.network)."""

    def __init__(self, store: Store, *, source: str | None = None) -> None:
        self.store = store
        self.source = local_source(source)
        self._session: aiohttp.ClientSession | None = None
        self._contexts: dict[str, ssl.SSLContext] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _ssl(self, ca_bundle: str) -> ssl.SSLContext:
        ctx = self._contexts.get(ca_bundle)
        if ctx is None:
            ctx = ssl.create_default_context()
            if ca_bundle:
                ctx = ssl.create_default_context(cadata=base64.b64decode(ca_bundle).decode())
            if len(self._contexts) > 64:
                self._contexts.clear()
            self._contexts[ca_bundle] = ctx
        return ctx

    async def _read(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        kv = await self.store.get(by_plural(plural).key(namespace, name))
        return json.loads(kv.value) if kv is not None else None

    async def resolve(self, svc_ref: dict[str, Any]) -> tuple[str, int]:
        """(pod IP, port) behind a webhook's Service, as upstream's ResolveEndpoint picks it."""
        ns, name, port = svc_ref.get("namespace") or "", svc_ref.get("name") or "", svc_ref.get("port") or 443
        svc = await self._read("services", ns, name)
        if svc is None:
            raise CallError(f'services "{name}" not found')
        spec = svc.get("spec") or {}
        kind = spec.get("type") or "ClusterIP"
        if kind not in ("ClusterIP", "LoadBalancer", "NodePort"):
            raise CallError(f'unsupported service type "{kind}"')
        svc_port = next((p for p in spec.get("ports") or [] if p.get("port") == port), None)
        if svc_port is None:
            raise CallError(f'no service port {port} found for service "{name}"')
        eps = await self._read("endpoints", ns, name)
        subsets = [s for s in (eps or {}).get("subsets") or [] if s.get("addresses")]
        random.shuffle(subsets)
        for subset in subsets:
            for p in subset.get("ports") or []:
                if (p.get("name") or "") == (svc_port.get("name") or ""):
                    address = random.choice(subset["addresses"])
                    return str(address["ip"]), int(p["port"])
        raise CallError(f'no endpoints available for service "{name}"')

    async def call(self, cc: dict[str, Any], review: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """POST ``review``; the AdmissionReview the webhook answers (checked to be one) within ``timeout``
        (finding the Service's endpoint included)."""
        try:
            async with asyncio.timeout(timeout):
                return await self._call(cc, review, timeout)
        except TimeoutError:
            shown = cc.get("url") or "https://{name}.{namespace}.svc:{port}{path}".format(
                name=(cc.get("service") or {}).get("name"), namespace=(cc.get("service") or {}).get("namespace"),
                port=(cc.get("service") or {}).get("port") or 443, path=(cc.get("service") or {}).get("path") or "/")
            raise CallError(f'failed to call webhook: Post "{shown}?timeout={int(timeout)}s": '
                            "context deadline exceeded") from None

    async def _call(self, cc: dict[str, Any], review: dict[str, Any], timeout: float) -> dict[str, Any]:
        query = f"?timeout={int(timeout)}s"
        server_hostname: str | None = None
        if cc.get("url"):
            u = urlsplit(cc["url"])
            url = f"{cc['url']}{query}"
        else:
            ref = cc.get("service") or {}
            ip, port = await self.resolve(ref)
            host = f"[{ip}]" if ":" in ip else ip
            path = ref.get("path") or "/"
            url = f"https://{host}:{port}{path}{query}"
            server_hostname = f"{ref.get('name')}.{ref.get('namespace')}.svc"
            u = urlsplit(f"https://{server_hostname}:{ref.get('port') or 443}{path}")
        shown = f"{u.scheme}://{u.netloc}{u.path}{query}"
        if self._session is None:
            connector = aiohttp.TCPConnector(local_addr=(self.source, 0) if self.source else None)
            self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        kwargs: dict[str, Any] = {"ssl": self._ssl(cc.get("caBundle") or "")}
        if server_hostname:
            kwargs["server_hostname"] = server_hostname
        try:
            async with self._session.post(url, json=review, headers={"Accept": "application/json"},
                                          **kwargs) as resp:
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise CallError(f"received invalid webhook response: larger than {MAX_RESPONSE_BYTES} bytes")
                    chunks.append(chunk)
                body = b"".join(chunks)
        except aiohttp.ClientError as e:
            raise CallError(f'failed to call webhook: Post "{shown}": {e}') from e
        except (OSError, ValueError) as e:
            raise CallError(f'failed to call webhook: Post "{shown}": {e}') from e
        if resp.status >= 300:
            raise CallError(f"failed to call webhook: an error on the server ({body[:200].decode(errors='replace')!r})"
                            f" has prevented the request from succeeding (HTTP {resp.status})")
        try:
            answer = json.loads(body)
        except ValueError as e:
            raise CallError(f"received invalid webhook response: {e}") from e
        if not isinstance(answer, dict) or not isinstance(answer.get("response"), dict):
            raise CallError("received invalid webhook response: no response in the AdmissionReview")
        sent, got = review["request"]["uid"], answer["response"].get("uid")
        if got != sent:
            raise CallError(f"expected response.uid={sent!r}, got {got!r}")
        if answer.get("kind") != "AdmissionReview" or answer.get("apiVersion") != review["apiVersion"]:
            raise CallError(f"expected webhook response of {review['apiVersion']}, Kind=AdmissionReview, got "
                            f"{answer.get('apiVersion')}, Kind={answer.get('kind')}")
        return answer["response"]
