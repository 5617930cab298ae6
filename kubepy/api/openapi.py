"""OpenAPI documents served by the API server (``/openapi/v2``, ``/openapi/v3``).

Why it matters: stock kubectl reads these documents.

* ``kubectl apply`` (default ``--validate=strict``) asks the OpenAPI **v3**
  document of the object's group-version whether the PATCH operation of that
  kind accepts the ``fieldValidation`` query parameter.  If it does, kubectl
  sends ``?fieldValidation=Strict`` and lets the server reject unknown fields
  (see :func:`unknown_fields`).  Only if v3 is unusable does it fall back to
  ``/openapi/v2``, which it requests **only** as gnostic protobuf.
* client-side ``kubectl apply`` computes its strategic merge patch from the
  v3 component schemas (``x-kubernetes-patch-merge-key`` /
  ``x-kubernetes-patch-strategy``) when the PATCH operation lists
  ``application/strategic-merge-patch+json``.
* ``kubectl explain`` renders the v3 document of the group-version: it finds
  the kind through the ``x-kubernetes-group-version-kind`` of the GET/POST
  operations of ``/api[s]/.../<plural>`` and of the component schemas.

The schemas are derived from the model classes of the official ``kubernetes``
Python client (its field names, JSON names, descriptions and required flags);
this module only adds canonical Kubernetes definition names, the few special
apimachinery types (Time, MicroTime, Quantity, IntOrString, FieldsV1,
RawExtension, Patch), the patch strategies and the paths.

Everything is built once, lazily, and cached.  Public API:

* :func:`openapi_v2` - Swagger 2.0 dict (``definitions`` + ``paths``)
* :func:`openapi_v3_index` - ``{"paths": {"api/v1": {"serverRelativeURL": ...}}}``
* :func:`openapi_v3_group_version` - OpenAPI 3.0 dict for ``api/v1`` etc.
* :func:`openapi_v2_json` / :func:`openapi_v3_json` - serialized bytes + etag
* :func:`unknown_fields` - JSON paths of fields the schema does not know
* :func:`strict_decoding_message` / :func:`unknown_field_warnings` - the
  texts a real API server puts into its 400 error / ``Warning`` headers
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import re
import threading
import typing
from typing import Any

from kubepy import kinds
from kubepy.api import patch, protobuf, structure_markers

__all__ = [
    "served",
    "openapi_v2",
    "openapi_v2_json",
    "openapi_v3_index",
    "openapi_v3_group_version",
    "openapi_v3_json",
    "unknown_fields",
    "strict_decoding_error",
    "strict_decoding_message",
    "unknown_field_warnings",
    "warning_header",
    "definition_for",
    "warm",
]

# ---------------------------------------------------------------------------
# What is served
# ---------------------------------------------------------------------------


def served() -> tuple[kinds.Kind, ...]:
    """What the documents describe: every registered kind (its ``model`` is its schema)."""
    return kinds.all_kinds()


# extra models every document needs (request/response bodies of the paths)
_EXTRA_MODELS = ("V1Status", "V1DeleteOptions", "V1WatchEvent", "V1Scale", "V1Binding")
_TOKEN_REQUEST = "AuthenticationV1TokenRequest"  # serviceaccounts/token's body (authentication.k8s.io/v1)

# ---------------------------------------------------------------------------
# Canonical definition names
# ---------------------------------------------------------------------------

_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_TIME = _META + "Time"
_MICROTIME = _META + "MicroTime"
_FIELDSV1 = _META + "FieldsV1"
_PATCH = _META + "Patch"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_INTORSTRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_RAWEXT = "io.k8s.apimachinery.pkg.runtime.RawExtension"

# model short name (without version prefix) -> API package, for everything
# that is not core/v1.  Everything reachable from the served kinds not listed is core.
_META_TYPES = {
    "ObjectMeta", "ListMeta", "Status", "StatusDetails", "StatusCause",
    "OwnerReference", "ManagedFieldsEntry", "LabelSelector",
    "LabelSelectorRequirement", "DeleteOptions", "Preconditions", "Condition",
    "WatchEvent", "APIResource", "APIResourceList", "APIGroup", "APIGroupList",
    "APIVersions", "GroupVersionForDiscovery", "ServerAddressByClientCIDR",
}
_PKG_BY_TYPE = {
    **{t: "io.k8s.apimachinery.pkg.apis.meta.v1" for t in _META_TYPES},
    **{t: "io.k8s.api.autoscaling.v1" for t in ("Scale", "ScaleSpec", "ScaleStatus")},
}


def _api_package(k: kinds.Kind) -> str:
    """io.k8s.api.<first label of the group>.<version>: apps, coordination, batch, rbac, …"""
    if k.group == "apiextensions.k8s.io":
        return f"io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{k.version}"
    if k.group == "apiregistration.k8s.io":
        return f"io.k8s.kube-aggregator.pkg.apis.apiregistration.{k.version}"
    return f"io.k8s.api.{k.group.split('.')[0]}.{k.version}"


def _package_of(short: str, prefix: str = "", version: str = "") -> str | None:
    pkg = _PKG_BY_TYPE.get(short)
    if pkg is None and version:
        # A type several versions of one group declare (autoscaling/v1 and v2 HorizontalPodAutoscaler):
        # the version of the client's class name picks the package.
        pkg = next((_api_package(k) for k in kinds.all_kinds() if short in k.api_types and k.version == version
                    and not prefix), None)
    if pkg is None and prefix:
        # The client names a type two API packages share by its group (ApiextensionsV1WebhookClientConfig,
        # AdmissionregistrationV1WebhookClientConfig): only that group's kinds may claim it.
        same_group = [k for k in kinds.all_kinds() if k.group.split(".")[0].lower() == prefix.lower()]
        if same_group:
            return next((_api_package(k) for k in same_group if short in k.api_types), None)
    if pkg is None:
        pkg = next((_api_package(k) for k in kinds.all_kinds() if short in k.api_types), None)
    return pkg

_CLASS_RE = re.compile(r"^([A-Z][a-z]+)?(V\d+(?:alpha\d+|beta\d+)?)([A-Z]\w*)$")


def _canonical(class_name: str) -> str:
    m = _CLASS_RE.match(class_name)
    if not m:  # pragma: no cover - all served models match
        raise ValueError(f"unexpected model class name {class_name!r}")
    prefix, version, short = m.group(1) or "", m.group(2).lower(), m.group(3)
    if prefix and short not in _PKG_BY_TYPE:
        # The client prefixes a model with its group where two API packages share the
        # short name (CoreV1EndpointPort / DiscoveryV1EndpointPort, AdmissionregistrationV1 /
        # ApiextensionsV1WebhookClientConfig): that group's kinds claim it, else the prefix
        # names the package.
        pkg = _package_of(short, prefix) if prefix.lower() != "core" else None
        if pkg is None:
            pkg = f"io.k8s.api.{prefix.lower()}.{version}"
    else:
        pkg = _package_of(short, version=version)
    if pkg is None:
        pkg = f"io.k8s.api.core.{version}"
    return f"{pkg}.{short}"


# (model class, json field) -> special definition for fields whose python
# type lost the Kubernetes type (quantities and micro-times are plain str /
# datetime in the python client).
_QUANTITY_FIELDS = {
    ("V1ResourceRequirements", "limits"), ("V1ResourceRequirements", "requests"),
    ("V1VolumeResourceRequirements", "limits"), ("V1VolumeResourceRequirements", "requests"),
    ("V1NodeStatus", "allocatable"), ("V1NodeStatus", "capacity"),
    ("V1PodSpec", "overhead"), ("V1PodStatus", "allocatedResources"),
    ("V1ContainerStatus", "allocatedResources"),
    ("V1EmptyDirVolumeSource", "sizeLimit"), ("V1ResourceFieldSelector", "divisor"),
    ("V1NodeAllocatableMappedResources", "quantity"),
    ("V2MetricTarget", "value"), ("V2MetricTarget", "averageValue"),
    ("V2MetricValueStatus", "value"), ("V2MetricValueStatus", "averageValue"), ("V2HPAScalingRules", "tolerance"),
    ("V1NodeAllocatableOverheadResources", "perContainer"),
    ("V1NodeAllocatableOverheadResources", "perPod"),
}
_MICROTIME_FIELDS = {
    ("CoreV1Event", "eventTime"), ("CoreV1EventSeries", "lastObservedTime"),
    ("V1LeaseSpec", "acquireTime"), ("V1LeaseSpec", "renewTime"),
}
_OBJECT_FIELDS = {
    ("V1ManagedFieldsEntry", "fieldsV1"): _FIELDSV1,
    ("V1WatchEvent", "object"): _RAWEXT,
}

# Integer fields of the few types no protobuf message below describes.
_INT64_WITHOUT_PROTOBUF = {("ListMeta", "remainingItemCount")}


def _int_width(definition: str, json_name: str) -> str:
    """``int32`` or ``int64``: the python client says only ``int``, but the
    protobuf table (transcribed from k8s.io/api's generated.proto) knows."""
    if (definition, json_name) in _INT64_WITHOUT_PROTOBUF:
        return "int64"
    for f in protobuf.SCHEMA.get(definition, {}).values():
        if f.json == json_name:
            return "int64" if f.type == "int64" else "int32"
    return "int32"


# Strategic merge patch metadata comes from patch.PATCH_STRATEGIES, the one table
# the server's own strategic merge patch uses too.

# ---------------------------------------------------------------------------
# Definitions from the python client models
# ---------------------------------------------------------------------------

_MODELS_PKG = "kubernetes.client.models"
# marks a $ref property whose description is only its type's description: in
# v3 it stays a sibling of a bare $ref (not allOf) so that `kubectl explain`
# shows it in field lists but does not print it twice for the field itself.
_FALLBACK = "x-kubepy-fallback-description"


_model_cache: dict[str, Any] = {}


def _model_class(name: str) -> Any:
    cls = _model_cache.get(name)
    if cls is None:
        # the package resolves class names lazily (module per model)
        cls = _model_cache[name] = getattr(importlib.import_module(_MODELS_PKG), name)
    return cls


def _class_description(cls: Any) -> str:
    doc = cls.__doc__ or ""
    text = doc.split("Attributes:")[0]
    text = " ".join(line.strip() for line in text.strip().splitlines())
    return text.replace("# noqa: E501", "").strip()


def _fields_by_json(cls: Any) -> dict[str, Any]:
    out = {}
    for fname, finfo in cls.model_fields.items():
        json_name = finfo.serialization_alias or finfo.alias or fname
        out[json_name] = finfo
    return out


def _is_int_or_string(annotation: Any) -> bool:
    """The client types IntOrString fields as ``StrictInt | StrictStr``."""
    args = set()
    stack = [annotation]
    while stack:
        a = stack.pop()
        sub = typing.get_args(a)
        if sub:
            stack.extend(sub)
        else:
            args.add(a)
    return int in args and str in args


class _Builder:
    """Walks the python client models reachable from the served kinds."""

    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}  # canonical -> v2 schema
        self.class_to_def: dict[str, str] = {}
        self._pending: list[str] = []

    def ref(self, class_name: str) -> str:
        name = _canonical(class_name)
        if class_name not in self.class_to_def:
            if name in self.class_to_def.values():  # two client models, one name
                raise RuntimeError(f"definition name clash for {class_name}: {name}")
            self.class_to_def[class_name] = name
            self._pending.append(class_name)
        return name

    def build(self) -> None:
        self.v3_custom: dict[str, dict[str, Any]] = {}
        for s in served():
            if s.custom is not None:
                self._add_custom(s)
                continue
            self.ref(s.model)
            if not s.virtual:
                self.ref(s.list_model)
        for m in _EXTRA_MODELS:
            self.ref(m)
        if any("token" in s.subresources for s in served()):
            self.ref(_TOKEN_REQUEST)
        while self._pending:
            cname = self._pending.pop()
            self.defs[self.class_to_def[cname]] = self._model_schema(cname)
        self._add_specials()

    def _add_custom(self, s: kinds.Kind) -> None:
        """A custom resource's definitions from its CRD's schema (v3 as written, v2 without what
        Swagger 2.0 cannot say), named as upstream names them (com.example.stable.v1.CronTab)."""
        gvk = [{"group": s.group, "kind": s.kind, "version": s.version}]
        schema = copy.deepcopy(s.custom.schema_doc) or {"type": "object"}
        props = schema.setdefault("properties", {}) if isinstance(schema, dict) else {}
        props["apiVersion"] = {"type": "string", "description": "APIVersion defines the versioned schema of this "
                               "representation of an object."}
        props["kind"] = {"type": "string", "description": "Kind is a string value representing the REST resource "
                         "this object represents."}
        props["metadata"] = {"$ref": "#/definitions/" + self.ref("V1ObjectMeta"),
                             "description": "Standard object's metadata."}
        schema["properties"] = dict(sorted(props.items()))
        schema["x-kubernetes-group-version-kind"] = gvk
        name, list_name = _custom_def(s), _custom_def(s) + "List"
        self.defs[name] = _v2_custom(schema)
        self.v3_custom[name] = _v3_custom(schema)
        lst = {"type": "object", "description": f"{s.kind}List is a list of {s.kind}",
               "required": ["items"],
               "properties": {"apiVersion": props["apiVersion"], "kind": props["kind"],
                              "items": {"type": "array", "items": {"$ref": "#/definitions/" + name}},
                              "metadata": {"$ref": "#/definitions/" + self.ref("V1ListMeta")}},
               "x-kubernetes-group-version-kind": [{"group": s.group, "kind": s.kind + "List",
                                                    "version": s.version}]}
        self.defs[list_name] = lst
        self.v3_custom[list_name] = _to_v3(lst)

    def _model_schema(self, cname: str) -> dict[str, Any]:
        cls = _model_class(cname)
        go_name = _canonical(cname).rsplit(".", 1)[1]
        fields = _fields_by_json(cls)
        props: dict[str, Any] = {}
        required: list[str] = []
        for attr, type_str in cls.openapi_types.items():
            json_name = cls.attribute_map[attr]
            finfo = fields.get(json_name)
            desc = (finfo.description if finfo is not None else None) or ""
            if finfo is not None and finfo.is_required():
                required.append(json_name)
            prop = self._type_schema(cname, json_name, type_str, finfo)
            if desc:
                prop["description"] = desc
            elif "$ref" in prop:
                # the generator drops descriptions of $ref fields; use the
                # referenced type's own description rather than nothing
                target = type_str if re.fullmatch(r"\w+", type_str) else None
                if target and target[0].isupper():
                    d = _class_description(_model_class(target))
                    if d:
                        prop["description"] = d
                        prop[_FALLBACK] = True
            pm = patch.PATCH_STRATEGIES.get((cname, json_name))
            if pm:
                prop["x-kubernetes-patch-strategy"] = pm[0]
                if pm[1]:
                    prop["x-kubernetes-patch-merge-key"] = pm[1]
            # Server-side apply's merge markers, as Kubernetes publishes them.
            markers = structure_markers.FIELDS.get((go_name, json_name), {})
            if markers.get("listType") and prop.get("type") == "array":
                prop["x-kubernetes-list-type"] = markers["listType"]
                if markers.get("keys"):
                    prop["x-kubernetes-list-map-keys"] = list(markers["keys"])
            if markers.get("mapType") and prop.get("type") == "object":
                prop["x-kubernetes-map-type"] = markers["mapType"]
            props[json_name] = prop
        schema: dict[str, Any] = {"type": "object"}
        desc = _class_description(cls)
        if desc:
            schema["description"] = desc
        schema["properties"] = dict(sorted(props.items()))
        if required:
            schema["required"] = sorted(required)
        type_markers = structure_markers.TYPES.get(go_name, {})
        if "atomic" in (type_markers.get("structType"), type_markers.get("mapType")):
            schema["x-kubernetes-map-type"] = "atomic"
        return schema

    def _type_schema(self, cname: str, json_name: str, type_str: str, finfo: Any) -> dict[str, Any]:
        key = (cname, json_name)
        if key in _OBJECT_FIELDS:
            return {"$ref": "#/definitions/" + _OBJECT_FIELDS[key]}
        if key in _QUANTITY_FIELDS:
            q = {"$ref": "#/definitions/" + _QUANTITY}
            if type_str.startswith("Dict["):
                return {"type": "object", "additionalProperties": q}
            return q
        if cname == "V1JSONSchemaProps" and "object" in type_str:
            # JSON, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool: any JSON value (a default, an enum member,
            # a schema or a bool), which upstream's document leaves untyped too.
            return {"type": "array", "items": {}} if type_str.startswith("List[") else {}
        if type_str == "datetime":
            target = _MICROTIME if key in _MICROTIME_FIELDS else _TIME
            return {"$ref": "#/definitions/" + target}
        schema = self._plain(type_str, finfo)
        if _int_width(_canonical(cname).rsplit(".", 1)[1], json_name) == "int64":
            node = schema
            while isinstance(node.get("items", node.get("additionalProperties")), dict):
                node = node.get("items", node.get("additionalProperties"))
            if node.get("format") == "int32":
                node["format"] = "int64"
        return schema

    def _plain(self, t: str, finfo: Any) -> dict[str, Any]:
        t = t.strip()
        if t.startswith("List[") and t.endswith("]"):
            return {"type": "array", "items": self._plain(t[5:-1], None)}
        if t.startswith("Dict[str,") and t.endswith("]"):
            return {"type": "object", "additionalProperties": self._plain(t[9:-1], None)}
        if t == "str":
            return {"type": "string"}
        if t == "int":
            return {"type": "integer", "format": "int32"}
        if t == "float":
            return {"type": "number", "format": "double"}
        if t == "bool":
            return {"type": "boolean"}
        if t in ("bytes", "bytearray"):
            return {"type": "string", "format": "byte"}
        if t == "datetime":
            return {"$ref": "#/definitions/" + _TIME}
        if t == "object":
            if finfo is not None and _is_int_or_string(finfo.annotation):
                return {"$ref": "#/definitions/" + _INTORSTRING}
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        # a model class
        return {"$ref": "#/definitions/" + self.ref(t)}

    def _add_specials(self) -> None:
        d = self.defs
        d[_TIME] = {
            "type": "string", "format": "date-time",
            "description": "Time is a wrapper around time.Time which supports correct marshaling "
            "to YAML and JSON. Wrappers are provided for many of the factory methods that the "
            "time package offers.",
        }
        d[_MICROTIME] = {
            "type": "string", "format": "date-time",
            "description": "MicroTime is version of Time with microsecond level precision.",
        }
        d[_QUANTITY] = {
            "type": "string",
            "description": "Quantity is a fixed-point representation of a number, written as "
            "a decimal number with an optional SI (m, k, M, G, T, P, E) or binary (Ki, Mi, Gi, "
            "Ti, Pi, Ei) suffix, e.g. 100m, 1.5, 128Mi.",
        }
        d[_INTORSTRING] = {
            "type": "string", "format": "int-or-string",
            "description": "IntOrString is a type that can hold an int32 or a string. When used "
            "in JSON or YAML marshalling and unmarshalling, it produces or consumes the inner type.",
        }
        d[_FIELDSV1] = {
            "type": "object",
            "description": "FieldsV1 stores a set of fields in a data structure like a Trie, in "
            "JSON format.",
        }
        d[_RAWEXT] = {
            "type": "object",
            "description": "RawExtension is used to hold extensions in external versions: any "
            "serialized object.",
        }
        d[_PATCH] = {
            "type": "object",
            "description": "Patch is provided to give a concrete name and type to the "
            "Kubernetes PATCH request body.",
        }
        # group-version-kind extensions on top-level kinds
        for s in served():
            if s.custom is not None:
                continue
            gvk = [{"group": s.group, "kind": s.kind, "version": s.version}]
            d[_canonical(s.model)]["x-kubernetes-group-version-kind"] = gvk
            if s.virtual:
                continue
            d[_canonical(s.list_model)]["x-kubernetes-group-version-kind"] = [
                {"group": s.group, "kind": s.kind + "List", "version": s.version}]
        d[_canonical("V1Scale")]["x-kubernetes-group-version-kind"] = [
            {"group": "autoscaling", "kind": "Scale", "version": "v1"}]
        d[_canonical("V1Binding")]["x-kubernetes-group-version-kind"] = [
            {"group": "", "kind": "Binding", "version": "v1"}]
        if _canonical(_TOKEN_REQUEST) in d:
            d[_canonical(_TOKEN_REQUEST)]["x-kubernetes-group-version-kind"] = [
                {"group": "authentication.k8s.io", "kind": "TokenRequest", "version": "v1"}]
        d[_canonical("V1Status")]["x-kubernetes-group-version-kind"] = [
            {"group": "", "kind": "Status", "version": "v1"}]
        groups = sorted({(s.group, s.version) for s in served()}) + [("autoscaling", "v1"),
                                                                   ("meta.k8s.io", "v1")]
        for kind, model in (("DeleteOptions", "V1DeleteOptions"), ("WatchEvent", "V1WatchEvent")):
            d[_canonical(model)]["x-kubernetes-group-version-kind"] = [
                {"group": g, "kind": kind, "version": v} for g, v in groups]


