"""MutatingAdmissionWebhook and ValidatingAdmissionWebhook: admission plugins that call webhooks.

Upstream's ``apiserver/pkg/admission/plugin/webhook/{mutating,validating}``.
The configurations are kept in memory from the store's watch
(kubepy.api.mirror), and so are namespaces (for ``namespaceSelector``).
For each write the plugin picks the webhooks whose rules, namespace and
object selectors match (kubepy.api.webhookrules) and calls them
(kubepy.api.webhookclient): mutating webhooks one after another, each
seeing the previous one's JSON patch, then once more those with
``reinvocationPolicy: IfNeeded`` if a later one changed the object;
validating webhooks all at once.

What the client gets, in upstream's words:
- a webhook's refusal: ``admission webhook "<name>" denied the request: <message>``
  with the webhook's code (at least 400) and reason;
- a webhook that cannot be called (down, hanging past ``timeoutSeconds``,
  a bad answer): with failurePolicy Fail, 500 ``Internal error occurred:
  failed calling webhook "<name>": …``; with Ignore the write goes on;
- a dry run meeting a webhook with side effects: 400 ``admission webhook
  "<name>" does not support dry run``;
- the webhooks' ``warnings``: ``Warning`` headers;
- ``matchConditions`` (CEL, kubepy.api.admissioncel): a webhook is called only
  when all are true; one that cannot be evaluated skips the webhook under
  failurePolicy Ignore and refuses the write under Fail (403, upstream's
  ``… is forbidden: expression '…' resulted in error: …``).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
from typing import Any

import jsonpatch

from kubepy.api import admissioncel, errors, webhookrules
from kubepy.api.admission import CREATE, DELETE, UPDATE, Attributes, warn
from kubepy.api.mirror import Mirror
from kubepy.api.webhookclient import CallError, WebhookClient
from kubepy.kinds import by_plural, validation
from kubepy.kinds.admissionregistration.webhooks import DEFAULT_TIMEOUT_SECONDS
from kubepy.store.base import Store, StoreError

log = logging.getLogger(__name__)

__all__ = ["MutatingAdmissionWebhook", "ValidatingAdmissionWebhook"]


def rejection(name: str, status: dict[str, Any] | None) -> errors.APIError:
    """Upstream's ToStatusErr: the webhook's Status, its message prefixed, never below 400."""
    status = status if isinstance(status, dict) else {}
    code = status.get("code") if isinstance(status.get("code"), int) else 0
    denied = f'admission webhook "{name}" denied the request'
    if status.get("message"):
        message = f"{denied}: {status['message']}"
    elif status.get("reason"):
        message = f"{denied}: {status['reason']}"
    else:
        message = f"{denied} without explanation"
    err = errors.APIError(message, details=status.get("details") if isinstance(status.get("details"), dict) else None)
    err.code = max(code, 400)
    err.reason = str(status.get("reason") or "")
    return err


class _WebhookPlugin:
    operations = frozenset({CREATE, UPDATE, DELETE})
    name = ""
    plural = ""
    # Mutating webhooks see the object as the previous ones left it, so their matchConditions are evaluated
    # just before each call (as upstream's dispatcher asks ShouldCallHook per webhook), not once up front.
    conditions_at_call = False

    def __init__(self, store: Store, *, client: WebhookClient | None = None) -> None:
        self.store = store
        self.configs = Mirror(store, by_plural(self.plural).prefix)
        self.namespaces = Mirror(store, by_plural("namespaces").prefix)
        self.client = client or WebhookClient(store)
        self.authorizer: Any = None  # the server's chain (kubepy.api.authz), for matchConditions' authorizer

    async def stop(self) -> None:
        await self.configs.stop()
        await self.namespaces.stop()
        await self.client.close()

    async def _matching(self, a: Attributes) -> list[dict[str, Any]]:
        """The webhooks this request meets, in the order of their configurations' names (as upstream sorts them)."""
        if webhookrules.is_exempt(a.res):
            return []
        configs = await self.configs.all()
        if not configs:
            return []
        sub = a.subresource or ""
        hooks = []
        ns_labels: dict[str, str] | None = None
        variables: dict[str, Any] | None = None
        for config in sorted(configs, key=lambda c: c["metadata"]["name"]):
            for hook in config.get("webhooks") or []:
                if not webhookrules.rules_match(hook, operation=a.operation, res=a.res, subresource=sub):
                    continue
                if hook.get("namespaceSelector") and a.namespace and ns_labels is None:
                    ns_labels = await self._namespace_labels(a.namespace)
                try:
                    # A Namespace is judged by its own labels (on DELETE: the stored object's, which a.obj is).
                    if not webhookrules.namespace_selector_matches(hook, res=a.res, namespace=a.namespace, obj=a.obj,
                                                                   namespace_labels=ns_labels):
                        continue
                    if not webhookrules.object_selector_matches(hook, a.obj if a.operation != DELETE else None,
                                                                a.old):
                        continue
                except ValueError as e:  # validation keeps bad selectors out; one stored before is an error
                    raise errors.InternalError(f'webhook "{hook.get("name")}": {e}') from e
                if hook.get("matchConditions") and not self.conditions_at_call:
                    if variables is None:
                        variables = admissioncel.activation(a, authorizer=self.authorizer)
                    if not self._conditions_match(hook, a, variables):
                        continue
                hooks.append({**hook, "configuration": config["metadata"]["name"]})
        return hooks

    def _conditions_match(self, hook: dict[str, Any], a: Attributes, variables: dict[str, Any]) -> bool:
        """All its matchConditions true; an evaluation error is the failurePolicy's (Fail: 403, as upstream)."""
        policy = hook.get("failurePolicy") or "Fail"
        result = admissioncel.match(hook["matchConditions"], variables, failure_policy=policy)
        if result.error:
            log.warning("webhook match conditions failed webhook=%s resource=%s name=%s/%s policy=%s err=%s",
                        hook.get("name"), a.res.qualified, a.namespace or "", a.name, policy, result.error)
            raise a.forbidden(result.error)
        if not result.matches:
            log.info("webhook skipped webhook=%s resource=%s name=%s/%s condition=%s", hook.get("name"),
                     a.res.qualified, a.namespace or "", a.name, result.failed_condition or "(error, Ignore)")
        return result.matches

    async def _namespace_labels(self, namespace: str) -> dict[str, str]:
        key = by_plural("namespaces").key(None, namespace)
        ns = await self.namespaces.get(key)
        if ns is None:  # created a moment ago (the copy follows a watch): read it, as upstream's matcher does
            try:
                kv = await self.store.get(key)
            except StoreError as e:
                raise errors.InternalError(f"reading namespace {namespace}: {e}") from e
            ns = json.loads(kv.value) if kv is not None else None
        return dict(((ns or {}).get("metadata") or {}).get("labels") or {})

    async def _call(self, hook: dict[str, Any], a: Attributes) -> dict[str, Any] | None:
        """The webhook's response, or None when it failed and its failurePolicy is Ignore."""
        name = hook.get("name", "")
        if a.dry_run and hook.get("sideEffects") not in webhookrules.DRY_RUN_SAFE:
            raise errors.BadRequest(f'admission webhook "{name}" does not support dry run')
        review = webhookrules.admission_review(
            version=webhookrules.review_version(hook), uid=a.uid, res=a.res, subresource=a.subresource or "",
            operation=a.operation, namespace=a.namespace, name=a.name,
            obj=a.obj if a.operation != DELETE else None, old=a.old, dry_run=a.dry_run, user=a.user)
        timeout = hook.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS
        try:
            response = await self.client.call(hook.get("clientConfig") or {}, review, timeout=float(timeout))
        except CallError as e:
            policy = hook.get("failurePolicy") or "Fail"
            log.warning("webhook failed webhook=%s plugin=%s resource=%s name=%s/%s policy=%s err=%s", name,
                        self.name, a.res.qualified, a.namespace or "", a.name, policy, e)
            if policy == "Ignore":
                return None
            raise errors.InternalError(f'Internal error occurred: failed calling webhook "{name}": {e}') from e
        for w in response.get("warnings") or []:
            if isinstance(w, str) and w:
                warn(w)
        if not response.get("allowed"):
            log.info("webhook denied webhook=%s resource=%s name=%s/%s operation=%s", name, a.res.qualified,
                     a.namespace or "", a.name, a.operation)
            raise rejection(name, response.get("status"))
        return response


