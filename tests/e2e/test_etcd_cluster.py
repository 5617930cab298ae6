"""A three-member etcd over TLS (certificates from the cluster CA via `kubepy etcd certs`) under an
API server; the etcd leader killed under a steady writer loses no acknowledged write (issue 21).

Everything on loopback: three etcd processes (the distribution's etcd-server) with client and
peer TLS and client-certificate authentication, one `kubepy apiserver` given all three.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from kubepy.api.certs import ensure_ca
from kubepy.client import Client
from kubepy.client.errors import APIStatusError, TransportError
from tests.e2e.conftest import free_port, start_apiserver, stop_apiserver

pytestmark = pytest.mark.etcd


class Member:
    def __init__(self, name: str, root: Path, client: int, peer: int, certs: Path) -> None:
        self.name, self.root, self.client, self.peer, self.certs = name, root, client, peer, certs
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.client}"

    def start(self, cluster: str) -> None:
        c = self.certs
        self.proc = subprocess.Popen([
            "etcd", f"--name={self.name}", f"--data-dir={self.root / 'data'}",
            f"--listen-client-urls={self.url}", f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls=https://127.0.0.1:{self.peer}",
            f"--initial-advertise-peer-urls=https://127.0.0.1:{self.peer}",
            f"--initial-cluster={cluster}", "--initial-cluster-state=new", "--initial-cluster-token=kptest",
            f"--cert-file={c / 'server.crt'}", f"--key-file={c / 'server.key'}", f"--trusted-ca-file={c / 'ca.crt'}",
            "--client-cert-auth", f"--peer-cert-file={c / 'peer.crt'}", f"--peer-key-file={c / 'peer.key'}",
            f"--peer-trusted-ca-file={c / 'ca.crt'}", "--peer-client-cert-auth", "--log-level=warn",
            "--heartbeat-interval=100", "--election-timeout=1000"],
            stdout=open(self.root / "etcd.log", "ab"), stderr=subprocess.STDOUT)

    def status(self) -> dict:
        ctx = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        ctx.load_cert_chain(str(self.certs / "apiserver-etcd-client.crt"), str(self.certs / "apiserver-etcd-client.key"))
        req = urllib.request.Request(self.url + "/v3/maintenance/status", data=b"{}", method="POST")
        with urllib.request.urlopen(req, context=ctx, timeout=2) as r:
            return json.load(r)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("etcd") is None:
        pytest.fail("etcd binary not found: apt-get install etcd-server", pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="kptest-etcd3-"))
    members: list[Member] = []
    srv = None
    try:
        cp = root / "cp"
        cp.mkdir()
        ensure_ca(cp)  # the cluster CA the API server will use too
        for i in range(3):
            name, mroot = f"m{i}", root / f"m{i}"
            mroot.mkdir()
            out = subprocess.run([sys.executable, "-m", "kubepy", "etcd", "certs", "--data-dir", str(cp),
                                  "--name", name, "--ip", "127.0.0.1", "--out", str(mroot / "pki")],
                                 capture_output=True, text=True, check=True)
            assert "--client-cert-auth" in out.stdout
            members.append(Member(name, mroot, free_port(), free_port(), mroot / "pki"))
        initial = ",".join(f"{m.name}=https://127.0.0.1:{m.peer}" for m in members)
        for m in members:
            m.start(initial)
        deadline = time.monotonic() + 30
        while True:
            try:
                if all(m.status().get("leader") for m in members):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "etcd cluster not up:\n" + (members[0].root / "etcd.log").read_text()
            time.sleep(0.2)
        pki = members[0].certs
        srv = start_apiserver(cp, extra=[
            "--store", "etcd://" + ",".join(f"127.0.0.1:{m.client}" for m in members),
            "--etcd-cafile", str(pki / "ca.crt"), "--etcd-certfile", str(pki / "apiserver-etcd-client.crt"),
            "--etcd-keyfile", str(pki / "apiserver-etcd-client.key")])
        yield srv, members
    finally:
        if srv is not None:
            stop_apiserver(srv)
        for m in members:
            m.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_etcd_refuses_a_client_without_a_certificate(cluster):
    _, members = cluster
    ctx = ssl.create_default_context(cafile=str(members[0].certs / "ca.crt"))
    req = urllib.request.Request(members[0].url + "/v3/kv/range", data=b'{"key": "AA=="}', method="POST")
    with pytest.raises(OSError):  # the TLS handshake fails: etcd asks for a client certificate
        urllib.request.urlopen(req, context=ctx, timeout=3).read()


async def _write_through_leader_loss(srv, members: list[Member]) -> tuple[set[str], float]:
    acked: set[str] = set()
    failures: list[float] = []
    stop = asyncio.Event()

    async def writer(client: Client) -> None:
        i = 0
        while not stop.is_set():
            name = f"w{i}"
            i += 1
            try:
                await client.create("configmaps", {"metadata": {"name": name}}, namespace="default")
                acked.add(name)
            except (APIStatusError, TransportError):
                failures.append(time.monotonic())
                await asyncio.sleep(0.05)

    async with Client.from_kubeconfig(str(srv.kubeconfig)) as client:
        task = asyncio.create_task(writer(client))
        await asyncio.sleep(1.5)
        leader_id = members[0].status()["leader"]
        leader = next(m for m in members if m.status()["header"]["member_id"] == leader_id)
        before = len(acked)
        killed_at = time.monotonic()
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait(10)
        while len(acked) < before + 20:  # writes resume through the two left
            assert time.monotonic() - killed_at < 20, f"no writes for 20 s after the leader died ({len(acked)})"
            await asyncio.sleep(0.05)
        resumed = time.monotonic() - killed_at
        stop.set()
        await task
        names = {c["metadata"]["name"] for c in (await client.list("configmaps", namespace="default"))["items"]}
        assert acked <= names, f"acknowledged but lost: {sorted(acked - names)[:10]}"
        return acked, resumed


def test_the_api_keeps_writing_when_the_etcd_leader_dies_and_loses_nothing(cluster):
    srv, members = cluster
    acked, resumed = asyncio.run(_write_through_leader_loss(srv, members))
    print(f"etcd leader killed: 20 more writes acknowledged within {resumed:.2f}s; {len(acked)} writes, none lost")
    assert len(acked) > 20
