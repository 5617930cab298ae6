"""Defaulting and validation of API objects, as Kubernetes' API server does it.

Role: the pure "strategy" half of a write.  ``default_object`` fills in the
values Kubernetes' defaulters (pkg/apis/*/v1/defaults.go) and the defaulting
admission plugins (ServiceAccount, Priority, DefaultTolerationSeconds) add, so
``kubectl get -o yaml`` shows what users expect.  ``validate_object`` then
checks the object the way pkg/apis/*/validation does and raises one
``kinds.Invalid`` (the API server's HTTP 422) carrying *every* problem found, each cause naming
the field in Kubernetes' path syntax (``spec.containers[0].ports[1].name``,
``metadata.labels``, ``data[key]``) with Kubernetes' wording
("Required value", "Invalid value: ...", "Unsupported value: ...").

Nothing here touches storage or the network: the API layer calls
``default_object`` then ``validate_object`` (passing ``old`` on update), after
it has filled in server-owned metadata (name from generateName, namespace
from the URL, uid/creationTimestamp carried over from the stored object).

The ``is_*`` helpers follow Kubernetes' ``k8s.io/apimachinery/pkg/util/validation``
convention: they return a list of problem messages, empty when the value is
valid.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from kubepy import kinds
from kubepy.meta.quantity import parse_quantity
from kubepy.meta.selectors import label_selector_from_dict
from kubepy.meta.services import CIDR_MESSAGE, SOURCE_RANGES_ANNOTATION, parse_cidr

__all__ = [
    "default_object",
    "validate_object",
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "is_dns1035_label",
    "is_qualified_name",
    "is_valid_label_value",
    "is_valid_port_num",
    "is_valid_port_name",
    "is_valid_ip",
    "is_config_map_key",
    "is_env_var_name",
    "is_valid_percent",
    "pod_qos_class",
]

# ---------------------------------------------------------------------------
# Syntax helpers (messages worded as in Kubernetes so clients see familiar text)
# ---------------------------------------------------------------------------

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + r"(\." + _DNS1123_LABEL_FMT + ")*"
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT = "(([A-Za-z0-9][-_.A-Za-z0-9]*)?[A-Za-z0-9])?"
_CONFIG_KEY_FMT = "[-._a-zA-Z0-9]+"
_PERCENT_FMT = "[0-9]+%"

_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1035_LABEL_RE = re.compile(_DNS1035_LABEL_FMT)
_QUALIFIED_NAME_RE = re.compile(_QUALIFIED_NAME_FMT)
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE_FMT)
_CONFIG_KEY_RE = re.compile(_CONFIG_KEY_FMT)
_PERCENT_RE = re.compile(_PERCENT_FMT)
_PORT_NAME_CHARS_RE = re.compile("[-a-z0-9]+")

ANNOTATIONS_MAX_BYTES = 256 * 1024
CONFIG_DATA_MAX_BYTES = 1024 * 1024
NODE_PORT_RANGE = (30000, 32767)

# Kubernetes rejects endpoint addresses that cannot be reached from another
# host (loopback, link-local...).  A single-host cluster whose pods really use
# loopback addresses may turn this off.
ENDPOINTS_REJECT_SPECIAL_IPS = True


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    # Kubernetes joins examples with ",  or " (two spaces): keep it byte-identical.
    shown = ",  or ".join(f"'{e}'" for e in examples)
    return f"{msg} (e.g. {shown}, regex used for validation is '{fmt}')"


def _max_len_error(n: int) -> str:
    return f"must be no more than {n} characters"


def is_dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(_max_len_error(DNS1123_LABEL_MAX))
    if not _DNS1123_LABEL_RE.fullmatch(value):
        errs.append(_regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
            "and must start and end with an alphanumeric character",
            _DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(_max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        errs.append(_regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character",
            _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(_max_len_error(DNS1123_LABEL_MAX))
    if not _DNS1035_LABEL_RE.fullmatch(value):
        errs.append(_regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
            "start with an alphabetic character, and end with an alphanumeric character",
            _DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


_QUALIFIED_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)


def is_qualified_name(value: str) -> list[str]:
    """Label keys, annotation keys, finalizers: ``[prefix/]name``."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name " + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part " + _max_len_error(63))
    if not _QUALIFIED_NAME_RE.fullmatch(name):
        errs.append("name part " + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT,
                                                "MyName", "my.name", "123-abc"))
    return errs


