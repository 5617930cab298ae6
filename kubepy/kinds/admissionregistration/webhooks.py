"""What Validating- and MutatingWebhookConfiguration share: defaults, validation, printer.

Upstream's ``pkg/apis/admissionregistration/v1/defaults.go`` and
``validation/validation.go``, in the words they use (a webhook name must be
a fully qualified domain, names are unique within a configuration, v1 needs
``sideEffects`` and ``admissionReviewVersions``, exactly one of ``url`` and
``service``, rules as upstream checks them). The API server's webhook
admission (kubepy.api.webhookadmission) reads these objects; it relies on
the defaults set here.

``matchConditions`` are CEL expressions (kubepy.kinds.cel): each must
compile against the variables upstream declares (``object``, ``oldObject``,
``request``, ``authorizer``, the latter served by kubepy.api.admissioncel).
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from kubepy.kinds import cel, printers
from kubepy.kinds import validation as v

OPERATIONS = ("*", "CONNECT", "CREATE", "DELETE", "UPDATE")
SCOPES = ("*", "Cluster", "Namespaced")
FAILURE_POLICIES = ("Fail", "Ignore")
MATCH_POLICIES = ("Equivalent", "Exact")
SIDE_EFFECTS = ("None", "NoneOnDryRun")  # v1 refuses Some and Unknown
REINVOCATION_POLICIES = ("IfNeeded", "Never")
REVIEW_VERSIONS = ("v1", "v1beta1")
DEFAULT_TIMEOUT_SECONDS = 10
MAX_TIMEOUT_SECONDS = 30
# What kubepy's admission sends to webhooks besides main resources (objects of the resource's own kind);
# rules naming the others, or CONNECT, are refused rather than stored and never called.
SENT_SUBRESOURCES = frozenset({"status", "ephemeralcontainers"})
UNSENT_SUBRESOURCES = frozenset({"binding", "scale", "eviction", "exec", "attach", "portforward", "log", "proxy",
                                 "token", "finalize", "approval"})
MAX_MATCH_CONDITIONS = 64
# What a webhook's matchConditions may name.
MATCH_CONDITION_VARIABLES = ("object", "oldObject", "request", "authorizer")


def default_webhooks(obj: dict, *, mutating: bool) -> None:
    for hook in v._l(obj.get("webhooks")):
        if not isinstance(hook, dict):
            continue
        hook.setdefault("failurePolicy", "Fail")
        hook.setdefault("matchPolicy", "Equivalent")
        if hook.get("namespaceSelector") is None:
            hook["namespaceSelector"] = {}
        if hook.get("objectSelector") is None:
            hook["objectSelector"] = {}
        hook.setdefault("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS)
        if mutating:
            hook.setdefault("reinvocationPolicy", "Never")
        for rule in v._l(hook.get("rules")):
            if isinstance(rule, dict):
                rule.setdefault("scope", "*")
        svc = v._d(v._d(hook.get("clientConfig")).get("service"))
        if svc:
            svc.setdefault("port", 443)


def is_fully_qualified_name(name: str) -> str | None:
    """apimachinery's IsFullyQualifiedName: a DNS subdomain of at least three labels."""
    name = name[:-1] if name.endswith(".") else name
    errs = v.is_dns1123_subdomain(name)
    if errs:
        return ",".join(errs)
    if len(name.split(".")) < 3:
        return "should be a domain with at least three segments separated by dots"
    return None


def validate_webhooks(obj: dict, old: dict | None, errs: v.Errs, *, mutating: bool) -> None:
    hooks = obj.get("webhooks")
    if hooks is not None and not isinstance(hooks, list):
        errs.invalid("webhooks", hooks, "must be a list")
        return
    seen: set[str] = set()
    for i, hook in enumerate(hooks or []):
        path = f"webhooks[{i}]"
        if not isinstance(hook, dict):
            errs.invalid(path, hook, "must be an object")
            continue
        name = hook.get("name")
        if not name:
            errs.required(f"{path}.name")
        elif not isinstance(name, str):
            errs.invalid(f"{path}.name", name, "must be a string")
        else:
            problem = is_fully_qualified_name(name)
            if problem:
                errs.invalid(f"{path}.name", name, problem)
            if name in seen:
                errs.duplicate(f"{path}.name", name)
            seen.add(name)
        _validate_webhook(hook, path, errs, mutating=mutating)


