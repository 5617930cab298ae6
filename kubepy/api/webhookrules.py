"""Which admission webhooks a request meets, and the AdmissionReview it sends them: pure functions.

Upstream's ``apiserver/pkg/admission/plugin/webhook`` (rules.Matcher,
namespace and object matchers, request.CreateAdmissionObjects), for the
requests kubepy's admission sees: CREATE, UPDATE and DELETE of a
resource, and of the ``status``/``ephemeralcontainers`` subresources
(which carry the resource's own kind, as upstream sends them). Other
subresources (``binding``, ``scale``, ``eviction``) and CONNECT are not
sent to webhooks; configurations naming them are refused when written
(kubepy.kinds.admissionregistration.webhooks), so nothing a user asked
for is silently skipped.

The webhook configurations themselves are never sent to webhooks
(upstream's IsExemptAdmissionConfigurationResource), so a broken webhook
can always be removed.
"""

from __future__ import annotations

from typing import Any

from kubepy.kinds import Kind
from kubepy.kinds.admissionregistration.webhooks import SENT_SUBRESOURCES
from kubepy.meta.selectors import label_selector_from_dict

ADMISSION_GROUP = "admissionregistration.k8s.io"
DRY_RUN_SAFE = ("None", "NoneOnDryRun")


def is_exempt(res: Kind) -> bool:
    return res.group == ADMISSION_GROUP


def _matches_one(values: list[str], value: str) -> bool:
    return "*" in values or value in values


def _matches_resource(entries: list[str], resource: str, subresource: str) -> bool:
    """Upstream's Matcher.resource: ``res/sub`` against the request's, ``*`` on either side matching any
    (so ``pods/*`` also matches ``pods`` itself, and ``*`` only resources without a subresource)."""
    for entry in entries:
        res, _, sub = entry.partition("/")
        if res in ("*", resource) and sub in ("*", subresource):
            return True
    return False


def rule_matches(rule: dict[str, Any], *, operation: str, res: Kind, subresource: str) -> bool:
    ops = rule.get("operations") or []
    if not _matches_one(ops, operation):
        return False
    if not _matches_one(rule.get("apiGroups") or [], res.group):
        return False
    if not _matches_one(rule.get("apiVersions") or [], res.version):
        return False
    if not _matches_resource(rule.get("resources") or [], res.plural, subresource):
        return False
    scope = rule.get("scope") or "*"
    namespaced = res.namespaced
    if res.group == "" and res.plural == "namespaces":
        namespaced = False  # a Namespace is cluster-scoped (upstream matches it as such)
    return scope == "*" or (scope == "Namespaced") == namespaced


def rules_match(hook: dict[str, Any], *, operation: str, res: Kind, subresource: str) -> bool:
    if subresource and subresource not in SENT_SUBRESOURCES:
        return False
    return any(rule_matches(r, operation=operation, res=res, subresource=subresource)
               for r in hook.get("rules") or [])


def _labels(obj: dict[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


def object_selector_matches(hook: dict[str, Any], obj: dict[str, Any] | None, old: dict[str, Any] | None) -> bool:
    """The new or the old object's labels match (upstream's object matcher)."""
    sel = hook.get("objectSelector")
    if not sel:
        return True
    selector = label_selector_from_dict(sel)
    return any(o is not None and selector.matches(_labels(o)) for o in (obj, old))


def namespace_selector_matches(hook: dict[str, Any], *, res: Kind, namespace: str | None,
                               obj: dict[str, Any] | None, namespace_labels: dict[str, str] | None) -> bool:
    """Cluster-scoped objects always match, except a Namespace, which is judged by its own labels."""
    sel = hook.get("namespaceSelector")
    if not sel:
        return True
    if res.group == "" and res.plural == "namespaces":
        return label_selector_from_dict(sel).matches(_labels(obj))
    if not res.namespaced or not namespace:
        return True
    return label_selector_from_dict(sel).matches(namespace_labels or {})


def review_version(hook: dict[str, Any]) -> str:
    """The first AdmissionReview version the webhook accepts that we speak (validation makes sure one is)."""
    for v in hook.get("admissionReviewVersions") or []:
        if v in ("v1", "v1beta1"):
            return v
    return "v1"


def user_info(user: Any) -> dict[str, Any]:
    if user is None:
        return {}
    out: dict[str, Any] = {"username": user.name}
    if user.uid:
        out["uid"] = user.uid
    if user.groups:
        out["groups"] = list(user.groups)
    if user.extra:
        out["extra"] = user.extra_map
    return out


def admission_review(*, version: str, uid: str, res: Kind, subresource: str, operation: str, namespace: str | None,
                     name: str, obj: dict[str, Any] | None, old: dict[str, Any] | None, dry_run: bool,
                     user: Any) -> dict[str, Any]:
    """An AdmissionReview request, as upstream's CreateV1AdmissionReview makes it."""
    gvk = {"group": res.group, "version": res.version, "kind": res.kind}
    gvr = {"group": res.group, "version": res.version, "resource": res.plural}
    options_kind = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}[operation]
    options: dict[str, Any] = {"kind": options_kind, "apiVersion": "meta.k8s.io/v1"}
    if dry_run:
        options["dryRun"] = ["All"]
    request: dict[str, Any] = {
        "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": name, "operation": operation, "userInfo": user_info(user),
        "object": obj if operation != "DELETE" else None,
        "oldObject": old if operation != "CREATE" else None,
        "dryRun": dry_run, "options": options,
    }
    if subresource:
        request["subResource"] = request["requestSubResource"] = subresource
    if namespace:
        request["namespace"] = namespace
    return {"apiVersion": f"admission.k8s.io/{version}", "kind": "AdmissionReview", "request": request}
