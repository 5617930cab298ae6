"""Pod networking on one node: a bridge, and a netns + veth per pod (like CNI ``bridge``).

Everything is relative to the *current* network namespace, which is the
node's: on a VM the kubelet runs in the root netns, in the lab cluster it
runs inside the node's netns (``nsenter --net=/var/run/netns/<node>``). All
netlink work goes through pyroute2 (one short-lived ``IPRoute`` per call, for
the pod netns ``IPRoute(netns=name, flags=0)``, which forks a helper only long
enough to open the socket inside the netns - nothing stays running).

pyroute2 0.9's synchronous ``IPRoute`` refuses to run inside a running
asyncio event loop ("This event loop is already running"), so the kubelet
calls these methods with ``asyncio.to_thread``.

Layout made for a pod (names a person can read with ``ip``)::

    pod netns  kp-<namespace>-<name>-<uid8>   (``ip netns list``)
      lo       up, ifalias "kubepy pod=<ns>/<name> uid=<uid> cidr=<pod cidr>"
      eth0     <ip>/<prefix>, default via <gateway>
    node netns veth<sha256(uid)[:8]>  master <bridge>, hairpin on,
               ifalias "<namespace>/<name>"

The ``lo`` alias is the ownership mark: it is written *before* the netns
is bind-mounted under /var/run/netns, so every visible pod netns carries it.
It lets a restarted kubelet recover the full uid, and tells the nodes of a
lab cluster (which share /var/run/netns) apart by pod CIDR. The veth is
created with its peer directly inside the pod netns (one netlink request),
so a host veth never exists without its pod netns.

Errors::

    NetworkError
     └── NetnsConflict   a netns with the pod's name belongs to another uid
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import ipaddress
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.process import ChildProcess

__all__ = [
    "NETNS_DIR",
    "NETNS_PREFIX",
    "NetnsConflict",
    "NetworkError",
    "NodeNetwork",
    "PodNetwork",
    "host_veth_name",
    "pod_netns_name",
]

log = logging.getLogger(__name__)

NETNS_DIR = Path("/var/run/netns")
NETNS_PREFIX = "kp-"
NETNS_NAME_MAX = 63
POD_IFNAME = "eth0"
VETH_PREFIX = "veth"
MARK_RE = re.compile(
    r"^kubepy pod=(?P<namespace>[^/ ]*)/(?P<name>\S*) uid=(?P<uid>\S+) cidr=(?P<cidr>\S+)(?: node=(?P<node>\S+))?$")
HOST_VETH_RE = re.compile(r"^veth[0-9a-f]{8}$")
CLONE_NEWNET = 0x40000000


class NetworkError(Exception):
    """Base of pod network errors."""


class NetnsConflict(NetworkError):
    """A pod netns name is taken by a different pod uid."""


@dataclass(frozen=True)
class PodNetwork:
    """What exists for one pod. ``netns`` is "" for a leftover host veth whose netns is gone."""

    uid: str
    namespace: str
    name: str
    netns: str
    netns_path: str
    host_veth: str
    ip: str
    gateway: str
    prefixlen: int


# -- names (pure) -------------------------------------------------------------
def _uid8(uid: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]", "", uid)[:8].lower()


def pod_netns_name(namespace: str, name: str, uid: str) -> str:
    """``kp-<namespace>-<name>-<uid8>``, the middle trimmed so the whole fits 63 chars."""
    tail = "-" + _uid8(uid)
    middle = re.sub(r"[^0-9a-zA-Z_.-]", "_", f"{namespace}-{name}")
    room = NETNS_NAME_MAX - len(NETNS_PREFIX) - len(tail)
    return NETNS_PREFIX + middle[:room].rstrip("-.") + tail


def host_veth_name(uid: str) -> str:
    """``veth<hash8>``: 12 chars (IFNAMSIZ allows 15), derivable from the uid alone."""
    return VETH_PREFIX + hashlib.sha256(uid.encode()).hexdigest()[:8]


def _mark(namespace: str, name: str, uid: str, cidr: str, node: str = "") -> str:
    # The node name matters: two lab clusters on one host both hand out 10.244.0.0/24,
    # and a kubelet must never mistake the other cluster's pods for its own orphans.
    return f"kubepy pod={namespace}/{name} uid={uid} cidr={cidr}" + (f" node={node}" if node else "")


# -- netns creation ------------------------------------------------------------
def _create_marked_netns(name: str, alias: str) -> None:
    """Runs in a forked child: unshare a netns, mark its lo, then bind-mount it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    with IPRoute() as ipr:
        (lo,) = ipr.link_lookup(ifname="lo")
        ipr.link("set", index=lo, ifalias=alias, state="up")
    netns.attach(name, "self")