# ---------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------

_Q = "query"
_PARAMS: dict[str, dict[str, Any]] = {
    "pretty": {"in": _Q, "type": "string",
               "description": "If 'true', then the output is pretty printed."},
    "dryRun": {"in": _Q, "type": "string",
               "description": "When present, indicates that modifications should not be "
               "persisted. Valid values are: - All: all dry run stages will be processed"},
    "fieldManager": {"in": _Q, "type": "string",
                     "description": "fieldManager is a name associated with the actor or "
                     "entity that is making these changes."},
    "fieldValidation": {"in": _Q, "type": "string",
                        "description": "fieldValidation instructs the server on how to handle "
                        "objects in the request containing unknown or duplicate fields. Valid "
                        "values are: - Ignore: silently drop unknown fields. - Warn: send a "
                        "warning via the standard warning response header for each unknown "
                        "field (the default). - Strict: fail the request with a BadRequest "
                        "error if any unknown field is present."},
    "force": {"in": _Q, "type": "boolean",
              "description": "Force is going to \"force\" Apply requests. It means user will "
              "re-acquire conflicting fields owned by other people."},
    "gracePeriodSeconds": {"in": _Q, "type": "integer",
                           "description": "The duration in seconds before the object should "
                           "be deleted."},
    "propagationPolicy": {"in": _Q, "type": "string",
                          "description": "Whether and how garbage collection will be "
                          "performed: Orphan, Background or Foreground."},
    "orphanDependents": {"in": _Q, "type": "boolean",
                         "description": "Deprecated: please use the PropagationPolicy."},
    "ignoreStoreReadErrorWithClusterBreakingPotential": {
        "in": _Q, "type": "boolean",
        "description": "if set to true, it will trigger an unsafe deletion of the resource."},
    "allowWatchBookmarks": {"in": _Q, "type": "boolean",
                            "description": "allowWatchBookmarks requests watch events with "
                            "type \"BOOKMARK\"."},
    "continue": {"in": _Q, "type": "string",
                 "description": "The continue option should be set when retrieving more "
                 "results from the server."},
    "fieldSelector": {"in": _Q, "type": "string",
                      "description": "A selector to restrict the list of returned objects by "
                      "their fields. Defaults to everything."},
    "labelSelector": {"in": _Q, "type": "string",
                      "description": "A selector to restrict the list of returned objects by "
                      "their labels. Defaults to everything."},
    "limit": {"in": _Q, "type": "integer",
              "description": "limit is a maximum number of responses to return for a list "
              "call."},
    "resourceVersion": {"in": _Q, "type": "string",
                        "description": "resourceVersion sets a constraint on what resource "
                        "versions a request may be served from."},
    "resourceVersionMatch": {"in": _Q, "type": "string",
                             "description": "resourceVersionMatch determines how "
                             "resourceVersion is applied to list calls."},
    "sendInitialEvents": {"in": _Q, "type": "boolean",
                          "description": "sendInitialEvents=true may be set together with "
                          "watch=true."},
    "timeoutSeconds": {"in": _Q, "type": "integer",
                       "description": "Timeout for the list/watch call."},
    "watch": {"in": _Q, "type": "boolean",
              "description": "Watch for changes to the described resources and return them as "
              "a stream of add, update, and remove notifications."},
    # pods/log
    "container": {"in": _Q, "type": "string",
                  "description": "The container for which to stream logs."},
    "follow": {"in": _Q, "type": "boolean", "description": "Follow the log stream of the pod."},
    "insecureSkipTLSVerifyBackend": {"in": _Q, "type": "boolean",
                                     "description": "Skip verifying the kubelet's serving "
                                     "certificate."},
    "limitBytes": {"in": _Q, "type": "integer",
                   "description": "If set, the number of bytes to read from the server before "
                   "terminating the log output."},
    "previous": {"in": _Q, "type": "boolean",
                 "description": "Return previous terminated container logs."},
    "sinceSeconds": {"in": _Q, "type": "integer",
                     "description": "A relative time in seconds before the current time from "
                     "which to show logs."},
    "sinceTime": {"in": _Q, "type": "string",
                  "description": "An RFC3339 timestamp from which to show logs."},
    "stream": {"in": _Q, "type": "string",
               "description": "Specify which container log stream to return: All, Stdout or "
               "Stderr."},
    "tailLines": {"in": _Q, "type": "integer",
                  "description": "If set, the number of lines from the end of the logs to show."},
    "timestamps": {"in": _Q, "type": "boolean",
                   "description": "If true, add an RFC3339 timestamp at the beginning of every "
                   "line of log output."},
    # pods/exec
    "command": {"in": _Q, "type": "string",
                "description": "Command is the remote command to execute. argv array."},
    "stdin": {"in": _Q, "type": "boolean", "description": "Redirect the standard input stream."},
    "stdout": {"in": _Q, "type": "boolean", "description": "Redirect the standard output stream."},
    "stderr": {"in": _Q, "type": "boolean", "description": "Redirect the standard error stream."},
    "tty": {"in": _Q, "type": "boolean", "description": "Allocate a terminal for this exec call."},
    # pods/portforward
    "ports": {"in": _Q, "type": "integer", "uniqueItems": True, "description": "List of ports to forward"},
    # path parameters
    "name": {"in": "path", "type": "string", "required": True,
             "description": "name of the resource"},
    "namespace": {"in": "path", "type": "string", "required": True,
                  "description": "object name and auth scope, such as for teams and projects"},
}

