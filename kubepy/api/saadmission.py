"""ServiceAccount admission: every pod runs as a service account and, unless it
opts out, gets that account's credentials mounted, as Kubernetes does.

On a pod's create:

- ``spec.serviceAccountName`` defaults to ``default``; a named account that
  does not exist is refused (``error looking up service account NS/NAME:
  serviceaccount "NAME" not found``). The ``default`` account is let
  through even before the ServiceAccount controller has made it (a new
  namespace): the kubelet cannot get its token until it exists and reports
  that as a FailedMount, then mounts it.
- Unless ``spec.automountServiceAccountToken`` (or else the account's own
  ``automountServiceAccountToken``) is false, a projected volume
  ``kube-api-access-<5 chars>`` is added: a bound token (``token``,
  expirationSeconds 3607), the cluster CA (``ca.crt`` from the
  ``kube-root-ca.crt`` ConfigMap) and the pod's ``namespace``, mounted
  read-only at ``/var/run/secrets/kubernetes.io/serviceaccount`` in every
  container and init container that has nothing mounted there already.
"""

from __future__ import annotations

import logging
import random

from kubepy import jsonbytes
from kubepy.api.admission import CREATE, Attributes
from kubepy.api.mirror import Mirror
from kubepy.kinds import by_plural
from kubepy.store.base import Store, StoreError

log = logging.getLogger(__name__)

MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
TOKEN_EXPIRATION = 3607  # upstream's: one hour and seven seconds, so it can be told apart
# A name suffix, not a secret (upstream's utilrand.String is math/rand too): the system's random
# source cost a syscall per letter, ~4% of a pod create.
_RANDOM = random.Random()
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' generateName alphabet


def access_volume(name: str) -> dict:
    return {"name": name, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}}


class ServiceAccountAdmission:
    name = "ServiceAccount"

    def __init__(self, store: Store) -> None:
        self.store = store
        self.res = by_plural("serviceaccounts")
        # Upstream's plugin reads a lister and, on a miss, the API: an account made a moment ago
        # is found even before the watch delivers it.
        self.accounts = Mirror(store, self.res.prefix)

    async def _account(self, namespace: str, name: str) -> dict | None:
        key = self.res.key(namespace, name)
        found = await self.accounts.get(key)
        if found is not None:
            return found
        try:
            kv = await self.store.get(key)
        except StoreError:
            return None
        return jsonbytes.loads(kv.value) if kv is not None else None

    async def stop(self) -> None:
        await self.accounts.stop()

    async def admit(self, a: Attributes) -> None:
        if a.res.group or a.res.plural != "pods" or a.operation != CREATE or a.subresource:
            return
        spec = a.obj.setdefault("spec", {})
        account_name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        spec["serviceAccountName"] = spec["serviceAccount"] = account_name
        account = await self._account(a.namespace or "", account_name)
        if account is None and account_name != "default":
            raise a.forbidden(f"error looking up service account {a.namespace}/{account_name}: "
                              f'serviceaccount "{account_name}" not found')
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            automount = (account or {}).get("automountServiceAccountToken")
        if automount is False:
            return
        containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        if any(m.get("mountPath") == MOUNT_PATH for c in containers for m in c.get("volumeMounts") or []) and \
                all(any(m.get("mountPath") == MOUNT_PATH for m in c.get("volumeMounts") or []) for c in containers):
            return  # the pod brings its own credentials
        volumes = spec.setdefault("volumes", [])
        taken = {v.get("name") for v in volumes}
        name = "kube-api-access-" + "".join(_RANDOM.choices(_ALPHABET, k=5))
        while name in taken:
            name = "kube-api-access-" + "".join(_RANDOM.choices(_ALPHABET, k=5))
        volumes.append(access_volume(name))
        for c in containers:
            mounts = c.setdefault("volumeMounts", [])
            if not any(m.get("mountPath") == MOUNT_PATH for m in mounts):
                mounts.append({"name": name, "readOnly": True, "mountPath": MOUNT_PATH})

    async def validate(self, a: Attributes) -> None:
        return None
