"""ValidatingWebhookConfiguration (admissionregistration.k8s.io/v1): webhooks that may refuse a write.

Called by ValidatingAdmissionWebhook (kubepy.api.webhookadmission) after the
kind's own validation; defaults and validation are shared with the mutating
kind in ``webhooks``.
"""

from __future__ import annotations

from kubepy.kinds import Kind, Printer, Strategy, register
from kubepy.kinds import validation as v
from kubepy.kinds.admissionregistration import webhooks


def _default(obj: dict, old: dict | None) -> None:
    webhooks.default_webhooks(obj, mutating=False)


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    webhooks.validate_webhooks(obj, old, errs, mutating=False)


VALIDATINGWEBHOOKCONFIGURATION = register(Kind(
    "admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations",
    namespaced=False, categories=("api-extensions",), model="V1ValidatingWebhookConfiguration",
    proto="ValidatingWebhookConfiguration",
    proto_schema=webhooks.PROTO_COMMON + """
ValidatingWebhookConfiguration
    1 metadata                         ObjectMeta
    2 webhooks                         []ValidatingWebhook
ValidatingWebhook
    1 name                             string
    2 clientConfig                     WebhookClientConfig
    3 rules                            []RuleWithOperations
    4 failurePolicy                    *string
    9 matchPolicy                      *string
    5 namespaceSelector                *LabelSelector
   10 objectSelector                   *LabelSelector
    6 sideEffects                      *string
    7 timeoutSeconds                   *int32
    8 admissionReviewVersions          []string
   11 matchConditions                  []MatchCondition
""",
    api_types=("ValidatingWebhookConfiguration", "ValidatingWebhookConfigurationList", "ValidatingWebhook",
               "WebhookClientConfig", "RuleWithOperations", "MatchCondition"),
    strategy=Strategy(default=_default, validate=_validate),
    printer=Printer(webhooks.COLUMNS, webhooks.cells),
))
