"""The ``kubepy`` command: one entry point, one subcommand per daemon or tool."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _port_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split("-", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH, got {text!r}") from None
    if not 0 < lo <= hi < 65536:
        raise argparse.ArgumentTypeError(f"invalid port range {text!r}")
    return lo, hi


def _duration(text: str) -> float:
    """Go-style durations as Kubernetes' flags take them: 300, 5m, 1h30m, 1.5s."""
    from kubepy.durations import parse_seconds

    try:
        return parse_seconds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_apiserver_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", required=True, type=Path, help="where state, certificates and admin.kubeconfig live")
    p.add_argument("--bind-address", default="0.0.0.0")
    p.add_argument("--port", type=int, default=6443)
    p.add_argument("--store", default="sqlite", help="sqlite (default) or etcd://HOST:PORT[,HOST:PORT]")
    p.add_argument("--etcd-cafile", default=None, help="CA of etcd's serving certificates (etcd over TLS)")
    p.add_argument("--etcd-certfile", default=None, help="client certificate for etcd's --client-cert-auth")
    p.add_argument("--etcd-keyfile", default=None, help="its key")
    p.add_argument("--service-cluster-ip-range", default="10.96.0.0/12")
    p.add_argument("--service-node-port-range", type=_port_range, default=(30000, 32767))
    p.add_argument("--advertise-address", default=None, help="address other hosts use to reach this API server")
    p.add_argument("--tls-san", action="append", default=[], help="extra name or IP for the serving certificate")
    p.add_argument("--default-not-ready-toleration-seconds", type=int, default=300,
                   help="tolerationSeconds added to pods for the not-ready taint")
    p.add_argument("--default-unreachable-toleration-seconds", type=int, default=300,
                   help="tolerationSeconds added to pods for the unreachable taint")
    p.add_argument("--etcd-compaction-interval", type=_duration, default=300.0,
                   help="how often old revisions are compacted (e.g. 5m, 30s)")
    p.add_argument("--event-ttl", type=_duration, default=3600.0, help="how long Events are kept (e.g. 1h)")
    p.add_argument("--tls-handshake-timeout", type=_duration, default=10.0,
                   help="close a connection whose TLS handshake takes longer (e.g. 10s)")
    p.add_argument("--request-header-timeout", type=_duration, default=30.0,
                   help="close a new connection whose first request's headers take longer (e.g. 30s)")
    p.add_argument("--idle-connection-timeout", type=_duration, default=90.0,
                   help="close a keep-alive connection idle between requests this long (e.g. 90s)")


def apiserver_config(args: argparse.Namespace):  # -> ServerConfig
    from kubepy.api.server import ServerConfig

    return ServerConfig(
        data_dir=args.data_dir.resolve(), bind_address=args.bind_address, port=args.port, store_url=args.store,
        etcd_cafile=args.etcd_cafile, etcd_certfile=args.etcd_certfile, etcd_keyfile=args.etcd_keyfile,
        service_cidr=args.service_cluster_ip_range, node_port_range=args.service_node_port_range,
        advertise_address=args.advertise_address, tls_sans=args.tls_san,
        compaction_interval=args.etcd_compaction_interval, event_ttl=args.event_ttl,
        default_not_ready_toleration_seconds=args.default_not_ready_toleration_seconds,
        default_unreachable_toleration_seconds=args.default_unreachable_toleration_seconds,
        tls_handshake_timeout=args.tls_handshake_timeout, request_header_timeout=args.request_header_timeout,
        idle_connection_timeout=args.idle_connection_timeout,
    )


