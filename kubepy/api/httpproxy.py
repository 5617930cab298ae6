"""``pods/proxy``, ``services/proxy``, ``nodes/proxy``: HTTP to a pod, a Service or a kubelet.

Paths as Kubernetes serves them (and ``kubectl proxy`` users type them)::

    /api/v1/namespaces/NS/pods/[SCHEME:]NAME[:PORT]/proxy/PATH
    /api/v1/namespaces/NS/services/[SCHEME:]NAME[:PORT]/proxy/PATH    PORT: number or port name
    /api/v1/nodes/NAME[:PORT]/proxy/PATH

The API server may not reach pod addresses (in the lab it runs outside every
node), so a pod or Service request goes to the kubelet of the chosen pod's
node, which makes the request to the pod (``GET|POST|... /proxy/SCHEME/NS/
POD/PORT/PATH`` on the kubelet). A Service picks a ready endpoint at random.
A node request goes to that kubelet's own endpoints.

Responses stream back. As Kubernetes does, absolute paths in HTML pages
(``href="/x"``) and in a redirect's ``Location`` are rewritten under the
proxy prefix, so a page served at ``/`` keeps working behind it.

Pure parts: ``parse_proxy_name``, ``service_backend``, ``rewrite_html``,
``rewrite_location``. Errors are ``kubepy.api.errors``.
"""

from __future__ import annotations

import random
import re
import urllib.parse
from typing import Any

import aiohttp
from aiohttp import web

from kubepy.api import errors
from kubepy.api.proxy import KubeletTLS, _kubelet_refused, _session, _unreachable, kubelet_base_url

__all__ = ["parse_proxy_name", "proxy_to_kubelet", "rewrite_html", "rewrite_location", "service_backend"]

KUBELET_ERROR_HEADER = "X-Kubepy-Kubelet-Error"  # set by the kubelet on its own errors (kubepy.kubelet.server)

# Hop-by-hop headers (RFC 7230 6.1) and what the API server sets itself.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "authorization", "content-length"}

# Kubernetes' table of attributes that hold URLs (apimachinery's proxy transport).
_URL_ATTRS = ("href", "src", "action", "formaction", "cite", "background", "codebase", "classid", "data",
              "icon", "longdesc", "manifest", "poster", "profile", "usemap")
_ATTR_RE = re.compile(r"""(?P<pre>\s(?:%s)\s*=\s*)(?P<q>["']?)(?P<url>/(?!/)[^"'\s>]*)(?P=q)""" % "|".join(_URL_ATTRS),
                      re.IGNORECASE)


def parse_proxy_name(raw: str) -> tuple[str, str, str]:
    """``[scheme:]name[:port]`` → (scheme, name, port); scheme defaults to http, port to ''."""
    parts = raw.split(":")
    if len(parts) == 3:
        scheme, name, port = parts
    elif len(parts) == 2:
        if parts[0] in ("http", "https"):
            scheme, name, port = parts[0], parts[1], ""
        else:
            scheme, (name, port) = "", parts
    elif len(parts) == 1:
        scheme, name, port = "", parts[0], ""
    else:
        raise errors.BadRequest(f"invalid proxy target {raw!r}: want [scheme:]name[:port]")
    if scheme not in ("", "http", "https"):
        raise errors.BadRequest(f"invalid scheme {scheme!r}: http or https")
    return scheme or "http", name, port


def kubelet_port(node: dict[str, Any]) -> int:
    return int(urllib.parse.urlsplit(kubelet_base_url(node)).port or 10250)


def pod_port(pod: dict[str, Any], port: str) -> int:
    """A pod's port by number or by a container port's name; '' is 80, as Kubernetes."""
    if not port:
        return 80
    if port.isdigit():
        return int(port)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
    raise errors.BadRequest(f'pod {pod["metadata"]["name"]} has no port named "{port}"')


