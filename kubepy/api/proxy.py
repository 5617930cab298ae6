"""pods/log, pods/exec, pods/attach and pods/portforward: the API server's side of the kubelet connection.

The API server's ``subresource()`` handler authorizes the request, reads the
pod and its node, and calls ``proxy_pod_subresource``. This
module talks to exactly one thing, the kubelet's HTTPS endpoint on the pod's
node (``https://<InternalIP>:<daemonEndpoints.kubeletEndpoint.Port>``):

- ``log``: ``GET /containerLogs/{ns}/{pod}/{container}?<query>``; the body is
  streamed back as it comes (``kubectl logs -f`` too).
- ``portforward``: kubectl's WebSocket carrying SPDY (``SPDY/3.1+portforward.k8s.io``),
  or the Python client's channel WebSocket (``v4.channel.k8s.io``, the ports
  from ``?ports=``, passed on as the kubelet's ``?port=``), is joined, message
  for message, to the same WebSocket on the kubelet's ``/portForward``; the
  kubelet speaks the protocol (``kubepy.kubelet.portforward``, ``wsportforward``).
- ``exec``: kubectl's WebSocket (``v5.channel.k8s.io``/``v4.channel.k8s.io``) is
  accepted here and joined to a WebSocket to the kubelet's ``/exec`` with
  the same query and subprotocol; frames are pumped both ways until either
  side closes. SPDY (the POST fallback of older kubectl) is refused.
- ``attach``: the same as exec, to the kubelet's ``/attach`` (no ``command``).

The API server authenticates to the kubelet with its own client certificate
(``KubeletTLS``: ``kube-apiserver-kubelet-client``, bound to
``system:kubelet-api-admin``; the kubelet asks the API server whether it may) and
verifies the kubelet's serving certificate against the cluster CA *and* the node's
name (the kubelet has it signed with its name as the only DNS name: a node cannot
pass for another), as ``--kubelet-certificate-authority`` does upstream. Errors are ``kubepy.api.errors`` (rendered as Status by the
server): pod not on a node → 400, kubelet unreachable or refusing → 503.
Once kubectl's WebSocket is open, errors go to it as a Failure Status on
channel 3, which kubectl prints.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from kubepy.api import errors

log = logging.getLogger(__name__)

__all__ = ["EXEC_PROTOCOLS", "KubeletTLS", "choose_container", "kubelet_base_url", "kubelet_tls",
           "proxy_pod_subresource"]

EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
PORTFORWARD_TUNNEL = "SPDY/3.1+portforward.k8s.io"   # SPDY bytes in WebSocket messages (kubectl 1.31+)
PORTFORWARD_CHANNELS = "v4.channel.k8s.io"             # port i on channels 2i/2i+1 (the Python client)
DEFAULT_KUBELET_PORT = 10250
ADDRESS_PREFERENCE = ("InternalIP", "ExternalIP", "Hostname", "InternalDNS", "ExternalDNS")
CONNECT_TIMEOUT = 5.0
IDLE_CHECK = 1.0          # seconds between "is the client still there?" while a log is quiet
LOG_QUERY = ("follow", "previous", "timestamps", "tailLines", "limitBytes", "sinceSeconds", "sinceTime", "stream")
EXEC_QUERY = ("command", "stdin", "stdout", "stderr", "tty")
ATTACH_QUERY = ("stdin", "stdout", "stderr", "tty")
ERROR_CHANNEL = 3


@dataclass(frozen=True)
class KubeletTLS:
    """How the API server connects to kubelets: a client context with its own certificate that
    verifies theirs (``verify`` False: a test stand-in whose kubelet is self-signed)."""
    context: ssl.SSLContext
    verify: bool = True

    def connect_args(self, node_name: str) -> dict[str, Any]:
        return {"server_hostname": node_name} if self.verify else {}


def kubelet_tls(*, ca_pem: bytes, client_cert: tuple[bytes, bytes], verify: bool = True) -> KubeletTLS:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    if not verify:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    import os
    import tempfile
    fd, name = tempfile.mkstemp(prefix="kubepy-kubelet-client-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(client_cert[0].rstrip(b"\n") + b"\n" + client_cert[1])
        ctx.load_cert_chain(name)
    finally:
        os.unlink(name)
    return KubeletTLS(ctx, verify)


async def proxy_pod_subresource(request: web.Request, *, sub: str, pod: dict[str, Any],
                                node: dict[str, Any] | None, kubelet: KubeletTLS) -> web.StreamResponse:
    """Serve ``pods/log`` (GET) or ``pods/exec``/``pods/attach`` (GET + WebSocket upgrade) through the pod's kubelet."""
    name = pod["metadata"]["name"]
    namespace = pod["metadata"].get("namespace", "default")
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        raise errors.BadRequest(f"pod {name} does not have a host assigned")
    if node is None:
        raise errors.NotFound(f'nodes "{node_name}" not found')
    base = kubelet_base_url(node)
    if sub == "portforward":
        if request.method == "POST" or request.headers.get("Upgrade", "").lower().startswith("spdy"):
            raise errors.BadRequest("kubepy serves pods/portforward as SPDY over WebSockets only "
                                    f"({PORTFORWARD_TUNNEL}); use kubectl >= 1.31 and do not set "
                                    "KUBECTL_PORT_FORWARD_WEBSOCKETS=false")
        pod_args = "/".join(urllib.parse.quote(p, safe="") for p in (namespace, name))
        query = ""
        if "ports" in request.query:
            query = "?" + urllib.parse.urlencode([("port", p) for p in portforward_ports(request)])
        return await _proxy_websocket(request, f"{base}/portForward/{pod_args}{query}", kubelet, node_name,
                                      protocols=(PORTFORWARD_TUNNEL, PORTFORWARD_CHANNELS),
                                      what="pods/portforward")
    container = choose_container(pod, request.query.get("container") or None, sub=sub)
    path_args = "/".join(urllib.parse.quote(p, safe="") for p in (namespace, name, container))
    if sub == "log":
        if request.method != "GET":
            raise errors.MethodNotAllowed(f"{request.method} is not supported on pods/log")
        url = f"{base}/containerLogs/{path_args}?{_query(request, LOG_QUERY)}"
        return await _proxy_log(request, url, kubelet, node_name)
    if sub in ("exec", "attach"):
        if request.method == "POST" or request.headers.get("Upgrade", "").lower().startswith("spdy"):
            raise errors.BadRequest(f"kubepy serves pods/{sub} over WebSockets only (" + ", ".join(EXEC_PROTOCOLS)
                                    + "); SPDY is not supported: use kubectl >= 1.30 and do not set "
                                      "KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false")
        query = EXEC_QUERY if sub == "exec" else ATTACH_QUERY
        url = f"{base}/{sub}/{path_args}?{_query(request, query)}"
        return await _proxy_exec(request, url, kubelet, node_name, what=f"pods/{sub}")
    raise errors.NotFound(f"the server could not find the requested resource (pods/{sub})")