def _validate_webhook(hook: dict, path: str, errs: v.Errs, *, mutating: bool) -> None:
    for j, rule in enumerate(v._l(hook.get("rules"))):
        validate_rule(v._d(rule), f"{path}.rules[{j}]", errs)
    errs.enum(f"{path}.failurePolicy", hook.get("failurePolicy"), FAILURE_POLICIES, required=False)
    errs.enum(f"{path}.matchPolicy", hook.get("matchPolicy"), MATCH_POLICIES, required=False)
    side = hook.get("sideEffects")
    if side is None:
        errs.required(f"{path}.sideEffects", f"must specify one of {', '.join(SIDE_EFFECTS)}")
    elif side not in SIDE_EFFECTS:
        errs.not_supported(f"{path}.sideEffects", side, SIDE_EFFECTS)
    timeout = hook.get("timeoutSeconds")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool)
                                or not 1 <= timeout <= MAX_TIMEOUT_SECONDS):
        errs.invalid(f"{path}.timeoutSeconds", timeout, "the timeout value must be between 1 and 30 seconds")
    _validate_review_versions(hook.get("admissionReviewVersions"), f"{path}.admissionReviewVersions", errs)
    for sel in ("namespaceSelector", "objectSelector"):
        if isinstance(hook.get(sel), dict):
            v.validate_label_selector(hook[sel], f"{path}.{sel}", errs)
        elif hook.get(sel) is not None:
            errs.invalid(f"{path}.{sel}", hook[sel], "must be a label selector")
    if mutating:
        errs.enum(f"{path}.reinvocationPolicy", hook.get("reinvocationPolicy"), REINVOCATION_POLICIES,
                  required=False)
    if hook.get("matchConditions") is not None:
        validate_match_conditions(hook["matchConditions"], f"{path}.matchConditions", errs,
                                  variables=MATCH_CONDITION_VARIABLES)
    _validate_client_config(hook.get("clientConfig"), f"{path}.clientConfig", errs)


def validate_match_conditions(conds: object, path: str, errs: v.Errs, *, variables: tuple[str, ...]) -> None:
    """Upstream's validateMatchConditions: at most 64, names unique qualified names, expressions that compile."""
    if not isinstance(conds, list):
        errs.invalid(path, conds, "must be a list")
        return
    if len(conds) > MAX_MATCH_CONDITIONS:
        errs._add("FieldValueTooMany", path, f"Too many: {len(conds)}: must have at most {MAX_MATCH_CONDITIONS} items")
    seen: set[str] = set()
    for i, cond in enumerate(conds):
        cp = f"{path}[{i}]"
        if not isinstance(cond, dict):
            errs.invalid(cp, cond, "must be an object")
            continue
        name = cond.get("name")
        if not name:
            errs.required(f"{cp}.name")
        elif not isinstance(name, str):
            errs.invalid(f"{cp}.name", name, "must be a string")
        else:
            errs.each(f"{cp}.name", name, v.is_qualified_name(name))
            if name in seen:
                errs.duplicate(f"{cp}.name", name)
            seen.add(name)
        validate_expression(cond.get("expression"), f"{cp}.expression", errs, variables=variables)


def validate_expression(expr: object, path: str, errs: v.Errs, *, variables: tuple[str, ...],
                        required: bool = True) -> None:
    """A CEL expression that compiles against ``variables``."""
    if expr in (None, ""):
        if required:
            errs.required(path)
        return
    if not isinstance(expr, str):
        errs.invalid(path, expr, "must be a string")
        return
    try:
        cel.compile_expression(expr, variables)
    except cel.CELCompileError as e:
        errs.invalid(path, expr, str(e))


