"""ControllerRevision (apps/v1): an immutable snapshot of a DaemonSet's or
StatefulSet's pod template (``data``, a patch), numbered by ``revision``;
``kubectl rollout history/undo`` read them.  Only ``revision`` may change."""

from __future__ import annotations

import datetime as dt

from kubepy.kinds import Kind, Printer, Strategy, printers, register
from kubepy.kinds import validation as v


def _validate(obj: dict, old: dict | None, errs: v.Errs) -> None:
    revision = obj.get("revision")
    if revision is None:
        errs.required("revision")
    elif not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        errs.invalid("revision", revision, "must be greater than or equal to 0")
    if obj.get("data") is not None and not isinstance(obj.get("data"), dict):
        errs.invalid("data", obj.get("data"), "must be an object")
    if old is not None and obj.get("data") != old.get("data"):
        errs.invalid("data", obj.get("data"), "field is immutable")


def _controller(obj: dict) -> str:
    """``daemonset.apps/web``: the controlling owner, "<none>" without one."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            group = str(ref.get("apiVersion", "")).rpartition("/")[0]
            kind = str(ref.get("kind", "")).lower()
            return f"{kind}.{group}/{ref.get('name', '')}" if group else f"{kind}/{ref.get('name', '')}"
    return "<none>"


def _cells(obj: dict, now: dt.datetime) -> list:
    return [printers.name_cell(obj), _controller(obj), obj.get("revision", 0), printers.age_cell(obj, now)]


_COLUMNS = (
    printers.name_column(),
    printers.column("Controller", "Controller of the object"),
    printers.column("Revision", "Revision indicates the revision of the state represented by Data.",
                    type_="integer"),
    printers.age_column(),
)

CONTROLLERREVISION = register(Kind(
    "apps", "v1", "ControllerRevision", "controllerrevisions", namespaced=True,
    model="V1ControllerRevision", proto="ControllerRevision",
    proto_schema="""
ControllerRevision
    1 metadata                         ObjectMeta
    2 data                             RawExtension
    3 revision                         int64
""",
    api_types=("ControllerRevision", "ControllerRevisionList"),
    strategy=Strategy(validate=_validate),
    printer=Printer(_COLUMNS, _cells),
))