def portforward_ports(request: web.Request) -> list[int]:
    """PodPortForwardOptions.ports: repeated ``ports`` values, each may be a comma list (as
    apimachinery's Convert_Slice_string_To_Slice_int32 reads them)."""
    ports = []
    for value in request.query.getall("ports", []):
        for p in value.split(","):
            if not p.isdigit() or not 0 < int(p) < 65536:
                raise errors.BadRequest(f"cannot convert to []int32: invalid port {p!r}")
            ports.append(int(p))
    return ports


def choose_container(pod: dict[str, Any], requested: str | None, *, sub: str = "log") -> str:
    """The container named by ``?container=``, or the pod's only one (Kubernetes' messages)."""
    spec = pod.get("spec") or {}
    name = pod["metadata"]["name"]
    regular = [c["name"] for c in spec.get("containers") or []]
    init = [c["name"] for c in spec.get("initContainers") or []]
    ephemeral = [c["name"] for c in spec.get("ephemeralContainers") or []]
    if requested is None:
        if len(regular) == 1:
            return regular[0]
        message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(regular)}]"
        if init:
            message += f" or one of the init containers: [{' '.join(init)}]"
        raise errors.BadRequest(message)
    if requested not in regular + init + ephemeral:
        raise errors.BadRequest(f"container {requested} is not valid for pod {name}")
    return requested


def kubelet_base_url(node: dict[str, Any]) -> str:
    """``https://host:port`` of a node's kubelet, from its status."""
    status = node.get("status") or {}
    node_name = node["metadata"]["name"]
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or [] if a.get("address")}
    host = next((addresses[t] for t in ADDRESS_PREFERENCE if t in addresses), None)
    if host is None:
        raise errors.ServiceUnavailable(f'node "{node_name}" reports no address for its kubelet')
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or DEFAULT_KUBELET_PORT
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{port}"


def _query(request: web.Request, names: tuple[str, ...]) -> str:
    return urllib.parse.urlencode([(k, v) for k, v in request.query.items() if k in names])


def _session(kubelet: KubeletTLS) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=kubelet.context),
        timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT),
    )


def _unreachable(node_name: str, url: str, e: BaseException) -> errors.APIError:
    return errors.ServiceUnavailable(f'error dialing the kubelet on node "{node_name}" '
                                     f"({urllib.parse.urlsplit(url).netloc}): {e or type(e).__name__}")


