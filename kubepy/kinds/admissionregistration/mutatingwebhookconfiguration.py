"""MutatingWebhookConfiguration (admissionregistration.k8s.io/v1): webhooks that may change a write.

Called by MutatingAdmissionWebhook (kubepy.api.webhookadmission) after the
built-in mutating admission plugins; their JSON patches are applied in
order. Defaults and validation are shared with the validating kind in
``webhooks``; only ``reinvocationPolicy`` is the mutating kind's own.
"""

from __future__ import annotations

from kubepy.kinds import Kind, Printer, Strategy, register
from kubepy.kinds import validation as v
from kubepy.kinds.admissionregistration import webhooks


def _default(obj: dict, old: dict | None) -> None:
    webhooks.default_webhooks(obj, mutating=True)


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    webhooks.validate_webhooks(obj, old, errs, mutating=True)


MUTATINGWEBHOOKCONFIGURATION = register(Kind(
    "admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations",
    namespaced=False, categories=("api-extensions",), model="V1MutatingWebhookConfiguration",
    proto="MutatingWebhookConfiguration",
    proto_schema="""
MutatingWebhookConfiguration
    1 metadata                         ObjectMeta
    2 webhooks                         []MutatingWebhook
MutatingWebhook
    1 name                             string
    2 clientConfig                     WebhookClientConfig
    3 rules                            []RuleWithOperations
    4 failurePolicy                    *string
    9 matchPolicy                      *string
    5 namespaceSelector                *LabelSelector
   11 objectSelector                   *LabelSelector
    6 sideEffects                      *string
    7 timeoutSeconds                   *int32
    8 admissionReviewVersions          []string
   10 reinvocationPolicy               *string
   12 matchConditions                  []MatchCondition
""",
    api_types=("MutatingWebhookConfiguration", "MutatingWebhookConfigurationList", "MutatingWebhook"),
    strategy=Strategy(default=_default, validate=_validate),
    printer=Printer(webhooks.COLUMNS, webhooks.cells),
))
