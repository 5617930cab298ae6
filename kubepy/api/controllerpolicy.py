"""The controllers' own ClusterRoles: ``system:controller:<service account>``, each bound to
the ServiceAccount ``kube-system/<service account>`` the controller manager runs that
controller as (``--use-service-account-credentials``).

Talks to nothing: data for ``kubepy.api.bootstrappolicy``.

Learnt from upstream's plugin/pkg/auth/authorizer/rbac/bootstrappolicy/controller_policy.go
(same role and service-account names), but each role holds exactly what kubepy's
controller code does: its informers' list/watch, the reads and writes it makes (a status
written by PATCH needs ``patch`` on ``<kind>/status``) and events where it records them.
Where kubepy's controller does less than upstream's (no ``*/finalizers``: kubepy does not
enforce OwnerReferencesPermissionEnforcement; no ``endpoints/restricted``) the right is
left out; where it does more (the Job controller deletes finished Jobs itself, upstream's
ttl-after-finished controller) the right is added. ``tests/api/test_controller_identities.py``
runs the controllers on these roles.
"""

from __future__ import annotations

from typing import Any

ROLE_PREFIX = "system:controller:"
NAMESPACE = "kube-system"


def _rule(verbs: str, groups: str, resources: str) -> dict[str, Any]:
    return {"verbs": verbs.split(), "apiGroups": ["" if g == '""' else g for g in groups.split()],
            "resources": resources.split()}


C = '""'
EVENTS = _rule("create update patch", f"{C} events.k8s.io", "events")

# service account -> rules (the controller names of kubepy.controllers.manager map onto these).
CONTROLLER_RULES: dict[str, list[dict[str, Any]]] = {
    "replicaset-controller": [
        _rule("get list watch", "apps", "replicasets"),
        _rule("patch update", "apps", "replicasets/status"),
        _rule("list watch create delete patch", C, "pods"),
        EVENTS],
    "replication-controller": [
        _rule("get list watch", C, "replicationcontrollers"),
        _rule("patch update", C, "replicationcontrollers/status"),
        _rule("list watch create delete patch", C, "pods"),
        EVENTS],
    "deployment-controller": [
        _rule("get list watch patch", "apps", "deployments"),
        _rule("update", "apps", "deployments/status"),
        _rule("get list watch create patch delete", "apps", "replicasets"),
        _rule("list watch", C, "pods"),
        EVENTS],
    "daemon-set-controller": [
        _rule("get list watch", "apps", "daemonsets"),
        _rule("patch update", "apps", "daemonsets/status"),
        _rule("list watch", C, "nodes"),
        _rule("list watch create delete patch", C, "pods"),
        _rule("get list watch create delete patch", "apps", "controllerrevisions"),
        EVENTS],
    "statefulset-controller": [
        _rule("get list watch", "apps", "statefulsets"),
        _rule("patch update", "apps", "statefulsets/status"),
        _rule("list watch create delete patch", C, "pods"),
        _rule("get list watch create delete patch", "apps", "controllerrevisions"),
        _rule("get create patch", C, "persistentvolumeclaims"),
        EVENTS],
    "job-controller": [
        _rule("get list watch delete", "batch", "jobs"),
        _rule("update", "batch", "jobs/status"),
        _rule("get list watch create delete patch", C, "pods"),
        EVENTS],
    "cronjob-controller": [
        _rule("list watch", "batch", "cronjobs"),
        _rule("update", "batch", "cronjobs/status"),
        _rule("list watch create delete", "batch", "jobs"),
        EVENTS],
    "disruption-controller": [
        _rule("list watch", "apps", "deployments replicasets statefulsets"),
        _rule("list watch", C, "replicationcontrollers pods"),
        _rule("list watch", "policy", "poddisruptionbudgets"),
        _rule("update", "policy", "poddisruptionbudgets/status"),
        _rule("get", "*", "*/scale"),
        EVENTS],
    "horizontal-pod-autoscaler": [
        _rule("get list watch", "autoscaling", "horizontalpodautoscalers"),  # get: a status write that met a 409
        _rule("update", "autoscaling", "horizontalpodautoscalers/status"),
        _rule("get update", "*", "*/scale"),
        _rule("list watch", C, "pods"),
        _rule("list", "metrics.k8s.io", "pods"),  # PodMetrics, through API aggregation
        EVENTS],
    "endpoint-controller": [
        _rule("list watch", C, "services pods"),
        _rule("get list watch create update delete", C, "endpoints")],
    "endpointslice-controller": [
        _rule("list watch", C, "services pods nodes"),
        _rule("get list watch create update delete", "discovery.k8s.io", "endpointslices"),
        EVENTS],
    "endpointslicemirroring-controller": [
        _rule("list watch", C, "services endpoints"),
        _rule("get list watch create update delete", "discovery.k8s.io", "endpointslices"),
        EVENTS],
    "service-lb-controller": [
        # one Lease per address in kube-system is how addresses are held race-free
        _rule("list watch", C, "services"),
        _rule("update", C, "services/status"),
        _rule("get list watch create delete", "coordination.k8s.io", "leases"),
        EVENTS],
    "node-controller": [  # nodelifecycle and nodeipam, as upstream
        _rule("list watch update patch", C, "nodes"),
        _rule("update", C, "nodes/status"),
        _rule("list watch delete", C, "pods"),
        _rule("update", C, "pods/status"),
        _rule("list watch", "coordination.k8s.io", "leases"),
        EVENTS],
    "generic-garbage-collector": [_rule("get list watch patch update delete", "*", "*")],
    "namespace-controller": [
        _rule("get list watch", C, "namespaces"),
        _rule("update", C, "namespaces/finalize"),
        _rule("get list watch delete", "*", "*")],
    "service-account-controller": [
        _rule("list watch", C, "namespaces serviceaccounts"),
        _rule("create", C, "serviceaccounts")],
    "pod-garbage-collector": [
        _rule("list watch delete", C, "pods"),
        _rule("get list watch", C, "nodes")],
    "resourcequota-controller": [
        _rule("list watch", "*", "*"),
        _rule("update", C, "resourcequotas/status")],
    "root-ca-cert-publisher": [
        _rule("list watch", C, "namespaces"),
        _rule("list watch create update", C, "configmaps")],
    "persistent-volume-binder": [
        _rule("list watch create update", C, "persistentvolumes"),
        _rule("update", C, "persistentvolumes/status"),
        _rule("list watch update patch", C, "persistentvolumeclaims"),
        _rule("update", C, "persistentvolumeclaims/status"),
        _rule("list watch", "storage.k8s.io", "storageclasses csistoragecapacities"),
        _rule("list watch", C, "nodes"),
        EVENTS],
    "pvc-protection-controller": [
        _rule("list watch patch", C, "persistentvolumeclaims"),
        _rule("list watch", C, "pods")],
    "pv-protection-controller": [_rule("list watch patch", C, "persistentvolumes")],
    "clusterrole-aggregation-controller": [
        # it writes rules it does not hold itself: escalate, as upstream
        _rule("escalate get list watch update patch", "rbac.authorization.k8s.io", "clusterroles")],
}


def controller_roles() -> list[tuple[str, list[dict[str, Any]]]]:
    """(role name, rules) of every controller role."""
    return [(ROLE_PREFIX + sa, [dict(r) for r in rules]) for sa, rules in CONTROLLER_RULES.items()]