def _remove_netns(name: str) -> None:
    path = NETNS_DIR / name
    with contextlib.suppress(FileNotFoundError):
        netns.remove(name)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _is_netns_mount(path: Path) -> bool:
    """True when ``path`` is a bound netns (nsfs), not the empty mountpoint file."""
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except FileNotFoundError:
        return False


def _write_sysctl(key: str, value: str) -> None:
    # /proc/sys/net/* resolves to the netns of the *opening* task, so this
    # sets the node netns' value when the kubelet runs inside it.
    path = Path("/proc/sys") / key.replace(".", "/")
    if path.read_text().strip() != value:
        path.write_text(value + "\n")


class NodeNetwork:
    """The node's bridge and its pods' namespaces and veths."""

    def __init__(self, *, bridge: str = "cni0", pod_cidr: str, mtu: int = 1500, node: str = "") -> None:
        self.node = node  # written into each pod netns' mark; only marks with it are ours
        self.bridge = bridge
        self.network = ipaddress.IPv4Network(pod_cidr, strict=False)
        self.pod_cidr = str(self.network)
        self.gateway = str(self.network.network_address + 1)
        self.prefixlen = self.network.prefixlen
        self.mtu = mtu

    # -- bridge ---------------------------------------------------------------
    def ensure_bridge(self) -> None:
        """Bridge up with exactly the gateway address; IPv4 forwarding on. Idempotent."""
        with IPRoute() as ipr:
            idx = self._bridge_index(ipr, create=True)
            for addr in ipr.get_addr(index=idx, family=socket.AF_INET):
                have = (addr.get("IFA_ADDRESS"), addr["prefixlen"])
                if have != (self.gateway, self.prefixlen):
                    log.info("bridge=%s removing stale address=%s/%s", self.bridge, *have)
                    ipr.addr("del", index=idx, address=have[0], prefixlen=have[1])
            if not ipr.get_addr(index=idx, family=socket.AF_INET, address=self.gateway):
                ipr.addr("add", index=idx, address=self.gateway, prefixlen=self.prefixlen)
            ipr.link("set", index=idx, state="up")
        _write_sysctl("net.ipv4.ip_forward", "1")
        # Service traffic between two pods of one bridge must pass iptables.
        with contextlib.suppress(FileNotFoundError):
            _write_sysctl("net.bridge.bridge-nf-call-iptables", "1")

    def _bridge_index(self, ipr: IPRoute, *, create: bool) -> int:
        found = ipr.link_lookup(ifname=self.bridge)
        if found:
            link = ipr.get_links(found[0])[0]
            kind = link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
            if kind != "bridge":
                raise NetworkError(f"{self.bridge} exists and is a {kind!r}, not a bridge")
            return int(found[0])
        if not create:
            raise NetworkError(f"bridge {self.bridge} does not exist (call ensure_bridge)")
        # A fixed MAC: otherwise the bridge takes the lowest port MAC and
        # changes it as pods come and go, leaving stale ARP entries in pods.
        digest = hashlib.sha256(f"{self.bridge}/{self.pod_cidr}".encode()).digest()
        mac = "02:" + ":".join(f"{b:02x}" for b in digest[:5])
        ipr.link("add", ifname=self.bridge, kind="bridge", address=mac, mtu=self.mtu)
        return int(ipr.link_lookup(ifname=self.bridge)[0])

    # -- pods -----------------------------------------------------------------
    def setup_pod(self, *, namespace: str, name: str, uid: str, ip: str) -> PodNetwork:
        """Make (or repair) the pod's netns, veth, address and route. Idempotent."""
        addr = ipaddress.IPv4Address(ip)
        if addr not in self.network or str(addr) == self.gateway:
            raise NetworkError(f"pod ip {ip} is not a pod address of {self.pod_cidr}")
        ns_name = pod_netns_name(namespace, name, uid)
        veth = host_veth_name(uid)
        self._ensure_netns(ns_name, _mark(namespace, name, uid, self.pod_cidr, self.node), uid)
        with IPRoute() as ipr:
            br = self._bridge_index(ipr, create=False)
            with IPRoute(netns=ns_name, flags=0) as pod:
                self._ensure_veth(ipr, pod, veth, ns_name)
                self._configure_pod_side(pod, ip)
            (vidx,) = ipr.link_lookup(ifname=veth)
            ipr.link("set", index=vidx, master=br, mtu=self.mtu, ifalias=f"{namespace}/{name}")
            # A pod reaching itself through its Service's ClusterIP leaves and
            # re-enters by this port: the bridge must hairpin it back.
            ipr.brport("set", index=vidx, mode=1)
            ipr.link("set", index=vidx, state="up")
        return PodNetwork(
            uid=uid,
            namespace=namespace,
            name=name,
            netns=ns_name,
            netns_path=str(NETNS_DIR / ns_name),
            host_veth=veth,
            ip=str(addr),
            gateway=self.gateway,
            prefixlen=self.prefixlen,
        )

    def _ensure_netns(self, ns_name: str, mark: str, uid: str) -> None:
        path = NETNS_DIR / ns_name
        if path.exists() and not _is_netns_mount(path):
            _remove_netns(ns_name)  # a crash between creating the file and the mount
        if path.exists():
            found = self._read_mark(ns_name)
            if found is not None and found["uid"] != uid:
                raise NetnsConflict(f"netns {ns_name} belongs to pod uid {found['uid']}, not {uid}")
            if found is None:
                with IPRoute(netns=ns_name, flags=0) as pod:
                    (lo,) = pod.link_lookup(ifname="lo")
                    pod.link("set", index=lo, ifalias=mark, state="up")
            return
        proc = ChildProcess(target=_create_marked_netns, args=[ns_name, mark])
        try:
            proc.run()
            proc.communicate()
        except BaseException:
            _remove_netns(ns_name)
            raise
        finally:
            proc.stop(kill=True)
            proc.close()

    def _ensure_veth(self, ipr: IPRoute, pod: IPRoute, veth: str, ns_name: str) -> None:
        host = ipr.link_lookup(ifname=veth)
        peer = pod.link_lookup(ifname=POD_IFNAME)
        if host and peer:
            return
        if host:  # its peer is elsewhere (the netns was recreated): start again
            ipr.link("del", index=host[0])
        if peer:
            pod.link("del", index=peer[0])
        ipr.link(
            "add",
            ifname=veth,
            kind="veth",
            mtu=self.mtu,
            peer={"ifname": POD_IFNAME, "net_ns_fd": ns_name, "mtu": self.mtu},
        )

    def _configure_pod_side(self, pod: IPRoute, ip: str) -> None:
        (lo,) = pod.link_lookup(ifname="lo")
        pod.link("set", index=lo, state="up")
        (eth,) = pod.link_lookup(ifname=POD_IFNAME)
        pod.link("set", index=eth, mtu=self.mtu, state="up")
        have = False
        for a in pod.get_addr(index=eth, family=socket.AF_INET):
            cur = (a.get("IFA_ADDRESS"), a["prefixlen"])
            if cur == (ip, self.prefixlen):
                have = True
            else:
                pod.addr("del", index=eth, address=cur[0], prefixlen=cur[1])
        if not have:
            pod.addr("add", index=eth, address=ip, prefixlen=self.prefixlen)
        pod.route("replace", dst="0.0.0.0/0", gateway=self.gateway, oif=eth)

    def teardown_pod(self, pod: str | PodNetwork) -> None:
        """Delete the pod's host veth and netns. Idempotent; unknown uids are a no-op."""
        if isinstance(pod, PodNetwork):
            uid, names, veths = pod.uid, [pod.netns] if pod.netns else [], [pod.host_veth]
        else:
            uid, names, veths = pod, [], []
        if uid:
            veths.append(host_veth_name(uid))
            names += [
                n
                for n in self._netns_names()
                if n.endswith("-" + _uid8(uid)) and self._mark_uid_or_none(n) in (uid, None)
            ]
        # The veth first: processes still holding the netns keep it (and an
        # interface in it) alive after the unmount, but not the host side.
        with IPRoute() as ipr:
            for veth in dict.fromkeys(veths):
                for idx in ipr.link_lookup(ifname=veth):
                    with contextlib.suppress(NetlinkError):
                        ipr.link("del", index=idx)
        for ns_name in dict.fromkeys(names):
            _remove_netns(ns_name)

    def list_pod_networks(self) -> list[PodNetwork]:
        """Pods of *this* node (by pod CIDR) found in /var/run/netns and on the bridge."""
        # Links before netns: a veth is only ever made after its netns, so a
        # veth seen here has its netns in the listing below (no false orphans).
        veths: dict[str, str] = {}
        with IPRoute() as ipr:
            br = ipr.link_lookup(ifname=self.bridge)
            for link in ipr.get_links():
                ifname = link.get("IFLA_IFNAME")
                if HOST_VETH_RE.match(ifname or "") and (not br or link.get("IFLA_MASTER") == br[0]):
                    veths[ifname] = link.get("IFLA_IFALIAS") or "/"
        found: list[PodNetwork] = []
        for ns_name in self._netns_names():
            info = self._read_pod_netns(ns_name)
            if info is None or info.netns == "" or info.uid == "":
                continue
            found.append(info)
            veths.pop(info.host_veth, None)
        for veth, alias in veths.items():  # orphans: their netns is gone
            namespace, _, name = alias.partition("/")
            found.append(
                PodNetwork(
                    uid="",
                    namespace=namespace,
                    name=name,
                    netns="",
                    netns_path="",
                    host_veth=veth,
                    ip="",
                    gateway=self.gateway,
                    prefixlen=self.prefixlen,
                )
            )
        return found

    # -- reading pod netns ------------------------------------------------------
    @staticmethod
    def _netns_names() -> list[str]:
        return sorted(n for n in netns.listnetns(str(NETNS_DIR)) if n.startswith(NETNS_PREFIX))

    def _read_mark(self, ns_name: str) -> dict[str, str] | None:
        with IPRoute(netns=ns_name, flags=0) as pod:
            (lo,) = pod.link_lookup(ifname="lo")
            alias = pod.get_links(lo)[0].get("IFLA_IFALIAS") or ""
        m = MARK_RE.match(alias)
        return m.groupdict() if m else None

    def _mark_uid_or_none(self, ns_name: str) -> str | None:
        if not _is_netns_mount(NETNS_DIR / ns_name):
            return None
        try:
            mark = self._read_mark(ns_name)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EINVAL):
                return None
            raise
        return mark["uid"] if mark else None

    def _read_pod_netns(self, ns_name: str) -> PodNetwork | None:
        if not _is_netns_mount(NETNS_DIR / ns_name):
            return None
        try:
            with IPRoute(netns=ns_name, flags=0) as pod:
                (lo,) = pod.link_lookup(ifname="lo")
                m = MARK_RE.match(pod.get_links(lo)[0].get("IFLA_IFALIAS") or "")
                if not m or m["cidr"] != self.pod_cidr or (self.node and m["node"] != self.node):
                    return None  # not a kubepy pod, or another node's (maybe of another cluster)
                ip, prefixlen = "", self.prefixlen
                for eth in pod.link_lookup(ifname=POD_IFNAME):
                    for a in pod.get_addr(index=eth, family=socket.AF_INET):
                        ip, prefixlen = a.get("IFA_ADDRESS"), a["prefixlen"]
        except (FileNotFoundError, ValueError):
            return None  # removed while we looked
        return PodNetwork(
            uid=m["uid"],
            namespace=m["namespace"],
            name=m["name"],
            netns=ns_name,
            netns_path=str(NETNS_DIR / ns_name),
            host_veth=host_veth_name(m["uid"]),
            ip=ip,
            gateway=self.gateway,
            prefixlen=prefixlen,
        )
