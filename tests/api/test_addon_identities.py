"""The node add-ons on their own identities, in process: kube-proxy as ``system:kube-proxy``
(upstream's ``system:node-proxier``), cluster DNS as ``system:kubepy-dns`` (``system:kube-dns``) and
the network-policy agent as ``system:kubepy-netpol`` (``kubepy:network-policy-agent``). Each runs its
real API calls (list/watch, the Node reads, kube-proxy's events) against an in-process API server
with only the rights its default binding gives, and none is refused; what it has no business doing
is. The kernel side (iptables, netlink) is faked: only the API traffic is under test here.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.x509.oid import NameOID

from kubepy.api import auth, bootstrappolicy, certs
from kubepy.api.main import COMPONENT_IDENTITIES, write_admin_kubeconfig
from kubepy.api.server import NODE_TOKEN_PREFIX, APIServer, ServerConfig
from kubepy.client import Client, EventRecorder
from kubepy.dns.server import DNSConfig, run_dns
from kubepy.netpol.agent import Agent, _node_pod_cidr
from kubepy.proxy.iptables import FakeIPTables
from kubepy.proxy.proxier import Proxier, _node_ips
from kubepy.store.base import open_store
from tests.netpol.test_agent import FakeIPTables as FakeFilterTables
from tests.proxy.test_proxier import FakeAddresses, FakeNetlink, FakeProbe, FakeRoutes

USERS = {"admin": ("admin", "system:masters"), "proxy": (auth.KUBE_PROXY_USER, ""), "dns": (auth.DNS_USER, ""),
         "netpol": (auth.NETPOL_USER, ""), "node": ("system:node:n1", auth.NODES)}
LB_IP = "172.30.0.200"


class Api:
    def __init__(self, client: TestClient, url: str, tmp: Path) -> None:
        self.client, self.url, self.tmp = client, url, tmp

    async def call(self, who: str, method: str, path: str, body: Any = None,
                   content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
        resp = await self.client.request(method, path, json=body, headers={
            "Authorization": f"Bearer tok-{who}", "Content-Type": content_type})
        return resp.status, await resp.json()

    async def admin(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        status, out = await self.call("admin", method, path, body)
        assert status in (200, 201), f"{method} {path}: {status} {out}"
        return out

    def kubeconfig(self, who: str) -> str:
        """A kubeconfig of ``who``'s user (a token here: the server under test speaks plain HTTP)."""
        path = self.tmp / f"{who}.token.kubeconfig"
        certs.write_kubeconfig(path, certs.kubeconfig(server=self.url, ca_pem=(self.tmp / "ca.crt").read_bytes(),
                                                      user=USERS[who][0], token=f"tok-{who}"))
        return str(path)


@pytest.fixture
async def api(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Api]:
    caplog.set_level(logging.INFO, logger="kubepy.api.server")
    with (tmp_path / "tokens.csv").open("w") as f:
        for who, (user, groups) in USERS.items():
            if who != "node":
                csv.writer(f).writerow([f"tok-{who}", user, user, groups])
    certs.ensure_ca(tmp_path)
    store = open_store("sqlite", data_dir=str(tmp_path))
    # A node's credential is kept in the store (the join endpoint writes it), not in tokens.csv.
    await store.create(NODE_TOKEN_PREFIX + "n1", json.dumps({"token": "tok-node"}).encode())
    server = APIServer(store, ServerConfig(data_dir=tmp_path))
    await server.start()
    client = TestClient(TestServer(server.app()))
    await client.start_server()
    try:
        yield Api(client, str(client.make_url("")).rstrip("/"), tmp_path)
    finally:
        await client.close()
        await server.stop()
        await store.close()


