"""``KubeletConfig``: everything one kubelet needs to know, and its command-line flags.

Flags are named like Kubernetes' kubelet flags where one exists:

==================================== =============================== =========================================
flag                                 field                           default
==================================== =============================== =========================================
``--hostname-override``              node_name                       the host name
``--node-ip``                        node_ip                         (required)
``--server``                         server                          taken from the kubeconfig
``--kubeconfig``                     kubeconfig                      ROOT/kubelet.kubeconfig when it exists
``--bootstrap-token-file``           bootstrap_token_file            none (join: POST /kubepy/v1/join)
``--ca-file`` (``--client-ca-file``) ca_file                         none
``--root-dir``                       root_dir                        /var/lib/kubepy/kubelet
``--pod-logs-dir``                   log_dir                         /var/log/kubepy/pods
``--container-runtime-endpoint``     container_runtime_endpoint      /run/kubepy/containerd/containerd.sock
``--containerd-namespace``           containerd_namespace            kubepy
``--cgroup-root``                    cgroup_root                     kubepy (pods: /kubepy/<node>/pod<uid>)
``--bridge``                         bridge                          cni0
``--cluster-dns``                    cluster_dns                     10.96.0.10
``--cluster-domain``                 cluster_domain                  cluster.local
``--port``                           port                            10250 (the logs/exec server)
``--node-status-update-frequency``   node_status_update_frequency    10s
``--node-lease-duration-seconds``    lease_duration                  40
``--node-lease-renew-interval``      lease_renew_interval            10s
``--sync-frequency``                 sync_frequency                  10s (periodic resync of every pod)
``--eviction-monitoring-interval``   eviction_monitoring_interval    10s (emptyDir sizeLimit usage checks)
``--pod-infra-container-image``      pod_infra_container_image       docker.io/library/busybox:1.36
``--max-pods``                       max_pods                        110
``--image-pull-backoff-initial``     image_pull_backoff              10s (doubles to the max)
``--crash-loop-backoff-max``         backoff_max                     5m (container restarts start at 10s)
``--register-node``                  register_node                   true
``--node-labels``                    node_labels                     none (k=v,k=v)
``--runtime-health-interval``        runtime_health_interval         5s (``ctr version`` probe)
``--runtime-down-threshold``         runtime_down_threshold          30s (no answer that long: Ready=False)
``--registry-hosts-dir``             registry_hosts_dir              none (ctr's defaults: HTTPS, docker.io's host)
``--local-storage-capacity``         local_storage_capacity          none (the free space under ``<root-dir>/storage``)
==================================== =============================== =========================================

Credentials never go on the command line (``ps`` shows it to every local
user): the bootstrap token is read from ``--bootstrap-token-file`` (mode
0600; ``kubepy token create`` makes one, valid 24 h by default) only when
the kubelet has no credential of its own yet. Joining saves the node's token
and kubeconfig in ROOT (``kubelet.token``, ``kubelet.kubeconfig``, 0600 in
the 0700 root dir); every later start, restart or reboot reuses them and
never joins again. ``--bootstrap-token TOKEN`` is refused with a message.

``--registry-hosts-dir`` is containerd's registry hosts directory, the one
its CRI plugin reads from ``config_path`` (``/etc/containerd/certs.d`` on
most hosts): ``<registry>/hosts.toml`` names mirrors, plain-HTTP
registries and CAs. The kubelet pulls with ``ctr``, which resolves
registries client-side, so the directory is the kubelet's to pass on
(``ctr images pull --hosts-dir``), not containerd's.

The pod infra image must be in containerd's store (no registry is
reachable on the development machines): the kubelet runs its ``sleep`` as
the pod's sandbox process, which holds the pod's IPC and UTS namespaces.
"""

from __future__ import annotations

import argparse
import socket
from dataclasses import dataclass, field
from pathlib import Path
from kubepy.meta.quantity import parse_quantity

__all__ = ["KubeletConfig", "add_kubelet_flags", "config_from_args", "parse_duration"]

DEFAULT_ROOT = Path("/var/lib/kubepy/kubelet")
DEFAULT_LOG_DIR = Path("/var/log/kubepy/pods")
DEFAULT_ENDPOINT = "/run/kubepy/containerd/containerd.sock"
DEFAULT_INFRA_IMAGE = "docker.io/library/busybox:1.36"


@dataclass
class KubeletConfig:
    node_name: str = field(default_factory=lambda: socket.gethostname().lower())
    node_ip: str = "127.0.0.1"
    server: str | None = None
    kubeconfig: Path | None = None
    bootstrap_token_file: Path | None = None
    ca_file: Path | None = None
    root_dir: Path = DEFAULT_ROOT
    log_dir: Path = DEFAULT_LOG_DIR
    container_runtime_endpoint: str = DEFAULT_ENDPOINT
    containerd_namespace: str = "kubepy"
    cgroup_root: str = "kubepy"
    bridge: str = "cni0"
    cluster_dns: str = "10.96.0.10"
    cluster_domain: str = "cluster.local"
    port: int = 10250
    healthz_port: int = 10248              # plain-HTTP /healthz, /livez, /readyz (0: none), as upstream
    healthz_bind_address: str = "127.0.0.1"
    node_status_update_frequency: float = 10.0
    lease_duration: int = 40
    lease_renew_interval: float = 10.0
    sync_frequency: float = 10.0
    eviction_monitoring_interval: float = 10.0
    pod_infra_container_image: str = DEFAULT_INFRA_IMAGE
    max_pods: int = 110
    image_pull_backoff: float = 10.0
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    register_node: bool = True
    node_labels: dict[str, str] = field(default_factory=dict)
    runtime_health_interval: float = 5.0
    runtime_down_threshold: float = 30.0
    registry_hosts_dir: Path | None = None
    local_storage_capacity: int | None = None  # bytes the local-path volumes may take (None: the disk's free space)

    @property
    def token_path(self) -> Path:
        return self.root_dir / "kubelet.token"

    @property
    def own_kubeconfig(self) -> Path:
        return self.root_dir / "kubelet.kubeconfig"

    @property
    def pods_dir(self) -> Path:
        return self.root_dir / "pods"

    @property
    def ipam_dir(self) -> Path:
        return self.root_dir / "ipam"


