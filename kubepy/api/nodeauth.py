"""The node authorizer and NodeRestriction admission: what a kubelet may read and write.

Talks to: nothing but the API server's pod watch cache (through
``rbac.follow``).  A ``system:node:NAME`` user in ``system:nodes``:

- reads a Secret, ConfigMap or ServiceAccount (and requests a
  ServiceAccount token) only when a pod bound to its node references it
  (claims and volumes it may read, for kubepy's local-path storage): ``NodeGraph`` keeps, per node, what its pods use, from the
  pods' watch (upstream's graph, plugin/pkg/auth/authorizer/node); list and
  watch of those kinds are refused unless they name one object
  (``fieldSelector=metadata.name=X``), as upstream;
- writes its own Lease in kube-node-lease only;
- everything else it may do is ``NODE_RULES`` (upstream's system:node rules,
  bootstrappolicy.NodeRules, restricted to what kubepy serves, plus what
  kubepy's local-path storage needs). kube-proxy, cluster DNS and the
  network-policy agent run on identities of their own, not the node's.

``admit`` is NodeRestriction (plugin/pkg/admission/noderestriction): a node
modifies only its own Node (not its taints, not labels in the
``node-restriction.kubernetes.io/`` space or other kubernetes.io labels a
kubelet does not own), updates status of, evicts and deletes only pods bound
to it, creates no pods (kubepy has no mirror pods), and writes only its own
Lease.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from kubepy.api import errors
from kubepy.api.authz import ALLOWED, NO_OPINION, Attributes, Decision
from kubepy.api.rbac import rules_allow
from kubepy.meta.volumes import ANN_LOCAL_PATH_NODE, CAPACITY_NAMESPACE, capacity_name

NODES_GROUP = "system:nodes"
NODE_PREFIX = "system:node:"
LEASE_NAMESPACE = "kube-node-lease"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


def node_name_of(user: Any) -> str | None:
    if NODES_GROUP in (getattr(user, "groups", ()) or ()) and user.name.startswith(NODE_PREFIX):
        return user.name[len(NODE_PREFIX):]
    return None


def _rule(verbs: str, groups: str, resources: str) -> dict[str, Any]:
    return {"verbs": verbs.split(), "apiGroups": [g if g != '""' else "" for g in groups.split()],
            "resources": resources.split()}


READ = "get list watch"
NODE_RULES = [
    _rule("create", "authentication.k8s.io", "tokenreviews"),
    _rule("create", "authorization.k8s.io", "subjectaccessreviews localsubjectaccessreviews"),
    _rule(READ, '""', "services"),  # the Service environment variables
    _rule("get", '""', "endpoints"),
    _rule("create get list watch update patch", '""', "nodes"),
    _rule("update patch", '""', "nodes/status"),
    _rule("create update patch", '""', "events"),
    _rule("create update patch", "events.k8s.io", "events"),
    _rule(READ, '""', "pods"),
    _rule("create delete", '""', "pods"),
    _rule("update patch", '""', "pods/status"),
    _rule("create", '""', "pods/eviction"),
    _rule("create get list watch", "certificates.k8s.io", "certificatesigningrequests"),
    # kubepy's local-path storage (kubepy.kubelet.localvolumes) watches claims and volumes, publishes its
    # capacity and deletes the volumes it provisioned (admit() holds it to its own).
    _rule(READ, '""', "persistentvolumeclaims persistentvolumes"),
    _rule("delete", '""', "persistentvolumes"),
    _rule("get create update patch", "storage.k8s.io", "csistoragecapacities"),
]

# What pods reference, by resource: (resource, namespace, name).
_GRAPHED = {"secrets", "configmaps", "serviceaccounts"}


def pod_references(pod: dict[str, Any]) -> set[tuple[str, str, str]]:
    ns = (pod.get("metadata") or {}).get("namespace", "")
    spec = pod.get("spec") or {}
    out: set[tuple[str, str, str]] = set()

    def add(resource: str, name: Any) -> None:
        if isinstance(name, str) and name:
            out.add((resource, ns, name))

    add("serviceaccounts", spec.get("serviceAccountName") or "default")
    for s in spec.get("imagePullSecrets") or []:
        add("secrets", (s or {}).get("name"))
    for v in spec.get("volumes") or []:
        v = v or {}
        add("secrets", (v.get("secret") or {}).get("secretName"))
        add("configmaps", (v.get("configMap") or {}).get("name"))
        add("persistentvolumeclaims", (v.get("persistentVolumeClaim") or {}).get("claimName"))
        for src in (v.get("projected") or {}).get("sources") or []:
            add("secrets", ((src or {}).get("secret") or {}).get("name"))
            add("configmaps", ((src or {}).get("configMap") or {}).get("name"))
        for key in ("cephfs", "rbd", "iscsi", "flexVolume", "azureFile", "scaleIO", "storageos", "csi"):
            ref = (v.get(key) or {}).get("secretRef") or (v.get(key) or {}).get("nodePublishSecretRef") or {}
            add("secrets", ref.get("name"))
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or []),
                  *(spec.get("ephemeralContainers") or [])]
    for c in containers:
        for src in (c or {}).get("envFrom") or []:
            add("configmaps", ((src or {}).get("configMapRef") or {}).get("name"))
            add("secrets", ((src or {}).get("secretRef") or {}).get("name"))
        for e in (c or {}).get("env") or []:
            vf = (e or {}).get("valueFrom") or {}
            add("configmaps", (vf.get("configMapKeyRef") or {}).get("name"))
            add("secrets", (vf.get("secretKeyRef") or {}).get("name"))
    return out


class NodeGraph:
    """Per node, how many of its pods reference each object; kept from the pods' watch."""

    def __init__(self) -> None:
        self._pods: dict[tuple[str, str], tuple[str, set[tuple[str, str, str]]]] = {}
        self._refs: dict[str, dict[tuple[str, str, str], int]] = defaultdict(lambda: defaultdict(int))

    def reset(self) -> None:
        self._pods.clear()
        self._refs.clear()

    def apply(self, pod: dict[str, Any], deleted: bool) -> None:
        m = pod.get("metadata") or {}
        key = (m.get("namespace", ""), m.get("name", ""))
        old = self._pods.pop(key, None)
        if old is not None:
            node, refs = old
            counts = self._refs[node]
            for r in refs:
                counts[r] -= 1
                if counts[r] <= 0:
                    del counts[r]
        node = (pod.get("spec") or {}).get("nodeName")
        if deleted or not node:
            return
        refs = pod_references(pod)
        self._pods[key] = (node, refs)
        for r in refs:
            self._refs[node][r] += 1

    def has(self, node: str, resource: str, namespace: str, name: str) -> bool:
        return self._refs.get(node, {}).get((resource, namespace, name), 0) > 0

    def pod_on(self, node: str, namespace: str, name: str) -> bool:
        entry = self._pods.get((namespace, name))
        return entry is not None and entry[0] == node