def _kubelet_refused(node_name: str, status: int, body: bytes) -> errors.APIError:
    try:
        message = json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace").strip() or f"HTTP {status}"
    if status in (401, 403):
        return errors.ServiceUnavailable(f'the kubelet on node "{node_name}" refused the API server\'s '
                                         f"credentials ({status}): {message}")
    cls = {400: errors.BadRequest, 404: errors.NotFound}.get(status, errors.ServiceUnavailable)
    return cls(message)


async def _proxy_log(request: web.Request, url: str, kubelet: KubeletTLS, node_name: str) -> web.StreamResponse:
    async with _session(kubelet) as session:
        try:
            upstream = await session.get(url, **kubelet.connect_args(node_name))
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise _unreachable(node_name, url, e) from e
        async with upstream:
            if upstream.status != 200:
                raise _kubelet_refused(node_name, upstream.status, await upstream.read())
            resp = web.StreamResponse(headers={"Content-Type": upstream.headers.get("Content-Type", "text/plain")})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            try:
                while True:
                    try:
                        chunk = await asyncio.wait_for(upstream.content.readany(), IDLE_CHECK)
                    except TimeoutError:
                        if request.transport is None or request.transport.is_closing():
                            return resp          # kubectl went away (^C on logs -f)
                        continue
                    if not chunk:
                        break
                    await resp.write(chunk)
                await resp.write_eof()
            except (aiohttp.ClientError, ConnectionResetError) as e:
                log.info("log stream ended node=%s err=%s", node_name, e)
            return resp


async def _proxy_exec(request: web.Request, url: str, kubelet: KubeletTLS, node_name: str, *,
                      what: str = "pods/exec") -> web.StreamResponse:
    client = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, max_msg_size=16 * 1024 * 1024)
    if not client.can_prepare(request).ok:
        raise errors.BadRequest(f"{what} needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket) "
                                "with subprotocol " + " or ".join(EXEC_PROTOCOLS))
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    if not any(p in EXEC_PROTOCOLS for p in offered):
        raise errors.BadRequest(f"unsupported {what.removeprefix('pods/')} subprotocol(s) {offered}: kubepy speaks "
                                + ", ".join(EXEC_PROTOCOLS))
    await client.prepare(request)
    protocol = client.ws_protocol or EXEC_PROTOCOLS[0]

    async def fail(err: errors.APIError) -> web.StreamResponse:
        await client.send_bytes(bytes([ERROR_CHANNEL]) + json.dumps(err.status()).encode())
        await client.close()
        return client

    async with _session(kubelet) as session:
        try:
            backend = await session.ws_connect(url, protocols=(protocol,), max_msg_size=16 * 1024 * 1024,
                                               autoping=True, **kubelet.connect_args(node_name))
        except aiohttp.WSServerHandshakeError as e:
            return await fail(_kubelet_refused(node_name, e.status, e.message.encode()))
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            return await fail(_unreachable(node_name, url, e))
        async with backend:
            await _pump(client, backend)
    return client


async def _proxy_websocket(request: web.Request, url: str, kubelet: KubeletTLS, node_name: str, *,
                           protocols: tuple[str, ...], what: str) -> web.StreamResponse:
    """A WebSocket joined to the same WebSocket on the kubelet: frames pass untouched both ways.
    Errors before the upgrade are Status responses; after it, the socket is closed with the reason."""
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    # The client's first acceptable choice, and only that one, is asked of the kubelet: both ends
    # must speak the same protocol, since frames pass through untouched.
    chosen = next((p for p in offered if p in protocols), None)
    client = web.WebSocketResponse(protocols=(chosen,) if chosen else (), max_msg_size=16 * 1024 * 1024)
    if not client.can_prepare(request).ok or chosen is None:
        raise errors.BadRequest(f"{what} needs a WebSocket upgrade with subprotocol " + " or ".join(protocols))
    async with _session(kubelet) as session:
        try:
            backend = await session.ws_connect(url, protocols=(chosen,), max_msg_size=16 * 1024 * 1024,
                                               autoping=True, **kubelet.connect_args(node_name))
        except aiohttp.WSServerHandshakeError as e:
            raise _kubelet_refused(node_name, e.status, e.message.encode()) from e
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise _unreachable(node_name, url, e) from e
        async with backend:
            await client.prepare(request)
            await _pump(client, backend)
    return client


async def _pump(client: web.WebSocketResponse, kubelet: aiohttp.ClientWebSocketResponse) -> None:
    """Frames both ways until one side closes; then the other is closed too."""
    async def forward(source: Any, sink: Any) -> None:
        async for msg in source:
            if sink.closed:
                return
            if msg.type == WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await sink.send_str(msg.data)

    up = asyncio.create_task(forward(client, kubelet))
    down = asyncio.create_task(forward(kubelet, client))
    try:
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (up, down):
            t.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
        for ws in (kubelet, client):
            if not ws.closed:
                await ws.close()