def parse_duration(text: str) -> float:
    """``10s``, ``5m``, ``1h``, ``250ms`` or plain seconds."""
    text = text.strip()
    for suffix, mult in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * mult
    return float(text)


def _labels(text: str) -> dict[str, str]:
    out = {}
    for item in filter(None, text.split(",")):
        k, _, v = item.partition("=")
        out[k.strip()] = v.strip()
    return out


class _RefusedSecretFlag(argparse.Action):
    """``--bootstrap-token`` put the secret in every process listing; say what to use instead."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=1, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        parser.error("--bootstrap-token shows the token to every user of this host (ps); write it to a "
                     "file only root can read and pass --bootstrap-token-file FILE")


def add_kubelet_flags(p: argparse.ArgumentParser) -> None:
    d = KubeletConfig()
    p.add_argument("--hostname-override", dest="node_name", default=d.node_name)
    p.add_argument("--node-ip", required=True)
    p.add_argument("--server", default=None, help="API server URL (with --bootstrap-token-file); several, comma-separated, "
                        "are failed over between")
    p.add_argument("--kubeconfig", type=Path, default=None)
    p.add_argument("--bootstrap-token-file", type=Path, default=None,
                   help="file (mode 0600) with the token to join with, when there is no saved credential")
    p.add_argument("--bootstrap-token", action=_RefusedSecretFlag, help=argparse.SUPPRESS)
    p.add_argument("--ca-file", "--client-ca-file", dest="ca_file", type=Path, default=None)
    p.add_argument("--root-dir", type=Path, default=d.root_dir)
    p.add_argument("--pod-logs-dir", dest="log_dir", type=Path, default=d.log_dir)
    p.add_argument("--container-runtime-endpoint", default=d.container_runtime_endpoint)
    p.add_argument("--containerd-namespace", default=d.containerd_namespace)
    p.add_argument("--cgroup-root", default=d.cgroup_root)
    p.add_argument("--bridge", default=d.bridge)
    p.add_argument("--cluster-dns", default=d.cluster_dns)
    p.add_argument("--cluster-domain", default=d.cluster_domain)
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--healthz-port", type=int, default=d.healthz_port,
                   help="plain-HTTP /healthz, /livez and /readyz (default 10248; 0 for none); they fail while the "
                        "kubelet's event loop lags")
    p.add_argument("--healthz-bind-address", default=d.healthz_bind_address)
    p.add_argument("--node-status-update-frequency", type=parse_duration, default=d.node_status_update_frequency)
    p.add_argument("--node-lease-duration-seconds", dest="lease_duration", type=int, default=d.lease_duration)
    p.add_argument("--node-lease-renew-interval", dest="lease_renew_interval", type=parse_duration,
                   default=d.lease_renew_interval)
    p.add_argument("--sync-frequency", type=parse_duration, default=d.sync_frequency)
    p.add_argument("--eviction-monitoring-interval", type=parse_duration, default=d.eviction_monitoring_interval)
    p.add_argument("--pod-infra-container-image", default=d.pod_infra_container_image)
    p.add_argument("--max-pods", type=int, default=d.max_pods)
    p.add_argument("--image-pull-backoff-initial", dest="image_pull_backoff", type=parse_duration,
                   default=d.image_pull_backoff)
    p.add_argument("--crash-loop-backoff-max", dest="backoff_max", type=parse_duration, default=d.backoff_max)
    p.add_argument("--register-node", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
    p.add_argument("--node-labels", type=_labels, default={})
    p.add_argument("--runtime-health-interval", type=parse_duration, default=d.runtime_health_interval)
    p.add_argument("--runtime-down-threshold", type=parse_duration, default=d.runtime_down_threshold)
    p.add_argument("--registry-hosts-dir", type=Path, default=None,
                   help="containerd hosts dir (<registry>/hosts.toml: mirrors, plain HTTP) for image pulls")
    p.add_argument("--local-storage-capacity", type=lambda s: int(parse_quantity(s)), default=None,
                   help="what local-path volumes may take on this node (e.g. 50Gi); default: the free space of "
                        "the filesystem holding <root-dir>/storage")


def config_from_args(args: argparse.Namespace) -> KubeletConfig:
    names = set(KubeletConfig.__dataclass_fields__)
    return KubeletConfig(**{k: v for k, v in vars(args).items() if k in names})
