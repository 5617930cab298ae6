"""DefaultIngressClass admission (plugin/pkg/admission/network/defaultingressclass).

An Ingress created without a class (``spec.ingressClassName`` absent and no
``kubernetes.io/ingress.class`` annotation) gets the default IngressClass:
the newest one annotated ``ingressclass.kubernetes.io/is-default-class:
"true"`` (the first name among equally new ones), as upstream picks it since
Kubernetes 1.30.  Without a default class the Ingress is left as it is.
Classes are read from the store on each Ingress create, like
``kubepy.api.defaultstorageclass`` reads StorageClasses, so a class made
just before its first Ingress is always seen.
"""

from __future__ import annotations

import json
import logging

from kubepy.api import errors
from kubepy.api.admission import CREATE, Attributes
from kubepy.kinds import by_plural
from kubepy.kinds.networking.ingress import INGRESS_CLASS_ANNOTATION
from kubepy.kinds.networking.ingressclass import is_default_class
from kubepy.store.base import Store, StoreError

log = logging.getLogger(__name__)


def default_ingress_class(classes: list[dict]) -> dict | None:
    defaults = [c for c in classes if is_default_class(c) and not (c.get("metadata") or {}).get("deletionTimestamp")]
    if not defaults:
        return None
    defaults.sort(key=lambda c: str(c["metadata"].get("name")))
    return max(defaults, key=lambda c: str(c["metadata"].get("creationTimestamp") or ""))


class DefaultIngressClass:
    name = "DefaultIngressClass"

    def __init__(self, store: Store) -> None:
        self.store = store

    async def _classes(self) -> list[dict]:
        try:
            return [json.loads(kv.value) for kv in await self.store.range_all(by_plural("ingressclasses").prefix)]
        except StoreError as e:
            raise errors.ServiceUnavailable(f"ingress classes could not be read: {e}") from e

    async def admit(self, a: Attributes) -> None:
        if a.res.group != "networking.k8s.io" or a.res.plural != "ingresses" or a.operation != CREATE \
                or a.subresource:
            return
        spec = a.obj.get("spec")
        if not isinstance(spec, dict) or spec.get("ingressClassName") is not None:
            return
        if INGRESS_CLASS_ANNOTATION in ((a.obj.get("metadata") or {}).get("annotations") or {}):
            return
        chosen = default_ingress_class(await self._classes())
        if chosen is not None:
            spec["ingressClassName"] = chosen["metadata"]["name"]
            log.debug("default ingress class ingress=%s/%s class=%s", a.namespace, a.name, spec["ingressClassName"])

    async def validate(self, a: Attributes) -> None:
        return None

    async def stop(self) -> None:
        return None
