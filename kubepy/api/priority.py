"""Priority admission: a pod's priority comes from its PriorityClass, as upstream.

On a pod's create, ``spec.priorityClassName`` (or, without one, the class
marked ``globalDefault``) sets ``spec.priority`` and
``spec.preemptionPolicy``; without either the priority is 0 and the policy
PreemptLowerPriority. A class that does not exist, or a ``spec.priority``
the client set that disagrees with its class, is refused with Kubernetes'
words. On PriorityClass writes it keeps ``globalDefault`` to one class.
"""

from __future__ import annotations

from kubepy.api.admission import CREATE, Attributes
from kubepy.api.mirror import Mirror
from kubepy.kinds import by_plural
from kubepy.kinds.scheduling.priorityclass import SYSTEM_PRIORITY_CLASSES
from kubepy.store.base import Store

DEFAULT_POLICY = "PreemptLowerPriority"


class PriorityAdmission:
    name = "Priority"

    def __init__(self, store: Store) -> None:
        self.classes = Mirror(store, by_plural("priorityclasses").prefix)

    async def _class(self, name: str) -> dict | None:
        for pc in await self.classes.all():
            if pc["metadata"]["name"] == name:
                return pc
        return None

    async def admit(self, a: Attributes) -> None:
        if a.res.group or a.res.plural != "pods" or a.operation != CREATE or a.subresource:
            return
        spec = a.obj.setdefault("spec", {})
        name = spec.get("priorityClassName") or ""
        if name:
            pc = await self._class(name)
            if pc is None and name in SYSTEM_PRIORITY_CLASSES:  # not created yet: known anyway
                pc = {"value": SYSTEM_PRIORITY_CLASSES[name][0], "preemptionPolicy": DEFAULT_POLICY}
            if pc is None:
                raise a.forbidden(f"no PriorityClass with name {name} was found")
        else:
            defaults = sorted((c for c in await self.classes.all() if c.get("globalDefault")),
                              key=lambda c: c.get("value", 0))
            pc = defaults[0] if defaults else None
            if pc is not None:
                spec["priorityClassName"] = pc["metadata"]["name"]
        value = int((pc or {}).get("value") or 0)
        given = spec.get("priority")
        if given is not None and given != value:
            raise a.forbidden(f"the integer value of priority ({given}) must not be provided in pod spec; "
                              f"priority admission controller computed {value} from the given PriorityClass name")
        spec["priority"] = value
        policy = (pc or {}).get("preemptionPolicy") or DEFAULT_POLICY
        given_policy = spec.get("preemptionPolicy")
        if given_policy is not None and given_policy != policy:
            raise a.forbidden(f"the string value of PreemptionPolicy ({given_policy}) must not be provided in pod "
                              f"spec; priority admission controller computed {policy} from the given PriorityClass "
                              "name")
        spec["preemptionPolicy"] = policy

    async def validate(self, a: Attributes) -> None:
        if a.res.plural != "priorityclasses" or not a.obj.get("globalDefault"):
            return
        for pc in await self.classes.all():
            if pc.get("globalDefault") and pc["metadata"]["name"] != a.name:
                raise a.forbidden(f"PriorityClass {pc['metadata']['name']} is already marked as default. "
                                  "Only one default can exist")

    async def stop(self) -> None:
        await self.classes.stop()
