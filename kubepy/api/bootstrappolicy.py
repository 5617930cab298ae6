"""Kubernetes' default ClusterRoles and ClusterRoleBindings, created at start and reconciled.

Talks to: the API server's ``Storage`` (create, update) at start only.

The data follows upstream's plugin/pkg/auth/authorizer/rbac/bootstrappolicy
(policy.go), kept to the kinds kubepy serves or is about to serve; the
controllers' own roles are ``kubepy.api.controllerpolicy``'s. Every
object carries ``kubernetes.io/bootstrapping: rbac-defaults`` and
``rbac.authorization.kubernetes.io/autoupdate: "true"``; reconciling (as
upstream's ``reconciliation.ReconcileClusterRole`` with Confirm and
without RemoveExtraPermissions) puts back missing rules, labels,
annotations and subjects and keeps anything a person added.  An object
whose autoupdate annotation says "false" is left alone. Aggregated roles
(admin, edit, view) get their aggregationRule back; their rules are the
aggregation controller's. The one exception to "keep what is there":
subjects an older kubepy bound by default and no longer does
(``RETIRED_SUBJECTS``, e.g. system:nodes on the network-policy agent's
role) are taken out, or the rights would outlive the reason for them.

The node add-ons have identities of their own (``kubepy.api.auth``):
``system:kube-proxy`` holds upstream's ``system:node-proxier``; cluster DNS
(``system:kubepy-dns``) upstream's ``system:kube-dns``; the network-policy
agent (``system:kubepy-netpol``) ``kubepy:network-policy-agent``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from kubepy.api import auth, errors
from kubepy.api.controllerpolicy import NAMESPACE, ROLE_PREFIX, controller_roles
from kubepy.kinds import by_plural

log = logging.getLogger(__name__)

GROUP = "rbac.authorization.k8s.io"
AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"
BOOTSTRAPPING = {"kubernetes.io/bootstrapping": "rbac-defaults"}
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"

READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]
READ_WRITE = READ + WRITE


def rule(verbs: list[str] | str, groups: list[str] | str, resources: list[str] | str,
         names: list[str] | None = None) -> dict[str, Any]:
    def words(v: list[str] | str) -> list[str]:
        return v.split() if isinstance(v, str) else list(v)
    r: dict[str, Any] = {"verbs": words(verbs), "apiGroups": [g if g != '""' else "" for g in words(groups)],
                         "resources": words(resources)}
    if names:
        r["resourceNames"] = names
    return r


def urls(verbs: str, *paths: str) -> dict[str, Any]:
    return {"verbs": verbs.split(), "nonResourceURLs": list(paths)}


CORE = '""'
EVENTS = [rule("create update patch", CORE, "events"), rule("create update patch", "events.k8s.io", "events")]

_VIEW = [
    rule(READ, CORE, "pods replicationcontrollers replicationcontrollers/scale serviceaccounts services "
                     "services/status endpoints persistentvolumeclaims persistentvolumeclaims/status configmaps"),
    rule(READ, CORE, "limitranges resourcequotas bindings events pods/status resourcequotas/status "
                     "namespaces/status replicationcontrollers/status pods/log"),
    rule(READ, CORE, "namespaces"),
    rule(READ, "discovery.k8s.io", "endpointslices"),
    rule(READ, "apps", "controllerrevisions statefulsets statefulsets/scale statefulsets/status daemonsets "
                       "daemonsets/status deployments deployments/scale deployments/status replicasets "
                       "replicasets/scale replicasets/status"),
    rule(READ, "autoscaling", "horizontalpodautoscalers horizontalpodautoscalers/status"),
    rule(READ, "batch", "jobs cronjobs cronjobs/status jobs/status"),
    rule(READ, "policy", "poddisruptionbudgets poddisruptionbudgets/status"),
    rule(READ, "networking.k8s.io", "networkpolicies ingresses ingresses/status"),
]
_EDIT = [
    rule(READ, CORE, "pods/attach pods/proxy pods/exec pods/portforward secrets services/proxy"),
    rule("impersonate", CORE, "serviceaccounts"),
    rule(WRITE, CORE, "pods pods/attach pods/proxy pods/exec pods/portforward"),
    rule("create", CORE, "pods/eviction"),
    rule(WRITE, CORE, "replicationcontrollers replicationcontrollers/scale serviceaccounts services "
                      "services/proxy persistentvolumeclaims configmaps secrets events"),
    rule("create", CORE, "serviceaccounts/token"),
    rule(WRITE, "apps", "statefulsets statefulsets/scale daemonsets deployments deployments/scale "
                        "deployments/rollback replicasets replicasets/scale"),
    rule(WRITE, "autoscaling", "horizontalpodautoscalers"),
    rule(WRITE, "batch", "jobs cronjobs"),
    rule(WRITE, "policy", "poddisruptionbudgets"),
    rule(WRITE, "networking.k8s.io", "networkpolicies ingresses"),
    rule(READ_WRITE, "coordination.k8s.io", "leases"),
]
_ADMIN = [
    rule("create", "authorization.k8s.io", "localsubjectaccessreviews"),
    rule(READ_WRITE, GROUP, "roles rolebindings"),
]

NETPOL_AGENT_ROLE = "kubepy:network-policy-agent"
DNS_BINDING = "system:kubepy-dns"
INGRESS_CONTROLLER_ROLE = "kubepy:ingress-controller"
METRICS_SERVER_ROLE = "system:metrics-server"
METRICS_SERVER_USER = "system:metrics-server"   # the CN of metrics-server.kubeconfig's certificate
NODE_RULES_NOTE = "system:node's rules are kubepy.api.nodeauth.NODE_RULES (the node authorizer applies them)"


def _cluster_role(name: str, rules: list[dict[str, Any]], *, labels: dict[str, str] | None = None,
                  aggregate: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": f"{GROUP}/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {**BOOTSTRAPPING, **(labels or {})},
                     "annotations": {AUTOUPDATE: "true"}},
        "rules": rules,
    }
    if aggregate:
        obj["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {AGGREGATE_TO + aggregate: "true"}}]}
    return obj


def _binding(name: str, role: str, subjects: list[tuple[str, str]]) -> dict[str, Any]:
    subs = []
    for kind, who in subjects:
        if kind == "ServiceAccount":
            ns, sa = who.split("/", 1)
            subs.append({"kind": kind, "name": sa, "namespace": ns})
        else:
            subs.append({"kind": kind, "apiGroup": GROUP, "name": who})
    obj: dict[str, Any] = {
        "apiVersion": f"{GROUP}/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": dict(BOOTSTRAPPING), "annotations": {AUTOUPDATE: "true"}},
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
    }
    if subs:
        obj["subjects"] = subs
    return obj


def cluster_roles() -> list[dict[str, Any]]:
    from kubepy.api.nodeauth import NODE_RULES
    return [
        _cluster_role("cluster-admin", [rule("*", "*", "*"), urls("*", "*")]),
        _cluster_role("admin", [], aggregate="admin"),
        _cluster_role("edit", [], labels={AGGREGATE_TO + "admin": "true"}, aggregate="edit"),
        _cluster_role("view", [], labels={AGGREGATE_TO + "edit": "true"}, aggregate="view"),
        _cluster_role("system:aggregate-to-admin", copy.deepcopy(_ADMIN), labels={AGGREGATE_TO + "admin": "true"}),
        _cluster_role("system:aggregate-to-edit", copy.deepcopy(_EDIT), labels={AGGREGATE_TO + "edit": "true"}),
        _cluster_role("system:aggregate-to-view", copy.deepcopy(_VIEW), labels={AGGREGATE_TO + "view": "true"}),
        _cluster_role("system:discovery", [urls("get", "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                                                "/openapi", "/openapi/*", "/readyz", "/version", "/version/")]),
        _cluster_role("system:basic-user", [
            rule("create", "authentication.k8s.io", "selfsubjectreviews"),
            rule("create", "authorization.k8s.io", "selfsubjectaccessreviews selfsubjectrulesreviews")]),
        _cluster_role("system:public-info-viewer", [urls("get", "/healthz", "/livez", "/readyz", "/version",
                                                         "/version/")]),
        _cluster_role("system:monitoring", [urls("get", "/metrics", "/metrics/slis", "/livez", "/readyz",
                                                 "/healthz", "/livez/*", "/readyz/*", "/healthz/*")]),
        _cluster_role("system:auth-delegator", [rule("create", "authentication.k8s.io", "tokenreviews"),
                                                rule("create", "authorization.k8s.io", "subjectaccessreviews")]),
        _cluster_role("system:service-account-issuer-discovery", [urls(
            "get", "/.well-known/openid-configuration", "/.well-known/openid-configuration/", "/openid/v1/jwks",
            "/openid/v1/jwks/")]),
        _cluster_role("system:node", copy.deepcopy(NODE_RULES)),
        _cluster_role("system:node-proxier", [
            rule("list watch", CORE, "services endpoints"),
            rule("get list watch", CORE, "nodes"),
            rule("list watch", "discovery.k8s.io", "endpointslices"),
            *EVENTS]),
        # Upstream's system:node reads no NetworkPolicies; policy agents (kube-router, Calico) get a role of
        # their own. kubepy's agent (kubepy netpol) reads these and its own Node's podCIDR, nothing more.
        _cluster_role(NETPOL_AGENT_ROLE, [rule("list watch", "networking.k8s.io", "networkpolicies"),
                                          rule("list watch", CORE, "pods namespaces"),
                                          rule("get", CORE, "nodes")]),
        # kubepy ingress (its own user, ingress.kubeconfig): what ingress-nginx's ClusterRole grants it, TLS
        # Secrets cluster-wide included (any namespace's Ingress may name one).
        _cluster_role(INGRESS_CONTROLLER_ROLE, [rule("list watch", "networking.k8s.io", "ingresses ingressclasses"),
                                                rule("create", "networking.k8s.io", "ingressclasses"),
                                                rule("update patch", "networking.k8s.io", "ingresses/status"),
                                                rule("list watch", CORE, "services secrets"),
                                                rule("list watch", "discovery.k8s.io", "endpointslices"),
                                                # Gateway API on the same nginx (kubepy.ingress.gateway).
                                                rule("list watch", "gateway.networking.k8s.io",
                                                     "gatewayclasses gateways httproutes referencegrants"),
                                                rule("update patch", "gateway.networking.k8s.io",
                                                     "gatewayclasses/status gateways/status httproutes/status"),
                                                rule("list watch", CORE, "namespaces"),
                                                *EVENTS]),
        _cluster_role("system:kube-dns", [rule("list watch", CORE, "endpoints services"),
                                          rule("list watch", "discovery.k8s.io", "endpointslices")]),
        # As upstream's policy.go; kubepy's scheduler is not leader-elected, so the lease rules are unused.
        _cluster_role("system:kube-scheduler", [
            *EVENTS,
            rule("create", "coordination.k8s.io", "leases"),
            rule("get update", "coordination.k8s.io", "leases", ["kube-scheduler"]),
            rule(READ, CORE, "nodes"),
            rule("delete get list watch", CORE, "pods"),
            rule("create", CORE, "bindings pods/binding"),
            rule("patch update", CORE, "pods/status"),
            rule(READ, CORE, "services replicationcontrollers"),
            rule(READ, "apps", "replicasets statefulsets"),
            rule(READ, "policy", "poddisruptionbudgets"),
            rule(READ, CORE, "persistentvolumeclaims persistentvolumes"),
            rule("create", "authentication.k8s.io", "tokenreviews"),
            rule("create", "authorization.k8s.io", "subjectaccessreviews"),
            rule(READ, "storage.k8s.io", "csinodes"),
            rule(READ, CORE, "namespaces"),
            rule(READ, "storage.k8s.io", "csidrivers csistoragecapacities"),
        ]),
        # What VolumeBinding writes (the selected-node annotation on claims), as upstream.
        _cluster_role("system:volume-scheduler", [
            rule("get list watch update patch", CORE, "persistentvolumes"),
            rule(READ, "storage.k8s.io", "storageclasses"),
            rule("get list watch update patch", CORE, "persistentvolumeclaims"),
        ]),
        _cluster_role("system:kube-controller-manager", [
            *EVENTS,
            rule("create", "coordination.k8s.io", "leases"),
            rule("get update", "coordination.k8s.io", "leases", ["kube-controller-manager"]),
            rule("create", CORE, "secrets serviceaccounts"),
            rule("delete", CORE, "secrets"),
            rule("get", CORE, "configmaps namespaces secrets serviceaccounts"),
            rule("update", CORE, "secrets serviceaccounts"),
            rule("create", "authentication.k8s.io", "tokenreviews"),
            rule("create", "authorization.k8s.io", "subjectaccessreviews"),
            rule("list watch", "*", "*"),
            rule("create", CORE, "serviceaccounts/token"),
        ]),
        # metrics-server's own (upstream's manifests): read the kubelets' resource metrics, pods and nodes.
        _cluster_role(METRICS_SERVER_ROLE, [
            rule("get", CORE, "nodes/metrics"),
            rule(READ, CORE, "pods nodes"),
        ]),
        # Who may read metrics.k8s.io: everyone with view, edit or admin.
        _cluster_role("system:aggregated-metrics-reader", [rule(READ, "metrics.k8s.io", "pods nodes")],
                      labels={AGGREGATE_TO + "view": "true", AGGREGATE_TO + "edit": "true",
                              AGGREGATE_TO + "admin": "true"}),
        # Full access to the kubelet API: what the API server's kubelet client is bound to.
        _cluster_role("system:kubelet-api-admin", [
            rule(READ, CORE, "nodes"),
            rule("proxy", CORE, "nodes"),
            rule("*", CORE, "nodes/proxy nodes/metrics nodes/stats nodes/log"),
        ]),
        *(_cluster_role(name, rules) for name, rules in controller_roles()),
    ]


def cluster_role_bindings() -> list[dict[str, Any]]:
    return [
        _binding("cluster-admin", "cluster-admin", [("Group", "system:masters")]),
        _binding("system:discovery", "system:discovery", [("Group", "system:authenticated")]),
        _binding("system:basic-user", "system:basic-user", [("Group", "system:authenticated")]),
        _binding("system:public-info-viewer", "system:public-info-viewer",
                 [("Group", "system:authenticated"), ("Group", "system:unauthenticated")]),
        _binding("system:monitoring", "system:monitoring", [("Group", "system:monitoring")]),
        # Upstream binds only system:serviceaccounts; kubepy serves OIDC discovery to anyone (so other
        # systems can verify its tokens), as kubeadm's docs suggest with an extra binding.
        _binding("system:service-account-issuer-discovery", "system:service-account-issuer-discovery",
                 [("Group", "system:serviceaccounts"), ("Group", "system:authenticated"),
                  ("Group", "system:unauthenticated")]),
        _binding("system:node", "system:node", []),
        _binding("system:node-proxier", "system:node-proxier", [("User", auth.KUBE_PROXY_USER)]),
        _binding(NETPOL_AGENT_ROLE, NETPOL_AGENT_ROLE, [("User", auth.NETPOL_USER)]),
        _binding(INGRESS_CONTROLLER_ROLE, INGRESS_CONTROLLER_ROLE, [("User", auth.INGRESS_CONTROLLER_USER)]),
        _binding("system:kube-dns", "system:kube-dns", [("ServiceAccount", "kube-system/kube-dns")]),
        # kubepy's cluster DNS is a host daemon on a client certificate, not a pod, so it is a user of its own
        # rather than upstream's kube-dns (or CoreDNS's coredns) ServiceAccount; it holds upstream's
        # system:kube-dns role, which reads what it serves (Services, Endpoints/EndpointSlices) and no more.
        _binding(DNS_BINDING, "system:kube-dns", [("User", auth.DNS_USER)]),
        _binding("system:kube-scheduler", "system:kube-scheduler", [("User", "system:kube-scheduler")]),
        _binding("system:volume-scheduler", "system:volume-scheduler", [("User", "system:kube-scheduler")]),
        _binding("system:kube-controller-manager", "system:kube-controller-manager",
                 [("User", "system:kube-controller-manager")]),
        # kubeadm puts its apiserver-kubelet-client in system:masters; kubepy binds the user to this role only.
        _binding("system:kube-apiserver-kubelet-client", "system:kubelet-api-admin",
                 [("User", "kube-apiserver-kubelet-client")]),
        *(_binding(name, name, [("ServiceAccount", f"{NAMESPACE}/{name[len(ROLE_PREFIX):]}")])
          for name, _ in controller_roles()),
        _binding(METRICS_SERVER_ROLE, METRICS_SERVER_ROLE, [("User", METRICS_SERVER_USER)]),
        # Delegated authentication and authorization of the requests the API server proxies to it.
        _binding("metrics-server:system:auth-delegator", "system:auth-delegator", [("User", METRICS_SERVER_USER)]),
    ]


def namespace_roles() -> list[dict[str, Any]]:
    """Upstream's bootstrap Roles in kube-system (the one extension API servers read their trust from)."""
    return [{"apiVersion": f"{GROUP}/v1", "kind": "Role",
             "metadata": {"name": "extension-apiserver-authentication-reader", "namespace": "kube-system",
                          "labels": dict(BOOTSTRAPPING), "annotations": {AUTOUPDATE: "true"}},
             "rules": [rule(READ, CORE, "configmaps", ["extension-apiserver-authentication"])]}]


