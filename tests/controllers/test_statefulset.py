"""StatefulSet controller against the FakeAPI: ordered and parallel pod management,
stable identities, at most one pod per identity, rolling updates (partition,
maxUnavailable), OnDelete, revisions and rollback, status, events, and the claim
path (refused while PersistentVolumeClaims are not served; with a minimal PVC kind
registered for the test: one claim per pod per template, retention by owner references)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from kubepy import kinds
from kubepy.controllers import history
from kubepy.controllers.context import ControllerConfig, ControllerContext, InformerFactory
from kubepy.controllers.statefulset import (
    ClaimsNotServed,
    StatefulSetController,
    claim_owner_references,
    parse_ordinal,
)
from kubepy.kinds.validation import default_object
from kubepy.testing.fakeapi import FakeAPI
from tests.controllers.test_replicaset import FakeRecorder

NS = "default"


def statefulset(name: str = "web", replicas: int = 3, *, image: str = "busybox:1.36", **spec: Any) -> dict:
    obj = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": NS},
           "spec": {"replicas": replicas, "serviceName": "nginx", "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "c", "image": image}]}}, **spec}}
    default_object("statefulsets", obj)
    return obj


class Cluster:
    """The FakeAPI, the controller, and the kubelet's part played by the test."""

    def __init__(self) -> None:
        self.api = FakeAPI()
        self.recorder = FakeRecorder()
        ctx = ControllerContext(client=self.api, informers=InformerFactory(self.api),  # type: ignore[arg-type]
                                recorder=self.recorder, config=ControllerConfig())
        self.ctrl = StatefulSetController(ctx)

    def refresh(self) -> None:
        """The informers catch up with the API (pod changes reach the controller's handlers)."""
        for resource, inf in (("statefulsets", self.ctrl.sts_informer),
                              ("controllerrevisions", self.ctrl.revision_informer)):
            inf.cache.replace(self.api.objects(resource))
        cache = self.ctrl.pod_informer.cache
        now = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in self.api.objects("pods")}
        for key in [k for k in cache.keys() if k not in now]:
            self.ctrl._on_pod_delete(cache.delete(key))
        for key, pod in now.items():
            old = cache.set(pod)
            if old is None:
                self.ctrl._on_pod_add(pod)
            elif old["metadata"]["uid"] != pod["metadata"]["uid"]:
                self.ctrl._on_pod_delete(old)
                self.ctrl._on_pod_add(pod)
            else:
                self.ctrl._on_pod_update(old, pod)

    async def sync(self, name: str = "web") -> None:
        self.refresh()
        await self.ctrl.reconcile(f"{NS}/{name}")

    def pods(self) -> list[str]:
        return [p["metadata"]["name"] for p in self.api.objects("pods", NS)]

    def pod(self, name: str) -> dict:
        return next(p for p in self.api.objects("pods", NS) if p["metadata"]["name"] == name)

    def sts(self, name: str = "web") -> dict:
        return next(s for s in self.api.objects("statefulsets", NS) if s["metadata"]["name"] == name)

    async def run(self, *names: str, ready: bool = True, phase: str = "Running", node: str = "n1") -> None:
        """The kubelet: bind and start these pods (Ready or not)."""
        for name in names:
            await self.api.patch("pods", name, {"spec": {"nodeName": node}}, namespace=NS)
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            await self.api.patch("pods", name, {"status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now}]}},
                namespace=NS, subresource="status")

    async def sync_until_stable(self, name: str = "web", *, start_pods: bool = True, rounds: int = 20) -> None:
        """Sync and run new pods until nothing changes."""
        for _ in range(rounds):
            before = [(p["metadata"]["name"], p["metadata"]["uid"]) for p in self.api.objects("pods", NS)]
            await self.sync(name)
            for p in self.api.objects("pods", NS):
                if p["metadata"].get("deletionTimestamp"):
                    await self.gone(p["metadata"]["name"])
            if start_pods:
                for p in self.api.objects("pods", NS):
                    if (p.get("status") or {}).get("phase") in (None, "", "Pending"):
                        await self.run(p["metadata"]["name"])
            after = [(p["metadata"]["name"], p["metadata"]["uid"]) for p in self.api.objects("pods", NS)]
            if before == after and self.ctrl.expectations.satisfied(f"{NS}/{name}"):
                await self.sync(name)
                return
        raise AssertionError(f"no steady state: {self.pods()}")

    def events(self, reason: str | None = None) -> list[str]:
        return [m for _, r, m in self.recorder.events if reason in (None, r)]

    async def set_spec(self, name: str = "web", **spec: Any) -> None:
        await self.api.patch("statefulsets", name, {"spec": spec}, namespace=NS)

    async def gone(self, name: str) -> None:
        """The kubelet confirms a terminating pod is gone."""
        await self.api.delete("pods", name, namespace=NS, grace_period_seconds=0)


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


# -- pure ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name, want", [("web-0", ("web", 0)), ("my-db-12", ("my-db", 12)), ("web", ("", -1)),
                                        ("web-x", ("", -1))])
