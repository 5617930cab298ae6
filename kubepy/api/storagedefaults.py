"""The StorageClass every kubepy cluster starts with (``local-path``).

Role: at API-server start, next to the default namespaces and the
``kubernetes`` Service, create the default class if it is absent (kind and
k3s ship theirs the same way): claims without a class then get node-local
directories from the kubelets (kubepy/kubelet/localvolumes.py) through the
persistent-volume controller.  A class a person changed is left as it is; a
deleted one comes back at the next start.
"""

from __future__ import annotations

import logging
from typing import Any

from kubepy import kinds
from kubepy.api import errors
from kubepy.meta.volumes import default_class, local_path_class

log = logging.getLogger(__name__)


async def ensure_default_storage_class(storage: Any) -> None:
    sc = kinds.lookup("storage.k8s.io", "v1", "storageclasses")
    if sc is None:
        return
    body = local_path_class()
    try:
        existing, _, _ = await storage.list(sc, None)
        if default_class(existing) is not None:
            # Another default is the cluster's choice: ours joins without the annotation.
            body["metadata"].pop("annotations")
        await storage.create(sc, None, body)
        log.info("created storageclass=%s reason=bootstrap", body["metadata"]["name"])
    except errors.AlreadyExists:
        pass
