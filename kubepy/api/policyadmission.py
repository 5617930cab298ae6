"""ValidatingAdmissionPolicy: the admission plugin that runs the policies' CEL validations in the server.

Upstream's ``apiserver/pkg/admission/plugin/policy/validating`` (dispatcher,
validator, CollectParams), for kubepy's admission chain: it runs in the
validating phase, after the mutating webhooks and before the validating
webhooks, as upstream orders its plugins.

Policies, bindings and namespaces are kept in memory from the store's watch
(kubepy.api.mirror), so a policy or binding written through any API server
takes effect without a restart. For each write, every binding whose policy
matches (the policy's ``matchConstraints``, then the binding's
``matchResources``) is evaluated once per param object (``paramRef``: one by
name, or all a selector picks, in the param's namespace or the request's):
the policy's ``matchConditions``, then its ``variables`` in order, then its
``validations`` and ``auditAnnotations`` (decisions: kubepy.api.policyevaluation,
pure; the variables every expression sees: kubepy.api.admissioncel).

What the client gets, in upstream's words:
- a failed validation under a binding's ``Deny``: ``<resource> "<name>" is
  forbidden: ValidatingAdmissionPolicy '<policy>' with binding '<binding>'
  denied request: <message>``, the code by the validation's reason (Invalid
  422, Forbidden 403, Unauthorized 401, RequestEntityTooLarge 413), the
  message also as the Status' one cause;
- under ``Warn``: a ``Warning`` header ``Validation failed for
  ValidatingAdmissionPolicy '<policy>' with binding '<binding>': <message>``;
- under ``Audit``: a log line (kubepy keeps no audit log) with upstream's
  ``validation.policy.admission.k8s.io/validation_failure`` value;
- an expression that fails at run time, a param that is missing under
  ``parameterNotFoundAction: Deny``, a paramKind the server does not serve:
  the policy's ``failurePolicy`` decides (Ignore: nothing; Fail: a denial
  whose message says what failed).
Logs one key=value line per decision.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from kubepy import kinds
from kubepy.api import admissioncel, errors, webhookrules
from kubepy.api.admission import CREATE, DELETE, UPDATE, Attributes, warn
from kubepy.api.mirror import Mirror
from kubepy.api.policyevaluation import Decision, evaluate, matches_resources
from kubepy.kinds import by_plural, cel
from kubepy.meta.selectors import label_selector_from_dict
from kubepy.store.base import Store, StoreError

log = logging.getLogger(__name__)

__all__ = ["ValidatingAdmissionPolicy", "reason_to_code"]

_CODES = {"Forbidden": 403, "Unauthorized": 401, "RequestEntityTooLarge": 413, "Invalid": 422}


def reason_to_code(reason: str) -> int:
    return _CODES.get(reason, 422)


class ConfigError(Exception):
    """A policy or binding that cannot be applied to this request (its failurePolicy decides)."""

    def __init__(self, message: str, *, of_policy: bool = False) -> None:
        super().__init__(message)
        self.of_policy = of_policy  # upstream: "failed to configure policy", the denial names no binding


class ValidatingAdmissionPolicy:
    name = "ValidatingAdmissionPolicy"
    operations = frozenset({CREATE, UPDATE, DELETE})

    def __init__(self, store: Store) -> None:
        self.store = store
        self.policies = Mirror(store, by_plural("validatingadmissionpolicies").prefix)
        self.bindings = Mirror(store, by_plural("validatingadmissionpolicybindings").prefix)
        self.namespaces = Mirror(store, by_plural("namespaces").prefix)
        self.authorizer: Any = None  # the server's chain (kubepy.api.authz), for CEL's authorizer

    async def stop(self) -> None:
        await self.policies.stop()
        await self.bindings.stop()
        await self.namespaces.stop()

    async def admit(self, a: Attributes) -> None:
        return None

    async def validate(self, a: Attributes) -> None:
        if webhookrules.is_exempt(a.res):  # a broken policy can always be fixed or removed
            return
        bindings = await self.bindings.all()
        if not bindings:
            return
        policies = {p["metadata"]["name"]: p for p in await self.policies.all()}
        ctx = _Request(self, a)
        denied: list[tuple[dict, dict | None, Decision]] = []
        for binding in sorted(bindings, key=lambda b: (b.get("spec", {}).get("policyName", ""),
                                                       b["metadata"]["name"])):
            policy = policies.get(binding.get("spec", {}).get("policyName", ""))
            if policy is None:
                continue  # upstream ignores a binding to a policy that does not exist
            await self._apply(ctx, policy, binding, denied)
        if denied:
            raise _denial(a, *denied[0])

    async def _apply(self, ctx: _Request, policy: dict, binding: dict,
                     denied: list[tuple[dict, dict | None, Decision]]) -> None:
        a = ctx.a
        spec, bspec = policy.get("spec") or {}, binding.get("spec") or {}
        pname, bname = policy["metadata"]["name"], binding["metadata"]["name"]
        fail = (spec.get("failurePolicy") or "Fail") != "Ignore"
        try:
            labels = await ctx.namespace_labels()
            try:
                if not matches_resources(spec.get("matchConstraints") or {}, a, namespace_labels=labels,
                                         require_rules=True):
                    return
            except ValueError as e:  # a selector stored before validation refused it
                raise ConfigError(str(e), of_policy=True) from e
            mr = bspec.get("matchResources")
            if mr is not None and not matches_resources(mr, a, namespace_labels=labels, require_rules=False):
                return
            params = await self._params(spec, bspec, a)
        except (ConfigError, ValueError) as e:
            of_policy = isinstance(e, ConfigError) and e.of_policy
            log.warning("policy misconfigured policy=%s binding=%s resource=%s name=%s/%s policy_failure=%s "
                        "err=%s", pname, bname, a.res.qualified, a.namespace or "", a.name,
                        "Fail" if fail else "Ignore", e)
            if fail:
                what = "policy" if of_policy else "binding"
                denied.append((policy, None if of_policy else binding,
                               Decision(True, f"failed to configure {what}: {e}")))
            return
        base = admissioncel.activation(a, request=ctx.request(), namespace_object=await ctx.namespace_object(),
                                       authorizer=self.authorizer)
        for param in params:
            decisions, annotations = evaluate(spec, {**base, "params": cel.to_cel(param)})
            for key, value in annotations.items():
                log.info("policy audit annotation policy=%s key=%s/%s value=%s", pname, pname, key, json.dumps(value))
            for d in decisions:
                self._act(policy, binding, d, a, denied)
            if not decisions:
                log.debug("policy admitted policy=%s binding=%s resource=%s name=%s/%s", pname, bname,
                          a.res.qualified, a.namespace or "", a.name)

    @staticmethod
    def _act(policy: dict, binding: dict, d: Decision, a: Attributes,
             denied: list[tuple[dict, dict | None, Decision]]) -> None:
        pname, bname = policy["metadata"]["name"], binding["metadata"]["name"]
        actions = binding.get("spec", {}).get("validationActions") or []
        log.info("policy validation failed policy=%s binding=%s resource=%s name=%s/%s operation=%s actions=%s "
                 "message=%s", pname, bname, a.res.qualified, a.namespace or "", a.name, a.operation,
                 ",".join(actions), json.dumps(d.message))
        for action in actions:
            if action == "Deny":
                denied.append((policy, binding, d))
            elif action == "Warn":
                warn(f"Validation failed for ValidatingAdmissionPolicy '{pname}' with binding '{bname}': "
                     f"{d.message}")
            elif action == "Audit":
                value = json.dumps([{"message": d.message, "policy": pname, "binding": bname,
                                     "expressionIndex": d.index, "validationActions": actions}],
                                   separators=(",", ":"))
                log.info("policy audit annotation key=validation.policy.admission.k8s.io/validation_failure "
                         "value=%s", value)

    async def _params(self, spec: dict, bspec: dict, a: Attributes) -> list[dict | None]:
        """Upstream's CollectParams: [None] without a paramKind; the objects paramRef names or selects."""
        pk = spec.get("paramKind")
        if not pk:
            return [None]
        ref = bspec.get("paramRef")
        if not ref:
            raise ConfigError("paramKind non-nil but paramRef is nil")
        res = kinds.by_api_version(str(pk.get("apiVersion") or ""), str(pk.get("kind") or ""))
        if res is None:
            group, _, version = str(pk.get("apiVersion") or "").rpartition("/")
            raise ConfigError(f"failed to find resource referenced by paramKind: '{group}/{version}, "
                              f"Kind={pk.get('kind')}'", of_policy=True)
        namespace: str | None = None
        if res.namespaced:
            namespace = ref.get("namespace") or a.namespace
            if not namespace:
                raise ConfigError("cannot use namespaced paramRef in policy binding that matches cluster-scoped "
                                  "resources")
        elif ref.get("namespace"):
            raise ConfigError("paramRef.namespace must not be provided for a cluster-scoped `paramKind`")
        try:
            if ref.get("name"):
                kv = await self.store.get(res.key(namespace, ref["name"]))
                found = [json.loads(kv.value)] if kv is not None else []
            else:
                selector = label_selector_from_dict(ref.get("selector") or {})
                found = [o for o in await self._list(res, namespace)
                         if selector.matches(((o.get("metadata") or {}).get("labels")) or {})]
        except StoreError as e:
            raise errors.InternalError(f"reading params of kind {res.kind}: {e}") from e
        if not found and ref.get("parameterNotFoundAction") == "Deny":
            raise ConfigError("no params found for policy binding with `Deny` parameterNotFoundAction")
        return list(found)

    async def _list(self, res: kinds.Kind, namespace: str | None) -> list[dict]:
        return [json.loads(kv.value) for kv in await self.store.range_all(res.list_prefix(namespace))]


