"""Ingress (networking.k8s.io/v1): HTTP(S) routes from outside the cluster to Services.

Served here, made real elsewhere: an ingress controller of the Ingress's
class (kubepy's own is ``kubepy ingress``, ``kubepy.ingress``) renders its
rules into a real proxy and writes ``status.loadBalancer``.  Which class an
Ingress created without one gets is decided at admission
(``kubepy.api.defaultingressclass``), as upstream's DefaultIngressClass.

Validation as upstream's ValidateIngressCreate/Update/StatusUpdate
(pkg/apis/networking/validation), with its field paths and messages: rules
or a defaultBackend, hosts that are DNS names (``*.`` wildcards allowed, no
IP addresses), every path with a pathType (Exact and Prefix absolute and
free of ``//``, ``/./``, ``/../``, ``%2f``), backends naming a Service with
a port name or number (not both) or a resource (not both), TLS hosts and
secret names, the class name, and on create the ``kubernetes.io/ingress.class``
annotation agreeing with ``ingressClassName``.  No defaults (v1 has none).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from typing import Any

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v

__all__ = ["INGRESS", "INGRESS_CLASS_ANNOTATION", "PATH_TYPES", "is_wildcard_dns1123_subdomain"]

INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")  # sorted, as upstream's sets.List() prints them
_INVALID_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_INVALID_SUFFIXES = ("/..", "/.")
_WILDCARD_FMT = r"\*\." + r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_WILDCARD_RE = re.compile(_WILDCARD_FMT)


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list:
    return value if isinstance(value, list) else []


def is_wildcard_dns1123_subdomain(value: str) -> list[str]:
    """apimachinery's IsWildcardDNS1123Subdomain."""
    errs = []
    if len(value) > v.DNS1123_SUBDOMAIN_MAX:
        errs.append(f"must be no more than {v.DNS1123_SUBDOMAIN_MAX} characters")
    if not _WILDCARD_RE.fullmatch(value):
        errs.append("a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which "
                    "must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric "
                    f"character (e.g. '*.example.com', regex used for validation is '{_WILDCARD_FMT}')")
    return errs


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _validate_host(host: Any, path: str, errs: v.Errs) -> None:
    if not isinstance(host, str):
        errs.invalid(path, host, "must be a string")
        return
    if _is_ip(host):
        errs.invalid(path, host, "must be a DNS name, not an IP address")
    errs.each(path, host, is_wildcard_dns1123_subdomain(host) if "*" in host else v.is_dns1123_subdomain(host))


def validate_typed_local_object_reference(ref: dict, path: str, errs: v.Errs) -> None:
    """upstream's validateIngressTypedLocalObjectReference (also IngressClass parameters)."""
    group = ref.get("apiGroup")
    if group is not None:
        errs.each(f"{path}.apiGroup", group, v.is_dns1123_subdomain(str(group)))
    for key in ("kind", "name"):
        value = ref.get(key)
        if not value:
            errs.required(f"{path}.{key}", f"{key} is required")
        elif not isinstance(value, str) or value in (".", "..") or "/" in value or "%" in value:
            errs.invalid(f"{path}.{key}", value, "may not contain '/'" if "/" in str(value)
                         else "may not contain '%'" if "%" in str(value) else f"may not be '{value}'")


def _validate_backend(backend: dict, path: str, errs: v.Errs) -> None:
    resource, service = backend.get("resource"), backend.get("service")
    if resource is not None and service is not None:
        errs.invalid(path, "", "cannot set both resource and service backends")
    elif resource is not None:
        validate_typed_local_object_reference(_d(resource), f"{path}.resource", errs)
    elif service is not None:
        service = _d(service)
        name = service.get("name")
        if not name:
            errs.required(f"{path}.service.name")
        else:
            errs.each(f"{path}.service.name", name, v.is_dns1035_label(str(name)))
        port = _d(service.get("port"))
        port_name, number = port.get("name") or "", port.get("number") or 0
        if port_name and number:
            errs.invalid(path, "", "cannot set both port name & port number")
        elif port_name:
            errs.each(f"{path}.service.port.name", port_name, v.is_valid_port_name(str(port_name)))
        elif number:
            errs.each(f"{path}.service.port.number", number, v.is_valid_port_num(number))
        else:
            errs.required(path, "port name or number is required")
    else:
        errs.invalid(path, "", "resource or service backend is required")


