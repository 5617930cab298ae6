"""EndpointSlice (discovery.k8s.io/v1): a Service's endpoints, at most a
hundred per slice, each with ready/serving/terminating conditions.

Written by the endpointslice controller (selector Services, from pods) and
the endpointslice-mirroring controller (selector-less Services, from their
Endpoints); read by kube-proxy and cluster DNS.  Validation as upstream's
ValidateEndpointSlice: an addressType of IPv4, IPv6 or FQDN that never
changes, 1..100 addresses per endpoint valid for that type, at most 1000
endpoints, unique DNS-label port names with a protocol.  Ports default to
protocol TCP and name "" (SetDefaults_EndpointPort).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v

ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")
MAX_ENDPOINTS = 1000
MAX_ADDRESSES = 100
MAX_PORTS = 20000

# Labels every component agrees on (discovery/v1 well_known_labels.go).
LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
LABEL_SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list:
    return value if isinstance(value, list) else []


def _default(obj: dict, old: dict | None) -> None:
    for port in _l(obj.get("ports")):
        if isinstance(port, dict):
            port.setdefault("name", "")
            if not port.get("protocol"):
                port["protocol"] = "TCP"


def _too_many(errs: v.Errs, path: str, count: int, limit: int) -> None:
    errs._add("FieldValueTooMany", path, f"Too many: {count}: must have at most {limit} items")


def _validate_address(address: Any, address_type: str, path: str, errs: v.Errs) -> None:
    if address_type not in ("IPv4", "IPv6"):
        if address_type == "FQDN":
            errs.each(path, address, v.is_dns1123_subdomain(str(address)))
        return
    try:
        ip = ipaddress.ip_address(str(address))
    except ValueError:
        ip = None
    if ip is None or (ip.version == 4) != (address_type == "IPv4"):
        errs.invalid(path, address, f"must be a valid {address_type} address")
    elif ip.is_unspecified:
        errs.invalid(path, address, "may not be unspecified (0.0.0.0)")
    elif ip.is_loopback:
        errs.invalid(path, address, "may not be in the loopback range (127.0.0.0/8, ::1/128)")
    elif ip.is_link_local:
        errs.invalid(path, address, "may not be in the link-local range (169.254.0.0/16, fe80::/10)")


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    address_type = obj.get("addressType")
    errs.enum("addressType", address_type, ADDRESS_TYPES)
    if old is not None:
        v.validate_immutable(address_type, old.get("addressType"), "addressType", errs)
    endpoints = obj.get("endpoints")
    if endpoints is not None and not isinstance(endpoints, list):
        errs.invalid("endpoints", endpoints, "must be a list of endpoints")
    endpoints = _l(endpoints)
    if len(endpoints) > MAX_ENDPOINTS:
        _too_many(errs, "endpoints", len(endpoints), MAX_ENDPOINTS)
        endpoints = []
    for i, ep in enumerate(endpoints):
        ep, p = _d(ep), f"endpoints[{i}]"
        addresses = _l(ep.get("addresses"))
        if not addresses:
            errs.required(f"{p}.addresses", "must contain at least 1 address")
        elif len(addresses) > MAX_ADDRESSES:
            _too_many(errs, f"{p}.addresses", len(addresses), MAX_ADDRESSES)
        for j, address in enumerate(addresses):
            if not isinstance(address, str):
                errs.invalid(f"{p}.addresses[{j}]", address, "must be a string")
                continue
            _validate_address(address, str(address_type or ""), f"{p}.addresses[{j}]", errs)
        for key, rule in (("nodeName", v.is_dns1123_subdomain), ("hostname", v.is_dns1123_label)):
            if ep.get(key) is None:
                continue
            if not isinstance(ep[key], str):
                errs.invalid(f"{p}.{key}", ep[key], "must be a string")
            else:
                errs.each(f"{p}.{key}", ep[key], rule(ep[key]))
        for cond, value in _d(ep.get("conditions")).items():
            if value is not None and not isinstance(value, bool):
                errs.invalid(f"{p}.conditions.{cond}", value, "must be a boolean")
    ports = _l(obj.get("ports"))
    if len(ports) > MAX_PORTS:
        _too_many(errs, "ports", len(ports), MAX_PORTS)
        ports = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        port, p = _d(port), f"ports[{i}]"
        if port.get("name") is not None and not isinstance(port.get("name"), str):
            errs.invalid(f"{p}.name", port["name"], "must be a string")
        name = str(port.get("name") or "")
        if name:
            errs.each(f"{p}.name", name, v.is_dns1123_label(name))
        if name in names:
            errs.duplicate(f"{p}.name", name)
        names.add(name)
        errs.enum(f"{p}.protocol", port.get("protocol"), v.PROTOCOLS)
        number = port.get("port")
        if number is not None and (isinstance(number, bool) or not isinstance(number, int)
                                   or not 0 <= number <= 65535):
            errs.invalid(f"{p}.port", number, "must be between 0 and 65535, inclusive")
        if port.get("appProtocol") is not None:
            errs.each(f"{p}.appProtocol", port["appProtocol"], v.is_qualified_name(str(port["appProtocol"])))


# -- kubectl get endpointslices (upstream printers.go printEndpointSlice) -------
_MAX_SHOWN = 3


def _list_with_more(items: list[str], count: int) -> str:
    text = ",".join(items[:_MAX_SHOWN])
    if count > _MAX_SHOWN:
        return f"{text} + {count - _MAX_SHOWN} more..."
    return text or "<unset>"


def ports_cell(obj: dict) -> str:
    shown = []
    for port in _l(obj.get("ports")):
        port = _d(port)
        shown.append(str(port["port"]) if port.get("port") is not None else str(port.get("name") or "*"))
    return _list_with_more(shown, len(shown))


def endpoints_cell(obj: dict) -> str:
    addresses = [str(a) for ep in _l(obj.get("endpoints")) for a in _l(_d(ep).get("addresses"))]
    return _list_with_more(addresses, len(addresses))


def _cells(obj: dict, now: dt.datetime) -> list:
    return [printers.name_cell(obj), obj.get("addressType") or "", ports_cell(obj), endpoints_cell(obj),
            printers.age_cell(obj, now)]


_COLUMNS = (
    printers.name_column(),
    printers.column("AddressType", "addressType specifies the type of address carried by this EndpointSlice. "
                                   "All addresses in this slice must be the same type."),
    printers.column("Ports", "ports specifies the list of network ports exposed by each endpoint in this slice."),
    printers.column("Endpoints", "endpoints is a list of unique endpoints in this slice."),
    printers.age_column(),
)

ENDPOINTSLICE = register(Kind(
    "discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", namespaced=True,
    model="V1EndpointSlice", proto="EndpointSlice",
    # Message names are global in kubepy's schema table: core/v1 already has an
    # EndpointPort with other field numbers, so the discovery ones are prefixed.
    proto_schema="""