def test_parse_ordinal(name, want):
    assert parse_ordinal(name) == want


@pytest.mark.parametrize("policy, ordinal, want", [
    (("Retain", "Retain"), 0, []),
    (("Delete", "Retain"), 0, ["StatefulSet"]),
    (("Retain", "Delete"), 0, []),            # in range: nothing until scaled away
    (("Retain", "Delete"), 5, ["Pod"]),       # scaled away: the pod takes it with it
    (("Delete", "Delete"), 0, ["StatefulSet"]),
    (("Delete", "Delete"), 5, ["Pod"]),
    (("Delete", "Retain"), 5, []),
])
def test_claim_owner_references_follow_the_retention_policy(policy, ordinal, want):
    sts = statefulset(replicas=2, persistentVolumeClaimRetentionPolicy={"whenDeleted": policy[0],
                                                                        "whenScaled": policy[1]})
    sts["metadata"]["uid"] = "uid-web"
    pod = {"metadata": {"name": f"web-{ordinal}", "uid": "uid-pod"}}
    claim = {"metadata": {"name": f"data-web-{ordinal}", "ownerReferences": [
        {"apiVersion": "v1", "kind": "Pod", "name": "web-0", "uid": "uid-pod", "controller": True},
        {"apiVersion": "example/v1", "kind": "Backup", "name": "b", "uid": "uid-b"}]}}
    refs = claim_owner_references(claim, sts, pod, ordinal)
    assert [r["kind"] for r in refs] == ["Backup", *want]


def test_a_claim_controlled_by_someone_else_is_left_to_them():
    sts = statefulset(persistentVolumeClaimRetentionPolicy={"whenDeleted": "Delete", "whenScaled": "Delete"})
    sts["metadata"]["uid"] = "uid-web"
    claim = {"metadata": {"ownerReferences": [{"kind": "Other", "uid": "x", "controller": True},
                                              {"kind": "StatefulSet", "uid": "uid-web", "controller": False}]}}
    assert [r["kind"] for r in claim_owner_references(claim, sts, None, 0)] == ["Other"]