_LIST_PARAMS = ("allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit",
                "resourceVersion", "resourceVersionMatch", "sendInitialEvents",
                "timeoutSeconds", "watch")
_WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")
_DELETE_PARAMS = ("dryRun", "gracePeriodSeconds",
                  "ignoreStoreReadErrorWithClusterBreakingPotential", "orphanDependents",
                  "propagationPolicy")
_LOG_PARAMS = ("container", "follow", "insecureSkipTLSVerifyBackend", "limitBytes",
               "previous", "sinceSeconds", "sinceTime", "stream", "tailLines", "timestamps")
_EXEC_PARAMS = ("command", "container", "stderr", "stdin", "stdout", "tty")
_ATTACH_PARAMS = ("container", "stderr", "stdin", "stdout", "tty")

_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                "application/strategic-merge-patch+json", "application/apply-patch+yaml")
_PRODUCES = ("application/json", "application/yaml")


class _Op(typing.NamedTuple):
    method: str
    op_id: str
    action: str
    gvk: dict[str, str] | None
    params: tuple[str, ...]
    body: str | None  # definition name
    patch: bool
    response: str | None  # definition name; None means a plain string
    codes: tuple[str, ...]
    description: str
    tag: str
    patch_types: tuple[str, ...] = ()


def _custom_def(s: kinds.Kind) -> str:
    """Upstream's definition name of a custom resource: the group reversed, version, kind."""
    return ".".join(reversed(s.group.split("."))) + f".{s.version}.{s.kind}"