def _validate_review_versions(versions: object, path: str, errs: v.Errs) -> None:
    if not versions:
        errs.required(path, f"must specify one of {', '.join(REVIEW_VERSIONS)}")
        return
    if not isinstance(versions, list):
        errs.invalid(path, versions, "must be a list")
        return
    seen: set[str] = set()
    for i, version in enumerate(versions):
        if not isinstance(version, str):
            errs.invalid(f"{path}[{i}]", version, "must be a string")
            continue
        for problem in v.is_dns1035_label(version):
            errs.invalid(f"{path}[{i}]", version, problem)
        if version in seen:
            errs.invalid(f"{path}[{i}]", version, "duplicate version")
        seen.add(version)
    if not seen & set(REVIEW_VERSIONS):
        errs.invalid(path, versions, f"must include at least one of {', '.join(REVIEW_VERSIONS)}")


def _has_wildcard(values: list) -> bool:
    return "*" in values


def validate_rule(rule: dict, path: str, errs: v.Errs, *, sent_to: str = "admission webhooks") -> None:
    """One rule as upstream validates it; what kubepy's admission never sends to ``sent_to`` is refused."""
    ops = v._l(rule.get("operations"))
    if not ops:
        errs.required(f"{path}.operations")
    if len(ops) > 1 and _has_wildcard(ops):
        errs.invalid(f"{path}.operations", ops, "if '*' is present, must not specify other operations")
    for i, op in enumerate(ops):
        if op not in OPERATIONS:
            errs.not_supported(f"{path}.operations[{i}]", op, OPERATIONS)
        elif op == "CONNECT":
            errs.forbidden(f"{path}.operations[{i}]", "CONNECT requests (exec, attach, port-forward) are not sent "
                           f"to {sent_to} by this API server")
    groups = v._l(rule.get("apiGroups"))
    if not groups:
        errs.required(f"{path}.apiGroups")
    if len(groups) > 1 and _has_wildcard(groups):
        errs.invalid(f"{path}.apiGroups", groups, "if '*' is present, must not specify other API groups")
    versions = v._l(rule.get("apiVersions"))
    if not versions:
        errs.required(f"{path}.apiVersions")
    if len(versions) > 1 and _has_wildcard(versions):
        errs.invalid(f"{path}.apiVersions", versions, "if '*' is present, must not specify other API versions")
    for i, version in enumerate(versions):
        if not version:
            errs.required(f"{path}.apiVersions[{i}]")
    _validate_resources(v._l(rule.get("resources")), f"{path}.resources", errs, sent_to=sent_to)
    scope = rule.get("scope")
    if scope is not None and scope not in SCOPES:
        errs.not_supported(f"{path}.scope", scope, SCOPES)


def _validate_resources(resources: list, path: str, errs: v.Errs, *, sent_to: str) -> None:
    """Upstream's validateResources: ``x/*``, ``*/x``, ``*/*`` and ``*`` may not overlap other entries."""
    if not resources:
        errs.required(path)
    wild_sub: set[str] = set()  # x/*
    wild_res: set[str] = set()  # */x
    double = single = plain = False
    for i, entry in enumerate(resources):
        if not entry:
            errs.required(f"{path}[{i}]")
            continue
        if not isinstance(entry, str):
            errs.invalid(f"{path}[{i}]", entry, "must be a string")
            continue
        double = double or entry == "*/*"
        single = single or entry == "*"
        if "/" not in entry:
            plain = entry != "*"
            continue
        res, sub = entry.split("/", 1)
        if sub in UNSENT_SUBRESOURCES:
            errs.forbidden(f"{path}[{i}]", f"the {sub} subresource is not sent to {sent_to} by this "
                           "API server")
        if res in wild_sub:
            errs.invalid(f"{path}[{i}]", entry, f"if '{res}/*' is present, must not specify {entry}")
        if sub in wild_res:
            errs.invalid(f"{path}[{i}]", entry, f"if '*/{sub}' is present, must not specify {entry}")
        if sub == "*":
            wild_sub.add(res)
        if res == "*":
            wild_res.add(sub)
    if len(resources) > 1 and double:
        errs.invalid(path, resources, "if '*/*' is present, must not specify other resources")
    if single and plain:
        errs.invalid(path, resources, "if '*' is present, must not specify other resources without subresources")