def cmd_apiserver(args: argparse.Namespace) -> int:
    from kubepy.api.main import serve

    import os

    config = apiserver_config(args)
    # Every file this process creates (the store and its -wal/-shm, keys, tokens) is its own alone.
    os.umask(0o077)
    try:
        asyncio.run(serve(config))
    except OSError as e:
        print(f"kubepy apiserver: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"kubepy apiserver: {e}", file=sys.stderr)
        return 2
    return 0


def add_controller_flags(p: argparse.ArgumentParser) -> None:
    """Kubernetes' kube-controller-manager flag names."""
    p.add_argument("--node-monitor-grace-period", type=_duration, default=40.0,
                   help="how long a node may be silent before it is marked NotReady (default 40s)")
    p.add_argument("--node-monitor-period", type=_duration, default=5.0)
    p.add_argument("--cluster-cidr", default="10.244.0.0/16", help="pod addresses; each node gets a slice")
    p.add_argument("--node-cidr-mask-size", type=int, default=24)
    p.add_argument("--controllers", default="*", help="comma list: * for all, -name to disable one")
    p.add_argument("--concurrent-syncs", type=int, default=4)
    p.add_argument("--load-balancer-ip-range", "--lb-pool", dest="load_balancer_ip_range", default="",
                   metavar="A-B|CIDR[,...]",
                   help="addresses for type: LoadBalancer Services (one node answers ARP for each); "
                        "none by default: such Services stay pending with an AllocationFailed event")
    p.add_argument("--horizontal-pod-autoscaler-sync-period", type=_duration, default=15.0,
                   help="how often each HorizontalPodAutoscaler is reconciled (default 15s)")
    p.add_argument("--horizontal-pod-autoscaler-downscale-stabilization", type=_duration, default=300.0,
                   help="how far back the highest recommendation holds a scale-down (default 5m0s)")
    p.add_argument("--horizontal-pod-autoscaler-tolerance", type=float, default=0.1,
                   help="the smallest usage/target ratio change (either way) that rescales (default 0.1)")
    p.add_argument("--horizontal-pod-autoscaler-cpu-initialization-period", type=_duration, default=300.0,
                   help="after a pod starts, CPU samples count only once it is Ready for a whole window "
                        "(default 5m0s)")
    p.add_argument("--horizontal-pod-autoscaler-initial-readiness-delay", type=_duration, default=30.0,
                   help="after a pod starts, readiness changes in this time are its initial readiness (default 30s)")


def controller_config(args: argparse.Namespace):  # -> ControllerConfig
    from kubepy.controllers.context import ControllerConfig

    return ControllerConfig(
        node_monitor_grace_period=args.node_monitor_grace_period, node_monitor_period=args.node_monitor_period,
        default_not_ready_toleration_seconds=args.default_not_ready_toleration_seconds,
        default_unreachable_toleration_seconds=args.default_unreachable_toleration_seconds,
        cluster_cidr=args.cluster_cidr, node_cidr_mask_size=args.node_cidr_mask_size,
        concurrent_syncs=args.concurrent_syncs, controllers=[c.strip() for c in args.controllers.split(",") if c.strip()],
        use_service_account_credentials=getattr(args, "use_service_account_credentials", False),
        load_balancer_ip_range=args.load_balancer_ip_range,
        horizontal_pod_autoscaler_sync_period=args.horizontal_pod_autoscaler_sync_period,
        horizontal_pod_autoscaler_downscale_stabilization=args.horizontal_pod_autoscaler_downscale_stabilization,
        horizontal_pod_autoscaler_tolerance=args.horizontal_pod_autoscaler_tolerance,
        horizontal_pod_autoscaler_cpu_initialization_period=args.horizontal_pod_autoscaler_cpu_initialization_period,
        horizontal_pod_autoscaler_initial_readiness_delay=args.horizontal_pod_autoscaler_initial_readiness_delay,
    )


def add_leader_election_flags(p: argparse.ArgumentParser) -> None:
    """Upstream's --leader-elect flags (kubepy's default is off: one control plane needs no election)."""
    p.add_argument("--leader-elect", action="store_true", default=None,
                   help="elect a leader on a Lease in kube-system before acting (several replicas: one acts)")
    p.add_argument("--leader-elect-lease-duration", type=_duration, default=None, help="default 15s")
    p.add_argument("--leader-elect-renew-deadline", type=_duration, default=None, help="default 10s")
    p.add_argument("--leader-elect-retry-period", type=_duration, default=None, help="default 2s")
    p.add_argument("--leader-elect-resource-name", default=None, help="the Lease's name")


def leader_election(args: argparse.Namespace, name: str, base=None):  # -> LeaderElectionConfig | None
    """The flags over *base* (a config file's leaderElection): None when election is off."""
    from kubepy.client.leaderelection import LeaderElectionConfig

    if not args.leader_elect and base is None:
        return None
    times = {attr: getattr(args, f"leader_elect_{attr}") for attr in ("lease_duration", "renew_deadline",
                                                                      "retry_period")}
    if base is not None:
        times = {k: v if v is not None else getattr(base, k) for k, v in times.items()}
    return LeaderElectionConfig(args.leader_elect_resource_name or (base.name if base else name),
                                namespace=base.namespace if base else "kube-system",
                                **{k: v for k, v in times.items() if v is not None})


def add_healthz_flags(p: argparse.ArgumentParser, default_port: int) -> None:
    p.add_argument("--healthz-bind-address", default=f"127.0.0.1:{default_port}",
                   help=f"HOST:PORT for plain-HTTP /healthz, /livez, /readyz and /metrics (default "
                        f"127.0.0.1:{default_port}; '' for none); health fails while the event loop lags")
    p.add_argument("--healthz-max-loop-lag", type=_duration, default=5.0,
                   help="event-loop lag beyond which /healthz fails (default 5s)")


def _with_health(coro, args: argparse.Namespace, registry=None):
    from kubepy.healthz import with_loop_health

    return with_loop_health(coro, bind=args.healthz_bind_address or None, max_lag=args.healthz_max_loop_lag,
                            registry=registry)


def cmd_scheduler(args: argparse.Namespace) -> int:
    from kubepy.scheduler import config as schedconfig
    from kubepy.scheduler.scheduler import run_scheduler

    try:
        config = schedconfig.load(args.config) if args.config else schedconfig.default_config()
    except schedconfig.ConfigError as e:
        print(f"kubepy scheduler: invalid configuration {args.config}: {e}", file=sys.stderr)
        return 2
    try:
        election = leader_election(args, "kube-scheduler", config.leader_election)
    except ValueError as e:
        print(f"kubepy scheduler: {e}", file=sys.stderr)
        return 2
    config.leader_election = election
    # As upstream: the flag wins over clientConnection.kubeconfig.
    kubeconfig = str(args.kubeconfig) if args.kubeconfig else config.kubeconfig
    if not kubeconfig:
        print("kubepy scheduler: no kubeconfig: pass --kubeconfig or set clientConnection.kubeconfig in --config",
              file=sys.stderr)
        return 2
    from kubepy.metrics import new_registry
    from kubepy.scheduler.metrics import SchedulerMetrics

    registry = new_registry()   # /metrics on the healthz port
    return _run_async(_with_health(run_scheduler(kubeconfig, config=config, metrics=SchedulerMetrics(registry)),
                                   args, registry), "scheduler")


def cmd_controller_manager(args: argparse.Namespace) -> int:
    from kubepy.controllers.manager import enabled_controllers, run_controller_manager

    from kubepy.controllers.servicelb import parse_pool

    config = controller_config(args)
    try:
        enabled_controllers(config.controllers)
        parse_pool(config.load_balancer_ip_range)
    except ValueError as e:
        print(f"kubepy controller-manager: {e}", file=sys.stderr)
        return 2
    try:
        election = leader_election(args, "kube-controller-manager")
    except ValueError as e:
        print(f"kubepy controller-manager: {e}", file=sys.stderr)
        return 2
    from kubepy.client.workqueuemetrics import WorkQueueMetrics
    from kubepy.metrics import new_registry

    registry = new_registry()   # /metrics on the healthz port: workqueue_*{name} per controller
    queue_metrics = WorkQueueMetrics(registry)
    return _run_async(_with_health(_elected(str(args.kubeconfig), election, "kubepy-controller-manager",
                                            lambda: run_controller_manager(str(args.kubeconfig), config,
                                                                           queue_metrics=queue_metrics)),
                                   args, registry), "controller-manager")


async def _elected(kubeconfig: str, election, user_agent: str, lead) -> None:
    """``lead()`` once this process holds the election's Lease (at once when *election* is None)."""
    if election is None:
        await lead()
        return
    from kubepy.client import Client, ClientConfig
    from kubepy.client.leaderelection import LeaderElector

    async with Client(ClientConfig.from_kubeconfig(kubeconfig), user_agent=user_agent) as client:
        await LeaderElector(client, election).run(lead)


def _run_async(coro, name: str = "kubepy") -> int:
    """Runs a daemon coroutine until SIGTERM/SIGINT, then cancels it cleanly."""
    import signal

    from kubepy.children import use_pidfd_child_watcher

    async def main() -> None:
        loop = asyncio.get_running_loop()
        use_pidfd_child_watcher(loop)
        task = asyncio.ensure_future(coro)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    from kubepy.client.leaderelection import LeadershipLost
    from kubepy.daemon import run as run_daemon

    try:
        run_daemon(main(), name=name)
    except OSError as e:  # e.g. the health address is taken
        print(f"kubepy {name}: {e}", file=sys.stderr)
        return 1
    except LeadershipLost as e:   # as upstream: stop at once; the supervisor starts a new candidate
        print(f"kubepy {name}: leaderelection lost: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_metrics_server(args: argparse.Namespace) -> int:
    from kubepy.metricsserver.server import MetricsServerConfig, run_metrics_server

    if args.metric_resolution <= 0 or args.kubelet_request_timeout <= 0:
        print("kubepy metrics-server: --metric-resolution and --kubelet-request-timeout must be positive",
              file=sys.stderr)
        return 2
    config = MetricsServerConfig(kubeconfig=str(args.kubeconfig), bind_address=args.bind_address,
                                 secure_port=args.secure_port, tls_cert_file=args.tls_cert_file,
                                 tls_private_key_file=args.tls_private_key_file,
                                 metric_resolution=args.metric_resolution,
                                 kubelet_request_timeout=args.kubelet_request_timeout,
                                 kubelet_insecure_tls=args.kubelet_insecure_tls)
    return _run_async(_with_health(run_metrics_server(config), args), "metrics-server")


def cmd_dashboard(args: argparse.Namespace) -> int:
    from kubepy.dashboard.server import DashboardConfig, run_dashboard

    server, ca_pem = args.server, None
    try:
        if args.kubeconfig:   # only where the API server is and its CA: the dashboard uses no one's credentials
            from kubepy.client import ClientConfig

            cc = ClientConfig.from_kubeconfig(args.kubeconfig)
            server, ca_pem = server or cc.server, cc.ca_data
        if args.ca:
            ca_pem = args.ca.read_bytes()
    except (OSError, ValueError, KeyError) as e:
        print(f"kubepy dashboard: {e}", file=sys.stderr)
        return 2
    if not server:
        print("kubepy dashboard: --server (or --kubeconfig) is required: the API server's URL", file=sys.stderr)
        return 2
    if not (args.tls_cert_file and args.tls_private_key_file):
        print("kubepy dashboard: --tls-cert-file and --tls-private-key-file are required (HTTPS only: a token must "
              "never cross the network in clear)", file=sys.stderr)
        return 2
    for path in (args.tls_cert_file, args.tls_private_key_file):
        if not path.is_file():
            print(f"kubepy dashboard: {path}: no such file", file=sys.stderr)
            return 2
    config = DashboardConfig(server=server, ca_pem=ca_pem, bind_address=args.bind_address, port=args.port,
                             tls_cert_file=args.tls_cert_file, tls_private_key_file=args.tls_private_key_file)
    return _run_async(_with_health(run_dashboard(config), args), "dashboard")


def cmd_controlplane(args: argparse.Namespace) -> int:
    from kubepy.controlplane import run_controlplane

    data_dir = args.data_dir.resolve()
    # Each component on its own identity (the API server writes these beside admin.kubeconfig).
    sched_kubeconfig = str(data_dir / "scheduler.kubeconfig")
    cm_kubeconfig = str(data_dir / "controller-manager.kubeconfig")
    api = ["--log-level", args.log_level, "apiserver", "--data-dir", str(data_dir),
           "--bind-address", args.bind_address, "--port", str(args.port), "--store", args.store,
           "--service-cluster-ip-range", args.service_cluster_ip_range,
           "--service-node-port-range", "%d-%d" % args.service_node_port_range,
           "--etcd-compaction-interval", str(args.etcd_compaction_interval), "--event-ttl", str(args.event_ttl),
           "--default-not-ready-toleration-seconds", str(args.default_not_ready_toleration_seconds),
           "--default-unreachable-toleration-seconds", str(args.default_unreachable_toleration_seconds),
           "--tls-handshake-timeout", str(args.tls_handshake_timeout),
           "--request-header-timeout", str(args.request_header_timeout),
           "--idle-connection-timeout", str(args.idle_connection_timeout)]
    if args.advertise_address:
        api += ["--advertise-address", args.advertise_address]
    for flag in ("etcd_cafile", "etcd_certfile", "etcd_keyfile"):
        if getattr(args, flag):
            api += ["--" + flag.replace("_", "-"), getattr(args, flag)]
    for san in args.tls_san:
        api += ["--tls-san", san]
    sched = ["--log-level", args.log_level, "scheduler", "--kubeconfig", sched_kubeconfig]
    if args.scheduler_config:
        from kubepy.scheduler import config as schedconfig

        try:  # refuse now rather than have the supervisor restart a scheduler that cannot start
            schedconfig.load(args.scheduler_config)
        except schedconfig.ConfigError as e:
            print(f"kubepy controlplane: invalid scheduler configuration {args.scheduler_config}: {e}",
                  file=sys.stderr)
            return 2
        sched += ["--config", str(args.scheduler_config.resolve())]
    if args.load_balancer_ip_range:
        from kubepy.controllers.servicelb import parse_pool

        try:  # refuse now rather than have the supervisor restart a controller manager that cannot start
            parse_pool(args.load_balancer_ip_range)
        except ValueError as e:
            print(f"kubepy controlplane: --load-balancer-ip-range: {e}", file=sys.stderr)
            return 2
    cm = ["--log-level", args.log_level, "controller-manager", "--kubeconfig", cm_kubeconfig,
          "--node-monitor-grace-period", str(args.node_monitor_grace_period),
          "--node-monitor-period", str(args.node_monitor_period),
          "--default-not-ready-toleration-seconds", str(args.default_not_ready_toleration_seconds),
          "--default-unreachable-toleration-seconds", str(args.default_unreachable_toleration_seconds),
          "--cluster-cidr", args.cluster_cidr, "--node-cidr-mask-size", str(args.node_cidr_mask_size),
          "--controllers", args.controllers, "--concurrent-syncs", str(args.concurrent_syncs),
          "--use-service-account-credentials"]
    if args.load_balancer_ip_range:
        cm += ["--load-balancer-ip-range", args.load_balancer_ip_range]
    for flag in ("sync-period", "downscale-stabilization", "tolerance", "cpu-initialization-period",
                 "initial-readiness-delay"):
        cm += [f"--horizontal-pod-autoscaler-{flag}",
               str(getattr(args, "horizontal_pod_autoscaler_" + flag.replace("-", "_")))]
    election = []   # the scheduler and the controller manager elect their leaders alike
    if args.leader_elect:
        election.append("--leader-elect")
    for attr in ("lease_duration", "renew_deadline", "retry_period"):
        value = getattr(args, f"leader_elect_{attr}")
        if value is not None:
            election += [f"--leader-elect-{attr.replace('_', '-')}", f"{value:g}s"]
    if args.leader_elect_resource_name:
        print("kubepy controlplane: --leader-elect-resource-name is per component; set it on each", file=sys.stderr)
        return 2
    sched += election
    cm += election
    metrics = None
    if args.advertise_address and args.metrics_server_port:
        if args.metric_resolution <= 0:
            print("kubepy controlplane: --metric-resolution must be positive", file=sys.stderr)
            return 2
        metrics = ["--log-level", args.log_level, "metrics-server",
                   "--kubeconfig", str(data_dir / "metrics-server.kubeconfig"),
                   "--bind-address", args.advertise_address, "--secure-port", str(args.metrics_server_port),
                   "--tls-cert-file", str(data_dir / "metrics-server-serving.crt"),
                   "--tls-private-key-file", str(data_dir / "metrics-server-serving.key"),
                   "--metric-resolution", f"{args.metric_resolution:g}s"]
    dashboard = None
    if args.advertise_address and args.dashboard_port:
        # Its own serving certificate (the supervisor issues it by the cluster CA); the API server on loopback.
        api_host = "127.0.0.1" if args.bind_address in ("0.0.0.0", "::", "") else args.bind_address
        api_host = f"[{api_host}]" if ":" in api_host else api_host
        dashboard = ["--log-level", args.log_level, "dashboard",
                     "--server", f"https://{api_host}:{args.port}", "--ca", str(data_dir / "ca.crt"),
                     "--bind-address", args.advertise_address, "--port", str(args.dashboard_port),
                     "--tls-cert-file", str(data_dir / "dashboard-serving.crt"),
                     "--tls-private-key-file", str(data_dir / "dashboard-serving.key")]
    return run_controlplane(api, sched, cm, data_dir=data_dir, port=args.port, metrics_argv=metrics,
                            advertise_address=args.advertise_address, metrics_port=args.metrics_server_port,
                            dashboard_argv=dashboard, tls_sans=args.tls_san, startup_grace=args.startup_grace,
                            ready_file=args.ready_file)


def cmd_proxy(args: argparse.Namespace) -> int:
    from kubepy.proxy.proxier import ProxyConfig, cleanup_all, run_proxy

    if args.cleanup:
        removed = asyncio.run(cleanup_all())
        print(f"kubepy proxy: removed {removed} chains and tables (iptables and nftables modes)")
        return 0
    if not args.kubeconfig:
        print("kubepy proxy: --kubeconfig is required (unless --cleanup)", file=sys.stderr)
        return 2
    import socket

    bind, _, port = args.healthz_bind_address.rpartition(":") if args.healthz_bind_address.count(":") == 1 \
        else (args.healthz_bind_address, "", "")
    if port and not port.isdigit():
        print(f"kubepy proxy: --healthz-bind-address {args.healthz_bind_address!r}: the port is not a number",
              file=sys.stderr)
        return 2
    config = ProxyConfig(kubeconfig=str(args.kubeconfig), hostname_override=args.hostname_override or socket.gethostname(),
                         node_ips=args.node_ip or [], cluster_cidr=args.cluster_cidr,
                         service_cidr=args.service_cluster_ip_range, bridge=args.bridge,
                         masquerade_pod_egress=not args.no_masquerade_pod_egress,
                         healthz_port=int(port) if port else args.healthz_port, healthz_bind=bind.strip("[]"),
                         proxy_mode=args.proxy_mode, sync_period=args.sync_period)
    try:
        metrics_bind = _host_port(args.metrics_bind_address, "--metrics-bind-address")
    except ValueError as e:
        print(f"kubepy proxy: {e}", file=sys.stderr)
        return 2
    from kubepy.proxy.metrics import ProxyMetrics

    config.metrics = ProxyMetrics(registry := _new_registry())
    return _run_async(_with_metrics(run_proxy(config), metrics_bind, registry), "proxy")


def _new_registry():
    from kubepy.metrics import new_registry

    return new_registry()


def _host_port(value: str, flag: str) -> str:
    """HOST:PORT as a metrics flag takes it ('' turns serving off); a bad one is a ValueError naming ``flag``."""
    if not value:
        return ""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{flag} {value!r}: want HOST:PORT (e.g. 127.0.0.1:10249), or '' for none")
    return f"{host.strip('[]') or '0.0.0.0'}:{port}"


def _with_metrics(coro, bind: str, registry):
    """/metrics, /healthz, /livez and /readyz of a node daemon on ``bind`` (a taken port is logged, not fatal)."""
    from kubepy.healthz import with_loop_health

    return with_loop_health(coro, bind=bind or None, registry=registry, required=False)


def cmd_netpol(args: argparse.Namespace) -> int:
    from kubepy.netpol.agent import AgentConfig, cleanup, run_agent

    if args.cleanup:
        removed = asyncio.run(cleanup())
        print(f"kubepy netpol: removed {removed} chains")
        return 0
    if not args.kubeconfig:
        print("kubepy netpol: --kubeconfig is required (unless --cleanup)", file=sys.stderr)
        return 2
    import socket

    config = AgentConfig(kubeconfig=str(args.kubeconfig),
                         hostname_override=args.hostname_override or socket.gethostname(),
                         pod_cidr=args.pod_cidr, min_sync_period=args.min_sync_period, sync_period=args.sync_period)
    try:
        metrics_bind = _host_port(args.metrics_bind_address, "--metrics-bind-address")
    except ValueError as e:
        print(f"kubepy netpol: {e}", file=sys.stderr)
        return 2
    from kubepy.netpol.metrics import AgentMetrics

    config.metrics = AgentMetrics(registry := _new_registry())
    return _run_async(_with_metrics(run_agent(config), metrics_bind, registry), "netpol")


def cmd_ingress(args: argparse.Namespace) -> int:
    from kubepy.ingress.controller import ControllerConfig, run_controller

    publish = [a.strip() for a in (args.publish_status_address or "").split(",") if a.strip()]
    config = ControllerConfig(kubeconfig=str(args.kubeconfig), state_dir=str(args.state_dir),
                              publish_status_address=publish, node=args.hostname_override or "",
                              controller=args.controller_class, ingress_class=args.ingress_class,
                              publish_service=args.publish_service,
                              http_port=args.http_port,
                              https_port=args.https_port, min_sync_period=args.min_sync_period)
    return _run_async(run_controller(config), "ingress")


def cmd_dns(args: argparse.Namespace) -> int:
    from kubepy.dns.server import DNSConfig, parse_address, run_dns

    try:
        listen = [parse_address(a) for a in (args.listen or ["10.96.0.10:53"])]
        upstreams = args.upstream if args.upstream is not None else None
        metrics_bind = _host_port(args.metrics_bind_address, "--metrics-bind-address")
    except ValueError as e:
        print(f"kubepy dns: {e}", file=sys.stderr)
        return 2
    from kubepy.dns.metrics import DNSMetrics

    registry = _new_registry()
    config = DNSConfig(kubeconfig=str(args.kubeconfig), listen=listen, upstreams=upstreams, domain=args.cluster_domain,
                       metrics=DNSMetrics(registry, domain=args.cluster_domain))
    return _run_async(_with_metrics(run_dns(config), metrics_bind, registry), "dns")


def _cluster(args: argparse.Namespace):
    from kubepy.lab.cluster import Cluster

    return Cluster(args.name, args.state_dir)


def add_snapshot_parsers(sub) -> None:
    """``kubepy snapshot save|restore`` (the SQLite store) and ``kubepy etcd snapshot save|restore``."""
    snap = sub.add_parser("snapshot", help="back up or restore the API server's SQLite store") \
        .add_subparsers(dest="snapshot_command", required=True)
    p = snap.add_parser("save", help="a consistent copy of the store, also while the API server runs")
    p.add_argument("file", type=Path)
    p.add_argument("--data-dir", type=Path, required=True, help="the API server's --data-dir (its state.db)")
    p.set_defaults(func=cmd_snapshot_save)
    p = snap.add_parser("restore", help="put a snapshot in place of a stopped API server's store")
    p.add_argument("file", type=Path)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--bump-revision", type=int, default=None,
                   help="how far the revision jumps, so no client's resourceVersion is reused (default 1e9)")
    p.set_defaults(func=cmd_snapshot_restore)

    etcd = sub.add_parser("etcd", help="etcd store tools").add_subparsers(dest="etcd_command", required=True)
    p = etcd.add_parser("certs", help="an etcd member's TLS certificates, signed by the cluster CA")
    p.add_argument("--data-dir", type=Path, required=True, help="the API server's data dir (its ca.crt/ca.key)")
    p.add_argument("--name", required=True, help="the member's name (etcd --name), also a DNS SAN")
    p.add_argument("--ip", action="append", default=[], help="an address the member serves on (repeatable)")
    p.add_argument("--out", type=Path, required=True, help="where to write server/peer/client certificates")
    p.set_defaults(func=cmd_etcd_certs)
    esnap = etcd.add_parser("snapshot", help="etcd snapshots (the distribution's etcdctl)") \
        .add_subparsers(dest="etcd_snapshot_command", required=True)
    p = esnap.add_parser("save", help="etcdctl snapshot save")
    p.add_argument("file", type=Path)
    p.add_argument("--endpoints", default="http://127.0.0.1:2379")
    p.set_defaults(func=cmd_etcd_snapshot_save)
    p = esnap.add_parser("restore", help="etcdctl snapshot restore into a new member data directory")
    p.add_argument("file", type=Path)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--name", default="default")
    p.add_argument("--initial-cluster", default=None)
    p.add_argument("--initial-advertise-peer-urls", default="http://localhost:2380")
    p.set_defaults(func=cmd_etcd_snapshot_restore)


def _snapshot_result(verb: str, path: Path, info) -> int:
    print(f"{verb} {path}: revision {info.revision}, {info.keys} keys, {info.size} bytes")
    return 0


def cmd_snapshot_save(args: argparse.Namespace) -> int:
    from kubepy.store import snapshot

    try:
        return _snapshot_result("saved", args.file, snapshot.save_sqlite(args.data_dir / "state.db", args.file))
    except snapshot.SnapshotError as e:
        print(f"kubepy snapshot save: {e}", file=sys.stderr)
        return 1


def cmd_snapshot_restore(args: argparse.Namespace) -> int:
    from kubepy.store import snapshot

    try:
        info = snapshot.restore_sqlite(args.file, args.data_dir / "state.db",
                                       bump=args.bump_revision if args.bump_revision is not None
                                       else snapshot.DEFAULT_BUMP)
    except snapshot.SnapshotError as e:
        print(f"kubepy snapshot restore: {e}", file=sys.stderr)
        return 1
    return _snapshot_result("restored", args.data_dir / "state.db", info)


def cmd_etcd_certs(args: argparse.Namespace) -> int:
    from kubepy.api.certs import issue_etcd_member

    if not (args.data_dir / "ca.key").exists():
        print(f"kubepy etcd certs: no cluster CA in {args.data_dir} (ca.crt/ca.key)", file=sys.stderr)
        return 1
    try:
        files = issue_etcd_member(args.data_dir, args.out, name=args.name, ips=args.ip)
    except ValueError as e:
        print(f"kubepy etcd certs: {e}", file=sys.stderr)
        return 2
    print("\n".join(f"{k}: {v}" for k, v in files.items()))
    print(f"etcd: --cert-file={files['server_cert']} --key-file={files['server_key']} "
          f"--trusted-ca-file={files['ca']} --client-cert-auth --peer-cert-file={files['peer_cert']} "
          f"--peer-key-file={files['peer_key']} --peer-trusted-ca-file={files['ca']} --peer-client-cert-auth")
    print(f"kubepy apiserver: --etcd-cafile={files['ca']} --etcd-certfile={files['client_cert']} "
          f"--etcd-keyfile={files['client_key']}")
    return 0


def cmd_etcd_snapshot_save(args: argparse.Namespace) -> int:
    from kubepy.store import snapshot

    try:
        return _snapshot_result("saved", args.file, snapshot.save_etcd(args.endpoints, args.file))
    except snapshot.SnapshotError as e:
        print(f"kubepy etcd snapshot save: {e}", file=sys.stderr)
        return 1


def cmd_etcd_snapshot_restore(args: argparse.Namespace) -> int:
    from kubepy.store import snapshot

    try:
        info = snapshot.restore_etcd(args.file, args.data_dir, name=args.name, initial_cluster=args.initial_cluster,
                                     advertise_peer_url=args.initial_advertise_peer_urls)
    except snapshot.SnapshotError as e:
        print(f"kubepy etcd snapshot restore: {e}", file=sys.stderr)
        return 1
    _snapshot_result("restored", args.data_dir, info)
    print("start etcd on it (--data-dir), then restart every API server and component: they list again")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from kubepy.lab import DEFAULT_NAME

    kind = {}
    if args.config is not None:
        from kubepy.lab import kindconfig

        try:
            config = kindconfig.load(args.config)
        except kindconfig.ConfigError as e:
            print(f"kubepy up: {e}", file=sys.stderr)
            return 2
        conflicts = kindconfig.conflicting_flags(config, name=args.name, nodes=args.nodes,
                                                 control_planes=args.control_planes, port=args.port)
        if conflicts:
            print(f"kubepy up: --config {args.config} conflicts with {'; '.join(conflicts)}", file=sys.stderr)
            return 2
        args.name = args.name or config.name
        args.nodes, args.control_planes = config.nodes, config.control_planes
        args.port = args.port or config.api_server_port
        kind = dict(labels=config.node_labels, pod_subnet=config.pod_subnet, service_subnet=config.service_subnet)
        if config.proxy_mode is not None:
            if args.proxy_mode is not None and args.proxy_mode != config.proxy_mode:
                print(f"kubepy up: --config {args.config} conflicts with --proxy-mode {args.proxy_mode} (the file "
                      f"says networking.kubeProxyMode: {config.proxy_mode})", file=sys.stderr)
                return 2
            args.proxy_mode = config.proxy_mode
    args.name = args.name or DEFAULT_NAME
    if args.lb_range:
        from kubepy.controllers.servicelb import parse_pool

        try:
            parse_pool(args.lb_range)
        except ValueError as e:
            print(f"kubepy up: --lb-range: {e}", file=sys.stderr)
            return 2
    return _cluster(args).up(nodes=args.nodes, port=args.port, store=args.store, subnet=args.node_subnet,
                             zones=args.zones, region=args.region, lb_range=args.lb_range,
                             control_planes=args.control_planes, proxy_mode=args.proxy_mode, **kind)


def cmd_lab_supervise(args: argparse.Namespace) -> int:
    from kubepy.lab.supervisor import run_supervisor

    return run_supervisor(args.cluster_dir.absolute())


def cmd_stop_pods(args: argparse.Namespace) -> int:
    from kubepy.kubelet.shutdown import run
    return run(args)


def cmd_image_load(args: argparse.Namespace) -> int:
    return _cluster(args).image_load(args.archive)


def cmd_down(args: argparse.Namespace) -> int:
    return _cluster(args).down()


def cmd_status(args: argparse.Namespace) -> int:
    return _cluster(args).status()


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    c = _cluster(args)
    if not c.kubeconfig.exists():
        print(f"no cluster named {args.name!r} (no {c.kubeconfig})", file=sys.stderr)
        return 1
    print(c.kubeconfig)
    return 0


def cmd_kubectl(args: argparse.Namespace) -> int:
    return _cluster(args).kubectl(args.args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubepy", description="A small, real Kubernetes for Linux hosts.")
    parser.add_argument("--log-level", default=None, help="daemons default to info, user commands to warning")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("apiserver", help="run the Kubernetes API server")
    add_apiserver_flags(p)
    p.set_defaults(func=cmd_apiserver)

    p = sub.add_parser("scheduler", help="run the scheduler")
    p.add_argument("--kubeconfig", type=Path, help="overrides the config file's clientConnection.kubeconfig")
    p.add_argument("--config", type=Path, help="a KubeSchedulerConfiguration file (kubescheduler.config.k8s.io/v1)")
    add_leader_election_flags(p)
    add_healthz_flags(p, 10259)
    p.set_defaults(func=cmd_scheduler)

    p = sub.add_parser("controller-manager", help="run the controllers")
    p.add_argument("--kubeconfig", required=True, type=Path)
    add_controller_flags(p)
    add_leader_election_flags(p)
    p.add_argument("--use-service-account-credentials", action="store_true",
                   help="run each controller as its own ServiceAccount in kube-system (tokens from the "
                        "TokenRequest API), holding only its system:controller:<name> role")
    p.add_argument("--default-not-ready-toleration-seconds", type=int, default=300)
    p.add_argument("--default-unreachable-toleration-seconds", type=int, default=300)
    add_healthz_flags(p, 10257)
    p.set_defaults(func=cmd_controller_manager)

    p = sub.add_parser("proxy", help="run kube-proxy: Services as iptables or nftables rules on this node")
    p.add_argument("--kubeconfig", type=Path)
    p.add_argument("--hostname-override", default=None, help="this node's name (default: the host name)")
    p.add_argument("--node-ip", action="append", help="this node's address(es), for NodePorts")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16")
    p.add_argument("--service-cluster-ip-range", default="10.96.0.0/12")
    p.add_argument("--bridge", default="cni0", help="the pod bridge (hairpin mode is kept on its ports)")
    p.add_argument("--no-masquerade-pod-egress", action="store_true",
                   help="don't masquerade pod traffic that leaves the cluster CIDR")
    p.add_argument("--healthz-port", type=int, default=10256,
                   help="port of /healthz on every address (peers probe it to pick who announces "
                        "load-balancer addresses; 0: none)")
    p.add_argument("--healthz-bind-address", default="0.0.0.0", metavar="ADDR[:PORT]",
                   help="address (and port) of /healthz and the Services' healthCheckNodePorts "
                        "(default 0.0.0.0; a node's InternalIP keeps them off its other networks)")
    p.add_argument("--metrics-bind-address", default="127.0.0.1:10249", metavar="HOST:PORT",
                   help="where /metrics, /healthz, /livez and /readyz are served over plain HTTP "
                        "(default 127.0.0.1:10249, as upstream; '' for none)")
    p.add_argument("--sync-period", "--iptables-sync-period", "--nftables-sync-period", type=_duration, default=30.0,
                   help="how often the rules are rewritten in full even without a change (default 30s, as upstream)")
    p.add_argument("--proxy-mode", choices=("iptables", "nftables"), default="iptables",
                   help="iptables: kube-proxy's iptables layout (iptables-restore); nftables: its nftables layout, "
                        "table ip kube-proxy with verdict maps (nft -f). Starting in one mode removes the other's rules")
    p.add_argument("--cleanup", action="store_true",
                   help="remove every rule kube-proxy made (both modes), then exit")
    p.set_defaults(func=cmd_proxy)

    p = sub.add_parser("netpol", help="run the network-policy agent: NetworkPolicies as iptables rules on this node")
    p.add_argument("--kubeconfig", type=Path)
    p.add_argument("--hostname-override", default=None, help="this node's name (default: the host name)")
    p.add_argument("--pod-cidr", default=None, help="this node's pod CIDR (default: the Node's spec.podCIDR)")
    p.add_argument("--min-sync-period", type=float, default=0.1,
                   help="seconds between two syncs at least (a burst of changes becomes one sync)")
    p.add_argument("--metrics-bind-address", default="127.0.0.1:10262", metavar="HOST:PORT",
                   help="where /metrics, /healthz, /livez and /readyz are served over plain HTTP "
                        "(default 127.0.0.1:10262; '' for none)")
    p.add_argument("--sync-period", type=_duration, default=30.0,
                   help="how often the rules are rewritten in full even without a change (default 30s)")
    p.add_argument("--cleanup", action="store_true", help="remove every rule the agent made, then exit")
    p.set_defaults(func=cmd_netpol)

    p = sub.add_parser("ingress", help="run the ingress controller: Ingresses of its class served by nginx on "
                       "this node's ports 80 and 443")
    p.add_argument("--kubeconfig", required=True, type=Path)
    p.add_argument("--state-dir", required=True, type=Path,
                   help="nginx's directory: nginx.conf (the rendered configuration), certs/, logs, pid")
    p.add_argument("--publish-status-address", default="",
                   help="A,B,...: the addresses written to the Ingresses' status.loadBalancer "
                   "(ingress-nginx's flag; the same on every node)")
    p.add_argument("--publish-service", default="",
                   help="NAMESPACE/NAME of a LoadBalancer Service in front of the controllers: its address is "
                   "written to the Ingresses' status (ingress-nginx's flag; --publish-status-address until it has one)")
    p.add_argument("--hostname-override", default=None, help="this node's name (for logs and Events)")
    p.add_argument("--controller-class", default="kubepy.io/ingress",
                   help="the IngressClass spec.controller this controller serves")
    p.add_argument("--ingress-class", default="kubepy",
                   help="the IngressClass to create (as the default class) if none of that name exists; '' for none")
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--min-sync-period", type=float, default=0.1,
                   help="seconds between two nginx reloads at least (a burst of changes becomes one reload)")
    p.set_defaults(func=cmd_ingress)

    p = sub.add_parser("dns", help="run cluster DNS (<svc>.<ns>.svc.cluster.local; forwards the rest)")
    p.add_argument("--kubeconfig", required=True, type=Path)
    p.add_argument("--listen", action="append", help="ADDR:PORT to serve on, UDP and TCP (default 10.96.0.10:53)")
    p.add_argument("--upstream", action="append", default=None,
                   help="resolver for names outside the cluster (default: /etc/resolv.conf's)")
    p.add_argument("--cluster-domain", default="cluster.local")
    p.add_argument("--metrics-bind-address", default="127.0.0.1:9153", metavar="HOST:PORT",
                   help="where /metrics (CoreDNS' coredns_dns_* series), /healthz, /livez and /readyz are served "
                        "over plain HTTP (default 127.0.0.1:9153, CoreDNS' metrics port; '' for none)")
    p.set_defaults(func=cmd_dns)

    p = sub.add_parser("stop-pods", help="stop every pod container on this node (for a node shutdown)")
    p.add_argument("--container-runtime-endpoint", default="/run/containerd/containerd.sock")
    p.add_argument("--containerd-namespace", default="kubepy")
    p.add_argument("--grace-period", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    p.set_defaults(func=cmd_stop_pods)

    # Listed for --help; `main` hands `kubepy kubelet ...` to the kubelet's own parser.
    sub.add_parser("kubelet", help="run the node agent (pods on containerd); kubepy kubelet -h for flags")

    p = sub.add_parser("metrics-server", help="run the resource metrics API (metrics.k8s.io) add-on")
    p.add_argument("--kubeconfig", required=True, type=Path, help="its own identity (system:metrics-server)")
    p.add_argument("--bind-address", default="0.0.0.0")
    p.add_argument("--secure-port", type=int, default=4443)
    p.add_argument("--tls-cert-file", type=Path, required=True)
    p.add_argument("--tls-private-key-file", type=Path, required=True)
    p.add_argument("--metric-resolution", type=_duration, default=15.0,
                   help="how often every kubelet is scraped (default 15s, as upstream)")
    p.add_argument("--kubelet-request-timeout", type=_duration, default=10.0)
    p.add_argument("--kubelet-insecure-tls", action="store_true",
                   help="do not verify the kubelets' serving certificates")
    add_healthz_flags(p, 4444)
    p.set_defaults(func=cmd_metrics_server)

    p = sub.add_parser("dashboard", help="run the web dashboard (HTTPS): users log in with their own bearer token")
    p.add_argument("--server", default=None, help="the API server's URL (default: --kubeconfig's)")
    p.add_argument("--ca", type=Path, default=None, help="the CA of the API server's certificate (default: "
                   "--kubeconfig's, else the system's)")
    p.add_argument("--kubeconfig", type=Path, default=None,
                   help="read only the server URL and CA from it; its credentials are never used")
    p.add_argument("--bind-address", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--tls-cert-file", "--tls-cert", dest="tls_cert_file", type=Path, default=None,
                   help="the dashboard's serving certificate (kubepy controlplane issues one by the cluster CA)")
    p.add_argument("--tls-private-key-file", "--tls-key", dest="tls_private_key_file", type=Path, default=None)
    add_healthz_flags(p, 8444)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("controlplane", help="run API server, scheduler, controller manager, metrics server "
                                            "and dashboard, supervised")
    add_apiserver_flags(p)
    add_controller_flags(p)
    p.add_argument("--scheduler-config", type=Path, default=None,
                   help="a KubeSchedulerConfiguration file for the scheduler (its --config)")
    p.add_argument("--metrics-server-port", type=int, default=4443,
                   help="the metrics server's port on --advertise-address (0: no metrics server; without "
                        "--advertise-address there is none either)")
    p.add_argument("--metric-resolution", type=_duration, default=15.0,
                   help="the metrics server's scrape interval (default 15s)")
    p.add_argument("--dashboard-port", type=int, default=8443,
                   help="the web dashboard's HTTPS port on --advertise-address (0: no dashboard; without "
                        "--advertise-address there is none either)")
    p.add_argument("--startup-grace", type=_duration, default=240.0,
                   help="how long a child may take to become healthy (the API server: ready) before it is "
                        "killed, as a startup probe's failureThreshold x periodSeconds (default 240s, kubeadm's)")
    p.add_argument("--ready-file", type=Path, default=None,
                   help="keep 0 in this file while the API server answers /readyz, 1 otherwise (for keepalived's "
                        "track_file: the virtual address follows a ready API server)")
    add_leader_election_flags(p)
    p.set_defaults(func=cmd_controlplane)

    from kubepy.tokencli import add_token_parser

    add_token_parser(sub)
    add_snapshot_parsers(sub)

    from kubepy.lab import DEFAULT_NAME, DEFAULT_ROOT

    def lab(name: str, help: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--name", default=DEFAULT_NAME, help="which lab cluster (several may coexist)")
        p.add_argument("--state-dir", type=Path, default=DEFAULT_ROOT, help=argparse.SUPPRESS)
        p.set_defaults(func=func)
        return p

    p = lab("up", "bring up a lab cluster on this host", cmd_up)
    p.add_argument("--port", type=int, default=None, help="API server port (default 6443 or the next free one)")
    # No defaults here: on an existing cluster an unset flag means "as it is"; a new one gets sqlite and 3 nodes.
    p.add_argument("--store", default=None, help="sqlite (default), etcd (a private etcd) or etcd://HOST:PORT")
    p.add_argument("--nodes", type=int, default=None, help="how many nodes (network namespaces) to run (default 3); "
                   "more than an existing cluster has adds the missing ones")
    p.add_argument("--node-subnet", default=None, help="the nodes' network (default 172.30.0.0/24, per name)")
    p.add_argument("--zones", default=None, metavar="A,B,…",
                   help="label the nodes topology.kubernetes.io/zone round-robin with these zones (node 1 in A, "
                        "node 2 in B, …) so zone spreading can be tried on one host; every node always carries "
                        "kubernetes.io/hostname")
    p.add_argument("--region", default=None, help="label every node topology.kubernetes.io/region=REGION")
    p.add_argument("--lb-range", default=None, metavar="A-B",
                   help="addresses for LoadBalancer Services (default: .200-.219 of the node subnet)")
    p.add_argument("--control-planes", type=int, default=None,
                   help="control-plane nodes (default 1 on the host); N > 1: each in a namespace with an etcd "
                        "member, API server, leader-elected scheduler and controller manager, behind HAProxy")
    p.add_argument("--proxy-mode", choices=("iptables", "nftables"), default=None,
                   help="kube-proxy's mode on every node (default iptables; kind's networking.kubeProxyMode)")
    p.add_argument("--config", type=Path, default=None, metavar="CLUSTER.YAML",
                   help="a kind cluster file (kind.x-k8s.io/v1alpha4): its control-plane and worker nodes, worker "
                        "labels, name, networking.podSubnet/serviceSubnet/apiServerPort; any field kubepy cannot "
                        "honour is refused by name")
    # Unset unless given, so a --name that contradicts the file's name is noticed (cmd_up: default kubepy).
    p.set_defaults(name=None)
    lab("down", "stop a lab cluster and remove everything it made", cmd_down)
    lab("status", "health of a lab cluster's components", cmd_status)
    lab("kubeconfig", "print the path of a lab cluster's admin kubeconfig", cmd_kubeconfig)
    image = sub.add_parser("image", help="container images").add_subparsers(dest="image_command", required=True)
    p = image.add_parser("load", help="import an OCI archive into every node of a lab cluster")
    p.add_argument("archive", type=Path)
    p.add_argument("--name", default=DEFAULT_NAME)
    p.add_argument("--state-dir", type=Path, default=DEFAULT_ROOT, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_image_load)
    internals = sub.add_parser("lab", help="lab cluster internals").add_subparsers(dest="lab_command", required=True)
    p = internals.add_parser("supervise", help="keep a lab cluster's daemons running (kubepy up starts two)")
    p.add_argument("--cluster-dir", required=True, type=Path)
    p.set_defaults(func=cmd_lab_supervise)
    p = lab("kubectl", "run the bundled kubectl against a lab cluster", cmd_kubectl)
    p.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "kubelet" in argv:
        # The kubelet owns its flags (kubepy.kubelet.config) and its signal handling.
        i = argv.index("kubelet")
        if argv[:i] in ([], ["--log-level", argv[1] if len(argv) > 1 else ""]):
            from kubepy.kubelet.kubelet import main as kubelet_main

            return kubelet_main(argv[:i] + argv[i + 1:])
    args = build_parser().parse_args(argv)
    quiet = args.command in ("up", "down", "status", "kubeconfig", "kubectl", "image", "token")
    args.log_level = args.log_level or ("warning" if quiet else "info")
    _setup_logging(args.log_level)
    return int(args.func(args) or 0)