def _validate_path(item: dict, path: str, errs: v.Errs) -> None:
    path_type = item.get("pathType")
    if path_type is None:
        errs.required(f"{path}.pathType", "pathType must be specified")
        return
    value = item.get("path") or ""
    if not isinstance(value, str):
        errs.invalid(f"{path}.path", value, "must be a string")
        value = ""
    if path_type in ("Exact", "Prefix"):
        if not value.startswith("/"):
            errs.invalid(f"{path}.path", value, "must be an absolute path")
        for seq in _INVALID_SEQUENCES:
            if seq in value:
                errs.invalid(f"{path}.path", value, f"must not contain '{seq}'")
        for suffix in _INVALID_SUFFIXES:
            if value.endswith(suffix):
                errs.invalid(f"{path}.path", value, f"cannot end with '{suffix}'")
    elif path_type == "ImplementationSpecific":
        if value and not str(value).startswith("/"):
            errs.invalid(f"{path}.path", value, "must be an absolute path")
    else:
        errs.not_supported(f"{path}.pathType", path_type, PATH_TYPES)
    _validate_backend(_d(item.get("backend")), f"{path}.backend", errs)


def _validate_spec(spec: dict, errs: v.Errs) -> None:
    rules = _l(spec.get("rules"))
    if not rules and spec.get("defaultBackend") is None:
        errs.invalid("spec", spec.get("rules"), "either `defaultBackend` or `rules` must be specified")
    if spec.get("defaultBackend") is not None:
        _validate_backend(_d(spec["defaultBackend"]), "spec.defaultBackend", errs)
    for i, rule in enumerate(map(_d, rules)):
        if rule.get("host"):
            _validate_host(rule["host"], f"spec.rules[{i}].host", errs)
        http = rule.get("http")
        if http is None:
            continue
        paths = _l(_d(http).get("paths"))
        if not paths:
            errs.required(f"spec.rules[{i}].http.paths")
        for j, item in enumerate(paths):
            _validate_path(_d(item), f"spec.rules[{i}].http.paths[{j}]", errs)
    for i, tls in enumerate(map(_d, _l(spec.get("tls")))):
        for j, host in enumerate(_l(tls.get("hosts"))):
            p = f"spec.tls[{i}].hosts[{j}]"
            host = str(host)
            errs.each(p, host, is_wildcard_dns1123_subdomain(host) if "*" in host else v.is_dns1123_subdomain(host))
        secret = tls.get("secretName")
        if secret:
            errs.each(f"spec.tls[{i}].secretName", secret, v.is_dns1123_subdomain(str(secret)))
    name = spec.get("ingressClassName")
    if name is not None:
        errs.each("spec.ingressClassName", name, v.is_dns1123_subdomain(str(name)))


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    spec = _d(obj.get("spec"))
    _validate_spec(spec, errs)
    if old is None:
        annotations = _d(_d(obj.get("metadata")).get("annotations"))
        value = annotations.get(INGRESS_CLASS_ANNOTATION)
        if value is not None and spec.get("ingressClassName") is not None and value != spec["ingressClassName"]:
            errs.invalid(f"annotations.{INGRESS_CLASS_ANNOTATION}", value,
                         "must match `ingressClassName` when both are specified")


def _validate_status(obj: dict, old: dict | None, errs: v.Errs) -> None:
    for i, ing in enumerate(map(_d, _l(_d(_d(obj.get("status")).get("loadBalancer")).get("ingress")))):
        p = f"status.loadBalancer.ingress[{i}]"
        if ing.get("ip"):
            errs.each(f"{p}.ip", ing["ip"], v.is_valid_ip(str(ing["ip"])))
        if ing.get("hostname"):
            hostname = str(ing["hostname"])
            errs.each(f"{p}.hostname", hostname, v.is_dns1123_subdomain(hostname))
            if _is_ip(hostname):
                errs.invalid(f"{p}.hostname", hostname, "must be a DNS name, not an IP address")