_V2_KEYS = {"description", "type", "format", "properties", "items", "additionalProperties", "required", "enum",
            "default", "maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum", "maxLength", "minLength",
            "pattern", "maxItems", "minItems", "uniqueItems", "multipleOf", "$ref", "title"}


def _v2_custom(node: Any) -> Any:
    """A CRD schema as Swagger 2.0 can hold it (upstream's v2 builder also drops nullable, oneOf/anyOf/not,
    and the type of int-or-string fields); x-kubernetes-* extensions stay."""
    if isinstance(node, list):
        return [_v2_custom(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k == "x-kubernetes-validations" or (k not in _V2_KEYS and not k.startswith("x-")):
            continue
        if k == "properties" and isinstance(v, dict):
            out[k] = {name: _v2_custom(sub) for name, sub in v.items()}
        elif k in ("items", "additionalProperties") and isinstance(v, dict):
            out[k] = _v2_custom(v)
        else:
            out[k] = copy.deepcopy(v)
    if node.get("x-kubernetes-int-or-string") or node.get("nullable"):
        out.pop("type", None)
    return out


def _v3_custom(node: Any) -> Any:
    return _to_v3(copy.deepcopy(node))


def _ops_prefix(group: str, version: str) -> tuple[str, str]:
    if group == "":
        return "CoreV1" if version == "v1" else "Core" + version.title(), f"core_{version}"
    first = group.split(".")[0]
    return first[:1].upper() + first[1:] + version.title(), f"{first}_{version}"


def _root(group: str, version: str) -> str:
    return f"/api/{version}" if group == "" else f"/apis/{group}/{version}"


def _gv_key(group: str, version: str) -> str:
    return _root(group, version)[1:]


def _paths_for(s: kinds.Kind) -> dict[str, tuple[list[str], list[_Op]]]:
    """path -> (path-level parameter names, operations)."""
    prefix, tag = _ops_prefix(s.group, s.version)
    gvk = {"group": s.group, "kind": s.kind, "version": s.version}
    root = _root(s.group, s.version)
    obj = _custom_def(s) if s.custom is not None else _canonical(s.model)
    if s.virtual:  # create-only (TokenReview): one POST, as Kubernetes documents it
        base = f"{root}/namespaces/{{namespace}}/{s.plural}" if s.namespaced else f"{root}/{s.plural}"
        return {base: (["namespace", "pretty"] if s.namespaced else ["pretty"], [_Op(
            "post", f"create{prefix}{'Namespaced' if s.namespaced else ''}{s.kind}", "post", gvk,
            ("dryRun", "fieldManager", "fieldValidation"), obj, False, obj, ("200", "201", "202"),
            f"create a {s.kind}", tag)])}
    lst = _custom_def(s) + "List" if s.custom is not None else _canonical(s.list_model)
    status = _canonical("V1Status")
    delopts = _canonical("V1DeleteOptions")
    scope = "Namespaced" if s.namespaced else ""
    k = s.kind
    base = f"{root}/namespaces/{{namespace}}/{s.plural}" if s.namespaced else f"{root}/{s.plural}"
    pp_coll = ["namespace", "pretty"] if s.namespaced else ["pretty"]
    pp_item = ["name", "namespace", "pretty"] if s.namespaced else ["name", "pretty"]
    out: dict[str, tuple[list[str], list[_Op]]] = {}

    # Custom resources take no strategic merge patch (upstream answers 415).
    patch_types = tuple(t for t in _PATCH_TYPES if s.custom is None or "strategic" not in t)

    def op(method, verb, action, params, body, response, codes, desc, g=gvk, patch=False):
        return _Op(method, verb, action, g, tuple(params), body, patch, response, codes, desc, tag, patch_types)

    out[base] = (pp_coll, [
        op("get", f"list{prefix}{scope}{k}", "list", _LIST_PARAMS, None, lst, ("200",),
           f"list or watch objects of kind {k}"),
        op("post", f"create{prefix}{scope}{k}", "post", _WRITE_PARAMS, obj, obj,
           ("200", "201", "202"), f"create a {k}"),
        op("delete", f"delete{prefix}Collection{scope}{k}", "deletecollection",
           _DELETE_PARAMS + tuple(p for p in _LIST_PARAMS if p not in ("allowWatchBookmarks", "watch")),
           delopts, status, ("200",), f"delete collection of {k}"),
    ])
    out[f"{base}/{{name}}"] = (pp_item, [
        op("get", f"read{prefix}{scope}{k}", "get", (), None, obj, ("200",),
           f"read the specified {k}"),
        op("put", f"replace{prefix}{scope}{k}", "put", _WRITE_PARAMS, obj, obj, ("200", "201"),
           f"replace the specified {k}"),
        op("patch", f"patch{prefix}{scope}{k}", "patch", _WRITE_PARAMS + ("force",), _PATCH, obj,
           ("200", "201"), f"partially update the specified {k}", patch=True),
        op("delete", f"delete{prefix}{scope}{k}", "delete", _DELETE_PARAMS, delopts, status,
           ("200", "202"), f"delete a {k}"),
    ])
    if s.namespaced:
        out[f"{root}/{s.plural}"] = (["pretty"], [
            op("get", f"list{prefix}{k}ForAllNamespaces", "list", _LIST_PARAMS, None, lst,
               ("200",), f"list or watch objects of kind {k}"),
        ])
    for sub in s.subresources:
        path = f"{base}/{{name}}/{sub}"
        if sub == "status":
            out[path] = (pp_item, [
                op("get", f"read{prefix}{scope}{k}Status", "get", (), None, obj, ("200",),
                   f"read status of the specified {k}"),
                op("put", f"replace{prefix}{scope}{k}Status", "put", _WRITE_PARAMS, obj, obj,
                   ("200", "201"), f"replace status of the specified {k}"),
                op("patch", f"patch{prefix}{scope}{k}Status", "patch", _WRITE_PARAMS + ("force",),
                   _PATCH, obj, ("200", "201"), f"partially update status of the specified {k}",
                   patch=True),
            ])
        elif sub == "ephemeralcontainers":
            # Kubernetes names these operations "...Ephemeralcontainers" (the subresource, capitalized).
            out[path] = (pp_item, [
                op("get", f"read{prefix}{scope}{k}Ephemeralcontainers", "get", (), None, obj, ("200",),
                   f"read ephemeralcontainers of the specified {k}"),
                op("put", f"replace{prefix}{scope}{k}Ephemeralcontainers", "put", _WRITE_PARAMS, obj, obj,
                   ("200", "201"), f"replace ephemeralcontainers of the specified {k}"),
                op("patch", f"patch{prefix}{scope}{k}Ephemeralcontainers", "patch",
                   _WRITE_PARAMS + ("force",), _PATCH, obj, ("200", "201"),
                   f"partially update ephemeralcontainers of the specified {k}", patch=True),
            ])
        elif sub == "scale":
            scale = _canonical("V1Scale")
            sg = {"group": "autoscaling", "kind": "Scale", "version": "v1"}
            out[path] = (pp_item, [
                op("get", f"read{prefix}{scope}{k}Scale", "get", (), None, scale, ("200",),
                   f"read scale of the specified {k}", g=sg),
                op("put", f"replace{prefix}{scope}{k}Scale", "put", _WRITE_PARAMS, scale, scale,
                   ("200", "201"), f"replace scale of the specified {k}", g=sg),
                op("patch", f"patch{prefix}{scope}{k}Scale", "patch", _WRITE_PARAMS + ("force",),
                   _PATCH, scale, ("200", "201"), f"partially update scale of the specified {k}",
                   g=sg, patch=True),
            ])
        elif sub == "binding":
            binding = _canonical("V1Binding")
            out[path] = (pp_item, [
                op("post", f"create{prefix}{scope}{k}Binding", "post", _WRITE_PARAMS, binding,
                   binding, ("200", "201", "202"), f"create binding of a {k}",
                   g={"group": "", "kind": "Binding", "version": "v1"}),
            ])
        elif sub == "token":
            tr = _canonical(_TOKEN_REQUEST)
            out[path] = (pp_item, [
                op("post", f"create{prefix}{scope}{k}Token", "post", _WRITE_PARAMS, tr, tr,
                   ("200", "201", "202"), f"create token of a {k}",
                   g={"group": "authentication.k8s.io", "kind": "TokenRequest", "version": "v1"}),
            ])
        elif sub == "log":
            out[path] = (pp_item, [
                op("get", f"read{prefix}{scope}{k}Log", "get", _LOG_PARAMS, None, None, ("200",),
                   f"read log of the specified {k}"),
            ])
        elif sub == "exec":
            eg = {"group": "", "kind": "PodExecOptions", "version": "v1"}
            pp = [p for p in pp_item if p != "pretty"]
            out[path] = (pp, [
                op("get", f"connect{prefix}GetNamespaced{k}Exec", "connect", _EXEC_PARAMS, None,
                   None, ("200",), f"connect GET requests to exec of {k}", g=eg),
                op("post", f"connect{prefix}PostNamespaced{k}Exec", "connect", _EXEC_PARAMS, None,
                   None, ("200",), f"connect POST requests to exec of {k}", g=eg),
            ])
        elif sub == "attach":
            eg = {"group": "", "kind": "PodAttachOptions", "version": "v1"}
            pp = [p for p in pp_item if p != "pretty"]
            out[path] = (pp, [
                op("get", f"connect{prefix}GetNamespaced{k}Attach", "connect", _ATTACH_PARAMS, None,
                   None, ("200",), f"connect GET requests to attach of {k}", g=eg),
                op("post", f"connect{prefix}PostNamespaced{k}Attach", "connect", _ATTACH_PARAMS, None,
                   None, ("200",), f"connect POST requests to attach of {k}", g=eg),
            ])
        elif sub == "portforward":
            eg = {"group": "", "kind": "PodPortForwardOptions", "version": "v1"}
            pp = [p for p in pp_item if p != "pretty"]
            ports = ("ports",)
            out[path] = (pp, [
                op("get", f"connect{prefix}GetNamespaced{k}Portforward", "connect", ports, None,
                   None, ("200",), f"connect GET requests to portforward of {k}", g=eg),
                op("post", f"connect{prefix}PostNamespaced{k}Portforward", "connect", ports, None,
                   None, ("200",), f"connect POST requests to portforward of {k}", g=eg),
            ])
    return out


_CODE_TEXT = {"200": "OK", "201": "Created", "202": "Accepted", "401": "Unauthorized"}


def _param_v2(name: str) -> dict[str, Any]:
    p = _PARAMS[name]
    d: dict[str, Any] = {"name": name, "in": p["in"], "description": p["description"],
                         "type": p["type"], "uniqueItems": True}
    if p.get("required"):
        d["required"] = True
    return d


def _param_v3(name: str) -> dict[str, Any]:
    p = _PARAMS[name]
    d: dict[str, Any] = {"name": name, "in": p["in"], "description": p["description"],
                         "schema": {"type": p["type"], "uniqueItems": True}}
    if p.get("required"):
        d["required"] = True
    return d


def _op_v2(o: _Op) -> dict[str, Any]:
    d: dict[str, Any] = {
        "description": o.description,
        "operationId": o.op_id,
        "consumes": list(o.patch_types or _PATCH_TYPES) if o.patch else ["*/*"],
        "produces": list(_PRODUCES) if o.response else ["text/plain", "application/json"],
        "schemes": ["https"],
        "tags": [o.tag],
        "parameters": [],
        "responses": {},
        "x-kubernetes-action": o.action,
    }
    if o.gvk:
        d["x-kubernetes-group-version-kind"] = dict(o.gvk)
    if o.body:
        d["parameters"].append({"name": "body", "in": "body", "required": o.method != "delete",
                                "schema": {"$ref": "#/definitions/" + o.body}})
    d["parameters"] += [_param_v2(p) for p in o.params]
    if not d["parameters"]:
        del d["parameters"]
    for c in o.codes:
        schema = {"$ref": "#/definitions/" + o.response} if o.response else {"type": "string"}
        d["responses"][c] = {"description": _CODE_TEXT[c], "schema": schema}
    d["responses"]["401"] = {"description": "Unauthorized"}
    return d


def _op_v3(o: _Op) -> dict[str, Any]:
    d: dict[str, Any] = {
        "tags": [o.tag],
        "description": o.description,
        "operationId": o.op_id,
        "responses": {},
        "x-kubernetes-action": o.action,
    }
    if o.params:
        d["parameters"] = [_param_v3(p) for p in o.params]
    if o.body:
        ref = {"schema": {"$ref": "#/components/schemas/" + o.body}}
        types = (o.patch_types or _PATCH_TYPES) if o.patch else ("*/*",)
        d["requestBody"] = {"content": {t: copy.deepcopy(ref) for t in types},
                            "required": o.method != "delete"}
    for c in o.codes:
        if o.response:
            schema = {"$ref": "#/components/schemas/" + o.response}
            content = {t: {"schema": dict(schema)} for t in _PRODUCES}
        else:
            content = {"*/*": {"schema": {"type": "string"}}}
        d["responses"][c] = {"description": _CODE_TEXT[c], "content": content}
    d["responses"]["401"] = {"description": "Unauthorized"}
    if o.gvk:
        d["x-kubernetes-group-version-kind"] = dict(o.gvk)
    return d


# ---------------------------------------------------------------------------
# v2 -> v3 schema conversion
# ---------------------------------------------------------------------------

def _to_v3(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_v3(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    is_ref = isinstance(node.get("$ref"), str)  # not a property named "$ref" (JSONSchemaProps has one)
    for k, v in node.items():
        if (k == "$ref" and is_ref) or k == _FALLBACK:
            continue
        out[k] = _to_v3(v)
    if is_ref:
        ref = node["$ref"].replace("#/definitions/", "#/components/schemas/")
        if len(out) == 0 or node.get(_FALLBACK):
            out["$ref"] = ref
        else:
            out["allOf"] = [{"$ref": ref}]
    return out


def _strip_markers(defs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, schema in defs.items():
        props = schema.get("properties")
        if props and any(_FALLBACK in p for p in props.values()):
            schema = dict(schema)
            schema["properties"] = {k: {kk: vv for kk, vv in p.items() if kk != _FALLBACK}
                                    for k, p in props.items()}
        out[name] = schema
    return out


def _v3_special(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    if name == _INTORSTRING:
        return {"description": schema["description"], "format": "int-or-string",
                "oneOf": [{"type": "integer"}, {"type": "string"}]}
    if name == _QUANTITY:
        return {"description": schema["description"],
                "oneOf": [{"type": "string"}, {"type": "number"}]}
    return _to_v3(schema)


def _refs(node: Any, acc: set[str]) -> None:
    if isinstance(node, dict):
        r = node.get("$ref")
        if isinstance(r, str):
            acc.add(r.rsplit("/", 1)[1])
        for v in node.values():
            _refs(v, acc)
    elif isinstance(node, list):
        for v in node:
            _refs(v, acc)


def _closure(defs: dict[str, Any], roots: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        n = todo.pop()
        if n in seen or n not in defs:
            continue
        seen.add(n)
        acc: set[str] = set()
        _refs(defs[n], acc)
        todo.extend(acc - seen)
    return seen


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------
# Cached documents
# ---------------------------------------------------------------------------

class _Docs:
    """The definitions (what field validation needs, on every write) at once; the documents served
    under /openapi (paths, v2, v3 per group-version: about as much CPU again) when first asked for."""

    def __init__(self) -> None:
        b = _Builder()
        b.build()
        self.defs = b.defs
        self.v3_custom = b.v3_custom
        self.gvk_to_def: dict[tuple[str, str, str], str] = {}
        for name, schema in self.defs.items():
            for g in schema.get("x-kubernetes-group-version-kind", ()):
                self.gvk_to_def.setdefault((g["group"], g["version"], g["kind"]), name)
        self._served = served()
        self._documents_lock = threading.Lock()
        self._documents_built = False
        self._v2_bytes: bytes | None = None
        self._v2_proto: tuple[bytes, str] | None = None

    @property
    def v2(self) -> dict[str, Any]:
        self._documents()
        return self._v2

    @property
    def v3(self) -> dict[str, dict[str, Any]]:
        self._documents()
        return self._v3

    @property
    def v3_bytes(self) -> dict[str, tuple[bytes, str]]:
        self._documents()
        return self._v3_bytes

    @property
    def index(self) -> dict[str, Any]:
        self._documents()
        return self._index

    def _documents(self) -> None:
        if self._documents_built:
            return
        with self._documents_lock:
            if not self._documents_built:
                self._build_documents()
                self._documents_built = True

    def _build_documents(self) -> None:
        # paths grouped by group-version
        by_gv: dict[str, dict[str, tuple[list[str], list[_Op]]]] = {}
        for s in self._served:
            by_gv.setdefault(_gv_key(s.group, s.version), {}).update(_paths_for(s))

        v2_paths: dict[str, Any] = {}
        for paths in by_gv.values():
            for path, (pparams, ops) in paths.items():
                item: dict[str, Any] = {o.method: _op_v2(o) for o in ops}
                item["parameters"] = [_param_v2(p) for p in pparams]
                v2_paths[path] = item
        self._v2 = {
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.37.0-kubepy"},
            "paths": dict(sorted(v2_paths.items())),
            "definitions": dict(sorted(_strip_markers(self.defs).items())),
            "securityDefinitions": {"BearerToken": {
                "description": "Bearer Token authentication", "type": "apiKey",
                "name": "authorization", "in": "header"}},
            "security": [{"BearerToken": []}],
        }
        self._v3: dict[str, dict[str, Any]] = {}
        self._v3_bytes: dict[str, tuple[bytes, str]] = {}
        for gv, paths in by_gv.items():
            v3_paths: dict[str, Any] = {}
            roots: set[str] = set()
            for path, (pparams, ops) in paths.items():
                item = {o.method: _op_v3(o) for o in ops}
                item["parameters"] = [_param_v3(p) for p in pparams]
                v3_paths[path] = item
                _refs(item, roots)
            names = _closure(self.defs, roots)
            schemas = {n: self.v3_custom[n] if n in self.v3_custom else _v3_special(n, self.defs[n])
                       for n in sorted(names)}
            doc = {
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": "v1.37.0-kubepy"},
                "paths": dict(sorted(v3_paths.items())),
                "components": {
                    "schemas": schemas,
                    "securitySchemes": {"BearerToken": {
                        "type": "apiKey", "description": "Bearer Token authentication",
                        "name": "authorization", "in": "header"}},
                },
                "security": [{"BearerToken": []}],
            }
            data = _dumps(doc)
            self._v3[gv] = doc
            self._v3_bytes[gv] = (data, hashlib.sha512(data).hexdigest().upper())
        self._index = {"paths": {
            gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={h}"}
            for gv, (_, h) in sorted(self._v3_bytes.items())
        }}

    def v2_bytes(self) -> tuple[bytes, str]:
        if self._v2_bytes is None:
            self._v2_bytes = _dumps(self.v2)
        data = self._v2_bytes
        return data, hashlib.sha512(data).hexdigest().upper()

    def v2_proto_bytes(self) -> tuple[bytes, str]:
        if self._v2_proto is None:
            from kubepy.api.openapi_proto import document_bytes

            data = document_bytes(self.v2)
            self._v2_proto = (data, hashlib.sha512(data).hexdigest().upper())
        return self._v2_proto


_lock = threading.Lock()
_docs: _Docs | None = None


_docs_generation = -1


def _get() -> _Docs:
    """The documents, rebuilt when the registry changed (a kind registered or removed)."""
    global _docs, _docs_generation
    gen = kinds.generation()
    if _docs is None or _docs_generation != gen:
        with _lock:
            if _docs is None or _docs_generation != gen:
                _docs, _docs_generation = _Docs(), gen
    return _docs


def warm() -> None:
    """Build (and cache) the definitions now; call at server start-up. The served documents are built
    when first asked for."""
    _get()


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------

def openapi_v2() -> dict[str, Any]:
    """The Swagger 2.0 document (shared, do not mutate)."""
    return _get().v2


def openapi_v2_json() -> tuple[bytes, str]:
    """(serialized /openapi/v2 JSON, etag hash)."""
    return _get().v2_bytes()


def openapi_v2_proto() -> tuple[bytes, str]:
    """(/openapi/v2 as gnostic's protobuf Document, etag hash)."""
    return _get().v2_proto_bytes()


def openapi_v3_index() -> dict[str, Any]:
    """The ``/openapi/v3`` discovery document."""
    return _get().index


def openapi_v3_group_version(path: str) -> dict[str, Any] | None:
    """OpenAPI 3.0 document for ``api/v1``, ``apis/apps/v1`` ... (or None).

    ``path`` may carry a leading ``/``, an ``openapi/v3/`` prefix or a query
    string; they are ignored.
    """
    key = _normalize_gv(path)
    return _get().v3.get(key) if key is not None else None


def openapi_v3_json(path: str) -> tuple[bytes, str] | None:
    """(serialized JSON, hash) of a v3 group-version document, or None."""
    key = _normalize_gv(path)
    return _get().v3_bytes.get(key) if key is not None else None


def _normalize_gv(path: str) -> str | None:
    p = path.split("?", 1)[0].strip("/")
    if p.startswith("openapi/v3/"):
        p = p[len("openapi/v3/"):]
    return p or None


def definition_for(api_version: str, kind: str) -> str | None:
    """Canonical definition name for apiVersion/kind (e.g. io.k8s.api.core.v1.Pod)."""
    group, _, version = api_version.rpartition("/")
    return _get().gvk_to_def.get((group, version, kind))


def unknown_fields(api_version: str, kind: str, obj: dict[str, Any], *, drop: bool = False) -> list[str]:
    """JSON paths (``.spec.containers[0].imagee``) of fields unknown to the schema,
    removed from *obj* when *drop* is set (what Kubernetes' decoder does with
    them unless fieldValidation=Strict).

    Returns ``[]`` for kinds without a schema.  Only unknown keys are
    reported; type mismatches are left to the decoder/validation.
    """
    docs = _get()
    name = definition_for(api_version, kind)
    if name is None or not isinstance(obj, dict):
        return []
    out: list[str] = []
    _walk(docs.defs, docs.defs[name], obj, "", out, drop)
    return out


def metadata_problems(obj: dict[str, Any], *, drop: bool) -> tuple[list[str], list[str]]:
    """(type errors, unknown field paths) of a custom resource's ``metadata``, which is an ObjectMeta
    whatever its CRD's schema says; unknown fields are removed when *drop* is set."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return ([f"metadata: expected object, got {_json_type_name(meta)}"] if meta is not None else []), []
    docs = _get()
    ref = {"$ref": "#/definitions/" + _META + "ObjectMeta"}
    types: list[str] = []
    _check_types(docs.defs, ref, meta, ".metadata", types)
    unknown: list[str] = []
    if not types:
        _walk(docs.defs, ref, meta, ".metadata", unknown, drop)
    return types, unknown


def _walk(defs: dict[str, Any], schema: dict[str, Any], value: Any, path: str,
          out: list[str], drop: bool) -> None:
    while "$ref" in schema:
        schema = defs.get(schema["$ref"].rsplit("/", 1)[1], {})
    if value is None:
        return
    props = schema.get("properties")
    if props is not None:
        if not isinstance(value, dict):
            return
        for k, v in list(value.items()):
            sub = props.get(k)
            if sub is None:
                out.append(f"{path}.{k}")
                if drop:
                    del value[k]
            else:
                _walk(defs, sub, v, f"{path}.{k}", out, drop)
        return
    items = schema.get("items")
    if items is not None:
        if isinstance(value, list):
            for i, v in enumerate(value):
                _walk(defs, items, v, f"{path}[{i}]", out, drop)
        return
    ap = schema.get("additionalProperties")
    if isinstance(ap, dict) and isinstance(value, dict):
        for k, v in value.items():
            _walk(defs, ap, v, f"{path}.{k}", out, drop)


_QUANTITY_REF = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_JSON_TYPES = {"object": (dict,), "array": (list,), "string": (str,), "integer": (int,), "number": (int, float),
               "boolean": (bool,)}


def type_errors(api_version: str, kind: str, obj: dict[str, Any]) -> list[str]:
    """Fields whose JSON type the schema cannot hold (``spec.containers[0].resources:
    expected object, got array``): what Kubernetes' decoder refuses with a 400
    before any validation. null is accepted anywhere, as Go decodes it to zero."""
    docs = _get()
    name = definition_for(api_version, kind)
    if name is None or not isinstance(obj, dict):
        return []
    out: list[str] = []
    _check_types(docs.defs, {"$ref": f"#/definitions/{name}"}, obj, "", out)
    return out


def _json_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {dict: "object", list: "array", str: "string"}.get(type(value), type(value).__name__)


_INT_RANGES = {"int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}


def _check_types(defs: dict[str, Any], schema: dict[str, Any], value: Any, path: str, out: list[str],
                 struct: str = "") -> None:
    if value is None or len(out) >= 20:
        return
    owner = struct  # the Go struct a field belongs to, for messages
    while "$ref" in schema:
        ref = schema["$ref"].rsplit("/", 1)[1]
        if ref == _QUANTITY_REF:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                out.append(f"{path.lstrip('.')}: expected a quantity (string or number), got {_json_type_name(value)}")
            return
        schema = defs.get(ref, {})
        owner = ref.rsplit(".", 1)[1]
    expected = schema.get("type")
    if schema.get("format") == "int-or-string":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            out.append(f"{path.lstrip('.')}: expected an integer or string, got {_json_type_name(value)}")
        elif isinstance(value, int) and not _INT_RANGES["int32"][0] <= value <= _INT_RANGES["int32"][1]:
            out.append(_overflow(value, struct, path, "int32"))
        return
    if expected in _JSON_TYPES:
        ok = isinstance(value, _JSON_TYPES[expected]) and not (expected != "boolean" and isinstance(value, bool))
        if expected == "integer" and isinstance(value, float) and value.is_integer():
            ok = True
        if not ok:
            out.append(f"{path.lstrip('.')}: expected {expected}, got {_json_type_name(value)}")
            return
        if expected == "integer":
            width = schema.get("format", "int64")
            low, high = _INT_RANGES.get(width, _INT_RANGES["int64"])
            if not low <= value <= high:
                out.append(_overflow(value, struct, path, width))
            return
    props = schema.get("properties")
    if isinstance(value, dict):
        if props is not None:
            for k, v in value.items():
                if k in props:
                    _check_types(defs, props[k], v, f"{path}.{k}", out, owner)
        ap = schema.get("additionalProperties")
        if isinstance(ap, dict):
            for k, v in value.items():
                _check_types(defs, ap, v, f"{path}[{k}]", out, owner)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            _check_types(defs, schema["items"], v, f"{path}[{i}]", out, struct)


def _overflow(value: Any, struct: str, path: str, width: str) -> str:
    """What Go's JSON decoder says of a number that does not fit the field,
    e.g. ``json: cannot unmarshal number 9223372036854775808 into Go struct
    field DeploymentSpec.spec.replicas of type int32``."""
    number = int(value) if isinstance(value, float) else value
    field = f"{struct}.{path.lstrip('.')}" if struct else path.lstrip(".")
    return f"json: cannot unmarshal number {number} into Go struct field {field} of type {width}"


def _quoted(path: str) -> str:
    """A field path quoted as Go's ``%q`` does: control characters escaped, so
    a client's field name can neither break a message nor a ``Warning`` header."""
    return json.dumps(path.lstrip("."), ensure_ascii=False)


def strict_decoding_error(paths: list[str]) -> str:
    """``strict decoding error: unknown field "spec.foo", unknown field "x"``."""
    return "strict decoding error: " + ", ".join(f"unknown field {_quoted(p)}" for p in paths)


def strict_decoding_message(kind: str, version: str, paths: list[str]) -> str:
    """Message of the 400 BadRequest a real API server returns on create/update
    (POST/PUT) with ``fieldValidation=Strict``, e.g.::

        Deployment in version "v1" cannot be handled as a Deployment:
        strict decoding error: unknown field "spec.foo"

    (For json/merge/strategic PATCH the real server instead answers 422
    Invalid, field ``patch``, with :func:`strict_decoding_error` as detail.)
    """
    return (f'{kind} in version "{version}" cannot be handled as a {kind}: '
            f"{strict_decoding_error(paths)}")


def unknown_field_warnings(paths: list[str]) -> list[str]:
    """Texts for ``Warning: 299 - "<text>"`` headers (fieldValidation=Warn)."""
    return [f"unknown field {_quoted(p)}" for p in paths]


def warning_header(text: str) -> str:
    """RFC 7234 ``Warning`` header value the way the Kubernetes API server
    writes it (``299 - "<text>"``, quotes/backslashes escaped).  Send one
    header per warning."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 - "{escaped}"'
