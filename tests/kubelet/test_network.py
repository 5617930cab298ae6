"""NodeNetwork: names (pure) and, marked slow, real bridges/netns/veths.

How the real tests run the code "as a kubelet inside a node netns": the
fixture makes ``kptest-node-<rand>`` (``ip netns add``) and ``in_node``
runs a function in a *forked* child that ``setns()``-es into it first and
sends the result (or the exception) back through a pipe. That is what
``nsenter --net=`` does for the lab kubelet: only the network namespace
changes, the mount namespace (and /var/run/netns) stays the host's. Forking
keeps the pytest process itself in the root netns (setns on a thread would
only move that thread, and /proc/self would still name the leader's netns).

Pods get the namespace ``kptest-<rand>``, so their netns are
``kp-kptest-<rand>-...``; cleanup deletes those and the node netns even
when a test fails. Traffic (ICMP echo) stays inside these namespaces.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import secrets
import socket
import struct
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubepy.kubelet.ipam import HostLocalIPAM
from kubepy.kubelet.network import (
    NETNS_NAME_MAX,
    NodeNetwork,
    PodNetwork,
    host_veth_name,
    pod_netns_name,
)

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")


# -- pure ---------------------------------------------------------------------
def test_netns_name_is_readable_and_bounded() -> None:
    uid = "3f2a9c1e-0000-4000-8000-000000000000"
    assert pod_netns_name("default", "web-1", uid) == "kp-default-web-1-3f2a9c1e"
    long = pod_netns_name("n" * 63, "p" * 253, uid)
    assert len(long) <= NETNS_NAME_MAX and long.endswith("-3f2a9c1e") and long.startswith("kp-nnn")
    assert "/" not in pod_netns_name("a/b", "c d", uid)


def test_host_veth_name_fits_ifnamsiz() -> None:
    name = host_veth_name("3f2a9c1e-0000-4000-8000-000000000000")
    assert name.startswith("veth") and len(name) == 12
    assert name == host_veth_name("3f2a9c1e-0000-4000-8000-000000000000")
    assert name != host_veth_name("3f2a9c1e-0000-4000-8000-000000000001")


# -- running code inside a netns ------------------------------------------------
def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)


def _child(path: str, fn: Callable[..., Any], args: tuple[Any, ...], conn: Any) -> None:
    try:
        _setns(path)
        conn.send((True, fn(*args)))
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
        conn.send((False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def run_in_netns(path: str, fn: Callable[..., Any], *args: Any, timeout: float = 30) -> Any:
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(path, fn, args, child))
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise TimeoutError(f"{fn.__name__} in {path} took longer than {timeout}s")
        ok, value = parent.recv()
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if not ok:
        raise AssertionError(f"in netns {path}: {value}")
    return value


def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def icmp_ping(dst: str, timeout: float = 2.0) -> bool:
    """One ICMP echo (raw socket; runs in whatever netns the caller is in)."""
    ident = os.getpid() & 0xFFFF
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    payload = b"kubepy-test"
    packet = struct.pack("!BBHHH", 8, 0, _icmp_checksum(header + payload), ident, 1) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(timeout)
        s.sendto(packet, (dst, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, (src, _) = s.recvfrom(2048)
            except TimeoutError:
                return False
            ihl = (data[0] & 0x0F) * 4
            icmp_type, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if src == dst and icmp_type == 0 and rid == ident:
                return True
    return False


# -- fixtures -------------------------------------------------------------------
def _cleanup(prefixes: list[str]) -> None:
    for name in os.listdir(NETNS_DIR) if NETNS_DIR.exists() else []:
        if any(name.startswith(p) for p in prefixes):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


class NodeNS:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.name = f"kptest-node-{tag}"
        self.path = str(NETNS_DIR / self.name)
        self.pod_namespace = f"kptest-{tag}"
        self.bridge = f"kpt{tag}"
        self.cidr = "10.250.7.0/24"

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return run_in_netns(self.path, fn, *args)


@pytest.fixture
def node_ns() -> Iterator[NodeNS]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    node = NodeNS()
    subprocess.run(["ip", "netns", "add", node.name], check=True)
    try:
        yield node
    finally:
        _cleanup([node.name, f"kp-{node.pod_namespace}-"])
        assert not [n for n in os.listdir(NETNS_DIR) if node.pod_namespace in n]


# -- functions that run inside the node netns (module level: forked, not pickled) -
def _bridge_and_sysctls(bridge: str, cidr: str) -> dict[str, Any]:
    from pyroute2 import IPRoute

    before = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    net = NodeNetwork(bridge=bridge, pod_cidr=cidr)
    net.ensure_bridge()
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=bridge)[0]
        ipr.addr("del", index=idx, address="10.250.7.1", prefixlen=24)
        ipr.addr("add", index=idx, address="10.99.0.1", prefixlen=16)
    net.ensure_bridge()  # repairs the address
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=bridge)[0]
        addrs = sorted(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=idx, family=2))
        up = ipr.get_links(idx)[0]["flags"] & 1
    return {
        "before": before,
        "after": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "bridge_nf": Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip(),
        "addrs": addrs,
        "up": up,
    }


def _two_pods(bridge: str, cidr: str, ns: str, state_dir: str) -> dict[str, Any]:
    import psutil
    from pyroute2 import IPRoute

    proc = psutil.Process()
    net = NodeNetwork(bridge=bridge, pod_cidr=cidr)
    ipam = HostLocalIPAM(Path(state_dir), cidr)
    net.ensure_bridge()
    fds_before = proc.num_fds()
    timings: dict[str, float] = {}
    pods: list[PodNetwork] = []
    for i in range(2):
        uid = f"{secrets.token_hex(4)}-0000-4000-8000-00000000000{i}"
        ip = ipam.allocate(uid, name=f"{ns}/pod{i}")
        t = time.perf_counter()
        pods.append(net.setup_pod(namespace=ns, name=f"pod{i}", uid=uid, ip=ip))
        timings[f"setup{i}"] = time.perf_counter() - t
    t = time.perf_counter()
    again = net.setup_pod(namespace=ns, name="pod0", uid=pods[0].uid, ip=pods[0].ip)
    timings["setup_again"] = time.perf_counter() - t
    hairpin = {}
    aliases = {}
    with IPRoute() as ipr:
        for p in pods:
            idx = ipr.link_lookup(ifname=p.host_veth)[0]
            link = ipr.get_links(idx)[0]
            hairpin[p.host_veth] = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_SLAVE_DATA").get("IFLA_BRPORT_MODE")
            aliases[p.host_veth] = link.get("IFLA_IFALIAS")
    bridge_d = subprocess.run(["bridge", "-d", "link"], capture_output=True, text=True, check=True).stdout
    pings = {
        "0->1": run_in_netns(pods[0].netns_path, icmp_ping, pods[1].ip),
        "1->0": run_in_netns(pods[1].netns_path, icmp_ping, pods[0].ip),
        "0->gw": run_in_netns(pods[0].netns_path, icmp_ping, pods[0].gateway),
        "node->1": icmp_ping(pods[1].ip),
    }
    # repair: the host veth (and so eth0) vanished; setup_pod makes them again
    with IPRoute() as ipr:
        ipr.link("del", index=ipr.link_lookup(ifname=pods[0].host_veth)[0])
    repaired = net.setup_pod(namespace=ns, name="pod0", uid=pods[0].uid, ip=pods[0].ip)
    pings["repaired 0->1"] = run_in_netns(repaired.netns_path, icmp_ping, pods[1].ip)
    listed = NodeNetwork(bridge=bridge, pod_cidr=cidr).list_pod_networks()  # a "restarted" kubelet
    other_node = NodeNetwork(bridge=bridge, pod_cidr="10.250.8.0/24").list_pod_networks()
    for i, p in enumerate(pods):
        t = time.perf_counter()
        net.teardown_pod(p if i == 0 else p.uid)
        timings[f"teardown{i}"] = time.perf_counter() - t
        ipam.release(p.uid)
    net.teardown_pod(pods[0])  # idempotent
    with IPRoute() as ipr:
        veths_left = [p.host_veth for p in pods if ipr.link_lookup(ifname=p.host_veth)]
    return {
        "pods": pods,
        "again": again,
        "hairpin": hairpin,
        "aliases": aliases,
        "bridge_d": bridge_d,
        "pings": pings,
        "listed": listed,
        "other_node": other_node,
        "timings": timings,
        "veths_left": veths_left,
        "ipam_left": ipam.allocations(),
        "fd_delta": proc.num_fds() - fds_before,
        "children": [c.pid for c in proc.children(recursive=True)],
        "after_list": net.list_pod_networks(),
    }


def _orphans(bridge: str, cidr: str, ns: str) -> dict[str, Any]:
    net = NodeNetwork(bridge=bridge, pod_cidr=cidr)
    net.ensure_bridge()
    uid = "deadbeef-0000-4000-8000-000000000009"
    pod = net.setup_pod(namespace=ns, name="gone", uid=uid, ip="10.250.7.50")
    # A leftover: a process still holds the netns after it is unmounted, so
    # the veth pair outlives "ip netns delete"; list must still report it.
    holder = subprocess.Popen(["nsenter", f"--net={pod.netns_path}", "sleep", "30"])
    try:
        time.sleep(0.2)
        subprocess.run(["ip", "netns", "delete", pod.netns], check=True)
        listed = net.list_pod_networks()
        for p in listed:
            net.teardown_pod(p)
        after = net.list_pod_networks()
    finally:
        holder.kill()
        holder.wait()
    return {"listed": listed, "after": after, "veth": pod.host_veth}


# -- real-system tests ------------------------------------------------------------
@pytest.mark.slow
def test_ensure_bridge_is_idempotent_and_sysctls_are_per_netns(node_ns: NodeNS) -> None:
    host_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    got = node_ns.run(_bridge_and_sysctls, node_ns.bridge, node_ns.cidr)
    assert got["addrs"] == ["10.250.7.1/24"]
    assert got["up"]
    assert got["after"] == "1" and got["bridge_nf"] == "1"
    # the host's value is untouched: /proc/sys/net follows the writer's netns
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host_forward


@pytest.mark.slow
def test_two_pods_talk_hairpin_list_and_teardown(node_ns: NodeNS, tmp_path: Path) -> None:
    got = node_ns.run(_two_pods, node_ns.bridge, node_ns.cidr, node_ns.pod_namespace, str(tmp_path))
    pods: list[PodNetwork] = got["pods"]
    print("timings", {k: f"{v * 1000:.1f}ms" for k, v in got["timings"].items()})
    assert got["again"] == pods[0]
    assert all(p.netns.startswith(f"kp-{node_ns.pod_namespace}-pod") for p in pods)
    assert got["pings"] == {"0->1": True, "1->0": True, "0->gw": True, "node->1": True, "repaired 0->1": True}
    assert set(got["hairpin"].values()) == {1}
    assert "hairpin on" in got["bridge_d"]
    assert got["aliases"] == {p.host_veth: f"{p.namespace}/{p.name}" for p in pods}
    assert sorted(got["listed"], key=lambda p: p.name) == pods
    # another node (other pod CIDR) ignores these pod netns; it would not see
    # our veths at all, as it lives in its own node netns
    assert [p for p in got["other_node"] if p.netns] == []
    assert got["veths_left"] == [] and got["ipam_left"] == {} and got["after_list"] == []
    assert got["fd_delta"] <= 0 and got["children"] == []
    assert not [n for n in os.listdir(NETNS_DIR) if n.startswith(f"kp-{node_ns.pod_namespace}")]


@pytest.mark.slow
def test_leftover_veth_of_a_held_netns_is_listed_and_removed(node_ns: NodeNS) -> None:
    got = node_ns.run(_orphans, node_ns.bridge, node_ns.cidr, node_ns.pod_namespace)
    assert [(p.uid, p.netns, p.host_veth, p.namespace, p.name) for p in got["listed"]] == [
        ("", "", got["veth"], node_ns.pod_namespace, "gone")
    ]
    assert got["after"] == []


def test_ownership_mark_names_the_node():
    """Two lab clusters both hand out 10.244.0.0/24: the node name in the mark keeps them apart."""
    from kubepy.kubelet.network import MARK_RE, _mark

    m = MARK_RE.match(_mark("default", "web", "uid-1", "10.244.0.0/24", "a-node1"))
    assert m and m["node"] == "a-node1" and m["cidr"] == "10.244.0.0/24" and m["uid"] == "uid-1"
    old = MARK_RE.match(_mark("default", "web", "uid-1", "10.244.0.0/24"))
    assert old and old["node"] is None
