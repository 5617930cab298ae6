"""Built-in admission plugins that need to read other objects from the store.

Role: ``Storage.create`` calls ``admit_create`` after the object's metadata
is set and before its kind's defaults and validation, as Kubernetes runs its
mutating admission chain before validation.  Today one plugin:

- DefaultStorageClass (plugin/pkg/admission/storage/storageclass/setdefault):
  a PersistentVolumeClaim that names no class (``spec.storageClassName``
  absent, not ``""``) gets the default StorageClass, the newest one
  annotated ``storageclass.kubernetes.io/is-default-class: "true"``.  Without
  a default class the claim is left as it is (the persistent-volume
  controller assigns one later, as upstream's retroactive assignment).

Plugins that need nothing but the object itself are the kinds' strategies.
"""

from __future__ import annotations

import logging
from typing import Any

from kubepy import kinds
from kubepy.meta.volumes import default_class

log = logging.getLogger(__name__)

__all__ = ["admit_create"]


async def admit_create(storage: Any, res: kinds.Kind, obj: dict[str, Any]) -> None:
    """Mutate ``obj`` (about to be created as a ``res``) as the admission chain does."""
    if res.group == "" and res.plural == "persistentvolumeclaims":
        await _default_storage_class(storage, obj)


async def _default_storage_class(storage: Any, claim: dict[str, Any]) -> None:
    spec = claim.get("spec")
    if not isinstance(spec, dict) or spec.get("storageClassName") is not None:
        return
    if "volume.beta.kubernetes.io/storage-class" in ((claim.get("metadata") or {}).get("annotations") or {}):
        return
    sc_kind = kinds.lookup("storage.k8s.io", "v1", "storageclasses")
    if sc_kind is None:
        return
    classes, _, _ = await storage.list(sc_kind, None)
    chosen = default_class(classes)
    if chosen is not None:
        spec["storageClassName"] = chosen["metadata"]["name"]
        log.debug("default storage class claim=%s/%s class=%s", (claim.get("metadata") or {}).get("namespace"),
                  (claim.get("metadata") or {}).get("name"), spec["storageClassName"])
