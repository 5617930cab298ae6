"""Server-side printing: the columns and cells of a ``meta.k8s.io/v1`` Table.

Role: when kubectl asks for ``application/json;as=Table`` the API server, not
kubectl, decides what ``kubectl get`` prints.  This module reproduces
Kubernetes' printers (pkg/printers/internalversion) for the kinds kubepy
serves: ``table_columns`` gives the column definitions and
``table_row_cells`` the cells of one object's row.  Like Kubernetes' server,
rows always carry the priority-1 ("wide") cells too; kubectl hides those
columns unless ``-o wide``.  The API layer wraps these in the Table envelope.

Column names use Kubernetes' casing ("Nominated Node"); kubectl upper-cases
them when printing.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

from kubepy import kinds
from kubepy.kinds import Printer
from kubepy.meta.selectors import label_selector_from_dict

__all__ = ["table_columns", "table_row_cells", "printer_for", "human_duration"]

# ---------------------------------------------------------------------------
# Column definitions
# ---------------------------------------------------------------------------

_NAME_DOC = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources "
    "may allow a client to request the generation of an appropriate name automatically. Name is primarily "
    "intended for creation idempotence and configuration definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_AGE_DOC = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not "
    "guaranteed to be set in happens-before order across separate operations. Clients may not set this value. "
    "It is represented in RFC3339 form and is in UTC."
)
_CONTAINERS_DOC = "Names of each container in the template."
_IMAGES_DOC = "Images referenced by each container in the template."


def _col(name: str, description: str, *, type_: str = "string", priority: int = 0, format_: str = "") -> dict:
    return {"name": name, "type": type_, "format": format_, "description": description, "priority": priority}


def _name_col(priority: int = 0) -> dict:
    return _col("Name", _NAME_DOC, format_="name", priority=priority)


def _age_col() -> dict:
    return _col("Age", _AGE_DOC)


# Per kind, in Kubernetes' order; priority-1 columns are the "-o wide" extras.
_POD_COLUMNS = (
    _name_col(),
    _col("Ready", "The aggregate readiness state of this pod for accepting traffic."),
    _col("Status", "The aggregate status of the containers in this pod."),
    _col("Restarts", "The number of times the containers in this pod have been restarted and when the "
                     "last container in this pod has restarted."),
    _age_col(),
    _col("IP", "IP address allocated to the pod. Routable at least within the cluster.", priority=1),
    _col("Node", "NodeName indicates in which node this pod is scheduled.", priority=1),
    _col("Nominated Node", "nominatedNodeName is set when this pod preempts other pods on the node.", priority=1),
    _col("Readiness Gates", "If specified, all readiness gates will be evaluated for pod readiness.", priority=1),
)
_DEPLOYMENT_COLUMNS = (
    _name_col(),
    _col("Ready", "Number of the pod with ready state"),
    _col("Up-to-date", "Total number of non-terminated pods targeted by this deployment that have the "
                       "desired template spec."),
    _col("Available", "Total number of available pods (ready for at least minReadySeconds) targeted by "
                      "this deployment."),
    _age_col(),
    _col("Containers", _CONTAINERS_DOC, priority=1),
    _col("Images", _IMAGES_DOC, priority=1),
    _col("Selector", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be "
                     "the ones affected by this deployment.", priority=1),
)
_REPLICASET_COLUMNS = (
    _name_col(),
    _col("Desired", "Replicas is the number of desired pods.", type_="integer"),
    _col("Current", "Replicas is the most recently observed number of non-terminating pods.", type_="integer"),
    _col("Ready", "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
         type_="integer"),
    _age_col(),
    _col("Containers", _CONTAINERS_DOC, priority=1),
    _col("Images", _IMAGES_DOC, priority=1),
    _col("Selector", "Selector is a label query over pods that should match the replica count.", priority=1),
)
_SERVICE_COLUMNS = (
    _name_col(),
    _col("Type", "type determines how the Service is exposed."),
    _col("Cluster-IP", "clusterIP is the IP address of the service and is usually assigned randomly."),
    _col("External-IP", "externalIPs is a list of IP addresses for which nodes in the cluster will also "
                        "accept traffic for this service."),
    _col("Port(s)", "The list of ports that are exposed by this service."),
    _age_col(),
    _col("Selector", "Route service traffic to pods with label keys and values matching this selector.",
         priority=1),
)
_NODE_COLUMNS = (
    _name_col(),
    _col("Status", "The status of the node"),
    _col("Roles", "The roles of the node"),
    _age_col(),
    _col("Version", "Kubelet Version reported by the node."),
    _col("Internal-IP", "List of addresses reachable to the node.", priority=1),
    _col("External-IP", "List of addresses reachable to the node.", priority=1),
    _col("OS-Image", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
         priority=1),
    _col("Kernel-Version", "Kernel Version reported by the node from 'uname -r'.", priority=1),
    _col("Container-Runtime", "ContainerRuntime Version reported by the node through runtime remote API.",
         priority=1),
)
_ENDPOINTS_COLUMNS = (
    _name_col(),
    _col("Endpoints", "The set of all endpoints is the union of all subsets."),
    _age_col(),
)
_NAMESPACE_COLUMNS = (
    _name_col(),
    _col("Status", "The status of the namespace"),
    _age_col(),
)
_EVENT_COLUMNS = (
    _col("Last Seen", "The time at which the most recent occurrence of this event was recorded."),
    _col("Type", "Type of this event (Normal, Warning), new types could be added in the future"),
    _col("Reason", "This should be a short, machine understandable string that gives the reason for the "
                   "transition into the object's current status."),
    _col("Object", "The object that this event is about."),
    _col("Subobject", "The field of the involved object this event is about.", priority=1),
    _col("Source", "The component reporting this event.", priority=1),
    _col("Message", "A human-readable description of the status of this operation."),
    _col("First Seen", "The time at which the event was first recorded.", priority=1),
    _col("Count", "The number of times this event has occurred.", priority=1),
    _name_col(priority=1),
)
_CONFIGMAP_COLUMNS = (
    _name_col(),
    _col("Data", "Data contains the configuration data."),
    _age_col(),
)
_SECRET_COLUMNS = (
    _name_col(),
    _col("Type", "Used to facilitate programmatic handling of secret data."),
    _col("Data", "Data contains the secret data."),
    _age_col(),
)
_SERVICEACCOUNT_COLUMNS = (
    _name_col(),
    _col("Secrets", "Secrets is a list of the secrets in the same namespace that pods running using this "
                    "ServiceAccount are allowed to use."),
    _age_col(),
)
_LEASE_COLUMNS = (
    _name_col(),
    _col("Holder", "holderIdentity contains the identity of the holder of a current lease."),
    _age_col(),
)

_DEFAULT_COLUMNS = (_name_col(), _age_col())


# ---------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """Kubernetes' duration.HumanDuration: precise when recent, coarser as it grows."""
    s = int(seconds)  # truncates toward zero like Go's int(d.Seconds())
    if s < -1:
        return "<invalid>"  # clock skew of a second or two still reads as "now"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return f"{hours // 24 // 365}y{rest}d" if rest else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _since(value: Any, now: dt.datetime) -> str:
    """translateTimestampSince: "<unknown>" for a missing timestamp."""
    return _since_time(_parse_time(value), now)


