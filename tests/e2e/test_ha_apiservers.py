"""Two real API servers on one etcd (issue 21): every ClusterIP and node port handed out once,
and the ``kubernetes`` Service's endpoints listing the live ones.

They advertise documentation addresses (192.0.2.0/24; no traffic goes there). Both
run with a small Service range, so their pickers collide often and only
the store's reservations (kubepy.api.reservations) keep them apart.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import shutil
import tempfile
from pathlib import Path

import pytest

from kubepy.client import Client
from kubepy.client.errors import APIStatusError
from tests.e2e.conftest import start_apiserver, stop_apiserver
from tests.etcd import running_etcd

pytestmark = pytest.mark.etcd

RANGE = ["--service-cluster-ip-range", "10.100.0.0/22", "--service-node-port-range", "30000-30299"]


@pytest.fixture(scope="module")
def servers():
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(running_etcd())
        out = []
        for i in range(2):
            tmp = Path(tempfile.mkdtemp(prefix="kptest-ha-"))
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
            if out:  # a second control-plane node shares the cluster's CA, signing key and tokens (as kubeadm joins)
                for name in ("ca.crt", "ca.key", "sa.key", "tokens.csv"):
                    shutil.copy2(out[0].data_dir / name, tmp / name)
            srv = start_apiserver(tmp, extra=["--store", "etcd://" + endpoint.removeprefix("http://"), *RANGE,
                                              "--advertise-address", f"192.0.2.{i + 1}"])
            stack.callback(stop_apiserver, srv)
            # The admin kubeconfig names the advertised address; this test reaches the server on loopback.
            srv.kubeconfig.write_text(srv.kubeconfig.read_text().replace(f"https://192.0.2.{i + 1}:", "https://127.0.0.1:"))
            out.append(srv)
        yield out


def service(name: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}], **spec}}


async def _create_many(servers, n: int) -> None:
    clients = [Client.from_kubeconfig(str(s.kubeconfig)) for s in servers]
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with gate:
            spec = {"type": "NodePort"} if i % 2 else {}
            await clients[i % 2].create("services", service(f"s{i}", **spec), namespace="default")

    try:
        await asyncio.gather(*[one(i) for i in range(n)])
    finally:
        for c in clients:
            await c.close()


def test_500_services_on_two_servers_get_distinct_addresses_and_ports(servers):
    asyncio.run(_create_many(servers, 500))
    items = servers[0].kubectl("get", "services", "-A", "-o", "json")
    import json

    svcs = json.loads(items.stdout)["items"]
    assert len([s for s in svcs if s["metadata"]["name"].startswith("s")]) == 500
    ips = collections.Counter(s["spec"]["clusterIP"] for s in svcs if s["spec"].get("clusterIP") not in (None, "None"))
    ports = collections.Counter(p["nodePort"] for s in svcs for p in s["spec"].get("ports", []) if p.get("nodePort"))
    assert [ip for ip, n in ips.items() if n > 1] == []
    assert [p for p, n in ports.items() if n > 1] == []
    assert len(ports) == 250


async def _race(servers, round_: int, **spec) -> list:
    clients = [Client.from_kubeconfig(str(s.kubeconfig)) for s in servers]
    try:
        return await asyncio.gather(*[c.create("services", service(f"race{round_}-{i}", **spec), namespace="default")
                                      for i, c in enumerate(clients)], return_exceptions=True)
    finally:
        for c in clients:
            await c.close()


def test_the_same_explicit_address_or_port_asked_of_both_servers_at_once_goes_to_one(servers):
    import json

    svcs = json.loads(servers[0].kubectl("get", "services", "-A", "-o", "json").stdout)["items"]
    taken = {p.get("nodePort") for s in svcs for p in s["spec"].get("ports", [])}
    free = [p for p in range(30299, 30000, -1) if p not in taken]
    for r in range(10):
        # Addresses from the low band, which the servers never pick at random.
        for spec in ({"clusterIP": f"10.100.0.{20 + r}"},
                     {"type": "NodePort", "ports": [{"port": 80, "nodePort": free[r]}]}):
            results = asyncio.run(_race(servers, r if "clusterIP" in spec else 100 + r, **spec))
            refused = [e for e in results if isinstance(e, APIStatusError)]
            assert len(refused) == 1 and refused[0].status == 422, results
            assert "already allocated" in refused[0].message


def _endpoints(srv) -> list[tuple[str, int]]:
    import json

    ep = json.loads(srv.kubectl("get", "endpoints", "kubernetes", "-o", "json").stdout)
    return sorted((a["ip"], p["port"]) for s in ep.get("subsets", []) for a in s["addresses"] for p in s["ports"])


async def _informer_fails_over(a, b) -> None:
    """An informer whose client lists both servers, watching through ``b``, carries on through ``a``
    when ``b`` stops; ``b`` is stopped here."""
    from kubepy.client import ClientConfig, Informer

    config = ClientConfig.from_kubeconfig(b.kubeconfig)
    config = ClientConfig(server=b.url, servers=[b.url, a.url], token=config.token, ca_data=config.ca_data,
                          client_cert=config.client_cert, client_key=config.client_key)
    async with Client(config) as client:
        informer = Informer(client, "configmaps", namespace="default")
        task = asyncio.create_task(informer.run())
        try:
            await informer.wait_synced(10)
            assert client.server == b.url
            await asyncio.to_thread(stop_apiserver, b)
            async with Client.from_kubeconfig(str(a.kubeconfig)) as writer:
                await writer.create("configmaps", {"metadata": {"name": "after-failover"}}, namespace="default")
            async with asyncio.timeout(15):
                while informer.cache.get("default/after-failover") is None:
                    await asyncio.sleep(0.1)
            assert client.server == a.url
            assert (await client.get("configmaps", "after-failover", namespace="default"))["metadata"]["name"]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# Last: it stops the second server.
def test_a_server_that_stops_leaves_the_endpoints_and_its_clients_fail_over(servers):
    import json
    import time

    a, b = servers
    assert _endpoints(a) == sorted([("192.0.2.1", a.port), ("192.0.2.2", b.port)])
    leases = json.loads(a.kubectl("get", "leases", "-n", "kube-system", "-l",
                                  "apiserver.kubernetes.io/identity=kube-apiserver", "-o", "json").stdout)["items"]
    assert sorted(lease["metadata"]["annotations"]["kubepy.io/advertise-address"] for lease in leases) == \
        sorted(f"192.0.2.{i + 1}:{s.port}" for i, s in enumerate(servers))
    asyncio.run(_informer_fails_over(a, b))  # b stops (SIGTERM): it takes itself out before it exits
    deadline = time.monotonic() + 10
    while _endpoints(a) != [("192.0.2.1", a.port)]:
        assert time.monotonic() < deadline, _endpoints(a)
        time.sleep(0.2)
    # The mirrored EndpointSlice is the controller manager's job, not running here.