EndpointSlice
    1 metadata                         ObjectMeta
    2 endpoints                        []DiscoveryEndpoint
    3 ports                            []DiscoveryEndpointPort
    4 addressType                      string
DiscoveryEndpoint
    1 addresses                        []string
    2 conditions                       DiscoveryEndpointConditions
    3 hostname                         *string
    4 targetRef                        *ObjectReference
    5 deprecatedTopology               map[string]string
    6 nodeName                         *string
    7 zone                             *string
    8 hints                            *DiscoveryEndpointHints
DiscoveryEndpointConditions
    1 ready                            *bool
    2 serving                          *bool
    3 terminating                      *bool
DiscoveryEndpointHints
    1 forZones                         []DiscoveryForZone
    2 forNodes                         []DiscoveryForNode
DiscoveryForZone
    1 name                             string
DiscoveryForNode
    1 name                             string
DiscoveryEndpointPort
    1 name                             *string
    2 protocol                         *string
    3 port                             *int32
    4 appProtocol                      *string
""",
    api_types=("EndpointSlice", "EndpointSliceList", "Endpoint", "EndpointConditions", "EndpointHints", "ForZone",
               "ForNode"),
    strategy=Strategy(default=_default, validate=_validate),
    printer=Printer(_COLUMNS, _cells),
))