def _since_time(t: dt.datetime | None, now: dt.datetime) -> str:
    if t is None:
        return "<unknown>"
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.timezone.utc)
    return human_duration((now - t).total_seconds())


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def _d(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list:
    return v if isinstance(v, list) else []


def _name(obj: dict) -> str:
    return str(_d(obj.get("metadata")).get("name") or "")


def _age(obj: dict, now: dt.datetime) -> str:
    return _since(_d(obj.get("metadata")).get("creationTimestamp"), now)


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _format_labels(labels: Any) -> str:
    """labels.FormatLabels: sorted k=v pairs, "<none>" when empty."""
    items = sorted(_d(labels).items())
    return ",".join(f"{k}={v}" for k, v in items) if items else "<none>"


def _selector_string(selector: Any) -> str:
    """LabelSelectorAsSelector(sel).String(); "" for an empty or unparsable selector."""
    if selector is None:
        return ""
    try:
        return str(label_selector_from_dict(selector))
    except ValueError:
        return ""


def _format_label_selector(selector: Any) -> str:
    """metav1.FormatLabelSelector: like the selector string, but "<none>" when it selects nothing special."""
    if selector is None:
        return "<none>"
    try:
        text = str(label_selector_from_dict(selector))
    except ValueError as e:
        return str(e)
    return text or "<none>"


def _containers_and_images(template_spec: Any) -> tuple[str, str]:
    containers = [_d(c) for c in _l(_d(template_spec).get("containers"))]
    return ",".join(str(c.get("name", "")) for c in containers), ",".join(str(c.get("image", "")) for c in containers)


def _template_spec(obj: dict) -> dict:
    return _d(_d(_d(obj.get("spec")).get("template")).get("spec"))


# ---------------------------------------------------------------------------
# Pods
# ---------------------------------------------------------------------------


def _is_restartable_init(container: Any) -> bool:
    return _d(container).get("restartPolicy") == "Always"


def _has_condition(status: dict, ctype: str) -> bool:
    return any(_d(c).get("type") == ctype and _d(c).get("status") == "True" for c in _l(status.get("conditions")))


class _Restarts:
    """Running restart count plus the newest "last terminated" time (for "3 (5m ago)")."""

    def __init__(self) -> None:
        self.count = 0
        self.last: dt.datetime | None = None

    def add(self, container_status: dict) -> None:
        self.count += _int(container_status.get("restartCount"))
        finished = _parse_time(_d(_d(container_status.get("lastState")).get("terminated")).get("finishedAt"))
        if finished is not None and (self.last is None or finished > self.last):
            self.last = finished

    def cell(self, now: dt.datetime) -> str:
        if self.count and self.last is not None:
            return f"{self.count} ({_since_time(self.last, now)} ago)"
        return str(self.count)


def _terminated_reason(terminated: dict, prefix: str = "") -> str:
    if terminated.get("reason"):
        return prefix + str(terminated["reason"])
    if _int(terminated.get("signal")):
        return f"{prefix}Signal:{terminated['signal']}"
    return f"{prefix}ExitCode:{_int(terminated.get('exitCode'))}"


def _init_status(pod: dict, ready: int, restarts: _Restarts, sidecar_restarts: _Restarts) -> tuple[str | None, int]:
    """Walk init containers; return ("Init:..." reason or None when initialized, ready sidecars)."""
    spec, status = _d(pod.get("spec")), _d(pod.get("status"))
    init_specs = {_d(c).get("name"): c for c in _l(spec.get("initContainers"))}
    total = len(_l(spec.get("initContainers")))
    for i, cs in enumerate(map(_d, _l(status.get("initContainerStatuses")))):
        restarts.add(cs)
        sidecar = _is_restartable_init(init_specs.get(cs.get("name")))
        if sidecar:
            sidecar_restarts.add(cs)
        state = _d(cs.get("state"))
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if isinstance(terminated, dict) and _int(terminated.get("exitCode")) == 0:
            continue
        if sidecar and cs.get("started") is True:
            ready += 1 if cs.get("ready") else 0
            continue
        if isinstance(terminated, dict):
            return _terminated_reason(terminated, "Init:"), ready
        if isinstance(waiting, dict) and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            return f"Init:{waiting['reason']}", ready
        return f"Init:{i}/{total}", ready
    return None, ready


def _pod_cells(pod: dict, now: dt.datetime) -> list:
    spec, status, meta = _d(pod.get("spec")), _d(pod.get("status")), _d(pod.get("metadata"))
    phase = str(status.get("phase") or "")
    reason = str(status.get("reason") or phase)
    for cond in map(_d, _l(status.get("conditions"))):
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    total = len(_l(spec.get("containers"))) + sum(1 for c in _l(spec.get("initContainers")) if _is_restartable_init(c))

    restarts, sidecar_restarts = _Restarts(), _Restarts()
    init_reason, ready = _init_status(pod, 0, restarts, sidecar_restarts)
    if init_reason is not None:
        reason = init_reason
    if init_reason is None or _has_condition(status, "Initialized"):
        # Once initialized only sidecars' restarts count, plus the regular containers'.
        restarts = sidecar_restarts
        has_running = False
        for cs in reversed([_d(c) for c in _l(status.get("containerStatuses"))]):
            restarts.add(cs)
            state = _d(cs.get("state"))
            waiting, terminated = _d(state.get("waiting")), state.get("terminated")
            if waiting.get("reason"):
                reason = str(waiting["reason"])
            elif isinstance(terminated, dict):
                reason = _terminated_reason(terminated)
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _has_condition(status, "Ready") else "NotReady"

    if meta.get("deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif phase not in ("Succeeded", "Failed"):
            reason = "Terminating"

    return [
        _name(pod), f"{ready}/{total}", reason, restarts.cell(now), _age(pod, now),
        *_pod_wide_cells(spec, status),
    ]


def _pod_wide_cells(spec: dict, status: dict) -> list:
    ips = [_d(i).get("ip") for i in _l(status.get("podIPs"))]
    ip = (ips[0] if ips else None) or status.get("podIP") or "<none>"
    gates = _l(spec.get("readinessGates"))
    gates_cell = "<none>"
    if gates:
        conditions = {_d(c).get("type"): _d(c).get("status") for c in _l(status.get("conditions"))}
        true = sum(1 for g in gates if conditions.get(_d(g).get("conditionType")) == "True")
        gates_cell = f"{true}/{len(gates)}"
    return [ip, spec.get("nodeName") or "<none>", status.get("nominatedNodeName") or "<none>", gates_cell]


# ---------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------


def _deployment_cells(obj: dict, now: dt.datetime) -> list:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    containers, images = _containers_and_images(_template_spec(obj))
    return [
        _name(obj), f"{_int(status.get('readyReplicas'))}/{_int(spec.get('replicas'))}",
        _int(status.get("updatedReplicas")), _int(status.get("availableReplicas")), _age(obj, now),
        containers, images, _selector_string(spec.get("selector")),
    ]


def _replicaset_cells(obj: dict, now: dt.datetime) -> list:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    containers, images = _containers_and_images(_template_spec(obj))
    return [
        _name(obj), _int(spec.get("replicas")), _int(status.get("replicas")), _int(status.get("readyReplicas")),
        _age(obj, now), containers, images, _format_label_selector(spec.get("selector")),
    ]


# ---------------------------------------------------------------------------
# Networking
# ---------------------------------------------------------------------------


def _load_balancer_ips(status: dict) -> list[str]:
    found = set()
    for ing in map(_d, _l(_d(status.get("loadBalancer")).get("ingress"))):
        if ing.get("ip") or ing.get("hostname"):
            found.add(ing.get("ip") or ing.get("hostname"))
    return sorted(found)


def _service_external_ip(spec: dict, status: dict) -> str:
    svc_type = spec.get("type") or "ClusterIP"
    external = [str(ip) for ip in _l(spec.get("externalIPs"))]
    if svc_type in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if svc_type == "LoadBalancer":
        return ",".join(_load_balancer_ips(status) + external) or "<pending>"
    if svc_type == "ExternalName":
        return str(spec.get("externalName") or "")
    return "<unknown>"


def _service_ports(spec: dict) -> str:
    pieces = []
    for p in map(_d, _l(spec.get("ports"))):
        protocol = p.get("protocol") or "TCP"
        if _int(p.get("nodePort")) > 0:
            pieces.append(f"{p.get('port')}:{p['nodePort']}/{protocol}")
        else:
            pieces.append(f"{p.get('port')}/{protocol}")
    return ",".join(pieces) or "<none>"


def _service_cells(obj: dict, now: dt.datetime) -> list:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    cluster_ips = _l(spec.get("clusterIPs"))
    cluster_ip = (cluster_ips[0] if cluster_ips else None) or spec.get("clusterIP") or "<none>"
    return [
        _name(obj), spec.get("type") or "ClusterIP", cluster_ip, _service_external_ip(spec, status),
        _service_ports(spec), _age(obj, now), _format_labels(spec.get("selector")),
    ]


def _host_port(ip: str, port: Any) -> str:
    # net.JoinHostPort brackets IPv6 addresses.
    try:
        if ipaddress.ip_address(ip).version == 6:
            return f"[{ip}]:{port}"
    except ValueError:
        pass
    return f"{ip}:{port}"


_MAX_ENDPOINTS_SHOWN = 3


def _endpoints_string(obj: dict) -> str:
    subsets = [_d(s) for s in _l(obj.get("subsets"))]
    if not subsets:
        return "<none>"
    shown: list[str] = []
    count, more = 0, False
    for ss in subsets:
        addresses = [str(_d(a).get("ip", "")) for a in _l(ss.get("addresses"))]
        ports = [_d(p).get("port") for p in _l(ss.get("ports"))]
        # Headless services without ports list bare addresses.
        for port in ports or [None]:
            count += len(addresses)
            for ip in addresses:
                if len(shown) == _MAX_ENDPOINTS_SHOWN:
                    more = True
                    break
                shown.append(ip if port is None else _host_port(ip, port))
    text = ",".join(shown)
    if more:
        return f"{text} + {count - _MAX_ENDPOINTS_SHOWN} more..."
    return text or "<none>"


def _endpoints_cells(obj: dict, now: dt.datetime) -> list:
    return [_name(obj), _endpoints_string(obj), _age(obj, now)]


# ---------------------------------------------------------------------------
# Cluster
# ---------------------------------------------------------------------------


def _node_roles(labels: dict) -> str:
    roles = set()
    for key, value in labels.items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key[len("node-role.kubernetes.io/"):]
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return ",".join(sorted(roles)) or "<none>"


def _node_address(status: dict, kind: str) -> str:
    for addr in map(_d, _l(status.get("addresses"))):
        if addr.get("type") == kind:
            return str(addr.get("address", ""))
    return "<none>"


def _node_cells(obj: dict, now: dt.datetime) -> list:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    ready = [c for c in map(_d, _l(status.get("conditions"))) if c.get("type") == "Ready"]
    states = ["Ready" if ready[-1].get("status") == "True" else "NotReady"] if ready else ["Unknown"]
    if spec.get("unschedulable"):
        states.append("SchedulingDisabled")
    info = _d(status.get("nodeInfo"))
    return [
        _name(obj), ",".join(states), _node_roles(_d(_d(obj.get("metadata")).get("labels"))), _age(obj, now),
        str(info.get("kubeletVersion") or ""),
        _node_address(status, "InternalIP"), _node_address(status, "ExternalIP"),
        info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


def _namespace_cells(obj: dict, now: dt.datetime) -> list:
    return [_name(obj), str(_d(obj.get("status")).get("phase") or ""), _age(obj, now)]


def _event_source(obj: dict) -> str:
    source = _d(obj.get("source"))
    component = source.get("component") or obj.get("reportingComponent") or ""
    instance = source.get("host") or obj.get("reportingInstance") or ""
    return f"{component}, {instance}" if instance else str(component)


def _event_cells(obj: dict, now: dt.datetime) -> list:
    first = _since(obj.get("firstTimestamp"), now) if obj.get("firstTimestamp") else _since(obj.get("eventTime"), now)
    last = _since(obj.get("lastTimestamp"), now) if obj.get("lastTimestamp") else first
    count = _int(obj.get("count"))
    series = obj.get("series")
    if isinstance(series, dict):
        last = _since(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1  # singleton events of the new API carry no count
    involved = _d(obj.get("involvedObject"))
    kind = str(involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    return [
        last, str(obj.get("type") or ""), str(obj.get("reason") or ""), target,
        str(involved.get("fieldPath") or ""), _event_source(obj), str(obj.get("message") or "").strip(),
        first, count, _name(obj),
    ]


def _configmap_cells(obj: dict, now: dt.datetime) -> list:
    return [_name(obj), len(_d(obj.get("data"))) + len(_d(obj.get("binaryData"))), _age(obj, now)]


def _secret_cells(obj: dict, now: dt.datetime) -> list:
    return [_name(obj), str(obj.get("type") or ""), len(_d(obj.get("data"))), _age(obj, now)]


def _service_account_cells(obj: dict, now: dt.datetime) -> list:
    return [_name(obj), len(_l(obj.get("secrets"))), _age(obj, now)]


def _lease_cells(obj: dict, now: dt.datetime) -> list:
    return [_name(obj), str(_d(obj.get("spec")).get("holderIdentity") or ""), _age(obj, now)]


def _default_cells(obj: dict, now: dt.datetime) -> list:
    return [_name(obj), _age(obj, now)]


# What each kind's module points its ``printer`` at.
POD = Printer(_POD_COLUMNS, _pod_cells)
DEPLOYMENT = Printer(_DEPLOYMENT_COLUMNS, _deployment_cells)
REPLICASET = Printer(_REPLICASET_COLUMNS, _replicaset_cells)
SERVICE = Printer(_SERVICE_COLUMNS, _service_cells)
NODE = Printer(_NODE_COLUMNS, _node_cells)
ENDPOINTS = Printer(_ENDPOINTS_COLUMNS, _endpoints_cells)
NAMESPACE = Printer(_NAMESPACE_COLUMNS, _namespace_cells)
EVENT = Printer(_EVENT_COLUMNS, _event_cells)
CONFIGMAP = Printer(_CONFIGMAP_COLUMNS, _configmap_cells)
SECRET = Printer(_SECRET_COLUMNS, _secret_cells)
SERVICEACCOUNT = Printer(_SERVICEACCOUNT_COLUMNS, _service_account_cells)
LEASE = Printer(_LEASE_COLUMNS, _lease_cells)
DEFAULT = Printer(_DEFAULT_COLUMNS, _default_cells)


def printer_for(resource: Any) -> Printer:
    """The printer of a ``Kind`` or a kind's name ("pods", "po", "deployments.apps"); Name + Age if it has none."""
    k = resource if isinstance(resource, kinds.Kind) else _kind_named(str(resource))
    return k.printer if k is not None and k.printer is not None else DEFAULT


def _kind_named(name: str) -> Any:
    r, _, group = name.strip().lower().partition(".")
    for k in kinds.all_kinds():
        if (not group or k.group == group) and r in (k.plural, k.singular, *k.short_names):
            return k
    return None


def table_columns(resource: Any) -> list[dict]:
    """Column definitions for ``resource`` (a Kind or its name)."""
    return [dict(c) for c in printer_for(resource).columns]


def table_row_cells(resource: Any, obj: dict, *, now: dt.datetime) -> list:
    """The cells of ``obj``'s row, one per entry of ``table_columns(resource)`` (wide ones included)."""
    return printer_for(resource).cells(obj, now)


# ---------------------------------------------------------------------------
# For kinds that bring their own printer (in their own module)
# ---------------------------------------------------------------------------

column = _col
name_column = _name_col
age_column = _age_col
name_cell = _name
age_cell = _age
since = _since
containers_and_images = _containers_and_images
format_label_selector = _format_label_selector
CONTAINERS_DOC = _CONTAINERS_DOC
IMAGES_DOC = _IMAGES_DOC