def is_valid_label_value(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append(_max_len_error(63))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(_regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character",
            _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def is_valid_port_num(port: Any) -> list[str]:
    if not _is_int(port) or not 1 <= port <= 65535:
        return ["must be between 1 and 65535, inclusive"]
    return []


def is_valid_port_name(name: str) -> list[str]:
    """IANA_SVC_NAME (RFC 6335): what container and service port names must be."""
    errs = []
    if len(name) > 15:
        errs.append(_max_len_error(15))
    if not _PORT_NAME_CHARS_RE.fullmatch(name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", name):
        errs.append("must contain at least one letter (a-z)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def is_valid_ip(value: str) -> list[str]:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return ["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
    return []


def is_config_map_key(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(_max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _CONFIG_KEY_RE.fullmatch(value):
        errs.append(_regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            _CONFIG_KEY_FMT, "key.name", "KEY_NAME", "key-name"))
    # Keys become file names in volumes: refuse ones that would escape the directory.
    if value == ".":
        errs.append("must not be '.'")
    elif value == "..":
        errs.append("must not be '..'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def is_env_var_name(value: str) -> list[str]:
    # Kubernetes >= 1.34 accepts any printable ASCII except '=' (RelaxedEnvironmentVariableValidation GA).
    if all(32 <= ord(c) <= 126 and c != "=" for c in value):
        return []
    return ["a valid environment variable name must consist only of printable ASCII characters other than '='"]


def is_valid_percent(value: str) -> list[str]:
    if _PERCENT_RE.fullmatch(value):
        return []
    return [_regex_error("a valid percent string must be a numeric string followed by an ending '%'",
                         _PERCENT_FMT, "1%", "93%")]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _mask_trailing_dash(name: str) -> str:
    # generateName "web-" is fine: the random suffix makes it end alphanumerically.
    return name[:-1] + "a" if len(name) > 1 and name.endswith("-") else name


# ---------------------------------------------------------------------------
# Error collection
# ---------------------------------------------------------------------------


def _show(value: Any) -> str:
    """Render a bad value the way Go's field.Error does: strings quoted, numbers bare."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Errs(list):
    """Accumulates status causes; one method per Kubernetes field.ErrorType."""

    def _add(self, reason: str, path: str, message: str) -> None:
        self.append({"reason": reason, "message": message, "field": path})

    def required(self, path: str, detail: str = "") -> None:
        self._add("FieldValueRequired", path, "Required value" + (f": {detail}" if detail else ""))

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self._add("FieldValueInvalid", path, f"Invalid value: {_show(value)}: {detail}")

    def invalid_shown(self, path: str, shown: str, detail: str) -> None:
        """``invalid`` for a value Go renders its own way (``intstr.IntOrString{...}``): ``shown`` verbatim."""
        self._add("FieldValueInvalid", path, f"Invalid value: {shown}: {detail}")

    def not_supported(self, path: str, value: Any, supported: list[str] | tuple[str, ...]) -> None:
        shown = ", ".join(json.dumps(s) for s in supported)
        self._add("FieldValueNotSupported", path, f"Unsupported value: {_show(value)}: supported values: {shown}")

    def duplicate(self, path: str, value: Any, detail: str = "") -> None:
        self._add("FieldValueDuplicate", path, f"Duplicate value: {_show(value)}" + (f": {detail}" if detail else ""))

    def forbidden(self, path: str, detail: str) -> None:
        self._add("FieldValueForbidden", path, f"Forbidden: {detail}")

    def too_long(self, path: str, limit: int) -> None:
        self._add("FieldValueTooLong", path, f"Too long: may not be more than {limit} bytes")

    def not_found(self, path: str, value: Any) -> None:
        self._add("FieldValueNotFound", path, f"Not found: {_show(value)}")

    def each(self, path: str, value: Any, messages: list[str]) -> None:
        for msg in messages:
            self.invalid(path, value, msg)

    def nonnegative(self, path: str, value: Any) -> None:
        if value is not None and (not _is_int(value) or value < 0):
            self.invalid(path, value, "must be greater than or equal to 0")

    def enum(self, path: str, value: Any, supported: tuple[str, ...], *, required: bool = True) -> None:
        if value in (None, ""):
            if required:
                self.required(path)
        elif value not in supported:
            self.not_supported(path, value, supported)


def _d(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list:
    return v if isinstance(v, list) else []


# ---------------------------------------------------------------------------
# Enumerations (data, so the rules read like the API reference)
# ---------------------------------------------------------------------------

RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
PROTOCOLS = ("TCP", "UDP", "SCTP")
TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
TOLERATION_OPERATORS = ("Equal", "Exists")
SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
SESSION_AFFINITIES = ("ClientIP", "None")
TRAFFIC_POLICIES = ("Cluster", "Local")
IP_FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
IP_FAMILIES = ("IPv4", "IPv6")
DEPLOYMENT_STRATEGIES = ("Recreate", "RollingUpdate")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
URI_SCHEMES = ("HTTP", "HTTPS")
STANDARD_FINALIZERS = ("kubernetes", "orphan", "foregroundDeletion")
STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
QOS_RESOURCES = ("cpu", "memory")

PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
LIFECYCLE_HANDLERS = ("exec", "httpGet", "tcpSocket", "sleep")
VOLUME_SOURCES = (
    "hostPath", "emptyDir", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret", "nfs",
    "iscsi", "glusterfs", "persistentVolumeClaim", "rbd", "flexVolume", "cinder", "cephfs", "flocker",
    "downwardAPI", "fc", "azureFile", "configMap", "vsphereVolume", "quobyte", "azureDisk",
    "photonPersistentDisk", "projected", "portworxVolume", "scaleIO", "storageos", "csi", "ephemeral", "image",
)
# Required reference inside a volume source: (source, field).
VOLUME_REQUIRED_FIELDS = (
    ("secret", "secretName"),
    ("configMap", "name"),
    ("persistentVolumeClaim", "claimName"),
    ("hostPath", "path"),
    ("nfs", "server"),
    ("nfs", "path"),
    ("csi", "driver"),
)
ENV_VALUE_SOURCES = ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef", "fileKeyRef")

# Kubernetes' DefaultTolerationSeconds admission; the API server's
# --default-not-ready-toleration-seconds / --default-unreachable-toleration-seconds set them.
DEFAULT_TOLERATION_SECONDS = {"node.kubernetes.io/not-ready": 300, "node.kubernetes.io/unreachable": 300}


def set_default_toleration_seconds(*, not_ready: int, unreachable: int) -> None:
    DEFAULT_TOLERATION_SECONDS["node.kubernetes.io/not-ready"] = not_ready
    DEFAULT_TOLERATION_SECONDS["node.kubernetes.io/unreachable"] = unreachable

# ---------------------------------------------------------------------------
# Defaulting
# ---------------------------------------------------------------------------


def _image_tag(image: str) -> str:
    """The tag of an image reference; "latest" when neither tag nor digest is given."""
    ref, _, digest = image.partition("@")
    last = ref.rsplit("/", 1)[-1]  # a ':' before the last '/' is a registry port
    if ":" in last:
        return last.rsplit(":", 1)[1]
    return "" if digest else "latest"


def _default_probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)):
        probe.setdefault(key, value)
    _default_handler(probe)


def _default_handler(handler: Any) -> None:
    http = _d(handler).get("httpGet")
    if isinstance(http, dict):
        http.setdefault("path", "/")
        http.setdefault("scheme", "HTTP")


def _default_container(c: dict) -> None:
    if not c.get("imagePullPolicy"):
        c["imagePullPolicy"] = "Always" if _image_tag(str(c.get("image") or "")) == "latest" else "IfNotPresent"
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in _l(c.get("ports")):
        if isinstance(port, dict) and not port.get("protocol"):
            port["protocol"] = "TCP"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(c.get(probe))
    for hook in _d(c.get("lifecycle")).values():
        _default_handler(hook)
    for env in _l(c.get("env")):
        field_ref = _d(_d(_d(env).get("valueFrom")).get("fieldRef"))
        if field_ref and not field_ref.get("apiVersion"):
            field_ref["apiVersion"] = "v1"


def _default_volume(v: dict) -> None:
    if not any(k in v for k in VOLUME_SOURCES):
        v["emptyDir"] = {}  # Kubernetes: a volume with no source is an emptyDir
    for source in ("secret", "configMap", "downwardAPI", "projected"):
        if isinstance(v.get(source), dict):
            v[source].setdefault("defaultMode", 0o644)
    _default_volume_projections(v)


def _default_volume_projections(v: dict) -> None:
    """fieldRef apiVersion v1 in downwardAPI items; serviceAccountToken expirationSeconds 3600 (as upstream)."""
    downward = [_d(v.get("downwardAPI"))]
    for src in _l(_d(v.get("projected")).get("sources")):
        downward.append(_d(_d(src).get("downwardAPI")))
        token = _d(src).get("serviceAccountToken")
        if isinstance(token, dict):
            token.setdefault("expirationSeconds", 3600)
    for d in downward:
        for item in _l(d.get("items")):
            ref = _d(item).get("fieldRef")
            if isinstance(ref, dict) and not ref.get("apiVersion"):
                ref["apiVersion"] = "v1"


def _default_pod_spec(spec: dict) -> None:
    """SetDefaults_PodSpec and friends: applies to pods and pod templates alike."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    if not isinstance(spec.get("securityContext"), dict):
        spec["securityContext"] = {}
    for c in _l(spec.get("initContainers")) + _l(spec.get("containers")) + _l(spec.get("ephemeralContainers")):
        if isinstance(c, dict):
            _default_container(c)
            if spec.get("hostNetwork"):
                for port in _l(c.get("ports")):
                    if isinstance(port, dict) and not port.get("hostPort"):
                        port["hostPort"] = port.get("containerPort")
    for v in _l(spec.get("volumes")):
        if isinstance(v, dict):
            _default_volume(v)
    # The deprecated alias is always mirrored, as v1 conversion does.
    if not spec.get("serviceAccountName") and spec.get("serviceAccount"):
        spec["serviceAccountName"] = spec["serviceAccount"]
    if spec.get("serviceAccountName"):
        spec["serviceAccount"] = spec["serviceAccountName"]


def _tolerates(tolerations: list, key: str) -> bool:
    for t in tolerations:
        t = _d(t)
        key_ok = t.get("key") == key or (not t.get("key") and t.get("operator") == "Exists")
        if key_ok and t.get("effect") in (None, "", "NoExecute"):
            return True
    return False


def _default_pod_admission(spec: dict) -> None:
    """What the ServiceAccount and DefaultTolerationSeconds admission plugins add to pods (Priority's is
    kubepy.api.priority, which must see whether the client set ``spec.priority`` itself)."""
    if not spec.get("serviceAccountName"):
        spec["serviceAccountName"] = "default"
    spec["serviceAccount"] = spec["serviceAccountName"]
    if not isinstance(spec.get("tolerations"), list):
        spec["tolerations"] = []
    tolerations = spec["tolerations"]
    for key, seconds in DEFAULT_TOLERATION_SECONDS.items():
        if not _tolerates(tolerations, key):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": seconds})


def _requests_from_limits(container: dict) -> None:
    # Only pods get this, not templates: a template's limits may still be edited.
    resources = container.get("resources")
    if isinstance(resources, dict) and isinstance(resources.get("limits"), dict) and resources["limits"]:
        requests = resources.setdefault("requests", {})
        if isinstance(requests, dict):
            for name, value in resources["limits"].items():
                requests.setdefault(name, value)


def _quantity_or_zero(value: Any) -> Decimal:
    try:
        return parse_quantity(value)
    except (ValueError, TypeError):
        return Decimal(0)


def pod_qos_class(spec: dict) -> str:
    """Kubernetes' GetPodQOS: Guaranteed, Burstable or BestEffort from cpu/memory requests and limits."""
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for c in _l(spec.get("initContainers")) + _l(spec.get("containers")):
        res = _d(_d(c).get("resources"))
        for name, q in _d(res.get("requests")).items():
            if name in QOS_RESOURCES and _quantity_or_zero(q) != 0:
                requests[name] = requests.get(name, Decimal(0)) + _quantity_or_zero(q)
        found = set()
        for name, q in _d(res.get("limits")).items():
            if name in QOS_RESOURCES and _quantity_or_zero(q) != 0:
                found.add(name)
                limits[name] = limits.get(name, Decimal(0)) + _quantity_or_zero(q)
        if found != set(QOS_RESOURCES):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and requests.keys() == limits.keys() and all(requests[k] == limits[k] for k in requests):
        return "Guaranteed"
    return "Burstable"


def default_pod(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    for c in _l(spec.get("initContainers")) + _l(spec.get("containers")):
        if isinstance(c, dict):
            _requests_from_limits(c)
    _default_pod_spec(spec)
    spec.setdefault("enableServiceLinks", True)  # pods only: templates keep it unset
    if old is None:
        _default_pod_admission(spec)
        status = obj.setdefault("status", {})
        if isinstance(status, dict):
            status.setdefault("phase", "Pending")
            status.setdefault("qosClass", pod_qos_class(spec))


def _default_template(obj: dict) -> None:
    template = _d(_d(obj.get("spec")).get("template"))
    if isinstance(template.get("spec"), dict):
        _default_pod_spec(template["spec"])


def default_deployment(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("maxUnavailable", "25%")
                rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _default_template(obj)


def default_replicaset(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        _default_template(obj)


def _carry_allocations(spec: dict, old_spec: dict) -> None:
    """On update, keep what the server allocated when the client omits it
    (Kubernetes' service strategy does the same, so `kubectl replace` works)."""
    if spec.get("type") == "ExternalName" or old_spec.get("type") == "ExternalName":
        return
    if not spec.get("clusterIP") and old_spec.get("clusterIP"):
        spec["clusterIP"] = old_spec["clusterIP"]
        if not spec.get("clusterIPs") and old_spec.get("clusterIPs"):
            spec["clusterIPs"] = list(old_spec["clusterIPs"])
    if spec.get("type") in ("NodePort", "LoadBalancer"):
        old_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in map(_d, _l(old_spec.get("ports")))}
        for p in map(_d, _l(spec.get("ports"))):
            previous = old_ports.get((p.get("port"), p.get("protocol", "TCP")), {})
            if not p.get("nodePort") and previous.get("nodePort"):
                p["nodePort"] = previous["nodePort"]
        if not spec.get("healthCheckNodePort") and old_spec.get("healthCheckNodePort"):
            spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"]


def default_service(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    if old is not None:
        _carry_allocations(spec, _d(old.get("spec")))
    svc_type = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["sessionAffinity"] == "ClientIP":
        client_ip = _d(spec.setdefault("sessionAffinityConfig", {})).setdefault("clientIP", {})
        if isinstance(client_ip, dict):
            client_ip.setdefault("timeoutSeconds", 10800)
    for port in _l(spec.get("ports")):
        if not isinstance(port, dict):
            continue
        if not port.get("protocol"):
            port["protocol"] = "TCP"
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
    if svc_type in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if svc_type == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    if svc_type != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        if not spec.get("ipFamilies"):
            ip = spec.get("clusterIP") or ""
            spec["ipFamilies"] = ["IPv6" if ":" in ip else "IPv4"]
        if spec.get("clusterIP") and not spec.get("clusterIPs"):
            spec["clusterIPs"] = [spec["clusterIP"]]
    status = obj.setdefault("status", {})
    if isinstance(status, dict):
        status.setdefault("loadBalancer", {})


def default_endpoints(obj: dict, old: dict | None) -> None:
    for subset in _l(obj.get("subsets")):
        for port in _l(_d(subset).get("ports")):
            if isinstance(port, dict) and not port.get("protocol"):
                port["protocol"] = "TCP"


def default_secret(obj: dict, old: dict | None) -> None:
    if not obj.get("type"):
        obj["type"] = "Opaque"
    # stringData is write-only: v1 conversion folds it into data (it wins).
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        if not isinstance(obj.get("data"), dict):
            obj["data"] = {}
        for key, value in string_data.items():
            obj["data"][key] = base64.b64encode(str(value).encode()).decode()


def default_namespace(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict) and old is None:
        spec.setdefault("finalizers", ["kubernetes"])
    status = obj.setdefault("status", {})
    if isinstance(status, dict):
        status.setdefault("phase", "Active")


def default_node(obj: dict, old: dict | None) -> None:
    status = obj.get("status")
    if isinstance(status, dict) and isinstance(status.get("capacity"), dict) and "allocatable" not in status:
        status["allocatable"] = dict(status["capacity"])


def no_defaults(obj: dict, old: dict | None) -> None:
    return None


# ---------------------------------------------------------------------------
# Metadata validation
# ---------------------------------------------------------------------------


def _validate_labels(labels: Any, path: str, errs: Errs) -> None:
    for key, value in _d(labels).items():
        errs.each(path, key, is_qualified_name(key))
        if not isinstance(value, str):
            errs.invalid(path, value, "label values must be strings")
        else:
            errs.each(path, value, is_valid_label_value(value))


def _validate_annotations(annotations: Any, path: str, errs: Errs) -> None:
    total = 0
    for key, value in _d(annotations).items():
        errs.each(path, key, is_qualified_name(key.lower()))
        total += len(key.encode()) + len(str(value).encode())
    if total > ANNOTATIONS_MAX_BYTES:
        errs.too_long(path, ANNOTATIONS_MAX_BYTES)


def _validate_finalizer(name: Any, path: str, errs: Errs) -> None:
    if not isinstance(name, str):
        errs.invalid(path, name, "must be a string")
        return
    msgs = is_qualified_name(name)
    errs.each(path, name, msgs)
    if not msgs and "/" not in name and name not in STANDARD_FINALIZERS:
        errs.invalid(path, name, "name is neither a standard finalizer name nor is it fully qualified")


def _validate_owner_references(refs: Any, path: str, errs: Errs) -> None:
    controllers = 0
    for i, ref in enumerate(_l(refs)):
        ref, p = _d(ref), f"{path}[{i}]"
        for key, what in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid")):
            if not ref.get(key):
                errs.invalid(f"{p}.{key}", ref.get(key, ""), f"{what} must not be empty")
        if ref.get("controller") is True:
            controllers += 1
    if controllers > 1:
        errs.invalid(path, refs, "Only one reference can have Controller set to true")


NameRule = Callable[[str], list[str]]


def _validate_meta(obj: dict, name_rule: NameRule, errs: Errs) -> None:
    meta = _d(obj.get("metadata"))
    name, generate = meta.get("name") or "", meta.get("generateName") or ""
    if generate:
        errs.each("metadata.generateName", generate, name_rule(_mask_trailing_dash(str(generate))))
    if not name:
        if not generate:  # the API layer turns generateName into a name
            errs.required("metadata.name", "name or generateName is required")
    elif not isinstance(name, str):
        errs.invalid("metadata.name", name, "must be a string")
    else:
        errs.each("metadata.name", name, name_rule(name))
    namespace = meta.get("namespace")
    if namespace:
        errs.each("metadata.namespace", namespace, is_dns1123_label(str(namespace)))
    _validate_labels(meta.get("labels"), "metadata.labels", errs)
    _validate_annotations(meta.get("annotations"), "metadata.annotations", errs)
    for i, fin in enumerate(_l(meta.get("finalizers"))):
        _validate_finalizer(fin, f"metadata.finalizers[{i}]", errs)
    _validate_owner_references(meta.get("ownerReferences"), "metadata.ownerReferences", errs)


def _validate_meta_update(obj: dict, old: dict, errs: Errs) -> None:
    meta, old_meta = _d(obj.get("metadata")), _d(old.get("metadata"))
    for key in ("name", "namespace"):
        if (meta.get(key) or "") != (old_meta.get(key) or ""):
            errs.invalid(f"metadata.{key}", meta.get(key) or "", "field is immutable")
    # An omitted uid means "the same object" (Kubernetes copies it from the stored one).
    if meta.get("uid") and old_meta.get("uid") and meta["uid"] != old_meta["uid"]:
        errs.invalid("metadata.uid", meta["uid"], "field is immutable")
    if old_meta.get("deletionTimestamp"):
        new_fins = set(_l(meta.get("finalizers"))) - set(_l(old_meta.get("finalizers")))
        for fin in sorted(new_fins, key=str):
            errs.forbidden("metadata.finalizers", "no new finalizers can be added if the object is being deleted, "
                           f"found new finalizers {json.dumps([fin])}")


def _validate_immutable(new: Any, old: Any, path: str, errs: Errs) -> None:
    if new != old:
        errs.invalid(path, new, "field is immutable")


# ---------------------------------------------------------------------------
# Label selectors
# ---------------------------------------------------------------------------


def _validate_label_selector(sel: dict, path: str, errs: Errs) -> None:
    _validate_labels(sel.get("matchLabels"), f"{path}.matchLabels", errs)
    for i, expr in enumerate(_l(sel.get("matchExpressions"))):
        expr, p = _d(expr), f"{path}.matchExpressions[{i}]"
        op, values = expr.get("operator"), _l(expr.get("values"))
        if op in ("In", "NotIn") and not values:
            errs.required(f"{p}.values", "must be specified when `operator` is 'In' or 'NotIn'")
        elif op in ("Exists", "DoesNotExist") and values:
            errs.forbidden(f"{p}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        elif op not in SELECTOR_OPERATORS:
            errs.invalid(f"{p}.operator", op, "not a valid selector operator")
        errs.each(f"{p}.key", expr.get("key", ""), is_qualified_name(str(expr.get("key", ""))))
        for j, v in enumerate(values):
            errs.each(f"{p}.values[{j}]", v, is_valid_label_value(str(v)))


def _selector_matches(sel: dict, labels: dict) -> bool:
    try:
        return label_selector_from_dict(sel).matches(labels)
    except ValueError:
        return False  # already reported by _validate_label_selector


# ---------------------------------------------------------------------------
# Pods
# ---------------------------------------------------------------------------


def _validate_int_or_port_name(value: Any, path: str, errs: Errs) -> None:
    if isinstance(value, str):
        errs.each(path, value, is_valid_port_name(value))
    else:
        errs.each(path, value, is_valid_port_num(value))


def _validate_handler(handler: Any, path: str, kinds: tuple[str, ...], errs: Errs) -> None:
    handler = _d(handler)
    present = [k for k in kinds if handler.get(k) is not None]
    if not present:
        errs.required(path, "must specify a handler type")
        return
    for extra in present[1:]:
        errs.forbidden(f"{path}.{extra}", "may not specify more than 1 handler type")
    http = handler.get("httpGet")
    if isinstance(http, dict):
        _validate_int_or_port_name(http.get("port"), f"{path}.httpGet.port", errs)
        errs.enum(f"{path}.httpGet.scheme", http.get("scheme"), URI_SCHEMES, required=False)
    tcp = handler.get("tcpSocket")
    if isinstance(tcp, dict):
        _validate_int_or_port_name(tcp.get("port"), f"{path}.tcpSocket.port", errs)
    grpc = handler.get("grpc")
    if isinstance(grpc, dict):
        errs.each(f"{path}.grpc.port", grpc.get("port"), is_valid_port_num(grpc.get("port")))


def _validate_probe(probe: dict, path: str, errs: Errs, *, success_must_be_one: bool) -> None:
    _validate_handler(probe, path, PROBE_HANDLERS, errs)
    for key in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
        errs.nonnegative(f"{path}.{key}", probe.get(key))
    if success_must_be_one and probe.get("successThreshold") not in (None, 1):
        errs.invalid(f"{path}.successThreshold", probe.get("successThreshold"), "must be 1")
    grace = probe.get("terminationGracePeriodSeconds")
    if grace is not None and (not _is_int(grace) or grace <= 0):
        errs.invalid(f"{path}.terminationGracePeriodSeconds", grace, "must be greater than 0")


def _validate_ports(ports: Any, path: str, errs: Errs, *, host_network: bool) -> None:
    names: set[str] = set()
    for i, port in enumerate(_l(ports)):
        port, p = _d(port), f"{path}[{i}]"
        name = port.get("name")
        if name:
            errs.each(f"{p}.name", name, is_valid_port_name(str(name)))
            if name in names:
                errs.duplicate(f"{p}.name", name)
            names.add(name)
        if not port.get("containerPort"):
            errs.required(f"{p}.containerPort")
        else:
            errs.each(f"{p}.containerPort", port["containerPort"], is_valid_port_num(port["containerPort"]))
        host_port = port.get("hostPort")
        if host_port:
            errs.each(f"{p}.hostPort", host_port, is_valid_port_num(host_port))
            if host_network and host_port != port.get("containerPort"):
                errs.invalid(f"{p}.hostPort", host_port, "must match `containerPort` when `hostNetwork` is true")
        errs.enum(f"{p}.protocol", port.get("protocol"), PROTOCOLS)


def _validate_env(env: Any, path: str, errs: Errs) -> None:
    for i, var in enumerate(_l(env)):
        var, p = _d(var), f"{path}[{i}]"
        name = var.get("name")
        if not name:
            errs.required(f"{p}.name")
        else:
            errs.each(f"{p}.name", name, is_env_var_name(str(name)))
        source = var.get("valueFrom")
        if source is None:
            continue
        sources = [k for k in ENV_VALUE_SOURCES if _d(source).get(k) is not None]
        if var.get("value"):
            errs.invalid(f"{p}.valueFrom", "", "may not be specified when `value` is not empty")
        if not sources:
            errs.invalid(f"{p}.valueFrom", "", "must specify one of: `fieldRef`, `resourceFieldRef`, "
                         "`configMapKeyRef` or `secretKeyRef`")
        elif len(sources) > 1:
            errs.invalid(f"{p}.valueFrom", "", "may not have more than one field specified at a time")
        for ref in ("configMapKeyRef", "secretKeyRef"):
            if isinstance(_d(source).get(ref), dict) and not source[ref].get("key"):
                errs.required(f"{p}.valueFrom.{ref}.key")
        field_ref = _d(source).get("fieldRef")
        if isinstance(field_ref, dict) and not field_ref.get("fieldPath"):
            errs.required(f"{p}.valueFrom.fieldRef.fieldPath")


def _validate_resource_name(name: str, path: str, errs: Errs) -> None:
    if "/" in name:
        errs.each(path, name, is_qualified_name(name))
    elif name not in STANDARD_CONTAINER_RESOURCES and not name.startswith("hugepages-"):
        errs.invalid(path, name, "must be a standard resource for containers")


def _validate_resources(res: Any, path: str, errs: Errs) -> None:
    res = _d(res)
    parsed: dict[str, dict[str, Decimal]] = {"limits": {}, "requests": {}}
    for section in ("limits", "requests"):
        for name, value in _d(res.get(section)).items():
            p = f"{path}.{section}[{name}]"
            _validate_resource_name(name, p, errs)
            try:
                q = parse_quantity(value)
            except (ValueError, TypeError):
                errs.invalid(p, value, "quantities must match the regular expression "
                             "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
                continue
            if q < 0:
                errs.invalid(p, value, "must be greater than or equal to 0")
                continue
            parsed[section][name] = q
    for name, req in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        if limit is not None and req > limit:
            errs.invalid(f"{path}.requests[{name}]", str(res["requests"][name]),
                         f"must be less than or equal to {name} limit of {res['limits'][name]}")


def _validate_volume_mounts(mounts: Any, path: str, volumes: set[str], errs: Errs) -> None:
    seen: set[str] = set()
    for i, m in enumerate(_l(mounts)):
        m, p = _d(m), f"{path}[{i}]"
        name, mount_path = m.get("name"), m.get("mountPath")
        if not name:
            errs.required(f"{p}.name")
        elif name not in volumes:
            errs.not_found(f"{p}.name", name)
        if not mount_path:
            errs.required(f"{p}.mountPath")
        elif mount_path in seen:
            errs.invalid(f"{p}.mountPath", mount_path, "must be unique")
        else:
            seen.add(mount_path)
        sub = m.get("subPath")
        if sub:
            if str(sub).startswith("/"):
                errs.invalid(f"{p}.subPath", sub, "must be a relative path")
            if ".." in str(sub).split("/"):
                errs.invalid(f"{p}.subPath", sub, "must not contain '..'")
        expr = m.get("subPathExpr")
        if expr:
            if sub:
                errs.invalid(f"{p}.subPathExpr", expr, "subPathExpr and subPath are mutually exclusive")
            if str(expr).startswith("/"):
                errs.invalid(f"{p}.subPathExpr", expr, "must be a relative path")
            if ".." in str(expr).split("/"):
                errs.invalid(f"{p}.subPathExpr", expr, "must not contain '..'")
        prop = m.get("mountPropagation")
        if prop is not None:
            errs.enum(f"{p}.mountPropagation", prop, ("Bidirectional", "HostToContainer", "None"))


def _validate_container(c: dict, path: str, errs: Errs, *, volumes: set[str], host_network: bool,
                        init: bool) -> None:
    image = c.get("image")
    if not image:
        errs.required(f"{path}.image")
    elif not isinstance(image, str) or image != image.strip():
        errs.invalid(f"{path}.image", image, "must not have leading or trailing whitespace")
    errs.enum(f"{path}.imagePullPolicy", c.get("imagePullPolicy"), PULL_POLICIES)
    errs.enum(f"{path}.terminationMessagePolicy", c.get("terminationMessagePolicy"), TERMINATION_MESSAGE_POLICIES)
    _validate_ports(c.get("ports"), f"{path}.ports", errs, host_network=host_network)
    _validate_env(c.get("env"), f"{path}.env", errs)
    _validate_resources(c.get("resources"), f"{path}.resources", errs)
    _validate_volume_mounts(c.get("volumeMounts"), f"{path}.volumeMounts", volumes, errs)
    sidecar = init and c.get("restartPolicy") == "Always"
    if init and c.get("restartPolicy") not in (None, "Always"):
        errs.not_supported(f"{path}.restartPolicy", c.get("restartPolicy"), ("Always",))
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if c.get(probe) is None:
            continue
        if init and not sidecar:
            errs.forbidden(f"{path}.{probe}", "may not be set for init containers without restartPolicy=Always")
            continue
        _validate_probe(_d(c[probe]), f"{path}.{probe}", errs, success_must_be_one=probe != "readinessProbe")
    for hook, handler in _d(c.get("lifecycle")).items():
        if hook in ("postStart", "preStop"):
            _validate_handler(handler, f"{path}.lifecycle.{hook}", LIFECYCLE_HANDLERS, errs)


def _validate_containers(spec: dict, path: str, errs: Errs, volumes: set[str]) -> None:
    host_network = bool(spec.get("hostNetwork"))
    containers = _l(spec.get("containers"))
    if not containers:
        errs.required(f"{path}.containers")
    names: set[str] = set()
    # Regular containers first, then init containers, so a clash is reported on the init container, as in Kubernetes.
    for field_name, init in (("containers", False), ("initContainers", True)):
        for i, c in enumerate(_l(spec.get(field_name))):
            c, p = _d(c), f"{path}.{field_name}[{i}]"
            name = c.get("name")
            if not name:
                errs.required(f"{p}.name")
            else:
                errs.each(f"{p}.name", name, is_dns1123_label(str(name)))
                if name in names:
                    errs.duplicate(f"{p}.name", name)
                names.add(name)
            _validate_container(c, p, errs, volumes=volumes, host_network=host_network, init=init)


# What an ephemeral container may not set, in Go's field order (Kubernetes'
# allowedEphemeralContainerFields): a debugging aid is never part of the pod's service.
EPHEMERAL_FORBIDDEN_FIELDS = ("ports", "resources", "resizePolicy", "restartPolicy", "restartPolicyRules",
                              "livenessProbe", "readinessProbe", "startupProbe", "lifecycle")
EPHEMERAL_FORBIDDEN = "cannot be set for an Ephemeral Container"


def _is_set(key: str, value: Any) -> bool:
    """Go's "not the zero value": ``resources`` is a struct, so ``{}`` is unset;
    every other forbidden field is a list or a pointer, set as soon as it is present."""
    if key == "resources":
        return isinstance(value, dict) and any(v is not None for v in value.values())
    return value is not None


def _validate_ephemeral_containers(spec: dict, path: str, errs: Errs, volumes: set[str]) -> None:
    """Kubernetes' validateEphemeralContainers: each is a valid container with a name
    unique across all the pod's containers, targeting a regular or init container,
    and setting none of EPHEMERAL_FORBIDDEN_FIELDS."""
    others = {_d(c).get("name") for c in _l(spec.get("containers")) + _l(spec.get("initContainers"))}
    others.discard(None)
    names = set(others)
    for i, c in enumerate(_l(spec.get("ephemeralContainers"))):
        c, p = _d(c), f"{path}.ephemeralContainers[{i}]"
        name = c.get("name")
        if not name:
            errs.required(f"{p}.name")
        else:
            errs.each(f"{p}.name", name, is_dns1123_label(str(name)))
        image = c.get("image")
        if not image:
            errs.required(f"{p}.image")
        elif not isinstance(image, str) or image != image.strip():
            errs.invalid(f"{p}.image", image, "must not have leading or trailing whitespace")
        errs.enum(f"{p}.imagePullPolicy", c.get("imagePullPolicy"), PULL_POLICIES)
        errs.enum(f"{p}.terminationMessagePolicy", c.get("terminationMessagePolicy"), TERMINATION_MESSAGE_POLICIES)
        _validate_ports(c.get("ports"), f"{p}.ports", errs, host_network=bool(spec.get("hostNetwork")))
        _validate_env(c.get("env"), f"{p}.env", errs)
        _validate_resources(c.get("resources"), f"{p}.resources", errs)
        _validate_volume_mounts(c.get("volumeMounts"), f"{p}.volumeMounts", volumes, errs)
        if name:
            if name in names:
                errs.duplicate(f"{p}.name", name)
            names.add(name)
        target = c.get("targetContainerName")
        if target and target not in others:
            errs.not_found(f"{p}.targetContainerName", target)
        for key in EPHEMERAL_FORBIDDEN_FIELDS:
            if _is_set(key, c.get(key)):
                errs.forbidden(f"{p}.{key}", EPHEMERAL_FORBIDDEN)
        for j, m in enumerate(_l(c.get("volumeMounts"))):
            for key in ("subPath", "subPathExpr"):
                if _d(m).get(key):
                    errs.forbidden(f"{p}.volumeMounts[{j}].{key}", EPHEMERAL_FORBIDDEN)


def _validate_volumes(volumes: Any, path: str, errs: Errs) -> set[str]:
    names: set[str] = set()
    for i, v in enumerate(_l(volumes)):
        v, p = _d(v), f"{path}[{i}]"
        name = v.get("name")
        if not name:
            errs.required(f"{p}.name")
        else:
            errs.each(f"{p}.name", name, is_dns1123_label(str(name)))
            if name in names:
                errs.duplicate(f"{p}.name", name)
            names.add(name)
        sources = [k for k in VOLUME_SOURCES if v.get(k) is not None]
        if not sources:
            errs.required(p, "must specify a volume type")
        for extra in sources[1:]:
            errs.forbidden(f"{p}.{extra}", "may not specify more than 1 volume type")
        for source, field_name in VOLUME_REQUIRED_FIELDS:
            if isinstance(v.get(source), dict) and not v[source].get(field_name):
                errs.required(f"{p}.{source}.{field_name}")
        _validate_projecting_sources(v, p, errs)
    return names


# -- secret/configMap items, downwardAPI and projected volumes (upstream's validateVolumeSource) --
FILE_MODE_MSG = "must be a number between 0 and 0777 (octal), both inclusive"
VOLUME_DOWNWARD_FIELD_PATHS = ("metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace",
                               "metadata.uid")
CONTAINER_RESOURCE_FIELDS = ("limits.cpu", "limits.ephemeral-storage", "limits.memory", "requests.cpu",
                             "requests.ephemeral-storage", "requests.memory")


def _file_mode(value: Any, path: str, errs: Errs) -> None:
    if value is not None and (not _is_int(value) or not 0 <= value <= 0o777):
        errs.invalid(path, value, FILE_MODE_MSG)


def _local_non_reserved_path(target: str, path: str, errs: Errs) -> None:
    if target.startswith("/"):
        errs.invalid(path, target, "must be a relative path")
    if ".." in target.split("/"):
        errs.invalid(path, target, "must not contain '..'")
    elif target.startswith(".."):
        errs.invalid(path, target, "must not start with '..'")


def _key_to_path(item: dict, path: str, errs: Errs) -> None:
    if not item.get("key"):
        errs.required(f"{path}.key")
    if not item.get("path"):
        errs.required(f"{path}.path")
    _local_non_reserved_path(str(item.get("path") or ""), f"{path}.path", errs)
    _file_mode(item.get("mode"), f"{path}.mode", errs)


def _downward_file(item: dict, path: str, errs: Errs) -> None:
    """Upstream's validateDownwardAPIVolumeFile (its paths are the source's, not the item's)."""
    if not item.get("path"):
        errs.required(f"{path}.path")
    _local_non_reserved_path(str(item.get("path") or ""), f"{path}.path", errs)
    field_ref, res_ref = item.get("fieldRef"), item.get("resourceFieldRef")
    if isinstance(field_ref, dict):
        fp = f"{path}.fieldRef"
        fpath = str(field_ref.get("fieldPath") or "")
        m = re.fullmatch(r"(metadata\.(?:labels|annotations))\['(.*)'\]", fpath)
        if not field_ref.get("apiVersion"):
            errs.required(f"{fp}.apiVersion")
        elif not fpath:
            errs.required(f"{fp}.fieldPath")
        elif m:
            errs.each(fp, m.group(2), is_qualified_name(m.group(2).lower() if "annotations" in m.group(1)
                                                        else m.group(2)))
        elif "[" in fpath:
            errs.invalid(fp, fpath.split("[", 1)[0], "does not support subscript")
        elif fpath not in VOLUME_DOWNWARD_FIELD_PATHS:
            errs.not_supported(f"{fp}.fieldPath", fpath, VOLUME_DOWNWARD_FIELD_PATHS)
        if res_ref is not None:
            errs.invalid(path, "resource", "fieldRef and resourceFieldRef can not be specified simultaneously")
    elif isinstance(res_ref, dict):
        rp = f"{path}.resourceFieldRef"
        if not res_ref.get("containerName"):
            errs.required(f"{rp}.containerName")
        resource = str(res_ref.get("resource") or "")
        if not resource:
            errs.required(f"{rp}.resource")
        elif resource not in CONTAINER_RESOURCE_FIELDS and not resource.startswith(("limits.hugepages-",
                                                                                   "requests.hugepages-")):
            errs.not_supported(f"{rp}.resource", resource, CONTAINER_RESOURCE_FIELDS)
    else:
        errs.required(path, "one of fieldRef and resourceFieldRef is required")
    _file_mode(item.get("mode"), f"{path}.mode", errs)


def _validate_projecting_sources(v: dict, p: str, errs: Errs) -> None:
    for source in ("secret", "configMap"):
        if isinstance(v.get(source), dict):
            _file_mode(v[source].get("defaultMode"), f"{p}.{source}.defaultMode", errs)
            for j, item in enumerate(_l(v[source].get("items"))):
                _key_to_path(_d(item), f"{p}.{source}.items[{j}]", errs)
    if isinstance(v.get("downwardAPI"), dict):
        _file_mode(v["downwardAPI"].get("defaultMode"), f"{p}.downwardAPI.defaultMode", errs)
        for item in _l(v["downwardAPI"].get("items")):
            _downward_file(_d(item), f"{p}.downwardAPI", errs)
    if not isinstance(v.get("projected"), dict):
        return
    pp = f"{p}.projected"
    _file_mode(v["projected"].get("defaultMode"), f"{pp}.defaultMode", errs)
    paths: set[str] = set()

    def claim(target: str, shown: Any) -> None:
        if target in paths:
            errs.invalid(pp, shown, "conflicting duplicate paths")
        paths.add(target)

    for i, src in enumerate(_l(v["projected"].get("sources"))):
        src, sp = _d(src), f"{pp}.sources[{i}]"
        kinds = [k for k in ("secret", "configMap", "downwardAPI", "serviceAccountToken", "clusterTrustBundle")
                 if src.get(k) is not None]
        for kind in ("secret", "configMap"):
            obj = src.get(kind)
            if not isinstance(obj, dict):
                continue
            if not obj.get("name"):
                errs.required(f"{sp}.{kind}.name")
            for j, item in enumerate(_l(obj.get("items"))):
                _key_to_path(_d(item), f"{sp}.{kind}.items[{j}]", errs)
                if _d(item).get("path"):
                    claim(str(item["path"]), obj.get("name", ""))
        if isinstance(src.get("downwardAPI"), dict):
            for item in _l(src["downwardAPI"].get("items")):
                _downward_file(_d(item), f"{sp}.downwardAPI", errs)
                if _d(item).get("path"):
                    claim(str(item["path"]), item["path"])
        token = src.get("serviceAccountToken")
        if isinstance(token, dict):
            secs = token.get("expirationSeconds")
            if _is_int(secs) and secs < 600:
                errs.invalid(f"{sp}.serviceAccountToken.expirationSeconds", secs,
                             "may not specify a duration less than 10 minutes")
            elif _is_int(secs) and secs > 1 << 32:
                errs.invalid(f"{sp}.serviceAccountToken.expirationSeconds", secs,
                             "may not specify a duration larger than 2^32 seconds")
            if not token.get("path"):
                errs.required(f"{pp}.path")   # upstream names the volume's path here, not the source's
            else:
                _local_non_reserved_path(str(token["path"]), f"{pp}.path", errs)
        if len(kinds) > 1:
            errs.forbidden(sp, "may not specify more than 1 volume type")


def _validate_tolerations(tolerations: Any, path: str, errs: Errs) -> None:
    for i, t in enumerate(_l(tolerations)):
        t, p = _d(t), f"{path}[{i}]"
        key, op, effect = t.get("key") or "", t.get("operator") or "", t.get("effect") or ""
        if key:
            errs.each(f"{p}.key", key, is_qualified_name(key))
        elif op != "Exists":
            errs.invalid(f"{p}.operator", op, 'operator must be Exists when `key` is empty, '
                         'which means "match all values and all keys"')
        if t.get("tolerationSeconds") is not None and effect != "NoExecute":
            errs.invalid(f"{p}.effect", effect, "effect must be 'NoExecute' when `tolerationSeconds` is set")
        if op in ("", "Equal"):
            msgs = is_valid_label_value(str(t.get("value") or ""))
            if msgs:
                errs.invalid(f"{p}.operator", t.get("value"), ";".join(msgs))
        elif op == "Exists":
            if t.get("value"):
                errs.invalid(f"{p}.operator", t, "value must be empty when `operator` is 'Exists'")
        else:
            errs.not_supported(f"{p}.operator", op, TOLERATION_OPERATORS)
        if effect:
            errs.enum(f"{p}.effect", effect, TAINT_EFFECTS)


def _validate_pod_spec(spec: dict, path: str, errs: Errs) -> None:
    volumes = _validate_volumes(spec.get("volumes"), f"{path}.volumes", errs)
    _validate_containers(spec, path, errs, volumes)
    _validate_ephemeral_containers(spec, path, errs, volumes)
    errs.enum(f"{path}.restartPolicy", spec.get("restartPolicy"), RESTART_POLICIES)
    errs.enum(f"{path}.dnsPolicy", spec.get("dnsPolicy"), DNS_POLICIES)
    if spec.get("dnsPolicy") == "None" and not spec.get("dnsConfig"):
        errs.required(f"{path}.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is None")
    errs.nonnegative(f"{path}.terminationGracePeriodSeconds", spec.get("terminationGracePeriodSeconds"))
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (not _is_int(deadline) or not 1 <= deadline <= 2**31 - 1):
        errs.invalid(f"{path}.activeDeadlineSeconds", deadline, "must be between 1 and 2147483647, inclusive")
    for key, rule in (("nodeName", is_dns1123_subdomain), ("serviceAccountName", is_dns1123_subdomain),
                      ("hostname", is_dns1123_label), ("subdomain", is_dns1123_label)):
        if spec.get(key):
            errs.each(f"{path}.{key}", spec[key], rule(str(spec[key])))
    _validate_labels(spec.get("nodeSelector"), f"{path}.nodeSelector", errs)
    _validate_tolerations(spec.get("tolerations"), f"{path}.tolerations", errs)
    _validate_pod_placement(spec, path, errs)
    _validate_scheduling_gates(spec.get("schedulingGates"), f"{path}.schedulingGates", errs)


_AFFINITY_TERM_LISTS = (("podAffinity", "requiredDuringSchedulingIgnoredDuringExecution"),
                        ("podAffinity", "preferredDuringSchedulingIgnoredDuringExecution"),
                        ("podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution"),
                        ("podAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution"))


def _pod_affinity_terms(spec: dict, path: str) -> list[tuple[dict, str]]:
    """Every podAffinityTerm of the spec with its field path."""
    out = []
    affinity = _d(spec.get("affinity"))
    for kind, when in _AFFINITY_TERM_LISTS:
        for i, item in enumerate(_l(_d(affinity.get(kind)).get(when))):
            item = _d(item)
            if when.startswith("preferred"):
                out.append((_d(item.get("podAffinityTerm")), f"{path}.affinity.{kind}.{when}[{i}].podAffinityTerm"))
            else:
                out.append((item, f"{path}.affinity.{kind}.{when}[{i}]"))
    return out


def apply_match_label_keys(pod: dict) -> None:
    """What the API server does on pod creation (upstream's
    applyMatchLabelKeysAndMismatchLabelKeys): each podAffinityTerm's
    matchLabelKeys/mismatchLabelKeys become ``key In/NotIn (<the pod's
    value>)`` requirements in its labelSelector, so the scheduler and later
    readers see one selector."""
    labels = _d(_d(pod.get("metadata")).get("labels"))
    for term, _ in _pod_affinity_terms(_d(pod.get("spec")), "spec"):
        selector = term.get("labelSelector")
        if not isinstance(selector, dict) or not (term.get("matchLabelKeys") or term.get("mismatchLabelKeys")):
            continue
        exprs = selector.setdefault("matchExpressions", [])
        for field_name, op in (("matchLabelKeys", "In"), ("mismatchLabelKeys", "NotIn")):
            for key in _l(term.get(field_name)):
                if isinstance(key, str) and key in labels:
                    exprs.append({"key": key, "operator": op, "values": [labels[key]]})


def _validate_scheduling_gates(gates: Any, path: str, errs: Errs) -> None:
    seen: set[str] = set()
    for i, g in enumerate(_l(gates)):
        name = str(_d(g).get("name") or "")
        errs.each(f"{path}[{i}].name", name, is_qualified_name(name))
        if name in seen:
            errs.duplicate(f"{path}[{i}]", name)
        seen.add(name)


def _validate_pod_placement(spec: dict, path: str, errs: Errs) -> None:
    """Pod (anti-)affinity terms' label keys and topologySpreadConstraints,
    with upstream's paths and messages."""
    for term, tpath in _pod_affinity_terms(spec, path):
        if not term.get("topologyKey"):
            errs.required(f"{tpath}.topologyKey", "can not be empty")
        if isinstance(term.get("labelSelector"), dict):
            _validate_label_selector(term["labelSelector"], f"{tpath}.labelSelector", errs)
        match, mismatch = _l(term.get("matchLabelKeys")), _l(term.get("mismatchLabelKeys"))
        if term.get("labelSelector") is None:
            for name, keys in (("matchLabelKeys", match), ("mismatchLabelKeys", mismatch)):
                if keys:
                    errs.forbidden(f"{tpath}.{name}", "must not be specified when labelSelector is not set")
            continue
        for name, keys in (("matchLabelKeys", match), ("mismatchLabelKeys", mismatch)):
            for i, key in enumerate(keys):
                errs.each(f"{tpath}.{name}[{i}]", key, is_qualified_name(str(key)))
        for i, key in enumerate(match):
            if key in mismatch:
                errs.invalid(f"{tpath}.matchLabelKeys[{i}]", key, "exists in both matchLabelKeys and mismatchLabelKeys")
    seen = set()
    for i, c in enumerate(_l(spec.get("topologySpreadConstraints"))):
        c, cpath = _d(c), f"{path}.topologySpreadConstraints[{i}]"
        skew = c.get("maxSkew")
        if not _is_int(skew) or skew <= 0:
            errs.invalid(f"{cpath}.maxSkew", skew, "must be greater than zero")
        if not c.get("topologyKey"):
            errs.required(f"{cpath}.topologyKey", "can not be empty")
        action = c.get("whenUnsatisfiable")
        if action not in ("DoNotSchedule", "ScheduleAnyway"):
            errs.not_supported(f"{cpath}.whenUnsatisfiable", action, ["DoNotSchedule", "ScheduleAnyway"])
        min_domains = c.get("minDomains")
        if min_domains is not None:
            if not _is_int(min_domains) or min_domains <= 0:
                errs.invalid(f"{cpath}.minDomains", min_domains, "must be greater than zero")
            elif action != "DoNotSchedule":
                errs.invalid(f"{cpath}.minDomains", min_domains,
                             f"can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {action}")
        for name in ("nodeAffinityPolicy", "nodeTaintsPolicy"):
            if c.get(name) is not None and c[name] not in ("Honor", "Ignore"):
                errs.not_supported(f"{cpath}.{name}", c[name], ["Honor", "Ignore"])
        pair = (c.get("topologyKey"), action)
        if pair in seen:
            errs.duplicate(f"{cpath}.{{topologyKey, whenUnsatisfiable}}", f"{{{pair[0]}, {pair[1]}}}")
        seen.add(pair)
        if isinstance(c.get("labelSelector"), dict):
            _validate_label_selector(c["labelSelector"], f"{cpath}.labelSelector", errs)
        for j, key in enumerate(_l(c.get("matchLabelKeys"))):
            errs.each(f"{cpath}.matchLabelKeys[{j}]", key, is_qualified_name(str(key)))


# Kubernetes' list of what a pod update may touch, quoted in its error message.
_POD_UPDATABLE = (
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
)


def _spec_diff(old: Any, new: Any, path: str) -> list[str]:
    """Short human-readable list of differing paths (Kubernetes prints a Go cmp.Diff here)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _spec_diff(old.get(key), new.get(key), f"{path}.{key}")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out += _spec_diff(a, b, f"{path}[{i}]")
        return out
    return [] if old == new else [f"  {path}: {_show(old)} -> {_show(new)}"]


def _validate_pod_update(obj: dict, old: dict, errs: Errs) -> None:
    spec, old_spec = _d(obj.get("spec")), _d(old.get("spec"))
    munged = copy.deepcopy(spec)
    # Images may change: compare everything else by copying the old images over.
    for key in ("containers", "initContainers"):
        new_list, old_list = _l(munged.get(key)), _l(old_spec.get(key))
        if len(new_list) == len(old_list):
            for c, oc in zip(new_list, old_list):
                if isinstance(c, dict) and isinstance(oc, dict):
                    if "image" in oc:
                        c["image"] = oc["image"]
                    if not c.get("image") and not oc.get("image"):
                        c.pop("image", None)
    new_deadline, old_deadline = spec.get("activeDeadlineSeconds"), old_spec.get("activeDeadlineSeconds")
    if new_deadline is not None:
        if old_deadline is not None and _is_int(new_deadline) and _is_int(old_deadline) and new_deadline > old_deadline:
            errs.invalid("spec.activeDeadlineSeconds", new_deadline, "must be less than or equal to previous value")
    elif old_deadline is not None:
        errs.invalid("spec.activeDeadlineSeconds", None, "must not update from a positive integer to nil value")
    _restore(munged, old_spec, "activeDeadlineSeconds")
    old_tolerations = _l(old_spec.get("tolerations"))
    new_tolerations = _l(spec.get("tolerations"))
    for t in old_tolerations:
        if not any(_toleration_kept(t, n) for n in new_tolerations):
            errs.forbidden("spec.tolerations", "existing toleration can not be modified except its tolerationSeconds")
            break
    _restore(munged, old_spec, "tolerations")
    # Scheduling gates may only be removed (then the scheduler takes the pod).
    old_gates = {_d(g).get("name") for g in _l(old_spec.get("schedulingGates"))}
    for i, g in enumerate(_l(spec.get("schedulingGates"))):
        if _d(g).get("name") not in old_gates:
            errs.forbidden(f"spec.schedulingGates[{i}].name",
                           f"only deletion is allowed, but found new scheduling gate '{_d(g).get('name')}'")
    _restore(munged, old_spec, "schedulingGates")
    old_grace = old_spec.get("terminationGracePeriodSeconds")
    if _is_int(old_grace) and old_grace < 0 and spec.get("terminationGracePeriodSeconds") == 1:
        munged["terminationGracePeriodSeconds"] = old_grace
    if munged != old_spec:
        diff = "\n".join(_spec_diff(old_spec, munged, "spec"))
        message = f"pod updates may not change fields other than {','.join(_POD_UPDATABLE)}\n{diff}"
        errs.forbidden("spec", message.rstrip())


def _restore(munged: dict, old_spec: dict, key: str) -> None:
    if key in old_spec:
        munged[key] = copy.deepcopy(old_spec[key])
    else:
        munged.pop(key, None)


def _toleration_kept(old: Any, new: Any) -> bool:
    old, new = _d(old), _d(new)
    same = all(old.get(k) == new.get(k) for k in ("key", "operator", "value", "effect"))
    if not same:
        return False
    # NoExecute tolerations may shorten their tolerationSeconds.
    if old.get("tolerationSeconds") == new.get("tolerationSeconds"):
        return True
    return old.get("effect") == "NoExecute" and new.get("tolerationSeconds") is not None and (
        old.get("tolerationSeconds") is None or new["tolerationSeconds"] <= old["tolerationSeconds"])


def validate_pod(obj: dict, old: dict | None, errs: Errs) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    _validate_pod_spec(spec, "spec", errs)
    if old is None and _l(spec.get("ephemeralContainers")):
        # Only pods/ephemeralcontainers adds them; a plain update may not (see _validate_pod_update).
        errs.forbidden("spec.ephemeralContainers", "cannot be set on create")
    if old is None and _l(spec.get("schedulingGates")) and spec.get("nodeName"):
        errs.forbidden("spec.nodeName", "cannot be set until all schedulingGates have been cleared")
    if old is not None:
        _validate_pod_update(obj, old, errs)


MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"


def validate_pod_ephemeral_containers(obj: dict, old: dict | None, errs: Errs) -> None:
    """Kubernetes' ValidatePodEphemeralContainersUpdate: the pod stays valid and the
    ephemeral containers already there are neither changed nor removed (only appended)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    _validate_pod_spec(spec, "spec", errs)
    if old is None:
        return
    if MIRROR_POD_ANNOTATION in _d(_d(old.get("metadata")).get("annotations")):
        errs[:] = []
        errs.forbidden("", "static pods do not support ephemeral containers")
        return
    by_name = {_d(c).get("name"): c for c in _l(spec.get("ephemeralContainers"))}
    for existing in _l(_d(old.get("spec")).get("ephemeralContainers")):
        name = _d(existing).get("name")
        if name not in by_name:
            errs.forbidden("spec.ephemeralContainers", f"existing ephemeral containers {json.dumps(name)} "
                           "may not be removed\n")
        elif by_name[name] != existing:
            diff = "\n".join(_spec_diff(existing, by_name[name], f"spec.ephemeralContainers[{name}]"))
            errs.forbidden("spec.ephemeralContainers", f"existing ephemeral containers {json.dumps(name)} "
                           f"may not be changed\n{diff}")


# ---------------------------------------------------------------------------
# Workloads: Deployment, ReplicaSet, Scale
# ---------------------------------------------------------------------------


def _validate_template(spec: dict, errs: Errs) -> None:
    """Selector present, non-empty, matching the template's labels; template is a valid always-restarting pod."""
    selector = spec.get("selector")
    template = spec.get("template")
    if not isinstance(selector, dict):
        errs.required("spec.selector")
    else:
        _validate_label_selector(selector, "spec.selector", errs)
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):
            errs.invalid("spec.selector", selector, "empty selector is invalid for deployment")
    if not isinstance(template, dict):
        errs.required("spec.template")
        return
    labels = _d(_d(template.get("metadata")).get("labels"))
    _validate_labels(labels, "spec.template.metadata.labels", errs)
    if isinstance(selector, dict) and (selector.get("matchLabels") or selector.get("matchExpressions")):
        if not _selector_matches(selector, labels):
            errs.invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
    tspec = template.get("spec")
    if not isinstance(tspec, dict):
        errs.required("spec.template.spec")
        return
    _validate_pod_spec(tspec, "spec.template.spec", errs)
    if _l(tspec.get("ephemeralContainers")):
        errs.forbidden("spec.template.spec.ephemeralContainers", "ephemeral containers not allowed in pod template")
    if tspec.get("restartPolicy") not in (None, "", "Always"):
        errs.not_supported("spec.template.spec.restartPolicy", tspec["restartPolicy"], ("Always",))
    if tspec.get("activeDeadlineSeconds") is not None:
        errs.forbidden("spec.template.spec.activeDeadlineSeconds",
                       "activeDeadlineSeconds in ReplicaSet is not Supported")


def _int_or_percent(value: Any) -> int | None:
    if _is_int(value):
        return value
    if isinstance(value, str) and _PERCENT_RE.fullmatch(value):
        return int(value[:-1])
    return None


def _validate_int_or_percent(value: Any, path: str, errs: Errs) -> None:
    if isinstance(value, str):
        errs.each(path, value, is_valid_percent(value))
    else:
        errs.nonnegative(path, value)


def _validate_strategy(strategy: Any, path: str, errs: Errs) -> None:
    strategy = _d(strategy)
    errs.enum(f"{path}.type", strategy.get("type"), DEPLOYMENT_STRATEGIES)
    rolling = strategy.get("rollingUpdate")
    if strategy.get("type") == "Recreate" and rolling is not None:
        errs.forbidden(f"{path}.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")
        return
    if not isinstance(rolling, dict):
        return
    p = f"{path}.rollingUpdate"
    unavailable, surge = rolling.get("maxUnavailable"), rolling.get("maxSurge")
    _validate_int_or_percent(unavailable, f"{p}.maxUnavailable", errs)
    _validate_int_or_percent(surge, f"{p}.maxSurge", errs)
    if _int_or_percent(unavailable) == 0 and _int_or_percent(surge) == 0:
        errs.invalid(f"{p}.maxUnavailable", unavailable, "may not be 0 when `maxSurge` is 0")
    if isinstance(unavailable, str) and (_int_or_percent(unavailable) or 0) > 100:
        errs.invalid(f"{p}.maxUnavailable", unavailable, "must not be greater than 100%")


def _validate_replicas_and_timing(spec: dict, errs: Errs) -> None:
    errs.nonnegative("spec.replicas", spec.get("replicas"))
    errs.nonnegative("spec.minReadySeconds", spec.get("minReadySeconds"))


def validate_deployment(obj: dict, old: dict | None, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    _validate_replicas_and_timing(spec, errs)
    _validate_template(spec, errs)
    _validate_strategy(spec.get("strategy"), "spec.strategy", errs)
    errs.nonnegative("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    deadline = spec.get("progressDeadlineSeconds")
    if deadline is not None:
        errs.nonnegative("spec.progressDeadlineSeconds", deadline)
        min_ready = spec.get("minReadySeconds") or 0
        if _is_int(deadline) and _is_int(min_ready) and deadline <= min_ready:
            errs.invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds")
    if old is not None:
        _validate_immutable(spec.get("selector"), _d(old.get("spec")).get("selector"), "spec.selector", errs)


def validate_replicaset(obj: dict, old: dict | None, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    _validate_replicas_and_timing(spec, errs)
    _validate_template(spec, errs)
    if old is not None:
        _validate_immutable(spec.get("selector"), _d(old.get("spec")).get("selector"), "spec.selector", errs)


def validate_scale(obj: dict, old: dict | None, errs: Errs) -> None:
    errs.nonnegative("spec.replicas", _d(obj.get("spec")).get("replicas"))


# -- for kinds that bring their own validation (ReplicationController, PodDisruptionBudget) --
validate_labels = _validate_labels
validate_label_selector = _validate_label_selector
validate_int_or_percent = _validate_int_or_percent
int_or_percent = _int_or_percent
selector_matches = _selector_matches


def validate_pod_template(template: Any, path: str, errs: Errs, *, owner: str, always_restart: bool = True) -> None:
    """A controller's pod template (ValidatePodTemplateSpecForRC/ForReplicaSet): valid labels,
    annotations and pod spec; with ``always_restart`` also restartPolicy Always and no
    activeDeadlineSeconds (``owner`` names the kind in that message). A Job has its own rules."""
    if not isinstance(template, dict):
        errs.required(path)
        return
    meta = _d(template.get("metadata"))
    _validate_labels(meta.get("labels"), f"{path}.metadata.labels", errs)
    _validate_annotations(meta.get("annotations"), f"{path}.metadata.annotations", errs)
    tspec = template.get("spec")
    if not isinstance(tspec, dict):
        errs.required(f"{path}.spec")
        return
    _validate_pod_spec(tspec, f"{path}.spec", errs)
    if _l(tspec.get("ephemeralContainers")):
        errs.forbidden(f"{path}.spec.ephemeralContainers", "ephemeral containers not allowed in pod template")
    if not always_restart:
        return
    if tspec.get("restartPolicy") not in (None, "", "Always"):
        errs.not_supported(f"{path}.spec.restartPolicy", tspec["restartPolicy"], ("Always",))
    if tspec.get("activeDeadlineSeconds") is not None:
        errs.forbidden(f"{path}.spec.activeDeadlineSeconds", f"activeDeadlineSeconds in {owner} is not Supported")


def default_pod_template(obj: dict) -> None:
    """The pod defaults in ``spec.template.spec`` of a controller."""
    _default_template(obj)


# ---------------------------------------------------------------------------
# Services and Endpoints
# ---------------------------------------------------------------------------


def _validate_service_ports(spec: dict, errs: Errs) -> None:
    ports = _l(spec.get("ports"))
    svc_type = spec.get("type")
    require_name = len(ports) > 1
    names: set[str] = set()
    pairs: set[tuple] = set()
    node_ports: set[tuple] = set()
    for i, port in enumerate(ports):
        port, p = _d(port), f"spec.ports[{i}]"
        name = port.get("name")
        if require_name and not name:
            errs.required(f"{p}.name")
        elif name:
            errs.each(f"{p}.name", name, is_dns1123_label(str(name)))
            if name in names:
                errs.duplicate(f"{p}.name", name)
            names.add(name)
        errs.each(f"{p}.port", port.get("port"), is_valid_port_num(port.get("port")))
        errs.enum(f"{p}.protocol", port.get("protocol"), PROTOCOLS)
        if port.get("targetPort") is not None:
            _validate_int_or_port_name(port["targetPort"], f"{p}.targetPort", errs)
        pair = (port.get("port"), port.get("protocol"))
        if pair in pairs:
            errs.duplicate(p, {"port": pair[0], "protocol": pair[1]})
        pairs.add(pair)
        _validate_node_port(port, p, svc_type, node_ports, errs)


def _validate_node_port(port: dict, path: str, svc_type: Any, seen: set[tuple], errs: Errs) -> None:
    node_port = port.get("nodePort")
    if not node_port:
        return
    if svc_type not in ("NodePort", "LoadBalancer"):
        errs.forbidden(f"{path}.nodePort", f"may not be used when `type` is '{svc_type}'")
        return
    low, high = NODE_PORT_RANGE
    if not _is_int(node_port) or not low <= node_port <= high:
        errs.invalid(f"{path}.nodePort", node_port,
                     f"provided port is not in the valid range. The range of valid ports is {low}-{high}")
    key = (node_port, port.get("protocol"))
    if key in seen:
        errs.duplicate(f"{path}.nodePort", node_port)
    seen.add(key)


def _validate_cluster_ips(spec: dict, errs: Errs) -> None:
    svc_type = spec.get("type")
    cluster_ip = spec.get("clusterIP") or ""
    ips = _l(spec.get("clusterIPs"))
    if svc_type == "ExternalName":
        if cluster_ip:
            errs.forbidden("spec.clusterIPs", "may not be set for ExternalName services")
        return
    if cluster_ip and ips and ips[0] != cluster_ip:
        errs.invalid("spec.clusterIPs", ips, "first value must match `clusterIP`")
    for i, ip in enumerate(ips or ([cluster_ip] if cluster_ip else [])):
        p = f"spec.clusterIPs[{i}]"
        if ip == "None":
            if i > 0 or len(ips) > 1:
                errs.invalid(p, ip, "must be a valid IP address or 'None' (headless) only as the sole entry")
            elif svc_type in ("NodePort", "LoadBalancer"):
                errs.invalid(p, ip, f"may not be set to 'None' for {svc_type} services")
        else:
            errs.each(p, ip, is_valid_ip(str(ip)))


def validate_service(obj: dict, old: dict | None, errs: Errs) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    svc_type = spec.get("type")
    errs.enum("spec.type", svc_type, SERVICE_TYPES)
    headless = spec.get("clusterIP") == "None"
    if not _l(spec.get("ports")) and not headless and svc_type != "ExternalName":
        errs.required("spec.ports")
    _validate_service_ports(spec, errs)
    _validate_cluster_ips(spec, errs)
    if svc_type == "ExternalName":
        name = spec.get("externalName")
        if not name:
            errs.required("spec.externalName")
        else:
            errs.each("spec.externalName", name, is_dns1123_subdomain(str(name).rstrip(".")))
    _validate_labels(spec.get("selector"), "spec.selector", errs)
    errs.enum("spec.sessionAffinity", spec.get("sessionAffinity"), SESSION_AFFINITIES)
    policy = spec.get("externalTrafficPolicy")
    if policy and svc_type not in ("NodePort", "LoadBalancer"):
        errs.invalid("spec.externalTrafficPolicy", policy,
                     "may only be set when `type` is 'NodePort' or 'LoadBalancer'")
    elif policy:
        errs.enum("spec.externalTrafficPolicy", policy, TRAFFIC_POLICIES)
    errs.enum("spec.internalTrafficPolicy", spec.get("internalTrafficPolicy"), TRAFFIC_POLICIES, required=False)
    errs.enum("spec.ipFamilyPolicy", spec.get("ipFamilyPolicy"), IP_FAMILY_POLICIES, required=False)
    for i, family in enumerate(_l(spec.get("ipFamilies"))):
        errs.enum(f"spec.ipFamilies[{i}]", family, IP_FAMILIES)
    for i, ip in enumerate(_l(spec.get("externalIPs"))):
        errs.each(f"spec.externalIPs[{i}]", ip, is_valid_ip(str(ip)))
    _validate_source_ranges(obj, svc_type, errs)
    if old is not None:
        _validate_service_update(spec, _d(old.get("spec")), errs)


def _validate_source_ranges(obj: dict, svc_type: Any, errs: Errs) -> None:
    """spec.loadBalancerSourceRanges, or else the annotation, as upstream's ValidateService: only on
    LoadBalancers, each a CIDR (space padding tolerated). The field's path is upstream's, capital L
    included; an annotation is checked whenever it is set, even empty."""
    ranges = _l(_d(obj.get("spec")).get("loadBalancerSourceRanges"))
    annotations = _d(_d(obj.get("metadata")).get("annotations"))
    if ranges:
        path = "spec.LoadBalancerSourceRanges"
        values = [(f"{path}[{i}]", str(r).strip()) for i, r in enumerate(ranges)]
    elif SOURCE_RANGES_ANNOTATION in annotations:
        path = f"metadata.annotations[{SOURCE_RANGES_ANNOTATION}]"
        text = str(annotations[SOURCE_RANGES_ANNOTATION]).strip()
        values = [(path, r.strip()) for r in text.split(",")] if text else []
    else:
        return
    if svc_type != "LoadBalancer":
        errs.forbidden(path, "may only be used when `type` is 'LoadBalancer'")
    for where, value in values:
        if parse_cidr(value) is None:
            errs.invalid(where, value, CIDR_MESSAGE)


def _validate_service_update(spec: dict, old_spec: dict, errs: Errs) -> None:
    # Switching to or from ExternalName releases/allocates the IP, so only then may it change.
    if "ExternalName" in (spec.get("type"), old_spec.get("type")):
        return
    old_ip = old_spec.get("clusterIP") or ""
    if old_ip and (spec.get("clusterIP") or "") != old_ip:
        errs.invalid("spec.clusterIPs[0]", spec.get("clusterIP") or "", "may not change once set")


def _validate_endpoint_address(addr: dict, path: str, errs: Errs) -> None:
    ip = str(addr.get("ip") or "")
    msgs = is_valid_ip(ip)
    errs.each(f"{path}.ip", ip, msgs)
    if not msgs and ENDPOINTS_REJECT_SPECIAL_IPS:
        parsed = ipaddress.ip_address(ip)
        if parsed.is_unspecified:
            errs.invalid(f"{path}.ip", ip, "may not be unspecified (0.0.0.0)")
        elif parsed.is_loopback:
            errs.invalid(f"{path}.ip", ip, "may not be in the loopback range (127.0.0.0/8, ::1/128)")
        elif parsed.is_link_local:
            errs.invalid(f"{path}.ip", ip, "may not be in the link-local range (169.254.0.0/16, fe80::/10)")
    if addr.get("hostname"):
        errs.each(f"{path}.hostname", addr["hostname"], is_dns1123_label(str(addr["hostname"])))
    if addr.get("nodeName"):
        errs.each(f"{path}.nodeName", addr["nodeName"], is_dns1123_subdomain(str(addr["nodeName"])))


def validate_endpoints(obj: dict, old: dict | None, errs: Errs) -> None:
    for i, subset in enumerate(_l(obj.get("subsets"))):
        subset, p = _d(subset), f"subsets[{i}]"
        if not _l(subset.get("addresses")) and not _l(subset.get("notReadyAddresses")):
            errs.required(p, "must specify `addresses` or `notReadyAddresses`")
        for key in ("addresses", "notReadyAddresses"):
            for j, addr in enumerate(_l(subset.get(key))):
                _validate_endpoint_address(_d(addr), f"{p}.{key}[{j}]", errs)
        ports = _l(subset.get("ports"))
        for j, port in enumerate(ports):
            port, pp = _d(port), f"{p}.ports[{j}]"
            if len(ports) > 1 and not port.get("name"):
                errs.required(f"{pp}.name")
            elif port.get("name"):
                errs.each(f"{pp}.name", port["name"], is_dns1123_label(str(port["name"])))
            errs.each(f"{pp}.port", port.get("port"), is_valid_port_num(port.get("port")))
            errs.enum(f"{pp}.protocol", port.get("protocol"), PROTOCOLS)


# ---------------------------------------------------------------------------
# Configuration: ConfigMap, Secret, ServiceAccount
# ---------------------------------------------------------------------------


def _validate_keys(data: Any, path: str, errs: Errs) -> int:
    """Validate each key of a data map; return the total size of its values."""
    if data is not None and not isinstance(data, dict):
        errs.invalid(path, data, "must be a map of string keys to string values")
        return 0
    total = 0
    for key, value in _d(data).items():
        errs.each(f"{path}[{key}]", key, is_config_map_key(key))
        if not isinstance(value, str):
            errs.invalid(f"{path}[{key}]", value, "must be a string")
            continue
        total += len(value.encode())
    return total


def _decoded(value: str, path: str, errs: Errs) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        errs.invalid(path, "<secret contents redacted>", "illegal base64 data")
        return None


def _validate_immutable_data(obj: dict, old: dict, keys: tuple[str, ...], errs: Errs) -> None:
    if old.get("immutable") is not True:
        return
    if obj.get("immutable") is not True:
        errs.forbidden("immutable", "field is immutable when `immutable` is set")
    for key in keys:
        if (obj.get(key) or {}) != (old.get(key) or {}):
            errs.forbidden(key, "field is immutable when `immutable` is set")


def validate_configmap(obj: dict, old: dict | None, errs: Errs) -> None:
    total = _validate_keys(obj.get("data"), "data", errs)
    binary = obj.get("binaryData")
    for key in _d(obj.get("data")):
        if key in _d(binary):
            errs.invalid(f"data[{key}]", key, "duplicate of key present in binaryData")
    _validate_keys(binary, "binaryData", errs)
    for key, value in _d(binary).items():
        if isinstance(value, str):
            raw = _decoded(value, f"binaryData[{key}]", errs)
            total += len(raw or b"")
    if total > CONFIG_DATA_MAX_BYTES:
        errs.too_long("", CONFIG_DATA_MAX_BYTES)
    if old is not None:
        _validate_immutable_data(obj, old, ("data", "binaryData"), errs)


# Secret types with required data keys: (type, keys that must be present).
_SECRET_REQUIRED_KEYS = {
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}


def validate_secret(obj: dict, old: dict | None, errs: Errs) -> None:
    data = obj.get("data")
    _validate_keys(data, "data", errs)
    decoded: dict[str, bytes] = {}
    for key, value in _d(data).items():
        if isinstance(value, str):
            raw = _decoded(value, f"data[{key}]", errs)
            if raw is not None:
                decoded[key] = raw
    if sum(len(v) for v in decoded.values()) > CONFIG_DATA_MAX_BYTES:
        errs.too_long("data", CONFIG_DATA_MAX_BYTES)
    _validate_secret_type(obj, decoded, errs)
    if old is not None:
        _validate_immutable(obj.get("type"), old.get("type"), "type", errs)
        _validate_immutable_data(obj, old, ("data",), errs)


def _validate_secret_type(obj: dict, decoded: dict[str, bytes], errs: Errs) -> None:
    secret_type = obj.get("type")
    for key in _SECRET_REQUIRED_KEYS.get(str(secret_type), ()):
        if key not in _d(obj.get("data")):
            errs.required(f"data[{key}]")
        elif key in (".dockercfg", ".dockerconfigjson") and key in decoded:
            try:
                json.loads(decoded[key])
            except ValueError as e:
                errs.invalid(f"data[{key}]", "<secret contents redacted>", str(e))
    if secret_type == "kubernetes.io/basic-auth" and not ({"username", "password"} & set(_d(obj.get("data")))):
        errs.required("data[username]")
        errs.required("data[password]")
    if secret_type == "kubernetes.io/service-account-token":
        annotations = _d(_d(obj.get("metadata")).get("annotations"))
        if not annotations.get("kubernetes.io/service-account.name"):
            errs.required("metadata.annotations[kubernetes.io/service-account.name]")


def validate_service_account(obj: dict, old: dict | None, errs: Errs) -> None:
    for key in ("secrets", "imagePullSecrets"):
        for i, ref in enumerate(_l(obj.get(key))):
            name = _d(ref).get("name")
            if name:
                errs.each(f"{key}[{i}].name", name, is_dns1123_subdomain(str(name)))


# ---------------------------------------------------------------------------
# Cluster: Namespace, Node, Event, Lease, Binding
# ---------------------------------------------------------------------------


def validate_namespace(obj: dict, old: dict | None, errs: Errs) -> None:
    for i, fin in enumerate(_l(_d(obj.get("spec")).get("finalizers"))):
        _validate_finalizer(fin, f"spec.finalizers[{i}]", errs)
    phase = _d(obj.get("status")).get("phase")
    errs.enum("status.phase", phase, ("Active", "Terminating"), required=False)


def validate_node(obj: dict, old: dict | None, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    seen: set[tuple] = set()
    for i, taint in enumerate(_l(spec.get("taints"))):
        taint, p = _d(taint), f"spec.taints[{i}]"
        key = taint.get("key") or ""
        if not key:
            errs.required(f"{p}.key")
        else:
            errs.each(f"{p}.key", key, is_qualified_name(key))
        if taint.get("value"):
            errs.each(f"{p}.value", taint["value"], is_valid_label_value(str(taint["value"])))
        errs.enum(f"{p}.effect", taint.get("effect"), TAINT_EFFECTS)
        pair = (key, taint.get("effect"))
        if pair in seen:
            errs.duplicate(p, {"key": key, "effect": taint.get("effect")},
                           "taints must be unique by key and effect pair")
        seen.add(pair)
    for i, cidr in enumerate(_l(spec.get("podCIDRs"))):
        try:
            ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            errs.invalid(f"spec.podCIDRs[{i}]", cidr, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
    for section in ("capacity", "allocatable"):
        for name, value in _d(_d(obj.get("status")).get(section)).items():
            try:
                parse_quantity(value)
            except (ValueError, TypeError):
                errs.invalid(f"status.{section}[{name}]", value, "must be a valid quantity")
    if old is not None:
        old_spec = _d(old.get("spec"))
        for key, what in (("podCIDRs", "podCIDR"), ("providerID", "providerID")):
            if old_spec.get(key) and spec.get(key) != old_spec.get(key):
                errs.forbidden(f"spec.{key}", f'node updates may not change {what} except from "" to valid')


def validate_event(obj: dict, old: dict | None, errs: Errs) -> None:
    meta = _d(obj.get("metadata"))
    namespace = meta.get("namespace") or ""
    involved_ns = _d(obj.get("involvedObject")).get("namespace") or ""
    if not obj.get("eventTime"):
        mismatch = (namespace not in ("", "default")) if not involved_ns else namespace != involved_ns
        if mismatch:
            errs.invalid("involvedObject.namespace", involved_ns, "does not match event.namespace")
    else:
        if not involved_ns and namespace not in ("default", "kube-system"):
            errs.invalid("involvedObject.namespace", involved_ns, "does not match event.namespace")
        # New-style events (eventTime set) must say who reported what.
        for key in ("reportingComponent", "reportingInstance", "action", "reason"):
            if not obj.get(key):
                errs.required(key)
        errs.enum("type", obj.get("type"), ("Normal", "Warning"), required=False)


def validate_lease(obj: dict, old: dict | None, errs: Errs) -> None:
    spec = _d(obj.get("spec"))
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not _is_int(duration) or duration <= 0):
        errs.invalid("spec.leaseDurationSeconds", duration, "must be greater than 0")
    errs.nonnegative("spec.leaseTransitions", spec.get("leaseTransitions"))
    if spec.get("preferredHolder") and not spec.get("strategy"):
        errs.forbidden("spec.preferredHolder", "may only be specified if `strategy` is defined")


def validate_binding(obj: dict, old: dict | None, errs: Errs) -> None:
    target = _d(obj.get("target"))
    if target.get("kind") not in (None, "", "Node"):
        errs.not_supported("target.kind", target["kind"], ("Node", "<empty>"))
    if not target.get("name"):
        errs.required("target.name")


# ---------------------------------------------------------------------------
# Kind table
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def _strategy(resource: Any, subresource: str | None) -> tuple[Any, Any]:
    """(kind, strategy) for a Kind or a name: "pods", "deployments.apps", "Pod", "po", "pods/ephemeralcontainers"."""
    if isinstance(resource, kinds.Kind):
        return resource, resource.strategy_for(subresource)
    r = str(resource).strip().lower()
    if "/" in r:
        r, subresource = r.split("/", 1)
    r, _, group = r.partition(".")
    for k in kinds.all_kinds():
        if group and k.group != group:
            continue
        if r in (k.plural, k.singular, *k.short_names):
            return k, k.strategy_for(subresource)
    # A subresource's own kind: "bindings" (pods/binding), "scale" (deployments/scale).
    for k in kinds.all_kinds():
        for sub, strategy in k.subresource_strategies.items():
            if strategy.kind and r in (sub, strategy.kind.lower(), strategy.kind.lower() + "s"):
                return k, strategy
    return None, None


def default_object(resource: Any, obj: dict, *, old: dict | None = None, subresource: str | None = None) -> None:
    """Fill in Kubernetes' defaults in place.

    ``resource`` is a ``Kind`` or its name.  ``old`` is the stored object on
    update: create-only defaults (pod admission fields, pod status, namespace
    finalizers) are then skipped and a service keeps its allocated
    clusterIP/nodePorts when the client omits them.  Unknown resources are
    left untouched.
    """
    _, strategy = _strategy(resource, subresource)
    if strategy is not None and isinstance(obj, dict):
        strategy.default(obj, old)


def validate_object(resource: Any, obj: dict, *, old: dict | None = None, subresource: str | None = None) -> None:
    """Raise ``kinds.Invalid`` listing every problem with *obj* (and with the change from *old*)."""
    kind, strategy = _strategy(resource, subresource)
    errs = Errs()
    _validate_meta(obj, strategy.name_rule if strategy else is_dns1123_subdomain, errs)
    if strategy is not None:
        strategy.validate(obj, old, errs)
    if old is not None:
        _validate_meta_update(obj, old, errs)
    if errs:
        name = str(_d(obj.get("metadata")).get("name") or _d(obj.get("metadata")).get("generateName") or "")
        kind_name = (strategy.kind if strategy and strategy.kind else kind.kind if kind else
                     str(obj.get("kind") or resource))
        group = strategy.group if strategy and strategy.group is not None else kind.group if kind else ""
        raise kinds.Invalid(kind_name, name, list(errs), group=group)


# ---------------------------------------------------------------------------
# For kinds that bring their own validation (in their own module)
# ---------------------------------------------------------------------------

validate_label_selector = _validate_label_selector
selector_matches = _selector_matches
validate_labels = _validate_labels
validate_pod_spec = _validate_pod_spec
validate_immutable = _validate_immutable


def status_counters(*fields: str) -> Callable[[dict, dict | None, Errs], None]:
    """A status-write rule for workload kinds (ValidateDaemonSetStatus and kin): each
    counter in ``status`` is >= 0, and ``status.collisionCount`` never goes down."""

    def validate(obj: dict, old: dict | None, errs: Errs) -> None:
        status = _d(obj.get("status"))
        for name in fields:
            errs.nonnegative(f"status.{name}", status.get(name))
        count = status.get("collisionCount")
        errs.nonnegative("status.collisionCount", count)
        old_count = _d(_d(old).get("status")).get("collisionCount")
        if _is_int(count) and _is_int(old_count) and count < old_count:
            errs.invalid("status.collisionCount", count, "cannot be decremented")

    return validate


def default_template_spec(template: Any) -> None:
    """A pod template's spec defaults (as a pod's), in place: for templates not at spec.template (CronJob)."""
    if isinstance(_d(template).get("spec"), dict):
        _default_pod_spec(template["spec"])


is_int = _is_int
