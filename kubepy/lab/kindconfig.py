"""``kubepy up --config cluster.yaml``: kind's own cluster file (``kind.x-k8s.io/v1alpha4``), read
into the lab's terms.

::

    kind: Cluster                          KindCluster(name="dev",
    apiVersion: kind.x-k8s.io/v1alpha4                 control_planes=1,       -> --control-planes 1
    name: dev                                          worker_labels=({}, {"tier": "db"}),
    nodes:                                             pod_subnet="10.244.0.0/16", …)
    - role: control-plane                  worker k (in file order) is lab node <name>-node<k>
    - role: worker
    - role: worker
      labels: {tier: db}
    networking: {podSubnet: 10.244.0.0/16}

What kubepy honours: the node list (control-plane entries become
``--control-planes``, workers become the lab's nodes, each worker's
``labels`` its kubelet's ``--node-labels``), the cluster ``name``,
``networking.podSubnet``/``serviceSubnet``/``apiServerPort``, and
``kubeProxyMode`` (``iptables`` or ``nftables``: ``--proxy-mode``), and
``ipFamily: ipv4``, ``apiServerAddress:
127.0.0.1``, ``disableDefaultCNI: false`` (what kubepy does anyway). Every
other field kind knows is refused by its path when it is set (kind would
act on it; silently ignoring it would make a different cluster than the file
describes), and a field kind does not know is refused as kind's strict
decoder refuses it. Control-plane ``labels`` are refused too: a lab
control-plane node runs no kubelet, so there is no Node to carry them.

A file with no worker gets one lab node: kind's lone control-plane node runs
the pods, kubepy's control plane does not.

Errors: :class:`ConfigError` only, its text ``<field path>: <reason>``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from kubepy.meta.selectors import validate_label_key, validate_label_value

__all__ = ["API_VERSION", "ConfigError", "KindCluster", "conflicting_flags", "load", "parse"]

API_VERSION = "kind.x-k8s.io/v1alpha4"
NODE_CIDR_PREFIX = 24   # the controller manager's --node-cidr-mask-size in the lab
UNSUPPORTED = "not supported by kubepy"
PROXY_MODES = ("iptables", "nftables")  # kubepy proxy --proxy-mode

# kind's v1alpha4 fields kubepy cannot honour (refused when set to anything but empty).
_REFUSED_CLUSTER = ("featureGates", "runtimeConfig", "kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902",
                    "containerdConfigPatches", "containerdConfigPatchesJSON6902")
_REFUSED_NODE = ("image", "extraMounts", "extraPortMappings", "kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902")
_CLUSTER_FIELDS = {"kind", "apiVersion", "name", "nodes", "networking", *_REFUSED_CLUSTER}
_NODE_FIELDS = {"role", "labels", *_REFUSED_NODE}
_NETWORKING_FIELDS = {"ipFamily", "apiServerPort", "apiServerAddress", "podSubnet", "serviceSubnet",
                      "disableDefaultCNI", "kubeProxyMode", "dnsSearch"}
# networking fields whose only value kubepy honours is what it does anyway.
_ONLY = {"ipFamily": ("ipv4", "IPv4 only"),
         "apiServerAddress": ("127.0.0.1", "the API server is published on the host's loopback and lab bridge"),
         "disableDefaultCNI": (False, "the kubelet wires pods itself")}
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class ConfigError(ValueError):
    """A field of the file kubepy refuses: ``str()`` is ``<path>: <reason>``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


@dataclass(frozen=True)
class KindCluster:
    """What a kind cluster file asks of ``kubepy up`` (None: the file leaves it to kubepy)."""

    control_planes: int = 1
    worker_labels: tuple[dict[str, str], ...] = ()   # one entry per worker, in file order
    name: str | None = None
    pod_subnet: str | None = None
    service_subnet: str | None = None
    api_server_port: int | None = None
    proxy_mode: str | None = None   # networking.kubeProxyMode: iptables or nftables

    @property
    def nodes(self) -> int:
        """Lab nodes: one per worker, or one when there is none (kind's control plane would run the pods)."""
        return len(self.worker_labels) or 1

    @property
    def node_labels(self) -> list[dict[str, str]]:
        """Labels of lab node i at index i-1."""
        return [dict(labels) for labels in self.worker_labels] or [{}]


def load(path: Path) -> KindCluster:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(str(path), e.strerror or str(e)) from e
    return parse(text, source=str(path))