class _Request:
    """What one admission request's evaluations share, looked up at most once."""

    def __init__(self, plugin: ValidatingAdmissionPolicy, a: Attributes) -> None:
        self.plugin, self.a = plugin, a
        self._request: dict[str, Any] | None = None
        self._ns: dict[str, Any] | None = None
        self._ns_loaded = False

    def request(self) -> dict[str, Any]:
        if self._request is None:
            self._request = admissioncel.request_of(self.a)
        return self._request

    async def namespace_object(self) -> dict[str, Any] | None:
        """The request's Namespace (None for cluster-scoped objects and for a Namespace itself, as upstream)."""
        if self._ns_loaded:
            return self._ns
        self._ns_loaded = True
        a = self.a
        if not a.namespace or not a.res.namespaced or (a.res.group == "" and a.res.plural == "namespaces"):
            return None
        key = by_plural("namespaces").key(None, a.namespace)
        ns = await self.plugin.namespaces.get(key)
        if ns is None:  # made a moment ago: the copy follows a watch
            try:
                kv = await self.plugin.store.get(key)
            except StoreError as e:
                raise errors.InternalError(f"reading namespace {a.namespace}: {e}") from e
            ns = json.loads(kv.value) if kv is not None else None
        self._ns = ns
        return ns

    async def namespace_labels(self) -> dict[str, str] | None:
        ns = await self.namespace_object()
        return dict(((ns or {}).get("metadata") or {}).get("labels") or {}) if ns is not None else None


def _denial(a: Attributes, policy: dict, binding: dict | None, d: Decision) -> errors.APIError:
    """Upstream's: admission.NewForbidden with the decision's reason and code, the message as the one cause."""
    pname = policy["metadata"]["name"]
    if binding is not None:
        message = (f"ValidatingAdmissionPolicy '{pname}' with binding '{binding['metadata']['name']}' denied "
                   f"request: {d.message}")
    else:
        message = f"ValidatingAdmissionPolicy '{pname}' denied request: {d.message}"
    err = a.forbidden(message)
    err.reason = d.reason or "Invalid"
    err.code = reason_to_code(err.reason)
    err.details = {**(err.details or {}), "causes": [{"message": message}]}
    log.info("policy denied policy=%s binding=%s resource=%s name=%s/%s operation=%s code=%d", pname,
             (binding or {}).get("metadata", {}).get("name", ""), a.res.qualified, a.namespace or "", a.name,
             a.operation, err.code)
    return err