class MutatingAdmissionWebhook(_WebhookPlugin):
    name = "MutatingAdmissionWebhook"
    plural = "mutatingwebhookconfigurations"
    conditions_at_call = True

    async def admit(self, a: Attributes) -> None:
        hooks = await self._matching(a)
        if not hooks:
            return
        changed_at: list[int] = []  # per webhook: how many patches had been applied when it last ran
        applied = 0
        for hook in hooks:
            if await self._mutate(hook, a):
                applied += 1
            changed_at.append(applied)
        # Reinvocation (upstream's IfNeeded): once more, for each such webhook that saw the object
        # before a later webhook changed it.
        for i, hook in enumerate(hooks):
            if hook.get("reinvocationPolicy") == "IfNeeded" and changed_at[i] < applied:
                log.info("webhook reinvoked webhook=%s resource=%s name=%s/%s", hook["name"], a.res.qualified,
                         a.namespace or "", a.name)
                await self._mutate(hook, a)

    async def _mutate(self, hook: dict[str, Any], a: Attributes) -> bool:
        """Call one mutating webhook and apply its patch; True when the object changed."""
        if hook.get("matchConditions") and not self._conditions_match(
                hook, a, admissioncel.activation(a, authorizer=self.authorizer)):
            return False
        response = await self._call(hook, a)
        if response is None or not response.get("patch"):
            return False
        name = hook["name"]
        if a.operation == DELETE:
            raise errors.InternalError(f'Internal error occurred: admission webhook "{name}" returned a patch '
                                       "for a DELETE request, which has no object to patch")
        if response.get("patchType") != "JSONPatch":
            raise errors.InternalError(f'Internal error occurred: admission webhook "{name}": unsupported patch '
                                       f"type {response.get('patchType')!r}: only JSONPatch is supported")
        try:
            ops = json.loads(base64.b64decode(response["patch"]))
            patched = jsonpatch.JsonPatch(ops).apply(copy.deepcopy(a.obj))
        except (ValueError, TypeError, jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
            raise errors.InternalError(f'Internal error occurred: admission webhook "{name}" returned a patch '
                                       f"that cannot be applied: {e}") from e
        if not isinstance(patched, dict) or patched == a.obj:
            return False
        validation.default_object(a.res, patched, old=a.old)  # as upstream defaults a patched object
        a.obj.clear()
        a.obj.update(patched)  # in place: the storage layer holds this dict
        a.mutated = True
        log.info("webhook patched webhook=%s resource=%s name=%s/%s operations=%d", name, a.res.qualified,
                 a.namespace or "", a.name, len(ops))
        return True

    async def validate(self, a: Attributes) -> None:
        return None


class ValidatingAdmissionWebhook(_WebhookPlugin):
    name = "ValidatingAdmissionWebhook"
    plural = "validatingwebhookconfigurations"

    async def admit(self, a: Attributes) -> None:
        return None

    async def validate(self, a: Attributes) -> None:
        hooks = await self._matching(a)
        if not hooks:
            return
        # All at once, as upstream's validating dispatcher; the first refusal (in order) is the answer.
        results = await asyncio.gather(*(self._call(h, a) for h in hooks), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