# -- ordered and parallel -----------------------------------------------------------------------
async def test_ordered_ready_creates_in_order_each_waiting_for_its_predecessor(cluster: Cluster):
    cluster.api.seed("statefulsets", statefulset(replicas=3))
    await cluster.sync()
    assert cluster.pods() == ["web-0"]
    pod = cluster.pod("web-0")
    sts = cluster.sts()
    rev = sts["status"]["updateRevision"]
    assert pod["metadata"]["labels"] == {"app": "web", "statefulset.kubernetes.io/pod-name": "web-0",
                                         "apps.kubernetes.io/pod-index": "0", "controller-revision-hash": rev}
    assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == ("web-0", "nginx")
    [ref] = pod["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["controller"]) == ("StatefulSet", "web", True)
    assert cluster.events("SuccessfulCreate") == ["create Pod web-0 in StatefulSet web successful"]

    await cluster.sync()  # web-0 is Pending: nothing more
    assert cluster.pods() == ["web-0"]
    await cluster.run("web-0", ready=False)
    await cluster.sync()  # Running but not Ready: still waiting
    assert cluster.pods() == ["web-0"]
    await cluster.run("web-0")
    await cluster.sync()
    assert cluster.pods() == ["web-0", "web-1"]
    await cluster.run("web-1")
    await cluster.sync()
    assert cluster.pods() == ["web-0", "web-1", "web-2"]
    await cluster.run("web-2")
    await cluster.sync()
    status = cluster.sts()["status"]
    assert {k: status[k] for k in ("replicas", "readyReplicas", "availableReplicas", "currentReplicas",
                                   "updatedReplicas", "observedGeneration", "collisionCount")} == {
        "replicas": 3, "readyReplicas": 3, "availableReplicas": 3, "currentReplicas": 3, "updatedReplicas": 3,
        "observedGeneration": 1, "collisionCount": 0}
    assert status["currentRevision"] == status["updateRevision"] == rev
    assert cluster.events("SuccessfulCreate") == [f"create Pod web-{i} in StatefulSet web successful"
                                                  for i in range(3)]


async def test_scale_down_removes_the_highest_ordinal_first_one_at_a_time(cluster: Cluster):
    cluster.api.seed("statefulsets", statefulset(replicas=4))
    await cluster.sync_until_stable()
    # Pods with a node take a grace period: they stay terminating until their kubelet confirms.
    await cluster.set_spec(replicas=1)
    await cluster.sync()
    assert cluster.pod("web-3")["metadata"].get("deletionTimestamp")
    assert not cluster.pod("web-2")["metadata"].get("deletionTimestamp")
    await cluster.sync()  # web-3 still terminating: wait
    assert not cluster.pod("web-2")["metadata"].get("deletionTimestamp")
    await cluster.gone("web-3")
    await cluster.sync()
    assert cluster.pod("web-2")["metadata"].get("deletionTimestamp")
    await cluster.gone("web-2")
    await cluster.sync()
    await cluster.gone("web-1")
    await cluster.sync()
    assert cluster.pods() == ["web-0"]
    assert cluster.events("SuccessfulDelete") == [f"delete Pod web-{i} in StatefulSet web successful"
                                                  for i in (3, 2, 1)]
    assert cluster.sts()["status"]["replicas"] == 1


async def test_parallel_creates_and_deletes_all_at_once(cluster: Cluster):
    cluster.api.seed("statefulsets", statefulset(replicas=3, podManagementPolicy="Parallel"))
    await cluster.sync()
    assert cluster.pods() == ["web-0", "web-1", "web-2"]
    await cluster.run("web-0", "web-1", "web-2")
    await cluster.set_spec(replicas=0)
    await cluster.sync()
    assert all(cluster.pod(n)["metadata"].get("deletionTimestamp") for n in ("web-0", "web-1", "web-2"))


async def test_ordinals_start_names_the_pods(cluster: Cluster):
    cluster.api.seed("statefulsets", statefulset(replicas=2, ordinals={"start": 5}))
    await cluster.sync_until_stable()
    assert cluster.pods() == ["web-5", "web-6"]
    assert cluster.pod("web-6")["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == "6"
    await cluster.set_spec(ordinals={"start": 6})   # web-5 falls out of range, web-7 comes in
    await cluster.sync_until_stable()
    assert cluster.pods() == ["web-6", "web-7"]


# -- identity ----------------------------------------------------------------------------------------
async def test_a_failed_pod_is_deleted_and_made_again_with_the_same_name(cluster: Cluster):
    cluster.api.seed("statefulsets", statefulset(replicas=2))
    await cluster.sync_until_stable()
    old_uid = cluster.pod("web-0")["metadata"]["uid"]
    await cluster.run("web-0", phase="Failed", ready=False)
    await cluster.sync()
    assert cluster.pods() == ["web-1"]   # a failed pod goes at once; its replacement comes next sync
    assert "delete Pod web-0 in StatefulSet web successful" in cluster.events("SuccessfulDelete")
    await cluster.sync()
    assert cluster.pods() == ["web-0", "web-1"]
    assert cluster.pod("web-0")["metadata"]["uid"] != old_uid


async def test_never_two_pods_for_one_identity(cluster: Cluster):
    """A pod deleted on a node that cannot confirm (unreachable) blocks its replacement, even in Parallel."""
    cluster.api.seed("statefulsets", statefulset(replicas=2, podManagementPolicy="Parallel"))
    await cluster.sync_until_stable()
    await cluster.api.delete("pods", "web-1", namespace=NS)   # stays terminating: its kubelet never confirms
    for _ in range(3):
        await cluster.sync()
    assert cluster.pods() == ["web-0", "web-1"]
    assert cluster.pod("web-1")["metadata"].get("deletionTimestamp")
    creates = [a for a in cluster.api.calls("create", "pods")]
    assert len(creates) == 2
    await cluster.gone("web-1")
    await cluster.sync()
    assert cluster.pods() == ["web-0", "web-1"]
    assert not cluster.pod("web-1")["metadata"].get("deletionTimestamp")


async def test_ordered_ready_waits_for_a_terminating_pod_before_going_on(cluster: Cluster):
    cluster.api.seed("statefulsets", statefulset(replicas=2))
    await cluster.sync_until_stable()
    await cluster.api.delete("pods", "web-0", namespace=NS)
    await cluster.set_spec(replicas=3)
    await cluster.sync()
    assert "web-2" not in cluster.pods()   # web-0 must be back and Ready first
    await cluster.gone("web-0")
    await cluster.sync()
    assert cluster.pods() == ["web-0", "web-1"]
    await cluster.run("web-0")
    await cluster.sync()
    assert cluster.pods() == ["web-0", "web-1", "web-2"]


async def test_an_orphan_with_a_members_name_is_adopted_and_its_identity_labels_fixed(cluster: Cluster):
    cluster.api.seed("statefulsets", statefulset(replicas=1, updateStrategy={"type": "OnDelete"}))
    cluster.api.seed("pods", {"metadata": {"name": "web-0", "namespace": NS, "labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
                              "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
    await cluster.sync()
    pod = cluster.pod("web-0")
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"
    assert pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == "web-0"
    assert pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == "0"
    assert len(cluster.api.calls("create", "pods")) == 0


# -- updates ---------------------------------------------------------------------------------------
async def test_rolling_update_goes_from_the_highest_ordinal_down_to_the_partition(cluster: Cluster):
    cluster.api.seed("statefulsets", statefulset(replicas=3))
    await cluster.sync_until_stable()
    rev1 = cluster.sts()["status"]["currentRevision"]
    new_template = copy.deepcopy(cluster.sts()["spec"]["template"])
    new_template["spec"]["containers"][0]["image"] = "busybox:1.37"
    await cluster.set_spec(template=new_template, updateStrategy={"type": "RollingUpdate",
                                                                  "rollingUpdate": {"partition": 1}})
    await cluster.sync()
    status = cluster.sts()["status"]
    rev2 = status["updateRevision"]
    assert rev2 != rev1 and status["currentRevision"] == rev1
    assert [n for n in cluster.pods() if not cluster.pod(n)["metadata"].get("deletionTimestamp")] == [
        "web-0", "web-1"]     # web-2 goes first
    await cluster.sync_until_stable()
    revs = {p["metadata"]["name"]: p["metadata"]["labels"]["controller-revision-hash"]
            for p in cluster.api.objects("pods", NS)}
    assert revs == {"web-0": rev1, "web-1": rev2, "web-2": rev2}
    assert cluster.pod("web-2")["spec"]["containers"][0]["image"] == "busybox:1.37"
    status = cluster.sts()["status"]
    assert (status["currentRevision"], status["updatedReplicas"], status["currentReplicas"]) == (rev1, 2, 1)
    # partition 0: the last one goes too and the rollout completes
    await cluster.set_spec(updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    await cluster.sync_until_stable()
    status = cluster.sts()["status"]
    assert (status["currentRevision"], status["updateRevision"], status["updatedReplicas"],
            status["currentReplicas"]) == (rev2, rev2, 3, 3)
    deleted = [m for m in cluster.events("SuccessfulDelete")]
    assert deleted == [f"delete Pod web-{i} in StatefulSet web successful" for i in (2, 1, 0)]


async def test_rolling_update_waits_for_each_replacement_to_be_ready(cluster: Cluster):
    cluster.api.seed("statefulsets", statefulset(replicas=2))
    await cluster.sync_until_stable()
    template = copy.deepcopy(cluster.sts()["spec"]["template"])
    template["spec"]["containers"][0]["image"] = "busybox:1.37"
    await cluster.set_spec(template=template)
    await cluster.sync()
    assert cluster.pod("web-1")["metadata"].get("deletionTimestamp")
    await cluster.sync()   # web-1 still terminating: nothing else
    await cluster.gone("web-1")
    await cluster.sync()   # web-1 made again from the new revision, Pending
    assert cluster.pods() == ["web-0", "web-1"] and not cluster.pod("web-1")["metadata"].get("deletionTimestamp")
    await cluster.sync()
    assert len(cluster.events("SuccessfulDelete")) == 1   # web-0 waits for web-1 to be Ready
    await cluster.run("web-1")
    await cluster.sync()
    assert cluster.pod("web-0")["metadata"].get("deletionTimestamp")


async def test_max_unavailable_updates_several_at_once(cluster: Cluster):
    cluster.api.seed("statefulsets", statefulset(replicas=4, podManagementPolicy="Parallel"))
    await cluster.sync_until_stable()
    template = copy.deepcopy(cluster.sts()["spec"]["template"])
    template["spec"]["containers"][0]["image"] = "busybox:1.37"
    await cluster.set_spec(template=template, updateStrategy={"type": "RollingUpdate",
                                                              "rollingUpdate": {"partition": 0, "maxUnavailable": 2}})
    await cluster.sync()
    assert cluster.events("SuccessfulDelete") == ["delete Pod web-3 in StatefulSet web successful",
                                                  "delete Pod web-2 in StatefulSet web successful"]


async def test_on_delete_updates_only_pods_the_user_deletes(cluster: Cluster):
    cluster.api.seed("statefulsets", statefulset(replicas=2, updateStrategy={"type": "OnDelete"}))
    await cluster.sync_until_stable()
    rev1 = cluster.sts()["status"]["currentRevision"]
    template = copy.deepcopy(cluster.sts()["spec"]["template"])
    template["spec"]["containers"][0]["image"] = "busybox:1.37"
    await cluster.set_spec(template=template)
    await cluster.sync_until_stable()
    assert cluster.events("SuccessfulDelete") == []
    status = cluster.sts()["status"]
    assert status["currentRevision"] == rev1 and status["updatedReplicas"] == 0
    await cluster.api.delete("pods", "web-1", namespace=NS, grace_period_seconds=0)
    await cluster.sync_until_stable()
    assert cluster.pod("web-1")["metadata"]["labels"]["controller-revision-hash"] == status["updateRevision"]
    assert cluster.pod("web-0")["metadata"]["labels"]["controller-revision-hash"] == rev1


async def test_rollback_reuses_the_old_revision_and_history_is_truncated(cluster: Cluster):
    cluster.api.seed("statefulsets", statefulset(replicas=1, revisionHistoryLimit=1))
    await cluster.sync_until_stable()
    first = cluster.sts()["status"]["currentRevision"]
    for image in ("busybox:1.37", "busybox:1.38"):
        template = copy.deepcopy(cluster.sts()["spec"]["template"])
        template["spec"]["containers"][0]["image"] = image
        await cluster.set_spec(template=template)
        await cluster.sync_until_stable()
    revisions = {r["metadata"]["name"]: r["revision"] for r in cluster.api.objects("controllerrevisions", NS)}
    assert first not in revisions and len(revisions) == 2   # limit 1 + the current one
    # kubectl rollout undo: patch the set with the previous revision's data
    previous = min(revisions, key=revisions.get)
    data = next(r for r in cluster.api.objects("controllerrevisions", NS) if r["metadata"]["name"] == previous)["data"]
    await cluster.api.patch("statefulsets", "web", data, namespace=NS, patch_type="strategic")
    await cluster.sync_until_stable()
    status = cluster.sts()["status"]
    assert status["currentRevision"] == status["updateRevision"] == previous
    renumbered = {r["metadata"]["name"]: r["revision"] for r in cluster.api.objects("controllerrevisions", NS)}
    assert renumbered[previous] == 4
    assert cluster.pod("web-0")["spec"]["containers"][0]["image"] == "busybox:1.37"
    owned = history.owned_revisions(cluster.sts(), cluster.api.objects("controllerrevisions", NS))
    assert all(r["metadata"]["labels"]["app"] == "web" for r in owned)


# -- claims --------------------------------------------------------------------------------------------
CLAIMS = [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                   "resources": {"requests": {"storage": "1Gi"}}}}]


@pytest.fixture
def no_pvc_kind():
    """A cluster that does not serve PersistentVolumeClaims (kubepy before its storage work)."""
    k = kinds.lookup("", "v1", "persistentvolumeclaims")
    kinds.unregister(k)
    yield
    kinds.register(k)


async def test_claim_templates_without_claims_served_make_no_pods_and_say_why(cluster: Cluster, no_pvc_kind):
    assert kinds.lookup("", "v1", "persistentvolumeclaims") is None
    cluster.api.seed("statefulsets", statefulset(replicas=2, volumeClaimTemplates=CLAIMS))
    with pytest.raises(ClaimsNotServed):
        await cluster.sync()
    assert cluster.pods() == []
    failed = cluster.events("FailedCreate")
    assert failed[0].startswith("create Claim data-web-0 for Pod web-0 in StatefulSet web failed error: "
                                "PersistentVolumeClaims are not served")
    assert failed[1].startswith("create Pod web-0 in StatefulSet web failed error: PersistentVolumeClaims")
    assert cluster.sts()["status"]["replicas"] == 0


@pytest.fixture
def pvc_kind():
    """The served PersistentVolumeClaim kind."""
    return kinds.lookup("", "v1", "persistentvolumeclaims")


async def test_one_claim_per_pod_per_template_owned_by_the_set_when_deleted_deletes(cluster: Cluster, pvc_kind):
    claims = CLAIMS + [{"metadata": {"name": "logs", "labels": {"tier": "logs"}},
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
    template_volume = {"name": "data", "emptyDir": {}}   # a claim replaces a template volume of its name
    sts = statefulset(replicas=2, volumeClaimTemplates=claims,
                      persistentVolumeClaimRetentionPolicy={"whenDeleted": "Delete", "whenScaled": "Retain"})
    sts["spec"]["template"]["spec"]["volumes"] = [template_volume]
    cluster.api.seed("statefulsets", sts)
    await cluster.sync_until_stable()
    made = {c["metadata"]["name"]: c for c in cluster.api.objects("persistentvolumeclaims", NS)}
    assert sorted(made) == ["data-web-0", "data-web-1", "logs-web-0", "logs-web-1"]
    assert made["logs-web-1"]["metadata"]["labels"] == {"tier": "logs", "app": "web"}
    assert made["data-web-0"]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    [ref] = made["data-web-0"]["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["controller"]) == ("StatefulSet", "web", True)
    assert cluster.pod("web-1")["spec"]["volumes"] == [
        {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-1"}},
        {"name": "logs", "persistentVolumeClaim": {"claimName": "logs-web-1"}}]
    assert "create Claim data-web-0 Pod web-0 in StatefulSet web success" in cluster.events("SuccessfulCreate")
    # a pod deleted and made again finds its claim: nothing new is created
    await cluster.api.delete("pods", "web-0", namespace=NS, grace_period_seconds=0)
    await cluster.sync_until_stable()
    assert len(cluster.api.calls("create", "persistentvolumeclaims")) == 4


async def test_when_scaled_delete_hands_the_claim_to_the_pod_before_it_goes(cluster: Cluster, pvc_kind):
    cluster.api.seed("statefulsets", statefulset(
        replicas=2, volumeClaimTemplates=CLAIMS,
        persistentVolumeClaimRetentionPolicy={"whenDeleted": "Retain", "whenScaled": "Delete"}))
    await cluster.sync_until_stable()
    claims = {c["metadata"]["name"]: c for c in cluster.api.objects("persistentvolumeclaims", NS)}
    assert not claims["data-web-1"]["metadata"].get("ownerReferences")
    await cluster.set_spec(replicas=1)
    await cluster.sync()
    claims = {c["metadata"]["name"]: c for c in cluster.api.objects("persistentvolumeclaims", NS)}
    [ref] = claims["data-web-1"]["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"]) == ("Pod", "web-1", cluster.pod("web-1")["metadata"]["uid"])
    assert not claims["data-web-0"]["metadata"].get("ownerReferences")
    assert cluster.pod("web-1")["metadata"].get("deletionTimestamp")


async def test_a_policy_change_updates_existing_claims(cluster: Cluster, pvc_kind):
    cluster.api.seed("statefulsets", statefulset(replicas=1, volumeClaimTemplates=CLAIMS))
    await cluster.sync_until_stable()
    [claim] = cluster.api.objects("persistentvolumeclaims", NS)
    assert not claim["metadata"].get("ownerReferences")   # Retain/Retain
    await cluster.set_spec(persistentVolumeClaimRetentionPolicy={"whenDeleted": "Delete", "whenScaled": "Retain"})
    await cluster.sync()
    [claim] = cluster.api.objects("persistentvolumeclaims", NS)
    assert [r["kind"] for r in claim["metadata"]["ownerReferences"]] == ["StatefulSet"]
