"""What the scheduler's plugins read about the cluster beyond nodes and pods.

InterPodAffinity needs namespaces' labels (``namespaceSelector``), and
PodTopologySpread's system default constraints need the selectors of the
Services, ReplicaSets, StatefulSets and ReplicationControllers that own or
select a pod (upstream's ``helper.DefaultSelector``).  ``Listers`` reads them
from plain caches: informers' caches in the scheduler (``from_client``),
dicts in tests (``of``).  Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kubepy.meta.selectors import LabelSelector, Requirement, label_selector_from_dict

__all__ = ["Listers"]

Obj = Mapping[str, Any]
_RESOURCES = ("namespaces", "services", "replicasets", "statefulsets", "replicationcontrollers")


class _DictCache:
    def __init__(self, objs: Iterable[Obj]) -> None:
        self._objs: dict[str, Obj] = {}
        for obj in objs:
            meta = obj.get("metadata") or {}
            ns = meta.get("namespace")
            self._objs[f"{ns}/{meta['name']}" if ns else meta["name"]] = obj

    def get(self, key: str) -> Obj | None:
        return self._objs.get(key)

    def list(self) -> list[Obj]:
        return list(self._objs.values())

    def by_index(self, index: str, value: str) -> list[Obj]:
        return [o for o in self._objs.values() if (o.get("metadata") or {}).get("namespace") == value]


class Listers:
    """Read-only views over caches keyed ``namespace/name`` (``name`` for
    namespaces), each with ``get``, ``list`` and ``by_index("namespace", ns)``."""

    def __init__(self, caches: Mapping[str, Any], informers: Iterable[Any] = ()) -> None:
        self._caches = caches
        self.informers = list(informers)

    @classmethod
    def of(cls, **objects: Iterable[Obj]) -> Listers:
        """In-memory listers for tests: ``Listers.of(namespaces=[...], services=[...])``."""
        return cls({r: _DictCache(objects.get(r, ())) for r in _RESOURCES})

    @classmethod
    def from_client(cls, client: Any) -> Listers:
        from kubepy.client import Informer
        from kubepy.client.informer import by_namespace

        informers = {r: Informer(client, r, indexers=None if r == "namespaces" else {"namespace": by_namespace})
                     for r in _RESOURCES}
        return cls({r: inf.cache for r, inf in informers.items()}, informers.values())

    async def run(self) -> None:
        import asyncio

        await asyncio.gather(*(inf.run() for inf in self.informers))

    async def wait_synced(self) -> None:
        for inf in self.informers:
            await inf.wait_synced()

    # -- namespaces -----------------------------------------------------------
    def namespace_labels(self, name: str) -> Mapping[str, str]:
        ns = self._caches["namespaces"].get(name)
        return ((ns or {}).get("metadata") or {}).get("labels") or {}

    def namespaces_matching(self, selector: LabelSelector) -> set[str]:
        return {ns["metadata"]["name"] for ns in self._caches["namespaces"].list()
                if selector.matches((ns.get("metadata") or {}).get("labels") or {})}

    # -- default spreading --------------------------------------------------
    def default_selector(self, pod: Obj) -> LabelSelector:
        """Upstream's DefaultSelector: the selectors of the Services selecting
        *pod* merged, plus its controller's (ReplicationController,
        ReplicaSet or StatefulSet) selector.  Empty: no default spreading."""
        meta = pod.get("metadata") or {}
        ns = meta.get("namespace") or ""
        labels = meta.get("labels") or {}
        merged: dict[str, str] = {}
        for svc in self._caches["services"].by_index("namespace", ns):
            sel = (svc.get("spec") or {}).get("selector") or {}
            if sel and all(labels.get(k) == v for k, v in sel.items()):
                merged.update(sel)
        reqs = [Requirement(k, "=", (v,)) for k, v in merged.items()]
        owner = next((r for r in meta.get("ownerReferences") or () if r.get("controller")), None)
        if owner is not None:
            group = (owner.get("apiVersion") or "").partition("/")[0] if "/" in (owner.get("apiVersion") or "") else ""
            kind = owner.get("kind")
            resource = {("", "ReplicationController"): "replicationcontrollers", ("apps", "ReplicaSet"): "replicasets",
                        ("apps", "StatefulSet"): "statefulsets"}.get((group, kind))
            obj = self._caches[resource].get(f"{ns}/{owner.get('name')}") if resource else None
            if obj is not None:
                sel = (obj.get("spec") or {}).get("selector")
                if resource == "replicationcontrollers":
                    merged.update(sel or {})
                    reqs = [Requirement(k, "=", (v,)) for k, v in merged.items()]
                else:
                    try:
                        reqs += list(label_selector_from_dict(sel).requirements) if sel is not None else []
                    except ValueError:
                        pass
        return LabelSelector(tuple(sorted(set(reqs), key=lambda r: (r.key, r.op, r.values))))