def _prepare_create(obj: dict) -> None:
    obj["status"] = {"loadBalancer": {}}


def _hosts(spec: dict) -> str:
    """printIngress's HOSTS: the rules' hosts, at most three then ``+ N more...``; ``*`` when none."""
    hosts = [str(_d(r).get("host")) for r in _l(spec.get("rules")) if _d(r).get("host")]
    if not hosts:
        return "*"
    shown = ",".join(hosts[:3])
    return shown + (f" + {len(hosts) - 3} more..." if len(hosts) > 3 else "")


def _address(status: dict) -> str:
    out = []
    for ing in map(_d, _l(_d(status.get("loadBalancer")).get("ingress"))):
        if ing.get("ip"):
            out.append(str(ing["ip"]))
        elif ing.get("hostname"):
            out.append(str(ing["hostname"]))
    return ",".join(out)


def _cells(obj: dict, now: dt.datetime) -> list:
    spec, status = _d(obj.get("spec")), _d(obj.get("status"))
    return [printers.name_cell(obj), spec.get("ingressClassName") or "<none>", _hosts(spec), _address(status),
            "80, 443" if _l(spec.get("tls")) else "80", printers.age_cell(obj, now)]


_COLUMNS = (
    printers.name_column(),
    printers.column("Class", "The name of the IngressClass resource that should be used for ingress."),
    printers.column("Hosts", "Hosts that incoming requests are matched against before the ingress rule"),
    printers.column("Address", "Address is a list containing ingress points for the load-balancer"),
    printers.column("Ports", "Ports of TLS configurations that open"),
    printers.age_column(),
)

INGRESS = register(Kind(
    "networking.k8s.io", "v1", "Ingress", "ingresses", namespaced=True, short_names=("ing",),
    subresources=("status",), has_status=True, has_spec_generation=True, model="V1Ingress", proto="Ingress",
    proto_schema="""
Ingress
    1 metadata                         ObjectMeta
    2 spec                             IngressSpec
    3 status                           IngressStatus
IngressSpec
    1 defaultBackend                   *IngressBackend
    2 tls                              []IngressTLS
    3 rules                            []IngressRule
    4 ingressClassName                 *string
IngressBackend
    3 resource                         *TypedLocalObjectReference
    4 service                          *IngressServiceBackend
IngressServiceBackend
    1 name                             string
    2 port                             ServiceBackendPort
ServiceBackendPort
    1 name                             string
    2 number                           int32
IngressTLS
    1 hosts                            []string
    2 secretName                       string
IngressRule
    1 host                             string
    2 (inline)                         IngressRuleValue
IngressRuleValue
    1 http                             *HTTPIngressRuleValue
HTTPIngressRuleValue
    1 paths                            []HTTPIngressPath
HTTPIngressPath
    1 path                             string
    2 backend                          IngressBackend
    3 pathType                         *string
IngressStatus
    1 loadBalancer                     IngressLoadBalancerStatus
IngressLoadBalancerStatus
    1 ingress                          []IngressLoadBalancerIngress
IngressLoadBalancerIngress
    1 ip                               string
    2 hostname                         string
    4 ports                            []IngressPortStatus
IngressPortStatus
    1 port                             int32
    2 protocol                         string
    3 error                            *string
""",
    api_types=("Ingress", "IngressList", "IngressSpec", "IngressBackend", "IngressServiceBackend",
               "ServiceBackendPort", "IngressTLS", "IngressRule", "IngressRuleValue", "HTTPIngressRuleValue",
               "HTTPIngressPath", "IngressStatus", "IngressLoadBalancerStatus", "IngressLoadBalancerIngress",
               "IngressPortStatus"),
    strategy=Strategy(validate=_validate, prepare_create=_prepare_create),
    subresource_strategies={"status": Strategy(validate=_validate_status)},
    printer=Printer(_COLUMNS, _cells),
))