async def _cluster(api: Api) -> None:
    """Node n1 (InternalIP, podCIDR), a LoadBalancer Service with an address and an endpoint on n1, a policy."""
    await api.admin("POST", "/api/v1/nodes", {"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.1.0/24"}})
    node = await api.admin("GET", "/api/v1/nodes/n1")
    node["status"] = {"addresses": [{"type": "InternalIP", "address": "192.168.77.1"}],
                      "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                      "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                                      "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    await api.admin("PUT", "/api/v1/nodes/n1/status", node)
    await api.admin("POST", "/api/v1/namespaces/default/services", {
        "metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                                              "ports": [{"port": 80, "targetPort": 8080}]}})
    svc = await api.admin("GET", "/api/v1/namespaces/default/services/web")
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": LB_IP}]}}
    await api.admin("PUT", "/api/v1/namespaces/default/services/web/status", svc)
    await api.admin("POST", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", {
        "metadata": {"name": "web-abcde", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.1.5"], "nodeName": "n1", "conditions": {"ready": True}}]})
    await api.admin("POST", "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies", {
        "metadata": {"name": "deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})


async def _eventually(check: Any, what: str, timeout: float = 8.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (got := await check()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return got


def _requests(caplog: pytest.LogCaptureFixture, user: str) -> set[tuple[str, str, str]]:
    """(method, path, status) of every write and every failed request ``user`` made (the server logs
    those; a read that succeeded shows as the component's caches syncing)."""
    out = set()
    for r in caplog.records:
        msg = r.getMessage()
        if msg.startswith("request ") and f" user={user} " in msg:
            kv = dict(w.split("=", 1) for w in msg.split()[1:] if "=" in w)
            out.add((kv["method"], kv["path"], kv["status"]))
    return out


def _refused(caplog: pytest.LogCaptureFixture, user: str) -> list[str]:
    """What the server refused ``user``, or answered with any error."""
    refused = [r.getMessage() for r in caplog.records
               if r.getMessage().startswith("forbidden ") and f"user={user} " in r.getMessage()]
    return refused + [" ".join(r) for r in _requests(caplog, user) if int(r[2]) >= 400]


async def _stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_kube_proxy_runs_as_system_kube_proxy(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    await _cluster(api)
    async with Client.from_kubeconfig(api.kubeconfig("proxy"), user_agent="kubepy-proxy") as client:
        assert await _node_ips(client, "n1") == ["192.168.77.1"]
        recorder = EventRecorder(client, component="kube-proxy", host="n1")
        addresses, probe = FakeAddresses(), FakeProbe()
        proxier = Proxier(client, node_name="n1", node_ips=["192.168.77.1"], cluster_cidr="10.244.0.0/16",
                          service_cidr="10.96.0.0/12", bridge="cni0", min_sync_period=0.05,
                          iptables=FakeIPTables(), netlink=FakeNetlink(), routes=FakeRoutes(),
                          addresses=addresses, probe=probe, recorder=recorder)
        task = asyncio.create_task(proxier.run())
        try:
            async def announced() -> bool:
                return proxier.syncs >= 1 and addresses.held == {LB_IP}
            await _eventually(announced, "the proxier to sync and take the load-balancer address")
            await recorder.flush()
            # The same event again within the aggregation window: the recorder patches the first one's count.
            svc = await api.admin("GET", "/api/v1/namespaces/default/services/web")
            recorder.event({"apiVersion": "v1", "kind": "Service", **svc}, "Normal", "nodeAssigned",
                           'announcing from node "n1" with protocol "layer2"')
            await recorder.flush()
        finally:
            await _stop(task)
    events = [e for e in (await api.admin("GET", "/api/v1/namespaces/default/events"))["items"]
              if e["reason"] == "nodeAssigned"]
    assert [(e["source"]["component"], e["count"]) for e in events] == [("kube-proxy", 2)], events
    assert not _refused(caplog, auth.KUBE_PROXY_USER)
    made = _requests(caplog, auth.KUBE_PROXY_USER)
    assert ("POST", "/api/v1/namespaces/default/events", "201") in made, made
    assert any(m == "PATCH" and p.startswith("/api/v1/namespaces/default/events/") and s == "200"
               for m, p, s in made), made


async def test_cluster_dns_runs_as_its_own_user(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    await _cluster(api)
    caplog.set_level(logging.INFO, logger="kubepy.dns.server")
    task = asyncio.create_task(run_dns(DNSConfig(kubeconfig=api.kubeconfig("dns"), listen=[("127.0.0.1", 0)],
                                                 upstreams=[])))
    try:
        async def synced() -> bool:
            return any(r.getMessage().startswith("dns records synced services=") for r in caplog.records)
        await _eventually(synced, "cluster DNS to list Services and EndpointSlices")
    finally:
        await _stop(task)
    assert not _refused(caplog, auth.DNS_USER)
    assert any(r.getMessage().startswith("dns records synced services=2 ") for r in caplog.records)  # kubernetes, web


async def test_the_network_policy_agent_runs_as_its_own_user(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    await _cluster(api)
    async with Client.from_kubeconfig(api.kubeconfig("netpol"), user_agent="kubepy-netpol") as client:
        cidr = await _node_pod_cidr(client, "n1")
        assert cidr == "10.244.1.0/24"
        iptables = FakeFilterTables()
        agent = Agent(client, node_name="n1", pod_cidr=cidr, iptables=iptables, min_sync_period=0.05)
        task = asyncio.create_task(agent.run())
        try:
            async def synced() -> bool:
                return agent.syncs >= 1
            await _eventually(synced, "the agent to sync")
        finally:
            await _stop(task)
    assert any("KUBE-NWPLCY" in payload for payload in iptables.restores), iptables.restores
    assert not _refused(caplog, auth.NETPOL_USER)


@pytest.mark.parametrize("who,method,path,body,message", [
    ("proxy", "GET", "/api/v1/namespaces/default/secrets/s", None,
     'secrets "s" is forbidden: User "system:kube-proxy" cannot get resource "secrets" in API group "" '
     'in the namespace "default"'),
    ("dns", "POST", "/api/v1/namespaces/default/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
     'pods is forbidden: User "system:kubepy-dns" cannot create resource "pods" in API group "" '
     'in the namespace "default"'),
    ("netpol", "PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {"x": "y"}}},
     'nodes "n1" is forbidden: User "system:kubepy-netpol" cannot patch resource "nodes" in API group "" '
     'at the cluster scope'),
    # The node no longer holds what only the add-ons read (upstream's system:node has neither).
    ("node", "GET", "/apis/discovery.k8s.io/v1/endpointslices", None,
     'endpointslices.discovery.k8s.io is forbidden: User "system:node:n1" cannot list resource "endpointslices" '
     'in API group "discovery.k8s.io" at the cluster scope'),
    ("node", "GET", "/api/v1/namespaces", None,
     'namespaces is forbidden: User "system:node:n1" cannot list resource "namespaces" in API group "" '
     'at the cluster scope'),
    ("node", "GET", "/apis/networking.k8s.io/v1/networkpolicies", None,
     'networkpolicies.networking.k8s.io is forbidden: User "system:node:n1" cannot list resource '
     '"networkpolicies" in API group "networking.k8s.io" at the cluster scope'),
], ids=["proxy-reads-secret", "dns-creates-pod", "netpol-patches-node", "node-lists-endpointslices",
        "node-lists-namespaces", "node-lists-networkpolicies"])
async def test_what_an_addon_may_not_do(api: Api, who: str, method: str, path: str, body: Any,
                                        message: str) -> None:
    await api.admin("POST", "/api/v1/nodes", {"metadata": {"name": "n1"}})
    await api.admin("POST", "/api/v1/namespaces/default/secrets", {"metadata": {"name": "s"}, "data": {}})
    status, out = await api.call(who, method, path, body, content_type="application/merge-patch+json"
                                 if method == "PATCH" else "application/json")
    assert (status, out.get("reason"), out.get("message")) == (403, "Forbidden", message), out


def test_the_api_server_writes_each_addon_a_kubeconfig_of_its_own_user(tmp_path: Path) -> None:
    """proxy/dns/netpol.kubeconfig: a client certificate CN=<user>, no group (so never system:masters),
    0600; only admin.kubeconfig carries system:masters."""
    certs.ensure_ca(tmp_path)
    write_admin_kubeconfig(ServerConfig(data_dir=tmp_path, advertise_address="192.168.77.10"))
    want = {"proxy": auth.KUBE_PROXY_USER, "dns": auth.DNS_USER, "netpol": auth.NETPOL_USER}
    assert {k: COMPONENT_IDENTITIES[k] for k in want} == want
    seen = {}
    for path in sorted(tmp_path.glob("*.kubeconfig")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        config = yaml.safe_load(path.read_text())
        assert config["clusters"][0]["cluster"]["server"] == "https://192.168.77.10:6443"
        cert = x509.load_pem_x509_certificate(base64.b64decode(config["users"][0]["user"]["client-certificate-data"]))
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        seen[path.stem] = (cn, orgs)
    for stem, user in want.items():
        assert seen[stem] == (user, []), seen
    assert [s for s, (_, orgs) in seen.items() if auth.MASTERS in orgs] == ["admin"], seen


@pytest.mark.parametrize("have,want", [
    # A cluster made before the agent had its own user: the nodes lose the role, a person's subject stays.
    ([("Group", "system:nodes"), ("User", "alice")], [("User", "alice"), ("User", auth.NETPOL_USER)]),
    ([("Group", "system:nodes")], [("User", auth.NETPOL_USER)]),
    ([("User", auth.NETPOL_USER)], [("User", auth.NETPOL_USER)]),
])
def test_reconciling_takes_the_nodes_off_the_network_policy_agents_role(have: list, want: list) -> None:
    binding = next(b for b in bootstrappolicy.cluster_role_bindings()
                   if b["metadata"]["name"] == bootstrappolicy.NETPOL_AGENT_ROLE)
    old = {**binding, "subjects": [{"kind": k, "apiGroup": bootstrappolicy.GROUP, "name": n} for k, n in have]}
    got = bootstrappolicy.reconcile_binding(old, binding)
    assert [(s["kind"], s["name"]) for s in got["subjects"]] == want


def test_each_addon_is_bound_to_its_role() -> None:
    bindings = {b["metadata"]["name"]: b for b in bootstrappolicy.cluster_role_bindings()}
    for binding, role, user in (("system:node-proxier", "system:node-proxier", auth.KUBE_PROXY_USER),
                                ("system:kubepy-dns", "system:kube-dns", auth.DNS_USER),
                                (bootstrappolicy.NETPOL_AGENT_ROLE, bootstrappolicy.NETPOL_AGENT_ROLE,
                                 auth.NETPOL_USER)):
        b = bindings[binding]
        assert b["roleRef"]["name"] == role
        assert b["subjects"] == [{"kind": "User", "apiGroup": bootstrappolicy.GROUP, "name": user}]
    # No default binding gives the nodes (or any group but the admins') an add-on's role.
    addon_roles = {"system:node-proxier", "system:kube-dns", bootstrappolicy.NETPOL_AGENT_ROLE}
    groups = {s["name"] for b in bindings.values() if b["roleRef"]["name"] in addon_roles
              for s in b.get("subjects") or [] if s["kind"] == "Group"}
    assert groups == set()