def service_backend(svc: dict[str, Any], endpoints: dict[str, Any] | None, port: str,
                    rng: random.Random | None = None) -> tuple[str, str, int]:
    """A ready endpoint of ``svc`` for ``port`` (name or number): (pod namespace, pod name, target port)."""
    name = svc["metadata"]["name"]
    ports = (svc.get("spec") or {}).get("ports") or []
    if port:
        chosen = next((p for p in ports if p.get("name") == port or str(p.get("port")) == port), None)
    else:
        chosen = ports[0] if len(ports) == 1 else None
        if chosen is None and ports:
            raise errors.BadRequest(f'service "{name}" has several ports: name one (services/{name}:PORT/proxy)')
    if chosen is None:
        raise errors.NotFound(f'no service port "{port}" found for service "{name}"')
    candidates: list[tuple[str, str, int]] = []
    for subset in (endpoints or {}).get("subsets") or []:
        sub_ports = subset.get("ports") or []
        ep_port = next((p for p in sub_ports if p.get("name", "") == chosen.get("name", "")), None)
        if ep_port is None and len(sub_ports) == 1:
            ep_port = sub_ports[0]
        if ep_port is None:
            continue
        for addr in subset.get("addresses") or []:   # ready ones only: notReadyAddresses are skipped
            ref = addr.get("targetRef") or {}
            if ref.get("kind") == "Pod" and ref.get("name"):
                candidates.append((ref.get("namespace") or svc["metadata"]["namespace"], ref["name"],
                                   int(ep_port["port"])))
    if not candidates:
        raise errors.ServiceUnavailable(f'no endpoints available for service "{name}"')
    return (rng or random).choice(candidates)


def rewrite_html(body: str, prefix: str) -> str:
    """Absolute paths in URL attributes, under ``prefix`` (no trailing slash)."""
    return _ATTR_RE.sub(lambda m: f"{m['pre']}{m['q']}{prefix}{m['url']}{m['q']}", body)


def rewrite_location(location: str, prefix: str, backend_host: str) -> str:
    """A redirect to an absolute path, or to the backend itself, stays behind the proxy."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme and parts.netloc != backend_host:
        return location   # elsewhere: leave it
    if not parts.path.startswith("/"):
        return location
    return urllib.parse.urlunsplit(("", "", prefix + parts.path, parts.query, parts.fragment))


async def proxy_to_kubelet(request: web.Request, *, node: dict[str, Any], kubelet: KubeletTLS, kubelet_path: str,
                           prefix: str, backend_host: str) -> web.StreamResponse:
    """Send ``request`` to ``kubelet_path`` on the node's kubelet; stream the answer back, rewritten."""
    node_name = node["metadata"]["name"]
    url = kubelet_base_url(node) + kubelet_path
    if request.query_string:
        url += "?" + request.query_string
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    body = await request.read() if request.body_exists else None
    async with _session(kubelet) as session:
        try:
            upstream = await session.request(request.method, url, headers=headers, data=body,
                                             allow_redirects=False, auto_decompress=False,
                                             **kubelet.connect_args(node_name))
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise _unreachable(node_name, url, e) from e
        async with upstream:
            if upstream.headers.get(KUBELET_ERROR_HEADER):
                raise _kubelet_refused(node_name, upstream.status, await upstream.read())
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            if "Location" in out_headers:
                out_headers["Location"] = rewrite_location(out_headers["Location"], prefix, backend_host)
            ctype = upstream.headers.get("Content-Type", "")
            if ctype.startswith("text/html") and not upstream.headers.get("Content-Encoding"):
                raw = await upstream.read()
                charset = upstream.charset or "utf-8"
                text = rewrite_html(raw.decode(charset, errors="surrogateescape"), prefix)
                return web.Response(status=upstream.status, headers=out_headers,
                                    body=text.encode(charset, errors="surrogateescape"))
            resp = web.StreamResponse(status=upstream.status, headers=out_headers)
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp
