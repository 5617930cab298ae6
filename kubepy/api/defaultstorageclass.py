"""DefaultStorageClass admission (plugin/pkg/admission/storage/storageclass/setdefault).

A PersistentVolumeClaim created without a class (``spec.storageClassName``
absent, not ``""``, and no beta class annotation) gets the default
StorageClass: the newest one annotated
``storageclass.kubernetes.io/is-default-class: "true"`` (the first name among
equally new ones). Without a default class the claim is left as it is.
The classes are read from the store on each claim's create (a handful of
small objects, and claims are rare writes): a class made just before its
first claim is always seen, which a watch-fed mirror would not promise.
"""

from __future__ import annotations

import json
import logging

from kubepy.api import errors
from kubepy.api.admission import CREATE, Attributes
from kubepy.kinds import by_plural
from kubepy.meta.volumes import default_class
from kubepy.store.base import Store, StoreError

log = logging.getLogger(__name__)


class DefaultStorageClass:
    name = "DefaultStorageClass"

    def __init__(self, store: Store) -> None:
        self.store = store

    async def _classes(self) -> list[dict]:
        try:
            return [json.loads(kv.value) for kv in await self.store.range_all(by_plural("storageclasses").prefix)]
        except StoreError as e:
            raise errors.ServiceUnavailable(f"storage classes could not be read: {e}") from e

    async def admit(self, a: Attributes) -> None:
        if a.res.group or a.res.plural != "persistentvolumeclaims" or a.operation != CREATE or a.subresource:
            return
        spec = a.obj.get("spec")
        if not isinstance(spec, dict) or spec.get("storageClassName") is not None:
            return
        if "volume.beta.kubernetes.io/storage-class" in ((a.obj.get("metadata") or {}).get("annotations") or {}):
            return
        chosen = default_class(await self._classes())
        if chosen is not None:
            spec["storageClassName"] = chosen["metadata"]["name"]
            log.debug("default storage class claim=%s/%s class=%s", a.namespace, a.name, spec["storageClassName"])

    async def validate(self, a: Attributes) -> None:
        return None

    async def stop(self) -> None:
        return None