class NodeAuthorizer:
    def __init__(self, graph: NodeGraph) -> None:
        self.graph = graph

    def authorize(self, attrs: Attributes) -> Decision:
        node = node_name_of(attrs.user)
        if node is None or not attrs.is_resource:
            return Decision(NO_OPINION)
        res, verb = attrs.resource, attrs.verb
        if attrs.api_group == "" and res in _GRAPHED:
            if res == "serviceaccounts" and attrs.subresource == "token":
                if verb != "create":
                    return Decision(NO_OPINION, "can only create tokens for individual service accounts")
            elif attrs.subresource:
                return Decision(NO_OPINION, "cannot get subresource")
            elif verb not in ("get", "list", "watch") or (res != "secrets" and res != "configmaps"
                                                           and verb != "get"):
                return Decision(NO_OPINION, "can only get individual resources of this type")
            if not attrs.name:
                return Decision(NO_OPINION, "No Object name found, expected name to be set")
            if self.graph.has(node, res, attrs.namespace, attrs.name):
                return ALLOWED
            return Decision(NO_OPINION, f"no relationship found between node '{node}' and this object")
        if attrs.api_group == "coordination.k8s.io" and res == "leases":
            if verb not in ("get", "create", "update", "patch", "delete"):
                return Decision(NO_OPINION, "can only get, create, update, patch, or delete a node lease")
            if attrs.namespace != LEASE_NAMESPACE:
                return Decision(NO_OPINION, f"can only access leases in the {LEASE_NAMESPACE} system namespace")
            if verb != "create" and attrs.name != node:
                return Decision(NO_OPINION, "can only access node lease with the same name as the requesting node")
            return ALLOWED
        if rules_allow(attrs, NODE_RULES):
            return ALLOWED
        return Decision(NO_OPINION)


# -- NodeRestriction admission ---------------------------------------------------------------

_KUBELET_LABELS = {
    "kubernetes.io/hostname", "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type",
    "kubernetes.io/os", "kubernetes.io/arch", "beta.kubernetes.io/os", "beta.kubernetes.io/arch",
}
_KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")
NODE_RESTRICTION_NAMESPACE = "node-restriction.kubernetes.io"


def _label_namespace(label: str) -> str:
    return label.split("/", 1)[0] if "/" in label else ""


def _is_kubernetes_label(label: str) -> bool:
    ns = _label_namespace(label)
    return ns in ("kubernetes.io", "k8s.io") or ns.endswith(".kubernetes.io") or ns.endswith(".k8s.io")


def _is_kubelet_label(label: str) -> bool:
    if label in _KUBELET_LABELS:
        return True
    ns = _label_namespace(label)
    return any(ns == n or ns.endswith("." + n) for n in _KUBELET_LABEL_NAMESPACES)


