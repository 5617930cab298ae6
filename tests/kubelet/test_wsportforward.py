"""Port forwarding over WebSocket channels (the Python client's protocol), with a real TCP server."""

from __future__ import annotations

import asyncio

import pytest

from kubepy.kubelet.wsportforward import ChannelPortForward, parse_ports


@pytest.mark.parametrize("values,ports", [
    (["80"], [80]),
    (["1234,1235,1236"], [1234, 1235, 1236]),      # the Python client sends one comma list
    (["80", "8080,9090"], [80, 8080, 9090]),        # repeated values, as kubectl's ?port= are
])
def test_parse_ports(values: list[str], ports: list[int]):
    assert parse_ports(values) == ports


@pytest.mark.parametrize("values,message", [
    ([], 'query parameter "port" is required'),
    ([""], 'query parameter "port" cannot be empty'),
    (["80,http"], 'unable to parse "80,http" as a port'),
    (["70000"], 'unable to parse "70000" as a port'),
    (["0"], 'port "0" must be > 0'),
])
def test_parse_ports_refuses(values: list[str], message: str):
    with pytest.raises(ValueError) as e:
        parse_ports(values)
    assert str(e.value) == message


async def _wait(cond, what: str) -> None:
    for _ in range(250):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_ports_on_their_channels_errors_on_theirs_and_the_end_when_every_port_is_done():
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data.upper())
            await writer.drain()
            if data.endswith(b"!"):          # the pod side ends this connection
                break
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sent: list[bytes] = []

    async def send(message: bytes) -> None:
        sent.append(message)

    async def dial(p: int):
        return await asyncio.open_connection("127.0.0.1", p)

    fwd = ChannelPortForward(ports=[port, 1], send=send, dial=dial, pod="web", uid="u1")
    await fwd.start()
    number = port.to_bytes(2, "little")
    # Every channel opens with its port, little endian: data 2i, error 2i+1.
    assert sent[:4] == [b"\0" + number, b"\1" + number, b"\2" + b"\1\0", b"\3" + b"\1\0"]
    await fwd.feed(b"\0hello")               # may arrive before the connection is up: kept, then sent
    await _wait(lambda: b"\0HELLO" in sent, "the echo on channel 0")
    # Port 1 refuses: Kubernetes' message on its error channel, nothing on its data channel.
    await _wait(lambda: any(m[0] == 3 and len(m) > 3 for m in sent), "the error on channel 3")
    [error] = [m[1:] for m in sent[4:] if m[0] == 3]
    assert error.startswith(b"error forwarding port 1 to pod web, uid u1: failed to connect to localhost:1")
    assert not [m for m in sent[4:] if m[0] in (1, 2)], "nothing but the port number on channels 1 and 2"
    await fwd.feed(b"\1ignored")             # error channels are the kubelet's to write
    await fwd.feed(b"\7nobody")              # and channels past the last port carry nothing
    assert not fwd_done(fwd)
    await fwd.feed(b"\0bye!")                # the pod closes: the last port is done, so is the forward
    await asyncio.wait_for(fwd.done(), 5)
    assert sent[-1] == b"\0BYE!"
    await fwd.close()
    server.close()


def fwd_done(fwd: ChannelPortForward) -> bool:
    return all(p.task is not None and p.task.done() for p in fwd._ports)


async def test_close_ends_open_connections():
    closed = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()                  # until the kubelet side closes
        closed.set()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def send(message: bytes) -> None:
        pass

    async def dial(p: int):
        return await asyncio.open_connection("127.0.0.1", p)

    fwd = ChannelPortForward(ports=[port], send=send, dial=dial, pod="web")
    await fwd.start()
    await _wait(lambda: fwd._ports[0].writer is not None, "the connection")
    await fwd.close()                        # the client closed the WebSocket
    await asyncio.wait_for(closed.wait(), 5)
    server.close()


@pytest.mark.parametrize("query,ports", [
    ("ports=1234,1235,1236", [1234, 1235, 1236]),
    ("ports=80&ports=8080", [80, 8080]),
    ("", []),                                # kubectl's SPDY tunnel names ports per stream instead
])
def test_api_server_reads_pod_port_forward_options(query: str, ports: list[int]):
    from aiohttp.test_utils import make_mocked_request

    from kubepy.api.proxy import portforward_ports
    assert portforward_ports(make_mocked_request("GET", f"/x?{query}")) == ports


def test_api_server_refuses_a_bad_port():
    from aiohttp.test_utils import make_mocked_request

    from kubepy.api.errors import BadRequest
    from kubepy.api.proxy import portforward_ports
    with pytest.raises(BadRequest):
        portforward_ports(make_mocked_request("GET", "/x?ports=80,0"))
