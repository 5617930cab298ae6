"""Namespace (v1): cluster-scoped; deleting one marks it Terminating until the
namespace controller has emptied it and removed the ``kubernetes`` finalizer."""

from kubepy.kinds import Kind, Strategy, printers, register
from kubepy.kinds import validation as v
from kubepy.meta.selectors import namespace_fields


def _prepare_create(obj: dict) -> None:
    obj["status"] = {"phase": "Active"}


def _on_delete(marked: dict) -> bool:
    """Terminating, and kept while spec.finalizers or metadata.finalizers remain."""
    marked.setdefault("status", {})["phase"] = "Terminating"
    return bool((marked.get("spec") or {}).get("finalizers") or marked["metadata"].get("finalizers"))


NAMESPACE = register(Kind(
    "", "v1", "Namespace", "namespaces", namespaced=False, short_names=("ns",), subresources=("status", "finalize"),
    has_status=True, model="V1Namespace", proto="Namespace",
    strategy=Strategy(default=v.default_namespace, validate=v.validate_namespace, name_rule=v.is_dns1123_label,
                      prepare_create=_prepare_create, on_delete=_on_delete),
    printer=printers.NAMESPACE, fields=namespace_fields,
))
