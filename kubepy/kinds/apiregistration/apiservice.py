"""APIService (apiregistration.k8s.io/v1): an API group/version served by another server.

The API server's aggregation layer (``kubepy.api.aggregator``) proxies
``/apis/<group>/<version>/...`` to the Service an APIService names, merges
the group into discovery and writes the ``Available`` condition. Validation
follows kube-aggregator's: the name is ``<version>.<group>``; a service
reference needs a namespace, a name and a port in 1-65535; ``caBundle`` and
``insecureSkipTLSVerify`` exclude each other; priorities are in range.
APIServices without a ``service`` are served by the API server itself
("Local"); kubepy does not create those for its built-in groups, and one
that names a group the API server does not serve is refused, as is a
``service`` for a group/version the API server serves (built-in or custom
resources are never handed elsewhere).
"""

from __future__ import annotations

import base64
import datetime as dt

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v

GROUP = "apiregistration.k8s.io"


def _default(obj: dict, old: dict | None) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict) and isinstance(spec.get("service"), dict):
        spec["service"].setdefault("port", 443)


def _prepare_create(obj: dict) -> None:
    obj.pop("status", None)


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    meta = v._d(obj.get("metadata"))
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    group, version = spec.get("group") or "", spec.get("version") or ""
    name = meta.get("name") or ""
    if not version:
        errs.required("spec.version")
    elif not isinstance(version, str) or v.is_dns1035_label(version):
        errs.invalid("spec.version", version, "a DNS-1035 label must consist of lower case alphanumeric "
                     "characters or '-', start with an alphabetic character, and end with an alphanumeric character")
    if not isinstance(group, str):
        errs.invalid("spec.group", group, "must be a string")
        group = ""
    elif group:
        errs.each("spec.group", group, v.is_dns1123_subdomain(group))
    if not isinstance(version, str):
        version = ""
    wanted = f"{version}.{group}" if group else version
    if name and name != wanted:
        errs.invalid("metadata.name", name, f'must be `spec.version+"."+spec.group`: "{wanted}"')
    for key, top in (("groupPriorityMinimum", 20000), ("versionPriority", 1000)):
        value = spec.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value > top:
            errs.invalid(f"spec.{key}", value, f"must be positive and less than {top}" if key == "groupPriorityMinimum"
                         else "must be positive and less than 1000")
    svc = spec.get("service")
    if svc is not None:
        if not isinstance(svc, dict):
            errs.invalid("spec.service", svc, "must be an object")
        else:
            if not svc.get("namespace"):
                errs.required("spec.service.namespace")
            if not svc.get("name"):
                errs.required("spec.service.name")
            port = svc.get("port")
            if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
                errs.invalid("spec.service.port", port, "must be a valid port number")
    if spec.get("insecureSkipTLSVerify") and spec.get("caBundle"):
        errs.invalid("spec.insecureSkipTLSVerify", True, "may not be true if caBundle is present")
    ca = spec.get("caBundle")
    if ca:
        try:
            base64.b64decode(ca, validate=True)
        except (ValueError, TypeError):
            errs.invalid("spec.caBundle", "<bytes>", "must be base64-encoded PEM")
    from kubepy.kinds import all_kinds  # noqa: PLC0415
    served_here = bool(version) and any(k.group == group and k.version == version for k in all_kinds())
    if svc is not None and served_here:
        # Built-in and custom resources are never handed to another server.
        errs.invalid("spec.service", f"{svc.get('namespace')}/{svc.get('name')}" if isinstance(svc, dict) else svc,
                     f"{group or 'core'}/{version} is served by the API server itself")
    if svc is None:
        # A Local APIService says the API server serves the group itself: only true of the ones it does.
        if version and not served_here:
            errs.invalid("spec.service", None, f"the API server does not serve {wanted.partition('.')[2] or group}/"
                         f"{version} itself: name a service")


def available(obj: dict) -> dict:
    """The Available condition ({} when there is none yet)."""
    for c in v._l(v._d(obj.get("status")).get("conditions")):
        if isinstance(c, dict) and c.get("type") == "Available":
            return c
    return {}


def _cells(obj: dict, now: dt.datetime) -> list:
    spec = v._d(obj.get("spec"))
    svc = spec.get("service")
    service = f"{svc.get('namespace')}/{svc.get('name')}" if isinstance(svc, dict) else "Local"
    cond = available(obj)
    shown = cond.get("status") or "Unknown"
    if shown != "True" and cond.get("reason"):
        shown = f"{shown} ({cond['reason']})"
    return [printers.name_cell(obj), service, shown, printers.age_cell(obj, now)]


_COLUMNS = (
    printers.name_column(),
    printers.column("Service", "The reference to the service that hosts this API endpoint."),
    printers.column("Available", "Whether this service is available."),
    printers.age_column(),
)

APISERVICE = register(Kind(
    GROUP, "v1", "APIService", "apiservices", namespaced=False, categories=("api-extensions",),
    subresources=("status",), has_status=True, model="V1APIService", proto="APIService",
    # kube-aggregator's generated.proto (its ServiceReference renamed: admissionregistration has one too).
    proto_schema="""
APIService
    1 metadata                         ObjectMeta
    2 spec                             APIServiceSpec
    3 status                           APIServiceStatus
APIServiceSpec
    1 service                          *APIServiceServiceReference
    2 group                            string
    3 version                          string
    4 insecureSkipTLSVerify            bool
    5 caBundle                         bytes
    7 groupPriorityMinimum             int32
    8 versionPriority                  int32
APIServiceServiceReference
    1 namespace                        string
    2 name                             string
    3 port                             *int32
APIServiceStatus
    1 conditions                       []APIServiceCondition
APIServiceCondition
    1 type                             string
    2 status                           string
    3 lastTransitionTime               Time
    4 reason                           string
    5 message                          string
""",
    api_types=("APIService", "APIServiceList", "APIServiceSpec", "APIServiceStatus", "APIServiceCondition",
               "ServiceReference"),
    strategy=Strategy(default=_default, validate=_validate, prepare_create=_prepare_create),
    printer=Printer(_COLUMNS, _cells),
))
