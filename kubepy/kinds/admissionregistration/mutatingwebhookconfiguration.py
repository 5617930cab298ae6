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
    api_types=("MutatingWebhookConfiguration", "MutatingWebhookConfigurationList", "MutatingWebhook"),
    strategy=Strategy(default=_default, validate=_validate),
    printer=Printer(webhooks.COLUMNS, webhooks.cells),
))