def forbidden_labels(new: dict[str, str] | None, old: dict[str, str] | None) -> list[str]:
    """getForbiddenLabels over the labels added, changed or removed."""
    new, old = new or {}, old or {}
    modified = {k for k in set(new) | set(old) if new.get(k) != old.get(k) or (k in new) != (k in old)}
    out = set()
    for label in modified:
        ns = _label_namespace(label)
        if ns == NODE_RESTRICTION_NAMESPACE or ns.endswith("." + NODE_RESTRICTION_NAMESPACE):
            out.add(label)
        if _is_kubernetes_label(label) and not _is_kubelet_label(label):
            out.add(label)
    return sorted(out)


def _refuse(attrs: Attributes, message: str) -> errors.Forbidden:
    """admission.NewForbidden: ``<resource> "<name>" is forbidden: <message>``."""
    what = f'{attrs.qualified_resource} "{attrs.name}"' if attrs.name else attrs.qualified_resource
    return errors.Forbidden(f"{what} is forbidden: {message}",
                            details={"name": attrs.name, "group": attrs.api_group, "kind": attrs.resource})


def admit(attrs: Attributes, *, old: dict[str, Any] | None, new: dict[str, Any] | None,
          graph: NodeGraph | None = None) -> None:
    """NodeRestriction: raises Forbidden; a no-op for users that are not nodes."""
    node = node_name_of(attrs.user)
    if node is None:
        return
    res, verb, sub = attrs.resource, attrs.verb, attrs.subresource
    if attrs.api_group == "" and res == "serviceaccounts" and sub == "token":
        ref = ((new or {}).get("spec") or {}).get("boundObjectRef")
        if not isinstance(ref, dict) or not ref:
            raise _refuse(attrs, "node requested token not bound to a pod")
        if ref.get("kind") != "Pod":
            raise _refuse(attrs, f"node requested token bound to a {ref.get('kind')}")
        if graph is not None and not graph.pod_on(node, attrs.namespace, str(ref.get("name") or "")):
            raise _refuse(attrs, "node requested token bound to a pod scheduled on a different node")
        return
    if attrs.api_group == "" and res == "pods":
        if verb == "create" and not sub:
            annotations = ((new or {}).get("metadata") or {}).get("annotations") or {}
            if MIRROR_ANNOTATION not in annotations:
                raise _refuse(attrs, f'pod does not have "{MIRROR_ANNOTATION}" annotation, '
                                     f'node "{node}" can only create mirror pods')
            raise _refuse(attrs, f'node "{node}" can not create pods: kubepy serves no mirror pods')
        bound = ((old or {}).get("spec") or {}).get("nodeName")
        if verb == "delete" and not sub and bound != node:
            raise _refuse(attrs, f'node "{node}" can only delete pods with spec.nodeName set to itself')
        if sub == "status" and verb in ("update", "patch") and bound != node:
            raise _refuse(attrs, f'node "{node}" can only update pod status for pods with spec.nodeName set '
                                 'to itself')
        if sub == "eviction" and bound != node:
            raise _refuse(attrs, f'node "{node}" can only evict pods with spec.nodeName set to itself')
        return
    if attrs.api_group == "" and res == "nodes" and verb in ("create", "update", "patch"):
        name = attrs.name or ((new or {}).get("metadata") or {}).get("name", "")
        if name != node:
            raise _refuse(attrs, f'node "{node}" is not allowed to modify node "{name}"')
        labels = ((new or {}).get("metadata") or {}).get("labels")
        if old is None:
            bad = forbidden_labels(labels, None)
            if bad:
                raise _refuse(attrs, f'node "{node}" is not allowed to set the following labels: {", ".join(bad)}')
            return
        if new is None:
            return
        if ((new.get("spec") or {}).get("taints") or []) != ((old.get("spec") or {}).get("taints") or []):
            raise _refuse(attrs, f'node "{node}" is not allowed to modify taints')
        bad = forbidden_labels(labels, (old.get("metadata") or {}).get("labels"))
        if bad:
            raise _refuse(attrs, f'is not allowed to modify labels: {", ".join(bad)}')
        return
    if attrs.api_group == "" and res == "persistentvolumes" and verb == "delete":
        if (((old or {}).get("metadata") or {}).get("annotations") or {}).get(ANN_LOCAL_PATH_NODE) != node:
            raise _refuse(attrs, f'node "{node}" may only delete the PersistentVolumes it provisioned')
        return
    if attrs.api_group == "storage.k8s.io" and res == "csistoragecapacities" and verb in ("create", "update", "patch"):
        name = attrs.name or ((new or {}).get("metadata") or {}).get("name", "")
        if attrs.namespace != CAPACITY_NAMESPACE or name != capacity_name(node):
            raise _refuse(attrs, f'node "{node}" may only write its own CSIStorageCapacity')
        return
    if attrs.api_group == "coordination.k8s.io" and res == "leases":
        name = attrs.name or ((new or {}).get("metadata") or {}).get("name", "")
        if attrs.namespace != LEASE_NAMESPACE or name != node:
            raise _refuse(attrs, "can only access node lease with the same name as the requesting node")
