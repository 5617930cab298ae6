"""NetworkPolicy (networking.k8s.io/v1): which traffic may reach and leave the pods it selects.

Served here, enforced elsewhere: every node's ``kubepy netpol`` agent
(``kubepy.netpol``) compiles the policies, pods and namespaces into
iptables chains named after each policy.

Defaults as upstream's SetDefaults_NetworkPolicy / _NetworkPolicyPort:
``policyTypes`` empty means ``["Ingress"]``, plus ``"Egress"`` when the
policy has egress rules; a port without ``protocol`` is TCP; a missing
``podSelector`` is ``{}`` (every pod of the namespace).  Validation as
upstream's ValidateNetworkPolicySpec, with its field paths and messages:
peers name exactly one kind of selector or an ipBlock (never ipBlock with
another), ports are 1–65535 or IANA names, ``endPort`` only after a
numeric ``port`` and not below it, ``except`` CIDRs strictly inside
``cidr``, at most two policyTypes, each Ingress or Egress.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v

__all__ = ["NETWORKPOLICY", "POLICY_TYPES", "PROTOCOLS", "default_network_policy", "policy_types"]

POLICY_TYPES = ("Ingress", "Egress")
PROTOCOLS = ("TCP", "UDP", "SCTP")
_CIDR_MESSAGE = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list:
    return value if isinstance(value, list) else []


def policy_types(spec: dict) -> list[str]:
    """The policy types of a spec, defaulted as the API server does (for objects read from elsewhere)."""
    types = [t for t in _l(spec.get("policyTypes")) if isinstance(t, str)]
    if types:
        return types
    return ["Ingress", "Egress"] if _l(spec.get("egress")) else ["Ingress"]


def default_network_policy(obj: dict, old: dict | None) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    if spec.get("podSelector") is None:
        spec["podSelector"] = {}
    if not spec.get("policyTypes"):
        spec["policyTypes"] = policy_types(spec)
    for direction in ("ingress", "egress"):
        for rule in _l(spec.get(direction)):
            for port in _l(_d(rule).get("ports")):
                if isinstance(port, dict) and port.get("protocol") is None:
                    port["protocol"] = "TCP"


def _validate_port(port: Any, path: str, errs: v.Errs) -> None:
    port = _d(port)
    protocol = port.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        errs.not_supported(f"{path}.protocol", protocol, PROTOCOLS)
    number, end = port.get("port"), port.get("endPort")
    if number is None:
        if end is not None:
            errs.invalid(f"{path}.endPort", end, "may not be specified when `port` is not specified")
    elif isinstance(number, int) and not isinstance(number, bool):
        errs.each(f"{path}.port", number, v.is_valid_port_num(number))
        if end is not None:
            if isinstance(end, int) and not isinstance(end, bool) and end < number:
                errs.invalid(f"{path}.endPort", number, "must be greater than or equal to `port`")
            errs.each(f"{path}.endPort", end, v.is_valid_port_num(end))
    elif isinstance(number, str):
        if end is not None:
            errs.invalid(f"{path}.endPort", end, "may not be specified when `port` is non-numeric")
        errs.each(f"{path}.port", number, v.is_valid_port_name(number))
    else:
        errs.invalid(f"{path}.port", number, "must be an integer or a port name")


def _parse_cidr(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not isinstance(value, str) or "/" not in value:
        return None
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


def _validate_ip_block(block: dict, path: str, errs: v.Errs) -> None:
    cidr = block.get("cidr")
    if not cidr:
        errs.required(f"{path}.cidr", "")
        return
    net = _parse_cidr(cidr)
    if net is None:
        errs.invalid(f"{path}.cidr", cidr, _CIDR_MESSAGE)
        return
    for i, text in enumerate(_l(block.get("except"))):
        p = f"{path}.except[{i}]"
        inner = _parse_cidr(text)
        if inner is None:
            errs.invalid(p, text, _CIDR_MESSAGE)
            continue
        if inner.version != net.version or inner.network_address not in net or net.prefixlen >= inner.prefixlen:
            errs.invalid(p, text, "must be a strict subset of `cidr`")


def _validate_peer(peer: Any, path: str, errs: v.Errs) -> None:
    peer = _d(peer)
    count = 0
    for key in ("podSelector", "namespaceSelector"):
        if peer.get(key) is not None:
            count += 1
            v.validate_label_selector(_d(peer[key]), f"{path}.{key}", errs)
    if peer.get("ipBlock") is not None:
        count += 1
        _validate_ip_block(_d(peer["ipBlock"]), f"{path}.ipBlock", errs)
    if count == 0:
        errs.required(path, "must specify a peer")
    elif count > 1 and peer.get("ipBlock") is not None:
        errs.forbidden(path, "may not specify both ipBlock and another peer")


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    spec = _d(obj.get("spec"))
    v.validate_label_selector(_d(spec.get("podSelector")), "spec.podSelector", errs)
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(_l(spec.get(direction))):
            rule = _d(rule)
            for j, port in enumerate(_l(rule.get("ports"))):
                _validate_port(port, f"spec.{direction}[{i}].ports[{j}]", errs)
            for j, peer in enumerate(_l(rule.get(peers_key))):
                _validate_peer(peer, f"spec.{direction}[{i}].{peers_key}[{j}]", errs)
    types = _l(spec.get("policyTypes"))
    if len(types) > 2:
        errs.invalid("spec.policyTypes", types, "may not specify more than two policyTypes")
        return
    for i, kind in enumerate(types):
        if kind not in POLICY_TYPES:
            errs.not_supported(f"spec.policyTypes[{i}]", kind, POLICY_TYPES)


def _cells(obj: dict, now: dt.datetime) -> list:
    spec = _d(obj.get("spec"))
    return [printers.name_cell(obj), printers.format_label_selector(spec.get("podSelector")),
            printers.age_cell(obj, now)]


_COLUMNS = (
    printers.name_column(),
    printers.column("Pod-Selector", "podSelector selects the pods to which this NetworkPolicy object applies. "
                    "The array of rules is applied to any pods selected by this field. An empty selector matches "
                    "all pods in this namespace."),
    printers.age_column(),
)

NETWORKPOLICY = register(Kind(
    "networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", namespaced=True, short_names=("netpol",),
    has_spec_generation=True, model="V1NetworkPolicy", proto="NetworkPolicy",
    proto_schema="""
NetworkPolicy
    1 metadata                         ObjectMeta
    2 spec                             NetworkPolicySpec
NetworkPolicySpec
    1 podSelector                      LabelSelector
    2 ingress                          []NetworkPolicyIngressRule
    3 egress                           []NetworkPolicyEgressRule
    4 policyTypes                      []string
NetworkPolicyIngressRule
    1 ports                            []NetworkPolicyPort
    2 from                             []NetworkPolicyPeer
NetworkPolicyEgressRule
    1 ports                            []NetworkPolicyPort
    2 to                               []NetworkPolicyPeer
NetworkPolicyPort
    1 protocol                         *string
    2 port                             *IntOrString
    3 endPort                          *int32
NetworkPolicyPeer
    1 podSelector                      *LabelSelector
    2 namespaceSelector                *LabelSelector
    3 ipBlock                          *IPBlock
IPBlock
    1 cidr                             string
    2 except                           []string
""",
    api_types=("NetworkPolicy", "NetworkPolicyList", "NetworkPolicySpec", "NetworkPolicyIngressRule",
               "NetworkPolicyEgressRule", "NetworkPolicyPort", "NetworkPolicyPeer", "IPBlock"),
    strategy=Strategy(default=default_network_policy, validate=_validate),
    printer=Printer(_COLUMNS, _cells),
))