def _validate_client_config(cc: object, path: str, errs: v.Errs) -> None:
    cc = v._d(cc)
    url, svc = cc.get("url"), cc.get("service")
    if (url is None) == (svc is None):
        errs.required(path, "exactly one of url or service is required")
    elif url is not None:
        _validate_url(url, f"{path}.url", errs)
    else:
        _validate_service(v._d(svc), f"{path}.service", errs)
    bundle = cc.get("caBundle")
    if bundle is not None and not isinstance(bundle, str):
        errs.invalid(f"{path}.caBundle", bundle, "must be base64-encoded PEM")


def _validate_url(url: object, path: str, errs: v.Errs) -> None:
    form = "; desired format: https://host[/path]"
    if not isinstance(url, str):
        errs.required(path, "url must be a valid URL: not a string" + form)
        return
    try:
        u = urlsplit(url)
        u.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        errs.required(path, f"url must be a valid URL: {e}{form}")
        return
    if u.scheme != "https":
        errs.invalid(path, u.scheme, "'https' is the only allowed URL scheme" + form)
    if not u.hostname:
        errs.invalid(path, u.netloc, "host must be specified" + form)
    if "@" in u.netloc:
        errs.invalid(path, u.netloc.rsplit("@", 1)[0], "user information is not permitted in the URL")
    if u.fragment:
        errs.invalid(path, u.fragment, "fragments are not permitted in the URL")
    if u.query:
        errs.invalid(path, u.query, "query parameters are not permitted in the URL")


def _validate_service(svc: dict, path: str, errs: v.Errs) -> None:
    if not svc.get("name"):
        errs.required(f"{path}.name", "service name is required")
    if not svc.get("namespace"):
        errs.required(f"{path}.namespace", "service namespace is required")
    port = svc.get("port")
    if port is not None:
        problems = v.is_valid_port_num(port)
        if problems:
            errs.invalid(f"{path}.port", port, "port is not valid: " + ", ".join(problems))
    url_path = svc.get("path")
    if url_path in (None, "", "/"):
        return
    if not isinstance(url_path, str):
        errs.invalid(f"{path}.path", url_path, "must be a string")
    elif url_path == "//":
        errs.invalid(f"{path}.path", url_path, "segment[0] may not be empty")
    elif not url_path.startswith("/"):
        errs.invalid(f"{path}.path", url_path, "must start with a '/'")
    else:
        for i, segment in enumerate(url_path.strip("/").split("/")):
            if not segment:
                errs.invalid(f"{path}.path", url_path, f"segment[{i}] may not be empty")
            else:
                for problem in v.is_dns1123_subdomain(segment):
                    errs.invalid(f"{path}.path", url_path, f"segment[{i}]: {problem}")


# generated.proto of admissionregistration/v1, in kubepy.api.protobuf's form.
PROTO_COMMON = """
WebhookClientConfig
    3 url                              *string
    1 service                          *ServiceReference
    2 caBundle                         bytes
ServiceReference
    1 namespace                        string
    2 name                             string
    3 path                             *string
    4 port                             *int32
RuleWithOperations
    1 operations                       []string
    2 (inline)                         Rule
Rule
    1 apiGroups                        []string
    2 apiVersions                      []string
    3 resources                        []string
    4 scope                            *string
MatchCondition
    1 name                             string
    2 expression                       string
"""


def cells(obj: dict, now: dt.datetime) -> list:
    return [printers.name_cell(obj), len(v._l(obj.get("webhooks"))), printers.age_cell(obj, now)]


COLUMNS = (
    printers.name_column(),
    printers.column("Webhooks", "Webhooks indicates the number of webhooks in this configuration.",
                    type_="integer"),
    printers.age_column(),
)