def namespace_role_bindings() -> list[dict[str, Any]]:
    return [{"apiVersion": f"{GROUP}/v1", "kind": "RoleBinding",
             "metadata": {"name": "metrics-server-auth-reader", "namespace": "kube-system",
                          "labels": dict(BOOTSTRAPPING), "annotations": {AUTOUPDATE: "true"}},
             "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "extension-apiserver-authentication-reader"},
             "subjects": [{"kind": "User", "apiGroup": GROUP, "name": METRICS_SERVER_USER}]}]


# -- reconciling ------------------------------------------------------------------------------

def _merge_meta(have: dict[str, Any], want: dict[str, Any]) -> None:
    hm, wm = have.setdefault("metadata", {}), want["metadata"]
    for key in ("labels", "annotations"):
        merged = {**(hm.get(key) or {}), **wm.get(key, {})}
        if key == "annotations" and (hm.get(key) or {}).get(AUTOUPDATE):
            merged[AUTOUPDATE] = hm[key][AUTOUPDATE]
        hm[key] = merged


def reconcile_role(have: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """What ``have`` must become: missing rules (or the aggregation rule), labels and annotations added."""
    out = copy.deepcopy(have)
    _merge_meta(out, want)
    if want.get("aggregationRule"):
        selectors = list((out.get("aggregationRule") or {}).get("clusterRoleSelectors") or [])
        for sel in want["aggregationRule"]["clusterRoleSelectors"]:
            if sel not in selectors:
                selectors.append(sel)
        out["aggregationRule"] = {"clusterRoleSelectors": selectors}
        return out
    from kubepy.api.rbac import uncovered
    rules = list(out.get("rules") or [])
    for r in want.get("rules") or []:
        if uncovered(rules, [r]):
            rules.append(r)
    out["rules"] = rules
    return out


# Subjects earlier kubepy versions bound by default, by binding: reconciling takes them out.
RETIRED_SUBJECTS: dict[str, set[tuple[str, str]]] = {
    # The network-policy agent ran on the kubelet's credentials until it had a user of its own.
    NETPOL_AGENT_ROLE: {("Group", auth.NODES)},
}


def reconcile_binding(have: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """What ``have`` must become: missing subjects, labels and annotations added, retired subjects gone."""
    out = copy.deepcopy(have)
    _merge_meta(out, want)
    retired = RETIRED_SUBJECTS.get(want["metadata"]["name"], set())
    subjects = [s for s in out.get("subjects") or [] if (s.get("kind"), s.get("name")) not in retired]
    for s in want.get("subjects") or []:
        if s not in subjects:
            subjects.append(s)
    if subjects:
        out["subjects"] = subjects
    else:
        out.pop("subjects", None)
    return out


async def ensure(storage: Any) -> None:
    """Create what is missing, reconcile what changed (unless autoupdate is "false")."""
    for plural, wanted, fix in (("clusterroles", cluster_roles(), reconcile_role),
                                ("clusterrolebindings", cluster_role_bindings(), reconcile_binding),
                                ("roles", namespace_roles(), reconcile_role),
                                ("rolebindings", namespace_role_bindings(), reconcile_binding)):
        kind = by_plural(plural)
        for want in wanted:
            name = want["metadata"]["name"]
            ns = want["metadata"].get("namespace")
            try:
                have = await storage.get(kind, ns, name)
            except errors.NotFound:
                try:
                    await storage.create(kind, ns, copy.deepcopy(want))
                    log.info("created %s=%s reason=RBACDefaults", kind.singular, name)
                except errors.AlreadyExists:
                    pass
                continue
            if ((have.get("metadata") or {}).get("annotations") or {}).get(AUTOUPDATE) == "false":
                continue
            if plural in ("clusterrolebindings", "rolebindings") and have.get("roleRef") != want["roleRef"]:
                await storage.delete(kind, ns, name, _delete_now())
                await storage.create(kind, ns, copy.deepcopy(want))
                log.info("recreated %s=%s reason=RoleRefChanged", kind.singular, name)
                continue
            fixed = fix(have, want)
            if fixed != have:
                await storage.update(kind, ns, name, lambda _old, f=fixed: copy.deepcopy(f))
                log.info("reconciled %s=%s reason=RBACDefaults", kind.singular, name)


def _delete_now() -> Any:
    from kubepy.api.storage import DeleteOptions
    return DeleteOptions(grace_period=0)