def parse(text: str, *, source: str = "file") -> KindCluster:
    """Validate a kind cluster file's text; the first field kubepy refuses raises :class:`ConfigError`
    (``source`` names the file in errors about the whole of it)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(source, f"not YAML{where}: {getattr(e, 'problem', None) or e}") from e
    if not isinstance(doc, dict):
        raise ConfigError(source, f"not a kind Cluster (a YAML mapping), but {type(doc).__name__}")
    for field, want in (("kind", "Cluster"), ("apiVersion", API_VERSION)):
        if doc.get(field) != want:
            got = "missing" if field not in doc else repr(doc[field])
            raise ConfigError(field, f"{got}: must be {want}")
    _refuse_fields(doc, "", _CLUSTER_FIELDS, _REFUSED_CLUSTER)
    name = doc.get("name")
    if name is not None and not (isinstance(name, str) and len(name) <= 32 and _NAME_RE.fullmatch(name)):
        raise ConfigError("name", f"{name!r}: must be lowercase letters, digits and '-' (at most 32)")
    control_planes, workers = _nodes(doc.get("nodes"))
    networking = _mapping(doc.get("networking"), "networking")
    _refuse_fields(networking, "networking.", _NETWORKING_FIELDS, ("dnsSearch",))
    for field, (value, why) in _ONLY.items():
        if field in networking and networking[field] is not None and networking[field] != value:
            raise ConfigError(f"networking.{field}", f"{networking[field]!r}: {UNSUPPORTED} ({why})")
    proxy_mode = networking.get("kubeProxyMode")
    if proxy_mode is not None and proxy_mode not in PROXY_MODES:
        raise ConfigError("networking.kubeProxyMode", f"{proxy_mode!r}: {UNSUPPORTED} (kube-proxy's modes here: "
                                                      f"{', '.join(PROXY_MODES)})")
    port = networking.get("apiServerPort")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
        raise ConfigError("networking.apiServerPort", f"{port!r}: must be a port number (0: any free port)")
    pod = _subnet(networking.get("podSubnet"), "networking.podSubnet")
    service = _subnet(networking.get("serviceSubnet"), "networking.serviceSubnet")
    nodes = len(workers) or 1
    if pod is not None and (pod.prefixlen > NODE_CIDR_PREFIX or 2 ** (NODE_CIDR_PREFIX - pod.prefixlen) < nodes):
        raise ConfigError("networking.podSubnet", f"{pod}: too small for a /{NODE_CIDR_PREFIX} per node "
                                                  f"on {nodes} nodes")
    if service is not None and not 12 <= service.prefixlen <= 28:
        raise ConfigError("networking.serviceSubnet", f"{service}: the prefix must be /12 to /28 "
                                                      "(cluster DNS is its 10th address)")
    if pod is not None and service is not None and pod.overlaps(service):
        raise ConfigError("networking.serviceSubnet", f"{service} overlaps networking.podSubnet {pod}")
    return KindCluster(control_planes=control_planes, worker_labels=tuple(workers), name=name,
                       pod_subnet=str(pod) if pod else None, service_subnet=str(service) if service else None,
                       api_server_port=port or None, proxy_mode=proxy_mode)


def conflicting_flags(config: KindCluster, *, name: str | None, nodes: int | None, control_planes: int | None,
                      port: int | None) -> list[str]:
    """``kubepy up`` flags given with ``--config`` that ask for something else than the file does."""
    out = []
    if name is not None and config.name is not None and name != config.name:
        out.append(f"--name {name} (the file's name is {config.name})")
    if nodes is not None and nodes != config.nodes:
        out.append(f"--nodes {nodes} (the file makes {config.nodes} node{'s' * (config.nodes != 1)})")
    if control_planes is not None and control_planes != config.control_planes:
        out.append(f"--control-planes {control_planes} (the file has {config.control_planes})")
    if port is not None and config.api_server_port is not None and port != config.api_server_port:
        out.append(f"--port {port} (the file's networking.apiServerPort is {config.api_server_port})")
    return out


def _nodes(raw) -> tuple[int, list[dict[str, str]]]:
    if raw is None or raw == []:
        return 1, []   # kind's default: one control-plane node
    if not isinstance(raw, list):
        raise ConfigError("nodes", "must be a list")
    control_planes, workers = 0, []
    for i, node in enumerate(raw):
        path = f"nodes[{i}]"
        node = _mapping(node, path)
        _refuse_fields(node, f"{path}.", _NODE_FIELDS, _REFUSED_NODE)
        role = node.get("role", "control-plane")
        labels = _labels(node.get("labels"), f"{path}.labels")
        if role == "control-plane":
            control_planes += 1
            if labels:
                raise ConfigError(f"{path}.labels", f"{UNSUPPORTED} on a control-plane node "
                                                    "(it runs no kubelet here; label a worker)")
        elif role == "worker":
            workers.append(labels)
        else:
            raise ConfigError(f"{path}.role", f"{role!r}: must be control-plane or worker")
    if not control_planes:
        raise ConfigError("nodes", "needs at least one node with role: control-plane")
    return control_planes, workers


def _labels(raw, path: str) -> dict[str, str]:
    labels = _mapping(raw, path)
    out = {}
    for key, value in labels.items():
        # YAML reads `ready: true` as a bool; kind's labels are strings, so take its text as kind would.
        text = ("true" if value else "false") if isinstance(value, bool) else "" if value is None else str(value)
        why = validate_label_key(str(key)) or validate_label_value(text)
        if why:
            raise ConfigError(f"{path}.{key}", why)
        out[str(key)] = text
    from kubepy.api.nodeauth import forbidden_labels

    if bad := forbidden_labels(out, {}):
        raise ConfigError(f"{path}.{bad[0]}", "a kubelet may not set this label on its Node (NodeRestriction)")
    return out


def _subnet(raw, path: str) -> ipaddress.IPv4Network | None:
    if raw is None:
        return None
    try:
        net = ipaddress.ip_network(str(raw))
    except ValueError as e:
        raise ConfigError(path, f"{raw!r}: {e}") from e
    if net.version != 4:
        raise ConfigError(path, f"{raw}: {UNSUPPORTED} (IPv4 only)")
    return net


def _mapping(raw, path: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(path, "must be a mapping")
    return raw


def _refuse_fields(doc: dict, prefix: str, known: set[str], refused: tuple[str, ...]) -> None:
    for key in doc:
        if key not in known:
            raise ConfigError(f"{prefix}{key}", "unknown field (not in kind's v1alpha4 Cluster)")
    for key in refused:
        if doc.get(key) not in (None, "", [], {}):
            raise ConfigError(f"{prefix}{key}", UNSUPPORTED)
